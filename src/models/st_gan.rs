//! ST-GAN's networks (Zhang et al., "ST-GAN", Sec. 3.2, Fig. 2b, App. B):
//! an InfoGAN generator G(z, c), a WGAN-GP critic D that shares its trunk
//! with the auxiliary distribution Q(c | x), and an encoder E(x) = [z̃, c̃]
//! that lets a real face be edited by changing c̃ and decoding with G.
//!
//! The paper gives only "Conv-Bn-Relu" at 64×64 (Sec. 4, 4.1); the sizes
//! here are our choice:
//!
//! - **G**: DCGAN-style. A linear layer from [z ‖ c] to a 4×4 map of
//!   `g_channels[0]` filters (batch norm, ReLU), then 4×4 stride-2
//!   transposed convolutions through the rest of `g_channels` (batch norm,
//!   ReLU) and a last one to 3 channels with tanh.
//! - **D + Q**: 4×4 stride-2 convolutions through `d_channels` with leaky
//!   ReLU 0.2 and a linear critic output. **No batch norm in D**: the
//!   gradient penalty is per sample, which batch statistics would break (a
//!   recorded departure from "Conv-Bn-Relu"). Q is "some fully connected
//!   layers added to D" (App. B): a hidden layer of `q_hidden` with leaky
//!   ReLU, then `categorical` logits for c₁ and `continuous` means for c₂
//!   (fixed σ = 1, as InfoGAN).
//! - **E**: D's convolutions with batch norm and ReLU, then a linear layer
//!   to z_dim + categorical + continuous; E_z and E_c₂ are linear, E_c₁ a
//!   softmax (compared with the one-hot c₁ in eq. 5).
//!
//! Latents (Sec. 4.1, 4.3): c₁ ~ Cat(10, p = 0.1), c₂ ~ Unif(−1, 1); z is not
//! given in the paper, we use z ~ N(0, I) with 100 dimensions.

use candle_core::{D, ModuleT, Result, Tensor};
use candle_nn::{BatchNorm, BatchNormConfig, Linear, Module, VarBuilder, batch_norm, linear};
use serde::{Deserialize, Serialize};

use crate::ops::activation::leaky_relu;
use crate::ops::layers::{
    Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig, conv_transpose2d, conv2d,
};

/// Side of G's first feature map and of D's last.
const START_SIDE: usize = 4;
const LEAKY_SLOPE: f64 = 0.2;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub image_size: usize,
    pub z_dim: usize,
    /// Values of the categorical code c₁ (0: none).
    pub categorical: usize,
    /// Dimensions of the continuous code c₂.
    pub continuous: usize,
    /// G's filters, from the 4×4 map up (one stride-2 layer each, plus the
    /// last one to RGB).
    pub g_channels: Vec<usize>,
    /// D's and E's stride-2 convolutions.
    pub d_channels: Vec<usize>,
    /// Q's hidden layer.
    pub q_hidden: usize,
}

impl Config {
    /// 64×64 (Sec. 4): G 512 → 64 filters, D and E 64 → 512, z 100, c 10 + 1.
    pub fn paper_64() -> Self {
        Config {
            image_size: 64,
            z_dim: 100,
            categorical: 10,
            continuous: 1,
            g_channels: vec![512, 256, 128, 64],
            d_channels: vec![64, 128, 256, 512],
            q_hidden: 128,
        }
    }

    /// CPU tests: 32×32, three stride-2 layers of 8 → 32 filters, z 16,
    /// c still 10 + 1.
    pub fn tiny() -> Self {
        Config {
            image_size: 32,
            z_dim: 16,
            categorical: 10,
            continuous: 1,
            g_channels: vec![32, 16, 8],
            d_channels: vec![8, 16, 32],
            q_hidden: 32,
        }
    }

    /// Length of the code c = [c₁ one-hot ‖ c₂].
    pub fn code_dim(&self) -> usize {
        self.categorical + self.continuous
    }

