//! Training of BridgeGAN (Huang et al., "Bridging the Gap between Label- and Reference-based Synthesis", App. A–C) in one
//! checkpointed phase `bridgegan`. The appendix gives the loss weights
//! (App. C) and defines only the attribute-keeping loss; the rest follows
//! StarGAN / StarGAN-v2 (our choice, issue #19).
//!
//! Each step draws a batch X_s with labels Y_s (the edited attributes), the
//! targets Y_t = the batch's labels in a shuffled order, the reference X_r
//! = the face those labels belong to (so a reference really has Y_t), and
//! att_diff = Y_t − Y_s ∈ {−1, 0, 1}ⁿ; both paths are trained: the label
//! path X_g^l = G(X_s, M(R, att_diff)) and the reference path
//! X_g^r = G(X_s, E(X_r, att_diff)).
//!
//! - **Critic** (every step): WGAN-GP, E[D(X_g)] − E[D(X_s)] + λ_gp·GP
//!   (both paths' fakes, averaged), or with `adversarial =
//!   "nonsaturating_r1"` softplus(−D(X_s)) + softplus(D(X_g)) + R1 (γ = 1);
//!   plus λ_cls·BCE(C(X_s), Y_s), summed over attributes and averaged over
//!   the batch (StarGAN's code).
//! - **G, M and E** (every `n_critic`-th step), averaged over both paths:
//!   the adversarial term; λ_cls·BCE(C(X_g), Y_t); λ_rec·|G(X_s, M(R, 0)) −
//!   X_s|₁ (a zero difference changes nothing); λ_cyc·|G(X_g, E(X_s,
//!   −att_diff)) − X_s|₁; λ_sty·|E(X_g, att_diff) − M(R, att_diff)|₁ on the
//!   label path and |E(X_g, att_diff) − E(X_r, att_diff)|₁ on the reference
//!   path; −λ_ms·|G(X_s, M(R₁, ·)) − G(X_s, M(R₂, ·))|₁, λ_ms decaying
//!   linearly to 0 (StarGAN-v2's diversity term); and λ_ak·L_ak (eq. 10–11):
//!   att_ak = (1 − |att_diff|) ⊙ (2·Y_s − 1), L_ak = |E(X_s, att_ak) −
//!   E(X_g^l, att_ak)|₁ through a frozen copy of E, so that only G steps on
//!   it (eq. 11's formula is not in our copy of the appendix; this is our
//!   reading of App. Fig. 1).
//!
//! Adam (0.5, 0.999) at 2e-4 for all networks (App. C); both rates decay
//! linearly to 0 from `decay_start` (default half of the steps). All
//! networks start from StarGAN-v2's He-normal initialisation
//! ([`seeded_he_init`]): with PyTorch's default (uniform, a third of the
//! variance) the tiny critic, which has no normalisation, barely learned
//! the attributes in 600 steps and G's edits did not follow att_diff
//! (docs/stages.md, BridgeGAN).

use std::path::Path;

use anyhow::{Result, bail};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::accumulate::{accumulate, apply};
use super::adam::Adam;
use super::losses::{bce_elements, gradient_penalty, l1, r1_penalty, scalar};
use super::st_gan::standard_normal;
use super::translation::lr_factor;
use super::{LogRow, Phase, PhaseEnv, batch_indices, frozen, log_row, run_phase, snapshot, vb_of};
use crate::data::celeba::Labels;
use crate::data::tensors::{grid_of_columns, tensor_to_rgb};
use crate::models::bridgegan::{Config, Critic, Encoder, GuidedEditor, keep_code};
use crate::models::seeded_he_init;

/// The adversarial loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Adversarial {
    /// WGAN-GP (λ_gp, n_critic).
    #[default]
    WganGp,
    /// StarGAN-v2's non-saturating loss with R1 (γ = 1).
    NonsaturatingR1,
}

/// The 14 attributes of the appendix's Tables 1–2.
pub const DEFAULT_ATTRIBUTES: [&str; 14] = [
    "Young",
    "Mouth_Slightly_Open",
    "Smiling",
    "Black_Hair",
    "Blond_Hair",
    "Brown_Hair",
    "Gray_Hair",
    "Receding_Hairline",
    "Bangs",
    "Male",
    "No_Beard",
    "Mustache",
    "Goatee",
    "Sideburns",
];

