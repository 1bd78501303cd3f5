//! The face parser P of SeCGAN (Sun et al., Sec. 3 "Parsing network"): the
//! paper uses a pretrained parser; none can be installed here, so we train
//! a small U-Net (Ronneberger et al. 2015) on CelebAMask-HQ pairs.
//!
//! `levels` resolutions; at each, two conv3×3 → batch norm → ReLU, then a
//! 2×2 max pool going down; `width`·2ᵏ filters at level k. Going up:
//! nearest ×2 upsampling, conv3×3 to the skip's width, concatenation with
//! the skip, two conv3×3 → BN → ReLU. A 1×1 conv gives one logit per class;
//! [`UNet::probabilities`] is the softmax over them.

use candle_core::{ModuleT, Result, Tensor};
use candle_nn::{BatchNorm, BatchNormConfig, VarBuilder, batch_norm};
use serde::{Deserialize, Serialize};

use crate::ops::layers::{Conv2d, Conv2dConfig, conv2d, conv2d_no_bias};
use crate::ops::spatial::upsample2x;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub image_size: usize,
    pub classes: usize,
    /// Filters at the top level (doubling per level).
    pub width: usize,
    pub levels: usize,
}

impl Config {
    /// 4 levels, 32 → 256 filters, at the generator's 128 px.
    pub fn paper(classes: usize) -> Self {
        Config {
            image_size: 128,
            classes,
            width: 32,
            levels: 4,
        }
    }

    /// 4 levels, 8 → 64 filters (CPU tests, 32 or 64 px).
    pub fn tiny(classes: usize) -> Self {
        Config {
            image_size: 64,
            classes,
            width: 8,
            levels: 4,
        }
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        let step = 1usize << (self.levels.max(1) - 1);
        if self.levels < 2 || self.levels > 6 {
            return Err(format!("parser levels = {}: use 2..=6", self.levels));
        }
        if self.image_size < step * 2 || !self.image_size.is_multiple_of(step) {
            return Err(format!(
                "parser image_size = {}: must be a multiple of {step} (2^(levels-1)) and at least {}",
                self.image_size,
                step * 2
            ));
        }
        if self.width == 0 || self.classes < 2 {
            return Err("parser: width must be at least 1 and classes at least 2".into());
        }
        Ok(())
    }
}

fn conv3(cin: usize, cout: usize, vb: VarBuilder) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: 1,
        ..Default::default()
    };
    conv2d_no_bias(cin, cout, 3, cfg, vb)
}

/// conv3×3 → BN → ReLU, twice.
#[derive(Debug, Clone)]
struct DoubleConv {
    c1: Conv2d,
    b1: BatchNorm,
    c2: Conv2d,
    b2: BatchNorm,
}

impl DoubleConv {
    fn new(cin: usize, cout: usize, vb: VarBuilder) -> Result<Self> {
        Ok(DoubleConv {
            c1: conv3(cin, cout, vb.pp("conv1"))?,
            b1: batch_norm(cout, BatchNormConfig::default(), vb.pp("bn1"))?,
            c2: conv3(cout, cout, vb.pp("conv2"))?,
            b2: batch_norm(cout, BatchNormConfig::default(), vb.pp("bn2"))?,
        })
    }
}

impl ModuleT for DoubleConv {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.b1.forward_t(&x.apply(&self.c1)?, train)?.relu()?;
        self.b2.forward_t(&h.apply(&self.c2)?, train)?.relu()
    }
}

#[derive(Debug, Clone)]
pub struct UNet {
    down: Vec<DoubleConv>,
    /// (conv after upsampling, double conv after concatenation), bottom up.
    up: Vec<(Conv2d, DoubleConv)>,
    head: Conv2d,
}

