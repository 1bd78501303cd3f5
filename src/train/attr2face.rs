//! Training of the "for free" generator (Liu et al. Sec. III, V-B) in three
//! checkpointed phases, plus its ablations:
//!
//! 1. `autoencoder`: G_en + G_de with L1 reconstruction and the BEGAN
//!    adversarial term (eq. 3–6). With `L(v) = |v − D(v)|₁` (D the BEGAN
//!    autoencoder), D minimises `L(x) − k_t·L(x̂)`, the autoencoder
//!    minimises `L_rec + k_t·L(x̂)` (eq. 3: the adversarial term weighted by
//!    k_t), `k_{t+1} = clip(k_t + λ_k(γ·L(x) − L(x̂)), 0, 1)` (eq. 6, in
//!    BEGAN's form) and the convergence measure is
//!    `M = L(x) + |γ·L(x) − L(x̂)|`.
//! 2. `classifier`: C with the multi-label cross-entropy of eq. 8.
//! 3. `mapping`: Φ with the five losses of eq. 10–17, G_en, G_de and C
//!    frozen; D_fc and D_conv trained alongside (eq. 15–16). The adversarial
//!    terms use the non-saturating form (Φ minimises −log D(fake)). Eq. 10's
//!    L1 is the mean absolute pixel error (as BEGAN's); eq. 11 is the squared
//!    L2 norm over the embedding's dimensions, averaged over the batch.
//!
//! Ablations: `perceptual_loss = false` drops L_p (Table 2 "W/o Perceptual
//! Loss"); `model = dcgan` trains Φ + a fresh G_de against D_conv with
//! leaky ReLU (DCGAN's discriminator, no batch norm) from scratch with the
//! adversarial and image-reconstruction terms only (footnote 4);
//! `recursive_times = R > 1` (Table 4) then repeats, R − 1 times, C
//! fine-tuning on half real, half generated batches (label vectors of the
//! augmentation plan, or single-attribute flips of the training labels
//! without one) followed by more Φ training against the new C.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Result, bail};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Optimizer, VarBuilder, VarMap};

use crate::train::adam::Adam;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::losses::{bce_const, bce_with_logits, l1, scalar, squared_l2};
use super::{LogRow, Phase, PhaseEnv, batch_indices, log_row as row, run_phase, steps_for_epochs};
use super::{frozen, vb_of};
use crate::data::celeba::Labels;
use crate::data::schema::N_ATTRIBUTES;
use crate::data::tensors::{FaceSet, grid, labels_tensor, tensor_to_rgb};
use crate::models::attr2face::Config as Attr2faceNet;
use crate::models::began::{Autoencoder, Decoder, Encoder};
use crate::models::classifier::Classifier;
use crate::models::discriminator::{ConvDiscriminator, FcDiscriminator};
use crate::models::mapping::Mapping;
use crate::models::{Activation, seeded_init};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    /// The paper's method.
    Attr2face,
    /// Footnote 4: Φ + decoder + DCGAN discriminator, from scratch.
    Dcgan,
}

impl Model {
    pub fn name(self) -> &'static str {
        match self {
            Model::Attr2face => "attr2face",
            Model::Dcgan => "dcgan",
        }
    }
}

fn default_lr() -> f64 {
    1e-4
}

/// Phase 1 (eq. 3–6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutoencoderOptions {
    /// Passes over the training rows; BEGAN does not state one, 10 is ours.
    pub epochs: f64,
    /// Overrides `epochs` when set.
    pub steps: Option<usize>,
    pub lr: f64,
    /// γ of eq. 6.
    pub gamma: f64,
    /// λ_k of eq. 6.
    pub lambda_k: f64,
}

impl Default for AutoencoderOptions {
    fn default() -> Self {
        AutoencoderOptions {
            epochs: 10.0,
            steps: None,
            lr: default_lr(),
            gamma: 0.5,
            lambda_k: 0.001,
        }
    }
}

/// Phase 2 (eq. 8): 10 epochs at lr 1e-4 in the paper (Sec. V-B).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifierOptions {
    pub epochs: f64,
    pub steps: Option<usize>,
    pub lr: f64,
}

impl Default for ClassifierOptions {
    fn default() -> Self {
        ClassifierOptions {
            epochs: 10.0,
            steps: None,
            lr: default_lr(),
        }
    }
}

