//! `kind = "evaluate"`: the run's metrics in one `metrics` table (Liu et al.
//! Sec. V-D; Zhang et al. Sec. 4.2 for PSNR/MS-SSIM of reconstructions).
//!
//! For its inputs it measures:
//! - `train_classifier` stages: their test metrics, copied as they are;
//!   the copies the pipeline made of one classifier for a `sizes = [...]`
//!   sweep of a balance stage (each input's `sweep_of`, recorded when the
//!   pipeline expanded the sweep, not read from stage names) are grouped,
//!   and the size with the best val accuracy is reported with its test
//!   accuracy (`size_sweep_*`, Fig. 10's criterion);
//! - `synthesize` stages: FID and KID (FID Inception, pytorch-fid input
//!   conventions) between their synthesized rows and the real `test` images
//!   of the ingest input, and summaries of C's `label_agreement`;
//! - `train_generator` stages (attr2face): MS-SSIM and PSNR between real test
//!   faces and their autoencoder reconstructions G_de(G_en(x));
//! - `synthesize` stages whose generator edits a source face (every family
//!   but attr2face and dcgan; SG-GAN Sec. 5.3, Tables 1–3): on the generated
//!   rows, `editing_accuracy` (the evaluation classifier — the first
//!   `train_classifier` input trained on real faces only — assigns each
//!   changed attribute its target value), `untouched_accuracy` (it still
//!   assigns the attributes the row did not change their source labels) and
//!   `background_ms_ssim` (source vs translated face, top-left 10×10 crop).
//!
//! - with `edit_protocol = "reversal"`, `train_generator` inputs that are
//!   translation generators: every test face with each attribute reversed
//!   ([`reversal`]: SeCGAN's protocol, Sec. 4.4).
//!
//! Every row records N and, in `details`, the reference set and settings.

mod reversal;
mod statistics;

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
    /// Generated rows per synthesize stage for the translation metrics.
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
    statistics::classifier_statistics(&mut out, &classifiers, c, seed)?;

    // Synthesized images: label agreement, FID and KID.
    let synths = io.inputs_of(StageKind::Synthesize);
    for s in &synths {
        label_agreement(&mut out, s)?;
    }
    // ST-GAN generators: FID of their prior samples G(z, c).
    let priors = prior_generators(io);
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
        let judge = judge(&classifiers, &dev)?;
        for s in &synths {
            translation(&mut out, s, &faces, judge.as_ref(), c, seed, &dev)?;
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
    Ok(StageOutput {
        tables: vec![Table::of(tables::METRICS, n)],
        files: vec![],
        summary: summary.into(),
        lineage: Lineage::default(),
    })
}

/// The generator inputs whose family can do `what` (known from `model.json`).
fn generators_that(
    io: &StageIo,
    what: impl Fn(&generators::Abilities) -> bool,
) -> Vec<&InputStage> {
    io.inputs_of(StageKind::TrainGenerator)
        .into_iter()
        .filter(|g| {
            g.model_file()
                .is_ok_and(|m| what(&generators::family(&m).abilities))
        })
        .collect()
}

/// The generator inputs that sample from a prior (ST-GAN): FID of G(z, c).
fn prior_generators(io: &StageIo) -> Vec<&InputStage> {
    generators_that(io, |a| a.sample_prior)
}

/// The reversal protocol's generators: the translation inputs (none
/// unless `edit_protocol = "reversal"`, which needs at least one).
fn reversal_generators<'a>(c: &Config, io: &'a StageIo) -> Result<Vec<&'a InputStage>> {
    if c.edit_protocol != EditProtocol::Reversal {
        return Ok(Vec::new());
    }
    let g = generators_that(io, |a| a.reverse);
    if g.is_empty() {
        return Err(data_error!(
            "stage `{}`: edit_protocol = \"reversal\" needs a `train_generator` input that is a translation generator (sggan, stargan, secgan); add one to `inputs`",
            io.name
        ));
    }
    Ok(g)
}

