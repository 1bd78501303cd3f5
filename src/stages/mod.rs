//! One module per stage kind: a `Config` (serde, unknown keys rejected) and
//! `run(&Config, &StageIo) -> Result<StageOutput>`. Stages never import each
//! other, and they know neither the pipeline file nor the manifest: the
//! runner hands each stage its declared inputs as typed [`InputStage`]s (kind,
//! tables, files, [`Lineage`], sweep membership) and records the
//! [`StageOutput`] it returns.
//!
//! - [`ingest`]: CelebA (or demo faces) → `faces`, `rejects`.
//! - [`balance`]: label counts → a `plan` of target label vectors.
//! - [`parse_faces`]: our face parser P → `masks` of every ingested face.
//! - [`train_generator`]: generator training: attr2face, DCGAN, SG-GAN,
//!   StarGAN, ST-GAN, BridgeGAN, SeCGAN.
//! - [`synthesize`]: the plan → `synth` and `augmented` images.
//! - [`train_classifier`]: downstream classifiers on real or augmented rows.
//! - [`evaluate`]: accuracy, FID/KID, MS-SSIM and translation metrics.

pub mod balance;
pub mod evaluate;
pub mod ingest;
pub mod parse_faces;
pub mod synthesize;
pub mod train_classifier;
pub mod train_generator;

use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

pub use crate::contract::{
    Device, GeneratorRef, InputStage, Lineage, StageIo, StageKind, StageOutput, Table,
    write_train_log,
};

/// A stage's typed config. The variants differ in size (train_generator's
/// options are the largest), which does not matter for the few stages of a
/// pipeline, so they are not boxed.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)]
pub enum StageConfig {
    Ingest(ingest::Config),
    Balance(balance::Config),
    TrainGenerator(train_generator::Config),
    Synthesize(synthesize::Config),
    TrainClassifier(train_classifier::Config),
    Evaluate(evaluate::Config),
    ParseFaces(parse_faces::Config),
}

impl StageConfig {
    pub fn kind(&self) -> StageKind {
        match self {
            StageConfig::Ingest(_) => StageKind::Ingest,
            StageConfig::Balance(_) => StageKind::Balance,
            StageConfig::TrainGenerator(_) => StageKind::TrainGenerator,
            StageConfig::Synthesize(_) => StageKind::Synthesize,
            StageConfig::TrainClassifier(_) => StageKind::TrainClassifier,
            StageConfig::Evaluate(_) => StageKind::Evaluate,
            StageConfig::ParseFaces(_) => StageKind::ParseFaces,
        }
    }

    /// Checks the kinds of the declared inputs.
    pub fn check_inputs(&self, inputs: &[StageKind]) -> std::result::Result<(), String> {
        match self {
            StageConfig::Ingest(_) if !inputs.is_empty() => Err("`ingest` takes no inputs".into()),
            StageConfig::ParseFaces(_) if inputs != [StageKind::Ingest] => Err(format!(
                "`parse_faces` needs one `ingest` stage as input (the faces it parses), got {}",
                StageKind::list(inputs)
            )),
            StageConfig::Balance(_) if inputs != [StageKind::Ingest] => Err(format!(
                "`balance` needs one `ingest` stage as input, got {}",
                StageKind::list(inputs)
            )),
            StageConfig::TrainGenerator(c) => crate::generators::check_inputs(c, inputs),
            StageConfig::Synthesize(_) => synthesize_inputs(inputs),
            StageConfig::TrainClassifier(c) => classifier_inputs(c, inputs),
            StageConfig::Evaluate(_) => evaluate_inputs(inputs),
            _ => Ok(()),
        }
    }

    /// The files and folders outside the run that the stage reads, with
    /// the key that names each: a run folder may never be or hold one.
    pub fn input_paths(&self) -> Vec<(&'static str, PathBuf)> {
        let path = |key, p: &Option<PathBuf>| p.clone().map(|p| (key, p));
        match self {
            StageConfig::Ingest(c) => path("root", &c.root).into_iter().collect(),
            StageConfig::ParseFaces(c) => path("data", &c.data).into_iter().collect(),
            StageConfig::Evaluate(c) => path("weights", &c.weights).into_iter().collect(),
            StageConfig::TrainClassifier(c) => path("weights", &c.weights).into_iter().collect(),
            StageConfig::Balance(_)
            | StageConfig::TrainGenerator(_)
            | StageConfig::Synthesize(_) => Vec::new(),
        }
    }

