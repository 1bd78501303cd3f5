//! `kind = "train_classifier"`: the point of augmentation is a better
//! attribute classifier (Liu et al. Sec. V-D, Tables 2–3). Trains a
//! multi-label classifier on the real `train` rows of an ingest stage (no
//! augmentation) or on the `augmented` table of a synthesize stage, keeps
//! the epoch with the best accuracy on the real `val` split, and measures it
//! on the real `test` split only — never on synthetic rows.
//!
//! Architecture `paper_cnn`: the 5-convolution classifier of Sec. III-D.
//! Tables: `predictions` (test image × attribute → probability) and
//! `metrics` (the paper's accuracy, per-attribute accuracy, balanced
//! accuracy and F1, their means, the best epoch and its val accuracy).

use std::sync::Arc;

use anyhow::Result;
use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use super::{StageIo, StageOutput};
use crate::data::parquet::TableWriter;
use crate::data::schema::{
    self, ATTRIBUTES, N_ATTRIBUTES, attribute_by_any_name, attribute_column,
};
use crate::data::tensors::FaceSet;
use crate::data_error;
use crate::metrics::accuracy::{confusion, paper_accuracy};
use crate::models::Activation;
use crate::models::classifier;
use crate::train::classifier::{Options, Split, predict, train};
use crate::train::{Cadence, PhaseEnv};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    /// The 5-conv classifier of Sec. III-D (64 → 1024 filters, leaky ReLU).
    PaperCnn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Size {
    /// 64×64 input, 64 → 1024 filters.
    Paper,
    /// 32×32 input, 8 → 128 filters (CPU tests).
    Tiny,
}

fn default_arch() -> Architecture {
    Architecture::PaperCnn
}
fn default_size() -> Size {
    Size::Paper
}
fn default_epochs() -> usize {
    10
}
fn default_batch() -> usize {
    64
}
fn default_lr() -> f64 {
    1e-4
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_arch")]
    pub architecture: Architecture,
    #[serde(default = "default_size")]
    pub size: Size,
    /// Attributes to predict (CelebA or lowercase names); default all 40.
    #[serde(default)]
    pub attributes: Option<Vec<String>>,
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Train on at most this many rows.
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub seed: Option<u64>,
}

impl Config {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.epochs == 0 || self.batch_size == 0 {
            return Err("epochs and batch_size must be at least 1".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(format!("lr = {}: must be positive", self.lr));
        }
        self.attribute_indices()?;
        Ok(())
    }

    pub fn attribute_indices(&self) -> std::result::Result<Vec<usize>, String> {
        match &self.attributes {
            None => Ok((0..N_ATTRIBUTES).collect()),
            Some(v) if v.is_empty() => Err("attributes: name at least one".into()),
            Some(v) => v
                .iter()
                .map(|n| {
                    attribute_by_any_name(n).ok_or_else(|| {
                        format!("attributes: unknown attribute `{n}` (CelebA names such as `Bald`, `Smiling`)")
                    })
                })
                .collect(),
        }
    }

    fn network(&self) -> classifier::Config {
        match self.size {
            Size::Paper => classifier::Config::paper_64(),
            Size::Tiny => classifier::Config {
                activation: Activation::LeakyRelu,
                ..classifier::Config::tiny()
            },
        }
    }
}

