//! Training of the translation generators, image = G(source, target labels),
//! with WGAN-GP (Gulrajani et al. 2017; λ_gp = 10) in one checkpointed phase.
//!
//! - SG-GAN (Zhang et al. Sec. 3.2 and 4, eq. 2–8; official TensorFlow code):
//!   G maps x to one image per value of each selected attribute. The critic
//!   D minimises Σ_o (E[D(G(x)^o)] − E[D(x)]) + λ_cls·ℓ_d_cls +
//!   λ_gp·Σ_o GP_o, where ℓ_d_cls, the softmax loss of each attribute's head,
//!   counts only (image, attribute) pairs that are *group-labelled*
//!   (sparsely grouped training: the rest are mixed data, adversarial term
//!   only, eq. 6). G minimises λ_cls·Σ_o ℓ_g_cls(o) − Σ_o E[D(G(x)^o)] +
//!   α·ℓ_rec with eq. 5's reconstruction: for attribute j, G(G(x)^{j,0})^{j,1}
//!   ≈ G(x)^{j,1} and G(G(x)^{j,1})^{j,0} ≈ G(x)^{j,0} (mean absolute error).
//!   Sums over outputs and the mean L1 follow the official code.
//! - StarGAN (Choi et al. 2018, official PyTorch code): targets are the
//!   batch's labels in a random order; D minimises −E[D(x)] + E[D(G(x, c'))] +
//!   λ_cls·BCE(D_cls(x), c) + λ_gp·GP; G minimises −E[D(G(x, c'))] +
//!   λ_cls·BCE(D_cls(G(x, c')), c') + λ_rec·|x − G(G(x, c'), c)|₁. BCE is
//!   summed over attributes and averaged over the batch, as the official code.
//!
//! Every step updates the critic; every `n_critic`-th step also updates G.
//! Both learning rates decay linearly to 0 from `decay_start` (default: half
//! of the steps) to the last step. The classification of a binary attribute
//! as a two-way softmax equals a logistic loss on the logit difference,
//! which is how it is computed here.

use std::path::Path;

use anyhow::{Result, bail};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, VarBuilder, VarMap};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::losses::{bce_elements, gradient_penalty, scalar};
use super::{LogRow, Phase, PhaseEnv, batch_indices, log_row as row, run_phase};
use super::{frozen, vb_of};
use crate::data::celeba::Labels;
use crate::data::tensors::{FaceSet, grid, tensor_to_rgb};
use crate::models::critic::{self, Critic};
use crate::models::seeded_init;
use crate::models::translator::{self, Kind, Translator};

/// Losses and schedule (config section `[stages.<name>.translation]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TranslationOptions {
    /// Attributes G edits (CelebA names). Default: SG-GAN's gender, smile
    /// and hair colour (`Male`, `Smiling`, `Black_Hair`, `Blond_Hair`);
    /// StarGAN's official five (`Black_Hair`, `Blond_Hair`, `Brown_Hair`,
    /// `Male`, `Young`).
    pub attributes: Option<Vec<String>>,
    /// Iterations (critic updates). Default: 20,000 (SG-GAN Sec. 4) or
    /// 200,000 (StarGAN's official `num_iters`).
    pub steps: Option<usize>,
    /// Learning rate of G.
    pub lr: f64,
    /// Learning rate of the critic.
    pub d_lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// Critic updates per generator update.
    pub n_critic: usize,
    pub lambda_gp: f64,
    pub lambda_cls: f64,
    /// α of SG-GAN's eq. 7, λ_rec of StarGAN.
    pub lambda_rec: f64,
    /// Step after which both learning rates decay linearly to 0 (default: half of `steps`).
    pub decay_start: Option<usize>,
    /// SG-GAN: fraction of training images that keep their labels.
    pub labelled_fraction: Option<f64>,
    /// SG-GAN: images per value of each attribute that keep that label
    /// (SG-GAN(500), SG-GAN(5000)).
    pub labelled_per_value: Option<usize>,
    /// Rows per forward/backward pass. A step's gradients are summed over
    /// its chunks, so the update equals the whole batch's (up to rounding)
    /// in less memory. Default: the whole batch.
    pub micro_batch: Option<usize>,
}

impl Default for TranslationOptions {
    fn default() -> Self {
        TranslationOptions {
            attributes: None,
            steps: None,
            lr: 1e-4,
            d_lr: 1e-4,
            beta1: 0.5,
            beta2: 0.999,
            n_critic: 5,
            lambda_gp: 10.0,
            lambda_cls: 1.0,
            lambda_rec: 10.0,
            decay_start: None,
            labelled_fraction: None,
            labelled_per_value: None,
            micro_batch: None,
        }
    }
}