/// Phase 3 (eq. 10–17): 8 epochs, lr 1e-4 halved every 200k steps, λ = 1, 10, 1, 10.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MappingOptions {
    pub epochs: f64,
    pub steps: Option<usize>,
    pub lr: f64,
    pub lr_halve_every: usize,
    /// Learning rate of D_fc and D_conv.
    pub discriminator_lr: f64,
    /// Weight of the image adversarial loss (eq. 17).
    pub lambda_1: f64,
    /// Weight of the image reconstruction loss.
    pub lambda_2: f64,
    /// Weight of the embedding reconstruction loss.
    pub lambda_3: f64,
    /// Weight of the perceptual loss.
    pub lambda_4: f64,
}

impl Default for MappingOptions {
    fn default() -> Self {
        MappingOptions {
            epochs: 8.0,
            steps: None,
            lr: default_lr(),
            lr_halve_every: 200_000,
            discriminator_lr: default_lr(),
            lambda_1: 1.0,
            lambda_2: 10.0,
            lambda_3: 1.0,
            lambda_4: 10.0,
        }
    }
}

/// Everything the training needs besides data and networks' sizes.
#[derive(Debug, Clone)]
pub struct Options {
    pub model: Model,
    pub batch_size: usize,
    pub perceptual_loss: bool,
    pub recursive_times: usize,
    pub seed: u64,
    pub autoencoder: AutoencoderOptions,
    pub classifier: ClassifierOptions,
    pub mapping: MappingOptions,
}

/// Training data: rows of `faces` plus the label vectors used for the
/// generated half of recursive rounds.
pub struct Attr2faceSet<'a> {
    pub faces: &'a FaceSet,
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    pub plan_labels: Vec<Labels>,
}

/// Phase 1's entry in the stage summary (`autoencoder`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoencoderSummary {
    pub steps: usize,
    pub val_rec_l1_init: Option<f64>,
    pub val_rec_l1: f64,
    pub k_t: f64,
    pub wall_time_s: f64,
}

/// Phase 2's entry (`classifier`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierSummary {
    pub steps: usize,
    pub val_accuracy: f64,
    pub val_majority_accuracy: f64,
    pub wall_time_s: f64,
}

/// Phase 3's entry (`mapping`, or `dcgan` for the ablation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MappingSummary {
    pub steps: usize,
    pub val_rec_emb_init: Option<f64>,
    pub val_rec_emb: Option<f64>,
    pub wall_time_s: f64,
}

/// The summary entries of the three phases, read back as written.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PhaseSummaries {
    pub autoencoder: Option<AutoencoderSummary>,
    pub classifier: Option<ClassifierSummary>,
    pub mapping: Option<MappingSummary>,
    pub dcgan: Option<MappingSummary>,
}

/// What training produced.
pub struct Trained {
    pub log: Vec<LogRow>,
    pub summary: serde_json::Value,
    /// `mapping.*` and `decoder.*`: everything needed to draw G_de(Φ(a)).
    pub generator: HashMap<String, Tensor>,
    /// C after the last round.
    pub classifier: HashMap<String, Tensor>,
    /// `encoder.*` and `decoder.*` of the trained autoencoder (attr2face
    /// only): reconstructions for evaluation, embeddings for linear probes.
    pub autoencoder: Option<HashMap<String, Tensor>>,
}

fn new_net<T>(
    seed: u64,
    dev: &Device,
    build: impl FnOnce(VarBuilder) -> candle_core::Result<T>,
) -> Result<(VarMap, T)> {
    let vm = VarMap::new();
    let net = build(VarBuilder::from_varmap(&vm, DType::F32, dev))?;
    seeded_init(&vm, seed)?;
    Ok((vm, net))
}

/// Mean over rows of `f(batch)`, weighting by batch size.
fn mean_over(rows: &[usize], mut f: impl FnMut(&[usize]) -> Result<f64>) -> Result<f64> {
    let mut sum = 0.0;
    for c in rows.chunks(64) {
        sum += f(c)? * c.len() as f64;
    }
    Ok(sum / rows.len().max(1) as f64)
}

/// The paper's accuracy (Sec. V-D): mean over samples of the fraction of
/// the 40 attributes predicted right (logit > 0).
pub fn label_agreement(logits: &Tensor, labels: &Tensor) -> Result<Vec<f64>> {
    let pred = logits.gt(0.0)?.to_dtype(DType::F32)?;
    let agree = pred.eq(labels)?.to_dtype(DType::F32)?.mean(1)?;
    Ok(agree.to_dtype(DType::F64)?.to_vec1::<f64>()?)
}

// ---------------------------------------------------------------- phase 1

