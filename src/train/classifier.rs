//! Downstream attribute classifier training (Liu et al. Sec. V-D): a
//! multi-label classifier trained on real or augmented rows, the epoch with
//! the best accuracy on the real `val` split kept, through the same
//! checkpointed loop as the generators ([`super::run_phase`]).

use std::path::Path;

use anyhow::Result;
use candle_core::{DType, Device, Module, ModuleT, Tensor};
use candle_nn::{Optimizer, ParamsAdamW, VarBuilder, VarMap};

use crate::train::adam::Adam;

use super::losses::{bce_with_logits, scalar};
use super::{LogRow, Phase, PhaseEnv, batch_indices, run_phase};
use crate::data::tensors::FaceSet;
use crate::models::classifier::{self, Classifier};
use crate::models::resnet::{self, ResNet};
use crate::models::seeded_init;

/// The downstream network to train.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetConfig {
    /// The 5-conv classifier of Liu et al. Sec. III-D.
    PaperCnn(classifier::Config),
    /// ResNet-18, the translation papers' evaluation network.
    ResNet18(resnet::Config),
}

impl NetConfig {
    pub fn image_size(&self) -> usize {
        match self {
            NetConfig::PaperCnn(c) => c.image_size,
            NetConfig::ResNet18(c) => c.image_size,
        }
    }
}

/// A trained or training downstream network.
pub enum Net {
    PaperCnn(Classifier),
    ResNet18(ResNet),
}

impl Net {
    pub fn new(cfg: &NetConfig, outputs: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(match cfg {
            NetConfig::PaperCnn(c) => Net::PaperCnn(Classifier::with_outputs(c, outputs, vb)?),
            NetConfig::ResNet18(c) => Net::ResNet18(ResNet::new(c, outputs, vb)?),
        })
    }
}

impl ModuleT for Net {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        match self {
            Net::PaperCnn(n) => n.forward(x),
            Net::ResNet18(n) => n.forward_t(x, train),
        }
    }
}

/// Training settings.
#[derive(Debug, Clone)]
pub struct Options {
    pub epochs: usize,
    /// Optimiser steps instead of `epochs` passes over the training rows.
    pub steps: Option<usize>,
    /// Batches drawn from two pools at a fixed ratio instead of one shuffle.
    pub mix: Option<Mix>,
    pub batch_size: usize,
    pub lr: f64,
    pub seed: u64,
    /// Attribute indices the classifier predicts.
    pub attributes: Vec<usize>,
}

/// Every batch takes `real` of its rows from the first pool and the rest
/// from the second, each pool shuffled once per pass over it (so the smaller
/// pool repeats within an epoch). Rows are indices into the training split's
/// face set.
#[derive(Debug, Clone)]
pub struct Mix {
    pub pools: [Vec<usize>; 2],
    pub real: usize,
}

impl Mix {
    /// `fraction` of a `batch` from `real_rows`, at least one row from each
    /// pool when the batch has room for both.
    pub fn new(real_rows: Vec<usize>, added_rows: Vec<usize>, fraction: f64, batch: usize) -> Self {
        let real = ((fraction * batch as f64).round() as usize)
            .clamp(usize::from(batch > 1), batch.saturating_sub(1).max(1));
        Mix {
            pools: [real_rows, added_rows],
            real,
        }
    }

    /// The face-set rows of optimiser step `step` (1-based).
    pub fn batch(&self, batch: usize, seed: u64, step: usize) -> Vec<usize> {
        let counts = [self.real, batch - self.real];
        let mut out = Vec::with_capacity(batch);
        for (p, (pool, &k)) in self.pools.iter().zip(&counts).enumerate() {
            if k == 0 || pool.is_empty() {
                continue;
            }
            let pool_seed = seed ^ (p as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
            out.extend(
                batch_indices(pool.len(), k, pool_seed, step)
                    .into_iter()
                    .map(|i| pool[i]),
            );
        }
        out
    }
}

/// The trained network (weights of the best val epoch).
pub struct Trained {
    pub net: Net,
    /// Its weights, for `classifier.safetensors`.
    pub weights: std::collections::HashMap<String, Tensor>,
    pub best_epoch: usize,
    pub best_val_accuracy: f64,
    pub log: Vec<LogRow>,
    pub wall_time_s: f64,
}

/// Rows of a face set with their labels restricted to `attributes`.
pub struct Split<'a> {
    pub faces: &'a FaceSet,
    pub rows: Vec<usize>,
}

fn labels(faces: &FaceSet, rows: &[usize], attrs: &[usize], dev: &Device) -> Result<Tensor> {
    let all = faces.label_tensor(rows, dev)?;
    let idx = Tensor::from_vec(
        attrs.iter().map(|&a| a as u32).collect::<Vec<_>>(),
        attrs.len(),
        dev,
    )?;
    Ok(all.index_select(&idx, 1)?)
}

