//! Training the face parser P (SeCGAN, Sec. 3 "Parsing network", built by
//! us since no pretrained parser can be installed): a U-Net
//! ([`crate::models::unet`]) on warped, augmented CelebAMask-HQ pairs,
//! pixel cross-entropy with an ignore label, Adam at 1e-3; and its scores:
//! per-class IoU, mean IoU and pixel accuracy, and the per-pixel prior
//! baseline they are compared against.

use std::path::Path;

use anyhow::Result;
use candle_core::{DType, Device, ModuleT, Tensor};
use candle_nn::Optimizer;
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::adam::Adam;
use super::losses::scalar;
use super::{Phase, PhaseEnv, batch_indices, run_phase};
use crate::data::face_parsing::{ClassSet, IGNORE, Jitter, Pair, Placement, Sample};
use crate::data::tensors::images_tensor;
use crate::models::seeded_init;
use crate::models::unet::{Config, UNet, cross_entropy};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Geometry {
    /// One similarity from the HQ masks' mean eye and mouth centroids onto
    /// CelebA's mean aligned landmarks, then the ingest crop.
    #[default]
    Aligned,
    /// The whole HQ frame resized (no warp).
    None,
}

/// The `model.json` of a parse_faces stage, written by it and read by the
/// stages that use P (train_generator's SeCGAN): one type, so that writer
/// and readers cannot disagree.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ParserFile {
    pub network: crate::models::unet::Config,
    pub class_set: crate::data::face_parsing::ClassSet,
    pub classes: Vec<String>,
    pub image_size: usize,
    pub geometry: Geometry,
    /// HQ pixel → aligned-frame pixel (`geometry = "aligned"`).
    pub to_aligned: Option<crate::data::face_parsing::Similarity>,
    pub crop: Option<crate::data::images::Crop>,
    /// sha256 of parser.safetensors.
    pub sha256: String,
}

/// How pixels of rare classes weigh in the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassWeights {
    /// Every labelled pixel counts once.
    #[default]
    None,
    /// Eigen & Fergus's median frequency balancing: w_c = median(f) / f_c
    /// over the training pixels (classes absent from them get the median's 1).
    MedianFrequency,
}

pub struct Options {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub seed: u64,
    pub class_weights: ClassWeights,
    /// Random scale, rotation, shift, mirror, colour and softening.
    pub augment: bool,
}

/// The training set: pairs and how they are placed.
pub struct PairSet<'a> {
    pub pairs: &'a [Pair],
    pub place: Placement,
    pub classes: ClassSet,
    pub size: usize,
}

impl PairSet<'_> {
    /// Sample `i` with the jitter drawn from (seed, step, i).
    fn sample(&self, i: usize, seed: u64, step: usize, augment: bool) -> Sample {
        let j = if augment {
            let mut rng = ChaCha8Rng::seed_from_u64(
                seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64) << 40,
            );
            Jitter::random(&mut rng)
        } else {
            Jitter::NONE
        };
        self.pairs[i].warp(&self.place, self.classes, self.size, &j)
    }

    /// Every pair warped without jitter.
    pub fn plain(&self) -> Vec<Sample> {
        (0..self.pairs.len())
            .into_par_iter()
            .map(|i| self.sample(i, 0, 0, false))
            .collect()
    }
}

/// A batch of samples as (images [-1, 1], one-hot targets, zero where ignored).
pub fn batch_tensors(s: &[Sample], classes: usize, dev: &Device) -> Result<(Tensor, Tensor)> {
    let imgs: Vec<image::RgbImage> = s.iter().map(|s| s.img.clone()).collect();
    let x = images_tensor(&imgs, dev)?;
    let hw = s[0].labels.len();
    let mut onehot = vec![0f32; s.len() * classes * hw];
    for (b, smp) in s.iter().enumerate() {
        for (p, &l) in smp.labels.iter().enumerate() {
            if l != IGNORE {
                onehot[(b * classes + l as usize) * hw + p] = 1.0;
            }
        }
    }
    let side = (hw as f64).sqrt() as usize;
    let t = Tensor::from_vec(onehot, (s.len(), classes, side, side), dev)?;
    Ok((x, t))
}

/// Per-class pixel counts of labelled pixels.
pub fn class_counts(samples: &[Sample], classes: usize) -> Vec<u64> {
    let mut n = vec![0u64; classes];
    for s in samples {
        for &l in &s.labels {
            if l != IGNORE {
                n[l as usize] += 1;
            }
        }
    }
    n
}