struct AutoencoderPhase<'a> {
    data: &'a Attr2faceSet<'a>,
    dev: Device,
    opts: AutoencoderOptions,
    batch: usize,
    seed: u64,
    gen_vm: VarMap,
    enc: Encoder,
    dec: Decoder,
    disc_vm: VarMap,
    disc: Autoencoder,
    opt_g: Adam,
    opt_d: Adam,
    k: f64,
    sample_x: Tensor,
}

impl AutoencoderPhase<'_> {
    fn val_l1(&self) -> Result<f64> {
        let rows: Vec<usize> = self.data.val.iter().copied().take(256).collect();
        mean_over(&rows, |c| {
            let x = self.data.faces.images(c, &self.dev)?;
            let y = self.dec.forward(&self.enc.forward(&x)?)?;
            Ok(scalar(&l1(&y, &x)?)?)
        })
    }
}

impl Phase for AutoencoderPhase<'_> {
    fn step(&mut self, step: usize) -> Result<Vec<(&'static str, f64)>> {
        let idx: Vec<usize> = batch_indices(self.data.train.len(), self.batch, self.seed, step)
            .into_iter()
            .map(|i| self.data.train[i])
            .collect();
        let x = self.data.faces.images(&idx, &self.dev)?;
        let xh = self.dec.forward(&self.enc.forward(&x)?)?;
        let rec = l1(&xh, &x)?;
        // D(v) = |v − dec(enc(v))|: low on real images, high on reconstructions.
        // Real and (detached) fake images go through D in one batch.
        let b = x.dim(0)?;
        let both = Tensor::cat(&[&x, &xh.detach()], 0)?;
        let d_out = self.disc.forward(&both)?;
        let d_real = l1(&d_out.narrow(0, 0, b)?, &x)?;
        let d_fake = l1(&d_out.narrow(0, b, b)?, &both.narrow(0, b, b)?)?;
        let loss_d = (&d_real - (&d_fake * self.k)?)?;
        // With k_t = 0 (its start value, and wherever the clip holds it) the
        // adversarial term of eq. 3 has no weight: skip its backward pass.
        let loss_g = if self.k > 0.0 {
            let g_adv = l1(&self.disc.forward(&xh)?, &xh)?;
            (&rec + (&g_adv * self.k)?)?
        } else {
            rec.clone()
        };
        let grads_d = loss_d.backward()?;
        let grads_g = loss_g.backward()?;
        self.opt_d.step(&grads_d)?;
        self.opt_g.step(&grads_g)?;
        // L(x̂) under the pre-update D is also the generator's adversarial term.
        let (r, f) = (scalar(&d_real)?, scalar(&d_fake)?);
        let g = f;
        let balance = self.opts.gamma * r - g;
        self.k = (self.k + self.opts.lambda_k * balance).clamp(0.0, 1.0);
        Ok(vec![
            ("AE/rec_l1", scalar(&rec)?),
            ("AE/adv", g),
            ("D/real", r),
            ("D/fake", f),
            ("D/loss", scalar(&loss_d)?),
            ("k_t", self.k),
            ("M", r + balance.abs()),
        ])
    }

    fn sample(&mut self, path: &Path) -> Result<()> {
        let y = self.dec.forward(&self.enc.forward(&self.sample_x)?)?;
        let mut imgs = tensor_to_rgb(&self.sample_x)?;
        let n = imgs.len();
        imgs.extend(tensor_to_rgb(&y)?);
        grid(&imgs, n).save(path)?;
        Ok(())
    }

    fn nets(&self) -> Vec<(&'static str, &VarMap)> {
        vec![
            ("autoencoder", &self.gen_vm),
            ("discriminator", &self.disc_vm),
        ]
    }

    fn optimizers(&mut self) -> Vec<(&'static str, &mut Adam)> {
        vec![
            ("autoencoder", &mut self.opt_g),
            ("discriminator", &mut self.opt_d),
        ]
    }

    fn extra(&self) -> serde_json::Value {
        serde_json::json!({ "k_t": self.k })
    }

    fn restore_extra(&mut self, v: &serde_json::Value) -> Result<()> {
        self.k = v["k_t"].as_f64().unwrap_or(0.0);
        Ok(())
    }
}

// ---------------------------------------------------------------- phase 2

/// A source of generated images for the recursive rounds: G_de(Φ(a)).
struct FrozenGenerator {
    mapping: Mapping,
    decoder: Decoder,
}

impl FrozenGenerator {
    fn generate(&self, a: &Tensor) -> Result<Tensor> {
        Ok(self.decoder.forward(&self.mapping.forward(a)?)?.detach())
    }
}