/// `[stages.<name>.bridgegan]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Options {
    /// CelebA attributes of att_diff (default: the 14 of Tables 1–2).
    pub attributes: Option<Vec<String>>,
    /// Critic updates (G, M and E every `n_critic`-th).
    pub steps: usize,
    /// Default 48 (App. C), 8 with preset `tiny`.
    pub batch_size: Option<usize>,
    pub lr: f64,
    pub d_lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub adversarial: Adversarial,
    pub lambda_gp: f64,
    pub n_critic: usize,
    pub lambda_cls: f64,
    pub lambda_rec: f64,
    pub lambda_cyc: f64,
    pub lambda_ms: f64,
    pub lambda_sty: f64,
    pub lambda_ak: f64,
    /// d: dimensions of M's noise R.
    pub noise_dim: usize,
    /// Step after which both learning rates decay linearly to 0 (default: half of `steps`).
    pub decay_start: Option<usize>,
    /// Rows per forward/backward pass (gradients summed over chunks).
    pub micro_batch: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            attributes: None,
            steps: 200_000,
            batch_size: None,
            lr: 2e-4,
            d_lr: 2e-4,
            beta1: 0.5,
            beta2: 0.999,
            adversarial: Adversarial::WganGp,
            lambda_gp: 10.0,
            n_critic: 5,
            lambda_cls: 10.0,
            lambda_rec: 100.0,
            lambda_cyc: 100.0,
            lambda_ms: 0.005,
            lambda_sty: 50.0,
            lambda_ak: 100.0,
            noise_dim: 16,
            decay_start: None,
            micro_batch: None,
        }
    }
}

impl Options {
    pub fn batch(&self, tiny: bool) -> usize {
        self.batch_size.unwrap_or(if tiny { 8 } else { 48 })
    }

