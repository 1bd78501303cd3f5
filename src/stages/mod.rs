//! One module per stage kind: a `Config` (serde, unknown keys rejected) and
//! `run(&Config, &StageIo) -> Result<StageOutput>`. Stages never import each
//! other: a stage reads its inputs only through the tables recorded in the
//! manifest ([`InputStage`]).

pub mod balance;
pub mod evaluate;
pub mod ingest;
pub mod synthesize;
pub mod train_classifier;
pub mod train_generator;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::models::began;
use crate::pipeline::config::Device;
use crate::pipeline::manifest::StageRecord;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    Ingest,
    Balance,
    TrainGenerator,
    Synthesize,
    TrainClassifier,
    Evaluate,
}

impl StageKind {
    pub const ALL: [StageKind; 6] = [
        StageKind::Ingest,
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
        }
    }
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }
    pub fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|k| k.name()).collect()
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum StageConfig {
    Ingest(ingest::Config),
    Balance(balance::Config),
    TrainGenerator(train_generator::Config),
    Synthesize(synthesize::Config),
    TrainClassifier(train_classifier::Config),
    Evaluate(evaluate::Config),
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
        }
    }

    /// Deserializes a stage's own keys (without `kind`/`inputs`); relative
    /// paths are resolved against `base`, the pipeline file's folder.
    pub fn from_toml(
        kind: StageKind,
        value: toml::Value,
        base: &Path,
    ) -> std::result::Result<Self, String> {
        Ok(match kind {
            StageKind::Ingest => {
                let mut c: ingest::Config = parse(value)?;
                c.resolve(base)?;
                StageConfig::Ingest(c)
            }
            StageKind::Balance => {
                let c: balance::Config = parse(value)?;
                c.validate()?;
                StageConfig::Balance(c)
            }
            StageKind::TrainGenerator => {
                let c: train_generator::Config = parse(value)?;
                c.validate()?;
                StageConfig::TrainGenerator(c)
            }
            StageKind::Synthesize => {
                let c: synthesize::Config = parse(value)?;
                c.validate()?;
                StageConfig::Synthesize(c)
            }
            StageKind::TrainClassifier => {
                let c: train_classifier::Config = parse(value)?;
                c.validate()?;
                StageConfig::TrainClassifier(c)
            }
            StageKind::Evaluate => {
                let c: evaluate::Config = parse(value)?;
                c.validate()?;
                StageConfig::Evaluate(c)
            }
        })
    }

    /// Checks the kinds of the declared inputs.
    pub fn check_inputs(&self, inputs: &[StageKind]) -> std::result::Result<(), String> {
        match self {
            StageConfig::Ingest(_) if !inputs.is_empty() => Err("`ingest` takes no inputs".into()),
            StageConfig::Balance(_) if inputs != [StageKind::Ingest] => Err(format!(
                "`balance` needs one `ingest` stage as input, got {}",
                kind_list(inputs)
            )),
            StageConfig::TrainGenerator(_) => {
                let k = sorted(inputs);
                let ok = k == [StageKind::Ingest] || k == [StageKind::Balance, StageKind::Ingest];
                if !ok {
                    return Err(format!(
                        "`train_generator` needs one `ingest` stage and optionally one `balance` stage (for `recursive_times`), got {}",
                        kind_list(inputs)
                    ));
                }
                Ok(())
            }
            StageConfig::Synthesize(_) => {
                let k = sorted(inputs);
                let ok = k == [StageKind::Balance, StageKind::Ingest]
                    || k == [
                        StageKind::Balance,
                        StageKind::Ingest,
                        StageKind::TrainGenerator,
                    ];
                if ok {
                    Ok(())
                } else {
                    Err(format!(
                        "`synthesize` needs one `ingest`, one `balance` and (for generated rows) one `train_generator` stage, got {}",
                        kind_list(inputs)
                    ))
                }
            }
            StageConfig::TrainClassifier(c) => {
                let k = sorted(inputs);
                let ok = [
                    vec![StageKind::Ingest],
                    vec![StageKind::Ingest, StageKind::Synthesize],
                    vec![StageKind::Ingest, StageKind::TrainGenerator],
                    vec![
                        StageKind::Ingest,
                        StageKind::Synthesize,
                        StageKind::TrainGenerator,
                    ],
                ]
                .contains(&k);
                let probe_on_encoder = c.features() == Some(train_classifier::Features::Encoder);
                if ok && probe_on_encoder && !k.contains(&StageKind::TrainGenerator) {
                    Err("`linear_probe` with features = \"encoder\" needs a `train_generator` input (attr2face) to take G_en from; add it to `inputs`, or set features = \"inception\"".into())
                } else if ok {
                    Ok(())
                } else {
                    Err(format!(
                        "`train_classifier` needs one `ingest` stage (val/test, and train rows without augmentation), optionally one `synthesize` stage (train on its `augmented` table) and, for a `linear_probe` on encoder features, one `train_generator` stage, got {}",
                        kind_list(inputs)
                    ))
                }
            }
            StageConfig::Evaluate(_) => {
                let ingests = inputs.iter().filter(|k| **k == StageKind::Ingest).count();
                let measured = inputs.iter().any(|k| {
                    matches!(
                        k,
                        StageKind::TrainClassifier
                            | StageKind::Synthesize
                            | StageKind::TrainGenerator
                    )
                });
                let others = inputs
                    .iter()
                    .any(|k| matches!(k, StageKind::Balance | StageKind::Evaluate));
                if ingests == 1 && measured && !others {
                    Ok(())
                } else {
                    Err(format!(
                        "`evaluate` needs one `ingest` stage (the real test images) and the `train_classifier`, `synthesize` and `train_generator` stages to measure, got {}",
                        kind_list(inputs)
                    ))
                }
            }
            _ => Ok(()),
        }
    }

    /// Fingerprint material from outside the run (e.g. the dataset files on disk).
    pub fn external_fingerprint(&self) -> Result<String> {
        match self {
            StageConfig::Ingest(c) => ingest::external_fingerprint(c),
            StageConfig::Evaluate(c) => evaluate::external_fingerprint(c),
            StageConfig::Balance(_)
            | StageConfig::TrainGenerator(_)
            | StageConfig::Synthesize(_)
            | StageConfig::TrainClassifier(_) => Ok(String::new()),
        }
    }
}