pub fn weights(kind: ClassWeights, counts: &[u64]) -> Vec<f32> {
    match kind {
        ClassWeights::None => vec![1.0; counts.len()],
        ClassWeights::MedianFrequency => {
            let total: u64 = counts.iter().sum();
            let mut f: Vec<f64> = counts
                .iter()
                .filter(|&&c| c > 0)
                .map(|&c| c as f64 / total as f64)
                .collect();
            f.sort_by(f64::total_cmp);
            let med = f.get(f.len() / 2).copied().unwrap_or(1.0);
            counts
                .iter()
                .map(|&c| {
                    if c == 0 {
                        1.0
                    } else {
                        (med / (c as f64 / total as f64)) as f32
                    }
                })
                .collect()
        }
    }
}

/// Confusion counts of predicted against true labels (ignored pixels skipped).
#[derive(Debug, Clone)]
pub struct Scores {
    pub classes: usize,
    /// [truth][prediction]
    pub confusion: Vec<Vec<u64>>,
}

impl Scores {
    pub fn new(classes: usize) -> Self {
        Scores {
            classes,
            confusion: vec![vec![0; classes]; classes],
        }
    }

    pub fn add(&mut self, truth: &[u8], pred: &[u8]) {
        for (&t, &p) in truth.iter().zip(pred) {
            if t != IGNORE {
                self.confusion[t as usize][p as usize] += 1;
            }
        }
    }

    /// IoU of each class; None where the class is in neither truth nor prediction.
    pub fn iou(&self) -> Vec<Option<f64>> {
        (0..self.classes)
            .map(|c| {
                let tp = self.confusion[c][c];
                let fn_: u64 = self.confusion[c].iter().sum::<u64>() - tp;
                let fp: u64 = (0..self.classes).map(|t| self.confusion[t][c]).sum::<u64>() - tp;
                let union = tp + fn_ + fp;
                (union > 0).then(|| tp as f64 / union as f64)
            })
            .collect()
    }

    /// Mean IoU over the classes present in truth or prediction.
    pub fn mean_iou(&self) -> f64 {
        let v: Vec<f64> = self.iou().into_iter().flatten().collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    }

    pub fn pixel_accuracy(&self) -> f64 {
        let tp: u64 = (0..self.classes).map(|c| self.confusion[c][c]).sum();
        let all: u64 = self.confusion.iter().flatten().sum();
        tp as f64 / all.max(1) as f64
    }

    pub fn pixels(&self) -> u64 {
        self.confusion.iter().flatten().sum()
    }
}

/// The per-pixel prior: the most frequent class at each location over `samples`.
pub fn prior(samples: &[Sample], classes: usize) -> Vec<u8> {
    let hw = samples[0].labels.len();
    let mut counts = vec![0u32; hw * classes];
    for s in samples {
        for (p, &l) in s.labels.iter().enumerate() {
            if l != IGNORE {
                counts[p * classes + l as usize] += 1;
            }
        }
    }
    (0..hw)
        .map(|p| {
            let c = &counts[p * classes..(p + 1) * classes];
            (0..classes)
                .max_by_key(|&k| (c[k], std::cmp::Reverse(k)))
                .unwrap_or(0) as u8
        })
        .collect()
}

/// Predicted labels and confidences of images [-1, 1] in chunks of 64.
pub fn predict(
    net: &UNet,
    images: &[image::RgbImage],
    dev: &Device,
) -> Result<(Vec<u8>, Vec<f32>)> {
    let mut labels = Vec::new();
    let mut conf = Vec::new();
    for c in images.chunks(64) {
        let x = images_tensor(c, dev)?;
        let (l, p) = crate::models::unet::argmax(&net.probabilities(&x)?)?;
        labels.extend(l);
        conf.extend(p);
    }
    Ok((labels, conf))
}

/// Scores of `net` on `samples`.
pub fn score(net: &UNet, samples: &[Sample], classes: usize, dev: &Device) -> Result<Scores> {
    let imgs: Vec<image::RgbImage> = samples.iter().map(|s| s.img.clone()).collect();
    let (pred, _) = predict(net, &imgs, dev)?;
    let hw = samples.first().map(|s| s.labels.len()).unwrap_or(0);
    let mut sc = Scores::new(classes);
    for (k, s) in samples.iter().enumerate() {
        sc.add(&s.labels, &pred[k * hw..(k + 1) * hw]);
    }
    Ok(sc)
}