    pub fn attribute_names(&self) -> Vec<String> {
        match &self.attributes {
            Some(v) => v.clone(),
            None => DEFAULT_ATTRIBUTES.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The network sizes for `n` attributes.
    pub fn network(&self, tiny: bool, n: usize) -> Config {
        let base = if tiny {
            Config::tiny(n)
        } else {
            Config::paper_128(n)
        };
        Config {
            noise_dim: self.noise_dim,
            ..base
        }
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        super::check_rates(&[("bridgegan.lr", self.lr), ("bridgegan.d_lr", self.d_lr)])?;
        super::check_betas(&[
            ("bridgegan.beta1", self.beta1),
            ("bridgegan.beta2", self.beta2),
        ])?;
        super::check_weights(&[
            ("bridgegan.lambda_gp", self.lambda_gp),
            ("bridgegan.lambda_cls", self.lambda_cls),
            ("bridgegan.lambda_rec", self.lambda_rec),
            ("bridgegan.lambda_cyc", self.lambda_cyc),
            ("bridgegan.lambda_ms", self.lambda_ms),
            ("bridgegan.lambda_sty", self.lambda_sty),
            ("bridgegan.lambda_ak", self.lambda_ak),
        ])?;
        if self.n_critic == 0 {
            return Err("bridgegan.n_critic must be at least 1".into());
        }
        if self.steps == 0 {
            return Err("bridgegan.steps must be at least 1".into());
        }
        if self.noise_dim == 0 {
            return Err("bridgegan.noise_dim must be at least 1".into());
        }
        if self.batch_size.is_some_and(|b| b < 2) {
            return Err(
                "bridgegan.batch_size must be at least 2 (targets are the batch's labels shuffled)"
                    .into(),
            );
        }
        if self.micro_batch == Some(0) {
            return Err("bridgegan.micro_batch must be at least 1".into());
        }
        if let Some(d) = self.decay_start
            && d > self.steps
        {
            return Err(format!(
                "bridgegan.decay_start = {d} is after the last step ({})",
                self.steps
            ));
        }
        Ok(())
    }
}

/// Noise R ~ N(0, I), (rows, d), from a seeded generator.
pub fn noise(rows: usize, d: usize, rng: &mut ChaCha8Rng, dev: &Device) -> Result<Tensor> {
    let v: Vec<f32> = (0..rows * d).map(|_| standard_normal(rng)).collect();
    Ok(Tensor::from_vec(v, (rows, d), dev)?)
}

/// The 0/1 values of `attrs` in `labels`, (rows, n).
pub fn attr_values(labels: &[Labels], attrs: &[usize]) -> Vec<f32> {
    labels
        .iter()
        .flat_map(|l| attrs.iter().map(move |&a| ((l >> a) & 1) as f32))
        .collect()
}

/// Training data (the same for every GAN phase).
pub use super::TrainSet;

/// What training produced.
pub struct Trained {
    pub log: Vec<LogRow>,
    pub summary: serde_json::Value,
    /// G, M and E (prefixes `g.`, `m.`, `e.`).
    pub generator: std::collections::HashMap<String, Tensor>,
    /// D + C.
    pub critic: std::collections::HashMap<String, Tensor>,
}

const D_LOSSES: [&str; 4] = ["D/loss", "D/adv", "D/cls", "D/gp"];
const G_LOSSES: [&str; 8] = [
    "G/loss", "G/adv", "G/cls", "G/rec", "G/cyc", "G/sty", "G/ms", "G/ak",
];

/// One step's batch: sources, their labels, targets and references.
struct Batch {
    idx: Vec<usize>,
    /// Row of the batch whose face and labels are each row's reference / target.
    perm: Vec<usize>,
    y_s: Tensor,
    y_t: Tensor,
    diff: Tensor,
    /// att_ak (eq. 10).
    keep: Tensor,
    r1: Tensor,
    r2: Tensor,
}

struct BridgePhase<'a> {
    data: &'a TrainSet<'a>,
    dev: Device,
    cfg: Config,
    attrs: Vec<usize>,
    opts: Options,
    batch: usize,
    seed: u64,
    g_vm: VarMap,
    ed: GuidedEditor,
    d_vm: VarMap,
    d: Critic,
    g_vars: Vec<Var>,
    d_vars: Vec<Var>,
    opt_g: Adam,
    opt_d: Adam,
    sample_rows: Vec<usize>,
}

impl<'a> BridgePhase<'a> {
    fn new(
        cfg: &Config,
        attrs: &[usize],
        opts: &Options,
        batch: usize,
        seed: u64,
        data: &'a TrainSet<'a>,
        dev: &Device,
    ) -> Result<Self> {
        let g_vm = VarMap::new();
        let ed = GuidedEditor::new(cfg, VarBuilder::from_varmap(&g_vm, DType::F32, dev))?;
        seeded_he_init(&g_vm, seed + 61)?;
        let d_vm = VarMap::new();
        let d = Critic::new(cfg, VarBuilder::from_varmap(&d_vm, DType::F32, dev))?;
        seeded_he_init(&d_vm, seed + 62)?;
        let pool = if data.val.is_empty() {
            &data.train
        } else {
            &data.val
        };
        Ok(BridgePhase {
            data,
            dev: dev.clone(),
            cfg: cfg.clone(),
            attrs: attrs.to_vec(),
            opts: opts.clone(),
            batch,
            seed: seed + 63,
            opt_g: Adam::with_betas(&g_vm, opts.lr, (opts.beta1, opts.beta2))?,
            opt_d: Adam::with_betas(&d_vm, opts.d_lr, (opts.beta1, opts.beta2))?,
            g_vars: g_vm.all_vars(),
            d_vars: d_vm.all_vars(),
            g_vm,
            ed,
            d_vm,
            d,
            sample_rows: pool.iter().copied().take(4).collect(),
        })
    }

    fn n(&self) -> usize {
        self.attrs.len()
    }

    fn batch_of(&self, idx: Vec<usize>, rng: &mut ChaCha8Rng) -> Result<Batch> {
        let (b, n, dev) = (idx.len(), self.n(), &self.dev);
        let labels: Vec<Labels> = idx.iter().map(|&i| self.data.faces.labels[i]).collect();
        let mut perm: Vec<usize> = (0..b).collect();
        perm.shuffle(rng);
        let src = attr_values(&labels, &self.attrs);
        let trg: Vec<f32> = perm
            .iter()
            .flat_map(|&p| src[p * n..(p + 1) * n].to_vec())
            .collect();
        let diff: Vec<f32> = trg.iter().zip(&src).map(|(t, s)| t - s).collect();
        let keep = keep_code(&diff, &src);
        let t = |v: Vec<f32>| Tensor::from_vec(v, (b, n), dev);
        Ok(Batch {
            r1: noise(b, self.cfg.noise_dim, rng, dev)?,
            r2: noise(b, self.cfg.noise_dim, rng, dev)?,
            y_s: t(src)?,
            y_t: t(trg)?,
            diff: t(diff)?,
            keep: t(keep)?,
            idx,
            perm,
        })
    }

