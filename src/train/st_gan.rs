//! Training of ST-GAN (Zhang et al., "ST-GAN", Sec. 3.2, Algorithm, App. A–B):
//! an InfoGAN with a WGAN-GP critic and an encoder, trained **without
//! labels** in one checkpointed phase `st_gan`.
//!
//! One step is `n_critic` critic updates, then one G update and one E
//! update (the Algorithm prints the G/E update inside the critic loop; we
//! read it as WGAN-GP's n_critic = 5). With (z, c) drawn from the prior,
//! c₁ ~ Cat(K, 1/K) one-hot and c₂ ~ Unif(−1, 1), and x a real face:
//!
//! - **D + Q** (eq. 4 / 15) minimise E[D(G(z,c))] − E[D(x)] + λ₁·GP − λ₂·L_I,
//!   GP the penalty of App. A (eq. 11) and L_I (eq. 13) the variational
//!   bound E[log Q(c | G(z,c))] + H(c), with Q(c₁ | ·) a softmax and
//!   Q(c₂ | ·) a unit-variance Gaussian (InfoGAN). The bound is computed
//!   with its constants (H(c₁) = ln K, H(c₂) = ln 2 per dimension,
//!   −½ ln 2π per Gaussian dimension), so it is a lower bound on I(c; G(z,c))
//!   in nats and starts near 0 for the categorical code.
//! - **G** (eq. 3 / 14) minimises −E[D(G(z,c))] − λ₂·L_I.
//! - **E** minimises L_prior + λ₃·L_rec, where L_prior (eq. 5) is the mean
//!   squared error between [z, c] and E(G(z,c)) (E's c₁ is a softmax, compared
//!   with the one-hot), logged as its z and c parts, and L_rec is selected by
//!   `reconstruction_loss` (the three rows of Fig. 3a): `feature`, eq. 6's mean
//!   squared difference of D's block-`feature_layer` outputs for G(E(x̃)) and
//!   x̃ = G(z,c); `l1`, the mean absolute pixel difference of the same pair;
//!   `prior_only`, none. Only E's weights step on this loss (Algorithm).
//!
//! Adam with lr 1e-4 (Sec. 4) and β = (0.5, 0.9) (WGAN-GP; the paper gives none).
//! Labels are never read: the faces' label columns do not enter any loss.

use std::path::Path;

use anyhow::{Result, bail};
use candle_core::{D, DType, Device, ModuleT, Tensor, Var};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::accumulate::{Accumulated, accumulate};
use super::adam::Adam;
use super::losses::{gradient_penalty, scalar};
use super::{LogRow, Phase, PhaseEnv, batch_indices, frozen, log_row, run_phase, snapshot, vb_of};
use crate::data::poisson::Region;
use crate::data::tensors::{FaceSet, grid, grid_of_columns, tensor_to_rgb};
use crate::metrics::msssim::{Planar, ms_ssim, psnr};
use crate::models::seeded_init;
use crate::models::st_gan::{Config, Critic, CriticOutput, Encoder, Generator};

/// E's reconstruction term (the rows of Fig. 3a).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ReconstructionLoss {
    /// L_prior + λ₃·L_Dl (eq. 5–6), the paper's choice.
    #[default]
    Feature,
    /// L_prior + λ₃·|G(E(x̃)) − x̃|₁.
    L1,
    /// L_prior alone.
    PriorOnly,
}

/// `[stages.<name>.st_gan.map]`: how latents are matched to attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MapOptions {
    /// Val faces encoded for the mapping.
    pub samples: usize,
    /// The c₂ sweep (Fig. 7).
    pub c2_values: Vec<f64>,
    /// An attribute is `usable` when its on rate minus its off rate is at least this.
    pub min_effect: f64,
}

impl Default for MapOptions {
    fn default() -> Self {
        MapOptions {
            samples: 512,
            c2_values: vec![-1.0, -0.5, 0.0, 0.5, 1.0],
            min_effect: 0.2,
        }
    }
}

/// LST-GAN's mask M (eq. 7): a named box or [top, left, height, width] as
/// fractions of the image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MaskSpec {
    Named(String),
    Box(Vec<f64>),
}

/// The named boxes, for CelebA's aligned faces under ingest's default crop
/// (top 50, left 25, side 128 of the 178×218 frame): the mean aligned
/// landmarks of `list_landmarks_align_celeba.txt` (eyes about (69, 111) and
/// (108, 111), mouth (89, 152)) fall at (0.34, 0.48), (0.65, 0.48) and
/// (0.50, 0.80) of the crop; the boxes hold them with a margin.
pub const EYES: [f64; 4] = [0.36, 0.20, 0.24, 0.60];
pub const MOUTH: [f64; 4] = [0.68, 0.28, 0.22, 0.44];

/// How an LST-GAN edit goes back into the face (Sec. 3.2, eq. 8–9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Blend {
    /// Poisson blending (Pérez et al. 2003) of M ⊙ G(E(x)) into x.
    Poisson,
    /// Eq. 9: (1 − M) ⊙ x + M ⊙ G(E(x)).
    Mask,
    /// G(E(x)) as it is.
    None,
}

