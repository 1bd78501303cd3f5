//! BridgeGAN's networks (Huang et al., "Bridging the Gap between Label- and Reference-based Synthesis", App. B, Figs. 2–5): a
//! generator G guided by an attribute feature map, which comes either from
//! the mapping network M (labels: noise R and att_diff) or from the encoder
//! E (a reference face and att_diff), and a critic whose trunk is shared by
//! the adversarial head D and the attribute classifier C.
//!
//! The appendix draws the layouts but does not say how a residual block,
//! SPADE or the output are built; our choices (StarGAN-v2's, issue #19):
//!
//! - **ResBlk**: norm → activation → 3×3 conv, twice, with a learned 1×1
//!   shortcut when the width changes, ×2 average pooling (after the first
//!   conv, and on the shortcut after its conv) or ×2 nearest upsampling
//!   (before the first conv, and on the shortcut before its conv); the sum
//!   is divided by √2. Leaky ReLU 0.2 in G and the critic, ReLU in M and E.
//! - **SPADE** (Park et al. 2019): parameter-free instance norm, then
//!   x̂·(1 + γ) + β with γ and β from the attribute map, resized bilinearly
//!   to the block's size, through 3×3 conv(`spade_hidden`) → ReLU → two
//!   3×3 convs.
//! - **G** (Fig. 2): 1×1 conv to w; three down blocks with instance norm
//!   (2w, 4w, 8w at S/2, S/4, S/8); two blocks at 8w (instance norm, then
//!   SPADE); three up blocks with SPADE (4w, 2w, w back to S); 1×1 conv to 3
//!   and tanh (the figure's last activation is unreadable; tanh matches the
//!   [−1, 1] images).
//! - **D + C** (Fig. 3): 1×1 conv to `d_channels`, four down blocks without
//!   norm (2×, 4×, 8×, 16× `d_channels` at S/2 … S/16), then per head a conv
//!   over the whole S/16 map to 16× `d_channels`, leaky ReLU and a linear
//!   layer to 1 (D) or n (C). No norm (the gradient penalty is per sample).
//! - **M** (Fig. 4): [R ‖ att_diff] → linear to `mapping_fc` → a 4×4 map
//!   of `mapping_fc / 16` channels → up blocks with instance norm and ReLU to
//!   the map size (S/2) at `map_channels` → 1×1 conv, instance norm, ReLU.
//! - **E** (Fig. 5): [X ‖ att_diff tiled as n maps] → 1×1 conv to
//!   `d_channels` → one down block with instance norm to `map_channels` at
//!   S/2 → three blocks with instance norm → 1×1 conv, instance norm, ReLU.
//!   The first block does not normalise its input (its second norm is
//!   instance norm): after the 1×1 conv the tiled att_diff is a constant
//!   per channel, and an instance norm before the first non-linearity
//!   subtracts it, which made E(X, att_diff) identical for every att_diff
//!   (our first reading of Fig. 5; `the_encoder_reads_att_diff`).
//!
//! `paper_128`: S 128, n 14, w 32, map 64×64×32, D from 16 filters, M's
//! linear layer 1024, SPADE hidden 128. `tiny`: S 32 and every width ÷ 4,
//! so the map is 16×16×8, n 3.

use candle_core::{D, Module, Result, Tensor};
use candle_nn::{GroupNorm, Linear, VarBuilder, linear};
use serde::{Deserialize, Serialize};

use crate::ops::activation::leaky_relu;
use crate::ops::layers::{Conv2d, Conv2dConfig, conv2d};
use crate::ops::spatial::{resize_bilinear, upsample2x};

const SLOPE: f64 = 0.2;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub image_size: usize,
    /// n: attributes of att_diff and C.
    pub attributes: usize,
    /// d: dimensions of M's noise R.
    pub noise_dim: usize,
    /// w: G's first width (doubled by each down block).
    pub g_channels: usize,
    /// Channels of the attribute map from M and E.
    pub map_channels: usize,
    /// SPADE's hidden 3×3 conv.
    pub spade_hidden: usize,
    /// The critic's first width, and E's.
    pub d_channels: usize,
    /// M's linear layer (reshaped to 4×4 × mapping_fc / 16).
    pub mapping_fc: usize,
}