pub struct Trained {
    pub vm: VarMap,
    pub net: UNet,
    pub log: Vec<super::LogRow>,
    pub wall_time_s: f64,
    pub steps: usize,
}

struct ParserPhase<'a> {
    data: &'a PairSet<'a>,
    val: &'a [Sample],
    opts: &'a Options,
    class_w: Tensor,
    steps_per_epoch: usize,
    vm: VarMap,
    net: UNet,
    opt: Adam,
    dev: Device,
}

impl Phase for ParserPhase<'_> {
    fn step(&mut self, step: usize) -> Result<Vec<(&'static str, f64)>> {
        let idx = batch_indices(
            self.data.pairs.len(),
            self.opts.batch_size,
            self.opts.seed,
            step,
        );
        let samples: Vec<Sample> = idx
            .par_iter()
            .map(|&i| self.data.sample(i, self.opts.seed, step, self.opts.augment))
            .collect();
        let (x, t) = batch_tensors(&samples, self.data.classes.len(), &self.dev)?;
        let loss = cross_entropy(&self.net.forward_t(&x, true)?, &t, &self.class_w)?;
        self.opt.backward_step(&loss)?;
        let mut out = vec![("loss", scalar(&loss)?)];
        if step.is_multiple_of(self.steps_per_epoch) {
            let s = score(&self.net, self.val, self.data.classes.len(), &self.dev)?;
            out.push(("val/mean_iou", s.mean_iou()));
            out.push(("val/pixel_accuracy", s.pixel_accuracy()));
        }
        Ok(out)
    }

    fn sample(&mut self, _path: &Path) -> Result<()> {
        Ok(())
    }

    fn nets(&self) -> Vec<(&'static str, &VarMap)> {
        vec![("parser", &self.vm)]
    }

    fn optimizers(&mut self) -> Vec<(&'static str, &mut Adam)> {
        vec![("parser", &mut self.opt)]
    }
}

/// Trains P for `opts.epochs` passes over `data` (validation IoU logged
/// after each pass).
pub fn train(
    cfg: &Config,
    opts: &Options,
    data: &PairSet,
    val: &[Sample],
    class_w: &[f32],
    dev: &Device,
    env: &PhaseEnv,
) -> Result<Trained> {
    let vm = VarMap::new();
    let net = UNet::new(cfg, VarBuilder::from_varmap(&vm, DType::F32, dev))?;
    seeded_init(&vm, opts.seed)?;
    let opt = Adam::with_betas(&vm, opts.lr, (0.9, 0.999))?;
    let steps_per_epoch = data.pairs.len().div_ceil(opts.batch_size).max(1);
    let steps = opts.epochs * steps_per_epoch;
    let mut p = ParserPhase {
        data,
        val,
        opts,
        class_w: Tensor::new(class_w, dev)?,
        steps_per_epoch,
        vm,
        net,
        opt,
        dev: dev.clone(),
    };
    let r = run_phase(env, "parser", steps, &mut p)?;
    Ok(Trained {
        vm: p.vm,
        net: p.net,
        log: r.log,
        wall_time_s: r.wall_time_s,
        steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_counts_union_of_truth_and_prediction() {
        let mut s = Scores::new(3);
        // truth 0 0 1 1 2 ign, pred 0 1 1 1 0 2
        s.add(&[0, 0, 1, 1, 2, IGNORE], &[0, 1, 1, 1, 0, 2]);
        let iou = s.iou();
        assert_eq!(iou[0], Some(1.0 / 3.0)); // tp 1, fn 1, fp 1
        assert_eq!(iou[1], Some(2.0 / 3.0)); // tp 2, fp 1
        assert_eq!(iou[2], Some(0.0)); // fn 1
        assert_eq!(s.pixels(), 5);
        assert!((s.pixel_accuracy() - 0.6).abs() < 1e-12);
        assert!((s.mean_iou() - (1.0 / 3.0 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn median_frequency_weights_rare_classes_up() {
        let w = weights(ClassWeights::MedianFrequency, &[700, 200, 100, 0]);
        // frequencies 0.7, 0.2, 0.1: median 0.2
        assert!((w[0] - 0.2 / 0.7).abs() < 1e-6);
        assert!((w[1] - 1.0).abs() < 1e-6);
        assert!((w[2] - 2.0).abs() < 1e-6);
        assert_eq!(w[3], 1.0);
        assert_eq!(weights(ClassWeights::None, &[1, 2]), vec![1.0, 1.0]);
    }
}