    /// Length of G's input and E's output, [z ‖ c].
    pub fn latent_dim(&self) -> usize {
        self.z_dim + self.code_dim()
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.categorical == 1 || self.code_dim() == 0 {
            return Err("st_gan needs a latent code: categorical ≥ 2 or continuous ≥ 1".into());
        }
        if self.z_dim == 0 || self.q_hidden == 0 {
            return Err("st_gan: z_dim and q_hidden must be at least 1".into());
        }
        for (name, layers) in [
            ("g_channels", self.g_channels.len()),
            ("d_channels", self.d_channels.len()),
        ] {
            if layers == 0 || START_SIDE << layers != self.image_size {
                return Err(format!(
                    "st_gan.{name}: {layers} stride-2 layers do not turn 4×4 into {}×{} (give {} layers)",
                    self.image_size,
                    self.image_size,
                    (self.image_size / START_SIDE).max(1).ilog2()
                ));
            }
        }
        if self.g_channels.contains(&0) || self.d_channels.contains(&0) {
            return Err("st_gan: every layer needs at least one filter".into());
        }
        Ok(())
    }
}

/// D's (and E's) 4×4 stride-2 convolutions through `d_channels`, named
/// `conv0`, `conv1`, ...
fn stride2_convs(cfg: &Config, vb: &VarBuilder) -> Result<Vec<Conv2d>> {
    let conv = Conv2dConfig {
        padding: 1,
        stride: 2,
        ..Default::default()
    };
    let mut cin = 3;
    let mut convs = Vec::with_capacity(cfg.d_channels.len());
    for (i, &c) in cfg.d_channels.iter().enumerate() {
        convs.push(conv2d(cin, c, 4, conv, vb.pp(format!("conv{i}")))?);
        cin = c;
    }
    Ok(convs)
}

/// Inputs to the linear layers after the last 4×4 map of D or E.
fn flat_features(cfg: &Config) -> usize {
    cfg.d_channels[cfg.d_channels.len() - 1] * START_SIDE * START_SIDE
}

/// The c₁ and c₂ columns of `t` (B, ·), starting at column `at`.
fn code_parts(
    t: &Tensor,
    at: usize,
    categorical: usize,
    continuous: usize,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let c1 = (categorical > 0)
        .then(|| t.narrow(1, at, categorical))
        .transpose()?;
    let c2 = (continuous > 0)
        .then(|| t.narrow(1, at + categorical, continuous))
        .transpose()?;
    Ok((c1, c2))
}

/// G(z, c): (B, latent_dim) → (B, 3, s, s) in [−1, 1].
#[derive(Debug, Clone)]
pub struct Generator {
    fc: Linear,
    fc_bn: BatchNorm,
    ups: Vec<(ConvTranspose2d, BatchNorm)>,
    to_rgb: ConvTranspose2d,
    start_channels: usize,
}

impl Generator {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::msg)?;
        let c0 = cfg.g_channels[0];
        let fc = linear(cfg.latent_dim(), c0 * START_SIDE * START_SIDE, vb.pp("fc"))?;
        let fc_bn = batch_norm(c0, BatchNormConfig::default(), vb.pp("fc_bn"))?;
        let tcfg = ConvTranspose2dConfig {
            padding: 1,
            stride: 2,
            ..Default::default()
        };
        let mut ups = Vec::new();
        for (i, w) in cfg.g_channels.windows(2).enumerate() {
            ups.push((
                conv_transpose2d(w[0], w[1], 4, tcfg, vb.pp(format!("up{i}")))?,
                batch_norm(w[1], BatchNormConfig::default(), vb.pp(format!("up{i}_bn")))?,
            ));
        }
        let last = *cfg
            .g_channels
            .last()
            .expect("validated: g_channels non-empty");
        let to_rgb = conv_transpose2d(last, 3, 4, tcfg, vb.pp("to_rgb"))?;
        Ok(Generator {
            fc,
            fc_bn,
            ups,
            to_rgb,
            start_channels: c0,
        })
    }
}

impl ModuleT for Generator {
    fn forward_t(&self, latent: &Tensor, train: bool) -> Result<Tensor> {
        let b = latent.dim(0)?;
        let mut h =
            self.fc
                .forward(latent)?
                .reshape((b, self.start_channels, START_SIDE, START_SIDE))?;
        h = self.fc_bn.forward_t(&h, train)?.relu()?;
        for (up, bn) in &self.ups {
            h = bn.forward_t(&up.forward(&h)?, train)?.relu()?;
        }
        self.to_rgb.forward(&h)?.tanh()
    }
}