/// The classifiers' own metrics rows, and per size sweep the size with the
/// best val accuracy and its test accuracy (Liu et al. Fig. 10).
fn classifier_metrics(
    out: &mut Rows,
    classifiers: &[&InputStage],
    summary: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    let io = out.io;
    let mut classifier_rows: BTreeMap<&str, Vec<MetricRow>> = BTreeMap::new();
    for s in classifiers {
        let rows = metrics_table::read(&s.table(tables::METRICS)?)?;
        out.rows.extend(rows.iter().map(|r| MetricRow {
            run: io.run_name.clone(),
            ..r.clone()
        }));
        classifier_rows.insert(&s.name, rows);
    }
    for (group, members) in sweep_groups(classifiers) {
        let sweep = size_sweep(io, &group, &members, &classifier_rows)?;
        summary.insert(format!("size_sweep/{group}"), serde_json::to_value(&sweep)?);
        let best = &sweep.chosen;
        let details = serde_json::json!({"sizes": sweep.sizes, "criterion": "best val accuracy (Liu et al. Fig. 10)"});
        let n = best.n_test;
        out.push(
            &group,
            metric::SIZE_SWEEP_SIZE,
            best.size,
            n,
            details.clone(),
        );
        out.push(
            &group,
            metric::SIZE_SWEEP_VAL_ACCURACY,
            best.val_accuracy,
            n,
            details.clone(),
        );
        out.push(
            &group,
            metric::SIZE_SWEEP_ACCURACY,
            best.accuracy,
            n,
            details,
        );
        io.say(format!(
            "size sweep `{group}`: size {} has the best val accuracy ({:.4}); its test accuracy {:.4}",
            best.size, best.val_accuracy, best.accuracy
        ));
    }
    Ok(())
}

/// The FID weights to use, or None (with `fid = "auto"` and no weights, a
/// recorded skip row per synthesize stage).
fn fid_weights(out: &mut Rows, c: &Config, measured: &[&str]) -> Result<Option<PathBuf>> {
    let io = out.io;
    Ok(match c.fid {
        FidMode::Off => None,
        _ if measured.is_empty() => None,
        FidMode::Required => Some(
            crate::weights::require(c.weights.as_deref(), "weights")
                .map_err(|e| data_error!("stage `{}`: {e:#} — or set fid = \"auto\"", io.name))?,
        ),
        FidMode::Auto => {
            let found = crate::weights::find(c.weights.as_deref(), "weights")?;
            if found.is_none() {
                io.say(format!("fid: {FID_SKIPPED}"));
                for name in measured {
                    let details = serde_json::json!({ "fid": FID_SKIPPED });
                    out.push(name, metric::FID, f64::NAN, 0, details);
                }
            }
            found.map(|(p, _)| p)
        }
    })
}

/// Images whose FID is measured, read one set at a time: a synthesize
/// stage's synthesized rows, or an ST-GAN generator's prior samples.
enum ImageSet<'a> {
    Synth(&'a InputStage),
    Prior(&'a InputStage),
}

impl ImageSet<'_> {
    fn stage(&self) -> &str {
        match self {
            ImageSet::Synth(s) | ImageSet::Prior(s) => &s.name,
        }
    }

    /// What the images are, for `details`.
    fn what(&self) -> String {
        match self {
            ImageSet::Synth(s) => format!("{}.synth origin <> 'real'", s.name),
            ImageSet::Prior(g) => format!("{}: G(z, c) with z and c drawn from the prior", g.name),
        }
    }

    /// At most `n` images (PNG bytes), sampled or drawn with `seed`.
    fn images(&self, n: usize, seed: u64, dev: &Device) -> Result<Vec<Vec<u8>>> {
        match self {
            ImageSet::Synth(s) => Ok(sample(
                read_images(&s.table(tables::SYNTH)?, "origin", |o| {
                    o != Origin::Real.name()
                })?,
                n,
                seed,
            )),
            ImageSet::Prior(g) => prior_samples(g, n, seed, dev),
        }
    }
}