/// A stage's keys as its typed config. serde names a bad enum value but not
/// its key (`unknown variant `huge`, expected ...`), so the key is added.
fn parse<T: serde::de::DeserializeOwned>(value: toml::Value) -> std::result::Result<T, String> {
    value.clone().try_into().map_err(|e: toml::de::Error| {
        let msg = e.message().to_string();
        let bad = msg
            .strip_prefix("unknown variant `")
            .and_then(|r| r.split_once('`'))
            .map(|(v, _)| v);
        match bad.and_then(|v| key_holding(&value, v).map(|k| (k, v))) {
            Some((key, v)) => format!("{key} = {v:?}: {msg}"),
            None => msg,
        }
    })
}

/// The dotted key whose value is the string `s`, if any.
fn key_holding(v: &toml::Value, s: &str) -> Option<String> {
    let t = v.as_table()?;
    t.iter().find_map(|(k, v)| match v {
        toml::Value::String(x) if x == s => Some(k.clone()),
        toml::Value::Table(_) => key_holding(v, s).map(|sub| format!("{k}.{sub}")),
        _ => None,
    })
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

/// A finished input stage as a downstream stage sees it.
#[derive(Debug, Clone)]
pub struct InputStage {
    pub name: String,
    pub dir: PathBuf,
    pub record: StageRecord,
}

impl InputStage {
    /// Path of one of its tables.
    pub fn table(&self, table: &str) -> Result<PathBuf> {
        match self.record.tables.iter().find(|t| t.name == table) {
            Some(t) => Ok(self.dir.join(&t.file)),
            None => bail!("input stage `{}` has no table `{table}`", self.name),
        }
    }

    /// The trained autoencoder (G_en, G_de) of a `train_generator` input,
    /// from its `autoencoder.safetensors` and the sizes in `model.json`;
    /// None when the model trains none (`dcgan`).
    pub fn autoencoder(
        &self,
        dev: &candle_core::Device,
    ) -> Result<Option<(began::Config, began::Autoencoder)>> {
        let weights = self.dir.join("autoencoder.safetensors");
        if !weights.is_file() {
            return Ok(None);
        }
        let model: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.dir.join("model.json"))?)?;
        let cfg: began::Config = serde_json::from_value(model["network"]["autoencoder"].clone())
            .with_context(|| format!("{}: model.json: autoencoder sizes", self.dir.display()))?;
        // SAFETY: the file is a finished stage output, not modified while mapped.
        let vb = unsafe {
            candle_nn::VarBuilder::from_mmaped_safetensors(
                &[&weights],
                candle_core::DType::F32,
                dev,
            )?
        };
        let ae = began::Autoencoder::new(&cfg, vb)?;
        Ok(Some((cfg, ae)))
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
    pub fn input(&self, kind: &str) -> Result<&InputStage> {
        match self.inputs.iter().find(|i| i.record.kind == kind) {
            Some(i) => Ok(i),
            None => bail!("stage `{}` has no `{kind}` input", self.name),
        }
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
    /// (table name, file relative to the stage folder, rows)
    pub tables: Vec<(String, String, usize)>,
    pub files: Vec<String>,
    pub summary: serde_json::Value,
}

pub fn run(def: &crate::pipeline::config::StageDef, io: &StageIo) -> Result<StageOutput> {
    match &def.config {
        StageConfig::Ingest(c) => ingest::run(c, io),
        StageConfig::Balance(c) => balance::run(c, io),
        StageConfig::TrainGenerator(c) => train_generator::run(c, io),
        StageConfig::Synthesize(c) => synthesize::run(c, io),
        StageConfig::TrainClassifier(c) => train_classifier::run(c, io),
        StageConfig::Evaluate(c) => evaluate::run(c, io),
    }
}
