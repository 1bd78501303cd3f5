//! Training attr2face (Liu et al., "Generating Face Images with Attributes
//! for Free", Sec. III): autoencoder, classifier and mapping phases, each
//! checkpointed in the stage's resume folder and skipped when finished, so a
//! killed run resumes where it stopped; `model = "dcgan"` is its footnote-4
//! ablation. With a `balance` input, `recursive_times` rounds retrain C on
//! the plan's generated label vectors (Table 4).
//!
//! Outputs: `generator.safetensors` (Φ and G_de), `classifier.safetensors`
//! (C, used by `synthesize` for `label_agreement`), `autoencoder.safetensors`
//! (G_en and G_de, attr2face only: reconstructions for `evaluate`, embeddings
//! for a `linear_probe` classifier), `model.json` (network sizes), the
//! `train_log` table, sample grids under `samples/`, and every phase's last
//! checkpoint under `checkpoints/`.

use std::path::Path;

use anyhow::Result;

use crate::contract::tables;
use crate::contract::{Lineage, StageIo, StageKind, StageOutput, Table, write_train_log};
use crate::data::celeba::Labels;
use crate::data::celeba::Partition;
use crate::data::parquet::read_columns;
use crate::data::schema::{N_ATTRIBUTES, Origin, PlanStrategy, attribute_column};
use crate::data::tensors::{labels_of_batch, strings};
use crate::generators::files;
use crate::generators::options::{Config, Preset};
use crate::generators::training::{copy_resume_folder, load_faces, phase_env, save_generator};
use crate::models::attr2face::Config as Network;
use crate::train::attr2face::{self, Attr2faceSet};

use super::{Layout, Options};

/// Label vectors of a plan's generator rows (for recursive rounds).
fn plan_generator_labels(path: &Path) -> Result<Vec<Labels>> {
    let mut cols = vec!["strategy".to_string()];
    cols.extend((0..N_ATTRIBUTES).map(attribute_column));
    let names: Vec<&str> = cols.iter().map(String::as_str).collect();
    let mut out = Vec::new();
    for b in read_columns(path, &names)? {
        let strategy = strings(&b, 0)?;
        let labels = labels_of_batch(&b, 1)?;
        for (r, l) in labels.into_iter().enumerate() {
            if PlanStrategy::from_name(strategy.value(r))
                .is_some_and(|s| s.origin() == Origin::Generated)
            {
                out.push(l);
            }
        }
    }
    Ok(out)
}

/// attr2face's network sizes at the stage's preset.
fn network(c: &Config) -> Network {
    match c.preset() {
        Preset::Tiny => Network::tiny(),
        _ => Network::paper_64(),
    }
}

pub fn run(c: &Config, io: &StageIo) -> Result<StageOutput> {
    let o: Options = c.options()?;
    let net = network(c);
    let dev = io.candle_device()?;
    let (faces, train) = load_faces(c, io, net.image_size(), 1)?;
    let val = faces.rows_in(Partition::Val);
    let plan_labels = match io.optional_input(StageKind::Balance) {
        Some(b) => plan_generator_labels(&b.table(tables::PLAN)?)?,
        None => Vec::new(),
    };
    io.say(format!(
        "{} `{}` on {} train / {} val faces, preset {}, device {}",
        c.model.name(),
        io.name,
        train.len(),
        val.len(),
        c.preset().name(),
        io.device
    ));
    let data = Attr2faceSet {
        faces: &faces,
        train,
        val,
        plan_labels,
    };
    let opts = attr2face::Options {
        model: if c.model.name() == "dcgan" {
            attr2face::Model::Dcgan
        } else {
            attr2face::Model::Attr2face
        },
        batch_size: o.batch_size,
        perceptual_loss: o.perceptual_loss,
        recursive_times: o.recursive_times,
        seed: c.seed.unwrap_or(io.run_seed),
        autoencoder: o.autoencoder,
        classifier: o.classifier,
        mapping: o.mapping,
    };
    let env = phase_env(c, io);
    let trained = attr2face::train(&net, &opts, &data, &dev, &env)?;
    say_summary(io, &trained.summary)?;

    // Outputs.
    let out = &io.out_dir;
    let (sha, mut files) = save_generator(
        c,
        io,
        &trained.generator,
        (files::CLASSIFIER, &trained.classifier),
        &Layout { network: net },
    )?;
    if let Some(ae) = &trained.autoencoder {
        candle_core::safetensors::save(ae, out.join(files::AUTOENCODER))?;
        files.push(files::AUTOENCODER.to_string());
    }
    files.extend(copy_resume_folder(io)?);
    let rows = write_train_log(&out.join(tables::TRAIN_LOG.file), &trained.log)?;
    let mut summary = trained.summary;
    summary["generator_sha256"] = sha.into();
    Ok(StageOutput {
        tables: vec![Table::of(tables::TRAIN_LOG, rows)],
        files,
        summary,
        lineage: Lineage::default(),
    })
}

/// One line per phase of what it reached, from the summary entries the
/// phases wrote (read back as their types).
fn say_summary(io: &StageIo, s: &serde_json::Value) -> Result<()> {
    let f = |v: Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or("-".into());
    let phases: attr2face::PhaseSummaries = serde_json::from_value(s.clone())?;
    if let Some(a) = phases.autoencoder {
        io.say(format!(
            "autoencoder: val L1 {} at init → {} (k_t {})",
            f(a.val_rec_l1_init),
            f(Some(a.val_rec_l1)),
            f(Some(a.k_t))
        ));
    }
    if let Some(c) = phases.classifier {
        io.say(format!(
            "classifier: val accuracy {} (per-attribute majority {})",
            f(Some(c.val_accuracy)),
            f(Some(c.val_majority_accuracy))
        ));
    }
    for (name, m) in [("mapping", phases.mapping), ("dcgan", phases.dcgan)] {
        if let Some(m) = m {
            io.say(format!(
                "{name}: val embedding MSE {} at init → {}",
                f(m.val_rec_emb_init),
                f(m.val_rec_emb)
            ));
        }
    }
    Ok(())
}