/// `n` samples G(z, c) of an ST-GAN stage with z and c from the prior
/// (seeded), G in inference mode, as PNG bytes.
fn prior_samples(g: &InputStage, n: usize, seed: u64, dev: &Device) -> Result<Vec<Vec<u8>>> {
    let Some(images) = generators::load(&g.dir, dev)?.prior_samples(n, seed, dev)? else {
        anyhow::bail!("{} does not sample a prior", g.name);
    };
    images.iter().map(crate::data::images::encode_png).collect()
}

/// FID (and KID) of each image set (synthesized rows, ST-GAN prior
/// samples) against the real test faces of the ingest input.
fn fid_and_kid(
    out: &mut Rows,
    c: &Config,
    ingest: &InputStage,
    sets: &[ImageSet],
    weights: &Path,
    seed: u64,
    dev: &Device,
) -> Result<()> {
    let io = out.io;
    let faces = ingest.table(tables::FACES)?;

    let net = FidInception::load(weights, dev)?;
    let real = sample(
        read_images(&faces, "partition", |p| p == "test")?,
        c.fid_samples,
        seed,
    );
    if real.len() < 2 {
        return Err(data_error!(
            "FID needs at least 2 real test images; the ingest input has {}",
            real.len()
        ));
    }
    io.say(format!(
        "Inception features of {} real test images",
        real.len()
    ));
    let real_f = features(io, &net, &real, c.batch_size, dev)?;
    let (m2, s2) = fid::statistics(&real_f)?;
    for s in sets {
        crate::fault::point(|| format!("{}:fid:{}", io.name, s.stage()));
        // A translation generator's edits: the same sample, kept as rows so
        // that subsets of it get their own FID below.
        let edits = match s {
            ImageSet::Synth(st) if translation_generator(st).is_some() => {
                Some(generated_rows(st, c.fid_samples, seed)?)
            }
            _ => None,
        };
        let imgs = match &edits {
            Some(rows) if !rows.is_empty() => rows.iter().map(|r| r.png.clone()).collect(),
            _ => s.images(c.fid_samples, seed, dev)?,
        };
        if imgs.len() < 2 {
            io.say(format!(
                "`{}` has fewer than 2 synthesized images; no FID",
                s.stage()
            ));
            continue;
        }
        io.say(format!(
            "Inception features of {} images of `{}`",
            imgs.len(),
            s.stage()
        ));
        let f = features(io, &net, &imgs, c.batch_size, dev)?;
        let (m1, s1) = fid::statistics(&f)?;
        let value = fid::frechet_distance(&m1, &s1, &m2, &s2)?;
        let details = serde_json::json!({
            "reference": format!("{}.faces partition = 'test'", ingest.name),
            "images": s.what(),
            "n_synthesized": f.len(),
            "n_reference": real_f.len(),
            "resize": fid::FID_RESIZE,
        });
        let n = f.len().min(real_f.len());
        out.push(s.stage(), metric::FID, value, n, details.clone());
        io.say(format!(
            "`{}`: FID {value:.3} ({} vs {} real test images)",
            s.stage(),
            f.len(),
            real_f.len()
        ));
        if c.kid {
            let size = c.kid_subset_size.min(n);
            let (mean, sd) = fid::kid(&f, &real_f, c.kid_subsets, size, seed);
            let mut d = details;
            d["kid_std"] = sd.into();
            d["kid_subsets"] = c.kid_subsets.into();
            d["kid_subset_size"] = size.into();
            out.push(s.stage(), metric::KID, mean, n, d);
        }
        if let Some(rows) = edits.filter(|r| r.len() == f.len()) {
            let real = RealStats {
                name: &ingest.name,
                features: &real_f,
                mean: &m2,
                cov: &s2,
            };
            edit_fids(out, s.stage(), &faces, &rows, &f, &real)?;
        }
    }
    Ok(())
}

