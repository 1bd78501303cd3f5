//! SeCGAN (Sun et al., Sec. 3, Algorithm 1 of App. A.1): an RGB branch and a
//! semantic branch trained side by side, tied by a semantic consistency loss
//! through a frozen face parser P.
//!
//! - G_rgb / D_rgb: StarGAN's translator and critic on images; G_seg / D_seg
//!   the same layouts on the 12 segment channels, G_seg ending in a softmax
//!   ([`crate::models::translator`], [`crate::models::critic`]). Both
//!   generators take y_diff = y_trg − y_src ∈ {−1, 0, 1}; targets are the
//!   batch's labels in a shuffled order (as our StarGAN).
//! - s_in is the one-hot arg-max of P(x_in) at the generator's size. P is
//!   built from plain tensors (in no optimiser, no variables): its weights
//!   cannot change, and [`Trained::parser_sha256`] records their hash after
//!   training for the caller to compare.
//! - D_rgb (eq. 13): WGAN-GP (eq. 1, λ_gp) + λ_cls·BCE of its class head on
//!   real faces against y_src (eq. 3; the printed "(1 − y)·(1 − log D)" read
//!   as the ordinary (1 − y)·log(1 − D)). D_seg (eq. 15): the same on one-hot
//!   s_in (real) and G_seg's soft outputs (fake), the penalty on
//!   interpolations between the two (eq. 6, 8).
//! - G_rgb (eq. 14): −D_rgb(x_out) + λ_cls·BCE(D_rgb,cls(x_out), y_trg)
//!   (eq. 2, 4) + λ_rec·L1(G_rgb(x, 0), x) (eq. 5, replacing the cycle loss,
//!   Sec. 4.2) + λ_sc·CE(P(x_out), one-hot arg-max of G_seg's output) (eq. 11:
//!   its gradient reaches G_rgb through the frozen P).
//! - G_seg (eq. 16): −D_seg(ŝ_out) + λ_cls·BCE (eq. 7, 9) + λ_rec·CE(s_in,
//!   G_seg(s_in, 0)) (eq. 10) + λ_sc·CE(ŝ_out, one-hot arg-max of P(x_out))
//!   (eq. 12: x_out is a constant there, no gradient reaches G_rgb).
//! - Schedule (Algorithm 1): every step updates D_rgb and D_seg (eq. 17/18);
//!   every `n_critic`-th step G_rgb and G_seg on the same mini-batch (eq.
//!   19/20), each treating the other branch's output as a constant; all four
//!   learning rates constant, then decaying linearly to 0 from `decay_start`.
//!   BCE is summed over attributes and averaged over the batch, cross-
//!   entropies averaged over pixels and the batch (eq. 10–12's 1/HW).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Result, bail};
use candle_core::{DType, Device, ModuleT, Tensor, Var};
use candle_nn::{Optimizer, VarMap};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::accumulate::{Accumulated, accumulate, apply};
use super::adam::Adam;
use super::losses::{bce_elements, gradient_penalty, scalar};
use super::translation::lr_factor;
use super::{LogRow, Phase, PhaseEnv, batch_indices, frozen, log_row, run_phase, snapshot, vb_of};
use crate::data::celeba::Labels;
use crate::data::tensors::{FaceSet, grid, tensor_to_rgb};
use crate::models::critic::{self, Critic};
use crate::models::seeded_init;
use crate::models::translator::{self, Condition, Kind, Output, Translator};
use crate::models::unet::UNet;

/// The paper's 13 attributes (Sec. 4.1): bald, bangs, black / blond / brown
/// hair, bushy eyebrows, eyeglasses, gender, mouth slightly open, moustache,
/// beard (CelebA's `No_Beard`), pale skin and age (`Young`).
pub const DEFAULT_ATTRIBUTES: [&str; 13] = [
    "Bald",
    "Bangs",
    "Black_Hair",
    "Blond_Hair",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Eyeglasses",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "No_Beard",
    "Pale_Skin",
    "Young",
];

/// Losses and schedule (config section `[stages.<name>.secgan]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Options {
    /// Attributes (CelebA names). Default: the paper's 13 ([`DEFAULT_ATTRIBUTES`]).
    pub attributes: Option<Vec<String>>,
    /// Iterations (discriminator updates). Default 200,000 (Sec. 4.3).
    pub steps: usize,
    /// Rows per step (16, Sec. 4.3).
    pub batch_size: usize,
    /// Learning rates of G_rgb, D_rgb, G_seg and D_seg (1e-4 each).
    pub lr: f64,
    pub d_lr: f64,
    pub seg_lr: f64,
    pub seg_d_lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// Discriminator updates per generator update (N of Algorithm 1).
    pub n_critic: usize,
    pub lambda_gp: f64,
    pub lambda_cls: f64,
    pub lambda_rec: f64,
    /// Weight of the semantic consistency losses (eq. 11/12): 0.01, the
    /// best value of Fig. 3.
    pub lambda_sc: f64,
    /// `false`: both branches train independently (no eq. 11/12 terms).
    pub semantic_consistency: bool,
    /// Step after which the rates decay linearly to 0 (default: half of `steps`).
    pub decay_start: Option<usize>,
    /// Seed of G_seg's and D_seg's initial weights (default: from the run seed).
    pub semantic_seed: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            attributes: None,
            steps: 200_000,
            batch_size: 16,
            lr: 1e-4,
            d_lr: 1e-4,
            seg_lr: 1e-4,
            seg_d_lr: 1e-4,
            beta1: 0.5,
            beta2: 0.999,
            n_critic: 5,
            lambda_gp: 10.0,
            lambda_cls: 1.0,
            lambda_rec: 10.0,
            lambda_sc: 0.01,
            semantic_consistency: true,
            decay_start: None,
            semantic_seed: None,
        }
    }
}