impl Config {
    pub fn paper_128(attributes: usize) -> Self {
        Config {
            image_size: 128,
            attributes,
            noise_dim: 16,
            g_channels: 32,
            map_channels: 32,
            spade_hidden: 128,
            d_channels: 16,
            mapping_fc: 1024,
        }
    }

    /// CPU tests: 32×32, widths ÷ 4 (map 16×16×8).
    pub fn tiny(attributes: usize) -> Self {
        Config {
            image_size: 32,
            attributes,
            noise_dim: 16,
            g_channels: 8,
            map_channels: 8,
            spade_hidden: 32,
            d_channels: 4,
            mapping_fc: 256,
        }
    }

    /// Side of the attribute map (S/2).
    pub fn map_size(&self) -> usize {
        self.image_size / 2
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        let s = self.image_size;
        if s < 32 || !s.is_power_of_two() {
            return Err(format!(
                "bridgegan: image_size = {s}: use a power of two of at least 32"
            ));
        }
        if self.attributes == 0 || self.noise_dim == 0 {
            return Err("bridgegan: attributes and noise_dim must be at least 1".into());
        }
        if self.mapping_fc < 16 || !self.mapping_fc.is_multiple_of(16) {
            return Err(format!(
                "bridgegan: mapping_fc = {}: a multiple of 16 (reshaped to 4×4)",
                self.mapping_fc
            ));
        }
        for (k, v) in [
            ("g_channels", self.g_channels),
            ("map_channels", self.map_channels),
            ("spade_hidden", self.spade_hidden),
            ("d_channels", self.d_channels),
        ] {
            if v == 0 {
                return Err(format!("bridgegan: {k} must be at least 1"));
            }
        }
        Ok(())
    }
}

/// att_ak = A ⊙ B (App. A, eq. 10–11, App. Fig. 1): A = 1 − |att_diff|
/// keeps the attributes the edit leaves alone, B = 2·Y_s − 1 is the
/// att_diff that turns the flipped source back into the source, so E reads
/// out the source's kept attributes. Row-major (rows × n) values.
pub fn keep_code(att_diff: &[f32], source: &[f32]) -> Vec<f32> {
    att_diff
        .iter()
        .zip(source)
        .map(|(d, y)| (1.0 - d.abs()) * (2.0 * y - 1.0))
        .collect()
}

fn conv(cin: usize, cout: usize, k: usize, vb: VarBuilder) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: k / 2,
        ..Default::default()
    };
    conv2d(cin, cout, k, cfg, vb)
}

/// Instance norm without parameters: per sample and channel, zero mean and
/// unit variance over space.
fn plain_instance_norm(x: &Tensor) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?.mean_keepdim(D::Minus2)?;
    let c = x.broadcast_sub(&mean)?;
    let var = c.sqr()?.mean_keepdim(D::Minus1)?.mean_keepdim(D::Minus2)?;
    c.broadcast_div(&(var + 1e-5)?.sqrt()?)
}

/// SPADE: x̂·(1 + γ(map)) + β(map), the map resized to x's size.
#[derive(Debug, Clone)]
struct Spade {
    shared: Conv2d,
    gamma: Conv2d,
    beta: Conv2d,
}

impl Spade {
    fn new(c: usize, cfg: &Config, vb: VarBuilder) -> Result<Self> {
        Ok(Spade {
            shared: conv(cfg.map_channels, cfg.spade_hidden, 3, vb.pp("shared"))?,
            gamma: conv(cfg.spade_hidden, c, 3, vb.pp("gamma"))?,
            beta: conv(cfg.spade_hidden, c, 3, vb.pp("beta"))?,
        })
    }

