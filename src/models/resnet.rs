//! ResNet-18 (He et al. 2016, "Deep Residual Learning", Table 1, the 18-layer
//! column): the attribute classifier that SG-GAN (Zhang et al. Sec. 4.2) and
//! StarGAN use to measure editing, and a stronger downstream classifier than
//! the paper's 5-conv network.
//!
//! Stem 7×7/2 conv, batch norm, ReLU, 3×3/2 max pool; four stages of two
//! basic blocks (3×3 convs with batch norm) at `width`, 2·, 4·, 8·`width`
//! filters, the last three starting with stride 2 and a 1×1 projection
//! shortcut; global average pool; linear head giving one logit per
//! attribute. Convolutions carry no bias (batch norm follows each), as in
//! the torchvision model. `forward_t(x, train)` uses batch statistics and
//! updates the running ones while training, running ones otherwise.

use candle_core::{ModuleT, Result, Tensor};
use candle_nn::{BatchNorm, BatchNormConfig, Linear, VarBuilder, batch_norm, linear};

use crate::ops::layers::{Conv2d, Conv2dConfig, conv2d_no_bias};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub image_size: usize,
    /// Filters of the first stage (64 in the paper).
    pub width: usize,
    /// Basic blocks per stage ([2, 2, 2, 2] for ResNet-18).
    pub blocks: [usize; 4],
}

impl Config {
    /// ResNet-18 on 64×64 faces (the downstream classifier's input size).
    pub fn paper_64() -> Self {
        Config {
            image_size: 64,
            width: 64,
            blocks: [2, 2, 2, 2],
        }
    }

    /// ResNet-18 at 128×128, the translation papers' evaluation size.
    pub fn paper_128() -> Self {
        Config {
            image_size: 128,
            ..Self::paper_64()
        }
    }

    /// CPU-test size: 32×32, 8 → 64 filters.
    pub fn tiny() -> Self {
        Config {
            image_size: 32,
            width: 8,
            blocks: [2, 2, 2, 2],
        }
    }
}

fn conv(cin: usize, cout: usize, k: usize, stride: usize, vb: VarBuilder) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: k / 2,
        stride,
        ..Default::default()
    };
    conv2d_no_bias(cin, cout, k, cfg, vb)
}

fn bn(c: usize, vb: VarBuilder) -> Result<BatchNorm> {
    batch_norm(c, BatchNormConfig::default(), vb)
}

#[derive(Debug, Clone)]
struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    shortcut: Option<(Conv2d, BatchNorm)>,
}

impl BasicBlock {
    fn new(cin: usize, cout: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let shortcut = if stride != 1 || cin != cout {
            Some((
                conv(cin, cout, 1, stride, vb.pp("down.conv"))?,
                bn(cout, vb.pp("down.bn"))?,
            ))
        } else {
            None
        };
        Ok(BasicBlock {
            conv1: conv(cin, cout, 3, stride, vb.pp("conv1"))?,
            bn1: bn(cout, vb.pp("bn1"))?,
            conv2: conv(cout, cout, 3, 1, vb.pp("conv2"))?,
            bn2: bn(cout, vb.pp("bn2"))?,
            shortcut,
        })
    }
}

impl ModuleT for BasicBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.bn1.forward_t(&x.apply(&self.conv1)?, train)?.relu()?;
        let h = self.bn2.forward_t(&h.apply(&self.conv2)?, train)?;
        let s = match &self.shortcut {
            Some((c, b)) => b.forward_t(&x.apply(c)?, train)?,
            None => x.clone(),
        };
        (h + s)?.relu()
    }
}

/// ResNet-18 with `outputs` logits.
#[derive(Debug, Clone)]
pub struct ResNet {
    stem: Conv2d,
    stem_bn: BatchNorm,
    blocks: Vec<BasicBlock>,
    head: Linear,
}

impl ResNet {
    pub fn new(cfg: &Config, outputs: usize, vb: VarBuilder) -> Result<Self> {
        let w = cfg.width;
        let stem = conv(3, w, 7, 2, vb.pp("stem.conv"))?;
        let stem_bn = bn(w, vb.pp("stem.bn"))?;
        let mut blocks = Vec::new();
        let mut cin = w;
        for (s, &n) in cfg.blocks.iter().enumerate() {
            let cout = w << s;
            for b in 0..n {
                let stride = if s > 0 && b == 0 { 2 } else { 1 };
                blocks.push(BasicBlock::new(
                    cin,
                    cout,
                    stride,
                    vb.pp(format!("layer{}.{b}", s + 1)),
                )?);
                cin = cout;
            }
        }
        let head = linear(cin, outputs, vb.pp("head"))?;
        Ok(ResNet {
            stem,
            stem_bn,
            blocks,
            head,
        })
    }
}