impl Options {
    pub fn attribute_names(&self) -> Vec<String> {
        match &self.attributes {
            Some(v) => v.clone(),
            None => DEFAULT_ATTRIBUTES.iter().map(|s| s.to_string()).collect(),
        }
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        super::check_rates(&[
            ("secgan.lr", self.lr),
            ("secgan.d_lr", self.d_lr),
            ("secgan.seg_lr", self.seg_lr),
            ("secgan.seg_d_lr", self.seg_d_lr),
        ])?;
        super::check_betas(&[("secgan.beta1", self.beta1), ("secgan.beta2", self.beta2)])?;
        super::check_weights(&[
            ("secgan.lambda_gp", self.lambda_gp),
            ("secgan.lambda_cls", self.lambda_cls),
            ("secgan.lambda_rec", self.lambda_rec),
            ("secgan.lambda_sc", self.lambda_sc),
        ])?;
        if self.n_critic == 0 {
            return Err("secgan.n_critic must be at least 1".into());
        }
        if self.steps == 0 {
            return Err("secgan.steps must be at least 1".into());
        }
        if self.batch_size < 2 {
            return Err(format!(
                "secgan.batch_size = {}: use at least 2 (targets are the batch's labels shuffled)",
                self.batch_size
            ));
        }
        if let Some(d) = self.decay_start
            && d > self.steps
        {
            return Err(format!(
                "secgan.decay_start = {d} is after the last step ({})",
                self.steps
            ));
        }
        Ok(())
    }
}

/// The four networks' sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Nets {
    pub g_rgb: translator::Config,
    pub d_rgb: critic::Config,
    pub g_seg: translator::Config,
    pub d_seg: critic::Config,
}

impl Nets {
    /// Table 2 at 128 px, or the tiny CPU size (32 px, 8 → 32 filters, two
    /// residual blocks), for `n` attributes and `classes` segments.
    pub fn preset(tiny: bool, n: usize, classes: usize) -> Nets {
        let (mut g, d) = translator::presets(Kind::Stargan, tiny, n);
        g.condition = Condition::Difference;
        let g_seg = translator::Config {
            in_channels: classes,
            out_channels: classes,
            output: Output::Softmax,
            ..g.clone()
        };
        let d_seg = critic::Config {
            in_channels: classes,
            ..d.clone()
        };
        Nets {
            g_rgb: g,
            d_rgb: d,
            g_seg,
            d_seg,
        }
    }

    pub fn image_size(&self) -> usize {
        self.g_rgb.image_size
    }

    pub fn classes(&self) -> usize {
        self.g_seg.out_channels
    }
}

/// The frozen parser: its network, its tensors' hash, and its class count.
pub struct Parser {
    pub net: UNet,
    pub tensors: HashMap<String, Tensor>,
}

impl Parser {
    pub fn new(
        cfg: &crate::models::unet::Config,
        tensors: HashMap<String, Tensor>,
        dev: &Device,
    ) -> Result<Self> {
        let net = UNet::new(cfg, vb_of(&tensors, dev))?;
        Ok(Parser { net, tensors })
    }

    /// Logits of P at inference (batch norm with its running statistics).
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.net.forward_t(x, false)?)
    }

    /// s_in: the one-hot arg-max of P(x), [B, C, H, W].
    pub fn one_hot(&self, x: &Tensor) -> Result<Tensor> {
        one_hot_argmax(&self.logits(&x.detach())?)
    }
}

