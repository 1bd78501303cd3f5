//! The WGAN-GP critics of the translation generators: a stack of stride-2
//! convolutions with leaky ReLU and no normalization, an adversarial head and
//! an attribute-classification head on the last feature map.
//!
//! - SG-GAN (Zhang et al., App. 7.1 Table 5): six 5×5 stride-2 convolutions,
//!   64, 128, 256, 512, 512, 1024 filters; D_adv a 3×3 convolution to one
//!   channel (a patch map), D_cls a convolution whose kernel covers the last
//!   map (2×2 at 128×128, "valid") giving one logit per attribute value.
//!   "Same" padding is symmetric padding 2 (the output halves exactly on even
//!   sizes); the leaky ReLU slope, not given, is 0.2.
//! - StarGAN (Choi et al. 2018, official code): six 4×4 stride-2 convolutions,
//!   64 → 2048 filters, leaky ReLU 0.01, the same two heads (kernel 3 and the
//!   last map's size).
//! - SeCGAN's D_seg (Sun et al., "SeCGAN", Table 2): StarGAN's critic on the 12 segment
//!   channels (`in_channels`), its class head a sigmoid per attribute.
//!
//! Used with the gradient penalty ([`crate::train::losses::gradient_penalty`]),
//! whose second-order gradients `tests/gradient_penalty.rs` checks against
//! finite differences for both presets.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::ops::layers::{Conv2d, Conv2dConfig, conv2d};
use serde::{Deserialize, Serialize};

fn three() -> usize {
    3
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub image_size: usize,
    /// Input channels: 3, or SeCGAN's D_seg: the segment classes.
    #[serde(default = "three")]
    pub in_channels: usize,
    /// Filters of each stride-2 convolution.
    pub channels: Vec<usize>,
    pub kernel: usize,
    pub leaky_slope: f64,
    /// Logits of the classification head (Σ attribute values for SG-GAN's
    /// softmax groups, the number of attributes for StarGAN).
    pub classes: usize,
}

impl Config {
    /// SG-GAN's discriminator at 128×128 (Table 5).
    pub fn sggan_paper_128(classes: usize) -> Self {
        Config {
            image_size: 128,
            in_channels: 3,
            channels: vec![64, 128, 256, 512, 512, 1024],
            kernel: 5,
            leaky_slope: 0.2,
            classes,
        }
    }

    /// StarGAN's discriminator at 128×128 (official defaults: d_conv_dim 64,
    /// d_repeat_num 6).
    pub fn stargan_paper_128(classes: usize) -> Self {
        Config {
            image_size: 128,
            in_channels: 3,
            channels: vec![64, 128, 256, 512, 1024, 2048],
            kernel: 4,
            leaky_slope: 0.01,
            classes,
        }
    }

    /// CPU-test size of either: 32×32, five layers of 8 → 128 filters.
    pub fn tiny(mut self) -> Self {
        self.image_size = 32;
        self.channels = vec![8, 16, 32, 64, 128];
        self
    }

    /// Side of the last feature map.
    pub fn final_side(&self) -> usize {
        self.image_size >> self.channels.len()
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.channels.is_empty()
            || self.final_side() == 0
            || !self.image_size.is_multiple_of(1 << self.channels.len())
        {
            return Err(format!(
                "{} stride-2 layers do not divide a {}×{} image",
                self.channels.len(),
                self.image_size,
                self.image_size
            ));
        }
        Ok(())
    }
}

/// The critic: `forward` gives (adversarial patch map (B, 1, s, s), class
/// logits (B, classes)).
#[derive(Debug, Clone)]
pub struct Critic {
    convs: Vec<Conv2d>,
    adv: Conv2d,
    cls: Conv2d,
    slope: f64,
}

impl Critic {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let mut convs = Vec::new();
        let mut cin = cfg.in_channels;
        // Padding that halves exactly: (k − 2) / 2 rounded up (5 → 2, 4 → 1).
        let padding = (cfg.kernel - 1) / 2;
        for (i, &c) in cfg.channels.iter().enumerate() {
            let conv_cfg = Conv2dConfig {
                padding,
                stride: 2,
                ..Default::default()
            };
            convs.push(conv2d(
                cin,
                c,
                cfg.kernel,
                conv_cfg,
                vb.pp(format!("conv{i}")),
            )?);
            cin = c;
        }
        let same = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let adv = conv2d(cin, 1, 3, same, vb.pp("adv"))?;
        let cls = conv2d(
            cin,
            cfg.classes,
            cfg.final_side(),
            Default::default(),
            vb.pp("cls"),
        )?;
        Ok(Critic {
            convs,
            adv,
            cls,
            slope: cfg.leaky_slope,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let mut h = x.clone();
        for c in &self.convs {
            h = crate::ops::activation::leaky_relu(&c.forward(&h)?, self.slope)?;
        }
        let adv = self.adv.forward(&h)?;
        let cls = self.cls.forward(&h)?.flatten_from(1)?;
        Ok((adv, cls))
    }

    /// The Wasserstein critic value per image: the mean of the patch map.
    pub fn critic_value(&self, x: &Tensor) -> Result<Tensor> {
        self.forward(x)?.0.flatten_from(1)?.mean(1)
    }
}

/// SG-GAN's per-attribute softmax logits as logit differences: (B, n) of
/// l_{j,1} − l_{j,0} from (B, 2n) logits.
pub fn value_logit(cls: &Tensor, n: usize) -> candle_core::Result<Tensor> {
    let pairs = cls.reshape((cls.dim(0)?, n, 2))?;
    pairs.narrow(2, 1, 1)?.squeeze(2)? - pairs.narrow(2, 0, 1)?.squeeze(2)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn paper_shapes() {
        let dev = Device::Cpu;
        for cfg in [Config::sggan_paper_128(6), Config::stargan_paper_128(5)] {
            cfg.validate().unwrap();
            let vm = VarMap::new();
            let d = Critic::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
            let x = Tensor::zeros((1, 3, 128, 128), DType::F32, &dev).unwrap();
            let (adv, cls) = d.forward(&x).unwrap();
            assert_eq!(adv.dims(), &[1, 1, 2, 2]);
            assert_eq!(cls.dims(), &[1, cfg.classes]);
        }
    }
}