/// `[stages.<name>.st_gan]`: ST-GAN's latent layout, losses and schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Options {
    /// `global` (Sec. 3.2) or `local` (LST-GAN, eq. 7: Q reads M ⊙ G(z, c)).
    pub variant: String,
    /// LST-GAN's box: `"eyes"`, `"mouth"` or [top, left, height, width].
    pub mask: Option<MaskSpec>,
    /// How synthesize puts an edit back (default `poisson` for local, `none` for global).
    pub blend: Option<Blend>,
    /// Values of c₁ (default 10, local 0; 0 turns it off).
    pub categorical: Option<usize>,
    /// Dimensions of c₂ (default 1).
    pub continuous: Option<usize>,
    /// Dimensions of z (default: the preset's, 100 at paper_64).
    pub z_dim: Option<usize>,
    /// G updates (each after `n_critic` critic updates).
    pub steps: usize,
    /// Faces per critic update and latents per G / E update (default: 64,
    /// or 16 with preset `tiny`).
    pub batch_size: Option<usize>,
    /// Learning rate of G and E.
    pub lr: f64,
    /// Learning rate of D + Q.
    pub d_lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub n_critic: usize,
    /// λ₁ of eq. 4 (the gradient penalty).
    pub lambda_gp: f64,
    /// λ₂ of eq. 3–4 (the mutual-information bound).
    pub lambda_mi: f64,
    /// λ₃ (Fig. 3 caption): weight of E's reconstruction term.
    pub lambda_feature: f64,
    pub reconstruction_loss: ReconstructionLoss,
    /// D's conv block (1-based) whose features eq. 6 compares.
    pub feature_layer: usize,
    /// Rows per forward/backward pass (gradients are summed over chunks).
    pub micro_batch: Option<usize>,
    pub map: MapOptions,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            variant: "global".into(),
            mask: None,
            blend: None,
            categorical: None,
            continuous: None,
            z_dim: None,
            steps: 50_000,
            batch_size: None,
            lr: 1e-4,
            d_lr: 1e-4,
            beta1: 0.5,
            beta2: 0.9,
            n_critic: 5,
            lambda_gp: 10.0,
            lambda_mi: 1.0,
            lambda_feature: 10.0,
            reconstruction_loss: ReconstructionLoss::Feature,
            feature_layer: 3,
            micro_batch: None,
            map: MapOptions::default(),
        }
    }
}

impl Options {
    /// The network sizes: the preset's, with this section's latent layout.
    pub fn network(&self, tiny: bool) -> Config {
        let base = if tiny {
            Config::tiny()
        } else {
            Config::paper_64()
        };
        let local = self.variant == "local";
        Config {
            categorical: self
                .categorical
                .unwrap_or(if local { 0 } else { base.categorical }),
            continuous: self.continuous.unwrap_or(base.continuous),
            z_dim: self.z_dim.unwrap_or(base.z_dim),
            ..base
        }
    }

    pub fn batch(&self, tiny: bool) -> usize {
        self.batch_size.unwrap_or(if tiny { 16 } else { 64 })
    }

    pub fn is_local(&self) -> bool {
        self.variant == "local"
    }

    /// LST-GAN's box as [top, left, height, width] fractions (None for global).
    pub fn mask_box(&self) -> std::result::Result<Option<[f64; 4]>, String> {
        let needs = "st_gan.variant = \"local\" needs st_gan.mask (\"eyes\", \"mouth\" or [top, left, height, width] in (0, 1])";
        if !self.is_local() {
            return match self.mask {
                None => Ok(None),
                Some(_) => Err(
                    "st_gan.mask is LST-GAN's; set st_gan.variant = \"local\" or remove it".into(),
                ),
            };
        }
        let b = match &self.mask {
            Some(MaskSpec::Named(n)) if n == "eyes" => EYES,
            Some(MaskSpec::Named(n)) if n == "mouth" => MOUTH,
            Some(MaskSpec::Box(v)) if v.len() == 4 => [v[0], v[1], v[2], v[3]],
            _ => return Err(needs.into()),
        };
        let inside = b.iter().all(|v| v.is_finite() && *v >= 0.0 && *v <= 1.0)
            && b[2] > 0.0
            && b[3] > 0.0
            && b[0] + b[2] <= 1.0 + 1e-9
            && b[1] + b[3] <= 1.0 + 1e-9;
        if inside {
            Ok(Some(b))
        } else {
            Err(needs.into())
        }
    }

    /// How synthesize puts edits back: the configured, else per variant.
    pub fn blend(&self) -> Blend {
        self.blend.unwrap_or(if self.is_local() {
            Blend::Poisson
        } else {
            Blend::None
        })
    }

    pub fn validate(&self, tiny: bool) -> std::result::Result<(), String> {
        match self.variant.as_str() {
            "global" | "local" => {}
            v => {
                return Err(format!(
                    "st_gan.variant = \"{v}\": must be \"global\" or \"local\""
                ));
            }
        }
        self.mask_box()?;
        if self.is_local() && self.categorical.is_some_and(|k| k > 0) {
            return Err(
                "st_gan.categorical: LST-GAN uses only c₂ (Sec. 4.3); remove it or set 0".into(),
            );
        }
        if !self.is_local() && self.blend.is_some_and(|b| b != Blend::None) {
            return Err(
                "st_gan.blend is for variant = \"local\" (a global edit has no mask to blend)"
                    .into(),
            );
        }
        let net = self.network(tiny);
        net.validate()?;
        super::check_rates(&[("st_gan.lr", self.lr), ("st_gan.d_lr", self.d_lr)])?;
        super::check_betas(&[("st_gan.beta1", self.beta1), ("st_gan.beta2", self.beta2)])?;
        super::check_weights(&[
            ("st_gan.lambda_gp", self.lambda_gp),
            ("st_gan.lambda_mi", self.lambda_mi),
            ("st_gan.lambda_feature", self.lambda_feature),
        ])?;
        if self.n_critic == 0 {
            return Err("st_gan.n_critic must be at least 1".into());
        }
        if self.steps == 0 {
            return Err("st_gan.steps must be at least 1".into());
        }
        if self.batch_size == Some(0) || self.micro_batch == Some(0) {
            return Err("st_gan.batch_size and st_gan.micro_batch must be at least 1".into());
        }
        let blocks = net.d_channels.len();
        if self.feature_layer == 0 || self.feature_layer > blocks {
            return Err(format!(
                "st_gan.feature_layer = {}: D has {blocks} conv blocks",
                self.feature_layer
            ));
        }
        let m = &self.map;
        if m.samples == 0 {
            return Err("st_gan.map.samples must be at least 1".into());
        }
        if m.c2_values.len() < 2 || m.c2_values.iter().any(|v| !v.is_finite()) {
            return Err("st_gan.map.c2_values: give at least two finite values".into());
        }
        if !(0.0..=1.0).contains(&m.min_effect) {
            return Err(format!(
                "st_gan.map.min_effect = {}: must be in [0, 1]",
                m.min_effect
            ));
        }
        Ok(())
    }
}