pub fn run(c: &Config, io: &StageIo) -> Result<StageOutput> {
    let dev = io.candle_device()?;
    let net = c.network();
    let attrs = c.attribute_indices().map_err(|e| data_error!("{e}"))?;
    let ingest = io.input("ingest")?;
    let faces_path = ingest.table("faces")?;
    let eval = FaceSet::load(&faces_path, &["val", "test"], None, net.image_size)?;
    let (train_set, table) = match io.inputs.iter().find(|i| i.record.kind == "synthesize") {
        Some(s) => (
            FaceSet::load(&s.table("augmented")?, &[], c.limit, net.image_size)?,
            format!("{}.augmented", s.name),
        ),
        None => (
            FaceSet::load(&faces_path, &["train"], c.limit, net.image_size)?,
            format!("{}.faces (train)", ingest.name),
        ),
    };
    let train_split = Split {
        faces: &train_set,
        rows: (0..train_set.len()).collect(),
    };
    let val = Split {
        faces: &eval,
        rows: eval.rows_in("val"),
    };
    let test = Split {
        faces: &eval,
        rows: eval.rows_in("test"),
    };
    if train_split.rows.is_empty() || val.rows.is_empty() || test.rows.is_empty() {
        return Err(data_error!(
            "train_classifier needs train, val and test rows; got {} / {} / {} (ingest all three partitions)",
            train_split.rows.len(),
            val.rows.len(),
            test.rows.len()
        ));
    }
    io.say(format!(
        "{} attributes, training on {} rows of {table}; best epoch by val ({} rows); test {} rows",
        attrs.len(),
        train_split.rows.len(),
        val.rows.len(),
        test.rows.len()
    ));
    let opts = Options {
        epochs: c.epochs,
        batch_size: c.batch_size,
        lr: c.lr,
        seed: c.seed.unwrap_or(io.run_seed),
        attributes: attrs.clone(),
    };
    let env = PhaseEnv {
        dir: &io.resume_dir,
        cadence: Cadence {
            log_every: 10,
            sample_every: 0,
            checkpoint_every: 500,
        },
        quiet: io.quiet,
        label: &io.name,
    };
    let trained = train(&net, &opts, &train_split, &val, &dev, &env)?;

    // Test predictions and metrics.
    let probs = predict(&trained.net, &test, &dev)?;
    let truth: Vec<Vec<bool>> = test
        .rows
        .iter()
        .map(|&r| {
            attrs
                .iter()
                .map(|&a| (eval.labels[r] >> a) & 1 == 1)
                .collect()
        })
        .collect();
    let pred: Vec<Vec<bool>> = probs
        .iter()
        .map(|p| p.iter().map(|&v| v > 0.5).collect())
        .collect();
    let acc = paper_accuracy(&pred, &truth);
    let counts = confusion(&pred, &truth);
    let n_test = test.rows.len() as i64;
    let details = serde_json::json!({
        "split": "test",
        "architecture": c.architecture,
        "size": c.size,
        "training_table": table,
        "training_rows": train_split.rows.len(),
        "attributes": attrs.len(),
    })
    .to_string();
    let mut rows: Vec<(String, Option<String>, f64, i64)> = vec![
        ("accuracy".into(), None, acc, n_test),
        (
            "balanced_accuracy".into(),
            None,
            counts.iter().map(|c| c.balanced_accuracy()).sum::<f64>() / counts.len() as f64,
            n_test,
        ),
        (
            "f1".into(),
            None,
            counts.iter().map(|c| c.f1()).sum::<f64>() / counts.len() as f64,
            n_test,
        ),
        (
            "val_accuracy".into(),
            None,
            trained.best_val_accuracy,
            val.rows.len() as i64,
        ),
        (
            "best_epoch".into(),
            None,
            trained.best_epoch as f64,
            val.rows.len() as i64,
        ),
    ];
    for (k, &a) in attrs.iter().enumerate() {
        let name = Some(attribute_column(a));
        rows.push((
            "accuracy".into(),
            name.clone(),
            counts[k].accuracy(),
            n_test,
        ));
        rows.push((
            "balanced_accuracy".into(),
            name.clone(),
            counts[k].balanced_accuracy(),
            n_test,
        ));
        rows.push(("f1".into(), name, counts[k].f1(), n_test));
    }
    let out = &io.out_dir;
    let n_metrics = write_metrics(&out.join("metrics.parquet"), &io.name, &rows, &details)?;
    let n_pred = write_predictions(
        &out.join("predictions.parquet"),
        &eval,
        &test.rows,
        &attrs,
        &probs,
    )?;
    let mean_bal = rows[1].2;
    io.say(format!(
        "test accuracy {acc:.4} (the paper's definition), mean balanced accuracy {mean_bal:.4}; best epoch {} (val {:.4})",
        trained.best_epoch, trained.best_val_accuracy
    ));
    Ok(StageOutput {
        tables: vec![
            ("predictions".into(), "predictions.parquet".into(), n_pred),
            ("metrics".into(), "metrics.parquet".into(), n_metrics),
        ],
        files: vec![],
        summary: serde_json::json!({
            "test_accuracy": acc,
            "test_balanced_accuracy": mean_bal,
            "best_epoch": trained.best_epoch,
            "val_accuracy": trained.best_val_accuracy,
            "training_table": table,
            "training_rows": train_split.rows.len(),
            "wall_time_s": trained.wall_time_s,
        }),
    })
}

fn write_metrics(
    path: &std::path::Path,
    stage: &str,
    rows: &[(String, Option<String>, f64, i64)],
    details: &str,
) -> Result<usize> {
    let schema = schema::metrics();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|_| stage))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.0.as_str()),
        )),
        Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1.as_deref()))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.3))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|_| details))),
    ];
    let mut w = TableWriter::create(path, schema.clone(), &[], 1 << 16)?;
    w.write(&RecordBatch::try_new(schema, cols)?)?;
    w.finish()
}

fn write_predictions(
    path: &std::path::Path,
    faces: &FaceSet,
    rows: &[usize],
    attrs: &[usize],
    probs: &[Vec<f64>],
) -> Result<usize> {
    let schema = schema::predictions();
    let mut ids = Vec::new();
    let mut names = Vec::new();
    let mut labels = Vec::new();
    let mut p = Vec::new();
    for (i, &r) in rows.iter().enumerate() {
        for (k, &a) in attrs.iter().enumerate() {
            ids.push(faces.image_ids[r].as_str());
            names.push(ATTRIBUTES[a].to_ascii_lowercase());
            labels.push(Some((faces.labels[r] >> a) & 1 == 1));
            p.push(probs[i][k]);
        }
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(ids)),
        Arc::new(StringArray::from_iter_values(names)),
        Arc::new(BooleanArray::from_iter(labels)),
        Arc::new(Float64Array::from_iter_values(p)),
    ];
    let mut w = TableWriter::create(path, schema.clone(), &[], 1 << 16)?;
    w.write(&RecordBatch::try_new(schema, cols)?)?;
    w.finish()
}
