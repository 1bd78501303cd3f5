//! Translation generators: image = G(source image, target labels), keeping
//! identity and background (issue "translation generators").
//!
//! Both are encoder → six residual blocks → decoder with instance norm;
//! candle has no instance norm, and group norm with one group per channel is
//! the same operation (per-sample, per-channel statistics, affine).
//! - SG-GAN (Zhang et al., App. 7.1 Table 4): 7×7 conv 64, two 4×4 stride-2
//!   convs (128, 256), six residual blocks of 3×3 convs at 256, two 4×4
//!   transposed convs (128, 64), each conv followed by ReLU then instance
//!   norm in the table's order; the *adapted residual*: the input image is
//!   concatenated before the last 7×7 conv; tanh. One input, several outputs:
//!   the last conv gives 3 channels per attribute value, split into one image
//!   per value (the table shows one attribute; several attributes stack
//!   their values).
//! - StarGAN (Choi et al. 2018, official code): the target labels tiled as
//!   constant maps and concatenated to the image; 7×7 conv 64, two 4×4
//!   stride-2 convs, six residual blocks (conv, IN, ReLU, conv, IN, + x), two
//!   4×4 transposed convs, 7×7 conv to 3 channels, tanh; IN before ReLU.
//! - SeCGAN (Sun et al., Sec. 3, Table 2) reuses the StarGAN layout for both
//!   branches: G_rgb as is, G_seg with `in_channels` = `out_channels` = the
//!   12 segment classes and a softmax over them in place of the tanh. Both
//!   are conditioned on y_diff = y_trg − y_src ∈ {−1, 0, 1} (STGAN, Sec. 3.1)
//!   instead of the target labels: `condition = "difference"`.

use candle_core::{Module, Result, Tensor};
use candle_nn::{GroupNorm, VarBuilder, group_norm};

use crate::ops::layers::{
    Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig, conv_transpose2d, conv2d,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// One output image per attribute value; labels are not an input.
    Sggan,
    /// One output image; the target labels are an input.
    Stargan,
}

/// The last layer's activation (StarGAN layout only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    /// An image in [−1, 1].
    #[default]
    Tanh,
    /// Class probabilities over the output channels (SeCGAN's G_seg).
    Softmax,
}

/// What the label maps of a StarGAN-layout generator carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// The target labels in {0, 1} (StarGAN).
    #[default]
    Target,
    /// y_trg − y_src in {−1, 0, 1} (SeCGAN, after STGAN).
    Difference,
}

fn three() -> usize {
    3
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub kind: Kind,
    /// Channels of the input image (3; SeCGAN's G_seg: the classes).
    #[serde(default = "three")]
    pub in_channels: usize,
    /// Channels of the output (StarGAN layout; 3, or G_seg's classes).
    #[serde(default = "three")]
    pub out_channels: usize,
    #[serde(default)]
    pub output: Output,
    #[serde(default)]
    pub condition: Condition,
    pub image_size: usize,
    /// Filters of the first conv (64); the stride-2 convs double it twice.
    pub channels: usize,
    pub res_blocks: usize,
    /// SG-GAN: output images (Σ values of the attributes); StarGAN: label
    /// maps concatenated to the input (attributes).
    pub labels: usize,
}

impl Config {
    pub fn paper_128(kind: Kind, labels: usize) -> Self {
        Config {
            kind,
            in_channels: 3,
            out_channels: 3,
            output: Output::Tanh,
            condition: Condition::Target,
            image_size: 128,
            channels: 64,
            res_blocks: 6,
            labels,
        }
    }

    /// CPU tests: 32×32, 8 → 32 filters, two residual blocks.
    pub fn tiny(kind: Kind, labels: usize) -> Self {
        Config {
            kind,
            in_channels: 3,
            out_channels: 3,
            output: Output::Tanh,
            condition: Condition::Target,
            image_size: 32,
            channels: 8,
            res_blocks: 2,
            labels,
        }
    }

    /// One line when the channel / output / condition settings do not fit
    /// the layout (SG-GAN has only the RGB, tanh, label-free form).
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.in_channels == 0 || self.out_channels == 0 {
            return Err("translator channels must be at least 1".into());
        }
        if self.kind == Kind::Sggan
            && (self.in_channels != 3
                || self.out_channels != 3
                || self.output != Output::Tanh
                || self.condition != Condition::Target)
        {
            return Err("SG-GAN's translator is RGB to RGB with a tanh output".into());
        }
        if self.output == Output::Softmax && self.out_channels < 2 {
            return Err("a softmax output needs at least 2 channels".into());
        }
        Ok(())
    }
}