impl TranslationOptions {
    pub fn default_attributes(kind: Kind) -> Vec<&'static str> {
        match kind {
            Kind::Sggan => vec!["Male", "Smiling", "Black_Hair", "Blond_Hair"],
            Kind::Stargan => vec!["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"],
        }
    }

    pub fn steps(&self, kind: Kind) -> usize {
        self.steps.unwrap_or(match kind {
            Kind::Sggan => 20_000,
            Kind::Stargan => 200_000,
        })
    }

    pub fn validate(&self, kind: Kind) -> std::result::Result<(), String> {
        for (key, v) in [("translation.lr", self.lr), ("translation.d_lr", self.d_lr)] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(format!("{key} = {v}: must be a positive number"));
            }
        }
        for (key, v) in [
            ("translation.beta1", self.beta1),
            ("translation.beta2", self.beta2),
        ] {
            if !(0.0..1.0).contains(&v) {
                return Err(format!("{key} = {v}: must be in [0, 1)"));
            }
        }
        for (key, v) in [
            ("translation.lambda_gp", self.lambda_gp),
            ("translation.lambda_cls", self.lambda_cls),
            ("translation.lambda_rec", self.lambda_rec),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(format!("{key} = {v}: must be 0 or positive"));
            }
        }
        if self.n_critic == 0 {
            return Err("translation.n_critic must be at least 1".into());
        }
        if self.steps == Some(0) {
            return Err("translation.steps must be at least 1".into());
        }
        if let Some(d) = self.decay_start
            && d > self.steps(kind)
        {
            return Err(format!(
                "translation.decay_start = {d} is after the last step ({})",
                self.steps(kind)
            ));
        }
        match (kind, self.labelled_fraction, self.labelled_per_value) {
            (_, Some(_), Some(_)) => {
                return Err(
                    "set one of translation.labelled_fraction and translation.labelled_per_value"
                        .into(),
                );
            }
            (Kind::Stargan, Some(_), _) | (Kind::Stargan, _, Some(_)) => {
                return Err("labelled_fraction / labelled_per_value are SG-GAN's sparse grouping; StarGAN trains on fully labelled data".into());
            }
            (_, Some(f), _) if !(f > 0.0 && f <= 1.0) => {
                return Err(format!(
                    "translation.labelled_fraction = {f}: must be in (0, 1]"
                ));
            }
            (_, _, Some(0)) => {
                return Err("translation.labelled_per_value must be at least 1".into());
            }
            _ => {}
        }
        Ok(())
    }
}

/// Which (training row, attribute) pairs keep their label: bit j of
/// `mask[i]` is set when row i is group-labelled for attribute j.
pub fn labelled_mask(
    labels: &[Labels],
    attrs: &[usize],
    opts: &TranslationOptions,
    seed: u64,
) -> Vec<u64> {
    let n = labels.len();
    let all = (1u64 << attrs.len()) - 1;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    if let Some(f) = opts.labelled_fraction {
        let mut rows: Vec<usize> = (0..n).collect();
        rows.shuffle(&mut rng);
        let k = ((f * n as f64).round() as usize).clamp(1, n.max(1));
        let mut mask = vec![0u64; n];
        for &r in rows.iter().take(k) {
            mask[r] = all;
        }
        mask
    } else if let Some(k) = opts.labelled_per_value {
        let mut mask = vec![0u64; n];
        for (j, &a) in attrs.iter().enumerate() {
            for v in [false, true] {
                let mut rows: Vec<usize> = (0..n)
                    .filter(|&r| ((labels[r] >> a) & 1 == 1) == v)
                    .collect();
                rows.shuffle(&mut rng);
                for &r in rows.iter().take(k) {
                    mask[r] |= 1 << j;
                }
            }
        }
        mask
    } else {
        vec![all; n]
    }
}

/// Training data: rows of `faces` (at the translator's size).
pub struct Data<'a> {
    pub faces: &'a FaceSet,
    pub train: Vec<usize>,
    pub val: Vec<usize>,
}

/// What training produced.
pub struct Trained {
    pub log: Vec<LogRow>,
    pub summary: serde_json::Value,
    pub generator: std::collections::HashMap<String, Tensor>,
    pub critic: std::collections::HashMap<String, Tensor>,
    /// Per training row (in `data.train` order), the labelled-attribute bits.
    pub labelled: Vec<u64>,
}

/// The translator together with its attributes: the inference side, shared
/// by training samples, evaluation and the synthesize stage.
pub struct Editor<'a> {
    pub g: &'a Translator,
    pub kind: Kind,
    /// CelebA indices of the edited attributes.
    pub attrs: &'a [usize],
}

impl Editor<'_> {
    /// Labels of `rows` restricted to the edited attributes, (B, n) in {0, 1}.
    pub fn attr_tensor(&self, labels: &[Labels], dev: &Device) -> Result<Tensor> {
        let v: Vec<f32> = labels
            .iter()
            .flat_map(|l| self.attrs.iter().map(move |&a| ((l >> a) & 1) as f32))
            .collect();
        Ok(Tensor::from_vec(v, (labels.len(), self.attrs.len()), dev)?)
    }

    /// Each image under every value of every attribute: (B, 2n, 3, H, W),
    /// output 2j + v setting attribute j to v (StarGAN: the source labels
    /// with that one attribute set).
    pub fn all_values(&self, x: &Tensor, source: &[Labels]) -> Result<Tensor> {
        match self.kind {
            Kind::Sggan => Ok(self.g.forward(x, None)?),
            Kind::Stargan => {
                let mut outs = Vec::new();
                for &a in self.attrs {
                    for v in [0u64, 1] {
                        let l: Vec<Labels> =
                            source.iter().map(|s| (s & !(1 << a)) | (v << a)).collect();
                        outs.push(
                            self.g
                                .forward(x, Some(&self.attr_tensor(&l, x.device())?))?,
                        );
                    }
                }
                Ok(Tensor::stack(&outs, 1)?)
            }
        }
    }

    /// x edited from `source` to `target` labels. Attributes outside
    /// `attrs` are the caller's business. SG-GAN edits one attribute at a
    /// time (output 2j + target_j of each attribute whose value changes; a
    /// row with no change takes the first attribute's own-value output);
    /// StarGAN takes the target labels at once.
    pub fn edit(&self, x: &Tensor, source: &[Labels], target: &[Labels]) -> Result<Tensor> {
        let dev = x.device();
        match self.kind {
            Kind::Stargan => Ok(self.g.forward(x, Some(&self.attr_tensor(target, dev)?))?),
            Kind::Sggan => {
                let b = source.len();
                let mut cur = x.clone();
                let untouched: Vec<bool> = (0..b)
                    .map(|r| {
                        self.attrs
                            .iter()
                            .all(|&a| (source[r] ^ target[r]) >> a & 1 == 0)
                    })
                    .collect();
                for (j, &a) in self.attrs.iter().enumerate() {
                    let pick: Vec<Option<u64>> = (0..b)
                        .map(|r| {
                            let changes = (source[r] ^ target[r]) >> a & 1 == 1;
                            (changes || (j == 0 && untouched[r])).then_some((target[r] >> a) & 1)
                        })
                        .collect();
                    if pick.iter().all(Option::is_none) {
                        continue;
                    }
                    let y = self.g.forward(&cur, None)?;
                    let rows: Vec<Tensor> = (0..b)
                        .map(|r| match pick[r] {
                            Some(v) => y.get(r)?.get(2 * j + v as usize),
                            None => cur.get(r),
                        })
                        .collect::<candle_core::Result<_>>()?;
                    cur = Tensor::stack(&rows, 0)?;
                }
                Ok(cur)
            }
        }
    }
}

