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

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Result, bail};
use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::data::parquet::TableWriter;
use crate::train::LogRow;

use crate::train::model_file::ModelFile;

/// Where generators and classifiers run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Device {
    Cpu,
    Cuda(usize),
}

impl Device {
    pub fn parse(s: &str) -> Option<Device> {
        if s == "cpu" {
            return Some(Device::Cpu);
        }
        s.strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(Device::Cuda)
    }

    /// The candle device; a CUDA device needs a `--features cuda` build.
    pub fn to_candle(&self) -> anyhow::Result<candle_core::Device> {
        match self {
            Device::Cpu => Ok(candle_core::Device::Cpu),
            Device::Cuda(n) => {
                if !cfg!(feature = "cuda") {
                    return Err(crate::config_error!(
                        "device cuda:{n} needs a build with CUDA: `cargo install --path . --features cuda` (or use cpu)"
                    ));
                }
                candle_core::Device::new_cuda(*n)
                    .map_err(|e| crate::data_error!("cannot open cuda:{n}: {e}"))
            }
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    Ingest,
    Balance,
    TrainGenerator,
    Synthesize,
    TrainClassifier,
    Evaluate,
    ParseFaces,
}

impl StageKind {
    pub const ALL: [StageKind; 7] = [
        StageKind::Ingest,
        StageKind::ParseFaces,
        StageKind::Balance,
        StageKind::TrainGenerator,
        StageKind::Synthesize,
        StageKind::TrainClassifier,
        StageKind::Evaluate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StageKind::Ingest => "ingest",
            StageKind::Balance => "balance",
            StageKind::TrainGenerator => "train_generator",
            StageKind::Synthesize => "synthesize",
            StageKind::TrainClassifier => "train_classifier",
            StageKind::Evaluate => "evaluate",
            StageKind::ParseFaces => "parse_faces",
        }
    }
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }
    pub fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|k| k.name()).collect()
    }
}

impl std::fmt::Display for StageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

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
                kind_list(inputs)
            )),
            StageConfig::Balance(_) if inputs != [StageKind::Ingest] => Err(format!(
                "`balance` needs one `ingest` stage as input, got {}",
                kind_list(inputs)
            )),
            StageConfig::TrainGenerator(c) => generator_inputs(c, inputs),
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

/// `train_generator`: an `ingest` stage, plus what its model needs.
fn generator_inputs(
    c: &train_generator::Config,
    inputs: &[StageKind],
) -> std::result::Result<(), String> {
    use StageKind::{Balance, Ingest, ParseFaces, TrainClassifier};
    let k = sorted(inputs);
    if c.model == train_generator::Model::Secgan {
        return if k == sorted(&[Ingest, ParseFaces]) {
            Ok(())
        } else {
            Err(format!(
                "`train_generator` with model = \"secgan\" needs one `ingest` stage and one `parse_faces` stage (its frozen parser P), got {}",
                kind_list(inputs)
            ))
        };
    }
    let st_gan = c.model == train_generator::Model::StGan;
    let ok = k == [Ingest]
        || (!st_gan && k == [Balance, Ingest])
        || (st_gan && k == [Ingest, TrainClassifier]);
    if ok {
        Ok(())
    } else if st_gan {
        Err(format!(
            "`train_generator` with model = \"st_gan\" needs one `ingest` stage and optionally one `train_classifier` stage trained on real faces (the judge of its attribute map), got {}",
            kind_list(inputs)
        ))
    } else {
        Err(format!(
            "`train_generator` needs one `ingest` stage and optionally one `balance` stage (for `recursive_times`), got {}",
            kind_list(inputs)
        ))
    }
}

/// `synthesize`: `ingest` + `balance`, and a `train_generator` for generated rows.
fn synthesize_inputs(inputs: &[StageKind]) -> std::result::Result<(), String> {
    use StageKind::{Balance, Ingest, TrainGenerator};
    let k = sorted(inputs);
    if k == [Balance, Ingest] || k == [Balance, Ingest, TrainGenerator] {
        Ok(())
    } else {
        Err(format!(
            "`synthesize` needs one `ingest`, one `balance` and (for generated rows) one `train_generator` stage, got {}",
            kind_list(inputs)
        ))
    }
}

/// `train_classifier`: `ingest`, optionally `synthesize` and `train_generator`.
fn classifier_inputs(
    c: &train_classifier::Config,
    inputs: &[StageKind],
) -> std::result::Result<(), String> {
    use StageKind::{Ingest, Synthesize, TrainGenerator};
    let k = sorted(inputs);
    let allowed: [&[StageKind]; 4] = [
        &[Ingest],
        &[Ingest, Synthesize],
        &[Ingest, TrainGenerator],
        &[Ingest, Synthesize, TrainGenerator],
    ];
    if !allowed.contains(&k.as_slice()) {
        return Err(format!(
            "`train_classifier` needs one `ingest` stage (val/test, and train rows without augmentation), optionally one `synthesize` stage (train on its `augmented` table) and, for a `linear_probe` on encoder features, one `train_generator` stage, got {}",
            kind_list(inputs)
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
            kind_list(inputs)
        ))
    }
}

/// Input kinds in a canonical order, for comparing against the allowed sets.
fn sorted(inputs: &[StageKind]) -> Vec<StageKind> {
    let mut k = inputs.to_vec();
    k.sort_by_key(|k| k.name());
    k
}