/// The real test faces' Inception features and their statistics.
struct RealStats<'a> {
    name: &'a str,
    features: &'a [Vec<f64>],
    mean: &'a nalgebra::DVector<f64>,
    cov: &'a nalgebra::DMatrix<f64>,
}

/// Rows an attribute needs among the sampled edits for its own FID.
const MIN_FID_PER_ATTRIBUTE: usize = 10;

/// BridgeGAN Table 2 for a translation generator's edits `rows` (features
/// `f`): FID per changed attribute over the rows that change it (at least
/// [`MIN_FID_PER_ATTRIBUTE`]).
fn edit_fids(
    out: &mut Rows,
    stage: &str,
    faces: &Path,
    rows: &[GenRow],
    f: &[Vec<f64>],
    real: &RealStats,
) -> Result<()> {
    let wanted: std::collections::HashSet<&str> = rows.iter().map(|r| r.source.as_str()).collect();
    let source = crate::data::tensors::read_faces_by_id(faces, &wanted)?;
    let changed: Vec<Labels> = rows
        .iter()
        .map(|r| source.labels.get(&r.source).map_or(0, |l| l ^ r.labels))
        .collect();
    let fid_of = |idx: &[usize]| -> Result<f64> {
        let sub: Vec<Vec<f64>> = idx.iter().map(|&i| f[i].clone()).collect();
        let (m1, s1) = fid::statistics(&sub)?;
        fid::frechet_distance(&m1, &s1, real.mean, real.cov)
    };
    let details = |n: usize| {
        serde_json::json!({
            "reference": format!("{}.faces partition = 'test'", real.name),
            "images": format!("{stage}.synth origin = 'generated'"),
            "n_synthesized": n,
            "n_reference": real.features.len(),
            "resize": fid::FID_RESIZE,
            "note": "FID is biased upwards at small n: compare values at equal n only",
        })
    };
    for a in 0..N_ATTRIBUTES {
        let with: Vec<usize> = (0..rows.len())
            .filter(|&i| changed[i] >> a & 1 == 1)
            .collect();
        if with.len() < MIN_FID_PER_ATTRIBUTE {
            continue;
        }
        let v = fid_of(&with)?;
        out.push_attr(
            stage,
            metric::FID,
            Some(attribute_column(a)),
            v,
            with.len().min(real.features.len()),
            details(with.len()),
        );
    }
    Ok(())
}

/// The first classifier input trained on real faces, which judges edits.
fn judge(classifiers: &[&InputStage], dev: &Device) -> Result<Option<Judge>> {
    let judge = classifiers.iter().find_map(|s| {
        match crate::train::classifier::SavedClassifier::load(&s.dir, dev) {
            Ok(Some((saved, net))) if saved.trained_on_real => Some(Ok(Judge {
                name: s.name.clone(),
                saved,
                net,
            })),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        }
    });
    judge.transpose()
}

/// The generator stage behind a synthesize stage, when it is a translation
/// generator: its name (from the synthesize stage's lineage).
fn translation_generator(s: &InputStage) -> Option<&str> {
    s.lineage
        .generator
        .as_ref()
        .filter(|g| g.translator)
        .map(|g| g.stage.as_str())
}

/// The classifier trained on real faces that judges edits: its stage name,
/// what it predicts and the network.
struct Judge {
    name: String,
    saved: crate::train::classifier::SavedClassifier,
    net: crate::train::classifier::Net,
}

/// One generated row of a synthesize stage.
#[derive(Clone)]
struct GenRow {
    source: String,
    labels: Labels,
    png: Vec<u8>,
}

/// The generated rows of a translation generator's synthesize stage, at
/// most `translation_samples` of them, and the source faces they were
/// edited from.
struct Translated {
    generator: String,
    rows: Vec<GenRow>,
    source: crate::data::tensors::FacesById,
}

