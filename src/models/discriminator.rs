//! The two label-conditioned discriminators of Φ training (Liu et al.
//! Sec. III-C eq. 12–13, III-D).
//!
//! - D_fc on embeddings: four fully connected layers 512, 512, 512, 1 with
//!   leaky ReLU (none on the output). Conditioning: the label vector is
//!   **concatenated** to z at the input (the MLP can then mix them freely).
//! - D_conv on images: the five 4×4 stride-2 convolutions of
//!   [`super::classifier::ConvStack`] with ReLU, then a linear output.
//!   Conditioning: **projection** (Miyato & Koyama 2018): the logit is
//!   `w·φ(x) + ⟨E a, φ(x)⟩` with a learned label embedding E. Concatenating
//!   labels after the last layer would only add a term independent of x, and
//!   concatenating 40 label planes to the image would multiply the first
//!   layer's cost; projection is cheap and makes the score depend on whether
//!   the image fits its labels.
//!
//! Both return raw logits (B, 1); the losses apply the sigmoid.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder, linear, linear_no_bias};
use serde::{Deserialize, Serialize};

use super::classifier::{self, ConvStack};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcConfig {
    pub embedding: usize,
    /// Hidden widths; the output layer (1) is implied.
    pub widths: Vec<usize>,
    /// Length of the label vector concatenated to z.
    #[serde(default = "super::paper_attributes")]
    pub attributes: usize,
}

impl FcConfig {
    pub fn paper_64() -> Self {
        FcConfig {
            embedding: 64,
            widths: vec![512, 512, 512],
            attributes: super::PAPER_ATTRIBUTES,
        }
    }

    pub fn tiny() -> Self {
        FcConfig {
            embedding: 64,
            widths: vec![128, 128, 128],
            attributes: super::PAPER_ATTRIBUTES,
        }
    }
}

/// D_fc(z | a).
#[derive(Debug, Clone)]
pub struct FcDiscriminator {
    layers: Vec<Linear>,
}

impl FcDiscriminator {
    pub fn new(cfg: &FcConfig, vb: VarBuilder) -> Result<Self> {
        let mut cin = cfg.embedding + cfg.attributes;
        let mut layers = Vec::new();
        for (i, &w) in cfg.widths.iter().chain(std::iter::once(&1)).enumerate() {
            layers.push(linear(cin, w, vb.pp(format!("fc{i}")))?);
            cin = w;
        }
        Ok(FcDiscriminator { layers })
    }

    pub fn forward(&self, z: &Tensor, a: &Tensor) -> Result<Tensor> {
        let mut h = Tensor::cat(&[z, a], 1)?;
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            h = l.forward(&h)?;
            if i < last {
                h = crate::ops::activation::leaky_relu(&h, 0.2)?;
            }
        }
        Ok(h)
    }
}

/// D_conv(x | a) with a projection head.
#[derive(Debug, Clone)]
pub struct ConvDiscriminator {
    stack: ConvStack,
    out: Linear,
    projection: Linear,
}

impl ConvDiscriminator {
    pub fn new(cfg: &classifier::Config, vb: VarBuilder) -> Result<Self> {
        let f = cfg.feature_dim();
        Ok(ConvDiscriminator {
            stack: ConvStack::new(cfg, vb.pp("stack"))?,
            out: linear(f, 1, vb.pp("out"))?,
            projection: linear_no_bias(cfg.attributes, f, vb.pp("projection"))?,
        })
    }

    pub fn forward(&self, x: &Tensor, a: &Tensor) -> Result<Tensor> {
        let f = self.stack.forward(x)?;
        let proj = (&f * self.projection.forward(a)?)?.sum_keepdim(1)?;
        self.out.forward(&f)? + proj
    }
}
