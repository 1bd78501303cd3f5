//! `model = "bridgegan"` (Huang et al., "Bridging the Gap between Label- and Reference-based Synthesis"): trains G, M, E and D + C
//! in phase `bridgegan` (`crate::train::bridgegan`) on the attributes of
//! `bridgegan.attributes`.
//!
//! Outputs: `generator.safetensors` (G + M + E), `critic.safetensors`
//! (D + C, whose class head gives `synthesize` its `label_agreement`),
//! `model.json` (sizes and attributes), `train_log`, and
//! `samples/bridgegan_<step>.png` (per val face: the face, then its
//! label-guided edit with each attribute flipped).

use anyhow::Result;

use crate::contract::tables;
use crate::contract::write_train_log as write_log;
use crate::contract::{Lineage, StageIo, StageOutput, Table};
use crate::data::celeba::Partition;
use crate::data::schema;
use crate::data_error;
use crate::generators::files;
use crate::generators::options::{Config, Preset};
use crate::generators::training::{copy_resume_folder, load_faces, phase_env, save_generator};
use crate::train::bridgegan;

pub fn run(c: &Config, io: &StageIo) -> Result<StageOutput> {
    let tiny = c.preset() == Preset::Tiny;
    let o: super::Options = c.options()?;
    let opts = &o.bridgegan;
    let attrs = o.attributes().map_err(|e| data_error!("{e}"))?;
    let cfg = opts.network(tiny, attrs.len());
    let batch = opts.batch(tiny);
    let dev = io.candle_device()?;
    let (faces, train) = load_faces(c, io, cfg.image_size, 2)?;
    let names: Vec<&str> = attrs.iter().map(|&a| schema::ATTRIBUTES[a]).collect();
    io.say(format!(
        "bridgegan `{}` on {} train / {} val faces, attributes {}, preset {}, {} steps at batch {batch}, device {}",
        io.name,
        train.len(),
        faces.rows_in(Partition::Val).len(),
        names.join(", "),
        c.preset().name(),
        opts.steps,
        io.device
    ));
    let data = bridgegan::TrainSet {
        faces: &faces,
        train,
        val: faces.rows_in(Partition::Val),
    };
    let env = phase_env(c, io);
    let seed = c.seed.unwrap_or(io.run_seed);
    let job = bridgegan::Job {
        cfg: &cfg,
        attrs: &attrs,
        opts,
        batch,
        seed,
    };
    let trained = bridgegan::train(&job, &data, &dev, &env)?;
    let f = |k: &str| trained.summary[k].as_f64().unwrap_or(f64::NAN);
    io.say(format!(
        "val: C's classification loss on real faces {:.4} → {:.4}; G's classification loss on one-attribute label edits (final C) {:.4} → {:.4} (unedited faces: {:.4}); L1(G(x, M(R, 0)), x) {:.4} → {:.4}",
        f("critic_cls_init"),
        f("critic_cls"),
        f("g_cls_init"),
        f("g_cls"),
        f("g_cls_unedited"),
        f("rec_l1_init"),
        f("rec_l1"),
    ));
    let out = &io.out_dir;
    let (sha, mut files) = save_generator(
        c,
        io,
        &trained.generator,
        (files::CRITIC, &trained.critic),
        &super::Layout {
            bridgegan: cfg,
            attributes: names.iter().map(|n| n.to_string()).collect(),
        },
    )?;
    files.extend(copy_resume_folder(io)?);
    let rows = write_log(&out.join(tables::TRAIN_LOG.file), &trained.log)?;
    let mut summary = trained.summary;
    summary["generator_sha256"] = sha.into();
    summary["attributes"] = names.into();
    Ok(StageOutput {
        tables: vec![Table::of(tables::TRAIN_LOG, rows)],
        files,
        summary,
        lineage: Lineage::default(),
    })
}