impl Editor<'_> {
    /// Per image, the fraction of the edited attributes on which `critic`'s
    /// classification head agrees with the target labels.
    pub fn critic_agreement(
        &self,
        critic: &Critic,
        y: &Tensor,
        target: &[Labels],
    ) -> Result<Vec<f64>> {
        let (_, logits) = critic.forward(y)?;
        let logit = match self.kind {
            Kind::Sggan => value_logit(&logits, self.attrs.len())?,
            Kind::Stargan => logits,
        };
        let pred = logit.gt(0.0)?.to_dtype(DType::F32)?;
        let t = self.attr_tensor(target, y.device())?;
        let agree = pred.eq(&t)?.to_dtype(DType::F64)?.mean(1)?;
        Ok(agree.to_vec1::<f64>()?)
    }
}

fn adam(vm: &VarMap, lr: f64, o: &TranslationOptions) -> Result<AdamW> {
    Ok(AdamW::new(
        vm.all_vars(),
        candle_nn::ParamsAdamW {
            lr,
            beta1: o.beta1,
            beta2: o.beta2,
            eps: 1e-8,
            weight_decay: 0.0,
        },
    )?)
}

/// The learning-rate multiplier at `step` of `steps`: 1 up to `decay_start`
/// (default half of the steps), then linearly down to 0 at the last step.
pub fn lr_factor(steps: usize, decay_start: Option<usize>, step: usize) -> f64 {
    let start = decay_start.unwrap_or(steps / 2);
    if step <= start || steps <= start {
        1.0
    } else {
        steps.saturating_sub(step) as f64 / (steps - start) as f64
    }
}

/// SG-GAN's per-attribute softmax logits as logit differences: (B, n) of
/// l_{j,1} − l_{j,0} from (B, 2n) logits.
fn value_logit(cls: &Tensor, n: usize) -> candle_core::Result<Tensor> {
    let pairs = cls.reshape((cls.dim(0)?, n, 2))?;
    pairs.narrow(2, 1, 1)?.squeeze(2)? - pairs.narrow(2, 0, 1)?.squeeze(2)?
}

const D_LOSSES: [&str; 4] = ["D/loss", "D/wasserstein", "D/cls", "D/gp"];
const G_LOSSES: [&str; 4] = ["G/loss", "G/adv", "G/cls", "G/rec"];

struct TranslationPhase<'a> {
    data: &'a Data<'a>,
    dev: Device,
    kind: Kind,
    attrs: Vec<usize>,
    opts: TranslationOptions,
    steps: usize,
    batch: usize,
    seed: u64,
    /// Labelled bits per row of `data.faces` (0 for rows outside train).
    labelled: Vec<u64>,
    g_cfg: translator::Config,
    /// The variables of `g_vm` and `d_vm`, in the optimisers' order.
    g_vars: Vec<Var>,
    d_vars: Vec<Var>,
    g_vm: VarMap,
    g: Translator,
    d_vm: VarMap,
    d: Critic,
    opt_g: AdamW,
    opt_d: AdamW,
    sample_rows: Vec<usize>,
}

impl<'a> TranslationPhase<'a> {
    /// Freshly initialised networks (seeded from `seed`) and optimisers.
    #[allow(clippy::too_many_arguments)]
    fn new(
        kind: Kind,
        nets: &(translator::Config, critic::Config),
        attrs: &[usize],
        opts: &TranslationOptions,
        batch: usize,
        seed: u64,
        data: &'a Data<'a>,
        dev: &Device,
        labelled: Vec<u64>,
    ) -> Result<Self> {
        let g_vm = VarMap::new();
        let g = Translator::new(&nets.0, VarBuilder::from_varmap(&g_vm, DType::F32, dev))?;
        seeded_init(&g_vm, seed + 21)?;
        let d_vm = VarMap::new();
        let d = Critic::new(&nets.1, VarBuilder::from_varmap(&d_vm, DType::F32, dev))?;
        seeded_init(&d_vm, seed + 22)?;
        let sample_rows: Vec<usize> = if data.val.is_empty() {
            data.train.iter().copied().take(6).collect()
        } else {
            data.val.iter().copied().take(6).collect()
        };
        Ok(TranslationPhase {
            data,
            dev: dev.clone(),
            kind,
            attrs: attrs.to_vec(),
            opts: opts.clone(),
            steps: opts.steps(kind),
            batch,
            seed: seed + 23,
            labelled,
            opt_g: adam(&g_vm, opts.lr, opts)?,
            opt_d: adam(&d_vm, opts.d_lr, opts)?,
            g_cfg: nets.0.clone(),
            g_vars: g_vm.all_vars(),
            d_vars: d_vm.all_vars(),
            g_vm,
            g,
            d_vm,
            d,
            sample_rows,
        })
    }

    fn n(&self) -> usize {
        self.attrs.len()
    }