    /// The adversarial value of fakes for the critic's loss, and of reals.
    fn critic_grads(&self, bt: &Batch, eps: &Tensor) -> Result<super::accumulate::Accumulated> {
        let (o, dev) = (&self.opts, &self.dev);
        let b = bt.idx.len();
        let n = self.n() as f64;
        let d = &self.d;
        accumulate(&self.d_vars, b, o.micro_batch, |s, k| {
            let share = k as f64 / b as f64;
            let rows = &bt.idx[s..s + k];
            let refs: Vec<usize> = bt.perm[s..s + k].iter().map(|&p| bt.idx[p]).collect();
            let x = self.data.faces.images(rows, dev)?;
            let x_r = self.data.faces.images(&refs, dev)?;
            let diff = bt.diff.narrow(0, s, k)?;
            let fake_l = self
                .ed
                .by_labels(&x, &bt.r1.narrow(0, s, k)?, &diff)?
                .detach();
            let fake_r = self.ed.by_reference(&x, &x_r, &diff)?.detach();
            let (adv_real, cls_real) = d.forward(&x)?;
            let d_fake_l = d.critic_value(&fake_l)?;
            let d_fake_r = d.critic_value(&fake_r)?;
            let (adv, pen) = match o.adversarial {
                Adversarial::WganGp => {
                    let fake = ((d_fake_l.mean_all()? + d_fake_r.mean_all()?)? * 0.5)?;
                    let adv = (fake - adv_real.mean_all()?)?;
                    let e = eps.narrow(0, s, k)?;
                    let gp = ((gradient_penalty(|t| d.critic_value(t), &x, &fake_l, &e)?
                        + gradient_penalty(|t| d.critic_value(t), &x, &fake_r, &e)?)?
                        * 0.5)?;
                    (adv, (gp * o.lambda_gp)?)
                }
                Adversarial::NonsaturatingR1 => {
                    let sp = |t: &Tensor| -> candle_core::Result<Tensor> {
                        bce_elements(t, &t.zeros_like()?)
                    };
                    let real = bce_elements(&adv_real, &adv_real.ones_like()?)?.mean_all()?;
                    let fake = ((sp(&d_fake_l)?.mean_all()? + sp(&d_fake_r)?.mean_all()?)? * 0.5)?;
                    let r1 = r1_penalty(|t| d.critic_value(t), &x, 1.0)?;
                    ((real + fake)?, r1)
                }
            };
            let cls = (bce_elements(&cls_real, &bt.y_s.narrow(0, s, k)?)?.mean_all()? * n)?;
            let adv = (adv * share)?;
            let cls = (cls * share)?;
            let pen = (pen * share)?;
            let loss = ((&adv + (&cls * o.lambda_cls)?)? + &pen)?;
            Ok([loss, adv, cls, pen])
        })
    }

