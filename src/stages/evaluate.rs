//! `kind = "evaluate"`: the run's metrics in one `metrics` table (Liu et al.
//! Sec. V-D; Zhang et al. Sec. 4.2 for PSNR/MS-SSIM of reconstructions).
//!
//! For its inputs it measures, one file per measurement:
//! - [`classifiers`]: `train_classifier` stages' test metrics, copied as
//!   they are; the copies the pipeline made of one classifier for a
//!   `sizes = [...]` sweep of a balance stage (each input's `sweep_of`,
//!   recorded when the pipeline expanded the sweep, not read from stage
//!   names) are grouped, and the size with the best val accuracy is reported
//!   with its test accuracy (`size_sweep_*`, Fig. 10's criterion);
//! - [`statistics`]: bootstrap intervals of those metrics and paired
//!   differences to the real-data classifier;
//! - [`fid_kid`]: FID and KID (FID Inception, pytorch-fid input conventions)
//!   between `synthesize` stages' rows (and ST-GAN's prior samples) and the
//!   real `test` images of the ingest input;
//! - [`editing`]: summaries of the generator judge's `label_agreement`; for
//!   `synthesize` stages whose generator edits a source face (every family
//!   but attr2face and dcgan; SG-GAN Sec. 5.3, Tables 1–3), on the generated
//!   rows, `editing_accuracy` (the evaluation classifier — the first
//!   `train_classifier` input trained on real faces only — assigns each
//!   changed attribute its target value), `untouched_accuracy` (it still
//!   assigns the attributes the row did not change their source labels) and
//!   `background_ms_ssim` (source vs translated face, top-left 10×10 crop);
//! - [`reconstruction`]: `train_generator` stages that reconstruct (attr2face,
//!   ST-GAN): MS-SSIM and PSNR between real test faces and G_de(G_en(x)) or
//!   G(E(x));
//! - [`reversal`]: with `edit_protocol = "reversal"`, `train_generator`
//!   inputs that are translation generators: every test face with each
//!   attribute reversed (SeCGAN's protocol, Sec. 4.4).
//!
//! Every row records N and, in `details`, the reference set and settings.

mod classifiers;
mod editing;
mod fid_kid;
mod reconstruction;
mod reversal;
mod statistics;

use classifiers::*;
use editing::*;
use fid_kid::*;
use reconstruction::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use arrow::array::{Array, Float64Array};
use candle_core::Device;
use image::RgbImage;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{InputStage, Lineage, StageIo, StageKind, StageOutput, Table};
use crate::contract::tables;
use crate::data::celeba::Labels;
use crate::data::celeba::Partition;
use crate::data::images::decode_rgb;
use crate::data::metrics_table::{self, MetricRow, metric};
use crate::data::parquet::read_columns;
use crate::data::schema::{N_ATTRIBUTES, Origin, attribute_column};
use crate::data::tensors::{FaceSet, image_bytes, strings, tensor_to_rgb};
use crate::data::tensors::{images_tensor, labels_of_batch, resize_square};
use crate::data_error;
use crate::generators;
use crate::metrics::translation::{background_ms_ssim, editing_accuracy, untouched_accuracy};
use crate::metrics::{fid, inception::FidInception, msssim};

