//! `kind = "parse_faces"`: our own face parser P for SeCGAN (Sun et al.,
//! Sec. 3 "Parsing network"; the paper uses a pretrained one, which cannot
//! be installed here). Trains a U-Net on CelebAMask-HQ pairs (`data`,
//! default `$AUGMENT_FACE_PARSING_DIR`) warped into the ingest stage's crop
//! of CelebA's aligned frame, scores it on held-out pairs, and parses every
//! ingested face.
//!
//! Outputs: `parser.safetensors`, `model.json` (classes, size, the warp,
//! the weights' sha256), `parser_metrics` (per-class IoU, mean IoU, pixel
//! accuracy and the per-pixel prior baseline on `val_hq`), `masks` (one row
//! per ingested face: a grey PNG of class ids at the ingest size, the pixel
//! fraction of each class, the mean top softmax), `train_log` and
//! `overlay.png` (16 faces with their masks blended in).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{ArrayRef, Float64Array, StringArray};
use arrow::record_batch::RecordBatch;
use image::{ImageEncoder, RgbImage};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::{Lineage, StageIo, StageKind, StageOutput, Table};
use crate::contract::tables;
use crate::data::celeba::Partition;
use crate::data::face_parsing::{self as fp, ClassSet, Placement};
use crate::data::images::Crop;
use crate::data::metrics_table::{self, MetricRow};
use crate::data::parquet::{TableWriter, image_struct};
use crate::data::schema;
use crate::data::tensors::FaceSet;
use crate::models::unet;
use crate::train::parser::{self, ClassWeights, Options, PairSet, Scores};
use crate::train::{Cadence, PhaseEnv};
use crate::{config_error, data_error};

pub use crate::train::parser::{Geometry, ParserFile};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParserPreset {
    /// 4 levels, 32 → 256 filters, 60 epochs.
    #[default]
    Paper,
    /// 4 levels, 8 → 64 filters, 10 epochs.
    Tiny,
}

/// What the parser learns from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainOn {
    /// The CelebAMask-HQ pairs of `data`.
    #[default]
    Hq,
    /// The demo faces' `train` split and the renderer's class maps (a demo
    /// ingest's `demo_masks`); `val` is held out.
    Demo,
}

fn default_holdout() -> usize {
    100
}
fn default_batch() -> usize {
    16
}
fn default_lr() -> f64 {
    1e-3
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// CelebAMask-HQ pairs (images/<stem>.jpg, masks/<stem>.png); default
    /// $AUGMENT_FACE_PARSING_DIR.
    #[serde(default)]
    pub data: Option<PathBuf>,
    #[serde(default)]
    pub train_on: TrainOn,
    /// Pairs held out for `val_hq`, drawn by the seed over the sorted stems.
    #[serde(default = "default_holdout")]
    pub holdout: usize,
    /// Use only the first `limit` pairs (sorted by stem).
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub classes: ClassSet,
    #[serde(default)]
    pub geometry: Geometry,
    #[serde(default)]
    pub preset: ParserPreset,
    /// The parser's input side (default: the ingest stage's image_size).
    #[serde(default)]
    pub image_size: Option<usize>,
    /// Passes over the training pairs (default 60 for `paper`, 10 for `tiny`).
    #[serde(default)]
    pub epochs: Option<usize>,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    #[serde(default = "default_lr")]
    pub lr: f64,
    #[serde(default)]
    pub class_weights: ClassWeights,
    /// Random scale, rotation, shift, mirror, colour jitter and softening.
    #[serde(default = "yes")]
    pub augment: bool,
    #[serde(default)]
    pub seed: Option<u64>,
}

impl Config {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.batch_size == 0 {
            return Err("batch_size must be at least 1".into());
        }
        if self.epochs == Some(0) {
            return Err("epochs must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(format!("lr = {}: must be a positive number", self.lr));
        }
        if self.train_on == TrainOn::Demo && self.classes != ClassSet::Secgan12 {
            return Err(
                "train_on = \"demo\": the demo faces' class maps use classes = \"secgan12\"".into(),
            );
        }
        if self.limit == Some(0) {
            return Err("limit must be at least 1".into());
        }
        Ok(())
    }