    fn editor<'b>(&'b self, g: &'b Translator) -> Editor<'b> {
        Editor {
            g,
            kind: self.kind,
            attrs: &self.attrs,
        }
    }

    fn labels_of(&self, idx: &[usize]) -> Vec<Labels> {
        idx.iter().map(|&i| self.data.faces.labels[i]).collect()
    }

    fn mask_tensor(&self, idx: &[usize]) -> Result<Tensor> {
        let n = self.n();
        let v: Vec<f32> = idx
            .iter()
            .flat_map(|&i| (0..n).map(move |j| ((self.labelled[i] >> j) & 1) as f32))
            .collect();
        Ok(Tensor::from_vec(v, (idx.len(), n), &self.dev)?)
    }

    fn eps(&self, rng: &mut ChaCha8Rng, rows: usize) -> Result<Tensor> {
        let v: Vec<f32> = (0..rows).map(|_| rng.random::<f32>()).collect();
        Ok(Tensor::from_vec(v, (rows, 1, 1, 1), &self.dev)?)
    }

    /// The critic's SG-GAN gradients on rows `idx` (one draw of ε from `rng`).
    fn critic_grads_sggan(&self, idx: &[usize], rng: &mut ChaCha8Rng) -> Result<Accumulated> {
        let n = self.n();
        let m = 2 * n;
        let b = idx.len();
        let o = &self.opts;
        let ed = self.editor(&self.g);
        let labels = self.labels_of(idx);
        let mask = self.mask_tensor(idx)?;
        let labelled = scalar(&mask.sum_all()?)?.max(1.0);
        let eps = self.eps(rng, b * m)?;
        let d = &self.d;
        accumulate(&self.d_vars, b, o.micro_batch, |s, k| {
            let share = k as f64 / b as f64;
            let x = self.data.faces.images(&idx[s..s + k], &self.dev)?;
            let (_, c, h, w) = x.dims4()?;
            let lab = ed.attr_tensor(&labels[s..s + k], &self.dev)?;
            let fakes = self
                .g
                .forward(&x, None)?
                .reshape((k * m, c, h, w))?
                .detach();
            let (adv_real, cls_real) = d.forward(&x)?;
            let d_real = adv_real.mean_all()?;
            let d_fake = d.critic_value(&fakes)?.mean_all()?;
            let wdist = ((&d_real - &d_fake)? * share)?;
            let ce = bce_elements(&value_logit(&cls_real, n)?, &lab)?;
            let d_cls = ((&ce * &mask.narrow(0, s, k)?)?.sum_all()? / labelled)?;
            let x_rep = x
                .unsqueeze(1)?
                .broadcast_as((k, m, c, h, w))?
                .reshape((k * m, c, h, w))?;
            let e = eps.narrow(0, s * m, k * m)?;
            let gp = (gradient_penalty(|t| d.critic_value(t), &x_rep, &fakes, &e)?
                * (m as f64 * share))?;
            let loss = ((wdist.neg()? * m as f64)? + (&d_cls * o.lambda_cls)?)?
                .add(&(&gp * o.lambda_gp)?)?;
            Ok([loss, wdist, d_cls, gp])
        })
    }

    /// G's SG-GAN gradients on rows `idx`.
    fn g_grads_sggan(&self, idx: &[usize]) -> Result<Accumulated> {
        let n = self.n();
        let m = 2 * n;
        let b = idx.len();
        let o = &self.opts;
        accumulate(&self.g_vars, b, o.micro_batch, |s, k| {
            let share = k as f64 / b as f64;
            let x = self.data.faces.images(&idx[s..s + k], &self.dev)?;
            let (_, c, h, w) = x.dims4()?;
            let y = self.g.forward(&x, None)?; // (k, m, 3, H, W)
            let flat = y.reshape((k * m, c, h, w))?;
            let (adv_fake, cls_fake) = self.d.forward(&flat)?;
            let g_adv = (adv_fake.flatten_from(1)?.mean(1)?.mean_all()? * (-(m as f64) * share))?;
            // Output o = 2j + v is judged by head j against value v.
            let mut sel = vec![0f32; k * m * n];
            let mut tgt = vec![0f32; k * m * n];
            for r in 0..k {
                for out_i in 0..m {
                    let row = r * m + out_i;
                    sel[row * n + out_i / 2] = 1.0;
                    tgt[row * n + out_i / 2] = (out_i % 2) as f32;
                }
            }
            let sel = Tensor::from_vec(sel, (k * m, n), &self.dev)?;
            let tgt = Tensor::from_vec(tgt, (k * m, n), &self.dev)?;
            let g_cls =
                ((bce_elements(&value_logit(&cls_fake, n)?, &tgt)? * &sel)?.sum_all()? / b as f64)?;
            // Eq. 5: each output translated back to its attribute's other value.
            let z = self.g.forward(&flat, None)?.reshape((k, m, m, c, h, w))?;
            let mut diffs = Vec::with_capacity(m);
            for out_i in 0..m {
                let partner = out_i ^ 1;
                let back = z.narrow(1, out_i, 1)?.narrow(2, partner, 1)?.squeeze(2)?;
                let want = y.narrow(1, partner, 1)?;
                diffs.push((back - want)?.abs()?);
            }
            let g_rec = (Tensor::cat(&diffs, 1)?.mean_all()? * share)?;
            let loss = ((&g_adv + (&g_cls * o.lambda_cls)?)? + (&g_rec * o.lambda_rec)?)?;
            Ok([loss, g_adv, g_cls, g_rec])
        })
    }