/// A batch of prior draws: z ~ N(0, I), c₁ ~ Cat(K, 1/K), c₂ ~ Unif(−1, 1).
#[derive(Debug, Clone)]
pub struct Latents {
    pub rows: usize,
    /// rows × z_dim
    pub z: Vec<f32>,
    /// The c₁ value of each row (empty without a categorical code).
    pub c1: Vec<usize>,
    /// rows × continuous
    pub c2: Vec<f32>,
}

/// A standard normal draw (Box–Muller), so that draws follow the seed.
pub use crate::models::standard_normal;

impl Latents {
    pub fn draw(cfg: &Config, rows: usize, rng: &mut ChaCha8Rng) -> Latents {
        let z = (0..rows * cfg.z_dim)
            .map(|_| standard_normal(rng))
            .collect();
        let c1 = if cfg.categorical > 0 {
            (0..rows)
                .map(|_| rng.random_range(0..cfg.categorical))
                .collect()
        } else {
            Vec::new()
        };
        let c2 = (0..rows * cfg.continuous)
            .map(|_| rng.random_range(-1.0f32..=1.0))
            .collect();
        Latents { rows, z, c1, c2 }
    }

    /// c₁ one-hot, (rows, categorical).
    pub fn c1_onehot(&self, cfg: &Config, dev: &Device) -> Result<Tensor> {
        let k = cfg.categorical;
        let mut v = vec![0f32; self.rows * k];
        for (r, &c) in self.c1.iter().enumerate() {
            v[r * k + c] = 1.0;
        }
        Ok(Tensor::from_vec(v, (self.rows, k), dev)?)
    }

    /// [z ‖ c₁ one-hot ‖ c₂], G's input.
    pub fn tensor(&self, cfg: &Config, dev: &Device) -> Result<Tensor> {
        let mut parts = vec![Tensor::from_vec(
            self.z.clone(),
            (self.rows, cfg.z_dim),
            dev,
        )?];
        if cfg.categorical > 0 {
            parts.push(self.c1_onehot(cfg, dev)?);
        }
        if cfg.continuous > 0 {
            parts.push(Tensor::from_vec(
                self.c2.clone(),
                (self.rows, cfg.continuous),
                dev,
            )?);
        }
        Ok(Tensor::cat(&parts, 1)?)
    }
}

/// L_I + H(c) (eq. 13 with the entropy's constants) of Q's outputs for
/// images drawn from `lat`, as a scalar tensor (a batch mean), and Q's c₁
/// accuracy (NaN without a categorical code).
pub fn info_bound(
    cfg: &Config,
    c1_logits: Option<&Tensor>,
    c2_mean: Option<&Tensor>,
    lat: &Latents,
    dev: &Device,
) -> Result<(Tensor, f64)> {
    let mut total = Tensor::zeros((), DType::F32, dev)?;
    let mut acc = f64::NAN;
    if let Some(logits) = c1_logits {
        let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
        let onehot = lat.c1_onehot(cfg, dev)?;
        let ll = (logp * onehot)?.sum(1)?.mean_all()?;
        total = ((total + ll)? + (cfg.categorical as f64).ln())?;
        let pred = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
        let hits = pred
            .iter()
            .zip(&lat.c1)
            .filter(|(p, c)| **p as usize == **c)
            .count();
        acc = hits as f64 / lat.rows.max(1) as f64;
    }
    if let Some(mean) = c2_mean {
        let c2 = Tensor::from_vec(lat.c2.clone(), (lat.rows, cfg.continuous), dev)?;
        let sq = (mean - c2)?.sqr()?.sum(1)?.mean_all()?;
        let k = cfg.continuous as f64;
        let consts = k * (std::f64::consts::LN_2 - 0.5 * std::f64::consts::TAU.ln());
        total = ((total - (sq * 0.5)?)? + consts)?;
    }
    Ok((total, acc))
}

/// Q's outputs for fakes: from D's trunk on the fakes (`out`, already
/// computed), or, for LST-GAN, on M ⊙ fakes (eq. 7).
fn q_outputs(
    d: &Critic,
    fake: &Tensor,
    out: CriticOutput,
    mask: Option<&Tensor>,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    match mask {
        None => Ok((out.c1_logits, out.c2_mean)),
        Some(m) => {
            let mut feats = d.trunk(&fake.broadcast_mul(m)?)?;
            let last = feats.pop().expect("validated: d_channels non-empty");
            Ok(d.q_head(&last)?)
        }
    }
}

/// LST-GAN's binary mask M, (1, 1, s, s), from a fraction box.
pub fn mask_tensor(b: [f64; 4], size: usize, dev: &Device) -> Result<Tensor> {
    let r = Region::from_fractions(b, size as u32);
    let v: Vec<f32> = (0..size * size)
        .map(|k| f32::from(u8::from(r.contains((k % size) as u32, (k / size) as u32))))
        .collect();
    Ok(Tensor::from_vec(v, (1, 1, size, size), dev)?)
}

/// The rows `s..s + k` of a batch of latents.
fn chunk_of(lat: &Latents, cfg: &Config, s: usize, k: usize) -> Latents {
    Latents {
        rows: k,
        z: lat.z[s * cfg.z_dim..(s + k) * cfg.z_dim].to_vec(),
        c1: if lat.c1.is_empty() {
            Vec::new()
        } else {
            lat.c1[s..s + k].to_vec()
        },
        c2: lat.c2[s * cfg.continuous..(s + k) * cfg.continuous].to_vec(),
    }
}

/// Training data (the same for every GAN phase).
pub use super::TrainSet;

/// What training produced.
pub struct Trained {
    pub log: Vec<LogRow>,
    pub summary: serde_json::Value,
    pub generator: std::collections::HashMap<String, Tensor>,
    pub encoder: std::collections::HashMap<String, Tensor>,
    pub critic: std::collections::HashMap<String, Tensor>,
}