    /// Fingerprint material from outside the run (e.g. the dataset files on disk).
    pub fn external_fingerprint(&self) -> Result<String> {
        match self {
            StageConfig::Ingest(c) => ingest::external_fingerprint(c),
            StageConfig::Evaluate(c) => evaluate::external_fingerprint(c),
            StageConfig::ParseFaces(c) => parse_faces::external_fingerprint(c),
            StageConfig::Balance(_)
            | StageConfig::TrainGenerator(_)
            | StageConfig::Synthesize(_)
            | StageConfig::TrainClassifier(_) => Ok(String::new()),
        }
    }
}

/// `synthesize`: `ingest` + `balance`, and a `train_generator` for generated rows.
fn synthesize_inputs(inputs: &[StageKind]) -> std::result::Result<(), String> {
    use StageKind::{Balance, Ingest, TrainGenerator};
    let k = StageKind::sorted(inputs);
    if k == [Balance, Ingest] || k == [Balance, Ingest, TrainGenerator] {
        Ok(())
    } else {
        Err(format!(
            "`synthesize` needs one `ingest`, one `balance` and (for generated rows) one `train_generator` stage, got {}",
            StageKind::list(inputs)
        ))
    }
}

/// `train_classifier`: `ingest`, optionally `synthesize` and `train_generator`.
fn classifier_inputs(
    c: &train_classifier::Config,
    inputs: &[StageKind],
) -> std::result::Result<(), String> {
    use StageKind::{Ingest, Synthesize, TrainGenerator};
    let k = StageKind::sorted(inputs);
    let allowed: [&[StageKind]; 4] = [
        &[Ingest],
        &[Ingest, Synthesize],
        &[Ingest, TrainGenerator],
        &[Ingest, Synthesize, TrainGenerator],
    ];
    if !allowed.contains(&k.as_slice()) {
        return Err(format!(
            "`train_classifier` needs one `ingest` stage (val/test, and train rows without augmentation), optionally one `synthesize` stage (train on its `augmented` table) and, for a `linear_probe` on encoder features, one `train_generator` stage, got {}",
            StageKind::list(inputs)
        ));
    }
    let probe_on_encoder = c.features() == Some(train_classifier::Features::Encoder);
    if c.real_fraction.is_some() && !k.contains(&Synthesize) {
        Err("real_fraction mixes the real and added rows of a `synthesize` stage's `augmented` table; add one to `inputs`, or leave real_fraction out".into())
    } else if probe_on_encoder && !k.contains(&TrainGenerator) {
        Err("`linear_probe` with features = \"encoder\" needs a `train_generator` input (attr2face) to take G_en from; add it to `inputs`, or set features = \"inception\"".into())
    } else {
        Ok(())
    }
}

/// `evaluate`: one `ingest` (the real test images) and at least one stage to measure.
fn evaluate_inputs(inputs: &[StageKind]) -> std::result::Result<(), String> {
    use StageKind::{Balance, Evaluate, Ingest, Synthesize, TrainClassifier, TrainGenerator};
    let ingests = inputs.iter().filter(|k| **k == Ingest).count();
    let measured = inputs
        .iter()
        .any(|k| matches!(k, TrainClassifier | Synthesize | TrainGenerator));
    let others = inputs.iter().any(|k| matches!(k, Balance | Evaluate));
    if ingests == 1 && measured && !others {
        Ok(())
    } else {
        Err(format!(
            "`evaluate` needs one `ingest` stage (the real test images) and the `train_classifier`, `synthesize` and `train_generator` stages to measure, got {}",
            StageKind::list(inputs)
        ))
    }
}

pub fn run(config: &StageConfig, io: &StageIo) -> Result<StageOutput> {
    match config {
        StageConfig::Ingest(c) => ingest::run(c, io),
        StageConfig::Balance(c) => balance::run(c, io),
        StageConfig::TrainGenerator(c) => train_generator::run(c, io),
        StageConfig::Synthesize(c) => synthesize::run(c, io),
        StageConfig::TrainClassifier(c) => train_classifier::run(c, io),
        StageConfig::Evaluate(c) => evaluate::run(c, io),
        StageConfig::ParseFaces(c) => parse_faces::run(c, io),
    }
}
