//! Encoder G_en, decoder G_de and the BEGAN discriminator (an autoencoder):
//! Liu et al., *Generating Face Images with Attributes for Free*, Sec. III-A
//! (eq. 1–6) and III-D, following BEGAN (Berthelot et al. 2017, Sec. 3.5)
//! where the paper is vague.
//!
//! Choices, as the paper leaves them open:
//! - Scales from the image size down to 8×8 (64×64: 64, 32, 16, 8). At scale
//!   `i` the encoder has `(i + 1)·n` filters (BEGAN's linear growth n, 2n, 3n,
//!   4n); the decoder keeps `n` filters at every scale, as BEGAN's does.
//! - "Residual blocks in the convolutional layers": each scale is one residual
//!   block of two 3×3 convolutions with ELU, `x + elu(conv(elu(conv(x))))`
//!   (BEGAN's two convolutions per scale, with a skip).
//! - Down-sampling is a 3×3 convolution with stride 2 (+ ELU) that also grows
//!   the filters; up-sampling is nearest neighbour ×2.
//! - A linear layer without activation maps 8×8×4n ↔ the 64-d embedding z.
//! - The decoder's last layer is a 3×3 convolution to RGB with no output
//!   activation, as in BEGAN; images live in [-1, 1] and are clamped on save.
//! - The discriminator is the same encoder + decoder pair with its own
//!   weights; `D(v) = |v − dec(enc(v))|₁` is computed by the training loop.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder, linear};

use crate::ops::activation::elu;
use crate::ops::layers::{Conv2d, Conv2dConfig, conv2d};
use serde::{Deserialize, Serialize};

use super::upsample2x;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Square input/output size; a power of two, at least 8.
    pub image_size: usize,
    /// `n`, the filters of the first scale.
    pub channels: usize,
    /// Size of the embedding z (64 in the paper).
    pub embedding: usize,
}

impl Config {
    /// The paper's sizes at 64×64 (n = 64, z of 64 dimensions).
    pub fn paper_64() -> Self {
        Config {
            image_size: 64,
            channels: 64,
            embedding: 64,
        }
    }

    /// CPU-test size: 32×32, n = 8.
    pub fn tiny() -> Self {
        Config {
            image_size: 32,
            channels: 8,
            embedding: 64,
        }
    }

    /// Scales from `image_size` down to 8×8.
    pub fn scales(&self) -> usize {
        (self.image_size / 8).trailing_zeros() as usize + 1
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.image_size < 8 || !self.image_size.is_power_of_two() {
            return Err(format!(
                "image_size {} must be a power of two ≥ 8",
                self.image_size
            ));
        }
        if self.channels == 0 || self.embedding == 0 {
            return Err("channels and embedding must be positive".into());
        }
        Ok(())
    }
}

fn conv3(cin: usize, cout: usize, stride: usize, vb: VarBuilder) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: 1,
        stride,
        ..Default::default()
    };
    conv2d(cin, cout, 3, cfg, vb)
}

/// `x + elu(b(elu(a(x))))`.
#[derive(Debug, Clone)]
struct ResBlock {
    a: Conv2d,
    b: Conv2d,
}

impl ResBlock {
    fn new(c: usize, vb: VarBuilder) -> Result<Self> {
        Ok(ResBlock {
            a: conv3(c, c, 1, vb.pp("conv1"))?,
            b: conv3(c, c, 1, vb.pp("conv2"))?,
        })
    }
}

impl Module for ResBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = elu(&self.a.forward(x)?, 1.0)?;
        let h = elu(&self.b.forward(&h)?, 1.0)?;
        x + h
    }
}

/// G_en: image (B, 3, S, S) → embedding z (B, 64).
#[derive(Debug, Clone)]
pub struct Encoder {
    stem: Conv2d,
    blocks: Vec<ResBlock>,
    downs: Vec<Conv2d>,
    fc: Linear,
}

impl Encoder {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let n = cfg.channels;
        let s = cfg.scales();
        let stem = conv3(3, n, 1, vb.pp("stem"))?;
        let mut blocks = Vec::new();
        let mut downs = Vec::new();
        for i in 0..s {
            blocks.push(ResBlock::new((i + 1) * n, vb.pp(format!("block{i}")))?);
            if i + 1 < s {
                downs.push(conv3(
                    (i + 1) * n,
                    (i + 2) * n,
                    2,
                    vb.pp(format!("down{i}")),
                )?);
            }
        }
        let fc = linear(s * n * 64, cfg.embedding, vb.pp("fc"))?;
        Ok(Encoder {
            stem,
            blocks,
            downs,
            fc,
        })
    }
}

impl Module for Encoder {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = elu(&self.stem.forward(x)?, 1.0)?;
        for (i, block) in self.blocks.iter().enumerate() {
            h = block.forward(&h)?;
            if let Some(down) = self.downs.get(i) {
                h = elu(&down.forward(&h)?, 1.0)?;
            }
        }
        self.fc.forward(&h.flatten_from(1)?)
    }
}

/// G_de: embedding z (B, 64) → image (B, 3, S, S).
#[derive(Debug, Clone)]
pub struct Decoder {
    fc: Linear,
    blocks: Vec<ResBlock>,
    out: Conv2d,
    channels: usize,
}

impl Decoder {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let n = cfg.channels;
        let fc = linear(cfg.embedding, n * 64, vb.pp("fc"))?;
        let blocks = (0..cfg.scales())
            .map(|i| ResBlock::new(n, vb.pp(format!("block{i}"))))
            .collect::<Result<_>>()?;
        let out = conv3(n, 3, 1, vb.pp("out"))?;
        Ok(Decoder {
            fc,
            blocks,
            out,
            channels: n,
        })
    }
}

impl Module for Decoder {
    fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let b = z.dim(0)?;
        let mut h = self.fc.forward(z)?.reshape((b, self.channels, 8, 8))?;
        let last = self.blocks.len() - 1;
        for (i, block) in self.blocks.iter().enumerate() {
            h = block.forward(&h)?;
            if i < last {
                h = upsample2x(&h)?;
            }
        }
        self.out.forward(&h)
    }
}

/// The BEGAN discriminator: an autoencoder with its own encoder and decoder.
#[derive(Debug, Clone)]
pub struct Autoencoder {
    pub encoder: Encoder,
    pub decoder: Decoder,
}

impl Autoencoder {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        Ok(Autoencoder {
            encoder: Encoder::new(cfg, vb.pp("encoder"))?,
            decoder: Decoder::new(cfg, vb.pp("decoder"))?,
        })
    }
}

impl Module for Autoencoder {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.decoder.forward(&self.encoder.forward(x)?)
    }
}