/// The three networks, untracked (for sampling and measuring).
pub struct Nets {
    pub g: Generator,
    pub d: Critic,
    pub e: Encoder,
}

impl Nets {
    pub fn from_tensors(
        cfg: &Config,
        g: &std::collections::HashMap<String, Tensor>,
        d: &std::collections::HashMap<String, Tensor>,
        e: &std::collections::HashMap<String, Tensor>,
        dev: &Device,
    ) -> Result<Nets> {
        Ok(Nets {
            g: Generator::new(cfg, vb_of(g, dev))?,
            d: Critic::new(cfg, vb_of(d, dev))?,
            e: Encoder::new(cfg, vb_of(e, dev))?,
        })
    }

    /// G(E(x)) in inference mode.
    pub fn reconstruct(&self, x: &Tensor) -> Result<Tensor> {
        let lat = self.e.encode(x, false)?.latent()?;
        Ok(self.g.forward_t(&lat, false)?)
    }
}

/// The fixed held-out prior batch on which the MI bound and Q's accuracy are logged.
const MEASURE_ROWS: usize = 256;

struct StGanPhase<'a> {
    data: &'a TrainSet<'a>,
    dev: Device,
    cfg: Config,
    opts: Options,
    batch: usize,
    seed: u64,
    measure_every: usize,
    steps: usize,
    fixed: Latents,
    /// LST-GAN's M (None for global ST-GAN).
    mask: Option<Tensor>,
    sample_rows: Vec<usize>,
    g_vm: VarMap,
    g: Generator,
    d_vm: VarMap,
    d: Critic,
    e_vm: VarMap,
    e: Encoder,
    g_vars: Vec<Var>,
    d_vars: Vec<Var>,
    e_vars: Vec<Var>,
    opt_g: Adam,
    opt_d: Adam,
    opt_e: Adam,
}

/// Summed values of a loss over several updates, for averaging.
fn add_values(sum: &mut [f64; 4], acc: &Accumulated) {
    for (s, v) in sum.iter_mut().zip(acc.values) {
        *s += v;
    }
}

impl<'a> StGanPhase<'a> {
    fn new(
        cfg: &Config,
        opts: &Options,
        batch: usize,
        seed: u64,
        measure_every: usize,
        data: &'a TrainSet<'a>,
        dev: &Device,
    ) -> Result<Self> {
        let g_vm = VarMap::new();
        let g = Generator::new(cfg, VarBuilder::from_varmap(&g_vm, DType::F32, dev))?;
        seeded_init(&g_vm, seed + 41)?;
        let d_vm = VarMap::new();
        let d = Critic::new(cfg, VarBuilder::from_varmap(&d_vm, DType::F32, dev))?;
        seeded_init(&d_vm, seed + 42)?;
        let e_vm = VarMap::new();
        let e = Encoder::new(cfg, VarBuilder::from_varmap(&e_vm, DType::F32, dev))?;
        seeded_init(&e_vm, seed + 43)?;
        let fixed = Latents::draw(cfg, MEASURE_ROWS, &mut ChaCha8Rng::seed_from_u64(seed + 44));
        let pool = if data.val.is_empty() {
            &data.train
        } else {
            &data.val
        };
        Ok(StGanPhase {
            data,
            dev: dev.clone(),
            cfg: cfg.clone(),
            opts: opts.clone(),
            batch,
            seed: seed + 45,
            measure_every,
            steps: opts.steps,
            fixed,
            mask: match opts.mask_box().map_err(anyhow::Error::msg)? {
                Some(b) => Some(mask_tensor(b, cfg.image_size, dev)?),
                None => None,
            },
            sample_rows: pool.iter().copied().take(6).collect(),
            opt_g: Adam::with_betas(&g_vm, opts.lr, (opts.beta1, opts.beta2))?,
            opt_d: Adam::with_betas(&d_vm, opts.d_lr, (opts.beta1, opts.beta2))?,
            opt_e: Adam::with_betas(&e_vm, opts.lr, (opts.beta1, opts.beta2))?,
            g_vars: g_vm.all_vars(),
            d_vars: d_vm.all_vars(),
            e_vars: e_vm.all_vars(),
            g_vm,
            g,
            d_vm,
            d,
            e_vm,
            e,
        })
    }

    /// D + Q's gradients (eq. 4): real rows `idx`, fakes from `lat`.
    fn critic_grads(&self, idx: &[usize], lat: &Latents, eps: &Tensor) -> Result<Accumulated> {
        let (cfg, o, dev) = (&self.cfg, &self.opts, &self.dev);
        let b = idx.len();
        accumulate(&self.d_vars, b, o.micro_batch, |s, k| {
            let share = k as f64 / b as f64;
            let part = chunk_of(lat, cfg, s, k);
            let x = self.data.faces.images(&idx[s..s + k], dev)?;
            let fake = self.g.forward_t(&part.tensor(cfg, dev)?, true)?.detach();
            let real = self.d.forward(&x)?;
            let out = self.d.forward(&fake)?;
            let wdist = ((real.critic.mean_all()? - out.critic.mean_all()?)? * share)?;
            let (c1, c2) = q_outputs(&self.d, &fake, out, self.mask.as_ref())?;
            let (li, _) = info_bound(cfg, c1.as_ref(), c2.as_ref(), &part, dev)?;
            let li = (li * share)?;
            let e = eps.narrow(0, s, k)?;
            let gp = (gradient_penalty(|t| self.d.critic_value(t), &x, &fake, &e)? * share)?;
            let loss = ((wdist.neg()? + (&gp * o.lambda_gp)?)? - (&li * o.lambda_mi)?)?;
            Ok([loss, wdist, gp, li])
        })
    }

