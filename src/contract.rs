//! The contract between the runner and a stage: what a stage is handed
//! ([`StageIo`]: its name, folders, seed, device and its declared inputs as
//! [`InputStage`]s) and what it returns ([`StageOutput`]: the [`Table`]s and
//! files it wrote, a summary and the [`Lineage`] it passes downstream).
//! Stages and the generator families they train and load both speak it;
//! the runner (`pipeline`) builds it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Result, bail};
use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::data::parquet::TableWriter;
use crate::train::LogRow;

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

    /// Kinds in a canonical order (by name), for comparing against allowed sets.
    pub fn sorted(kinds: &[StageKind]) -> Vec<StageKind> {
        let mut k = kinds.to_vec();
        k.sort_by_key(|k| k.name());
        k
    }

    /// Kinds in backticks, comma-separated (`none` when empty), for messages.
    pub fn list(kinds: &[StageKind]) -> String {
        if kinds.is_empty() {
            "none".into()
        } else {
            kinds
                .iter()
                .map(|k| format!("`{}`", k.name()))
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}

impl std::fmt::Display for StageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A table a stage writes: its name (in SQL, `<stage>_<name>`) and its
/// file in the stage folder (`<name>.parquet`), named once in [`tables`]
/// for the stage that writes it and the stages that read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableId {
    pub name: &'static str,
    pub file: &'static str,
}

macro_rules! table_ids {
    ($($id:ident = $name:literal),* $(,)?) => {
        /// Every table the stages write (their schemas: `data::schema::all_tables`).
        pub mod tables {
            use crate::contract::TableId;
            $(pub const $id: TableId = TableId { name: $name, file: concat!($name, ".parquet") };)*
            /// All of them.
            pub const ALL: &[TableId] = &[$($id),*];
        }
    };
}

table_ids! {
    FACES = "faces",
    REJECTS = "rejects",
    DEMO_MASKS = "demo_masks",
    PLAN = "plan",
    LABEL_STATS = "label_stats",
    TRAIN_LOG = "train_log",
    LABELLED = "labelled",
    LATENT_MAP = "latent_map",
    ATTRIBUTE_MAP = "attribute_map",
    SYNTH = "synth",
    AUGMENTED = "augmented",
    PREDICTIONS = "predictions",
    METRICS = "metrics",
    PARSER_METRICS = "parser_metrics",
    MASKS = "masks",
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
    /// The table `id` with `rows` rows.
    pub fn of(id: TableId, rows: usize) -> Table {
        Table::new(id.name, id.file, rows)
    }

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
    pub fn table(&self, id: TableId) -> Result<PathBuf> {
        match self.tables.iter().find(|t| t.name == id.name) {
            Some(t) => Ok(self.dir.join(&t.file)),
            None => bail!("input stage `{}` has no table `{}`", self.name, id.name),
        }
    }

    /// Whether it wrote table `id`.
    pub fn has_table(&self, id: TableId) -> bool {
        self.tables.iter().any(|t| t.name == id.name)
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

/// The `train_log` table of a training stage.
pub fn write_train_log(path: &Path, log: &[LogRow]) -> Result<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_id_has_a_schema_and_every_schema_an_id() {
        let ids: Vec<&str> = tables::ALL.iter().map(|t| t.name).collect();
        let schemas: Vec<&str> = crate::data::schema::all_tables()
            .into_iter()
            .map(|(t, _, _)| t)
            .collect();
        let mut a = ids.clone();
        let mut b = schemas.clone();
        a.sort();
        b.sort();
        assert_eq!(a, b);
        assert_eq!(tables::SYNTH.file, "synth.parquet");
    }
}