struct ClassifierPhase<'a> {
    data: &'a Attr2faceSet<'a>,
    dev: Device,
    batch: usize,
    seed: u64,
    vm: VarMap,
    net: Classifier,
    opt: Adam,
    /// Recursive rounds: half of each batch is generated.
    generated: Option<(FrozenGenerator, Vec<Labels>)>,
}

impl ClassifierPhase<'_> {
    fn val_accuracy(&self) -> Result<f64> {
        let rows: Vec<usize> = self.data.val.iter().copied().take(4096).collect();
        mean_over(&rows, |c| {
            let x = self.data.faces.images(c, &self.dev)?;
            let a = self.data.faces.label_tensor(c, &self.dev)?;
            let acc = label_agreement(&self.net.forward(&x)?, &a)?;
            Ok(acc.iter().sum::<f64>() / acc.len() as f64)
        })
    }
}

impl Phase for ClassifierPhase<'_> {
    fn step(&mut self, step: usize) -> Result<Vec<(&'static str, f64)>> {
        let real_n = if self.generated.is_some() {
            self.batch.div_ceil(2)
        } else {
            self.batch
        };
        let idx: Vec<usize> = batch_indices(self.data.train.len(), real_n, self.seed, step)
            .into_iter()
            .map(|i| self.data.train[i])
            .collect();
        let mut x = self.data.faces.images(&idx, &self.dev)?;
        let mut a = self.data.faces.label_tensor(&idx, &self.dev)?;
        if let Some((g, pool)) = &self.generated {
            let gi = batch_indices(pool.len(), self.batch - real_n, self.seed ^ 0xA5A5, step);
            let labels: Vec<Labels> = gi.iter().map(|&i| pool[i]).collect();
            let ag = labels_tensor(&labels, &self.dev)?;
            x = Tensor::cat(&[&x, &g.generate(&ag)?], 0)?;
            a = Tensor::cat(&[&a, &ag], 0)?;
        }
        let logits = self.net.forward(&x)?;
        let loss = bce_with_logits(&logits, &a)?;
        self.opt.backward_step(&loss)?;
        let acc = label_agreement(&logits, &a)?;
        Ok(vec![
            ("C/loss", scalar(&loss)?),
            ("C/accuracy", acc.iter().sum::<f64>() / acc.len() as f64),
        ])
    }

    fn sample(&mut self, _path: &Path) -> Result<()> {
        Ok(())
    }

    fn nets(&self) -> Vec<(&'static str, &VarMap)> {
        vec![("classifier", &self.vm)]
    }

    fn optimizers(&mut self) -> Vec<(&'static str, &mut Adam)> {
        vec![("classifier", &mut self.opt)]
    }
}

// ---------------------------------------------------------------- phase 3

struct MappingPhase<'a> {
    data: &'a Attr2faceSet<'a>,
    dev: Device,
    opts: MappingOptions,
    perceptual: bool,
    batch: usize,
    seed: u64,
    /// Φ (and, from scratch, the decoder) — the trained generator.
    gen_vm: VarMap,
    mapping: Mapping,
    decoder: Decoder,
    encoder: Option<Encoder>,
    classifier: Option<Classifier>,
    d_vm: VarMap,
    d_fc: Option<FcDiscriminator>,
    d_conv: ConvDiscriminator,
    opt_g: Adam,
    opt_d: Adam,
    sample_rows: Vec<usize>,
}

impl MappingPhase<'_> {
    /// Eq. 11 between Φ(a) and G_en(x) on val rows.
    fn val_rec_emb(&self) -> Result<Option<f64>> {
        let Some(enc) = &self.encoder else {
            return Ok(None);
        };
        let rows: Vec<usize> = self.data.val.iter().copied().take(1024).collect();
        Ok(Some(mean_over(&rows, |c| {
            let x = self.data.faces.images(c, &self.dev)?;
            let a = self.data.faces.label_tensor(c, &self.dev)?;
            Ok(scalar(&squared_l2(
                &self.mapping.forward(&a)?,
                &enc.forward(&x)?,
            )?)?)
        })?))
    }
}