    /// G, M and E's gradients (every term averaged over both paths).
    fn g_grads(&self, bt: &Batch, lambda_ms: f64) -> Result<super::accumulate::Accumulated<8>> {
        let (o, dev) = (&self.opts, &self.dev);
        let b = bt.idx.len();
        let n = self.n() as f64;
        let (d, ed) = (&self.d, &self.ed);
        // L_ak goes through a frozen copy of E: only G steps on it.
        let e_frozen = Encoder::new(&self.cfg, vb_of(&frozen(&self.g_vm), dev).pp("e"))?;
        accumulate(&self.g_vars, b, o.micro_batch, |s, k| {
            let share = k as f64 / b as f64;
            let rows = &bt.idx[s..s + k];
            let refs: Vec<usize> = bt.perm[s..s + k].iter().map(|&p| bt.idx[p]).collect();
            let x = self.data.faces.images(rows, dev)?;
            let x_r = self.data.faces.images(&refs, dev)?;
            let diff = bt.diff.narrow(0, s, k)?;
            let y_t = bt.y_t.narrow(0, s, k)?;
            let (r1, r2) = (bt.r1.narrow(0, s, k)?, bt.r2.narrow(0, s, k)?);
            let map_l = ed.m.forward(&r1, &diff)?;
            let map_r = ed.e.forward(&x_r, &diff)?;
            let x_l = ed.g.forward(&x, &map_l)?;
            let x_ref = ed.g.forward(&x, &map_r)?;
            let half = |a: Tensor, c: Tensor| -> candle_core::Result<Tensor> { (a + c)? * 0.5 };
            let (adv_l, cls_l) = d.forward(&x_l)?;
            let (adv_r, cls_r) = d.forward(&x_ref)?;
            let adv = match o.adversarial {
                Adversarial::WganGp => half(adv_l.mean_all()?.neg()?, adv_r.mean_all()?.neg()?)?,
                Adversarial::NonsaturatingR1 => half(
                    bce_elements(&adv_l, &adv_l.ones_like()?)?.mean_all()?,
                    bce_elements(&adv_r, &adv_r.ones_like()?)?.mean_all()?,
                )?,
            };
            let cls = (half(
                bce_elements(&cls_l, &y_t)?.mean_all()?,
                bce_elements(&cls_r, &y_t)?.mean_all()?,
            )? * n)?;
            let zero = diff.zeros_like()?;
            let rec = l1(&ed.g.forward(&x, &ed.m.forward(&r1, &zero)?)?, &x)?;
            let back = ed.e.forward(&x, &diff.neg()?)?;
            let cyc = half(
                l1(&ed.g.forward(&x_l, &back)?, &x)?,
                l1(&ed.g.forward(&x_ref, &back)?, &x)?,
            )?;
            let sty = half(
                l1(&ed.e.forward(&x_l, &diff)?, &map_l)?,
                l1(&ed.e.forward(&x_ref, &diff)?, &map_r)?,
            )?;
            let ms = l1(&x_l, &ed.g.forward(&x, &ed.m.forward(&r2, &diff)?)?)?;
            let keep = bt.keep.narrow(0, s, k)?;
            let ak = l1(
                &e_frozen.forward(&x, &keep)?.detach(),
                &e_frozen.forward(&x_l, &keep)?,
            )?;
            let terms = [adv, cls, rec, cyc, sty, ms, ak].map(|t| t * share);
            let [adv, cls, rec, cyc, sty, ms, ak] = terms;
            let (adv, cls, rec, cyc, sty, ms, ak) = (adv?, cls?, rec?, cyc?, sty?, ms?, ak?);
            let loss = (((((((&adv + (&cls * o.lambda_cls)?)? + (&rec * o.lambda_rec)?)?
                + (&cyc * o.lambda_cyc)?)?
                + (&sty * o.lambda_sty)?)?
                - (&ms * lambda_ms)?)?)
                + (&ak * o.lambda_ak)?)?;
            Ok([loss, adv, cls, rec, cyc, sty, ms, ak])
        })
    }

    fn editor_copy(&self) -> Result<GuidedEditor> {
        Ok(GuidedEditor::new(
            &self.cfg,
            vb_of(&frozen(&self.g_vm), &self.dev),
        )?)
    }
}

impl Phase for BridgePhase<'_> {
    fn step(&mut self, step: usize) -> Result<Vec<(&'static str, f64)>> {
        let o = &self.opts;
        let f = lr_factor(o.steps, o.decay_start, step);
        self.opt_g.set_learning_rate(o.lr * f);
        self.opt_d.set_learning_rate(o.d_lr * f);
        let idx: Vec<usize> = batch_indices(self.data.train.len(), self.batch, self.seed, step)
            .into_iter()
            .map(|i| self.data.train[i])
            .collect();
        let mut rng =
            ChaCha8Rng::seed_from_u64(self.seed ^ (step as u64).wrapping_mul(0x9E37_79B9));
        let bt = self.batch_of(idx, &mut rng)?;
        let eps: Vec<f32> = (0..bt.idx.len()).map(|_| rng.random::<f32>()).collect();
        let eps = Tensor::from_vec(eps, (bt.idx.len(), 1, 1, 1), &self.dev)?;
        let acc = self.critic_grads(&bt, &eps)?;
        let mut out = apply(&mut self.opt_d, D_LOSSES, acc)?;
        if step.is_multiple_of(self.opts.n_critic) {
            // λ_ms decays linearly to 0 over the run (StarGAN-v2).
            let lambda_ms = self.opts.lambda_ms * (1.0 - step as f64 / self.opts.steps as f64);
            let acc = self.g_grads(&bt, lambda_ms)?;
            out.extend(apply(&mut self.opt_g, G_LOSSES, acc)?);
        }
        out.push(("lr", self.opts.lr * f));
        Ok(out)
    }