    /// G's gradients (eq. 3): −E[D(G(z,c))] − λ₂·L_I.
    fn g_grads(&self, lat: &Latents) -> Result<Accumulated> {
        let (cfg, o, dev) = (&self.cfg, &self.opts, &self.dev);
        let b = lat.rows;
        accumulate(&self.g_vars, b, o.micro_batch, |s, k| {
            let share = k as f64 / b as f64;
            let part = chunk_of(lat, cfg, s, k);
            let fake = self.g.forward_t(&part.tensor(cfg, dev)?, true)?;
            let out = self.d.forward(&fake)?;
            let adv = (out.critic.mean_all()?.neg()? * share)?;
            let (c1, c2) = q_outputs(&self.d, &fake, out, self.mask.as_ref())?;
            let (li, _) = info_bound(cfg, c1.as_ref(), c2.as_ref(), &part, dev)?;
            let li = (li * share)?;
            let loss = (&adv - (&li * o.lambda_mi)?)?;
            let zero = Tensor::zeros((), DType::F32, dev)?;
            Ok([loss, adv, li, zero])
        })
    }

    /// E's gradients: L_prior (eq. 5) + λ₃·L_rec (eq. 6 or its variants).
    fn e_grads(&self, lat: &Latents) -> Result<Accumulated> {
        let (cfg, o, dev) = (&self.cfg, &self.opts, &self.dev);
        let b = lat.rows;
        let layer = o.feature_layer - 1;
        accumulate(&self.e_vars, b, o.micro_batch, |s, k| {
            let share = k as f64 / b as f64;
            let part = chunk_of(lat, cfg, s, k);
            let target = part.tensor(cfg, dev)?;
            let x = self.g.forward_t(&target, true)?.detach();
            let enc = self.e.encode(&x, true)?;
            let prior_z = (enc
                .z
                .sub(&target.narrow(1, 0, cfg.z_dim)?)?
                .sqr()?
                .mean_all()?
                * share)?;
            let code = target.narrow(1, cfg.z_dim, cfg.code_dim())?;
            let mut got = Vec::new();
            got.extend(enc.c1.iter().cloned());
            got.extend(enc.c2.iter().cloned());
            let prior_c = (Tensor::cat(&got, 1)?.sub(&code)?.sqr()?.mean_all()? * share)?;
            let rec = match o.reconstruction_loss {
                ReconstructionLoss::PriorOnly => Tensor::zeros((), DType::F32, dev)?,
                ReconstructionLoss::L1 => {
                    let back = self.g.forward_t(&enc.latent()?, true)?;
                    ((back - &x)?.abs()?.mean_all()? * share)?
                }
                ReconstructionLoss::Feature => {
                    let back = self.g.forward_t(&enc.latent()?, true)?;
                    let f_back = self.d.trunk(&back)?.swap_remove(layer);
                    let f_x = self.d.trunk(&x)?.swap_remove(layer).detach();
                    ((f_back - f_x)?.sqr()?.mean_all()? * share)?
                }
            };
            let loss = ((&prior_z + &prior_c)? + (&rec * o.lambda_feature)?)?;
            Ok([loss, prior_z, prior_c, rec])
        })
    }

    /// Untracked copies of the current networks.
    fn snapshot_nets(&self) -> Result<Nets> {
        Nets::from_tensors(
            &self.cfg,
            &frozen(&self.g_vm),
            &frozen(&self.d_vm),
            &frozen(&self.e_vm),
            &self.dev,
        )
    }
}

/// The MI bound (L_I + H(c)) and Q's c₁ accuracy on the fixed prior batch.
fn measure_info(
    cfg: &Config,
    nets: &Nets,
    fixed: &Latents,
    mask: Option<&Tensor>,
    dev: &Device,
) -> Result<(f64, f64)> {
    // G in training mode (batch statistics, as during training) on an
    // untracked copy: the copy's running statistics are its own.
    let x = nets.g.forward_t(&fixed.tensor(cfg, dev)?, true)?;
    let out = nets.d.forward(&x)?;
    let (c1, c2) = q_outputs(&nets.d, &x, out, mask)?;
    let (li, acc) = info_bound(cfg, c1.as_ref(), c2.as_ref(), fixed, dev)?;
    Ok((scalar(&li)?, acc))
}

/// E's losses (L_prior's z and c parts, and eq. 6's feature term at block
/// `layer`, 0-based) on the fixed prior batch, with G and D from `judge`
/// and E from `enc`: comparing E before and after training under one
/// critic (D's features grow as it trains, so the logged `E/feature` of
/// different steps are on different scales).
fn measure_encoder(
    cfg: &Config,
    judge: &Nets,
    enc: &Encoder,
    fixed: &Latents,
    layer: usize,
    dev: &Device,
) -> Result<(f64, f64, f64)> {
    let target = fixed.tensor(cfg, dev)?;
    let x = judge.g.forward_t(&target, true)?;
    let e = enc.encode(&x, false)?;
    let prior_z = scalar(
        &e.z.sub(&target.narrow(1, 0, cfg.z_dim)?)?
            .sqr()?
            .mean_all()?,
    )?;
    let mut got = Vec::new();
    got.extend(e.c1.iter().cloned());
    got.extend(e.c2.iter().cloned());
    let code = target.narrow(1, cfg.z_dim, cfg.code_dim())?;
    let prior_c = scalar(&Tensor::cat(&got, 1)?.sub(&code)?.sqr()?.mean_all()?)?;
    let back = judge.g.forward_t(&e.latent()?, true)?;
    let f_back = judge.d.trunk(&back)?.swap_remove(layer);
    let f_x = judge.d.trunk(&x)?.swap_remove(layer);
    let feature = scalar(&(f_back - f_x)?.sqr()?.mean_all()?)?;
    Ok((prior_z, prior_c, feature))
}