/// sha256 over a set of tensors (sorted by name, their f32 bytes).
pub fn tensors_sha256(t: &HashMap<String, Tensor>) -> Result<String> {
    let mut names: Vec<&String> = t.keys().collect();
    names.sort();
    let mut h = Sha256::new();
    for n in names {
        h.update(n.as_bytes());
        let v: Vec<f32> = t[n].flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        for x in v {
            h.update(x.to_le_bytes());
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// One-hot [B, C, H, W] of the arg-max over dim 1 of `scores` (constant).
pub fn one_hot_argmax(scores: &Tensor) -> Result<Tensor> {
    let c = scores.dim(1)?;
    let idx = scores.detach().argmax_keepdim(1)?;
    let classes = Tensor::arange(0u32, c as u32, scores.device())?.reshape((1, c, 1, 1))?;
    Ok(idx.broadcast_eq(&classes)?.to_dtype(DType::F32)?)
}

/// −(1/HW) Σ target · log_softmax(logits), averaged over the batch.
pub fn pixel_ce(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, 1)?;
    let (_, _, h, w) = logits.dims4()?;
    let b = logits.dim(0)? as f64;
    Ok((target.mul(&logp)?.sum_all()? * (-1.0 / (b * (h * w) as f64)))?)
}

/// Eq. 11: L_sc for G_rgb, CE of P(x_out) against the one-hot arg-max of
/// G_seg's output (a constant): gradient reaches x_out through P.
pub fn sc_rgb(p: &Parser, x_out: &Tensor, s_hat: &Tensor) -> Result<Tensor> {
    pixel_ce(&p.logits(x_out)?, &one_hot_argmax(s_hat)?)
}

/// Eq. 12: L_sc for G_seg, CE of G_seg's output (its logits) against the
/// one-hot arg-max of P(x_out), x_out taken as a constant.
pub fn sc_seg(p: &Parser, x_out: &Tensor, seg_logits: &Tensor) -> Result<Tensor> {
    let target = p.one_hot(&x_out.detach())?;
    pixel_ce(seg_logits, &target)
}

/// Training data (the same for every GAN phase).
pub use super::TrainSet;

/// What training produced.
pub struct Trained {
    pub log: Vec<LogRow>,
    pub summary: serde_json::Value,
    pub g_rgb: HashMap<String, Tensor>,
    pub d_rgb: HashMap<String, Tensor>,
    pub g_seg: HashMap<String, Tensor>,
    pub d_seg: HashMap<String, Tensor>,
    /// [`tensors_sha256`] of P's weights after training.
    pub parser_sha256: String,
}

const D_LOSSES: [&str; 4] = ["D_rgb/loss", "D_rgb/wasserstein", "D_rgb/cls", "D_rgb/gp"];
const DS_LOSSES: [&str; 4] = ["D_seg/loss", "D_seg/wasserstein", "D_seg/cls", "D_seg/gp"];
const G_LOSSES: [&str; 5] = [
    "G_rgb/loss",
    "G_rgb/adv",
    "G_rgb/cls",
    "G_rgb/rec",
    "G_rgb/sc",
];
const GS_LOSSES: [&str; 5] = [
    "G_seg/loss",
    "G_seg/adv",
    "G_seg/cls",
    "G_seg/rec",
    "G_seg/sc",
];

/// One net with its variables and optimiser.
struct Trainable<N> {
    vm: VarMap,
    vars: Vec<Var>,
    net: N,
    opt: Adam,
    lr: f64,
}

impl<N> Trainable<N> {
    fn new(
        build: impl FnOnce(candle_nn::VarBuilder) -> candle_core::Result<N>,
        seed: u64,
        lr: f64,
        betas: (f64, f64),
        dev: &Device,
    ) -> Result<Self> {
        let vm = VarMap::new();
        let net = build(candle_nn::VarBuilder::from_varmap(&vm, DType::F32, dev))?;
        seeded_init(&vm, seed)?;
        Ok(Trainable {
            vars: vm.all_vars(),
            opt: Adam::with_betas(&vm, lr, betas)?,
            vm,
            net,
            lr,
        })
    }
}

struct SecganPhase<'a> {
    data: &'a TrainSet<'a>,
    dev: Device,
    attrs: Vec<usize>,
    opts: Options,
    nets: Nets,
    seed: u64,
    p: &'a Parser,
    g_rgb: Trainable<Translator>,
    d_rgb: Trainable<Critic>,
    g_seg: Trainable<Translator>,
    d_seg: Trainable<Critic>,
    sample_rows: Vec<usize>,
}

/// One mini-batch: images, one-hot s_in, source / target attribute tensors
/// and y_diff, and the penalty's interpolation weights per branch.
struct Batch {
    x: Tensor,
    s_in: Tensor,
    c_src: Tensor,
    c_trg: Tensor,
    diff: Tensor,
    zero: Tensor,
    eps_rgb: Tensor,
    eps_seg: Tensor,
}

impl<'a> SecganPhase<'a> {
    fn new(
        nets: &Nets,
        attrs: &[usize],
        opts: &Options,
        seed: u64,
        data: &'a TrainSet<'a>,
        p: &'a Parser,
        dev: &Device,
    ) -> Result<Self> {
        let betas = (opts.beta1, opts.beta2);
        let seg_seed = opts.semantic_seed.unwrap_or(seed + 31);
        let g_rgb = Trainable::new(
            |vb| Translator::new(&nets.g_rgb, vb),
            seed + 21,
            opts.lr,
            betas,
            dev,
        )?;
        let d_rgb = Trainable::new(
            |vb| Critic::new(&nets.d_rgb, vb),
            seed + 22,
            opts.d_lr,
            betas,
            dev,
        )?;
        let g_seg = Trainable::new(
            |vb| Translator::new(&nets.g_seg, vb),
            seg_seed,
            opts.seg_lr,
            betas,
            dev,
        )?;
        let d_seg = Trainable::new(
            |vb| Critic::new(&nets.d_seg, vb),
            seg_seed ^ 0x5E6,
            opts.seg_d_lr,
            betas,
            dev,
        )?;
        let rows = if data.val.is_empty() {
            &data.train
        } else {
            &data.val
        };
        Ok(SecganPhase {
            data,
            dev: dev.clone(),
            attrs: attrs.to_vec(),
            opts: opts.clone(),
            nets: nets.clone(),
            seed: seed + 23,
            p,
            g_rgb,
            d_rgb,
            g_seg,
            d_seg,
            sample_rows: rows.iter().copied().take(4).collect(),
        })
    }

    fn attr_tensor(&self, labels: &[Labels]) -> Result<Tensor> {
        attr_tensor(&self.attrs, labels, &self.dev)
    }

    fn batch(&self, idx: &[usize], rng: &mut ChaCha8Rng) -> Result<Batch> {
        let src: Vec<Labels> = idx.iter().map(|&i| self.data.faces.labels[i]).collect();
        let mut perm: Vec<usize> = (0..idx.len()).collect();
        perm.shuffle(rng);
        let trg: Vec<Labels> = perm.iter().map(|&p| src[p]).collect();
        let eps = |rng: &mut ChaCha8Rng| -> Result<Tensor> {
            let v: Vec<f32> = (0..idx.len()).map(|_| rng.random::<f32>()).collect();
            Ok(Tensor::from_vec(v, (idx.len(), 1, 1, 1), &self.dev)?)
        };
        let eps_rgb = eps(rng)?;
        let eps_seg = eps(rng)?;
        let x = self.data.faces.images(idx, &self.dev)?;
        let s_in = self.p.one_hot(&x)?;
        let c_src = self.attr_tensor(&src)?;
        let c_trg = self.attr_tensor(&trg)?;
        let diff = (&c_trg - &c_src)?;
        let zero = diff.zeros_like()?;
        Ok(Batch {
            x,
            s_in,
            c_src,
            c_trg,
            diff,
            zero,
            eps_rgb,
            eps_seg,
        })
    }

    /// Eq. 13 / 15: a critic's loss on `real` against G's `fake` (constant).
    fn critic_grads(
        &self,
        d: &Trainable<Critic>,
        real: &Tensor,
        fake: &Tensor,
        c_src: &Tensor,
        eps: &Tensor,
    ) -> Result<Accumulated> {
        let o = &self.opts;
        let n = self.attrs.len() as f64;
        let b = real.dim(0)?;
        accumulate(&d.vars, b, None, |_, _| {
            let (adv_real, cls_real) = d.net.forward(real)?;
            let d_fake = d.net.critic_value(fake)?.mean_all()?;
            let wdist = (adv_real.mean_all()? - d_fake)?;
            let cls = (bce_elements(&cls_real, c_src)?.mean_all()? * n)?;
            let gp = gradient_penalty(|t| d.net.critic_value(t), real, fake, eps)?;
            let loss = ((wdist.neg()? + (&cls * o.lambda_cls)?)? + (&gp * o.lambda_gp)?)?;
            Ok([loss, wdist, cls, gp])
        })
    }

    /// Eq. 14: G_rgb's loss; `s_hat` is G_seg's output (a constant).
    fn g_rgb_grads(&self, bt: &Batch, s_hat: &Tensor) -> Result<Accumulated<5>> {
        let o = &self.opts;
        let n = self.attrs.len() as f64;
        let b = bt.x.dim(0)?;
        let g = &self.g_rgb.net;
        accumulate(&self.g_rgb.vars, b, None, |_, _| {
            let x_out = g.forward(&bt.x, Some(&bt.diff))?;
            let (adv, cls) = self.d_rgb.net.forward(&x_out)?;
            let g_adv = adv.mean_all()?.neg()?;
            let g_cls = (bce_elements(&cls, &bt.c_trg)?.mean_all()? * n)?;
            let rec = (g.forward(&bt.x, Some(&bt.zero))? - &bt.x)?
                .abs()?
                .mean_all()?;
            let sc = sc_rgb(self.p, &x_out, s_hat)?;
            let mut loss = ((&g_adv + (&g_cls * o.lambda_cls)?)? + (&rec * o.lambda_rec)?)?;
            if o.semantic_consistency {
                loss = (loss + (&sc * o.lambda_sc)?)?;
            }
            Ok([loss, g_adv, g_cls, rec, sc])
        })
    }

    /// Eq. 16: G_seg's loss; `x_out` is G_rgb's output (a constant).
    fn g_seg_grads(&self, bt: &Batch, x_out: &Tensor) -> Result<Accumulated<5>> {
        let o = &self.opts;
        let n = self.attrs.len() as f64;
        let b = bt.x.dim(0)?;
        let g = &self.g_seg.net;
        accumulate(&self.g_seg.vars, b, None, |_, _| {
            let logits = g.logits(&bt.s_in, &bt.diff)?;
            let s_hat = candle_nn::ops::softmax(&logits, 1)?;
            let (adv, cls) = self.d_seg.net.forward(&s_hat)?;
            let g_adv = adv.mean_all()?.neg()?;
            let g_cls = (bce_elements(&cls, &bt.c_trg)?.mean_all()? * n)?;
            let rec = pixel_ce(&g.logits(&bt.s_in, &bt.zero)?, &bt.s_in)?;
            let sc = sc_seg(self.p, x_out, &logits)?;
            let mut loss = ((&g_adv + (&g_cls * o.lambda_cls)?)? + (&rec * o.lambda_rec)?)?;
            if o.semantic_consistency {
                loss = (loss + (&sc * o.lambda_sc)?)?;
            }
            Ok([loss, g_adv, g_cls, rec, sc])
        })
    }
}

fn attr_tensor(attrs: &[usize], labels: &[Labels], dev: &Device) -> Result<Tensor> {
    Ok(crate::models::editor::attr_tensor(attrs, labels, dev)?)
}

impl Phase for SecganPhase<'_> {
    fn step(&mut self, step: usize) -> Result<Vec<(&'static str, f64)>> {
        let f = lr_factor(self.opts.steps, self.opts.decay_start, step);
        for (t, lr) in [
            (&mut self.g_rgb.opt, self.g_rgb.lr),
            (&mut self.g_seg.opt, self.g_seg.lr),
        ] {
            t.set_learning_rate(lr * f);
        }
        for (t, lr) in [
            (&mut self.d_rgb.opt, self.d_rgb.lr),
            (&mut self.d_seg.opt, self.d_seg.lr),
        ] {
            t.set_learning_rate(lr * f);
        }
        let idx: Vec<usize> =
            batch_indices(self.data.train.len(), self.opts.batch_size, self.seed, step)
                .into_iter()
                .map(|i| self.data.train[i])
                .collect();
        let mut rng =
            ChaCha8Rng::seed_from_u64(self.seed ^ (step as u64).wrapping_mul(0x9E37_79B9));
        let bt = self.batch(&idx, &mut rng)?;
        // Eq. 17/18 on G's current outputs (constants for the critics).
        let x_fake = self.g_rgb.net.forward(&bt.x, Some(&bt.diff))?.detach();
        let s_fake = self.g_seg.net.forward(&bt.s_in, Some(&bt.diff))?.detach();
        let d = self.critic_grads(&self.d_rgb, &bt.x, &x_fake, &bt.c_src, &bt.eps_rgb)?;
        let ds = self.critic_grads(&self.d_seg, &bt.s_in, &s_fake, &bt.c_src, &bt.eps_seg)?;
        let mut out = apply(&mut self.d_rgb.opt, D_LOSSES, d)?;
        out.extend(apply(&mut self.d_seg.opt, DS_LOSSES, ds)?);
        if step.is_multiple_of(self.opts.n_critic) {
            // Eq. 19/20 on the same mini-batch, each generator taking the
            // other's output (before either update) as a constant.
            let g = self.g_rgb_grads(&bt, &s_fake)?;
            let gs = self.g_seg_grads(&bt, &x_fake)?;
            out.extend(apply(&mut self.g_rgb.opt, G_LOSSES, g)?);
            out.extend(apply(&mut self.g_seg.opt, GS_LOSSES, gs)?);
        }
        out.push(("lr", self.opts.lr * f));
        Ok(out)
    }

    fn sample(&mut self, path: &Path) -> Result<()> {
        let g = Translator::new(&self.nets.g_rgb, vb_of(&frozen(&self.g_rgb.vm), &self.dev))?;
        let gs = Translator::new(&self.nets.g_seg, vb_of(&frozen(&self.g_seg.vm), &self.dev))?;
        sample_grid(
            &g,
            &gs,
            self.p,
            &self.attrs,
            self.data.faces,
            &self.sample_rows,
            &self.dev,
        )?
        .save(path)?;
        Ok(())
    }

    fn nets(&self) -> Vec<(&'static str, &VarMap)> {
        vec![
            ("generator", &self.g_rgb.vm),
            ("critic", &self.d_rgb.vm),
            ("semantic_generator", &self.g_seg.vm),
            ("semantic_critic", &self.d_seg.vm),
        ]
    }

    fn optimizers(&mut self) -> Vec<(&'static str, &mut Adam)> {
        vec![
            ("generator", &mut self.g_rgb.opt),
            ("critic", &mut self.d_rgb.opt),
            ("semantic_generator", &mut self.g_seg.opt),
            ("semantic_critic", &mut self.d_seg.opt),
        ]
    }
}