    fn sample(&mut self, path: &Path) -> Result<()> {
        let ed = self.editor_copy()?;
        let x = self.data.faces.images(&self.sample_rows, &self.dev)?;
        let labels: Vec<Labels> = self
            .sample_rows
            .iter()
            .map(|&i| self.data.faces.labels[i])
            .collect();
        flip_grid(&ed, &self.attrs, &x, &labels, self.cfg.noise_dim, self.seed)?.save(path)?;
        Ok(())
    }

    fn nets(&self) -> Vec<(&'static str, &VarMap)> {
        vec![("generator", &self.g_vm), ("critic", &self.d_vm)]
    }

    fn optimizers(&mut self) -> Vec<(&'static str, &mut Adam)> {
        vec![("generator", &mut self.opt_g), ("critic", &mut self.opt_d)]
    }
}

/// Per source face (a row): the face, then its label-guided edit with each
/// attribute flipped (App. Figs. 14–19).
pub fn flip_grid(
    ed: &GuidedEditor,
    attrs: &[usize],
    x: &Tensor,
    labels: &[Labels],
    noise_dim: usize,
    seed: u64,
) -> Result<image::RgbImage> {
    let (b, n, dev) = (x.dim(0)?, attrs.len(), x.device().clone());
    let src = attr_values(labels, attrs);
    let r = noise(b, noise_dim, &mut ChaCha8Rng::seed_from_u64(seed), &dev)?;
    let mut cols = vec![tensor_to_rgb(x)?];
    let src = &src;
    for j in 0..n {
        let diff: Vec<f32> = (0..b)
            .flat_map(|row| {
                (0..n).map(move |c| {
                    if c == j {
                        1.0 - 2.0 * src[row * n + c]
                    } else {
                        0.0
                    }
                })
            })
            .collect();
        let diff = Tensor::from_vec(diff, (b, n), &dev)?;
        cols.push(tensor_to_rgb(&ed.by_labels(x, &r, &diff)?)?);
    }
    Ok(grid_of_columns(&cols))
}

/// App. Figs. 11–12: the source faces `x` along the top, the references
/// `refs` down the side, and in each cell the source edited by its
/// reference, G(x_j, E(ref_i, Y_ref,i − Y_src,j)) over `attrs`.
pub fn reference_grid(
    ed: &GuidedEditor,
    attrs: &[usize],
    x: &Tensor,
    labels: &[Labels],
    refs: &Tensor,
    ref_labels: &[Labels],
) -> Result<image::RgbImage> {
    let (b, n, dev) = (x.dim(0)?, attrs.len(), x.device().clone());
    let (src, tgt) = (attr_values(labels, attrs), attr_values(ref_labels, attrs));
    let sources = tensor_to_rgb(x)?;
    let references = tensor_to_rgb(refs)?;
    let (w, h) = sources.first().map(|i| i.dimensions()).unwrap_or((1, 1));
    let mut cells = vec![image::RgbImage::from_pixel(
        w,
        h,
        image::Rgb([255, 255, 255]),
    )];
    cells.extend(sources);
    for (i, reference) in references.into_iter().enumerate() {
        let diff: Vec<f32> = (0..b)
            .flat_map(|j| (0..n).map(move |c| (j, c)))
            .map(|(j, c)| tgt[i * n + c] - src[j * n + c])
            .collect();
        let diff = Tensor::from_vec(diff, (b, n), &dev)?;
        let r = refs.narrow(0, i, 1)?.repeat((b, 1, 1, 1))?;
        cells.push(reference);
        cells.extend(tensor_to_rgb(&ed.by_reference(x, &r, &diff)?)?);
    }
    Ok(crate::data::tensors::grid(&cells, b + 1))
}

