//! `kind = "train_classifier"`: the point of augmentation is a better
//! attribute classifier (Liu et al. Sec. V-D, Tables 2–3). Trains a
//! multi-label classifier on the real `train` rows of an ingest stage (no
//! augmentation) or on the `augmented` table of a synthesize stage, keeps
//! the epoch with the best accuracy on the real `val` split, and measures it
//! on the real `test` split only — never on synthetic rows.
//!
//! Architectures: `paper_cnn`, the 5-convolution classifier of Sec. III-D;
//! `resnet18`, the evaluation network of SG-GAN and StarGAN; `linear_probe`,
//! a `linfa` logistic regression per attribute on frozen features (the
//! embedding of a `train_generator` input's encoder G_en, or the FID
//! Inception's pool3), with the L2 strength chosen on `val`.
//! Tables: `predictions` (test image × attribute → probability) and
//! `metrics` (the paper's accuracy, per-attribute accuracy, balanced
//! accuracy and F1, their means, the best epoch and its val accuracy).

use std::sync::Arc;

use anyhow::Result;
use arrow::array::{ArrayRef, BooleanArray, Float64Array, StringArray};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use super::{Lineage, StageIo, StageKind, StageOutput, Table};
use crate::contract::tables;
use crate::data::celeba::Partition;
use crate::data::metrics_table::{self, ClassifierDetails, MetricRow, metric};
use crate::data::parquet::TableWriter;
use crate::data::schema::{
    self, ATTRIBUTES, N_ATTRIBUTES, attribute_by_any_name, attribute_column,
};
use crate::data::tensors::FaceSet;
use crate::data_error;
use crate::metrics::accuracy::{confusion, paper_accuracy};
use candle_core::DType;

use crate::generators;
use crate::metrics::inception::FidInception;
use crate::models::Activation;
use crate::models::{classifier, resnet};
use crate::train::classifier::{Mix, NetConfig, Options, SavedClassifier, Split, predict, train};
use crate::train::probe::Options as ProbeOptions;
use crate::train::{Cadence, PhaseEnv};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    /// The 5-conv classifier of Sec. III-D (64 → 1024 filters, leaky ReLU).
    PaperCnn,
    /// ResNet-18 (He et al. 2016) with batch norm.
    Resnet18,
    /// Logistic regression per attribute on frozen features.
    LinearProbe,
}

/// Frozen features of a `linear_probe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Features {
    /// The embedding z = G_en(x) of a `train_generator` input (attr2face).
    Encoder,
    /// pool3 (2048-d) of the FID Inception (`weights`, else $AUGMENT_FID_WEIGHTS,
    /// else the cache that `augment weights fetch` fills).
    Inception,
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
fn one() -> usize {
    1
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
    /// Optimiser steps to train for instead of `epochs` (val is still
    /// checked once per pass over the training rows, and at the last step):
    /// classifiers on tables of different sizes then get the same training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    /// With a `synthesize` input: the share of every batch drawn from the
    /// augmented table's real rows (`origin = "real"`), the rest from its
    /// added rows; off: one shuffle over all rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub real_fraction: Option<f64>,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Train on at most this many rows.
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub seed: Option<u64>,
    /// Trainings with seeds derived from `seed` (the first uses `seed`
    /// itself): `metrics` gets each one's rows (`repeat` = 0, 1, ...), their
    /// mean (`repeat` null) and standard deviation (`<metric>_std`), and
    /// `predictions` every repeat's.
    #[serde(default = "one")]
    pub repeats: usize,
    /// `linear_probe` only: which frozen features (default `encoder`).
    #[serde(default)]
    pub features: Option<Features>,
    /// `linear_probe` only: L2 strengths tried per attribute.
    #[serde(default)]
    pub alphas: Option<Vec<f64>>,
    /// `features = "inception"`: the FID weights (default: $AUGMENT_FID_WEIGHTS,
    /// else `augment weights fetch`'s cache).
    #[serde(default)]
    pub weights: Option<std::path::PathBuf>,
}