    fn forward(&self, x: &Tensor, map: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let m = resize_bilinear(map, h, w)?;
        let a = self.shared.forward(&m)?.relu()?;
        let gamma = self.gamma.forward(&a)?;
        let beta = self.beta.forward(&a)?;
        (plain_instance_norm(x)? * (gamma + 1.0)?)? + beta
    }
}

#[derive(Debug, Clone)]
enum Norm {
    None,
    Instance(GroupNorm),
    Spade(Spade),
}

impl Norm {
    fn forward(&self, x: &Tensor, map: Option<&Tensor>) -> Result<Tensor> {
        match self {
            Norm::None => Ok(x.clone()),
            Norm::Instance(n) => n.forward(x),
            Norm::Spade(s) => s.forward(
                x,
                map.ok_or_else(|| candle_core::Error::Msg("SPADE needs the attribute map".into()))?,
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NormKind {
    None,
    Instance,
    Spade,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resample {
    Same,
    Down,
    Up,
}

/// StarGAN-v2's residual block (see the module docs).
#[derive(Debug, Clone)]
struct ResBlk {
    norm1: Norm,
    conv1: Conv2d,
    norm2: Norm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
    resample: Resample,
    leaky: bool,
}

struct BlockSpec {
    cin: usize,
    cout: usize,
    norm: NormKind,
    /// Normalise the block's input (norm1); only E's first block does not.
    norm_input: bool,
    resample: Resample,
    leaky: bool,
}

impl ResBlk {
    fn new(s: BlockSpec, cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let norm = |c: usize, name: &str| -> Result<Norm> {
            Ok(match s.norm {
                NormKind::None => Norm::None,
                NormKind::Instance => {
                    Norm::Instance(candle_nn::group_norm(c, c, 1e-5, vb.pp(name))?)
                }
                NormKind::Spade => Norm::Spade(Spade::new(c, cfg, vb.pp(name))?),
            })
        };
        Ok(ResBlk {
            norm1: if s.norm_input {
                norm(s.cin, "norm1")?
            } else {
                Norm::None
            },
            conv1: conv(s.cin, s.cout, 3, vb.pp("conv1"))?,
            norm2: norm(s.cout, "norm2")?,
            conv2: conv(s.cout, s.cout, 3, vb.pp("conv2"))?,
            shortcut: (s.cin != s.cout)
                .then(|| conv2d(s.cin, s.cout, 1, Conv2dConfig::default(), vb.pp("shortcut")))
                .transpose()?,
            resample: s.resample,
            leaky: s.leaky,
        })
    }

    fn act(&self, x: &Tensor) -> Result<Tensor> {
        if self.leaky {
            leaky_relu(x, SLOPE)
        } else {
            x.relu()
        }
    }

    fn forward(&self, x: &Tensor, map: Option<&Tensor>) -> Result<Tensor> {
        let mut h = self.act(&self.norm1.forward(x, map)?)?;
        if self.resample == Resample::Up {
            h = upsample2x(&h)?;
        }
        h = self.conv1.forward(&h)?;
        if self.resample == Resample::Down {
            h = h.avg_pool2d(2)?;
        }
        h = self
            .conv2
            .forward(&self.act(&self.norm2.forward(&h, map)?)?)?;
        let mut s = x.clone();
        if self.resample == Resample::Up {
            s = upsample2x(&s)?;
        }
        if let Some(c) = &self.shortcut {
            s = c.forward(&s)?;
        }
        if self.resample == Resample::Down {
            s = s.avg_pool2d(2)?;
        }
        (s + h)? / std::f64::consts::SQRT_2
    }
}

/// G(x, attribute map) → image in [−1, 1] (Fig. 2).
#[derive(Debug, Clone)]
pub struct Generator {
    conv_in: Conv2d,
    blocks: Vec<ResBlk>,
    conv_out: Conv2d,
}

impl Generator {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::msg)?;
        let w = cfg.g_channels;
        let leaky = true;
        let spec = |cin, cout, norm, resample| BlockSpec {
            cin,
            cout,
            norm,
            norm_input: true,
            resample,
            leaky,
        };
        let layout = [
            spec(w, 2 * w, NormKind::Instance, Resample::Down),
            spec(2 * w, 4 * w, NormKind::Instance, Resample::Down),
            spec(4 * w, 8 * w, NormKind::Instance, Resample::Down),
            spec(8 * w, 8 * w, NormKind::Instance, Resample::Same),
            spec(8 * w, 8 * w, NormKind::Spade, Resample::Same),
            spec(8 * w, 4 * w, NormKind::Spade, Resample::Up),
            spec(4 * w, 2 * w, NormKind::Spade, Resample::Up),
            spec(2 * w, w, NormKind::Spade, Resample::Up),
        ];
        let blocks = layout
            .into_iter()
            .enumerate()
            .map(|(i, s)| ResBlk::new(s, cfg, vb.pp(format!("block{i}"))))
            .collect::<Result<_>>()?;
        Ok(Generator {
            conv_in: conv(3, w, 1, vb.pp("conv_in"))?,
            blocks,
            conv_out: conv(w, 3, 1, vb.pp("conv_out"))?,
        })
    }

    pub fn forward(&self, x: &Tensor, map: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(x)?;
        for b in &self.blocks {
            h = b.forward(&h, Some(map))?;
        }
        self.conv_out.forward(&h)?.tanh()
    }
}

/// M(R, att_diff) → attribute map (B, map_channels, S/2, S/2) (Fig. 4).
#[derive(Debug, Clone)]
pub struct Mapping {
    fc: Linear,
    start_channels: usize,
    blocks: Vec<ResBlk>,
    out: Conv2d,
    out_norm: GroupNorm,
}

impl Mapping {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::msg)?;
        let c0 = cfg.mapping_fc / 16;
        let ups = (cfg.map_size() / 4).ilog2() as usize;
        let mut blocks = Vec::with_capacity(ups);
        let mut cin = c0;
        for i in 0..ups {
            let s = BlockSpec {
                cin,
                cout: cfg.map_channels,
                norm: NormKind::Instance,
                norm_input: true,
                resample: Resample::Up,
                leaky: false,
            };
            blocks.push(ResBlk::new(s, cfg, vb.pp(format!("block{i}")))?);
            cin = cfg.map_channels;
        }
        let c = cfg.map_channels;
        Ok(Mapping {
            fc: linear(cfg.noise_dim + cfg.attributes, cfg.mapping_fc, vb.pp("fc"))?,
            start_channels: c0,
            blocks,
            out: conv(c, c, 1, vb.pp("out"))?,
            out_norm: candle_nn::group_norm(c, c, 1e-5, vb.pp("out_norm"))?,
        })
    }

    /// `noise` (B, noise_dim), `att_diff` (B, n) in {−1, 0, 1}.
    pub fn forward(&self, noise: &Tensor, att_diff: &Tensor) -> Result<Tensor> {
        let b = noise.dim(0)?;
        let mut h = self
            .fc
            .forward(&Tensor::cat(&[noise, att_diff], 1)?)?
            .reshape((b, self.start_channels, 4, 4))?;
        for blk in &self.blocks {
            h = blk.forward(&h, None)?;
        }
        self.out_norm.forward(&self.out.forward(&h)?)?.relu()
    }
}

/// E(X, att_diff) → attribute map (B, map_channels, S/2, S/2) (Fig. 5).
#[derive(Debug, Clone)]
pub struct Encoder {
    conv_in: Conv2d,
    blocks: Vec<ResBlk>,
    out: Conv2d,
    out_norm: GroupNorm,
}

impl Encoder {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::msg)?;
        let (d, c) = (cfg.d_channels, cfg.map_channels);
        // The first block does not normalise its input (see the module docs).
        let spec = |cin, resample, norm_input| BlockSpec {
            cin,
            cout: c,
            norm: NormKind::Instance,
            norm_input,
            resample,
            leaky: false,
        };
        let layout = [
            spec(d, Resample::Down, false),
            spec(c, Resample::Same, true),
            spec(c, Resample::Same, true),
            spec(c, Resample::Same, true),
        ];
        let blocks = layout
            .into_iter()
            .enumerate()
            .map(|(i, s)| ResBlk::new(s, cfg, vb.pp(format!("block{i}"))))
            .collect::<Result<_>>()?;
        Ok(Encoder {
            conv_in: conv(3 + cfg.attributes, d, 1, vb.pp("conv_in"))?,
            blocks,
            out: conv(c, c, 1, vb.pp("out"))?,
            out_norm: candle_nn::group_norm(c, c, 1e-5, vb.pp("out_norm"))?,
        })
    }

    /// `x` (B, 3, S, S), `att_diff` (B, n) tiled as n constant maps.
    pub fn forward(&self, x: &Tensor, att_diff: &Tensor) -> Result<Tensor> {
        let (b, _, h, w) = x.dims4()?;
        let n = att_diff.dim(1)?;
        let maps = att_diff
            .reshape((b, n, 1, 1))?
            .broadcast_as((b, n, h, w))?
            .contiguous()?;
        let mut t = self.conv_in.forward(&Tensor::cat(&[x, &maps], 1)?)?;
        for blk in &self.blocks {
            t = blk.forward(&t, None)?;
        }
        self.out_norm.forward(&self.out.forward(&t)?)?.relu()
    }
}