/// The critic's Wasserstein estimate E[D(x)] − E[D(G(z,c))] on val faces
/// `rows` and as many prior draws (G in inference mode).
fn measure_wasserstein(
    cfg: &Config,
    nets: &Nets,
    faces: &FaceSet,
    rows: &[usize],
    seed: u64,
    dev: &Device,
) -> Result<f64> {
    let x = faces.images(rows, dev)?;
    let lat = Latents::draw(cfg, rows.len(), &mut ChaCha8Rng::seed_from_u64(seed));
    let fake = nets.g.forward_t(&lat.tensor(cfg, dev)?, false)?;
    let real = scalar(&nets.d.critic_value(&x)?.mean_all()?)?;
    Ok(real - scalar(&nets.d.critic_value(&fake)?.mean_all()?)?)
}

impl Phase for StGanPhase<'_> {
    fn step(&mut self, step: usize) -> Result<Vec<(&'static str, f64)>> {
        let mut rng =
            ChaCha8Rng::seed_from_u64(self.seed ^ (step as u64).wrapping_mul(0x9E37_79B9));
        let n_critic = self.opts.n_critic;
        let mut d_sum = [0.0; 4];
        for k in 0..n_critic {
            let global = (step - 1) * n_critic + k + 1;
            let idx: Vec<usize> =
                batch_indices(self.data.train.len(), self.batch, self.seed, global)
                    .into_iter()
                    .map(|i| self.data.train[i])
                    .collect();
            let lat = Latents::draw(&self.cfg, idx.len(), &mut rng);
            let eps: Vec<f32> = (0..idx.len()).map(|_| rng.random::<f32>()).collect();
            let eps = Tensor::from_vec(eps, (idx.len(), 1, 1, 1), &self.dev)?;
            let acc = self.critic_grads(&idx, &lat, &eps)?;
            add_values(&mut d_sum, &acc);
            self.opt_d.step(&acc.grads)?;
        }
        let lat = Latents::draw(&self.cfg, self.batch, &mut rng);
        let g = self.g_grads(&lat)?;
        self.opt_g.step(&g.grads)?;
        let lat = Latents::draw(&self.cfg, self.batch, &mut rng);
        let e = self.e_grads(&lat)?;
        self.opt_e.step(&e.grads)?;
        let nc = n_critic as f64;
        let mut out = vec![
            ("D/loss", d_sum[0] / nc),
            ("D/wasserstein", d_sum[1] / nc),
            ("D/gp", d_sum[2] / nc),
            ("D/mi", d_sum[3] / nc),
            ("G/loss", g.values[0]),
            ("G/adv", g.values[1]),
            ("G/mi", g.values[2]),
            ("E/loss", e.values[0]),
            ("E/prior_z", e.values[1]),
            ("E/prior_c", e.values[2]),
            ("E/feature", e.values[3]),
            ("lr", self.opts.lr),
        ];
        let measure = step == self.steps
            || (self.measure_every > 0 && step.is_multiple_of(self.measure_every));
        if measure {
            let nets = self.snapshot_nets()?;
            let (mi, acc) =
                measure_info(&self.cfg, &nets, &self.fixed, self.mask.as_ref(), &self.dev)?;
            out.push(("mi_lower_bound", mi));
            if acc.is_finite() {
                out.push(("q_c1_accuracy", acc));
            }
        }
        Ok(out)
    }

    fn sample(&mut self, path: &Path) -> Result<()> {
        let nets = self.snapshot_nets()?;
        let x = self.data.faces.images(&self.sample_rows, &self.dev)?;
        edit_grid(&self.cfg, &nets.g, &nets.e, &x)?.save(path)?;
        Ok(())
    }

    fn nets(&self) -> Vec<(&'static str, &VarMap)> {
        vec![
            ("generator", &self.g_vm),
            ("critic", &self.d_vm),
            ("encoder", &self.e_vm),
        ]
    }

    fn optimizers(&mut self) -> Vec<(&'static str, &mut Adam)> {
        vec![
            ("generator", &mut self.opt_g),
            ("critic", &mut self.opt_d),
            ("encoder", &mut self.opt_e),
        ]
    }
}

/// Fig. 5a: per face, the original, G(E(x)), then G with E's c̃₁ replaced by
/// every c₁ value (or, without c₁, c̃₂'s first dimension swept over 7 steps
/// from −1 to 1).
pub fn edit_grid(cfg: &Config, g: &Generator, e: &Encoder, x: &Tensor) -> Result<image::RgbImage> {
    let enc = e.encode(x, false)?;
    let lat = enc.latent()?;
    let settings = code_settings(cfg);
    let mut cols = vec![x.clone(), g.forward_t(&lat, false)?];
    for s in &settings {
        cols.push(g.forward_t(&set_code(cfg, &lat, s)?, false)?);
    }
    let per: Vec<Vec<image::RgbImage>> = cols.iter().map(tensor_to_rgb).collect::<Result<_>>()?;
    Ok(grid_of_columns(&per))
}

/// A latent code setting: one c₁ value, or one c₂ dimension at a value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CodeSetting {
    C1(usize),
    C2 { dim: usize, value: f64 },
}

/// The settings of a grid: every c₁ value, or 7 c₂ steps from −1 to 1.
pub fn code_settings(cfg: &Config) -> Vec<CodeSetting> {
    if cfg.categorical > 0 {
        (0..cfg.categorical).map(CodeSetting::C1).collect()
    } else {
        c2_sweep(7)
            .into_iter()
            .map(|value| CodeSetting::C2 { dim: 0, value })
            .collect()
    }
}

/// `n` evenly spaced values from −1 to 1.
pub fn c2_sweep(n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| -1.0 + 2.0 * i as f64 / (n.max(2) - 1) as f64)
        .collect()
}

/// `lat` (B, latent_dim) with one code setting applied to every row.
pub fn set_code(cfg: &Config, lat: &Tensor, s: &CodeSetting) -> Result<Tensor> {
    let rows = vec![vec![*s]; lat.dim(0)?];
    set_codes(cfg, lat, &rows)
}