impl Config {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.epochs == 0 || self.batch_size == 0 || self.repeats == 0 {
            return Err("epochs, batch_size and repeats must be at least 1".into());
        }
        if self.repeats > 1 && self.architecture == Architecture::LinearProbe {
            return Err(
                "repeats: a linear probe's fit is deterministic, so repeats would repeat it; leave repeats at 1"
                    .into(),
            );
        }
        if self.steps == Some(0) {
            return Err("steps must be at least 1".into());
        }
        if let Some(f) = self.real_fraction
            && !(f > 0.0 && f < 1.0)
        {
            return Err(format!(
                "real_fraction = {f}: must be between 0 and 1 (exclusive); leave it out for one shuffle over all rows"
            ));
        }
        let probe = self.architecture == Architecture::LinearProbe;
        if probe && (self.steps.is_some() || self.real_fraction.is_some()) {
            return Err("steps and real_fraction apply to trained networks, not to architecture = \"linear_probe\"".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(format!("lr = {}: must be positive", self.lr));
        }
        self.attribute_indices()?;
        if !probe && (self.features.is_some() || self.alphas.is_some()) {
            return Err("features and alphas apply to architecture = \"linear_probe\" only".into());
        }
        if let Some(a) = &self.alphas
            && (a.is_empty() || a.iter().any(|v| !(*v > 0.0 && v.is_finite())))
        {
            return Err("alphas: give one or more positive numbers".into());
        }
        if self.weights.is_some() && self.features != Some(Features::Inception) {
            return Err("weights applies to features = \"inception\" only".into());
        }
        Ok(())
    }