/// What D and Q say about a batch.
pub struct CriticOutput {
    /// The Wasserstein critic value, (B,).
    pub critic: Tensor,
    /// Q's c₁ logits, (B, categorical), or `None` without a categorical code.
    pub c1_logits: Option<Tensor>,
    /// Q's c₂ means, (B, continuous), or `None`.
    pub c2_mean: Option<Tensor>,
    /// The output of every conv block (for the feature loss, eq. 6).
    pub features: Vec<Tensor>,
}

/// D + Q: a shared trunk without normalisation, a critic head and Q's head.
#[derive(Debug, Clone)]
pub struct Critic {
    convs: Vec<Conv2d>,
    critic: Linear,
    q_hidden: Linear,
    q_out: Linear,
    categorical: usize,
    continuous: usize,
}

impl Critic {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::msg)?;
        let convs = stride2_convs(cfg, &vb)?;
        let flat = flat_features(cfg);
        Ok(Critic {
            convs,
            critic: linear(flat, 1, vb.pp("critic"))?,
            q_hidden: linear(flat, cfg.q_hidden, vb.pp("q_hidden"))?,
            q_out: linear(cfg.q_hidden, cfg.code_dim(), vb.pp("q_out"))?,
            categorical: cfg.categorical,
            continuous: cfg.continuous,
        })
    }

    /// The conv blocks' outputs, first to last.
    pub fn trunk(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let mut out: Vec<Tensor> = Vec::with_capacity(self.convs.len());
        for c in &self.convs {
            let h = c.forward(out.last().unwrap_or(x))?;
            out.push(leaky_relu(&h, LEAKY_SLOPE)?);
        }
        Ok(out)
    }

    /// The critic value per image from the last trunk output.
    pub fn critic_head(&self, last: &Tensor) -> Result<Tensor> {
        self.critic.forward(&last.flatten_from(1)?)?.squeeze(1)
    }

    /// Q(c | x) from the last trunk output: (c₁ logits, c₂ means).
    pub fn q_head(&self, last: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let h = leaky_relu(&self.q_hidden.forward(&last.flatten_from(1)?)?, LEAKY_SLOPE)?;
        code_parts(
            &self.q_out.forward(&h)?,
            0,
            self.categorical,
            self.continuous,
        )
    }

    pub fn forward(&self, x: &Tensor) -> Result<CriticOutput> {
        let features = self.trunk(x)?;
        let last = features.last().expect("validated: d_channels non-empty");
        let critic = self.critic_head(last)?;
        let (c1_logits, c2_mean) = self.q_head(last)?;
        Ok(CriticOutput {
            critic,
            c1_logits,
            c2_mean,
            features,
        })
    }

    /// The critic value alone (what the gradient penalty differentiates).
    pub fn critic_value(&self, x: &Tensor) -> Result<Tensor> {
        let features = self.trunk(x)?;
        self.critic_head(features.last().expect("validated: d_channels non-empty"))
    }
}

/// E(x) split into its parts.
pub struct Encoded {
    /// (B, z_dim)
    pub z: Tensor,
    /// Softmax over c₁, (B, categorical), or `None`.
    pub c1: Option<Tensor>,
    /// (B, continuous), or `None`.
    pub c2: Option<Tensor>,
}

impl Encoded {
    /// [z ‖ c₁ ‖ c₂], G's input.
    pub fn latent(&self) -> Result<Tensor> {
        let mut parts = vec![self.z.clone()];
        parts.extend(self.c1.iter().cloned());
        parts.extend(self.c2.iter().cloned());
        Tensor::cat(&parts, 1)
    }
}

/// E: Conv-BN-ReLU with D's layout, then a linear layer to [z̃, c̃].
#[derive(Debug, Clone)]
pub struct Encoder {
    convs: Vec<(Conv2d, BatchNorm)>,
    out: Linear,
    z_dim: usize,
    categorical: usize,
    continuous: usize,
}