    fn epochs(&self) -> usize {
        self.epochs.unwrap_or(match self.preset {
            ParserPreset::Paper => 60,
            ParserPreset::Tiny => 10,
        })
    }

    fn network(&self, size: usize) -> unet::Config {
        let n = self.classes.len();
        let base = match self.preset {
            ParserPreset::Paper => unet::Config::paper(n),
            ParserPreset::Tiny => unet::Config::tiny(n),
        };
        unet::Config {
            image_size: size,
            ..base
        }
    }
}

pub fn external_fingerprint(c: &Config) -> Result<String> {
    let Ok(dir) = fp::data_dir(c.data.as_deref()) else {
        return Ok(String::new());
    };
    let mut listing = Vec::new();
    for sub in ["images", "masks"] {
        if let Ok(rd) = std::fs::read_dir(dir.join(sub)) {
            for e in rd.flatten() {
                let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                listing.push(format!("{sub}/{}:{len}", e.file_name().to_string_lossy()));
            }
        }
    }
    listing.sort();
    Ok(format!(
        "{}\n{}",
        dir.display(),
        hex::encode(sha2::Sha256::digest(listing.join("\n")))
    ))
}

fn mask_png(labels: &[u8], side: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out).write_image(
        labels,
        side as u32,
        side as u32,
        image::ExtendedColorType::L8,
    )?;
    Ok(out)
}

/// What `run` reads from its `ingest` input.
struct Inputs {
    ingest_name: String,
    /// The ingest's image side and the parser's (`image_size`, default the ingest's).
    ingest_size: usize,
    size: usize,
    crop: Crop,
    /// The demo faces' class maps at the parser's size (None unless the
    /// ingest rendered demo faces).
    demo_masks: Option<HashMap<String, Vec<u8>>>,
    /// Every ingested face at the parser's size, read once: the demo
    /// training pairs, the demo scores and the masks table all use it.
    faces: FaceSet,
}

/// The trained parser and its held-out scores.
struct Fit {
    trained: parser::Trained,
    epochs: usize,
    scores: Scores,
    /// The per-pixel class prior of the training masks, scored the same way.
    prior_scores: Scores,
    /// The parser against the renderer's class maps on the demo test split.
    demo_scores: Option<Scores>,
}

pub fn run(c: &Config, io: &StageIo) -> Result<StageOutput> {
    let dev = io.candle_device()?;
    let seed = c.seed.unwrap_or(io.run_seed);
    let input = load_inputs(c, io)?;
    let net_cfg = c.network(input.size);
    net_cfg
        .validate()
        .map_err(|e| config_error!("stage `{}`: {e}", io.name))?;
    let (train_pairs, val_pairs, place) = match c.train_on {
        TrainOn::Hq => hq_pairs(c, io, seed, input.size, input.crop)?,
        TrainOn::Demo => demo_pairs(c, io, &input)?,
    };
    let data = PairSet {
        pairs: &train_pairs,
        place,
        classes: c.classes,
        size: input.size,
    };
    let mut fit = fit(c, io, seed, &net_cfg, &data, &val_pairs, &dev)?;
    fit.demo_scores = demo_test_scores(io, c.classes.len(), &fit.trained.net, &input, &dev)?;

    let out = &io.out_dir;
    let sha = write_parser(c, io, &net_cfg, &fit.trained, place, input.size)?;
    let rows = metric_rows(c, io, &fit);
    let n_metrics = metrics_table::write(&out.join(tables::PARSER_METRICS.file), &rows)?;
    let n_log = super::write_train_log(&out.join(tables::TRAIN_LOG.file), &fit.trained.log)?;
    // Every ingested face.
    if input.faces.is_empty() {
        return Err(data_error!(
            "ingest stage `{}` has no faces with images to parse",
            input.ingest_name
        ));
    }
    let net = &fit.trained.net;
    let n_masks = write_masks(
        io,
        c.classes,
        net,
        &input.faces,
        input.size,
        input.ingest_size,
        &dev,
    )?;
    overlay(net, &input.faces, &dev)?.save(out.join("overlay.png"))?;
    let summary = summary(
        c,
        &fit,
        (train_pairs.len(), val_pairs.len()),
        input.size,
        &sha,
    );
    Ok(StageOutput {
        tables: vec![
            Table::of(tables::PARSER_METRICS, n_metrics),
            Table::of(tables::MASKS, n_masks),
            Table::of(tables::TRAIN_LOG, n_log),
        ],
        files: vec![
            "parser.safetensors".into(),
            "model.json".into(),
            "overlay.png".into(),
        ],
        summary,
        lineage: Lineage::inherit(&io.inputs),
    })
}