impl Phase for MappingPhase<'_> {
    fn step(&mut self, step: usize) -> Result<Vec<(&'static str, f64)>> {
        let o = &self.opts;
        let halvings = (step - 1) / o.lr_halve_every.max(1);
        self.opt_g
            .set_learning_rate(o.lr * 0.5f64.powi(halvings.min(60) as i32));
        let idx: Vec<usize> = batch_indices(self.data.train.len(), self.batch, self.seed, step)
            .into_iter()
            .map(|i| self.data.train[i])
            .collect();
        let x = self.data.faces.images(&idx, &self.dev)?;
        let a = self.data.faces.label_tensor(&idx, &self.dev)?;
        let z = match &self.encoder {
            Some(e) => Some(e.forward(&x)?),
            None => None,
        };
        let zh = self.mapping.forward(&a)?;
        let xh = self.decoder.forward(&zh)?;

        // Discriminator step (eq. 15–16).
        let mut loss_d_conv = (bce_const(&self.d_conv.forward(&x, &a)?, 1.0)?
            + bce_const(&self.d_conv.forward(&xh.detach(), &a)?, 0.0)?)?;
        let mut out = Vec::new();
        if let (Some(d_fc), Some(z)) = (&self.d_fc, &z) {
            let loss_d_fc = (bce_const(&d_fc.forward(z, &a)?, 1.0)?
                + bce_const(&d_fc.forward(&zh.detach(), &a)?, 0.0)?)?;
            out.push(("D/fc", scalar(&loss_d_fc)?));
            loss_d_conv = (loss_d_conv + loss_d_fc)?;
        }
        out.push(("D/loss", scalar(&loss_d_conv)?));
        self.opt_d.backward_step(&loss_d_conv)?;

        // Generator step (eq. 17).
        let adv_conv = bce_const(&self.d_conv.forward(&xh, &a)?, 1.0)?;
        let rec_img = l1(&xh, &x)?;
        let mut loss = ((&adv_conv * o.lambda_1)? + (&rec_img * o.lambda_2)?)?;
        out.push(("Phi/adv_conv", scalar(&adv_conv)?));
        out.push(("Phi/rec_img", scalar(&rec_img)?));
        if let (Some(d_fc), Some(z)) = (&self.d_fc, &z) {
            let adv_fc = bce_const(&d_fc.forward(&zh, &a)?, 1.0)?;
            let rec_emb = squared_l2(&zh, z)?;
            loss = ((loss + &adv_fc)? + (&rec_emb * o.lambda_3)?)?;
            out.push(("Phi/adv_fc", scalar(&adv_fc)?));
            out.push(("Phi/rec_emb", scalar(&rec_emb)?));
        }
        if let (true, Some(c)) = (self.perceptual, &self.classifier) {
            let p = bce_with_logits(&c.forward(&xh)?, &a)?;
            loss = (loss + (&p * o.lambda_4)?)?;
            out.push(("Phi/perceptual", scalar(&p)?));
        }
        self.opt_g.backward_step(&loss)?;
        out.insert(0, ("Phi/loss", scalar(&loss)?));
        Ok(out)
    }

    fn sample(&mut self, path: &Path) -> Result<()> {
        let x = self.data.faces.images(&self.sample_rows, &self.dev)?;
        let a = self.data.faces.label_tensor(&self.sample_rows, &self.dev)?;
        let y = self.decoder.forward(&self.mapping.forward(&a)?)?;
        let mut imgs = tensor_to_rgb(&x)?;
        let n = imgs.len();
        imgs.extend(tensor_to_rgb(&y)?);
        grid(&imgs, n).save(path)?;
        Ok(())
    }

    fn nets(&self) -> Vec<(&'static str, &VarMap)> {
        vec![("generator", &self.gen_vm), ("discriminators", &self.d_vm)]
    }

    fn optimizers(&mut self) -> Vec<(&'static str, &mut Adam)> {
        vec![
            ("generator", &mut self.opt_g),
            ("discriminators", &mut self.opt_d),
        ]
    }
}

// ---------------------------------------------------------------- driver

fn steps(epochs: f64, fixed: Option<usize>, n: usize, batch: usize) -> usize {
    fixed.unwrap_or_else(|| steps_for_epochs(epochs, n, batch))
}

/// One training run's shared state: what every phase reads, and the log
/// rows and summary they add to.
struct Run<'a> {
    cfg: &'a Attr2faceNet,
    opts: &'a Options,
    data: &'a Attr2faceSet<'a>,
    dev: &'a Device,
    env: &'a PhaseEnv<'a>,
    /// Faces of the fixed sample grids (val rows when there are any).
    sample_rows: Vec<usize>,
    log: Vec<LogRow>,
    summary: serde_json::Map<String, serde_json::Value>,
}