    pub fn features(&self) -> Option<Features> {
        (self.architecture == Architecture::LinearProbe)
            .then(|| self.features.unwrap_or(Features::Encoder))
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

    fn network(&self) -> NetConfig {
        match (self.architecture, self.size) {
            (Architecture::Resnet18, Size::Paper) => {
                NetConfig::ResNet18(resnet::Config::paper_64())
            }
            (Architecture::Resnet18, Size::Tiny) => NetConfig::ResNet18(resnet::Config::tiny()),
            (_, Size::Paper) => NetConfig::PaperCnn(classifier::Config::paper_64()),
            (_, Size::Tiny) => NetConfig::PaperCnn(classifier::Config {
                activation: Activation::LeakyRelu,
                ..classifier::Config::tiny()
            }),
        }
    }
}

/// What either kind of training produced, for the test split.
struct Outcome {
    probs: Vec<Vec<f64>>,
    val_accuracy: f64,
    best_epoch: Option<usize>,
    wall_time_s: f64,
    /// What the training adds to the rows' `details` (`ClassifierDetails::training`).
    details: serde_json::Map<String, serde_json::Value>,
}

/// The faces a classifier reads: val/test from the ingest, training rows
/// from it or from a synthesize stage's `augmented` table.
struct Sets {
    eval: FaceSet,
    train: FaceSet,
    /// Where the training rows came from (`<stage>.augmented` or `<stage>.faces (train)`).
    table: String,
    mix: Option<Mix>,
}

pub fn run(c: &Config, io: &StageIo) -> Result<StageOutput> {
    let dev = io.candle_device()?;
    let attrs = c.attribute_indices().map_err(|e| data_error!("{e}"))?;
    // The frozen feature network of a linear probe, loaded once (and before
    // the images, so that a missing input or weights file fails fast).
    let extractor = Extractor::load(c, io, &dev)?;
    // Images at the network's input size (features: the encoder's, or 64
    // for Inception, which resizes to 299 itself).
    let image_size = match &extractor {
        Some(Extractor::Encoder(g)) => g.image_size(),
        Some(Extractor::Inception(_)) => 64,
        None => c.network().image_size(),
    };
    let Sets {
        eval,
        train,
        table,
        mix,
    } = load_sets(c, io, image_size)?;
    let (eval, table) = (&eval, &table);
    let splits = Splits {
        mix,
        train: Split {
            faces: &train,
            rows: (0..train.len()).collect(),
        },
        val: Split {
            faces: eval,
            rows: eval.rows_in(Partition::Val),
        },
        test: Split {
            faces: eval,
            rows: eval.rows_in(Partition::Test),
        },
    };
    say_setup(c, io, &attrs, &splits, table)?;
    let (outcomes, saved) = train_repeats(c, io, &attrs, &splits, extractor.as_ref(), &dev, table)?;
    let rows = all_metric_rows(c, io, &attrs, &outcomes, &splits, table)?;
    let acc = rows[0].value;
    let outcome = &outcomes[0];
    let out = &io.out_dir;
    let n_metrics = metrics_table::write(&out.join(tables::METRICS.file), &rows)?;
    let probs: Vec<&[Vec<f64>]> = outcomes.iter().map(|o| o.probs.as_slice()).collect();
    let test_rows = &splits.test.rows;
    let n_pred = write_predictions(
        &out.join(tables::PREDICTIONS.file),
        eval,
        test_rows,
        &attrs,
        &probs,
    )?;
    let mean_bal = rows[1].value;
    io.say(format!(
        "test accuracy {acc:.4} (the paper's definition), mean balanced accuracy {mean_bal:.4}; val accuracy {:.4}{}",
        outcome.val_accuracy,
        outcome.best_epoch.map(|e| format!(" at epoch {e}")).unwrap_or_default()
    ));
    Ok(StageOutput {
        tables: vec![
            Table::of(tables::PREDICTIONS, n_pred),
            Table::of(tables::METRICS, n_metrics),
        ],
        files: if saved {
            vec!["classifier.json".into(), "classifier.safetensors".into()]
        } else {
            vec![]
        },
        summary: serde_json::json!({
            "repeats": c.repeats,
            "test_accuracy": acc,
            "test_balanced_accuracy": mean_bal,
            "architecture": c.architecture,
            "best_epoch": outcome.best_epoch,
            "val_accuracy": outcome.val_accuracy,
            "training_table": table,
            "training_rows": splits.train.rows.len(),
            "steps": c.steps,
            "real_fraction": c.real_fraction,
            "wall_time_s": outcome.wall_time_s,
        }),
        lineage: Lineage::inherit(&io.inputs),
    })
}

/// Val/test faces from the ingest; training rows from the synthesize
/// input's `augmented` table (and its real/added mix) or the ingest's train split.
fn load_sets(c: &Config, io: &StageIo, image_size: usize) -> Result<Sets> {
    let ingest = io.input(StageKind::Ingest)?;
    let faces_path = ingest.table(tables::FACES)?;
    let eval = FaceSet::load(
        &faces_path,
        &[Partition::Val, Partition::Test],
        None,
        image_size,
    )?;
    let (train, table, mix) = match io.optional_input(StageKind::Synthesize) {
        Some(s) => {
            let path = s.table(tables::AUGMENTED)?;
            let set = FaceSet::load(&path, &[], c.limit, image_size)?;
            let mix = match c.real_fraction {
                Some(f) => Some(mix_of(&path, set.len(), f, c.batch_size)?),
                None => None,
            };
            (set, format!("{}.augmented", s.name), mix)
        }
        None => (
            FaceSet::load(&faces_path, &[Partition::Train], c.limit, image_size)?,
            format!("{}.faces (train)", ingest.name),
            None,
        ),
    };
    Ok(Sets {
        eval,
        train,
        table,
        mix,
    })
}

/// Refuses empty splits; says what is trained on what.
fn say_setup(
    c: &Config,
    io: &StageIo,
    attrs: &[usize],
    splits: &Splits,
    table: &str,
) -> Result<()> {
    let (train_split, val, test) = (&splits.train, &splits.val, &splits.test);
    if train_split.rows.is_empty() || val.rows.is_empty() || test.rows.is_empty() {
        return Err(data_error!(
            "train_classifier needs train, val and test rows; got {} / {} / {} (ingest all three partitions)",
            train_split.rows.len(),
            val.rows.len(),
            test.rows.len()
        ));
    }
    io.say(format!(
        "{} attributes, training on {} rows of {table}; best {} by val ({} rows); test {} rows",
        attrs.len(),
        train_split.rows.len(),
        if c.architecture == Architecture::LinearProbe {
            "L2 strength"
        } else {
            "epoch"
        },
        val.rows.len(),
        test.rows.len()
    ));
    if let Some(m) = &splits.mix {
        io.say(format!(
            "real_fraction: every batch of {} takes {} of the {} real rows and {} of the {} added rows",
            c.batch_size,
            m.real,
            m.pools[0].len(),
            c.batch_size - m.real,
            m.pools[1].len()
        ));
    }
    Ok(())
}

/// Trains (or fits the probe) `repeats` times; the first network is saved
/// as the stage's classifier. Returns the outcomes and whether one was saved.
fn train_repeats(
    c: &Config,
    io: &StageIo,
    attrs: &[usize],
    splits: &Splits,
    extractor: Option<&Extractor>,
    dev: &candle_core::Device,
    table: &str,
) -> Result<(Vec<Outcome>, bool)> {
    let mut saved = false;
    let mut outcomes = Vec::with_capacity(c.repeats);
    for r in 0..c.repeats {
        if c.repeats > 1 {
            io.say(format!("repeat {} of {}", r + 1, c.repeats));
        }
        let outcome = match (extractor, c.features()) {
            (Some(ex), Some(f)) => fit_probe(c, io, (ex, f), attrs, splits, dev)?,
            _ => {
                let (outcome, weights) = train_network(c, io, attrs, splits, dev, r)?;
                // The first repeat's network is the stage's classifier file.
                if r == 0 {
                    SavedClassifier {
                        network: c.network(),
                        attributes: attrs.to_vec(),
                        trained_on_real: !table.ends_with(".augmented"),
                    }
                    .save(&io.out_dir, &weights)?;
                    saved = true;
                }
                outcome
            }
        };
        outcomes.push(outcome);
    }
    Ok((outcomes, saved))
}

/// The `metrics` rows: one repeat's as they are; several repeats' mean and
/// standard deviation first, then each repeat's rows.
fn all_metric_rows(
    c: &Config,
    io: &StageIo,
    attrs: &[usize],
    outcomes: &[Outcome],
    splits: &Splits,
    table: &str,
) -> Result<Vec<MetricRow>> {
    let repeat_rows: Vec<(Vec<MetricRow>, f64)> = outcomes
        .iter()
        .enumerate()
        .map(|(r, o)| {
            let repeat = (c.repeats > 1).then_some(r as i64);
            metric_rows(c, io, attrs, o, splits, table, repeat)
        })
        .collect::<Result<_>>()?;
    if c.repeats > 1 {
        let mut rows = mean_and_std(&repeat_rows)?;
        rows.extend(repeat_rows.iter().flat_map(|(r, _)| r.iter().cloned()));
        Ok(rows)
    } else {
        Ok(repeat_rows[0].0.clone())
    }
}

/// The train, val and test rows of a classifier, and how batches mix the
/// training rows.
struct Splits<'a> {
    mix: Option<Mix>,
    train: Split<'a>,
    val: Split<'a>,
    test: Split<'a>,
}

