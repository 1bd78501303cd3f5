//! Attribute classifier C (Liu et al. Sec. III-A eq. 7–8, III-D): the five
//! 4×4 stride-2 convolutions of D_conv (64 → 1024 filters, doubling) with
//! leaky ReLU, then a linear 40-way multi-label head giving logits (the
//! sigmoid and the cross-entropy of eq. 8 live in the loss).
//!
//! [`ConvStack`] is shared with D_conv ([`super::discriminator`]), which
//! uses ReLU instead. Padding 1 halves the size exactly at every layer.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder, linear};

use crate::ops::layers::{Conv2d, Conv2dConfig, conv2d};
use serde::{Deserialize, Serialize};

use super::Activation;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub image_size: usize,
    /// Filters of the first layer; each layer doubles them.
    pub channels: usize,
    pub layers: usize,
    pub activation: Activation,
    /// Outputs of [`Classifier::new`] (and label inputs of D_conv's projection).
    #[serde(default = "super::paper_attributes")]
    pub attributes: usize,
}

impl Config {
    /// The paper's classifier at 64×64: 64, 128, 256, 512, 1024 filters.
    pub fn paper_64() -> Self {
        Config {
            image_size: 64,
            channels: 64,
            layers: 5,
            activation: Activation::LeakyRelu,
            attributes: super::PAPER_ATTRIBUTES,
        }
    }

    /// CPU-test size: 32×32, 8 → 128 filters.
    pub fn tiny() -> Self {
        Config {
            image_size: 32,
            channels: 8,
            layers: 5,
            activation: Activation::LeakyRelu,
            attributes: super::PAPER_ATTRIBUTES,
        }
    }

    /// Length of the flattened features after the stack.
    pub fn feature_dim(&self) -> usize {
        let side = (self.image_size >> self.layers).max(1);
        self.channels * (1 << (self.layers - 1)) * side * side
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.layers == 0 || self.image_size >> self.layers == 0 {
            return Err(format!(
                "{} stride-2 layers do not fit a {}×{} image",
                self.layers, self.image_size, self.image_size
            ));
        }
        Ok(())
    }
}

/// The stack of 4×4 stride-2 convolutions; `forward` returns flattened features.
#[derive(Debug, Clone)]
pub struct ConvStack {
    convs: Vec<Conv2d>,
    activation: Activation,
}

impl ConvStack {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let cfg2 = Conv2dConfig {
            padding: 1,
            stride: 2,
            ..Default::default()
        };
        let mut cin = 3;
        let mut convs = Vec::new();
        for i in 0..cfg.layers {
            let cout = cfg.channels << i;
            convs.push(conv2d(cin, cout, 4, cfg2, vb.pp(format!("conv{i}")))?);
            cin = cout;
        }
        Ok(ConvStack {
            convs,
            activation: cfg.activation,
        })
    }
}

impl Module for ConvStack {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for c in &self.convs {
            h = self.activation.apply(&c.forward(&h)?)?;
        }
        h.flatten_from(1)
    }
}

/// C: image (B, 3, S, S) → 40 attribute logits.
#[derive(Debug, Clone)]
pub struct Classifier {
    stack: ConvStack,
    head: Linear,
}

impl Classifier {
    /// The paper's C: one output per attribute (`cfg.attributes`).
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        Self::with_outputs(cfg, cfg.attributes, vb)
    }

    /// The same network with `outputs` attributes (e.g. the 13 of Table 3).
    pub fn with_outputs(cfg: &Config, outputs: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Classifier {
            stack: ConvStack::new(cfg, vb.pp("stack"))?,
            head: linear(cfg.feature_dim(), outputs, vb.pp("head"))?,
        })
    }
}

impl Module for Classifier {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.head.forward(&self.stack.forward(x)?)
    }
}