/// The ingest's faces (and demo class maps) at the parser's size.
fn load_inputs(c: &Config, io: &StageIo) -> Result<Inputs> {
    let ingest = io.input(StageKind::Ingest)?;
    let ingest_size = ingest.lineage.image_size.unwrap_or(64) as usize;
    let size = c.image_size.unwrap_or(ingest_size);
    let demo_masks = match ingest.has_table(tables::DEMO_MASKS) {
        true => Some(read_demo_masks(&ingest.table(tables::DEMO_MASKS)?, size)?),
        false => None,
    };
    let faces = FaceSet::load(&ingest.table(tables::FACES)?, &[], None, size)?;
    Ok(Inputs {
        ingest_name: ingest.name.clone(),
        ingest_size,
        size,
        crop: ingest.lineage.crop.unwrap_or_default(),
        demo_masks,
        faces,
    })
}

/// `train_on = "demo"`: the demo faces of `train` and `val` with the
/// renderer's class maps.
fn demo_pairs(
    c: &Config,
    io: &StageIo,
    input: &Inputs,
) -> Result<(Vec<fp::Pair>, Vec<fp::Pair>, Placement)> {
    let Some(masks) = &input.demo_masks else {
        return Err(config_error!(
            "stage `{}`: train_on = \"demo\" needs an ingest of demo faces (source = \"demo\"), whose class maps it learns",
            io.name
        ));
    };
    let faces = &input.faces;
    let pairs = |part: Partition| -> Result<Vec<fp::Pair>> {
        faces
            .rows_in(part)
            .into_iter()
            .map(|i| {
                let id = &faces.image_ids[i];
                let m = masks
                    .get(id)
                    .ok_or_else(|| data_error!("demo_masks has no row for face {id}"))?;
                Ok(fp::Pair::from_parts(id, faces.rgb(i), m.clone()))
            })
            .collect()
    };
    let (t, v) = (pairs(Partition::Train)?, pairs(Partition::Val)?);
    io.say(format!(
        "training on {} demo faces with the renderer's class maps ({} val), {} classes at {} px",
        t.len(),
        v.len(),
        c.classes.len(),
        input.size
    ));
    if t.is_empty() || v.is_empty() {
        return Err(data_error!(
            "train_on = \"demo\" needs demo faces in train and val; ingest more (n)"
        ));
    }
    Ok((t, v, Placement::Whole))
}

/// Trains the parser on `data` and scores it, and the class prior, on the held-out pairs.
fn fit(
    c: &Config,
    io: &StageIo,
    seed: u64,
    net_cfg: &unet::Config,
    data: &PairSet,
    val_pairs: &[fp::Pair],
    dev: &candle_core::Device,
) -> Result<Fit> {
    let val = PairSet {
        pairs: val_pairs,
        ..*data
    };
    let val_samples = val.plain();
    let train_plain = data.plain();
    let n_classes = c.classes.len();
    let counts = parser::class_counts(&train_plain, n_classes);
    let class_w = parser::weights(c.class_weights, &counts);
    let prior = parser::prior(&train_plain, n_classes);
    drop(train_plain);
    let mut prior_scores = Scores::new(n_classes);
    for s in &val_samples {
        prior_scores.add(&s.labels, &prior);
    }
    let opts = Options {
        epochs: c.epochs(),
        batch_size: c.batch_size,
        lr: c.lr,
        seed,
        class_weights: c.class_weights,
        augment: c.augment,
    };
    let env = PhaseEnv {
        dir: &io.resume_dir,
        cadence: Cadence {
            log_every: 1,
            sample_every: usize::MAX,
            checkpoint_every: data.pairs.len().div_ceil(c.batch_size).max(1),
        },
        quiet: io.quiet,
        label: &io.name,
    };
    let trained = parser::train(net_cfg, &opts, data, &val_samples, &class_w, dev, &env)?;
    let scores = parser::score(&trained.net, &val_samples, n_classes, dev)?;
    io.say(format!(
        "held out: mean IoU {:.3}, pixel accuracy {:.3} (per-pixel prior: mean IoU {:.3})",
        scores.mean_iou(),
        scores.pixel_accuracy(),
        prior_scores.mean_iou()
    ));
    Ok(Fit {
        trained,
        epochs: opts.epochs,
        scores,
        prior_scores,
        demo_scores: None,
    })
}