/// D + C (Fig. 3): a shared trunk, an adversarial head and a class head.
#[derive(Debug, Clone)]
pub struct Critic {
    conv_in: Conv2d,
    blocks: Vec<ResBlk>,
    d_conv: Conv2d,
    d_fc: Linear,
    c_conv: Conv2d,
    c_fc: Linear,
}

impl Critic {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::msg)?;
        let d = cfg.d_channels;
        let mut blocks = Vec::with_capacity(4);
        for i in 0..4 {
            let s = BlockSpec {
                cin: d << i,
                cout: d << (i + 1),
                norm: NormKind::None,
                norm_input: false,
                resample: Resample::Down,
                leaky: true,
            };
            blocks.push(ResBlk::new(s, cfg, vb.pp(format!("block{i}")))?);
        }
        let (top, side) = (d << 4, cfg.image_size / 16);
        let whole = |name: &str| -> Result<Conv2d> {
            conv2d(top, top, side, Conv2dConfig::default(), vb.pp(name))
        };
        Ok(Critic {
            conv_in: conv(3, d, 1, vb.pp("conv_in"))?,
            blocks,
            d_conv: whole("d_conv")?,
            d_fc: linear(top, 1, vb.pp("d_fc"))?,
            c_conv: whole("c_conv")?,
            c_fc: linear(top, cfg.attributes, vb.pp("c_fc"))?,
        })
    }

    fn trunk(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(x)?;
        for b in &self.blocks {
            h = b.forward(&h, None)?;
        }
        Ok(h)
    }

    fn head(conv: &Conv2d, fc: &Linear, h: &Tensor) -> Result<Tensor> {
        let t = leaky_relu(&conv.forward(h)?, SLOPE)?;
        fc.forward(&t.flatten_from(1)?)
    }

    /// (critic value (B,), attribute logits (B, n)).
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let h = self.trunk(x)?;
        let adv = Self::head(&self.d_conv, &self.d_fc, &h)?.squeeze(1)?;
        Ok((adv, Self::head(&self.c_conv, &self.c_fc, &h)?))
    }

    /// The critic value alone (what the gradient penalty differentiates).
    pub fn critic_value(&self, x: &Tensor) -> Result<Tensor> {
        Self::head(&self.d_conv, &self.d_fc, &self.trunk(x)?)?.squeeze(1)
    }
}