/// G and its critic for editing `attributes` attributes: `paper_128` (both
/// papers' sizes) or `tiny` (CPU tests). SG-GAN has one output and one class
/// per value of each attribute, StarGAN one label map and one class per attribute.
pub fn presets(kind: Kind, tiny: bool, attributes: usize) -> (Config, super::critic::Config) {
    let (labels, critic) = match kind {
        Kind::Sggan => (
            2 * attributes,
            super::critic::Config::sggan_paper_128(2 * attributes),
        ),
        Kind::Stargan => (
            attributes,
            super::critic::Config::stargan_paper_128(attributes),
        ),
    };
    if tiny {
        (Config::tiny(kind, labels), critic.tiny())
    } else {
        (Config::paper_128(kind, labels), critic)
    }
}

/// Instance norm as group norm with one group per channel.
fn instance_norm(c: usize, vb: VarBuilder) -> Result<GroupNorm> {
    group_norm(c, c, 1e-5, vb)
}

fn conv(
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    padding: usize,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding,
        stride,
        ..Default::default()
    };
    conv2d(cin, cout, k, cfg, vb)
}

/// ReLU then IN (SG-GAN's table) or IN then ReLU (StarGAN).
fn relu_norm(h: &Tensor, norm: &GroupNorm, relu_first: bool) -> Result<Tensor> {
    if relu_first {
        norm.forward(&h.relu()?)
    } else {
        norm.forward(h)?.relu()
    }
}

/// conv → (ReLU, IN) in SG-GAN's order or (IN, ReLU) in StarGAN's.
#[derive(Debug, Clone)]
struct Unit {
    conv: Conv2d,
    norm: GroupNorm,
    relu_first: bool,
}

impl Unit {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        relu_norm(&self.conv.forward(x)?, &self.norm, self.relu_first)
    }
}

#[derive(Debug, Clone)]
struct Up {
    conv: ConvTranspose2d,
    norm: GroupNorm,
    relu_first: bool,
}

#[derive(Debug, Clone)]
struct ResBlock {
    a: Conv2d,
    na: GroupNorm,
    b: Conv2d,
    nb: GroupNorm,
    relu_first: bool,
}

impl ResBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = relu_norm(&self.a.forward(x)?, &self.na, self.relu_first)?;
        let h = self.b.forward(&h)?;
        let h = if self.relu_first {
            self.nb.forward(&h.relu()?)?
        } else {
            self.nb.forward(&h)?
        };
        x + h
    }
}

#[derive(Debug, Clone)]
pub struct Translator {
    kind: Kind,
    labels: usize,
    output: Output,
    condition: Condition,
    down: Vec<Unit>,
    blocks: Vec<ResBlock>,
    up: Vec<Up>,
    out: Conv2d,
}

