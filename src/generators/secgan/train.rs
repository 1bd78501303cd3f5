//! `model = "secgan"` (Sun et al.): trains G_rgb, D_rgb, G_seg and D_seg in
//! phase `secgan` (`crate::train::secgan`) through the frozen parser P of a
//! `parse_faces` input, on the attributes of `secgan.attributes`.
//!
//! Before training, one line each when: P's size is not the generator's, P
//! has not the 12 segment classes, `parser.safetensors` does not match the
//! sha256 its `model.json` recorded, or the parser's `masks` table lacks the
//! training faces (it parsed another ingest).
//!
//! Outputs: `generator.safetensors` (G_rgb only: all `synthesize` needs),
//! `critic.safetensors` (D_rgb, whose class head gives `label_agreement`),
//! `semantic_generator.safetensors` (G_seg), `semantic_critic.safetensors`
//! (D_seg), `model.json`, `train_log`, and `samples/secgan_<step>.png`
//! (Fig. 5's columns).

use std::collections::HashSet;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::contract::tables;
use crate::contract::write_train_log as write_log;
use crate::contract::{Lineage, StageIo, StageKind, StageOutput, Table};
use crate::data::celeba::Partition;
use crate::data::parquet::read_columns;
use crate::data::schema;
use crate::data::tensors::strings;
use crate::data_error;
use crate::generators::files;
use crate::generators::options::{Config, Preset};
use crate::generators::training::{copy_resume_folder, load_faces, phase_env, save_generator};
use crate::train::parser::ParserFile;
use crate::train::secgan::{self, Nets, Parser};

/// The segment classes SeCGAN's semantic branch works on (Sec. 3).
const SEGMENTS: usize = 12;

/// The frozen parser P of the `parse_faces` input, checked against its record.
struct FrozenParser<'a> {
    stage: &'a crate::contract::InputStage,
    file: ParserFile,
    /// `parser.safetensors` and its sha256 (as `model.json` records it).
    path: std::path::PathBuf,
    sha256: String,
    net: Parser,
}

pub fn run(c: &Config, io: &StageIo) -> Result<StageOutput> {
    let tiny = c.preset() == Preset::Tiny;
    let o: super::Options = c.options()?;
    let opts = &o.secgan;
    let attrs = o.attributes().map_err(|e| data_error!("{e}"))?;
    let nets = Nets::preset(tiny, attrs.len(), SEGMENTS);
    let size = nets.image_size();
    let dev = io.candle_device()?;
    let parser = load_parser(c, io, size, &dev)?;
    let (faces, train) = load_faces(c, io, size, 2)?;
    check_masks(parser.stage, &faces.image_ids, &train)?;
    let names: Vec<&str> = attrs.iter().map(|&a| schema::ATTRIBUTES[a]).collect();
    say_setup(
        c,
        opts,
        io,
        &parser,
        (train.len(), faces.rows_in(Partition::Val).len()),
        &names,
    );
    let data = secgan::TrainSet {
        faces: &faces,
        train,
        val: faces.rows_in(Partition::Val),
    };
    let env = phase_env(c, io);
    let seed = c.seed.unwrap_or(io.run_seed);
    let job = secgan::Job {
        nets: &nets,
        attrs: &attrs,
        opts,
        seed,
        parser: &parser.net,
    };
    let trained = secgan::train(&job, &data, &dev, &env)?;
    say_trained(io, &trained.summary);

    // P's weights are checked again after training: in no optimiser, they
    // cannot have changed; the file on disk still matches too.
    let after = hex::encode(Sha256::digest(std::fs::read(&parser.path)?));
    if after != parser.sha256 {
        return Err(data_error!(
            "{} changed while `{}` trained; rerun both stages",
            parser.path.display(),
            io.name
        ));
    }
    let (g_sha, files) = save_networks(c, io, &nets, &trained, &parser, &names)?;
    let rows = write_log(&io.out_dir.join(tables::TRAIN_LOG.file), &trained.log)?;
    let mut summary = trained.summary;
    summary["generator_sha256"] = g_sha.into();
    summary["parser_sha256"] = parser.sha256.into();
    summary["parser_sha256_after"] = after.into();
    summary["attributes"] = names.into();
    Ok(StageOutput {
        tables: vec![Table::of(tables::TRAIN_LOG, rows)],
        files,
        summary,
        lineage: Lineage::default(),
    })
}