/// A saved classifier (`classifier.json` + `classifier.safetensors` of a
/// `train_classifier` stage): the network, the CelebA attributes of its
/// outputs, and whether it was trained on real faces only.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SavedClassifier {
    pub network: NetConfig,
    pub attributes: Vec<usize>,
    pub trained_on_real: bool,
}

impl SavedClassifier {
    pub fn save(
        &self,
        dir: &Path,
        weights: &std::collections::HashMap<String, Tensor>,
    ) -> Result<()> {
        candle_core::safetensors::save(weights, dir.join("classifier.safetensors"))?;
        std::fs::write(
            dir.join("classifier.json"),
            serde_json::to_vec_pretty(self)?,
        )?;
        Ok(())
    }

    /// The classifier saved in `dir`, if there is one.
    pub fn load(dir: &Path, dev: &Device) -> Result<Option<(SavedClassifier, Net)>> {
        let json = dir.join("classifier.json");
        if !json.exists() {
            return Ok(None);
        }
        let me: SavedClassifier = serde_json::from_slice(&std::fs::read(&json)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", json.display()))?;
        let w = candle_core::safetensors::load(dir.join("classifier.safetensors"), dev)?;
        let net = Net::new(
            &me.network,
            me.attributes.len(),
            VarBuilder::from_tensors(w, DType::F32, dev),
        )?;
        Ok(Some((me, net)))
    }

    /// P(attribute) for each image (a (B, 3, H, W) tensor at the network's size).
    pub fn probabilities(net: &Net, x: &Tensor) -> Result<Vec<Vec<f64>>> {
        let p = candle_nn::ops::sigmoid(&net.forward_t(x, false)?)?.to_dtype(DType::F64)?;
        Ok(p.to_vec2::<f64>()?)
    }
}

/// Probabilities (rows × attributes) of `net` on `split`.
pub fn predict(net: &Net, split: &Split, dev: &Device) -> Result<Vec<Vec<f64>>> {
    let mut out = Vec::with_capacity(split.rows.len());
    for c in split.rows.chunks(128) {
        let x = split.faces.images(c, dev)?;
        let p = candle_nn::ops::sigmoid(&net.forward_t(&x, false)?)?.to_dtype(DType::F64)?;
        out.extend(p.to_vec2::<f64>()?);
    }
    Ok(out)
}

/// The paper's accuracy of `net` on `split`.
pub fn accuracy(net: &Net, split: &Split, attrs: &[usize], dev: &Device) -> Result<f64> {
    let mut correct = 0.0;
    let mut n = 0usize;
    for c in split.rows.chunks(128) {
        let x = split.faces.images(c, dev)?;
        let a = labels(split.faces, c, attrs, dev)?;
        let pred = net.forward_t(&x, false)?.gt(0.0)?.to_dtype(DType::F32)?;
        let agree = pred.eq(&a)?.to_dtype(DType::F64)?.mean(1)?.sum_all()?;
        correct += agree.to_scalar::<f64>()?;
        n += c.len();
    }
    Ok(correct / n.max(1) as f64)
}

struct ClassifierPhase<'a> {
    train: &'a Split<'a>,
    val: &'a Split<'a>,
    opts: &'a Options,
    dev: Device,
    steps_per_epoch: usize,
    total_steps: usize,
    vm: VarMap,
    net: Net,
    best_vm: VarMap,
    opt: Adam,
    best_epoch: usize,
    best_val: f64,
}

impl Phase for ClassifierPhase<'_> {
    fn step(&mut self, step: usize) -> Result<Vec<(&'static str, f64)>> {
        let idx: Vec<usize> = match &self.opts.mix {
            Some(m) => m.batch(self.opts.batch_size, self.opts.seed, step),
            None => batch_indices(
                self.train.rows.len(),
                self.opts.batch_size,
                self.opts.seed,
                step,
            )
            .into_iter()
            .map(|i| self.train.rows[i])
            .collect(),
        };
        let x = self.train.faces.images(&idx, &self.dev)?;
        let a = labels(self.train.faces, &idx, &self.opts.attributes, &self.dev)?;
        let loss = bce_with_logits(&self.net.forward_t(&x, true)?, &a)?;
        self.opt.backward_step(&loss)?;
        let mut out = vec![("loss", scalar(&loss)?)];
        if step.is_multiple_of(self.steps_per_epoch) || step == self.total_steps {
            // With `steps`, the last check may come part-way into an epoch.
            let epoch = step.div_ceil(self.steps_per_epoch);
            let val = accuracy(&self.net, self.val, &self.opts.attributes, &self.dev)?;
            if val > self.best_val {
                self.best_val = val;
                self.best_epoch = epoch;
                copy_vars(&self.vm, &self.best_vm)?;
            }
            out.push(("val/accuracy", val));
            out.push(("epoch", epoch as f64));
        }
        Ok(out)
    }

    fn sample(&mut self, _path: &Path) -> Result<()> {
        Ok(())
    }

    fn nets(&self) -> Vec<(&'static str, &VarMap)> {
        vec![("classifier", &self.vm), ("best", &self.best_vm)]
    }

    fn optimizers(&mut self) -> Vec<(&'static str, &mut Adam)> {
        vec![("classifier", &mut self.opt)]
    }

    fn extra(&self) -> serde_json::Value {
        serde_json::json!({"best_epoch": self.best_epoch, "best_val": self.best_val})
    }

    fn restore_extra(&mut self, v: &serde_json::Value) -> Result<()> {
        self.best_epoch = v["best_epoch"].as_u64().unwrap_or(0) as usize;
        self.best_val = v["best_val"].as_f64().unwrap_or(f64::NEG_INFINITY);
        Ok(())
    }
}