/// A class map (one-hot or soft, [B, C, H, W]) as coloured images.
fn colour_masks(s: &Tensor) -> Result<Vec<image::RgbImage>> {
    let (b, _, h, w) = s.dims4()?;
    let idx: Vec<u32> = s.argmax(1)?.flatten_all()?.to_vec1()?;
    Ok((0..b)
        .map(|k| {
            image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
                crate::data::face_parsing::palette(
                    idx[k * h * w + y as usize * w + x as usize] as u8,
                )
            })
        })
        .collect())
}

/// Fig. 5's columns per face: x_in, s_in, then for each attribute flipped
/// alone: x_out, G_seg's ŝ_out and P(x_out).
fn sample_grid(
    g: &Translator,
    gs: &Translator,
    p: &Parser,
    attrs: &[usize],
    faces: &FaceSet,
    rows: &[usize],
    dev: &Device,
) -> Result<image::RgbImage> {
    let x = faces.images(rows, dev)?;
    let s_in = p.one_hot(&x)?;
    let mut cols: Vec<Vec<image::RgbImage>> = vec![tensor_to_rgb(&x)?, colour_masks(&s_in)?];
    let src: Vec<Labels> = rows.iter().map(|&i| faces.labels[i]).collect();
    for &a in attrs {
        let trg: Vec<Labels> = src.iter().map(|l| l ^ (1 << a)).collect();
        let diff = (attr_tensor(attrs, &trg, dev)? - attr_tensor(attrs, &src, dev)?)?;
        let x_out = g.forward(&x, Some(&diff))?;
        cols.push(tensor_to_rgb(&x_out)?);
        cols.push(colour_masks(&gs.forward(&s_in, Some(&diff))?)?);
        cols.push(colour_masks(&p.logits(&x_out)?)?);
    }
    let n = cols.len();
    let cells: Vec<image::RgbImage> = (0..rows.len())
        .flat_map(|r| cols.iter().map(move |c| c[r].clone()))
        .collect();
    Ok(grid(&cells, n))
}