/// Translation metrics of a synthesize stage's generated rows (SG-GAN,
/// StarGAN): background MS-SSIM against the source face, and with a judge
/// the editing and untouched-attribute accuracies.
fn translation(
    out: &mut Rows,
    s: &InputStage,
    faces: &Path,
    judge: Option<&Judge>,
    c: &Config,
    seed: u64,
    dev: &Device,
) -> Result<()> {
    let Some(generator) = translation_generator(s) else {
        return Ok(());
    };
    let rows = generated_rows(s, c.translation_samples, seed)?;
    if rows.is_empty() {
        return Ok(());
    }
    let wanted: std::collections::HashSet<&str> = rows.iter().map(|r| r.source.as_str()).collect();
    let source = crate::data::tensors::read_faces_by_id(faces, &wanted)?;
    out.io.say(format!(
        "translation metrics of {} generated rows of `{}` (generator `{generator}`)",
        rows.len(),
        s.name
    ));
    let t = Translated {
        generator: generator.to_string(),
        rows,
        source,
    };
    background(out, s, &t)?;
    let Some(judge) = judge else {
        out.io
            .say("no train_classifier input trained on real faces: no editing accuracy");
        return Ok(());
    };
    editing(out, s, &t, judge, c.batch_size, dev)
}

/// The generated rows of `s`, a seeded sample of `max` when there are more.
fn generated_rows(s: &InputStage, max: usize, seed: u64) -> Result<Vec<GenRow>> {
    let mut cols = vec!["source_image_id".to_string(), "origin".to_string()];
    cols.extend((0..N_ATTRIBUTES).map(attribute_column));
    cols.push("image".into());
    let names: Vec<&str> = cols.iter().map(String::as_str).collect();
    let mut rows: Vec<GenRow> = Vec::new();
    for b in read_columns(&s.table(tables::SYNTH)?, &names)? {
        let src = strings(&b, 0)?;
        let origin = strings(&b, 1)?;
        let labels = labels_of_batch(&b, 2)?;
        let image = b
            .column_by_name("image")
            .context("synth table without an `image` column")?;
        for (r, &label) in labels.iter().enumerate() {
            if origin.value(r) == Origin::Generated.name()
                && let Some(bytes) = image_bytes(image.as_ref(), r)
            {
                rows.push(GenRow {
                    source: src.value(r).to_string(),
                    labels: label,
                    png: bytes.to_vec(),
                });
            }
        }
    }
    if rows.len() > max {
        rows.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        rows.truncate(max);
    }
    Ok(rows)
}

/// Background MS-SSIM, source vs translated at the synthesized size.
fn background(out: &mut Rows, s: &InputStage, t: &Translated) -> Result<()> {
    let (rows, source, generator) = (&t.rows, &t.source, &t.generator);
    let pairs: Vec<(RgbImage, RgbImage)> = rows
        .par_iter()
        .filter_map(|r| {
            let spng = source.png.get(&r.source)?;
            Some((decode_rgb(spng).ok()?, decode_rgb(&r.png).ok()?))
        })
        .collect();
    let bg: Vec<(f64, usize, usize)> = pairs
        .par_iter()
        .map(|(a, b)| {
            let b = resize_square(b.clone(), a.width() as usize);
            let m = background_ms_ssim(&msssim::Planar::from_rgb(a), &msssim::Planar::from_rgb(&b))
                .map_err(|e| data_error!("{e}"))?;
            Ok((m.value, m.levels, m.window))
        })
        .collect::<Result<_>>()?;
    if let Some(&(_, levels, window)) = bg.first() {
        let mean = bg.iter().map(|v| v.0).sum::<f64>() / bg.len() as f64;
        out.push(
            &s.name,
            "background_ms_ssim",
            mean,
            bg.len(),
            serde_json::json!({"crop": "top-left 10x10", "levels": levels, "window": window,
                               "generator": generator, "reference": "each row's source face"}),
        );
        out.io
            .say(format!("`{}`: background MS-SSIM {mean:.4}", s.name));
    }
    Ok(())
}