/// Val measures, in order: C's classification loss on real faces; under
/// `judge`, G's classification loss on one-attribute label edits against
/// their targets Y_t, and the same loss of the unedited reconstruction
/// G(x, M(R, 0)) against Y_t (what an editor that ignores att_diff scores);
/// and L1(G(x, M(R, 0)), x).
fn measure(ed: &GuidedEditor, d: &Critic, judge: &Critic, v: &ValSet) -> Result<[f64; 4]> {
    let ValSet {
        data,
        attrs,
        rows,
        cfg,
        seed,
        dev,
    } = *v;
    let n = attrs.len();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut c_real, mut g_cls, mut unedited, mut rec, mut count) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for chunk in rows.chunks(32) {
        let k = chunk.len();
        let x = data.faces.images(chunk, dev)?;
        let labels: Vec<Labels> = chunk.iter().map(|&i| data.faces.labels[i]).collect();
        let src = attr_values(&labels, attrs);
        let mut diff = vec![0f32; k * n];
        let mut trg = src.clone();
        for row in 0..k {
            let j = rng.random_range(0..n);
            diff[row * n + j] = 1.0 - 2.0 * src[row * n + j];
            trg[row * n + j] = 1.0 - src[row * n + j];
        }
        let t = |v: Vec<f32>| Tensor::from_vec(v, (k, n), dev);
        let r = noise(k, cfg.noise_dim, &mut rng, dev)?;
        let y = ed.by_labels(&x, &r, &t(diff)?)?;
        let (_, cls_real) = d.forward(&x)?;
        c_real += scalar(&bce_elements(&cls_real, &t(src)?)?.mean_all()?)? * k as f64;
        let trg = t(trg)?;
        let (_, cls_fake) = judge.forward(&y)?;
        g_cls += scalar(&bce_elements(&cls_fake, &trg)?.mean_all()?)? * k as f64;
        let zero = Tensor::zeros((k, n), DType::F32, dev)?;
        let kept = ed.by_labels(&x, &r, &zero)?;
        let (_, cls_kept) = judge.forward(&kept)?;
        unedited += scalar(&bce_elements(&cls_kept, &trg)?.mean_all()?)? * k as f64;
        rec += scalar(&l1(&kept, &x)?)? * k as f64;
        count += k as f64;
    }
    let c = count.max(1.0);
    Ok([c_real / c, g_cls / c, unedited / c, rec / c])
}

/// The val faces [`measure`] edits, with the same edits (from `seed`) each time.
#[derive(Clone, Copy)]
struct ValSet<'a> {
    data: &'a TrainSet<'a>,
    attrs: &'a [usize],
    rows: &'a [usize],
    cfg: &'a Config,
    seed: u64,
    dev: &'a Device,
}

/// What one `bridgegan` phase trains: the network sizes, the CelebA indices
/// of att_diff's attributes, the options, the batch and the seed.
pub struct Job<'a> {
    pub cfg: &'a Config,
    pub attrs: &'a [usize],
    pub opts: &'a Options,
    pub batch: usize,
    pub seed: u64,
}