impl Encoder {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::msg)?;
        let mut convs = Vec::with_capacity(cfg.d_channels.len());
        for (i, (conv, &c)) in stride2_convs(cfg, &vb)?
            .into_iter()
            .zip(&cfg.d_channels)
            .enumerate()
        {
            let bn = batch_norm(c, BatchNormConfig::default(), vb.pp(format!("bn{i}")))?;
            convs.push((conv, bn));
        }
        Ok(Encoder {
            convs,
            out: linear(flat_features(cfg), cfg.latent_dim(), vb.pp("out"))?,
            z_dim: cfg.z_dim,
            categorical: cfg.categorical,
            continuous: cfg.continuous,
        })
    }

    pub fn encode(&self, x: &Tensor, train: bool) -> Result<Encoded> {
        let mut h = x.clone();
        for (conv, bn) in &self.convs {
            h = bn.forward_t(&conv.forward(&h)?, train)?.relu()?;
        }
        let o = self.out.forward(&h.flatten_from(1)?)?;
        let (logits, c2) = code_parts(&o, self.z_dim, self.categorical, self.continuous)?;
        Ok(Encoded {
            z: o.narrow(1, 0, self.z_dim)?,
            c1: logits
                .map(|l| candle_nn::ops::softmax(&l, D::Minus1))
                .transpose()?,
            c2,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn shapes_of_both_presets() {
        let dev = Device::Cpu;
        for cfg in [Config::paper_64(), Config::tiny()] {
            cfg.validate().unwrap();
            let (s, b) = (cfg.image_size, 2);
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
            let g = Generator::new(&cfg, vb.pp("g")).unwrap();
            let d = Critic::new(&cfg, vb.pp("d")).unwrap();
            let e = Encoder::new(&cfg, vb.pp("e")).unwrap();
            let latent = Tensor::zeros((b, cfg.latent_dim()), DType::F32, &dev).unwrap();
            let x = g.forward_t(&latent, true).unwrap();
            assert_eq!(x.dims(), &[b, 3, s, s]);
            let out = d.forward(&x).unwrap();
            assert_eq!(out.critic.dims(), &[b]);
            assert_eq!(out.c1_logits.unwrap().dims(), &[b, 10]);
            assert_eq!(out.c2_mean.unwrap().dims(), &[b, 1]);
            assert_eq!(out.features.len(), cfg.d_channels.len());
            assert_eq!(
                out.features.last().unwrap().dims(),
                &[b, *cfg.d_channels.last().unwrap(), 4, 4]
            );
            let enc = e.encode(&x, false).unwrap();
            assert_eq!(enc.latent().unwrap().dims(), &[b, cfg.latent_dim()]);
            let p = enc.c1.unwrap().sum(1).unwrap().to_vec1::<f32>().unwrap();
            assert!(p.iter().all(|v| (v - 1.0).abs() < 1e-5), "softmax: {p:?}");
        }
    }

    #[test]
    fn the_critic_has_no_batch_norm() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        Critic::new(&Config::tiny(), vb).unwrap();
        let names: Vec<String> = vm.data().lock().unwrap().keys().cloned().collect();
        assert!(!names.is_empty());
        assert!(
            names
                .iter()
                .all(|n| !n.contains("bn") && !n.contains("running")),
            "{names:?}"
        );
    }

    #[test]
    fn bad_configs_say_what_to_change() {
        let no_code = Config {
            categorical: 0,
            continuous: 0,
            ..Config::tiny()
        };
        assert!(
            no_code
                .validate()
                .unwrap_err()
                .contains("needs a latent code")
        );
        let one_value = Config {
            categorical: 1,
            ..Config::tiny()
        };
        assert!(one_value.validate().is_err());
        let wrong_depth = Config {
            d_channels: vec![8, 16],
            ..Config::tiny()
        };
        let e = wrong_depth.validate().unwrap_err();
        assert!(
            e.contains("d_channels") && e.contains("give 3 layers"),
            "{e}"
        );
        // Local ST-GAN: c₂ only.
        Config {
            categorical: 0,
            ..Config::tiny()
        }
        .validate()
        .unwrap();
    }
}