fn yes() -> bool {
    true
}
fn default_fid_samples() -> usize {
    2000
}
fn default_rec_samples() -> usize {
    256
}
fn default_translation_samples() -> usize {
    1000
}
fn default_batch() -> usize {
    50
}
fn default_kid_subsets() -> usize {
    100
}
fn default_kid_subset_size() -> usize {
    1000
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// FID of each synthesize input against the real test images: `"auto"`
    /// (the default) when the Inception weights are found (`weights`, else
    /// $AUGMENT_FID_WEIGHTS, else `augment weights fetch`'s cache) and a
    /// recorded skip otherwise; `true` fails without them; `false` skips.
    #[serde(default)]
    pub fid: FidMode,
    /// KID next to FID (unbiased; FID is biased at small N).
    #[serde(default = "yes")]
    pub kid: bool,
    /// The `train_classifier` input (trained on real faces only) that
    /// judges generated images: editing accuracy and the label agreement of
    /// drawn rows. Default: the first input trained on real faces. A named
    /// judge is never the baseline of the paired differences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<String>,
    /// Images per side for FID/KID (fewer when fewer exist).
    #[serde(default = "default_fid_samples")]
    pub fid_samples: usize,
    #[serde(default = "default_kid_subsets")]
    pub kid_subsets: usize,
    #[serde(default = "default_kid_subset_size")]
    pub kid_subset_size: usize,
    /// Test faces reconstructed per generator for MS-SSIM/PSNR.
    #[serde(default = "default_rec_samples")]
    pub reconstruction_samples: usize,
    /// Generated rows per synthesize stage for the translation metrics and
    /// the judge's label agreement of drawn rows.
    #[serde(default = "default_translation_samples")]
    pub translation_samples: usize,
    /// Inception forward batch.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// `"synthesized"`: translation metrics on the synthesize inputs' rows;
    /// `"reversal"` also edits every test face with each attribute reversed
    /// through each translation `train_generator` input (SeCGAN Sec. 4.4).
    #[serde(default)]
    pub edit_protocol: EditProtocol,
    /// Test faces of the reversal protocol (default: every test face).
    #[serde(default)]
    pub edit_faces: Option<usize>,
    #[serde(default)]
    pub weights: Option<PathBuf>,
    #[serde(default)]
    pub seed: Option<u64>,
    /// Bootstrap resamples of the test faces for the 95% intervals of every
    /// classifier metric and of the paired differences (0: none).
    #[serde(default = "default_bootstrap")]
    pub bootstrap: usize,
    /// Random swaps of the paired permutation test (exact over every swap
    /// when the two classifiers disagree on few test faces).
    #[serde(default = "default_permutations")]
    pub permutations: usize,
}

fn default_bootstrap() -> usize {
    1000
}
fn default_permutations() -> usize {
    10_000
}

/// Which edits the translation metrics measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EditProtocol {
    /// The generated rows of the synthesize inputs (their plans' edits).
    #[default]
    Synthesized,
    /// Also every test face with each attribute reversed, one at a time.
    Reversal,
}

/// `fid = "auto" | true | false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FidMode {
    #[default]
    Auto,
    Required,
    Off,
}

impl Serialize for FidMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            FidMode::Auto => s.serialize_str("auto"),
            FidMode::Required => s.serialize_bool(true),
            FidMode::Off => s.serialize_bool(false),
        }
    }
}

impl<'de> Deserialize<'de> for FidMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Str(String),
        }
        match Raw::deserialize(d) {
            Ok(Raw::Bool(true)) => Ok(FidMode::Required),
            Ok(Raw::Bool(false)) => Ok(FidMode::Off),
            Ok(Raw::Str(s)) if s == "auto" => Ok(FidMode::Auto),
            _ => Err(serde::de::Error::custom("expected true, false or \"auto\"")),
        }
    }
}

/// The `details` of a skipped FID row.
const FID_SKIPPED: &str = "skipped (no weights; run augment weights fetch)";

/// Which FID weights the stage would use (path and size), so that weights
/// fetched after a run without them make `evaluate` stale, and FID appears
/// on the next run.
pub fn external_fingerprint(c: &Config) -> Result<String> {
    if c.fid == FidMode::Off {
        return Ok(String::new());
    }
    Ok(
        match crate::weights::find(c.weights.as_deref(), "weights")? {
            Some((p, _)) => format!(
                "fid weights {} ({} bytes)",
                p.display(),
                std::fs::metadata(&p)?.len()
            ),
            None => "fid weights: none".into(),
        },
    )
}

