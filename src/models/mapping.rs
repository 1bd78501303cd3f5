//! Mapping function Φ (Liu et al. Sec. III-B eq. 9, III-D): six fully
//! connected layers 40 → 128, 128, 256, 256, 128, 64 with ELU. The last layer
//! has no activation, because it must reach the encoder's embedding z, which
//! is itself the output of a linear layer and not bounded below by −1.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder, linear};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Output sizes of the layers; the last is the embedding size.
    pub widths: Vec<usize>,
    /// Length of the label vector Φ reads.
    #[serde(default = "super::paper_attributes")]
    pub attributes: usize,
}

impl Config {
    pub fn paper_64() -> Self {
        Config {
            widths: vec![128, 128, 256, 256, 128, 64],
            attributes: super::PAPER_ATTRIBUTES,
        }
    }

    pub fn tiny() -> Self {
        Config {
            widths: vec![64, 64, 128, 128, 64, 64],
            attributes: super::PAPER_ATTRIBUTES,
        }
    }

    pub fn embedding(&self) -> usize {
        *self.widths.last().unwrap_or(&0)
    }
}

/// Φ: labels (B, 40) in {0, 1} → embedding (B, 64).
#[derive(Debug, Clone)]
pub struct Mapping {
    layers: Vec<Linear>,
}

impl Mapping {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let mut cin = cfg.attributes;
        let mut layers = Vec::new();
        for (i, &w) in cfg.widths.iter().enumerate() {
            layers.push(linear(cin, w, vb.pp(format!("fc{i}")))?);
            cin = w;
        }
        Ok(Mapping { layers })
    }
}

impl Module for Mapping {
    fn forward(&self, a: &Tensor) -> Result<Tensor> {
        let mut h = a.clone();
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            h = l.forward(&h)?;
            if i < last {
                h = crate::ops::activation::elu(&h, 1.0)?;
            }
        }
        Ok(h)
    }
}