/// G, M and E (one file, `generator.safetensors`): a face edited under the
/// guidance of labels (through M) or of a reference face (through E).
pub struct GuidedEditor {
    pub g: Generator,
    pub m: Mapping,
    pub e: Encoder,
}

impl GuidedEditor {
    /// The three networks under one var builder (prefixes `g`, `m`, `e`).
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<GuidedEditor> {
        Ok(GuidedEditor {
            g: Generator::new(cfg, vb.pp("g"))?,
            m: Mapping::new(cfg, vb.pp("m"))?,
            e: Encoder::new(cfg, vb.pp("e"))?,
        })
    }

    /// Label-guided edits G(x, M(R, att_diff)).
    pub fn by_labels(&self, x: &Tensor, noise: &Tensor, diff: &Tensor) -> Result<Tensor> {
        self.g.forward(x, &self.m.forward(noise, diff)?)
    }

    /// Reference-guided edits G(x, E(x_ref, att_diff)).
    pub fn by_reference(&self, x: &Tensor, reference: &Tensor, diff: &Tensor) -> Result<Tensor> {
        self.g.forward(x, &self.e.forward(reference, diff)?)
    }

    /// A batch mixing both kinds of rows: row i is guided by
    /// E(refs\[i\], diff_i) when it has a reference (a (1, 3, H, W)
    /// image), else by M(R_i, diff_i). M and E normalise per sample, so
    /// each row's edit is the one it gets in a batch of its own kind.
    pub fn mixed(
        &self,
        x: &Tensor,
        noise: &Tensor,
        diff: &Tensor,
        refs: &[Option<Tensor>],
    ) -> Result<Tensor> {
        let (b, dev) = (x.dim(0)?, x.device());
        if refs.len() != b {
            candle_core::bail!("{} references for a batch of {b}", refs.len());
        }
        let (with, without): (Vec<u32>, Vec<u32>) =
            (0..b as u32).partition(|&i| refs[i as usize].is_some());
        let mut feats: Vec<Option<Tensor>> = vec![None; b];
        let mut place = |rows: &[u32], f: Tensor| -> Result<()> {
            for (k, &i) in rows.iter().enumerate() {
                feats[i as usize] = Some(f.narrow(0, k, 1)?);
            }
            Ok(())
        };
        if !without.is_empty() {
            let idx = Tensor::new(without.as_slice(), dev)?;
            let f = self
                .m
                .forward(&noise.index_select(&idx, 0)?, &diff.index_select(&idx, 0)?)?;
            place(&without, f)?;
        }
        if !with.is_empty() {
            let idx = Tensor::new(with.as_slice(), dev)?;
            let xr: Vec<Tensor> = refs.iter().flatten().cloned().collect();
            let f = self
                .e
                .forward(&Tensor::cat(&xr, 0)?, &diff.index_select(&idx, 0)?)?;
            place(&with, f)?;
        }
        let feats: Vec<Tensor> = feats.into_iter().flatten().collect();
        self.g.forward(x, &Tensor::cat(&feats, 0)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn shapes(cfg: &Config, b: usize) {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let (s, n, m) = (cfg.image_size, cfg.attributes, cfg.map_size());
        let g = Generator::new(cfg, vb.pp("g")).unwrap();
        let map_net = Mapping::new(cfg, vb.pp("m")).unwrap();
        let e = Encoder::new(cfg, vb.pp("e")).unwrap();
        let d = Critic::new(cfg, vb.pp("d")).unwrap();
        let x = Tensor::zeros((b, 3, s, s), DType::F32, &dev).unwrap();
        let diff = Tensor::zeros((b, n), DType::F32, &dev).unwrap();
        let r = Tensor::ones((b, cfg.noise_dim), DType::F32, &dev).unwrap();
        let from_m = map_net.forward(&r, &diff).unwrap();
        assert_eq!(from_m.dims(), &[b, cfg.map_channels, m, m]);
        let from_e = e.forward(&x, &diff).unwrap();
        assert_eq!(from_e.dims(), &[b, cfg.map_channels, m, m]);
        let y = g.forward(&x, &from_m).unwrap();
        assert_eq!(y.dims(), &[b, 3, s, s]);
        let (adv, cls) = d.forward(&y).unwrap();
        assert_eq!(adv.dims(), &[b]);
        assert_eq!(cls.dims(), &[b, n]);
    }

    #[test]
    fn figure_2_to_5_shapes_at_both_presets() {
        shapes(&Config::tiny(3), 2);
        // paper_128: 64×64×32 maps, 14 attributes (one forward pass, batch 1).
        let p = Config::paper_128(14);
        assert_eq!((p.map_size(), p.map_channels), (64, 32));
        shapes(&p, 1);
    }

    #[test]
    fn every_weight_of_the_tiny_networks_gets_a_gradient() {
        let dev = Device::Cpu;
        let cfg = Config::tiny(3);
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let g = Generator::new(&cfg, vb.pp("g")).unwrap();
        let map_net = Mapping::new(&cfg, vb.pp("m")).unwrap();
        let e = Encoder::new(&cfg, vb.pp("e")).unwrap();
        let d = Critic::new(&cfg, vb.pp("d")).unwrap();
        let x = Tensor::randn(0f32, 1., (2, 3, 32, 32), &dev).unwrap();
        let diff = Tensor::new(&[[1f32, 0., -1.], [0., -1., 1.]], &dev).unwrap();
        let r = Tensor::randn(0f32, 1., (2, cfg.noise_dim), &dev).unwrap();
        let map = (map_net.forward(&r, &diff).unwrap() + e.forward(&x, &diff).unwrap()).unwrap();
        let y = g.forward(&x, &map).unwrap();
        let (adv, cls) = d.forward(&y).unwrap();
        let loss = (adv.sum_all().unwrap() + cls.sqr().unwrap().sum_all().unwrap()).unwrap();
        let grads = loss.backward().unwrap();
        for (name, v) in vm.data().lock().unwrap().iter() {
            let gr = grads
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient"));
            let s: f32 = gr.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
            assert!(s > 0.0, "{name}: zero gradient");
        }
    }

    /// Fig. 5 concatenates att_diff to E's input. With an instance norm on
    /// the first block's input the tiled att_diff was subtracted as a
    /// per-channel constant and E gave the same map for every att_diff (max
    /// difference 5e-6 here before the first block stopped normalising its
    /// input).
    #[test]
    fn the_encoder_reads_att_diff() {
        let dev = Device::Cpu;
        let cfg = Config::tiny(3);
        let vm = VarMap::new();
        let e = Encoder::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
        crate::models::seeded_init(&vm, 3).unwrap();
        let x = Tensor::randn(0f32, 1., (2, 3, 32, 32), &dev).unwrap();
        let d1 = Tensor::new(&[[1f32, 0., -1.], [0., -1., 1.]], &dev).unwrap();
        let d2 = Tensor::new(&[[-1f32, 1., 1.], [1., 1., -1.]], &dev).unwrap();
        let a = e.forward(&x, &d1).unwrap();
        let b = e.forward(&x, &d2).unwrap();
        let mean_abs: f32 = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(mean_abs > 0.05, "E ignores att_diff: mean |Δ| = {mean_abs}");
    }

    #[test]
    fn the_keep_code_of_a_worked_example() {
        // Fig. 1's reading: source (Black_Hair, Male, Young) = (1, 0, 1),
        // target (1, 1, 0): att_diff (0, 1, −1). Only Black_Hair is kept
        // (A = (1, 0, 0)); turning the flipped source (0, 1, 0) back into
        // the source takes B = (1, −1, 1); att_ak = A ⊙ B = (1, 0, 0).
        assert_eq!(
            keep_code(&[0.0, 1.0, -1.0], &[1.0, 0.0, 1.0]),
            vec![1.0, 0.0, 0.0]
        );
        // A kept negative attribute reads −1.
        assert_eq!(keep_code(&[0.0, 0.0], &[0.0, 1.0]), vec![-1.0, 1.0]);
    }

    #[test]
    fn the_critic_has_no_normalisation() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        Critic::new(&Config::tiny(3), vb).unwrap();
        let names: Vec<String> = vm.data().lock().unwrap().keys().cloned().collect();
        assert!(names.iter().all(|n| !n.contains("norm")), "{names:?}");
    }
}