    /// StarGAN's targets for rows `idx`: the batch's labels in a random order.
    fn stargan_targets(&self, idx: &[usize], rng: &mut ChaCha8Rng) -> Vec<Labels> {
        let src = self.labels_of(idx);
        let mut perm: Vec<usize> = (0..idx.len()).collect();
        perm.shuffle(rng);
        perm.iter().map(|&p| src[p]).collect()
    }

    /// The critic's StarGAN gradients on rows `idx` translated to `trg`.
    fn critic_grads_stargan(
        &self,
        idx: &[usize],
        trg: &[Labels],
        rng: &mut ChaCha8Rng,
    ) -> Result<Accumulated> {
        let n = self.n() as f64;
        let b = idx.len();
        let o = &self.opts;
        let ed = self.editor(&self.g);
        let c_src = ed.attr_tensor(&self.labels_of(idx), &self.dev)?;
        let c_trg = ed.attr_tensor(trg, &self.dev)?;
        let eps = self.eps(rng, b)?;
        let d = &self.d;
        accumulate(&self.d_vars, b, o.micro_batch, |s, k| {
            let share = k as f64 / b as f64;
            let x = self.data.faces.images(&idx[s..s + k], &self.dev)?;
            let fake = self.g.forward(&x, Some(&c_trg.narrow(0, s, k)?))?.detach();
            let (adv_real, cls_real) = d.forward(&x)?;
            let d_real = adv_real.mean_all()?;
            let d_fake = d.critic_value(&fake)?.mean_all()?;
            let wdist = ((&d_real - &d_fake)? * share)?;
            let d_cls =
                (bce_elements(&cls_real, &c_src.narrow(0, s, k)?)?.mean_all()? * (n * share))?;
            let e = eps.narrow(0, s, k)?;
            let gp = (gradient_penalty(|t| d.critic_value(t), &x, &fake, &e)? * share)?;
            let loss = ((wdist.neg()? + (&d_cls * o.lambda_cls)?)? + (&gp * o.lambda_gp)?)?;
            Ok([loss, wdist, d_cls, gp])
        })
    }

    /// G's StarGAN gradients on rows `idx` translated to `trg`.
    fn g_grads_stargan(&self, idx: &[usize], trg: &[Labels]) -> Result<Accumulated> {
        let n = self.n() as f64;
        let b = idx.len();
        let o = &self.opts;
        let ed = self.editor(&self.g);
        let c_src = ed.attr_tensor(&self.labels_of(idx), &self.dev)?;
        let c_trg = ed.attr_tensor(trg, &self.dev)?;
        accumulate(&self.g_vars, b, o.micro_batch, |s, k| {
            let share = k as f64 / b as f64;
            let x = self.data.faces.images(&idx[s..s + k], &self.dev)?;
            let c_trg = c_trg.narrow(0, s, k)?;
            let fake = self.g.forward(&x, Some(&c_trg))?;
            let (adv_fake, cls_fake) = self.d.forward(&fake)?;
            let g_adv = (adv_fake.mean_all()?.neg()? * share)?;
            let g_cls = (bce_elements(&cls_fake, &c_trg)?.mean_all()? * (n * share))?;
            let back = self.g.forward(&fake, Some(&c_src.narrow(0, s, k)?))?;
            let g_rec = ((&x - &back)?.abs()?.mean_all()? * share)?;
            let loss = ((&g_adv + (&g_cls * o.lambda_cls)?)? + (&g_rec * o.lambda_rec)?)?;
            Ok([loss, g_adv, g_cls, g_rec])
        })
    }
}

/// A loss's gradients summed over the chunks of a batch, and the loss and
/// its three terms.
struct Accumulated {
    grads: GradStore,
    values: [f64; 4],
}

/// Gradients of a batch loss computed `micro` rows at a time (0: all at
/// once). `chunk_terms(start, len)` returns the loss and its three terms
/// for rows `start..start + len`, each as its share of the batch value (a
/// batch mean enters as the chunk mean × len / rows), so the sums over
/// chunks are the batch's values and gradients. Each chunk's graph is freed
/// before the next: with second-order gradients on, candle keeps the whole
/// backward graph alive until the gradients are dropped, and at `paper_128`
/// a batch of 8 SG-GAN rows did not fit in 24 GB.
fn accumulate(
    vars: &[Var],
    rows: usize,
    micro: Option<usize>,
    mut chunk_terms: impl FnMut(usize, usize) -> Result<[Tensor; 4]>,
) -> Result<Accumulated> {
    let micro = micro.unwrap_or(rows).clamp(1, rows.max(1));
    let mut sums: Vec<Option<Tensor>> = vec![None; vars.len()];
    let mut values = [0.0; 4];
    let mut start = 0;
    while start < rows {
        let len = micro.min(rows - start);
        let terms = chunk_terms(start, len)?;
        let grads = terms[0].backward()?;
        for (sum, var) in sums.iter_mut().zip(vars) {
            if let Some(g) = grads.get(var.as_tensor()) {
                let g = g.detach();
                *sum = Some(match sum.take() {
                    Some(acc) => (acc + g)?,
                    None => g,
                });
            }
        }
        for (v, t) in values.iter_mut().zip(&terms) {
            *v += scalar(t)?;
        }
        start += len;
    }
    let mut grads = GradStore::default();
    for (sum, var) in sums.into_iter().zip(vars) {
        if let Some(g) = sum {
            grads.insert(var.as_tensor(), g);
        }
    }
    Ok(Accumulated { grads, values })
}