/// Editing accuracy (edited attributes reach their target under the judge)
/// and untouched-attribute accuracy (the others keep their source value).
fn editing(
    out: &mut Rows,
    s: &InputStage,
    t: &Translated,
    judge: &Judge,
    batch_size: usize,
    dev: &Device,
) -> Result<()> {
    let (rows, source, generator) = (&t.rows, &t.source, &t.generator);
    let (judge_name, saved) = (&judge.name, &judge.saved);
    let k = saved.attributes.len();
    let mut tally = EditTally {
        per_attr: vec![(0.0, 0); k],
        ..EditTally::default()
    };
    let bits = |l: Labels| -> Vec<bool> {
        saved
            .attributes
            .iter()
            .map(|&a| (l >> a) & 1 == 1)
            .collect()
    };
    for chunk in rows.chunks(batch_size.max(1)) {
        let probs = judge.probabilities(chunk, dev)?;
        for (r, p) in chunk.iter().zip(&probs) {
            let Some(src_labels) = source.labels.get(&r.source) else {
                continue;
            };
            let pred: Vec<bool> = p.iter().map(|&v| v > 0.5).collect();
            tally.add(&pred, &bits(r.labels), &bits(*src_labels));
        }
    }
    let details = serde_json::json!({"judge": judge_name, "generator": generator,
        "judge_attributes": k, "rows": rows.len()});
    let EditTally {
        edit_hit,
        edit_n,
        keep_hit,
        keep_n,
        per_attr,
    } = tally;
    if edit_n > 0 {
        let v = edit_hit / edit_n as f64;
        out.push(&s.name, "editing_accuracy", v, edit_n, details.clone());
        for (j, &(hit, n)) in per_attr.iter().enumerate() {
            if n > 0 {
                let col = Some(attribute_column(saved.attributes[j]));
                let v = hit / n as f64;
                out.push_attr(&s.name, "editing_accuracy", col, v, n, details.clone());
            }
        }
    }
    if keep_n > 0 {
        let v = keep_hit / keep_n as f64;
        out.push(&s.name, "untouched_accuracy", v, keep_n, details);
    }
    out.io.say(format!(
        "`{}`: editing accuracy {:.4} over {edit_n} edits, untouched-attribute accuracy {:.4} (judge `{judge_name}`)",
        s.name,
        edit_hit / edit_n.max(1) as f64,
        keep_hit / keep_n.max(1) as f64
    ));
    Ok(())
}

/// Running sums of editing and untouched-attribute accuracy over generated rows.
#[derive(Default)]
struct EditTally {
    edit_hit: f64,
    edit_n: usize,
    keep_hit: f64,
    keep_n: usize,
    /// Per judge attribute: (hits, edits).
    per_attr: Vec<(f64, usize)>,
}

impl EditTally {
    /// One row: the judge's calls, the row's target labels and its source's
    /// labels, each over the judge's attributes.
    fn add(&mut self, pred: &[bool], target: &[bool], src: &[bool]) {
        let (edited, kept): (Vec<usize>, Vec<usize>) =
            (0..target.len()).partition(|&j| target[j] != src[j]);
        let pred = [pred.to_vec()];
        if !edited.is_empty() {
            let a = editing_accuracy(&pred, &[target.to_vec()], &edited);
            self.edit_hit += a * edited.len() as f64;
            self.edit_n += edited.len();
            for &j in &edited {
                self.per_attr[j].0 += f64::from(u8::from(pred[0][j] == target[j]));
                self.per_attr[j].1 += 1;
            }
        }
        if !kept.is_empty() {
            let a = untouched_accuracy(&pred, &[src.to_vec()], &kept);
            self.keep_hit += a * kept.len() as f64;
            self.keep_n += kept.len();
        }
    }
}