/// Measures of both branches on validation faces (one attribute flipped per
/// row): the critics' Wasserstein estimates and class losses on real
/// inputs, G_rgb's class loss under `d_rgb`, L1(G_rgb(x, 0), x), eq. 10's
/// CE, and eq. 11/12's consistency losses.
#[derive(Debug, Clone, Copy, Default)]
struct Measures {
    wasserstein: f64,
    critic_cls: f64,
    seg_wasserstein: f64,
    seg_critic_cls: f64,
    g_cls: f64,
    rec_l1: f64,
    seg_rec_ce: f64,
    sc_rgb: f64,
    sc_seg: f64,
}

/// The val faces [`measure`] edits, with the same edits (from `seed`) each time.
#[derive(Clone, Copy)]
struct ValSet<'a> {
    p: &'a Parser,
    attrs: &'a [usize],
    faces: &'a FaceSet,
    rows: &'a [usize],
    seed: u64,
    dev: &'a Device,
}

/// Val measures of G_rgb and G_seg (`gens`) under D_rgb and D_seg (`critics`).
fn measure(
    (g, gs): (&Translator, &Translator),
    (d_rgb, d_seg): (&Critic, &Critic),
    v: &ValSet,
) -> Result<Measures> {
    let ValSet {
        p,
        attrs,
        faces,
        rows,
        seed,
        dev,
    } = *v;
    let n = attrs.len();
    let mut m = Measures::default();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut count = 0usize;
    for chunk in rows.chunks(32) {
        let x = faces.images(chunk, dev)?;
        let s_in = p.one_hot(&x)?;
        let src: Vec<Labels> = chunk.iter().map(|&i| faces.labels[i]).collect();
        let trg: Vec<Labels> = src
            .iter()
            .map(|&l| l ^ (1 << attrs[rng.random_range(0..n)]))
            .collect();
        let c_src = attr_tensor(attrs, &src, dev)?;
        let c_trg = attr_tensor(attrs, &trg, dev)?;
        let diff = (&c_trg - &c_src)?;
        let zero = diff.zeros_like()?;
        let x_out = g.forward(&x, Some(&diff))?;
        let seg_logits = gs.logits(&s_in, &diff)?;
        let s_hat = candle_nn::ops::softmax(&seg_logits, 1)?;
        let k = chunk.len() as f64;
        let bce = |l: &Tensor, t: &Tensor| -> Result<f64> {
            Ok(scalar(&bce_elements(l, t)?.mean_all()?)? * n as f64)
        };
        let (ar, cr) = d_rgb.forward(&x)?;
        let (af, cf) = d_rgb.forward(&x_out)?;
        m.wasserstein += (scalar(&ar.mean_all()?)? - scalar(&af.mean_all()?)?) * k;
        m.critic_cls += bce(&cr, &c_src)? * k;
        m.g_cls += bce(&cf, &c_trg)? * k;
        let (sr, scr) = d_seg.forward(&s_in)?;
        let sf = d_seg.critic_value(&s_hat)?;
        m.seg_wasserstein += (scalar(&sr.mean_all()?)? - scalar(&sf.mean_all()?)?) * k;
        m.seg_critic_cls += bce(&scr, &c_src)? * k;
        m.rec_l1 += scalar(&(g.forward(&x, Some(&zero))? - &x)?.abs()?.mean_all()?)? * k;
        m.seg_rec_ce += scalar(&pixel_ce(&gs.logits(&s_in, &zero)?, &s_in)?)? * k;
        m.sc_rgb += scalar(&sc_rgb(p, &x_out, &s_hat)?)? * k;
        m.sc_seg += scalar(&sc_seg(p, &x_out, &seg_logits)?)? * k;
        count += chunk.len();
    }
    let c = count.max(1) as f64;
    for v in [
        &mut m.wasserstein,
        &mut m.critic_cls,
        &mut m.seg_wasserstein,
        &mut m.seg_critic_cls,
        &mut m.g_cls,
        &mut m.rec_l1,
        &mut m.seg_rec_ce,
        &mut m.sc_rgb,
        &mut m.sc_seg,
    ] {
        *v /= c;
    }
    Ok(m)
}