/// A linear probe on frozen features `(ex, f)`: fitted on train, its L2
/// strength chosen on val, predicting test.
fn fit_probe(
    c: &Config,
    io: &StageIo,
    (ex, f): (&Extractor, Features),
    attrs: &[usize],
    splits: &Splits,
    dev: &candle_core::Device,
) -> Result<Outcome> {
    let (train_split, val, test) = (&splits.train, &splits.val, &splits.test);
    let t0 = std::time::Instant::now();
    let tx = ex.features(io, train_split, "train", dev)?;
    let vx = ex.features(io, val, "val", dev)?;
    let sx = ex.features(io, test, "test", dev)?;
    let ty = bool_labels(train_split, attrs);
    let vy = bool_labels(val, attrs);
    let mut popts = ProbeOptions::default();
    if let Some(a) = &c.alphas {
        popts.alphas = a.clone();
    }
    let pb = io.progress(attrs.len() as u64, "attributes");
    let probe = crate::train::probe::fit(&tx, &ty, &vx, &vy, &popts, || pb.inc(1))?;
    pb.finish_and_clear();
    Ok(Outcome {
        probs: probe.predict(&sx)?,
        val_accuracy: probe.val_accuracy,
        best_epoch: None,
        wall_time_s: t0.elapsed().as_secs_f64(),
        details: serde_json::Map::from_iter([
            ("features".to_string(), serde_json::to_value(f)?),
            (
                "feature_dim".to_string(),
                tx.first().map(Vec::len).unwrap_or(0).into(),
            ),
            ("alphas".to_string(), serde_json::to_value(&probe.alphas)?),
        ]),
    })
}

