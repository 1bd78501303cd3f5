//! `kind = "train_generator"`: trains a generator on the ingested faces.
//!
//! `model = "attr2face"` is the "for free" method of Liu et al. (Sec. III):
//! autoencoder, classifier and mapping phases, each checkpointed in the
//! stage's resume folder and skipped when finished, so a killed run resumes
//! where it stopped. `model = "dcgan"` is the footnote-4 ablation.
//!
//! Outputs: `generator.safetensors` (Φ and G_de), `classifier.safetensors`
//! (C, used by `synthesize` for `label_agreement`), `autoencoder.safetensors`
//! (G_en and G_de, attr2face only: reconstructions for `evaluate`, embeddings
//! for a `linear_probe` classifier), `model.json` (network
//! sizes), the `train_log` table, sample grids under `samples/`, and every
//! phase's last checkpoint under `checkpoints/`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{StageIo, StageOutput};
use crate::data::celeba::Labels;
use crate::data::parquet::{TableWriter, read_columns};
use crate::data::schema::{self, N_ATTRIBUTES, attribute_column};
use crate::data::tensors::{FaceSet, labels_of_batch, strings};
use crate::data_error;
use crate::models::attr2face::{Config as NetConfig, Preset};
use crate::train::attr2face::{
    self, AutoencoderOptions, ClassifierOptions, Data, MappingOptions, Model, Options,
};
use crate::train::{Cadence, LogRow, PhaseEnv};

fn default_model() -> Model {
    Model::Attr2face
}
fn default_preset() -> Preset {
    Preset::Paper64
}
fn default_batch() -> usize {
    16
}
fn default_true() -> bool {
    true
}
fn default_one() -> usize {
    1
}
fn default_log_every() -> usize {
    50
}
fn default_sample_every() -> usize {
    500
}
fn default_checkpoint_every() -> usize {
    1000
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `attr2face` (the paper's method) or `dcgan` (footnote-4 ablation).
    #[serde(default = "default_model")]
    pub model: Model,
    /// `paper_64` or `tiny`.
    #[serde(default = "default_preset")]
    pub preset: Preset,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Train on at most this many training rows (the first ones).
    #[serde(default)]
    pub limit: Option<usize>,
    /// `false`: the "Without Perceptual Loss" ablation.
    #[serde(default = "default_true")]
    pub perceptual_loss: bool,
    /// Table 4: rounds of classifier retraining on augmented data, then Φ again.
    #[serde(default = "default_one")]
    pub recursive_times: usize,
    #[serde(default = "default_log_every")]
    pub log_every: usize,
    #[serde(default = "default_sample_every")]
    pub sample_every: usize,
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: usize,
    /// Overrides the run seed.
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub autoencoder: AutoencoderOptions,
    #[serde(default)]
    pub classifier: ClassifierOptions,
    #[serde(default)]
    pub mapping: MappingOptions,
}

impl Config {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.batch_size == 0 {
            return Err("batch_size must be at least 1".into());
        }
        if !(1..=10).contains(&self.recursive_times) {
            return Err(format!(
                "recursive_times = {}: use 1 (no recursion) to 10",
                self.recursive_times
            ));
        }
        if self.limit == Some(0) {
            return Err("limit must be at least 1".into());
        }
        for (key, lr) in [
            ("autoencoder.lr", self.autoencoder.lr),
            ("classifier.lr", self.classifier.lr),
            ("mapping.lr", self.mapping.lr),
            ("mapping.discriminator_lr", self.mapping.discriminator_lr),
        ] {
            if !(lr > 0.0 && lr.is_finite()) {
                return Err(format!("{key} = {lr}: must be a positive number"));
            }
        }
        for (key, e) in [
            ("autoencoder.epochs", self.autoencoder.epochs),
            ("classifier.epochs", self.classifier.epochs),
            ("mapping.epochs", self.mapping.epochs),
        ] {
            if !(e > 0.0 && e.is_finite()) {
                return Err(format!("{key} = {e}: must be positive (or set `steps`)"));
            }
        }
        if !(0.0..=1.0).contains(&self.autoencoder.gamma) {
            return Err("autoencoder.gamma must be in [0, 1]".into());
        }
        Ok(())
    }

    pub fn network(&self) -> NetConfig {
        NetConfig::preset(self.preset)
    }
}

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
            if schema::GENERATOR_STRATEGIES.contains(&strategy.value(r)) {
                out.push(l);
            }
        }
    }
    Ok(out)
}