/// What one `secgan` phase trains: the four networks' sizes, the CelebA
/// indices of the edited attributes, the options, the seed and the frozen parser P.
pub struct Job<'a> {
    pub nets: &'a Nets,
    pub attrs: &'a [usize],
    pub opts: &'a Options,
    pub seed: u64,
    pub parser: &'a Parser,
}

/// Runs phase `secgan` (resuming where `env.dir` has checkpoints).
pub fn train(job: &Job, data: &TrainSet, dev: &Device, env: &PhaseEnv) -> Result<Trained> {
    let Job {
        nets,
        attrs,
        opts,
        seed,
        parser: p,
    } = *job;
    if data.train.is_empty() {
        bail!("no training rows");
    }
    crate::train::require_second_order_gradients()?;
    let p_sha = tensors_sha256(&p.tensors)?;
    let mut ph = SecganPhase::new(nets, attrs, opts, seed, data, p, dev)?;
    let inits = [
        snapshot(&ph.g_rgb.vm)?,
        snapshot(&ph.d_rgb.vm)?,
        snapshot(&ph.g_seg.vm)?,
        snapshot(&ph.d_seg.vm)?,
    ];
    let r = run_phase(env, "secgan", opts.steps, &mut ph)?;
    let mut log = r.log;
    let mut summary = serde_json::json!({"steps": opts.steps, "wall_time_s": r.wall_time_s});
    let val: Vec<usize> = if data.val.is_empty() {
        &data.train
    } else {
        &data.val
    }
    .iter()
    .copied()
    .take(64)
    .collect();
    let build =
        |t: &[HashMap<String, Tensor>; 4]| -> Result<(Translator, Critic, Translator, Critic)> {
            Ok((
                Translator::new(&nets.g_rgb, vb_of(&t[0], dev))?,
                Critic::new(&nets.d_rgb, vb_of(&t[1], dev))?,
                Translator::new(&nets.g_seg, vb_of(&t[2], dev))?,
                Critic::new(&nets.d_seg, vb_of(&t[3], dev))?,
            ))
        };
    let fin = [
        frozen(&ph.g_rgb.vm),
        frozen(&ph.d_rgb.vm),
        frozen(&ph.g_seg.vm),
        frozen(&ph.d_seg.vm),
    ];
    let (g0, d0, gs0, ds0) = build(&inits)?;
    let (g1, d1, gs1, ds1) = build(&fin)?;
    let seed_m = seed + 24;
    let v = ValSet {
        p,
        attrs,
        faces: data.faces,
        rows: &val,
        seed: seed_m,
        dev,
    };
    // Initial G judged by the final critics' class heads (the initial
    // heads are untrained); the critics' own measures by themselves.
    let init_d = measure((&g0, &gs0), (&d0, &ds0), &v)?;
    let init_g = measure((&g0, &gs0), (&d1, &ds1), &v)?;
    let end = measure((&g1, &gs1), (&d1, &ds1), &v)?;
    record_measures(&mut log, &mut summary, opts.steps, [&init_d, &init_g, &end]);
    summary["val_rows"] = val.len().into();
    summary["semantic_consistency"] = opts.semantic_consistency.into();
    let parser_sha256 = tensors_sha256(&p.tensors)?;
    if parser_sha256 != p_sha {
        bail!("the parser's weights changed during training ({p_sha} → {parser_sha256}): a bug");
    }
    summary["parser_weights_sha256"] = parser_sha256.clone().into();
    let [g_rgb, d_rgb, g_seg, d_seg] = fin;
    Ok(Trained {
        log,
        summary,
        g_rgb,
        d_rgb,
        g_seg,
        d_seg,
        parser_sha256,
    })
}