/// Runs every phase (resuming where `env.dir` has checkpoints).
pub fn train(
    cfg: &Attr2faceNet,
    opts: &Options,
    data: &Attr2faceSet,
    dev: &Device,
    env: &PhaseEnv,
) -> Result<Trained> {
    if data.train.is_empty() {
        bail!("no training rows");
    }
    let sample_rows: Vec<usize> = if data.val.is_empty() {
        data.train.iter().copied().take(8).collect()
    } else {
        data.val.iter().copied().take(8).collect()
    };
    let mut run = Run {
        cfg,
        opts,
        data,
        dev,
        env,
        sample_rows,
        log: Vec::new(),
        summary: serde_json::Map::new(),
    };
    // Phase 1: the autoencoder (the paper's method only).
    let autoencoder = if opts.model == Model::Attr2face {
        Some(run.autoencoder()?)
    } else {
        None
    };
    // Phase 2: the classifier.
    let mut cp = run.classifier()?;
    // Phase 3: Φ (or Φ + decoder from scratch for the DCGAN ablation).
    let mut mp = run.mapping(autoencoder.as_ref(), &cp)?;
    // Recursive rounds (Table 4).
    run.recursive_rounds(autoencoder.as_ref(), &mut cp, &mut mp)?;
    // The generator to ship: Φ and the decoder it was trained against.
    let mut generator = frozen(&mp.gen_vm);
    if let Some(ae) = &autoencoder {
        for (k, v) in ae {
            if k.starts_with("decoder.") {
                generator.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(Trained {
        log: run.log,
        summary: run.summary.into(),
        generator,
        classifier: frozen(&cp.vm),
        autoencoder,
    })
}

impl<'a> Run<'a> {
    /// Phase 1: G_en, G_de against the BEGAN discriminator; returns the
    /// trained encoder and decoder weights.
    fn autoencoder(&mut self) -> Result<HashMap<String, Tensor>> {
        let (cfg, opts, data, dev, env) = (self.cfg, self.opts, self.data, self.dev, self.env);
        let (n, bs, seed) = (data.train.len(), opts.batch_size, opts.seed);
        let (log, summary, sample_rows) = (&mut self.log, &mut self.summary, &self.sample_rows);
        let (gen_vm, (enc, dec)) = new_net(seed, dev, |vb| {
            Ok((
                Encoder::new(&cfg.autoencoder, vb.pp("encoder"))?,
                Decoder::new(&cfg.autoencoder, vb.pp("decoder"))?,
            ))
        })?;
        let (disc_vm, disc) = new_net(seed + 1, dev, |vb| Autoencoder::new(&cfg.autoencoder, vb))?;
        let mut p = AutoencoderPhase {
            data,
            dev: dev.clone(),
            opts: opts.autoencoder.clone(),
            batch: bs,
            seed: seed + 11,
            opt_g: Adam::with_betas(&gen_vm, opts.autoencoder.lr, (0.5, 0.999))?,
            opt_d: Adam::with_betas(&disc_vm, opts.autoencoder.lr, (0.5, 0.999))?,
            gen_vm,
            enc,
            dec,
            disc_vm,
            disc,
            k: 0.0,
            sample_x: data.faces.images(sample_rows, dev)?,
        };
        let total = steps(opts.autoencoder.epochs, opts.autoencoder.steps, n, bs);
        let has_val = !data.val.is_empty();
        // Measured on the seeded initial weights, also when the phase
        // resumes or finished before: the log is the same either way.
        let init = if has_val { Some(p.val_l1()?) } else { None };
        let r = run_phase(env, "autoencoder", total, &mut p)?;
        log.extend(r.log);
        if has_val {
            let fin = p.val_l1()?;
            let s = AutoencoderSummary {
                steps: total,
                val_rec_l1_init: init,
                val_rec_l1: fin,
                k_t: p.k,
                wall_time_s: r.wall_time_s,
            };
            summary.insert("autoencoder".into(), serde_json::to_value(s)?);
            if let Some(i) = init {
                log.push(row("autoencoder", 0, "val/rec_l1", i));
            }
            log.push(row("autoencoder", total, "val/rec_l1", fin));
        }
        Ok(frozen(&p.gen_vm))
    }

    /// Phase 2: the classifier C on real faces.
    fn classifier(&mut self) -> Result<ClassifierPhase<'a>> {
        let (cfg, opts, data, dev, env) = (self.cfg, self.opts, self.data, self.dev, self.env);
        let (n, bs, seed) = (data.train.len(), opts.batch_size, opts.seed);
        let (log, summary) = (&mut self.log, &mut self.summary);
        let (c_vm, c_net) = new_net(seed + 2, dev, |vb| Classifier::new(&cfg.classifier, vb))?;
        let c_steps = steps(opts.classifier.epochs, opts.classifier.steps, n, bs);
        let mut cp = ClassifierPhase {
            data,
            dev: dev.clone(),
            batch: bs,
            seed: seed + 12,
            opt: Adam::with_betas(&c_vm, opts.classifier.lr, (0.5, 0.999))?,
            vm: c_vm,
            net: c_net,
            generated: None,
        };
        let r = run_phase(env, "classifier", c_steps, &mut cp)?;
        log.extend(r.log);
        if !data.val.is_empty() {
            let acc = cp.val_accuracy()?;
            let majority = majority_accuracy(data);
            log.push(row("classifier", c_steps, "val/accuracy", acc));
            log.push(row(
                "classifier",
                c_steps,
                "val/majority_accuracy",
                majority,
            ));
            let s = ClassifierSummary {
                steps: c_steps,
                val_accuracy: acc,
                val_majority_accuracy: majority,
                wall_time_s: r.wall_time_s,
            };
            summary.insert("classifier".into(), serde_json::to_value(s)?);
        }
        Ok(cp)
    }

    /// Phase 3: Φ against D_fc and D_conv, with G_de frozen (or Φ + G_de
    /// from scratch for the DCGAN ablation).
    fn mapping(
        &mut self,
        autoencoder: Option<&HashMap<String, Tensor>>,
        cp: &ClassifierPhase,
    ) -> Result<MappingPhase<'a>> {
        let (cfg, opts, data, dev, env) = (self.cfg, self.opts, self.data, self.dev, self.env);
        let (n, bs, seed) = (data.train.len(), opts.batch_size, opts.seed);
        let (log, summary, sample_rows) = (&mut self.log, &mut self.summary, &self.sample_rows);
        let m_steps = steps(opts.mapping.epochs, opts.mapping.steps, n, bs);
        let from_scratch = opts.model == Model::Dcgan;
        let (gen_vm, (mapping, decoder)) = if let Some(ae) = &autoencoder {
            let (vm, phi) = new_net(seed + 3, dev, |vb| {
                Mapping::new(&cfg.mapping, vb.pp("mapping"))
            })?;
            let dec = Decoder::new(&cfg.autoencoder, vb_of(ae, dev).pp("decoder"))?;
            (vm, (phi, dec))
        } else {
            new_net(seed + 3, dev, |vb| {
                Ok((
                    Mapping::new(&cfg.mapping, vb.pp("mapping"))?,
                    Decoder::new(&cfg.autoencoder, vb.pp("decoder"))?,
                ))
            })?
        };
        let d_conv_cfg = if from_scratch {
            crate::models::classifier::Config {
                activation: Activation::LeakyRelu,
                ..cfg.d_conv.clone()
            }
        } else {
            cfg.d_conv.clone()
        };
        let (d_vm, (d_fc, d_conv)) = new_net(seed + 4, dev, |vb| {
            let d_fc = if from_scratch {
                None
            } else {
                Some(FcDiscriminator::new(&cfg.d_fc, vb.pp("d_fc"))?)
            };
            Ok((d_fc, ConvDiscriminator::new(&d_conv_cfg, vb.pp("d_conv"))?))
        })?;
        let encoder = match &autoencoder {
            Some(ae) => Some(Encoder::new(
                &cfg.autoencoder,
                vb_of(ae, dev).pp("encoder"),
            )?),
            None => None,
        };
        let classifier_frozen = frozen(&cp.vm);
        let mut mp = MappingPhase {
            data,
            dev: dev.clone(),
            opts: opts.mapping.clone(),
            perceptual: opts.perceptual_loss && !from_scratch,
            batch: bs,
            seed: seed + 13,
            opt_g: Adam::with_betas(&gen_vm, opts.mapping.lr, (0.5, 0.999))?,
            opt_d: Adam::with_betas(&d_vm, opts.mapping.discriminator_lr, (0.5, 0.999))?,
            gen_vm,
            mapping,
            decoder,
            encoder,
            classifier: Some(Classifier::new(
                &cfg.classifier,
                vb_of(&classifier_frozen, dev),
            )?),
            d_vm,
            d_fc,
            d_conv,
            sample_rows: sample_rows.clone(),
        };
        let phase3 = if from_scratch { "dcgan" } else { "mapping" };
        let init = mp.val_rec_emb()?;
        let r = run_phase(env, phase3, m_steps, &mut mp)?;
        log.extend(r.log);
        let fin = mp.val_rec_emb()?;
        if let Some(i) = init {
            log.push(row(phase3, 0, "val/rec_emb", i));
        }
        if let Some(f) = fin {
            log.push(row(phase3, m_steps, "val/rec_emb", f));
        }
        let s = MappingSummary {
            steps: m_steps,
            val_rec_emb_init: init,
            val_rec_emb: fin,
            wall_time_s: r.wall_time_s,
        };
        summary.insert(phase3.into(), serde_json::to_value(s)?);
        Ok(mp)
    }

    /// Recursive rounds (Table 4): C retrained on real and generated faces,
    /// then Φ against the new C, `recursive_times − 1` times.
    fn recursive_rounds(
        &mut self,
        autoencoder: Option<&HashMap<String, Tensor>>,
        cp: &mut ClassifierPhase<'a>,
        mp: &mut MappingPhase<'a>,
    ) -> Result<()> {
        let (cfg, opts, data, dev, env) = (self.cfg, self.opts, self.data, self.dev, self.env);
        let (n, bs, seed) = (data.train.len(), opts.batch_size, opts.seed);
        let (log, summary) = (&mut self.log, &mut self.summary);
        let c_steps = steps(opts.classifier.epochs, opts.classifier.steps, n, bs);
        let m_steps = steps(opts.mapping.epochs, opts.mapping.steps, n, bs);
        let phase3 = if opts.model == Model::Dcgan {
            "dcgan"
        } else {
            "mapping"
        };
        let pool: Vec<Labels> = if data.plan_labels.is_empty() {
            let mut rng = ChaCha8Rng::seed_from_u64(seed + 5);
            data.train
                .iter()
                .map(|&i| data.faces.labels[i] ^ (1u64 << rng.random_range(0..N_ATTRIBUTES)))
                .collect()
        } else {
            data.plan_labels.clone()
        };
        for round in 2..=opts.recursive_times {
            let dec_t = frozen(&mp.gen_vm);
            let generator_r = FrozenGenerator {
                mapping: Mapping::new(&cfg.mapping, vb_of(&dec_t, dev).pp("mapping"))?,
                decoder: match &autoencoder {
                    Some(ae) => Decoder::new(&cfg.autoencoder, vb_of(ae, dev).pp("decoder"))?,
                    None => Decoder::new(&cfg.autoencoder, vb_of(&dec_t, dev).pp("decoder"))?,
                },
            };
            cp.generated = Some((generator_r, pool.clone()));
            cp.opt = Adam::with_betas(&cp.vm, opts.classifier.lr, (0.5, 0.999))?;
            let name_c = format!("classifier_round{round}");
            let r = run_phase(env, &name_c, c_steps, cp)?;
            log.extend(r.log);
            cp.generated = None;
            let c_t = frozen(&cp.vm);
            mp.classifier = Some(Classifier::new(&cfg.classifier, vb_of(&c_t, dev))?);
            mp.opt_g = Adam::with_betas(&mp.gen_vm, opts.mapping.lr, (0.5, 0.999))?;
            mp.opt_d = Adam::with_betas(&mp.d_vm, opts.mapping.discriminator_lr, (0.5, 0.999))?;
            let name_m = format!("{phase3}_round{round}");
            let r = run_phase(env, &name_m, m_steps, mp)?;
            log.extend(r.log);
            let mut round_summary = serde_json::Map::new();
            if !data.val.is_empty() {
                let acc = cp.val_accuracy()?;
                log.push(row(&name_c, c_steps, "val/accuracy", acc));
                round_summary.insert("val_accuracy".into(), acc.into());
            }
            if let Some(f) = mp.val_rec_emb()? {
                log.push(row(&name_m, m_steps, "val/rec_emb", f));
                round_summary.insert("val_rec_emb".into(), f.into());
            }
            summary.insert(format!("round{round}"), round_summary.into());
        }
        Ok(())
    }
}

/// Accuracy on val of predicting every attribute's majority value on train.
pub fn majority_accuracy(data: &Attr2faceSet) -> f64 {
    let mut pos = [0usize; N_ATTRIBUTES];
    for &i in &data.train {
        for (k, p) in pos.iter_mut().enumerate() {
            *p += ((data.faces.labels[i] >> k) & 1) as usize;
        }
    }
    let n = data.train.len();
    let majority: Vec<bool> = pos.iter().map(|&p| 2 * p > n).collect();
    let mut correct = 0usize;
    for &i in &data.val {
        for (k, &m) in majority.iter().enumerate() {
            correct += (((data.faces.labels[i] >> k) & 1 == 1) == m) as usize;
        }
    }
    correct as f64 / (data.val.len() * N_ATTRIBUTES).max(1) as f64
}