/// `lat` (B, latent_dim) with row r's settings `per_row[r]` applied.
pub fn set_codes(cfg: &Config, lat: &Tensor, per_row: &[Vec<CodeSetting>]) -> Result<Tensor> {
    let b = lat.dim(0)?;
    let dev = lat.device();
    let mut v = lat.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    for (row, settings) in v.iter_mut().zip(per_row) {
        for s in settings {
            match *s {
                CodeSetting::C1(k) => {
                    for j in 0..cfg.categorical {
                        row[cfg.z_dim + j] = if j == k { 1.0 } else { 0.0 };
                    }
                }
                CodeSetting::C2 { dim, value } => {
                    row[cfg.z_dim + cfg.categorical + dim] = value as f32;
                }
            }
        }
    }
    let flat: Vec<f32> = v.into_iter().flatten().collect();
    Ok(Tensor::from_vec(flat, (b, cfg.latent_dim()), dev)?)
}

/// Mean PSNR (dB, on 0–255 values, eq. 10) and MS-SSIM of G(E(x)) against x
/// over `rows` of `faces`.
pub fn reconstruction_quality(
    nets: &Nets,
    faces: &FaceSet,
    rows: &[usize],
    dev: &Device,
) -> Result<(f64, f64)> {
    let (mut p, mut m, mut n) = (0.0, 0.0, 0usize);
    for chunk in rows.chunks(64) {
        let x = faces.images(chunk, dev)?;
        let y = nets.reconstruct(&x)?;
        for (a, b) in tensor_to_rgb(&x)?.iter().zip(tensor_to_rgb(&y)?.iter()) {
            let (a, b) = (Planar::from_rgb(a), Planar::from_rgb(b));
            p += psnr(&a, &b, 255.0).map_err(anyhow::Error::msg)?.min(100.0);
            m += ms_ssim(&a, &b, 255.0).map_err(anyhow::Error::msg)?.value;
            n += 1;
        }
    }
    let n = n.max(1) as f64;
    Ok((p / n, m / n))
}

/// Prior samples, (rows × cols) images of G(z, c) with z and c from the prior.
pub fn prior_grid(
    cfg: &Config,
    nets: &Nets,
    rows: usize,
    cols: usize,
    seed: u64,
    dev: &Device,
) -> Result<image::RgbImage> {
    let lat = Latents::draw(cfg, rows * cols, &mut ChaCha8Rng::seed_from_u64(seed));
    let x = nets.g.forward_t(&lat.tensor(cfg, dev)?, false)?;
    Ok(grid(&tensor_to_rgb(&x)?, cols))
}

/// Traversals (Fig. 5–7): per prior z (a row), G with every c₁ value
/// (`c1 = true`) or c₂'s first dimension at 7 steps from −1 to 1; the other
/// code parts are drawn once per row.
pub fn traversal_grid(
    cfg: &Config,
    nets: &Nets,
    c1: bool,
    rows: usize,
    seed: u64,
    dev: &Device,
) -> Result<image::RgbImage> {
    let lat = Latents::draw(cfg, rows, &mut ChaCha8Rng::seed_from_u64(seed)).tensor(cfg, dev)?;
    let settings: Vec<CodeSetting> = if c1 {
        (0..cfg.categorical).map(CodeSetting::C1).collect()
    } else {
        c2_sweep(7)
            .into_iter()
            .map(|value| CodeSetting::C2 { dim: 0, value })
            .collect()
    };
    let mut per = Vec::new();
    for s in &settings {
        per.push(tensor_to_rgb(
            &nets.g.forward_t(&set_code(cfg, &lat, s)?, false)?,
        )?);
    }
    Ok(grid_of_columns(&per))
}