/// Logs and summarises the val measures before and after training: the
/// critics' by the initial critics, G's under the final critics.
fn record_measures(
    log: &mut Vec<LogRow>,
    summary: &mut serde_json::Value,
    steps: usize,
    [init_d, init_g, end]: [&Measures; 3],
) {
    for (name, init, fin) in [
        ("wasserstein", init_d.wasserstein, end.wasserstein),
        ("critic_cls", init_d.critic_cls, end.critic_cls),
        (
            "seg_wasserstein",
            init_d.seg_wasserstein,
            end.seg_wasserstein,
        ),
        ("seg_critic_cls", init_d.seg_critic_cls, end.seg_critic_cls),
        ("g_cls", init_g.g_cls, end.g_cls),
        ("rec_l1", init_g.rec_l1, end.rec_l1),
        ("seg_rec_ce", init_g.seg_rec_ce, end.seg_rec_ce),
        ("sc_rgb", init_g.sc_rgb, end.sc_rgb),
        ("sc_seg", init_g.sc_seg, end.sc_seg),
    ] {
        log.push(log_row("secgan", 0, &format!("val/{name}"), init));
        log.push(log_row("secgan", steps, &format!("val/{name}"), fin));
        summary[format!("{name}_init")] = init.into();
        summary[name] = fin.into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::unet;

    /// Σ |gradient| over `vm`'s variables that got one.
    fn grad_sum(grads: &candle_core::backprop::GradStore, vm: &VarMap) -> f32 {
        vm.all_vars()
            .iter()
            .filter_map(|v| grads.get(v.as_tensor()))
            .map(|g| {
                g.abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            })
            .sum()
    }

    fn tiny_parser(dev: &Device) -> Parser {
        let cfg = unet::Config {
            image_size: 32,
            ..unet::Config::tiny(12)
        };
        let vm = VarMap::new();
        UNet::new(
            &cfg,
            candle_nn::VarBuilder::from_varmap(&vm, DType::F32, dev),
        )
        .unwrap();
        seeded_init(&vm, 5).unwrap();
        Parser::new(&cfg, snapshot(&vm).unwrap(), dev).unwrap()
    }

    #[test]
    fn one_hot_and_pixel_ce() {
        let dev = Device::Cpu;
        // One pixel, three classes: scores favour class 2.
        let s = Tensor::new(&[[[[0.1f32]], [[0.3]], [[0.6]]]], &dev).unwrap();
        let oh = one_hot_argmax(&s)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(oh, vec![0.0, 0.0, 1.0]);
        // −log softmax([0, 1, 2])[2] = log(1 + e^−1 + e^−2) = 0.407606 (Python).
        let logits = Tensor::new(&[[[[0.0f32]], [[1.0]], [[2.0]]]], &dev).unwrap();
        let t = one_hot_argmax(&logits).unwrap();
        let v = scalar(&pixel_ce(&logits, &t).unwrap()).unwrap();
        assert!((v - 0.407606).abs() < 1e-5, "{v}");
    }

    /// Eq. 12 sends no gradient to G_rgb; eq. 11 does (through the frozen P,
    /// which itself gets none: it has no variables).
    #[test]
    fn eq12_gives_g_rgb_no_gradient_and_eq11_does() {
        let dev = Device::Cpu;
        let p = tiny_parser(&dev);
        let nets = Nets::preset(true, 3, 12);
        let vm = VarMap::new();
        let g = Translator::new(
            &nets.g_rgb,
            candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &dev),
        )
        .unwrap();
        seeded_init(&vm, 1).unwrap();
        let vm_s = VarMap::new();
        let gs = Translator::new(
            &nets.g_seg,
            candle_nn::VarBuilder::from_varmap(&vm_s, DType::F32, &dev),
        )
        .unwrap();
        seeded_init(&vm_s, 2).unwrap();
        let x = Tensor::randn(0f32, 0.5, (2, 3, 32, 32), &dev).unwrap();
        let diff = Tensor::new(&[[1f32, 0., -1.], [0., 1., 0.]], &dev).unwrap();
        let s_in = p.one_hot(&x).unwrap();
        let x_out = g.forward(&x, Some(&diff)).unwrap();
        let logits = gs.logits(&s_in, &diff).unwrap();
        let grads = sc_seg(&p, &x_out, &logits).unwrap().backward().unwrap();
        for v in vm.all_vars() {
            assert!(grads.get(v.as_tensor()).is_none(), "eq. 12 reached G_rgb");
        }
        let seg_grad = grad_sum(&grads, &vm_s);
        assert!(seg_grad > 0.0, "eq. 12 must train G_seg");
        let s_hat = candle_nn::ops::softmax(&logits, 1).unwrap();
        let grads = sc_rgb(&p, &x_out, &s_hat).unwrap().backward().unwrap();
        let rgb_grad = grad_sum(&grads, &vm);
        assert!(rgb_grad > 0.0, "eq. 11 must reach G_rgb through P");
        for v in vm_s.all_vars() {
            assert!(grads.get(v.as_tensor()).is_none(), "eq. 11 reached G_seg");
        }
    }

    #[test]
    fn nets_follow_table_2() {
        let n = Nets::preset(false, 13, 12);
        assert_eq!(n.g_rgb.in_channels, 3);
        assert_eq!(n.g_seg.in_channels, 12);
        assert_eq!(n.g_seg.out_channels, 12);
        assert_eq!(n.g_seg.output, Output::Softmax);
        assert_eq!(n.g_rgb.condition, Condition::Difference);
        assert_eq!(n.d_seg.in_channels, 12);
        assert_eq!(n.d_seg.classes, 13);
        assert_eq!(n.image_size(), 128);
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let gs = Translator::new(
            &n.g_seg,
            candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &dev),
        )
        .unwrap();
        let s = Tensor::zeros((1, 12, 128, 128), DType::F32, &dev).unwrap();
        let d = Tensor::zeros((1, 13), DType::F32, &dev).unwrap();
        let y = gs.forward(&s, Some(&d)).unwrap();
        assert_eq!(y.dims(), &[1, 12, 128, 128]);
        let sums = y
            .sum(1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(sums.iter().all(|v| (v - 1.0).abs() < 1e-4));
    }
}