impl ModuleT for ResNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = self
            .stem_bn
            .forward_t(&x.apply(&self.stem)?, train)?
            .relu()?;
        let mut h = max_pool_3x3_s2(&h)?;
        for b in &self.blocks {
            h = b.forward_t(&h, train)?;
        }
        h.mean((2, 3))?.apply(&self.head)
    }
}

/// 3×3 max pool, stride 2, padding 1, on non-negative input (after ReLU,
/// so zero padding gives PyTorch's −∞-padded maxima). candle's max pool has
/// no backward when the window differs from the stride, so this takes the
/// elementwise maximum of the nine strided shifts (each a narrow + reshape).
fn max_pool_3x3_s2(x: &Tensor) -> Result<Tensor> {
    let pooled = pool_axis(x, 2)?;
    pool_axis(&pooled, 3)
}

fn pool_axis(x: &Tensor, axis: usize) -> Result<Tensor> {
    let n = x.dim(axis)?;
    let out = (n + 2 - 3) / 2 + 1;
    // One zero before, enough after for three shifts of 2·out elements.
    let after = (2 * out + 2).saturating_sub(n + 1);
    let p = x.pad_with_zeros(axis, 1, after)?;
    let mut m: Option<Tensor> = None;
    for i in 0..3 {
        let t = p.narrow(axis, i, 2 * out)?;
        let mut dims = t.dims().to_vec();
        dims[axis] = out;
        dims.insert(axis + 1, 2);
        let t = t.reshape(dims)?.narrow(axis + 1, 0, 1)?.squeeze(axis + 1)?;
        m = Some(match m {
            Some(m) => m.maximum(&t)?,
            None => t,
        });
    }
    Ok(m.expect("three shifts"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{parameter_count, seeded_init};
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn resnet18_has_the_torchvision_parameter_count_and_shapes() {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let net = ResNet::new(
            &Config::paper_64(),
            1000,
            VarBuilder::from_varmap(&vm, DType::F32, &dev),
        )
        .unwrap();
        // torchvision.models.resnet18(): 11,689,512 trainable parameters;
        // the var map also holds the 9,600 running means and variances.
        let running: usize = 2 * (64 + 64 * 4 + 128 * 4 + 256 * 4 + 512 * 4 + 128 + 256 + 512);
        assert_eq!(parameter_count(&vm) - running, 11_689_512);
        let x = Tensor::zeros((2, 3, 64, 64), DType::F32, &dev).unwrap();
        assert_eq!(net.forward_t(&x, false).unwrap().dims(), &[2, 1000]);
    }

    #[test]
    fn max_pool_matches_candle_with_padding() {
        let dev = Device::Cpu;
        for side in [7usize, 8, 16] {
            let x = Tensor::rand(0f32, 1., (2, 3, side, side), &dev).unwrap();
            let ours = max_pool_3x3_s2(&x).unwrap();
            let want = x
                .pad_with_zeros(2, 1, 1)
                .unwrap()
                .pad_with_zeros(3, 1, 1)
                .unwrap()
                .max_pool2d_with_stride(3, 2)
                .unwrap();
            assert_eq!(ours.dims(), want.dims(), "side {side}");
            let d: f32 = (ours - want)
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert_eq!(d, 0.0);
        }
    }

    #[test]
    fn tiny_resnet_trains_with_batch_statistics() {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let net = ResNet::new(
            &Config::tiny(),
            3,
            VarBuilder::from_varmap(&vm, DType::F32, &dev),
        )
        .unwrap();
        seeded_init(&vm, 1).unwrap();
        let x = Tensor::randn(0f32, 1., (4, 3, 32, 32), &dev).unwrap();
        let y = net.forward_t(&x, true).unwrap();
        assert_eq!(y.dims(), &[4, 3]);
        let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let data = vm.data().lock().unwrap();
        for (name, v) in data.iter() {
            let g = grads.get(v.as_tensor());
            if name.contains("running_") {
                assert!(g.is_none(), "{name} must not be trained");
            } else {
                let g = g.unwrap_or_else(|| panic!("{name} has no gradient"));
                let n: f32 = g.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
                assert!(n > 0.0, "{name} has a zero gradient");
            }
        }
        // Training updated the running mean of the stem's batch norm.
        let rm: Vec<f32> = data["stem.bn.running_mean"].as_tensor().to_vec1().unwrap();
        assert!(rm.iter().any(|&v| v != 0.0));
    }
}