/// The parser: its record, its size and classes, its weights' checksum.
fn load_parser<'a>(
    c: &Config,
    io: &'a StageIo,
    size: usize,
    dev: &candle_core::Device,
) -> Result<FrozenParser<'a>> {
    let pstage = io.input(StageKind::ParseFaces)?;
    let pfile_path = pstage.dir.join("model.json");
    let pf: ParserFile = serde_json::from_str(
        &std::fs::read_to_string(&pfile_path)
            .with_context(|| format!("reading {}", pfile_path.display()))?,
    )
    .map_err(|e| {
        data_error!(
            "{}: {e}; rerun the parse_faces stage `{}` with this augment",
            pfile_path.display(),
            pstage.name
        )
    })?;
    if pf.classes.len() != SEGMENTS {
        return Err(data_error!(
            "parse_faces stage `{}` predicts {} classes; SeCGAN's semantic branch takes the {SEGMENTS} segments of Sec. 3: set classes = \"secgan12\" there",
            pstage.name,
            pf.classes.len()
        ));
    }
    if pf.image_size != size {
        return Err(data_error!(
            "parse_faces stage `{}` parses at {} px but the generator (preset {}) works at {size} px: set image_size = {size} in [stages.{}]",
            pstage.name,
            pf.image_size,
            c.preset().name(),
            pstage.name
        ));
    }
    let ppath = pstage.dir.join("parser.safetensors");
    let bytes = std::fs::read(&ppath).with_context(|| format!("reading {}", ppath.display()))?;
    let sha = hex::encode(Sha256::digest(&bytes));
    if sha != pf.sha256 {
        return Err(data_error!(
            "{}: sha256 {sha} is not the {} its model.json records; rerun `augment run --force --only {}`",
            ppath.display(),
            pf.sha256,
            pstage.name
        ));
    }
    let net = Parser::new(
        &pf.network,
        candle_core::safetensors::load_buffer(&bytes, dev)?,
        dev,
    )?;
    Ok(FrozenParser {
        stage: pstage,
        file: pf,
        path: ppath,
        sha256: sha,
        net,
    })
}

fn say_setup(
    c: &Config,
    opts: &secgan::Options,
    io: &StageIo,
    parser: &FrozenParser,
    (train, val): (usize, usize),
    names: &[&str],
) {
    io.say(format!(
        "secgan `{}` on {train} train / {val} val faces, attributes {}, parser `{}`, preset {}, {} steps at batch {}, λ_sc {}{}, device {}",
        io.name,
        names.join(", "),
        parser.stage.name,
        c.preset().name(),
        opts.steps,
        opts.batch_size,
        opts.lambda_sc,
        if opts.semantic_consistency { "" } else { " (semantic consistency off)" },
        io.device
    ));
}

/// One line of what training reached, from its summary.
fn say_trained(io: &StageIo, summary: &serde_json::Value) {
    let f = |k: &str| summary[k].as_f64().unwrap_or(f64::NAN);
    io.say(format!(
        "val: Wasserstein estimates rgb {:.4} → {:.4}, seg {:.4} → {:.4}; G_rgb classification loss {:.4} → {:.4}; L1(G_rgb(x, 0), x) {:.4} → {:.4}; CE(G_seg(s, 0), s) {:.4} → {:.4}; L_sc rgb {:.4} → {:.4}, seg {:.4} → {:.4}",
        f("wasserstein_init"),
        f("wasserstein"),
        f("seg_wasserstein_init"),
        f("seg_wasserstein"),
        f("g_cls_init"),
        f("g_cls"),
        f("rec_l1_init"),
        f("rec_l1"),
        f("seg_rec_ce_init"),
        f("seg_rec_ce"),
        f("sc_rgb_init"),
        f("sc_rgb"),
        f("sc_seg_init"),
        f("sc_seg"),
    ));
}

/// G_rgb, D_rgb and `model.json`, then G_seg and D_seg and the resume
/// folder's files; returns G_rgb's sha256 and the files written.
fn save_networks(
    c: &Config,
    io: &StageIo,
    nets: &Nets,
    trained: &secgan::Trained,
    parser: &FrozenParser,
    names: &[&str],
) -> Result<(String, Vec<String>)> {
    let (g_sha, mut files) = save_generator(
        c,
        io,
        &trained.g_rgb,
        (files::CRITIC, &trained.d_rgb),
        &super::Layout {
            rgb: crate::generators::translation::Layout {
                translator: nets.g_rgb.clone(),
                critic: nets.d_rgb.clone(),
                attributes: names.iter().map(|n| n.to_string()).collect(),
            },
            semantic: super::Semantic {
                generator: nets.g_seg.clone(),
                critic: nets.d_seg.clone(),
                classes: parser.file.classes.clone(),
                parser_stage: parser.stage.name.clone(),
                parser_sha256: parser.sha256.clone(),
            },
        },
    )?;
    for (file, t) in [
        (files::SEMANTIC_GENERATOR, &trained.g_seg),
        (files::SEMANTIC_CRITIC, &trained.d_seg),
    ] {
        candle_core::safetensors::save(t, io.out_dir.join(file))?;
        files.push(file.to_string());
    }
    files.extend(copy_resume_folder(io)?);
    Ok((g_sha, files))
}

/// The parser's `masks` table must hold every training face: otherwise it
/// parsed another ingest than this stage's.
fn check_masks(
    pstage: &crate::contract::InputStage,
    ids: &[String],
    train: &[usize],
) -> Result<()> {
    let mut have = HashSet::new();
    for b in read_columns(&pstage.table(tables::MASKS)?, &["image_id"])? {
        let col = strings(&b, 0)?;
        for r in 0..b.num_rows() {
            have.insert(col.value(r).to_string());
        }
    }
    let missing: Vec<&str> = train
        .iter()
        .map(|&i| ids[i].as_str())
        .filter(|id| !have.contains(*id))
        .collect();
    if !missing.is_empty() {
        return Err(data_error!(
            "parse_faces stage `{}`'s masks table lacks {} of the {} training faces (e.g. {}): it parsed another ingest; give it and this stage the same `ingest` input",
            pstage.name,
            missing.len(),
            train.len(),
            missing
                .iter()
                .take(5)
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(())
}