/// The test metrics of a classifier (overall and per attribute) as
/// `metrics` rows, and the paper's accuracy.
fn metric_rows(
    c: &Config,
    io: &StageIo,
    attrs: &[usize],
    outcome: &Outcome,
    splits: &Splits,
    table: &str,
    repeat: Option<i64>,
) -> Result<(Vec<MetricRow>, f64)> {
    let probs = &outcome.probs;
    let (val, test) = (&splits.val, &splits.test);
    let truth = bool_labels(test, attrs);
    let pred: Vec<Vec<bool>> = probs
        .iter()
        .map(|p| p.iter().map(|&v| v > 0.5).collect())
        .collect();
    let acc = paper_accuracy(&pred, &truth);
    let counts = confusion(&pred, &truth);
    let n_test = test.rows.len() as i64;
    let details = ClassifierDetails {
        split: Partition::Test.name().into(),
        architecture: serde_name(c.architecture)?,
        size: serde_name(c.size)?,
        training_table: table.into(),
        training_rows: splits.train.rows.len() as u64,
        attributes: attrs.len() as u64,
        training: outcome.details.clone(),
    };
    let details = metrics_table::details_text(&details)?;
    let mut rows: Vec<(String, Option<String>, f64, i64)> = vec![
        (metric::ACCURACY.into(), None, acc, n_test),
        (
            metric::BALANCED_ACCURACY.into(),
            None,
            counts.iter().map(|c| c.balanced_accuracy()).sum::<f64>() / counts.len() as f64,
            n_test,
        ),
        (
            metric::F1.into(),
            None,
            counts.iter().map(|c| c.f1()).sum::<f64>() / counts.len() as f64,
            n_test,
        ),
        (
            metric::VAL_ACCURACY.into(),
            None,
            outcome.val_accuracy,
            val.rows.len() as i64,
        ),
    ];
    if let Some(e) = outcome.best_epoch {
        rows.push((
            metric::BEST_EPOCH.into(),
            None,
            e as f64,
            val.rows.len() as i64,
        ));
    }
    for (k, &a) in attrs.iter().enumerate() {
        let name = Some(attribute_column(a));
        rows.push((
            metric::ACCURACY.into(),
            name.clone(),
            counts[k].accuracy(),
            n_test,
        ));
        rows.push((
            metric::BALANCED_ACCURACY.into(),
            name.clone(),
            counts[k].balanced_accuracy(),
            n_test,
        ));
        rows.push((metric::F1.into(), name, counts[k].f1(), n_test));
    }
    let rows: Vec<MetricRow> = rows
        .into_iter()
        .map(|(metric, attribute, value, n)| MetricRow {
            run: io.run_name.clone(),
            stage: io.name.clone(),
            metric,
            attribute,
            value,
            n,
            details: details.clone(),
            repeat,
        })
        .collect();
    Ok((rows, acc))
}