fn kind_list(k: &[StageKind]) -> String {
    if k.is_empty() {
        "none".into()
    } else {
        k.iter()
            .map(|k| format!("`{}`", k.name()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One table a stage wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    pub name: String,
    /// Relative to the stage folder.
    pub file: String,
    pub rows: usize,
}

impl Table {
    pub fn new(name: &str, file: &str, rows: usize) -> Table {
        Table {
            name: name.to_string(),
            file: file.to_string(),
            rows,
        }
    }
}

/// Where a stage's rows come from, carried downstream stage by stage
/// (balance → synthesize → train_classifier) so that a stage learns it from
/// its declared inputs alone, never by walking the run folder.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    /// The side of the square images in these rows (ingest's `image_size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<u32>,
    /// The ingest crop of CelebA's aligned frame behind these rows (None
    /// for demo faces and older runs: the default crop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop: Option<crate::data::images::Crop>,
    /// The balance `size` (Liu et al. Fig. 10) of the plan behind these rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance_size: Option<f64>,
    /// The generator stage whose model synthesized the rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<GeneratorRef>,
}

/// A `train_generator` stage as its downstream stages remember it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratorRef {
    pub stage: String,
    /// An image editor (SG-GAN, StarGAN, ST-GAN), whose rows are edits of
    /// real faces; else a label-to-image generator.
    pub translator: bool,
}

impl Lineage {
    /// The lineage of a stage that derives its rows from `inputs`: the first
    /// input that knows a fact passes it on.
    pub fn inherit(inputs: &[InputStage]) -> Lineage {
        Lineage {
            image_size: inputs.iter().find_map(|i| i.lineage.image_size),
            crop: inputs.iter().find_map(|i| i.lineage.crop),
            balance_size: inputs.iter().find_map(|i| i.lineage.balance_size),
            generator: inputs.iter().find_map(|i| i.lineage.generator.clone()),
        }
    }
}

/// A finished input stage as a downstream stage sees it.
#[derive(Debug, Clone)]
pub struct InputStage {
    pub name: String,
    pub kind: StageKind,
    pub dir: PathBuf,
    pub tables: Vec<Table>,
    /// Other files, relative to `dir`.
    pub files: Vec<String>,
    pub lineage: Lineage,
    /// The stage it is a size-sweep copy of (`classifier_x2` → `classifier`),
    /// as the pipeline expanded it; None for a stage the user wrote.
    pub sweep_of: Option<String>,
}

impl InputStage {
    /// Path of one of its tables.
    pub fn table(&self, table: &str) -> Result<PathBuf> {
        match self.tables.iter().find(|t| t.name == table) {
            Some(t) => Ok(self.dir.join(&t.file)),
            None => bail!("input stage `{}` has no table `{table}`", self.name),
        }
    }

    /// The `model.json` of a `train_generator` input.
    pub fn model_file(&self) -> Result<ModelFile> {
        ModelFile::read(&self.dir)
    }
}

/// Everything a stage may touch.
pub struct StageIo {
    pub name: String,
    /// The run's name (`[run] name`), recorded in `metrics` rows.
    pub run_name: String,
    /// Temporary output folder; the runner renames it into place on success.
    pub out_dir: PathBuf,
    /// Kept across failed or killed runs with the same fingerprint (training
    /// checkpoints); removed once the stage succeeds.
    pub resume_dir: PathBuf,
    pub inputs: Vec<InputStage>,
    pub run_seed: u64,
    pub device: Device,
    pub quiet: bool,
}

impl StageIo {
    /// The one input of `kind` (the pipeline checked that there is one).
    pub fn input(&self, kind: StageKind) -> Result<&InputStage> {
        match self.optional_input(kind) {
            Some(i) => Ok(i),
            None => bail!("stage `{}` has no `{}` input", self.name, kind.name()),
        }
    }

    /// The input of `kind`, if the stage declared one.
    pub fn optional_input(&self, kind: StageKind) -> Option<&InputStage> {
        self.inputs.iter().find(|i| i.kind == kind)
    }

    /// Every input of `kind`, in declaration order.
    pub fn inputs_of(&self, kind: StageKind) -> Vec<&InputStage> {
        self.inputs.iter().filter(|i| i.kind == kind).collect()
    }

    /// The candle device of the run's `device` setting.
    pub fn candle_device(&self) -> Result<candle_core::Device> {
        self.device.to_candle()
    }

    /// A progress bar with a rate and ETA (hidden with `--quiet`).
    pub fn progress(&self, len: u64, unit: &str) -> indicatif::ProgressBar {
        crate::progress::bar(len, unit, self.quiet)
    }

    /// A line for the user (suppressed with `--quiet`).
    pub fn say(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{}: {}", self.name, msg.as_ref());
        }
    }
}

/// What a stage produced.
#[derive(Debug, Default)]
pub struct StageOutput {
    pub tables: Vec<Table>,
    pub files: Vec<String>,
    pub summary: serde_json::Value,
    pub lineage: Lineage,
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

/// The `train_log` table of a training stage.
pub(crate) fn write_train_log(path: &Path, log: &[LogRow]) -> Result<usize> {
    let schema = crate::data::schema::train_log();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            log.iter().map(|r| r.phase.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(
            log.iter().map(|r| r.step as i64),
        )),
        Arc::new(StringArray::from_iter_values(
            log.iter().map(|r| r.name.as_str()),
        )),
        Arc::new(Float64Array::from_iter_values(log.iter().map(|r| r.value))),
    ];
    let batch = RecordBatch::try_new(schema.clone(), cols)?;
    let mut w = TableWriter::create(path, schema, &[], 1 << 20)?;
    w.write(&batch)?;
    w.finish()
}