/// One optimiser step with `acc`'s gradients; returns the named values.
fn apply(
    opt: &mut AdamW,
    names: [&'static str; 4],
    acc: Accumulated,
) -> Result<Vec<(&'static str, f64)>> {
    opt.step(&acc.grads)?;
    Ok(names.into_iter().zip(acc.values).collect())
}

impl Phase for TranslationPhase<'_> {
    fn step(&mut self, step: usize) -> Result<Vec<(&'static str, f64)>> {
        let f = lr_factor(self.steps, self.opts.decay_start, step);
        self.opt_g.set_learning_rate(self.opts.lr * f);
        self.opt_d.set_learning_rate(self.opts.d_lr * f);
        let idx: Vec<usize> = batch_indices(self.data.train.len(), self.batch, self.seed, step)
            .into_iter()
            .map(|i| self.data.train[i])
            .collect();
        let mut rng =
            ChaCha8Rng::seed_from_u64(self.seed ^ (step as u64).wrapping_mul(0x9E37_79B9));
        let g_step = step % self.opts.n_critic == 0;
        let mut out = match self.kind {
            Kind::Sggan => {
                let d = self.critic_grads_sggan(&idx, &mut rng)?;
                let mut out = apply(&mut self.opt_d, D_LOSSES, d)?;
                if g_step {
                    let g = self.g_grads_sggan(&idx)?;
                    out.extend(apply(&mut self.opt_g, G_LOSSES, g)?);
                }
                out
            }
            Kind::Stargan => {
                let trg = self.stargan_targets(&idx, &mut rng);
                let d = self.critic_grads_stargan(&idx, &trg, &mut rng)?;
                let mut out = apply(&mut self.opt_d, D_LOSSES, d)?;
                if g_step {
                    let g = self.g_grads_stargan(&idx, &trg)?;
                    out.extend(apply(&mut self.opt_g, G_LOSSES, g)?);
                }
                out
            }
        };
        out.push(("lr", self.opts.lr * f));
        Ok(out)
    }

    fn sample(&mut self, path: &Path) -> Result<()> {
        // An untracked copy of G: no autograd graph is built for the grid.
        let g = Translator::new(&self.g_cfg, vb_of(&frozen(&self.g_vm), &self.dev))?;
        sample_grid(
            &self.editor(&g),
            self.data.faces,
            &self.sample_rows,
            &self.dev,
        )?
        .save(path)?;
        Ok(())
    }

    fn nets(&self) -> Vec<(&'static str, &VarMap)> {
        vec![("generator", &self.g_vm), ("critic", &self.d_vm)]
    }
}

/// Rows `rows` of `faces` through [`value_grid`].
pub fn sample_grid(
    ed: &Editor,
    faces: &FaceSet,
    rows: &[usize],
    dev: &Device,
) -> Result<image::RgbImage> {
    let x = faces.images(rows, dev)?;
    let src: Vec<Labels> = rows.iter().map(|&i| faces.labels[i]).collect();
    value_grid(ed, &x, &src)
}

/// Each source (a row) followed by its translation to every value of every
/// edited attribute (columns 2j + v).
pub fn value_grid(ed: &Editor, x: &Tensor, src: &[Labels]) -> Result<image::RgbImage> {
    let y = ed.all_values(x, src)?;
    let m = y.dim(1)?;
    let mut cells = Vec::new();
    let srcs = tensor_to_rgb(x)?;
    for (r, s) in srcs.into_iter().enumerate() {
        cells.push(s);
        cells.extend(tensor_to_rgb(&y.get(r)?)?);
    }
    Ok(grid(&cells, m + 1))
}

/// Quality measures on val rows: the critic's Wasserstein estimate, its
/// classification loss on the real faces, G's classification loss under
/// it, and L1(G(x, source labels), x).
struct Measures {
    wasserstein: f64,
    critic_cls: f64,
    g_cls: f64,
    rec_l1: f64,
}

/// [`Measures`] of G's edits of `rows` under each of `critics` (G's edits
/// are made once for all of them).
#[allow(clippy::too_many_arguments)]
fn measure<const C: usize>(
    kind: Kind,
    attrs: &[usize],
    g: &Translator,
    critics: [&Critic; C],
    faces: &FaceSet,
    rows: &[usize],
    seed: u64,
    dev: &Device,
) -> Result<[Measures; C]> {
    let ed = Editor { g, kind, attrs };
    let n = attrs.len();
    let bce = |logits: &Tensor, labels: &[Labels]| -> Result<f64> {
        let t = ed.attr_tensor(labels, dev)?;
        let ce = match kind {
            Kind::Sggan => bce_elements(&value_logit(logits, n)?, &t)?,
            Kind::Stargan => bce_elements(logits, &t)?,
        };
        Ok(scalar(&ce.mean_all()?)?)
    };
    // Per critic: sums of the Wasserstein estimate, the classification loss
    // on real faces and on the edits; then the reconstruction (G only).
    let mut sums = [[0.0; 3]; C];
    let (mut rec, mut count) = (0.0, 0usize);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for chunk in rows.chunks(32) {
        let x = faces.images(chunk, dev)?;
        let src: Vec<Labels> = chunk.iter().map(|&i| faces.labels[i]).collect();
        // Targets: one attribute of the edited ones flipped per row.
        let trg: Vec<Labels> = src
            .iter()
            .map(|&l| l ^ (1 << attrs[rng.random_range(0..n)]))
            .collect();
        let y = ed.edit(&x, &src, &trg)?;
        let back = ed.edit(&x, &src, &src)?;
        let k = chunk.len() as f64;
        for (d, s) in critics.iter().zip(sums.iter_mut()) {
            let (adv_real, logits_real) = d.forward(&x)?;
            let (adv_fake, logits) = d.forward(&y)?;
            let real = scalar(&adv_real.mean_all()?)?;
            let fake = scalar(&adv_fake.mean_all()?)?;
            s[0] += (real - fake) * k;
            s[1] += bce(&logits_real, &src)? * k;
            s[2] += bce(&logits, &trg)? * k;
        }
        rec += scalar(&(&back - &x)?.abs()?.mean_all()?)? * k;
        count += chunk.len();
    }
    let c = count.max(1) as f64;
    Ok(sums.map(|[w, real_cls, cls]| Measures {
        wasserstein: w / c,
        critic_cls: real_cls / c,
        g_cls: cls / c,
        rec_l1: rec / c,
    }))
}