/// Runs the `st_gan` phase (resuming where `env.dir` has checkpoints).
pub fn train(
    cfg: &Config,
    opts: &Options,
    batch: usize,
    seed: u64,
    data: &TrainSet,
    dev: &Device,
    env: &PhaseEnv,
) -> Result<Trained> {
    if data.train.is_empty() {
        bail!("no training rows");
    }
    crate::train::require_second_order_gradients()?;
    let mut p = StGanPhase::new(cfg, opts, batch, seed, env.cadence.log_every, data, dev)?;
    let val: Vec<usize> = if data.val.is_empty() {
        data.train.iter().copied().take(64).collect()
    } else {
        data.val.iter().copied().take(64).collect()
    };
    // Copies: training updates the variables in place.
    let init = Nets::from_tensors(
        cfg,
        &snapshot(&p.g_vm)?,
        &snapshot(&p.d_vm)?,
        &snapshot(&p.e_vm)?,
        dev,
    )?;
    let (mi0, acc0) = measure_info(cfg, &init, &p.fixed, p.mask.as_ref(), dev)?;
    let (psnr0, msssim0) = reconstruction_quality(&init, data.faces, &val, dev)?;
    let w0 = measure_wasserstein(cfg, &init, data.faces, &val, seed + 47, dev)?;
    let r = run_phase(env, "st_gan", opts.steps, &mut p)?;
    let fin = p.snapshot_nets()?;
    let (mi1, acc1) = measure_info(cfg, &fin, &p.fixed, p.mask.as_ref(), dev)?;
    let (psnr1, msssim1) = reconstruction_quality(&fin, data.faces, &val, dev)?;
    let w1 = measure_wasserstein(cfg, &fin, data.faces, &val, seed + 47, dev)?;
    let layer = opts.feature_layer - 1;
    let e0 = measure_encoder(cfg, &fin, &init.e, &p.fixed, layer, dev)?;
    let e1 = measure_encoder(cfg, &fin, &fin.e, &p.fixed, layer, dev)?;
    let mut log = r.log;
    let steps = opts.steps;
    let mut summary = serde_json::json!({
        "steps": steps,
        "batch_size": batch,
        "wall_time_s": r.wall_time_s,
        "val_rows": val.len(),
    });
    for (name, a, b) in [
        ("mi_lower_bound", mi0, mi1),
        ("q_c1_accuracy", acc0, acc1),
        ("val/reconstruction_psnr", psnr0, psnr1),
        ("val/reconstruction_ms_ssim", msssim0, msssim1),
        ("val/wasserstein", w0, w1),
        ("fixed/prior_z", e0.0, e1.0),
        ("fixed/prior_c", e0.1, e1.1),
        ("fixed/feature", e0.2, e1.2),
    ] {
        if !a.is_finite() {
            continue;
        }
        log.push(log_row("st_gan", 0, name, a));
        if name.contains('/') {
            log.push(log_row("st_gan", steps, name, b));
        }
        let key = name.replace('/', "_").replace("val_", "");
        summary[format!("{key}_init")] = a.into();
        summary[key.as_str()] = b.into();
    }
    log.sort_by_key(|r| r.step);
    Ok(Trained {
        log,
        summary,
        generator: frozen(&p.g_vm),
        encoder: frozen(&p.e_vm),
        critic: frozen(&p.d_vm),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::IndexOp;

    #[test]
    fn the_bound_is_zero_for_a_uniform_q_and_ln_k_for_a_sure_one() {
        let cfg = Config {
            continuous: 0,
            ..Config::tiny()
        };
        let dev = Device::Cpu;
        let lat = Latents::draw(&cfg, 8, &mut ChaCha8Rng::seed_from_u64(1));
        let flat = Tensor::zeros((8, 10), DType::F32, &dev).unwrap();
        let (li, _) = info_bound(&cfg, Some(&flat), None, &lat, &dev).unwrap();
        assert!(scalar(&li).unwrap().abs() < 1e-6);
        let sure = (lat.c1_onehot(&cfg, &dev).unwrap() * 50.0).unwrap();
        let (li, acc) = info_bound(&cfg, Some(&sure), None, &lat, &dev).unwrap();
        assert!((scalar(&li).unwrap() - 10f64.ln()).abs() < 1e-4);
        assert_eq!(acc, 1.0);
        // c₂ ~ U(−1, 1) with a unit Gaussian centred on it: ln 2 − ½ ln 2π.
        let cfg2 = Config {
            categorical: 0,
            ..Config::tiny()
        };
        let lat = Latents::draw(&cfg2, 8, &mut ChaCha8Rng::seed_from_u64(2));
        let mean = Tensor::from_vec(lat.c2.clone(), (8, 1), &dev).unwrap();
        let (li, _) = info_bound(&cfg2, None, Some(&mean), &lat, &dev).unwrap();
        let want = 2f64.ln() - 0.5 * std::f64::consts::TAU.ln();
        assert!((scalar(&li).unwrap() - want).abs() < 1e-5);
    }

    #[test]
    fn prior_draws_follow_the_seed_and_their_laws() {
        let cfg = Config::tiny();
        let a = Latents::draw(&cfg, 4000, &mut ChaCha8Rng::seed_from_u64(3));
        let b = Latents::draw(&cfg, 4000, &mut ChaCha8Rng::seed_from_u64(3));
        assert_eq!(a.z, b.z);
        let mean = a.z.iter().map(|&v| v as f64).sum::<f64>() / a.z.len() as f64;
        let var = a.z.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / a.z.len() as f64;
        assert!(
            mean.abs() < 0.02 && (var - 1.0).abs() < 0.03,
            "{mean} {var}"
        );
        assert!(a.c2.iter().all(|v| (-1.0..=1.0).contains(v)));
        let ones = a.c1.iter().filter(|&&c| c == 3).count() as f64 / 4000.0;
        assert!((ones - 0.1).abs() < 0.02, "{ones}");
        let t = a.tensor(&cfg, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[4000, cfg.latent_dim()]);
        let row = t.i(0).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(row[cfg.z_dim + a.c1[0]], 1.0);
    }

    #[test]
    fn set_code_changes_only_the_code() {
        let cfg = Config::tiny();
        let dev = Device::Cpu;
        let lat = Latents::draw(&cfg, 2, &mut ChaCha8Rng::seed_from_u64(4))
            .tensor(&cfg, &dev)
            .unwrap();
        let t = set_code(&cfg, &lat, &CodeSetting::C1(7)).unwrap();
        let (a, b) = (lat.to_vec2::<f32>().unwrap(), t.to_vec2::<f32>().unwrap());
        assert_eq!(a[0][..cfg.z_dim], b[0][..cfg.z_dim]);
        assert_eq!(b[1][cfg.z_dim + 7], 1.0);
        assert_eq!(b[1][cfg.z_dim..cfg.z_dim + 10].iter().sum::<f32>(), 1.0);
        let t = set_code(
            &cfg,
            &lat,
            &CodeSetting::C2 {
                dim: 0,
                value: -0.5,
            },
        )
        .unwrap();
        assert_eq!(t.to_vec2::<f32>().unwrap()[0][cfg.latent_dim() - 1], -0.5);
        assert_eq!(c2_sweep(5), vec![-1.0, -0.5, 0.0, 0.5, 1.0]);
    }

    #[test]
    fn bad_options_get_the_issue_wording() {
        let bad = |o: Options| o.validate(true).unwrap_err();
        let e = bad(Options {
            variant: "x".into(),
            ..Default::default()
        });
        assert_eq!(e, "st_gan.variant = \"x\": must be \"global\" or \"local\"");
        let e = bad(Options {
            feature_layer: 7,
            ..Default::default()
        });
        assert_eq!(e, "st_gan.feature_layer = 7: D has 3 conv blocks");
        let e = Options {
            feature_layer: 7,
            ..Default::default()
        }
        .validate(false)
        .unwrap_err();
        assert_eq!(e, "st_gan.feature_layer = 7: D has 4 conv blocks");
        let e = bad(Options {
            categorical: Some(0),
            continuous: Some(0),
            ..Default::default()
        });
        assert_eq!(
            e,
            "st_gan needs a latent code: categorical ≥ 2 or continuous ≥ 1"
        );
        assert!(
            bad(Options {
                n_critic: 0,
                ..Default::default()
            })
            .contains("n_critic")
        );
        assert!(
            bad(Options {
                lr: -1.0,
                ..Default::default()
            })
            .contains("st_gan.lr = -1: must be a positive number")
        );
    }
}