impl Judge {
    /// The judge's probabilities for generated rows, resized to its input.
    fn probabilities(&self, rows: &[GenRow], dev: &Device) -> Result<Vec<Vec<f64>>> {
        let size = match &self.saved.network {
            crate::train::classifier::NetConfig::PaperCnn(c) => c.image_size,
            crate::train::classifier::NetConfig::ResNet18(c) => c.image_size,
        };
        let imgs: Vec<RgbImage> = rows
            .iter()
            .map(|r| {
                Ok(resize_square(
                    decode_rgb(&r.png).map_err(|e| data_error!("{e}"))?,
                    size,
                ))
            })
            .collect::<Result<_>>()?;
        crate::train::classifier::SavedClassifier::probabilities(
            &self.net,
            &images_tensor(&imgs, dev)?,
        )
    }
}

/// Size-sweep copies grouped by the stage they were copied from (the
/// pipeline's expansion, [`InputStage::sweep_of`]); a group needs two sizes.
fn sweep_groups<'a>(classifiers: &[&'a InputStage]) -> BTreeMap<String, Vec<&'a InputStage>> {
    let mut g: BTreeMap<String, Vec<&InputStage>> = BTreeMap::new();
    for s in classifiers {
        if let Some(base) = &s.sweep_of {
            g.entry(base.clone()).or_default().push(s);
        }
    }
    g.retain(|_, v| v.len() >= 2);
    g
}

/// One size of a sweep: its classifier's val and test accuracy.
#[derive(Debug, Clone, Serialize)]
struct SweepPoint {
    stage: String,
    size: f64,
    val_accuracy: f64,
    accuracy: f64,
    n_test: usize,
}

/// A sweep's sizes and the one chosen by val accuracy.
#[derive(Debug, Clone, Serialize)]
struct Sweep {
    sizes: Vec<SweepPoint>,
    chosen: SweepPoint,
}

fn size_sweep(
    io: &StageIo,
    group: &str,
    members: &[&InputStage],
    metrics: &BTreeMap<&str, Vec<MetricRow>>,
) -> Result<Sweep> {
    let mut sizes = Vec::new();
    for s in members {
        let rows = &metrics[s.name.as_str()];
        let get = |k: &str| {
            rows.iter()
                .find(|r| r.metric == k && r.attribute.is_none() && r.repeat.is_none())
                .map(|r| (r.value, r.n))
        };
        let (val_accuracy, _) =
            get(metric::VAL_ACCURACY).context("classifier metrics lack val_accuracy")?;
        let (accuracy, n_test) =
            get(metric::ACCURACY).context("classifier metrics lack accuracy")?;
        let size = s.lineage.balance_size.ok_or_else(|| {
            data_error!(
                "stage `{}`: `{}` is a size-sweep copy of `{group}` but no balance stage with a `size` is upstream of it",
                io.name,
                s.name
            )
        })?;
        sizes.push(SweepPoint {
            stage: s.name.clone(),
            size,
            val_accuracy,
            accuracy,
            n_test: usize::try_from(n_test).unwrap_or(0),
        });
    }
    // Ties go to the smaller size (less synthesis for the same result).
    let chosen = sizes
        .iter()
        .max_by(|a, b| {
            a.val_accuracy
                .total_cmp(&b.val_accuracy)
                .then(b.size.total_cmp(&a.size))
        })
        .cloned()
        .context("empty sweep")?;
    Ok(Sweep { sizes, chosen })
}

fn label_agreement(out: &mut Rows, s: &InputStage) -> Result<()> {
    let path = s.table(tables::SYNTH)?;
    let mut by_strategy: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for b in read_columns(&path, &["strategy", "label_agreement"])? {
        let strat = strings(&b, 0)?;
        let agree = b
            .column(1)
            .as_any()
            .downcast_ref::<Float64Array>()
            .context("label_agreement is not float64")?;
        for r in 0..b.num_rows() {
            if !agree.is_null(r) {
                by_strategy
                    .entry(strat.value(r).to_string())
                    .or_default()
                    .push(agree.value(r));
            }
        }
    }
    for (strategy, v) in by_strategy {
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let full = v.iter().filter(|&&a| a >= 1.0).count() as f64 / n as f64;
        let d = serde_json::json!({"strategy": strategy, "table": format!("{}.synth", s.name), "judge": "the generator stage's classifier C (attr2face, dcgan) or its critic's classification head (sggan, stargan)"});
        out.push(&s.name, "label_agreement", mean, n, d.clone());
        out.push(&s.name, "label_agreement_full", full, n, d);
    }
    Ok(())
}