impl Config {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.fid != FidMode::Off && self.fid_samples < 2 {
            return Err("fid_samples must be at least 2".into());
        }
        if self.edit_faces == Some(0) {
            return Err("edit_faces must be at least 1 (or left out: every test face)".into());
        }
        if self.edit_faces.is_some() && self.edit_protocol != EditProtocol::Reversal {
            return Err("edit_faces is for edit_protocol = \"reversal\"".into());
        }
        if self.batch_size == 0 || self.kid_subsets == 0 || self.kid_subset_size < 2 {
            return Err(
                "batch_size and kid_subsets must be at least 1, kid_subset_size at least 2".into(),
            );
        }
        Ok(())
    }
}

struct Rows<'a> {
    io: &'a StageIo,
    rows: Vec<MetricRow>,
}

impl Rows<'_> {
    fn push_attr(
        &mut self,
        stage: &str,
        metric: &str,
        attribute: Option<String>,
        value: f64,
        n: usize,
        details: serde_json::Value,
    ) {
        self.rows.push(MetricRow {
            run: self.io.run_name.clone(),
            stage: stage.to_string(),
            metric: metric.to_string(),
            attribute,
            value,
            n: n as i64,
            details: details.to_string(),
            repeat: None,
        });
    }

    fn push(
        &mut self,
        stage: &str,
        metric: &str,
        value: f64,
        n: usize,
        details: serde_json::Value,
    ) {
        self.push_attr(stage, metric, None, value, n, details);
    }
}

pub fn run(c: &Config, io: &StageIo) -> Result<StageOutput> {
    let dev = io.candle_device()?;
    let seed = c.seed.unwrap_or(io.run_seed);
    let ingest = io.input(StageKind::Ingest)?;
    let faces = ingest.table(tables::FACES)?;
    let mut out = Rows {
        io,
        rows: Vec::new(),
    };
    let mut summary = serde_json::Map::new();

    // Classifiers, and the size sweep over them.
    let classifiers: Vec<&InputStage> = io.inputs_of(StageKind::TrainClassifier);
    classifier_metrics(&mut out, &classifiers, &mut summary)?;
    let baselines: Vec<&InputStage> = classifiers
        .iter()
        .copied()
        .filter(|s| Some(&s.name) != c.judge.as_ref())
        .collect();
    let rare = rare_quarter(&faces)?;
    statistics::classifier_statistics(&mut out, &classifiers, &baselines, &rare, c, seed)?;

    // Synthesized images: label agreement, FID and KID.
    let synths = io.inputs_of(StageKind::Synthesize);
    for s in &synths {
        label_agreement(&mut out, s)?;
    }
    // ST-GAN generators: FID of their prior samples G(z, c).
    let priors = prior_generators(io)?;
    let reversed = reversal_generators(c, io)?;
    let measured: Vec<&str> = synths
        .iter()
        .chain(&priors)
        .chain(&reversed)
        .map(|s| s.name.as_str())
        .collect();
    let weights = fid_weights(&mut out, c, &measured)?;
    if let Some(weights) = &weights {
        let mut sets: Vec<ImageSet> = synths.iter().map(|s| ImageSet::Synth(s)).collect();
        sets.extend(priors.iter().map(|g| ImageSet::Prior(g)));
        if !sets.is_empty() {
            fid_and_kid(&mut out, c, ingest, &sets, weights, seed, &dev)?;
        }
    }

    // Translation generators.
    if !synths.is_empty() || !reversed.is_empty() {
        let judge = judge(&classifiers, c.judge.as_deref(), &dev)?;
        for s in &synths {
            translation(&mut out, s, &faces, judge.as_ref(), c, seed, &dev)?;
            if let Some(judge) = &judge {
                judge_agreement(&mut out, s, judge, c, seed, &dev)?;
            }
        }
        let setting = reversal::Setting {
            ingest,
            judge: judge.as_ref(),
            parser: io.optional_input(StageKind::ParseFaces),
            weights: weights.as_deref(),
            seed,
            dev: &dev,
        };
        for g in &reversed {
            reversal::reversal(&mut out, c, g, &setting)?;
        }
    }

    // Autoencoder reconstructions.
    for g in io.inputs_of(StageKind::TrainGenerator) {
        reconstruction(&mut out, io, g, &faces, c.reconstruction_samples, &dev)?;
    }

    if out.rows.is_empty() {
        return Err(data_error!(
            "stage `{}`: nothing to evaluate; add `train_classifier`, `synthesize` or `train_generator` stages to `inputs`",
            io.name
        ));
    }
    let n = metrics_table::write(&io.out_dir.join(tables::METRICS.file), &out.rows)?;
    summary.insert("rows".into(), n.into());
    if let Some(fids) = fid_summary(&out.rows) {
        summary.insert("fid".into(), fids);
    }
    Ok(StageOutput {
        tables: vec![Table::of(tables::METRICS, n)],
        files: vec![],
        summary: summary.into(),
        lineage: Lineage::default(),
    })
}