/// Over the repeats' rows (same metrics in the same order): the mean of
/// each (repeat null, details gaining `repeats`) and its sample standard
/// deviation as `<metric>_std`.
fn mean_and_std(repeats: &[(Vec<MetricRow>, f64)]) -> Result<Vec<MetricRow>> {
    let first = &repeats[0].0;
    let mut means = Vec::with_capacity(first.len());
    let mut stds = Vec::with_capacity(first.len());
    for (k, row) in first.iter().enumerate() {
        let values: Vec<f64> = repeats.iter().map(|(rows, _)| rows[k].value).collect();
        let mut details: ClassifierDetails = row.details_as()?;
        details
            .training
            .insert("repeats".into(), repeats.len().into());
        details.training.remove("best_epoch");
        let base = MetricRow {
            repeat: None,
            details: metrics_table::details_text(&details)?,
            ..row.clone()
        };
        stds.push(MetricRow {
            metric: format!("{}_std", row.metric),
            value: crate::metrics::stats::std(&values),
            ..base.clone()
        });
        means.push(MetricRow {
            value: crate::metrics::stats::mean(&values),
            ..base
        });
    }
    means.extend(stds);
    Ok(means)
}

fn bool_labels(split: &Split, attrs: &[usize]) -> Vec<Vec<bool>> {
    split
        .rows
        .iter()
        .map(|&r| {
            attrs
                .iter()
                .map(|&a| (split.faces.labels[r] >> a) & 1 == 1)
                .collect()
        })
        .collect()
}

/// `real_fraction`: the first `n` rows of an `augmented` table split by
/// their `origin` into real rows and added (generated or classic) rows.
fn mix_of(path: &std::path::Path, n: usize, fraction: f64, batch: usize) -> Result<Mix> {
    let mut origins = Vec::with_capacity(n);
    for b in crate::data::parquet::read_columns(path, &["origin"])? {
        let col = crate::data::tensors::strings(&b, 0)?;
        origins.extend(col.iter().map(|v| v == Some(schema::Origin::Real.name())));
    }
    origins.truncate(n);
    let real: Vec<usize> = (0..origins.len()).filter(|&r| origins[r]).collect();
    let added: Vec<usize> = (0..origins.len()).filter(|&r| !origins[r]).collect();
    if real.is_empty() || added.is_empty() {
        return Err(data_error!(
            "real_fraction = {fraction}: {} has {} real and {} added rows; mixing needs both (leave real_fraction out)",
            path.display(),
            real.len(),
            added.len()
        ));
    }
    Ok(Mix::new(real, added, fraction, batch))
}