impl UNet {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let w = |k: usize| cfg.width << k;
        let mut down = Vec::new();
        let mut cin = 3;
        for k in 0..cfg.levels {
            down.push(DoubleConv::new(cin, w(k), vb.pp(format!("down{k}")))?);
            cin = w(k);
        }
        let mut up = Vec::new();
        for k in (0..cfg.levels - 1).rev() {
            let reduce = conv3(w(k + 1), w(k), vb.pp(format!("up{k}.reduce")))?;
            let dc = DoubleConv::new(2 * w(k), w(k), vb.pp(format!("up{k}")))?;
            up.push((reduce, dc));
        }
        let head = conv2d(w(0), cfg.classes, 1, Default::default(), vb.pp("head"))?;
        Ok(UNet { down, up, head })
    }

    /// Class probabilities (softmax over dim 1), [B, classes, H, W].
    pub fn probabilities(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::softmax(&self.forward_t(x, false)?, 1)
    }
}

impl ModuleT for UNet {
    /// Logits [B, classes, H, W] of images [B, 3, H, W] in [-1, 1].
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut skips = Vec::new();
        let mut h = x.clone();
        for (k, d) in self.down.iter().enumerate() {
            if k > 0 {
                h = h.max_pool2d(2)?;
            }
            h = d.forward_t(&h, train)?;
            skips.push(h.clone());
        }
        skips.pop();
        for (reduce, dc) in &self.up {
            let skip = skips.pop().expect("one skip per level");
            let u = upsample2x(&h)?.apply(reduce)?;
            h = dc.forward_t(&Tensor::cat(&[&u, &skip], 1)?, train)?;
        }
        h.apply(&self.head)
    }
}

/// Pixel cross-entropy of `logits` [B, C, H, W] against `target` one-hot
/// [B, C, H, W] (all-zero at ignored pixels), each pixel weighted by its
/// class's weight: Σ −w·log p / Σ w over the labelled pixels.
pub fn cross_entropy(logits: &Tensor, target: &Tensor, class_w: &Tensor) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, 1)?;
    let (_, c, _, _) = logits.dims4()?;
    let wt = target.broadcast_mul(&class_w.reshape((1, c, 1, 1))?)?;
    let num = (wt.mul(&logp)?.sum_all()? * -1.0)?;
    let den = wt.sum_all()?.clamp(1e-6, f64::INFINITY)?;
    num.div(&den)
}

/// The arg-max class of each pixel of probabilities [B, C, H, W], and the
/// maximum probability: (B × H × W labels, B × H × W confidences).
pub fn argmax(probs: &Tensor) -> Result<(Vec<u8>, Vec<f32>)> {
    let labels = probs.argmax(1)?.to_dtype(candle_core::DType::U32)?;
    let conf = probs.max(1)?;
    Ok((
        labels
            .flatten_all()?
            .to_vec1::<u32>()?
            .into_iter()
            .map(|v| v as u8)
            .collect(),
        conf.flatten_all()?.to_vec1::<f32>()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn unet_gives_one_logit_per_class_at_the_input_size() {
        let dev = Device::Cpu;
        let vm = candle_nn::VarMap::new();
        let cfg = Config {
            image_size: 32,
            ..Config::tiny(12)
        };
        cfg.validate().unwrap();
        let net = UNet::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
        let x = Tensor::zeros((2, 3, 32, 32), DType::F32, &dev).unwrap();
        assert_eq!(net.forward_t(&x, true).unwrap().dims(), [2, 12, 32, 32]);
        let p = net.probabilities(&x).unwrap().sum(1).unwrap();
        let s = p.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(s.iter().all(|v| (v - 1.0).abs() < 1e-5));
    }

    #[test]
    fn cross_entropy_skips_ignored_pixels_and_weights_classes() {
        let dev = Device::Cpu;
        // Two pixels, two classes: logits favour class 0 at both.
        let logits = Tensor::new(&[[[[2.0f32, 2.0]], [[0.0, 0.0]]]], &dev).unwrap();
        // Pixel 0 is class 1, pixel 1 ignored (all-zero target).
        let target = Tensor::new(&[[[[0.0f32, 0.0]], [[1.0, 0.0]]]], &dev).unwrap();
        let w = Tensor::new(&[1.0f32, 3.0], &dev).unwrap();
        let l = cross_entropy(&logits, &target, &w)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        // −log softmax([2, 0])[1] = log(1 + e²), weight cancels in the mean.
        let want = (1.0f32 + 2.0f32.exp()).ln();
        assert!((l - want).abs() < 1e-5, "{l} vs {want}");
    }
}