/// Writes `parser.safetensors` and `model.json`; returns the weights' sha256.
fn write_parser(
    c: &Config,
    io: &StageIo,
    net_cfg: &unet::Config,
    trained: &parser::Trained,
    place: Placement,
    size: usize,
) -> Result<String> {
    let out = &io.out_dir;
    let weights_path = out.join("parser.safetensors");
    trained
        .vm
        .save(&weights_path)
        .with_context(|| format!("writing {}", weights_path.display()))?;
    let sha = hex::encode(sha2::Sha256::digest(std::fs::read(&weights_path)?));
    let (to_aligned, crop_out) = match place {
        Placement::Aligned { to_aligned, crop } => (Some(to_aligned), Some(crop)),
        Placement::Whole => (None, None),
    };
    let file = ParserFile {
        network: net_cfg.clone(),
        class_set: c.classes,
        classes: c.classes.names().iter().map(|s| s.to_string()).collect(),
        image_size: size,
        geometry: c.geometry,
        to_aligned,
        crop: crop_out,
        sha256: sha.clone(),
    };
    std::fs::write(out.join("model.json"), serde_json::to_string_pretty(&file)?)?;
    Ok(sha)
}

/// Demo faces: the parser against the renderer's class maps on the test split.
fn demo_test_scores(
    io: &StageIo,
    n_classes: usize,
    net: &unet::UNet,
    input: &Inputs,
    dev: &candle_core::Device,
) -> Result<Option<Scores>> {
    let Some(masks) = &input.demo_masks else {
        return Ok(None);
    };
    let (faces, size) = (&input.faces, input.size);
    let test = faces.rows_in(Partition::Test);
    let imgs: Vec<RgbImage> = test.iter().map(|&i| faces.rgb(i)).collect();
    let (pred, _) = parser::predict(net, &imgs, dev)?;
    let mut sc = Scores::new(n_classes);
    for (k, &i) in test.iter().enumerate() {
        if let Some(m) = masks.get(&faces.image_ids[i]) {
            sc.add(m, &pred[k * size * size..(k + 1) * size * size]);
        }
    }
    io.say(format!(
        "demo test faces ({}): mean IoU {:.3}, pixel accuracy {:.3}",
        test.len(),
        sc.mean_iou(),
        sc.pixel_accuracy()
    ));
    Ok(Some(sc))
}

/// The `parser_metrics` rows: mean IoU, pixel accuracy and per-class IoU
/// of each scored split.
fn metric_rows(c: &Config, io: &StageIo, fit: &Fit) -> Vec<MetricRow> {
    let names = c.classes.names();
    let row = |metric: &str, class: Option<&str>, value: f64, n: u64, split: &str| MetricRow {
        run: io.run_name.clone(),
        stage: io.name.clone(),
        metric: metric.into(),
        attribute: class.map(str::to_string),
        value,
        n: n as i64,
        details: serde_json::json!({"split": split}).to_string(),
        repeat: None,
    };
    let (val_name, prior_name) = match c.train_on {
        TrainOn::Hq => ("val_hq", "val_hq_prior"),
        TrainOn::Demo => ("val_demo", "val_demo_prior"),
    };
    let mut splits = vec![(val_name, &fit.scores), (prior_name, &fit.prior_scores)];
    if let Some(d) = &fit.demo_scores {
        splits.push(("demo", d));
    }
    let mut rows = Vec::new();
    for (split, sc) in splits {
        rows.push(row("mean_iou", None, sc.mean_iou(), sc.pixels(), split));
        rows.push(row(
            "pixel_accuracy",
            None,
            sc.pixel_accuracy(),
            sc.pixels(),
            split,
        ));
        for (k, iou) in sc.iou().into_iter().enumerate() {
            if let Some(v) = iou {
                let n: u64 = sc.confusion[k].iter().sum();
                rows.push(row("iou", Some(names[k]), v, n, split));
            }
        }
    }
    rows
}