pub fn run(c: &Config, io: &StageIo) -> Result<StageOutput> {
    let net = c.network();
    let dev = io.candle_device()?;
    let ingest = io.input("ingest")?;
    let faces_path = ingest.table("faces")?;
    io.say(format!(
        "loading train/val faces at {0}×{0} from {1}",
        net.image_size(),
        faces_path.display()
    ));
    let faces = FaceSet::load(&faces_path, &["train", "val"], None, net.image_size())?;
    let mut train = faces.rows_in("train");
    if let Some(l) = c.limit {
        train.truncate(l);
    }
    let val = faces.rows_in("val");
    if train.is_empty() {
        return Err(data_error!(
            "input `{}` has no `train` rows with images; ingest the train partition",
            ingest.name
        ));
    }
    let plan_labels = match io.inputs.iter().find(|i| i.record.kind == "balance") {
        Some(b) => plan_generator_labels(&b.table("plan")?)?,
        None => Vec::new(),
    };
    io.say(format!(
        "{} `{}` on {} train / {} val faces, preset {}, device {}",
        c.model.name(),
        io.name,
        train.len(),
        val.len(),
        serde_json::to_value(c.preset)?.as_str().unwrap_or("?"),
        io.device
    ));
    let data = Data {
        faces: &faces,
        train,
        val,
        plan_labels,
    };
    let opts = Options {
        model: c.model,
        batch_size: c.batch_size,
        perceptual_loss: c.perceptual_loss,
        recursive_times: c.recursive_times,
        seed: c.seed.unwrap_or(io.run_seed),
        autoencoder: c.autoencoder.clone(),
        classifier: c.classifier.clone(),
        mapping: c.mapping.clone(),
    };
    let env = PhaseEnv {
        dir: &io.resume_dir,
        cadence: Cadence {
            log_every: c.log_every,
            sample_every: c.sample_every,
            checkpoint_every: c.checkpoint_every,
        },
        quiet: io.quiet,
        label: &io.name,
    };
    let trained = attr2face::train(&net, &opts, &data, &dev, &env)?;
    say_summary(io, &trained.summary);

    // Outputs.
    let out = &io.out_dir;
    let gen_path = out.join("generator.safetensors");
    candle_core::safetensors::save(&trained.generator, &gen_path)?;
    candle_core::safetensors::save(&trained.classifier, out.join("classifier.safetensors"))?;
    let sha = hex::encode(Sha256::digest(std::fs::read(&gen_path)?));
    let model_json = serde_json::json!({
        "model": c.model.name(),
        "preset": c.preset,
        "network": net,
        "generator_sha256": sha,
    });
    std::fs::write(
        out.join("model.json"),
        serde_json::to_string_pretty(&model_json)?,
    )?;
    let mut files = vec![
        "generator.safetensors".to_string(),
        "classifier.safetensors".to_string(),
        "model.json".to_string(),
    ];
    if let Some(ae) = &trained.autoencoder {
        candle_core::safetensors::save(ae, out.join("autoencoder.safetensors"))?;
        files.push("autoencoder.safetensors".to_string());
    }
    files.extend(copy_tree(&io.resume_dir.join("samples"), out, "samples")?);
    for entry in std::fs::read_dir(&io.resume_dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if entry.file_type()?.is_dir() && name != "samples" {
            files.extend(copy_tree(
                &entry.path(),
                out,
                &format!("checkpoints/{name}"),
            )?);
        }
    }
    let rows = write_log(&out.join("train_log.parquet"), &trained.log)?;
    let mut summary = trained.summary;
    summary["generator_sha256"] = sha.into();
    Ok(StageOutput {
        tables: vec![("train_log".into(), "train_log.parquet".into(), rows)],
        files,
        summary,
    })
}

fn say_summary(io: &StageIo, s: &serde_json::Value) {
    let f = |v: &serde_json::Value| v.as_f64().map(|x| format!("{x:.4}")).unwrap_or("-".into());
    if let Some(a) = s.get("autoencoder") {
        io.say(format!(
            "autoencoder: val L1 {} at init → {} (k_t {})",
            f(&a["val_rec_l1_init"]),
            f(&a["val_rec_l1"]),
            f(&a["k_t"])
        ));
    }
    if let Some(a) = s.get("classifier") {
        io.say(format!(
            "classifier: val accuracy {} (per-attribute majority {})",
            f(&a["val_accuracy"]),
            f(&a["val_majority_accuracy"])
        ));
    }
    if let Some(a) = s.get("mapping") {
        io.say(format!(
            "mapping: val embedding MSE {} at init → {}",
            f(&a["val_rec_emb_init"]),
            f(&a["val_rec_emb"])
        ));
    }
}

/// Copies files of `src` (recursively) to `out/rel`; returns their paths relative to `out`.
fn copy_tree(src: &Path, out: &Path, rel: &str) -> Result<Vec<String>> {
    let mut files = Vec::new();
    if !src.exists() {
        return Ok(files);
    }
    std::fs::create_dir_all(out.join(rel))?;
    let mut entries: Vec<_> = std::fs::read_dir(src)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        let r = format!("{rel}/{name}");
        if e.file_type()?.is_dir() {
            files.extend(copy_tree(&e.path(), out, &r)?);
        } else {
            std::fs::copy(e.path(), out.join(&r))
                .with_context(|| format!("copying {}", e.path().display()))?;
            files.push(r);
        }
    }
    Ok(files)
}

fn write_log(path: &Path, log: &[LogRow]) -> Result<usize> {
    let schema = schema::train_log();
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