/// Network sizes of a translation generator.
pub fn networks(kind: Kind, tiny: bool, n_attrs: usize) -> (translator::Config, critic::Config) {
    let (g, d) = match kind {
        Kind::Sggan => (
            translator::Config::paper_128(kind, 2 * n_attrs),
            critic::Config::sggan_paper_128(2 * n_attrs),
        ),
        Kind::Stargan => (
            translator::Config::paper_128(kind, n_attrs),
            critic::Config::stargan_paper_128(n_attrs),
        ),
    };
    if tiny {
        (
            translator::Config {
                image_size: 32,
                channels: 8,
                res_blocks: 2,
                ..g
            },
            d.tiny(),
        )
    } else {
        (g, d)
    }
}

/// Runs the translation phase (resuming where `env.dir` has checkpoints).
#[allow(clippy::too_many_arguments)]
pub fn train(
    kind: Kind,
    nets: &(translator::Config, critic::Config),
    attrs: &[usize],
    opts: &TranslationOptions,
    batch: usize,
    seed: u64,
    data: &Data,
    dev: &Device,
    env: &PhaseEnv,
) -> Result<Trained> {
    if data.train.is_empty() {
        bail!("no training rows");
    }
    if std::env::var_os("CANDLE_GRAD_DO_NOT_DETACH").is_none() {
        bail!(
            "the gradient penalty needs second-order gradients: call \
             augment::train::enable_second_order_gradients() at start-up (the `augment` binary does)"
        );
    }
    let steps = opts.steps(kind);
    let train_labels: Vec<Labels> = data.train.iter().map(|&i| data.faces.labels[i]).collect();
    let mask_train = labelled_mask(&train_labels, attrs, opts, seed ^ 0x5EED);
    let mut labelled = vec![0u64; data.faces.len()];
    for (k, &i) in data.train.iter().enumerate() {
        labelled[i] = mask_train[k];
    }
    let mut p = TranslationPhase::new(kind, nets, attrs, opts, batch, seed, data, dev, labelled)?;
    let g_init = snapshot(&p.g_vm)?;
    let d_init = snapshot(&p.d_vm)?;
    let phase = match kind {
        Kind::Sggan => "sggan",
        Kind::Stargan => "stargan",
    };
    let r = run_phase(env, phase, steps, &mut p)?;
    let mut log = r.log;
    let mut summary = serde_json::json!({"steps": steps, "wall_time_s": r.wall_time_s});
    let val: Vec<usize> = if data.val.is_empty() {
        data.train.iter().copied().take(64).collect()
    } else {
        data.val.iter().copied().take(64).collect()
    };
    // The initial networks under the same measures: the critic's estimate
    // and its classification loss on real faces then and now, G's
    // classification loss and reconstruction then and now (both G judged by
    // the final critic: the initial critic's class head is untrained).
    let g0 = Translator::new(&nets.0, vb_of(&g_init, dev))?;
    let d0 = Critic::new(&nets.1, vb_of(&d_init, dev))?;
    let seed_m = seed + 24;
    // The final networks untracked: measuring through the variables would
    // keep every forward's autograd graph alive (24 GB at paper_128).
    let g1 = Translator::new(&nets.0, vb_of(&frozen(&p.g_vm), dev))?;
    let d1 = Critic::new(&nets.1, vb_of(&frozen(&p.d_vm), dev))?;
    let [init_d, init_g] = measure(kind, attrs, &g0, [&d0, &d1], data.faces, &val, seed_m, dev)?;
    let [fin] = measure(kind, attrs, &g1, [&d1], data.faces, &val, seed_m, dev)?;
    for (name, init, end) in [
        ("val/wasserstein", init_d.wasserstein, fin.wasserstein),
        ("val/critic_cls", init_d.critic_cls, fin.critic_cls),
        ("val/g_cls", init_g.g_cls, fin.g_cls),
        ("val/rec_l1", init_g.rec_l1, fin.rec_l1),
    ] {
        log.push(row(phase, 0, name, init));
        log.push(row(phase, steps, name, end));
        summary[format!("{}_init", &name[4..])] = init.into();
        summary[&name[4..]] = end.into();
    }
    summary["val_rows"] = val.len().into();
    let labelled_pairs: u32 = mask_train.iter().map(|m| m.count_ones()).sum();
    summary["labelled_pairs"] = labelled_pairs.into();
    summary["labelled_images"] = mask_train.iter().filter(|&&m| m != 0).count().into();
    Ok(Trained {
        log,
        summary,
        generator: frozen(&p.g_vm),
        critic: frozen(&p.d_vm),
        labelled: mask_train,
    })
}