/// The stage summary: pair counts, schedule, held-out scores, per-class IoU.
fn summary(
    c: &Config,
    fit: &Fit,
    (train_pairs, val_pairs): (usize, usize),
    size: usize,
    sha: &str,
) -> serde_json::Value {
    let mut summary = serde_json::json!({
        "train_on": c.train_on,
        "train_pairs": train_pairs,
        "val_pairs": val_pairs,
        "image_size": size,
        "epochs": fit.epochs,
        "steps": fit.trained.steps,
        "val_mean_iou": fit.scores.mean_iou(),
        "val_pixel_accuracy": fit.scores.pixel_accuracy(),
        "demo_mean_iou": fit.demo_scores.as_ref().map(|d| d.mean_iou()),
        "prior_mean_iou": fit.prior_scores.mean_iou(),
        "wall_time_s": fit.trained.wall_time_s,
        "sha256": sha,
    });
    let names = c.classes.names();
    for (k, v) in fit.scores.iou().iter().enumerate() {
        summary[format!("iou_{}", names[k])] = serde_json::json!(v);
    }
    summary
}

/// The HQ pairs of `data`: (train, held out) and their placement.
fn hq_pairs(
    c: &Config,
    io: &StageIo,
    seed: u64,
    size: usize,
    crop: Crop,
) -> Result<(Vec<fp::Pair>, Vec<fp::Pair>, Placement)> {
    let dir = fp::data_dir(c.data.as_deref())?;
    let setting = format!("stage `{}`: data", io.name);
    let mut stems = fp::list_pairs(&dir, &setting)?;
    if let Some(l) = c.limit {
        stems.truncate(l);
    }
    if c.holdout >= stems.len() {
        return Err(config_error!(
            "stage `{}`: holdout = {} but {} has only {} pairs{}; lower holdout",
            io.name,
            c.holdout,
            dir.display(),
            stems.len(),
            if c.limit.is_some() {
                " (after limit)"
            } else {
                ""
            }
        ));
    }
    let (train_stems, val_stems) = fp::split(&stems, c.holdout, seed);
    io.say(format!(
        "{} pairs from {} ({} train, {} held out), {} classes at {size} px",
        stems.len(),
        dir.display(),
        train_stems.len(),
        val_stems.len(),
        c.classes.len()
    ));
    // Placement: one similarity from the training masks' mean landmarks.
    let place = match c.geometry {
        Geometry::Aligned => {
            let marks = fp::mask_landmarks(&dir, &train_stems)?;
            let t = fp::fit_to_aligned(&marks)?;
            io.say(format!(
                "HQ → aligned frame: scale {:.4}, rotation {:.2}°, from {} of {} training masks",
                t.scale(),
                t.a_im.atan2(t.a_re).to_degrees(),
                marks.iter().flatten().count(),
                marks.len()
            ));
            Placement::Aligned {
                to_aligned: t,
                crop,
            }
        }
        Geometry::None => Placement::Whole,
    };
    let first = fp::read_raw(&dir, &train_stems[0])?.1;
    let scale = fp::working_scale(&place, first.w.max(first.h) as f64, size);
    let bar = io.progress(stems.len() as u64, "pairs");
    let read = |list: &[String]| -> Result<Vec<fp::Pair>> {
        list.par_iter()
            .map(|s| {
                let p = fp::read_pair(&dir, s, c.classes, scale);
                bar.inc(1);
                p
            })
            .collect()
    };
    let train_pairs = read(&train_stems)?;
    let val_pairs = read(&val_stems)?;
    bar.finish_and_clear();
    Ok((train_pairs, val_pairs, place))
}