/// Runs the `bridgegan` phase (resuming where `env.dir` has checkpoints).
pub fn train(job: &Job, data: &TrainSet, dev: &Device, env: &PhaseEnv) -> Result<Trained> {
    let Job {
        cfg,
        attrs,
        opts,
        batch,
        seed,
    } = *job;
    if data.train.len() < 2 {
        bail!("bridgegan needs at least 2 training rows");
    }
    crate::train::require_second_order_gradients()?;
    let mut p = BridgePhase::new(cfg, attrs, opts, batch, seed, data, dev)?;
    let g0 = snapshot(&p.g_vm)?;
    let d0 = snapshot(&p.d_vm)?;
    let r = run_phase(env, "bridgegan", opts.steps, &mut p)?;
    let val: Vec<usize> = if data.val.is_empty() {
        data.train.iter().copied().take(64).collect()
    } else {
        data.val.iter().copied().take(64).collect()
    };
    let ed0 = GuidedEditor::new(cfg, vb_of(&g0, dev))?;
    let dc0 = Critic::new(cfg, vb_of(&d0, dev))?;
    let ed1 = p.editor_copy()?;
    let dc1 = Critic::new(cfg, vb_of(&frozen(&p.d_vm), dev))?;
    // Both G judged by the final C (the initial C's class head is untrained).
    let seed_m = seed + 64;
    let v = ValSet {
        data,
        attrs,
        rows: &val,
        cfg,
        seed: seed_m,
        dev,
    };
    let [c0, g_cls0, kept0, rec0] = measure(&ed0, &dc0, &dc1, &v)?;
    let [c1, g_cls1, kept1, rec1] = measure(&ed1, &dc1, &dc1, &v)?;
    let mut log = r.log;
    let steps = opts.steps;
    let mut summary = serde_json::json!({
        "steps": steps,
        "batch_size": batch,
        "wall_time_s": r.wall_time_s,
        "val_rows": val.len(),
    });
    for (name, a, b) in [
        ("val/critic_cls", c0, c1),
        ("val/g_cls", g_cls0, g_cls1),
        ("val/g_cls_unedited", kept0, kept1),
        ("val/rec_l1", rec0, rec1),
    ] {
        log.push(log_row("bridgegan", 0, name, a));
        log.push(log_row("bridgegan", steps, name, b));
        summary[format!("{}_init", &name[4..])] = a.into();
        summary[&name[4..]] = b.into();
    }
    Ok(Trained {
        log,
        summary,
        generator: frozen(&p.g_vm),
        critic: frozen(&p.d_vm),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_options_get_one_line_each() {
        let bad = |o: Options| o.validate().unwrap_err();
        assert_eq!(
            bad(Options {
                lambda_ak: -1.0,
                ..Default::default()
            }),
            "bridgegan.lambda_ak = -1: must be 0 or positive"
        );
        assert_eq!(
            bad(Options {
                lr: f64::NAN,
                ..Default::default()
            }),
            "bridgegan.lr = NaN: must be a positive number"
        );
        assert!(
            bad(Options {
                n_critic: 0,
                ..Default::default()
            })
            .contains("n_critic")
        );
        let e: std::result::Result<Options, _> = toml::from_str("adversarial = \"x\"");
        assert!(e.unwrap_err().to_string().contains("wgan_gp"));
    }

    #[test]
    fn attribute_values_and_noise_follow_the_inputs() {
        let labels: Vec<Labels> = vec![0b101, 0b010];
        assert_eq!(
            attr_values(&labels, &[0, 1, 2]),
            vec![1., 0., 1., 0., 1., 0.]
        );
        let dev = Device::Cpu;
        let a = noise(3, 4, &mut ChaCha8Rng::seed_from_u64(1), &dev).unwrap();
        let b = noise(3, 4, &mut ChaCha8Rng::seed_from_u64(1), &dev).unwrap();
        assert_eq!(a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
    }

    /// Two R or two references give different edits, and a mixed batch
    /// gives each row the edit of its own kind.
    #[test]
    fn noise_and_references_change_the_edit_and_mixed_batches_match() {
        let dev = Device::Cpu;
        let cfg = Config::tiny(3);
        let vm = VarMap::new();
        let ed = GuidedEditor::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let s = cfg.image_size;
        let img = |rng: &mut ChaCha8Rng| {
            let v: Vec<f32> = (0..3 * s * s)
                .map(|_| standard_normal(rng).tanh())
                .collect();
            Tensor::from_vec(v, (1, 3, s, s), &dev).unwrap()
        };
        let x = Tensor::cat(&[img(&mut rng), img(&mut rng)], 0).unwrap();
        let diff = Tensor::new(&[[1f32, 0., -1.], [0., 1., 0.]], &dev).unwrap();
        let r1 = noise(2, cfg.noise_dim, &mut rng, &dev).unwrap();
        let r2 = noise(2, cfg.noise_dim, &mut rng, &dev).unwrap();
        let dist = |a: &Tensor, b: &Tensor| -> f32 {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_keepdim(0)
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        let e1 = ed.by_labels(&x, &r1, &diff).unwrap();
        let e2 = ed.by_labels(&x, &r2, &diff).unwrap();
        assert!(dist(&e1, &e2) > 1e-3, "two R gave the same edit");
        let (ref1, ref2) = (img(&mut rng), img(&mut rng));
        let f1 = ed
            .by_reference(&x, &ref1.repeat((2, 1, 1, 1)).unwrap(), &diff)
            .unwrap();
        let f2 = ed
            .by_reference(&x, &ref2.repeat((2, 1, 1, 1)).unwrap(), &diff)
            .unwrap();
        assert!(dist(&f1, &f2) > 1e-3, "two references gave the same edit");
        // Row 0 by reference 1, row 1 by labels with R₁.
        let m = ed.mixed(&x, &r1, &diff, &[Some(ref1), None]).unwrap();
        // Equal up to rounding: M and E run on a sub-batch, which changes
        // gemm's blocking.
        let (d0, d1) = (
            dist(&m.narrow(0, 0, 1).unwrap(), &f1.narrow(0, 0, 1).unwrap()),
            dist(&m.narrow(0, 1, 1).unwrap(), &e1.narrow(0, 1, 1).unwrap()),
        );
        assert!(d0 < 1e-4 && d1 < 1e-4, "{d0} {d1}");
        assert!(ed.mixed(&x, &r1, &diff, &[None]).is_err());
    }
}