impl Translator {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let relu_first = cfg.kind == Kind::Sggan;
        let n = cfg.channels;
        let cin = match cfg.kind {
            Kind::Sggan => 3,
            Kind::Stargan => cfg.in_channels + cfg.labels,
        };
        let unit = |cin, cout, k, s, p, name: &str| -> Result<Unit> {
            Ok(Unit {
                conv: conv(cin, cout, k, s, p, vb.pp(format!("{name}.conv")))?,
                norm: instance_norm(cout, vb.pp(format!("{name}.norm")))?,
                relu_first,
            })
        };
        let down = vec![
            unit(cin, n, 7, 1, 3, "down0")?,
            unit(n, 2 * n, 4, 2, 1, "down1")?,
            unit(2 * n, 4 * n, 4, 2, 1, "down2")?,
        ];
        let blocks = (0..cfg.res_blocks)
            .map(|i| {
                let p = vb.pp(format!("res{i}"));
                Ok(ResBlock {
                    a: conv(4 * n, 4 * n, 3, 1, 1, p.pp("a"))?,
                    na: instance_norm(4 * n, p.pp("na"))?,
                    b: conv(4 * n, 4 * n, 3, 1, 1, p.pp("b"))?,
                    nb: instance_norm(4 * n, p.pp("nb"))?,
                    relu_first,
                })
            })
            .collect::<Result<_>>()?;
        let tcfg = ConvTranspose2dConfig {
            padding: 1,
            stride: 2,
            ..Default::default()
        };
        let up = [(4 * n, 2 * n), (2 * n, n)]
            .iter()
            .enumerate()
            .map(|(i, &(a, b))| {
                Ok(Up {
                    conv: conv_transpose2d(a, b, 4, tcfg, vb.pp(format!("up{i}.conv")))?,
                    norm: instance_norm(b, vb.pp(format!("up{i}.norm")))?,
                    relu_first,
                })
            })
            .collect::<Result<_>>()?;
        let (out_in, out_c) = match cfg.kind {
            // Adapted residual: the input image joins the last feature map.
            Kind::Sggan => (n + 3, 3 * cfg.labels),
            Kind::Stargan => (n, cfg.out_channels),
        };
        let out = conv(out_in, out_c, 7, 1, 3, vb.pp("out"))?;
        Ok(Translator {
            kind: cfg.kind,
            labels: cfg.labels,
            output: cfg.output,
            condition: cfg.condition,
            down,
            blocks,
            up,
            out,
        })
    }

    /// What the label maps carry (target labels or y_trg − y_src).
    pub fn condition(&self) -> Condition {
        self.condition
    }

    /// The logits of the last conv before the output activation (StarGAN
    /// layout): G_seg's cross-entropies take log-softmax of these.
    pub fn logits(&self, x: &Tensor, labels: &Tensor) -> Result<Tensor> {
        if self.kind != Kind::Stargan {
            return Err(candle_core::Error::Msg(
                "only the StarGAN layout has one output to take logits of".into(),
            ));
        }
        self.trunk(x, Some(labels))
    }

    fn trunk(&self, x: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        let (b, _, h, w) = x.dims4()?;
        let mut t = match (self.kind, labels) {
            (Kind::Stargan, Some(l)) => {
                let maps =
                    l.reshape((b, self.labels, 1, 1))?
                        .broadcast_as((b, self.labels, h, w))?;
                Tensor::cat(&[x, &maps.contiguous()?], 1)?
            }
            (Kind::Stargan, None) => {
                return Err(candle_core::Error::Msg(
                    "StarGAN's generator needs target labels".into(),
                ));
            }
            (Kind::Sggan, _) => x.clone(),
        };
        for u in &self.down {
            t = u.forward(&t)?;
        }
        for r in &self.blocks {
            t = r.forward(&t)?;
        }
        for u in &self.up {
            t = relu_norm(&u.conv.forward(&t)?, &u.norm, u.relu_first)?;
        }
        match self.kind {
            Kind::Sggan => self.out.forward(&Tensor::cat(&[&t, x], 1)?),
            Kind::Stargan => self.out.forward(&t),
        }
    }

    /// SG-GAN: `labels` is ignored and the result is (B, values, 3, H, W);
    /// StarGAN layout: `labels` (B, attributes) (target labels in {0, 1}, or
    /// differences in {−1, 0, 1}) and the result (B, out_channels, H, W):
    /// tanh, or a softmax over the channels.
    pub fn forward(&self, x: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        let (b, _, h, w) = x.dims4()?;
        let y = self.trunk(x, labels)?;
        match (self.kind, self.output) {
            (Kind::Sggan, _) => y.tanh()?.reshape((b, self.labels, 3, h, w)),
            (Kind::Stargan, Output::Tanh) => y.tanh(),
            (Kind::Stargan, Output::Softmax) => candle_nn::ops::softmax(&y, 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::seeded_init;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn paper_shapes_and_every_parameter_learns() {
        let dev = Device::Cpu;
        for (cfg, size) in [
            (Config::paper_128(Kind::Sggan, 4), 128),
            (Config::paper_128(Kind::Stargan, 5), 128),
            (Config::tiny(Kind::Sggan, 4), 32),
            (Config::tiny(Kind::Stargan, 5), 32),
        ] {
            let vm = VarMap::new();
            let g = Translator::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
            seeded_init(&vm, 3).unwrap();
            let x = Tensor::randn(0f32, 1., (2, 3, size, size), &dev).unwrap();
            let l = Tensor::ones((2, 5), DType::F32, &dev).unwrap();
            let y = g.forward(&x, Some(&l)).unwrap();
            match cfg.kind {
                Kind::Sggan => assert_eq!(y.dims(), &[2, 4, 3, size, size]),
                Kind::Stargan => assert_eq!(y.dims(), &[2, 3, size, size]),
            }
            if size == 32 {
                let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
                for (name, v) in vm.data().lock().unwrap().iter() {
                    let g = grads
                        .get(v.as_tensor())
                        .unwrap_or_else(|| panic!("{name}: no gradient"));
                    let s: f32 = g.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
                    assert!(s > 0.0, "{name}: zero gradient");
                }
            }
        }
    }

    /// Group norm with one group per channel is instance norm: zero mean,
    /// unit variance per sample and channel at the identity affine.
    #[test]
    fn group_norm_per_channel_is_instance_norm() {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let n = instance_norm(3, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
        let x = Tensor::randn(0f32, 1., (2, 3, 5, 5), &dev)
            .unwrap()
            .affine(4.0, 2.0)
            .unwrap();
        let y = n.forward(&x).unwrap().flatten_from(2).unwrap();
        let m: Vec<Vec<f32>> = y.mean(2).unwrap().to_vec2().unwrap();
        let v: Vec<Vec<f32>> = y.sqr().unwrap().mean(2).unwrap().to_vec2().unwrap();
        for (mr, vr) in m.iter().zip(&v) {
            for (a, b) in mr.iter().zip(vr) {
                assert!(
                    a.abs() < 1e-5 && (b - 1.0).abs() < 1e-3,
                    "mean {a}, var {b}"
                );
            }
        }
    }
}