/// The `demo_masks` table's class maps by image id, resized (nearest) to `size`.
fn read_demo_masks(path: &std::path::Path, size: usize) -> Result<HashMap<String, Vec<u8>>> {
    let mut out = HashMap::new();
    for b in crate::data::parquet::read_columns(path, &["image_id", "mask"])? {
        let ids = crate::data::tensors::strings(&b, 0)?;
        for r in 0..b.num_rows() {
            let id = ids.value(r);
            let bytes = crate::data::tensors::image_bytes(b.column(1).as_ref(), r)
                .ok_or_else(|| data_error!("demo_masks: face {id} has no mask"))?;
            let m = fp::decode_mask(bytes, &format!("demo_masks row {id}"), 11)?;
            if m.w != m.h {
                return Err(data_error!(
                    "demo_masks: face {id}: mask is {}x{}, not square",
                    m.w,
                    m.h
                ));
            }
            out.insert(id.to_string(), fp::resize_labels(&m.ids, m.w, size));
        }
    }
    Ok(out)
}

/// The `masks` table: every face parsed, in chunks of 256.
fn write_masks(
    io: &StageIo,
    classes: ClassSet,
    net: &unet::UNet,
    faces: &FaceSet,
    size: usize,
    out_size: usize,
    dev: &candle_core::Device,
) -> Result<usize> {
    let names = classes.names();
    let sch = schema::masks(names);
    let mut w = TableWriter::create(&io.out_dir.join(tables::MASKS.file), sch.clone(), &[], 4096)?;
    let bar = io.progress(faces.len() as u64, "faces");
    let hw = size * size;
    let mut total = 0;
    let idx: Vec<usize> = (0..faces.len()).collect();
    for chunk in idx.chunks(256) {
        let imgs: Vec<RgbImage> = chunk.iter().map(|&i| faces.rgb(i)).collect();
        let (labels, conf) = parser::predict(net, &imgs, dev)?;
        let pngs: Vec<Vec<u8>> = (0..chunk.len())
            .into_par_iter()
            .map(|k| {
                mask_png(
                    &fp::resize_labels(&labels[k * hw..(k + 1) * hw], size, out_size),
                    out_size,
                )
            })
            .collect::<Result<_>>()?;
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                chunk.iter().map(|&i| faces.image_ids[i].as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                chunk.iter().map(|&i| faces.partitions[i].as_str()),
            )),
            image_struct(
                chunk
                    .iter()
                    .zip(&pngs)
                    .map(|(&i, p)| Some((p.as_slice(), format!("{}.png", faces.image_ids[i])))),
            ),
        ];
        for cl in 0..names.len() {
            cols.push(Arc::new(Float64Array::from_iter_values(
                (0..chunk.len()).map(|k| {
                    labels[k * hw..(k + 1) * hw]
                        .iter()
                        .filter(|&&l| l as usize == cl)
                        .count() as f64
                        / hw as f64
                }),
            )));
        }
        cols.push(Arc::new(Float64Array::from_iter_values(
            (0..chunk.len()).map(|k| {
                conf[k * hw..(k + 1) * hw]
                    .iter()
                    .map(|&v| v as f64)
                    .sum::<f64>()
                    / hw as f64
            }),
        )));
        cols.push(Arc::new(StringArray::from_iter_values(
            chunk.iter().map(|_| "parser"),
        )));
        w.write(&RecordBatch::try_new(sch.clone(), cols)?)?;
        total += chunk.len();
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    w.finish()?;
    Ok(total)
}

/// 16 faces (evenly spread over the table) with their predicted classes
/// blended in at 45%, beside the plain faces: 4 rows of (face, overlay) pairs.
fn overlay(net: &unet::UNet, faces: &FaceSet, dev: &candle_core::Device) -> Result<RgbImage> {
    let n = faces.len().min(16);
    let pick: Vec<usize> = (0..n).map(|k| k * faces.len() / n).collect();
    let imgs: Vec<RgbImage> = pick.iter().map(|&i| faces.rgb(i)).collect();
    let (labels, _) = parser::predict(net, &imgs, dev)?;
    let s = faces.size;
    let mut tiles = Vec::new();
    for (k, img) in imgs.iter().enumerate() {
        let mut o = img.clone();
        for (p, px) in o.pixels_mut().enumerate() {
            let col = fp::palette(labels[k * s * s + p]);
            for c in 0..3 {
                px[c] = (0.55 * px[c] as f64 + 0.45 * col[c] as f64).round() as u8;
            }
        }
        tiles.push(img.clone());
        tiles.push(o);
    }
    Ok(crate::data::tensors::grid(&tiles, 8))
}