/// The quarter of the attributes (rounded up) with the fewest positive
/// faces in the ingest train split, as `attribute` column names; ties by
/// attribute order.
fn rare_quarter(faces: &Path) -> Result<Vec<String>> {
    let mut cols = vec!["partition".to_string()];
    cols.extend((0..N_ATTRIBUTES).map(attribute_column));
    let names: Vec<&str> = cols.iter().map(String::as_str).collect();
    let mut positives = [0usize; N_ATTRIBUTES];
    for b in read_columns(faces, &names)? {
        let part = strings(&b, 0)?;
        for (r, l) in crate::data::tensors::labels_of_batch(&b, 1)?
            .iter()
            .enumerate()
        {
            if part.value(r) == Partition::Train.name() {
                for (a, p) in positives.iter_mut().enumerate() {
                    *p += usize::from((l >> a) & 1 == 1);
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..N_ATTRIBUTES).collect();
    order.sort_by_key(|&a| positives[a]);
    Ok(order
        .into_iter()
        .take(N_ATTRIBUTES.div_ceil(4))
        .map(attribute_column)
        .collect())
}

/// Per measured image set, its FID and KID with their floors (real faces
/// at the same n), for `augment show`; None when nothing was measured.
fn fid_summary(rows: &[MetricRow]) -> Option<serde_json::Value> {
    let mut by_stage: BTreeMap<&str, serde_json::Map<String, serde_json::Value>> = BTreeMap::new();
    for r in rows
        .iter()
        .filter(|r| r.attribute.is_none() && r.value.is_finite())
    {
        if [
            metric::FID,
            metric::FID_FLOOR,
            metric::KID,
            metric::KID_FLOOR,
        ]
        .contains(&r.metric.as_str())
        {
            let e = by_stage.entry(&r.stage).or_default();
            e.insert(r.metric.clone(), r.value.into());
            e.insert("n".into(), r.n.into());
        }
    }
    (!by_stage.is_empty()).then(|| serde_json::to_value(by_stage).unwrap_or_default())
}

/// The generator inputs whose family can do `what` (known from `model.json`;
/// an unreadable one is an error naming the file).
fn generators_that(
    io: &StageIo,
    what: impl Fn(&generators::Abilities) -> bool,
) -> Result<Vec<&InputStage>> {
    let mut out = Vec::new();
    for g in io.inputs_of(StageKind::TrainGenerator) {
        if what(&generators::abilities(&g.dir)?) {
            out.push(g);
        }
    }
    Ok(out)
}

/// The generator inputs that sample from a prior (ST-GAN): FID of G(z, c).
fn prior_generators(io: &StageIo) -> Result<Vec<&InputStage>> {
    generators_that(io, |a| a.sample_prior)
}

/// The reversal protocol's generators: the translation inputs (none
/// unless `edit_protocol = "reversal"`, which needs at least one).
fn reversal_generators<'a>(c: &Config, io: &'a StageIo) -> Result<Vec<&'a InputStage>> {
    if c.edit_protocol != EditProtocol::Reversal {
        return Ok(Vec::new());
    }
    let g = generators_that(io, |a| a.reverse)?;
    if g.is_empty() {
        return Err(data_error!(
            "stage `{}`: edit_protocol = \"reversal\" needs a `train_generator` input that is a translation generator (sggan, stargan, secgan); add one to `inputs`",
            io.name
        ));
    }
    Ok(g)
}