fn train_network(
    c: &Config,
    io: &StageIo,
    attrs: &[usize],
    splits: &Splits,
    dev: &candle_core::Device,
    repeat: usize,
) -> Result<(
    Outcome,
    std::collections::HashMap<String, candle_core::Tensor>,
)> {
    let (train_split, val, test) = (&splits.train, &splits.val, &splits.test);
    let opts = Options {
        epochs: c.epochs,
        steps: c.steps,
        mix: splits.mix.clone(),
        batch_size: c.batch_size,
        lr: c.lr,
        seed: c
            .seed
            .unwrap_or(io.run_seed)
            .wrapping_add((repeat as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        attributes: attrs.to_vec(),
    };
    // Each repeat checkpoints in its own folder.
    let dir = if repeat == 0 {
        io.resume_dir.clone()
    } else {
        io.resume_dir.join(format!("repeat_{repeat}"))
    };
    let env = PhaseEnv {
        dir: &dir,
        cadence: Cadence {
            log_every: 10,
            sample_every: 0,
            checkpoint_every: 500,
        },
        quiet: io.quiet,
        label: &io.name,
    };
    let trained = train(&c.network(), &opts, train_split, val, dev, &env)?;
    Ok((
        Outcome {
            probs: predict(&trained.net, test, dev)?,
            val_accuracy: trained.best_val_accuracy,
            best_epoch: Some(trained.best_epoch),
            wall_time_s: trained.wall_time_s,
            details: serde_json::Map::from_iter([(
                "best_epoch".to_string(),
                trained.best_epoch.into(),
            )]),
        },
        trained.weights,
    ))
}

/// G_en of the `train_generator` input, from its `autoencoder.safetensors`.
fn load_encoder(io: &StageIo, dev: &candle_core::Device) -> Result<Box<dyn generators::Generator>> {
    let Some(g) = io.optional_input(StageKind::TrainGenerator) else {
        return Err(data_error!(
            "stage `{}`: features = \"encoder\" needs a `train_generator` input (attr2face) to take G_en from; add it to `inputs`, or use features = \"inception\"",
            io.name
        ));
    };
    let generator = generators::load(&g.dir, dev)?;
    if generator.face_encoder().is_none() {
        return Err(data_error!(
            "stage `{}`: input `{}` has no autoencoder.safetensors (only model = \"attr2face\" trains an encoder)",
            io.name,
            g.name
        ));
    }
    Ok(generator)
}

/// Frozen features for a linear probe.
enum Extractor {
    /// A generator's face encoder (attr2face's G_en); its input size is the generator's.
    Encoder(Box<dyn generators::Generator>),
    Inception(FidInception),
}

impl Extractor {
    /// The probe's feature network, or None for a trained classifier.
    fn load(c: &Config, io: &StageIo, dev: &candle_core::Device) -> Result<Option<Extractor>> {
        Ok(match c.features() {
            Some(Features::Encoder) => Some(Extractor::Encoder(load_encoder(io, dev)?)),
            Some(Features::Inception) => {
                let weights = crate::weights::require(c.weights.as_deref(), "weights")?;
                Some(Extractor::Inception(FidInception::load(&weights, dev)?))
            }
            None => None,
        })
    }

    fn features(
        &self,
        io: &StageIo,
        split: &Split,
        what: &str,
        dev: &candle_core::Device,
    ) -> Result<Vec<Vec<f32>>> {
        match self {
            Extractor::Encoder(g) => {
                let enc = g.face_encoder().expect("checked when loaded");
                let mut out = Vec::with_capacity(split.rows.len());
                for chunk in split.rows.chunks(128) {
                    let x = split.faces.images(chunk, dev)?;
                    out.extend(enc.forward(&x)?.to_dtype(DType::F32)?.to_vec2::<f32>()?);
                }
                Ok(out)
            }
            Extractor::Inception(net) => {
                let images: Vec<_> = split.rows.iter().map(|&r| split.faces.rgb(r)).collect();
                io.say(format!(
                    "Inception features of {} {what} images",
                    images.len()
                ));
                let pb = io.progress(images.len() as u64, "images");
                let f = crate::metrics::fid::features(net, &images, 50, dev, |n| pb.inc(n as u64))?;
                pb.finish_and_clear();
                Ok(f.into_iter()
                    .map(|r| r.into_iter().map(|v| v as f32).collect())
                    .collect())
            }
        }
    }
}

fn write_predictions(
    path: &std::path::Path,
    faces: &FaceSet,
    rows: &[usize],
    attrs: &[usize],
    repeats: &[&[Vec<f64>]],
) -> Result<usize> {
    let schema = schema::predictions();
    let mut ids = Vec::new();
    let mut names = Vec::new();
    let mut labels = Vec::new();
    let mut p = Vec::new();
    let mut rep = Vec::new();
    for (repeat, probs) in repeats.iter().enumerate() {
        for (i, &r) in rows.iter().enumerate() {
            for (k, &a) in attrs.iter().enumerate() {
                ids.push(faces.image_ids[r].as_str());
                names.push(ATTRIBUTES[a].to_ascii_lowercase());
                labels.push(Some((faces.labels[r] >> a) & 1 == 1));
                p.push(probs[i][k]);
                rep.push(repeat as i64);
            }
        }
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(ids)),
        Arc::new(StringArray::from_iter_values(names)),
        Arc::new(BooleanArray::from_iter(labels)),
        Arc::new(Float64Array::from_iter_values(p)),
        Arc::new(arrow::array::Int64Array::from_iter_values(rep)),
    ];
    let mut w = TableWriter::create(path, schema.clone(), &[], 1 << 16)?;
    w.write(&RecordBatch::try_new(schema, cols)?)?;
    w.finish()
}

/// The name serde writes for a unit variant (`paper_cnn`, `tiny`).
fn serde_name<T: Serialize>(v: T) -> Result<String> {
    match serde_json::to_value(v)? {
        serde_json::Value::String(s) => Ok(s),
        other => anyhow::bail!("{other} is not a name"),
    }
}