fn copy_vars(from: &VarMap, to: &VarMap) -> Result<()> {
    let src = from.data().lock().expect("varmap lock");
    let dst = to.data().lock().expect("varmap lock");
    for (k, v) in src.iter() {
        dst[k].set(v.as_tensor())?;
    }
    Ok(())
}

/// Trains for `opts.epochs` epochs (or `opts.steps` steps), keeping the
/// best val epoch.
pub fn train(
    cfg: &NetConfig,
    opts: &Options,
    train: &Split,
    val: &Split,
    dev: &Device,
    env: &PhaseEnv,
) -> Result<Trained> {
    let k = opts.attributes.len();
    let vm = VarMap::new();
    let net = Net::new(cfg, k, VarBuilder::from_varmap(&vm, DType::F32, dev))?;
    seeded_init(&vm, opts.seed)?;
    let best_vm = VarMap::new();
    let best = Net::new(cfg, k, VarBuilder::from_varmap(&best_vm, DType::F32, dev))?;
    copy_vars(&vm, &best_vm)?;
    let opt = Adam::of(
        &vm,
        ParamsAdamW {
            lr: opts.lr,
            beta1: 0.5,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        },
    )?;
    let steps_per_epoch = train.rows.len().div_ceil(opts.batch_size).max(1);
    let total_steps = opts.steps.unwrap_or(opts.epochs * steps_per_epoch);
    let mut p = ClassifierPhase {
        train,
        val,
        opts,
        dev: dev.clone(),
        steps_per_epoch,
        total_steps,
        vm,
        net,
        best_vm,
        opt,
        best_epoch: 0,
        best_val: f64::NEG_INFINITY,
    };
    // A checkpoint at the end of every epoch (where the best-val copy is
    // taken), so that a killed run loses at most one epoch.
    let env = PhaseEnv {
        cadence: super::Cadence {
            checkpoint_every: steps_per_epoch,
            ..env.cadence
        },
        ..*env
    };
    let r = run_phase(&env, "classifier", total_steps, &mut p)?;
    Ok(Trained {
        weights: super::frozen(&p.best_vm),
        net: best,
        best_epoch: p.best_epoch,
        best_val_accuracy: p.best_val,
        log: r.log,
        wall_time_s: r.wall_time_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_takes_the_fraction_from_each_pool_and_visits_every_row() {
        let real: Vec<usize> = (0..30).collect();
        let added: Vec<usize> = (100..110).collect();
        let m = Mix::new(real.clone(), added.clone(), 0.75, 8);
        assert_eq!(m.real, 6);
        let mut seen_real = std::collections::HashSet::new();
        let mut seen_added = std::collections::HashSet::new();
        for step in 1..=5 {
            let b = m.batch(8, 7, step);
            assert_eq!(b.len(), 8);
            assert_eq!(b.iter().filter(|&&r| r < 100).count(), 6, "step {step}");
            seen_real.extend(b.iter().copied().filter(|&r| r < 100));
            seen_added.extend(b.iter().copied().filter(|&r| r >= 100));
        }
        // 5 steps × 6 = one pass over the 30 real rows, each once; the 10
        // added rows (2 a step) are a full pass too.
        assert_eq!(seen_real.len(), 30);
        assert_eq!(seen_added.len(), 10);
        // Reproducible from the seed, different for another seed.
        assert_eq!(m.batch(8, 7, 3), m.batch(8, 7, 3));
        assert_ne!(m.batch(8, 7, 3), m.batch(8, 8, 3));
    }

    #[test]
    fn mix_keeps_one_row_of_each_pool() {
        assert_eq!(Mix::new(vec![0], vec![1], 0.99, 16).real, 15);
        assert_eq!(Mix::new(vec![0], vec![1], 0.01, 16).real, 1);
        assert_eq!(Mix::new(vec![0], vec![1], 0.5, 1).real, 1);
    }
}