/// The images of a table's rows whose string column `column` satisfies `keep`.
fn read_images(path: &Path, column: &str, keep: impl Fn(&str) -> bool) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for b in read_columns(path, &[column, "image"])? {
        let k = strings(&b, 0)?;
        for r in 0..b.num_rows() {
            if keep(k.value(r))
                && let Some(bytes) = image_bytes(b.column(1).as_ref(), r)
            {
                out.push(bytes.to_vec());
            }
        }
    }
    Ok(out)
}

fn sample(mut v: Vec<Vec<u8>>, n: usize, seed: u64) -> Vec<Vec<u8>> {
    if v.len() > n {
        v.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        v.truncate(n);
    }
    v
}

fn features(
    io: &StageIo,
    net: &FidInception,
    encoded: &[Vec<u8>],
    batch: usize,
    dev: &Device,
) -> Result<Vec<Vec<f64>>> {
    let images: Vec<RgbImage> = encoded
        .par_iter()
        .map(|b| decode_rgb(b).map_err(|e| data_error!("undecodable image: {e}")))
        .collect::<Result<_>>()?;
    let pb = io.progress(images.len() as u64, "images");
    let f = fid::features(net, &images, batch, dev, |n| pb.inc(n as u64))?;
    pb.finish_and_clear();
    Ok(f)
}

/// What reconstructs a real face for a generator stage: attr2face's
/// autoencoder G_de(G_en(x)), or ST-GAN's G(E(x)).
fn reconstruction(
    out: &mut Rows,
    io: &StageIo,
    g: &InputStage,
    faces: &Path,
    n: usize,
    dev: &Device,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let model = g.model_file()?;
    if !generators::family(&model).abilities.reconstruct {
        return Ok(());
    }
    let generator = generators::load(&g.dir, dev)?;
    let Some(what) = generator.reconstruction() else {
        return Ok(());
    };
    let size = generator.image_size();
    let set = FaceSet::load(faces, &[Partition::Test], Some(n), size)?;
    if set.is_empty() {
        return Ok(());
    }
    let mut ms = Vec::new();
    let mut ps = Vec::new();
    let mut setting = None;
    let idx: Vec<usize> = (0..set.len()).collect();
    for chunk in idx.chunks(64) {
        let x = set.images(chunk, dev)?;
        let rec = tensor_to_rgb(&generator.reconstruct(&x)?)?;
        for (k, &i) in chunk.iter().enumerate() {
            let a = msssim::Planar::from_rgb(&set.rgb(i));
            let b = msssim::Planar::from_rgb(&rec[k]);
            let m = msssim::ms_ssim(&a, &b, 255.0).map_err(|e| data_error!("{e}"))?;
            setting = Some((m.levels, m.window));
            ms.push(m.value);
            if let Ok(p) = msssim::psnr(&a, &b, 255.0)
                && p.is_finite()
            {
                ps.push(p);
            }
        }
    }
    let (levels, window) = setting.unwrap_or((0, 0));
    let mut d = serde_json::json!({
        "images": what.images,
        "image_size": size,
        "levels": levels,
        "window": window,
        "data_range": 255,
    });
    for (key, note) in what.notes {
        d[*key] = (*note).into();
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    out.push(
        &g.name,
        "reconstruction_ms_ssim",
        mean(&ms),
        ms.len(),
        d.clone(),
    );
    if !ps.is_empty() {
        out.push(&g.name, "reconstruction_psnr", mean(&ps), ps.len(), d);
    }
    io.say(format!(
        "`{}`: reconstruction MS-SSIM {:.4} ({levels} levels, window {window}), PSNR {:.2} dB on {} test faces",
        g.name,
        mean(&ms),
        mean(&ps),
        ms.len()
    ));
    Ok(())
}