/// Copies of a var map's tensors (training updates variables in place,
/// so [`frozen`]'s detached views would follow them).
fn snapshot(vm: &VarMap) -> Result<std::collections::HashMap<String, Tensor>> {
    frozen(vm)
        .into_iter()
        .map(|(k, v)| Ok((k, v.copy()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_mask_per_value_and_fraction() {
        // Attribute 0 positive on rows 0..3, attribute 1 on even rows.
        let labels: Vec<Labels> = (0..10u64)
            .map(|r| u64::from(r < 3) | (u64::from(r % 2 == 0) << 1))
            .collect();
        let opts = TranslationOptions {
            labelled_per_value: Some(2),
            ..Default::default()
        };
        let m = labelled_mask(&labels, &[0, 1], &opts, 1);
        for j in 0..2 {
            for v in [false, true] {
                let k = (0..10)
                    .filter(|&r| (labels[r] >> j & 1 == 1) == v && m[r] >> j & 1 == 1)
                    .count();
                assert_eq!(k, 2, "attribute {j} value {v}");
            }
        }
        let opts = TranslationOptions {
            labelled_fraction: Some(0.3),
            ..Default::default()
        };
        let m = labelled_mask(&labels, &[0, 1], &opts, 1);
        assert_eq!(m.iter().filter(|&&b| b == 3).count(), 3);
        assert_eq!(m.iter().filter(|&&b| b == 0).count(), 7);
        assert_eq!(
            labelled_mask(&labels, &[0, 1], &TranslationOptions::default(), 1),
            vec![3; 10]
        );
    }

    #[test]
    fn two_way_softmax_is_a_logistic_loss_on_the_difference() {
        // −log softmax([0.3, 1.5])[1] = ln(1 + e^{−1.2}) = 0.263282 (Python: -log(softmax))
        let dev = Device::Cpu;
        let cls = Tensor::new(&[[0.3f32, 1.5]], &dev).unwrap();
        let d = value_logit(&cls, 1).unwrap();
        let t = Tensor::new(&[[1f32]], &dev).unwrap();
        let v = scalar(&bce_elements(&d, &t).unwrap().sum_all().unwrap()).unwrap();
        assert!((v - 0.263282).abs() < 1e-5, "{v}");
    }

    /// The largest difference between two phases' gradients of the same
    /// variables, relative to the largest gradient.
    fn grad_gap(vm_a: &VarMap, a: &Accumulated, vm_b: &VarMap, b: &Accumulated) -> f64 {
        let (va, vb) = (vm_a.data().lock().unwrap(), vm_b.data().lock().unwrap());
        let (mut gap, mut top) = (0f64, 0f64);
        for (name, var) in va.iter() {
            let ga = a.grads.get(var.as_tensor()).expect("gradient");
            let gb = b.grads.get(vb[name].as_tensor()).expect("gradient");
            let d = (ga - gb).unwrap().abs().unwrap().max_all().unwrap();
            gap = gap.max(d.to_scalar::<f32>().unwrap() as f64);
            let t = ga.abs().unwrap().max_all().unwrap();
            top = top.max(t.to_scalar::<f32>().unwrap() as f64);
        }
        assert!(top > 0.0);
        gap / top
    }

    #[test]
    fn micro_batches_give_the_whole_batch_gradients() {
        // Without CANDLE_GRAD_DO_NOT_DETACH (unit tests run on many threads,
        // so it cannot be set here) the penalty's parameter gradient is
        // first-order only, the same function on both sides of the check;
        // tests/gradient_penalty.rs checks the penalty itself.
        let dev = Device::Cpu;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let n = 6;
        let labels: Vec<Labels> = (0..n).map(|_| rng.random::<u64>() & 0b111).collect();
        let pixels: Vec<u8> = (0..n * 32 * 32 * 3).map(|_| rng.random()).collect();
        let faces = FaceSet::from_pixels(labels, 32, pixels);
        let data = Data {
            faces: &faces,
            train: (0..n).collect(),
            val: vec![],
        };
        let idx: Vec<usize> = (0..5).collect();
        for kind in [Kind::Sggan, Kind::Stargan] {
            let nets = networks(kind, true, 3);
            let phase = |micro| {
                let opts = TranslationOptions {
                    micro_batch: micro,
                    ..Default::default()
                };
                // Attribute 0 labelled on some rows only: the critic's
                // class loss is normalised by the batch's labelled count.
                let labelled = vec![0b110, 0b111, 0b110, 0b111, 0b111, 0b111];
                TranslationPhase::new(kind, &nets, &[0, 1, 2], &opts, 5, 7, &data, &dev, labelled)
                    .unwrap()
            };
            let whole = phase(None);
            let parts = phase(Some(2));
            let grads = |p: &TranslationPhase| {
                let mut r = ChaCha8Rng::seed_from_u64(11);
                match kind {
                    Kind::Sggan => (
                        p.critic_grads_sggan(&idx, &mut r).unwrap(),
                        p.g_grads_sggan(&idx).unwrap(),
                    ),
                    Kind::Stargan => {
                        let trg = p.stargan_targets(&idx, &mut r);
                        (
                            p.critic_grads_stargan(&idx, &trg, &mut r).unwrap(),
                            p.g_grads_stargan(&idx, &trg).unwrap(),
                        )
                    }
                }
            };
            let (dw, gw) = grads(&whole);
            let (dp, gp) = grads(&parts);
            for (a, b) in [(&dw, &dp), (&gw, &gp)] {
                for (x, y) in a.values.iter().zip(&b.values) {
                    assert!(
                        (x - y).abs() <= 1e-5 * x.abs().max(1.0),
                        "{kind:?}: {x} vs {y}"
                    );
                }
            }
            let d_gap = grad_gap(&whole.d_vm, &dw, &parts.d_vm, &dp);
            let g_gap = grad_gap(&whole.g_vm, &gw, &parts.g_vm, &gp);
            assert!(
                d_gap < 1e-4 && g_gap < 1e-4,
                "{kind:?}: critic {d_gap:e}, G {g_gap:e}"
            );
        }
    }

    #[test]
    fn lr_decays_linearly_over_the_second_half() {
        assert_eq!(lr_factor(100, None, 1), 1.0);
        assert_eq!(lr_factor(100, None, 50), 1.0);
        assert_eq!(lr_factor(100, None, 75), 0.5);
        assert_eq!(lr_factor(100, None, 100), 0.0);
        assert_eq!(lr_factor(100, Some(80), 90), 0.5);
        assert_eq!(lr_factor(100, Some(100), 100), 1.0);
    }
}
