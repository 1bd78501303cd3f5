//! The networks, one file per family, each a serde `Config` with named
//! presets, `new(cfg, vb)` and `impl Module` (or a `forward` taking the
//! conditioning labels). Models know candle only: no Arrow, no TOML.
//!
//! - [`began`]: encoder G_en, decoder G_de and the BEGAN autoencoder discriminator.
//! - [`classifier`]: the attribute classifier C and the conv stack it shares with D_conv.
//! - [`mapping`]: the mapping Φ from 40 labels to the embedding.
//! - [`discriminator`]: D_fc on embeddings and D_conv on images, both label-conditioned.
//! - [`attr2face`]: the presets of the whole "for free" generator family.
//! - [`critic`]: the WGAN-GP critic with a class head (SG-GAN, StarGAN).
//! - [`translator`]: the image-to-image generator G(x, labels) of SG-GAN and StarGAN.
//! - [`editor`]: editing images with a trained translator (inference side).
//! - [`resnet`]: ResNet-18 for downstream classifiers.
//! - [`st_gan`]: ST-GAN's generator, critic + Q and encoder (Zhang et al., "ST-GAN").
//! - [`unet`]: the face parser P (SeCGAN's semantic masks, Sun et al.).
//! - [`bridgegan`]: BridgeGAN's SPADE generator, mapping M, encoder E and critic D + C (Huang et al.).

pub mod attr2face;
pub mod began;
pub mod bridgegan;
pub mod classifier;
pub mod critic;
pub mod discriminator;
pub mod editor;
pub mod mapping;
pub mod resnet;
pub mod st_gan;
pub mod translator;
pub mod unet;

use candle_core::{Result, Tensor};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The number of binary attributes the papers' networks condition on:
/// CelebA's 40 (Liu et al. Sec. III). Presets use it; a `Config` read from an
/// older `model.json` without an `attributes` key gets it too.
pub const PAPER_ATTRIBUTES: usize = 40;

pub(crate) fn paper_attributes() -> usize {
    PAPER_ATTRIBUTES
}

/// Activation functions the configs can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Relu,
    /// slope 0.2, as DCGAN and the paper's classifier
    LeakyRelu,
    Elu,
}

impl Activation {
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Relu => x.relu(),
            Activation::LeakyRelu => crate::ops::activation::leaky_relu(x, 0.2),
            Activation::Elu => crate::ops::activation::elu(x, 1.0),
        }
    }
}

/// Nearest-neighbour ×2 upsampling ([`crate::ops::spatial::upsample2x`]:
/// a fused CPU op whose backward is a 2×2 block sum; candle's
/// `upsample_nearest2d` backward is several times slower on CPU).
pub use crate::ops::spatial::upsample2x;

/// Re-initialises every variable of `vm` from `seed`, so that a run is
/// reproducible (candle's CPU initialisers draw from an unseeded RNG).
/// Weights and biases are U(−1/√fan_in, 1/√fan_in), PyTorch's default for
/// linear and conv layers; `fan_in` of a bias is its weight's. Norm layers
/// (a one-dimensional `weight`) start as the identity, as in PyTorch: scale
/// 1, shift 0, running mean 0 and running variance 1.
pub fn seeded_init(vm: &VarMap, seed: u64) -> Result<()> {
    init_all(vm, seed, Init::PyTorch)
}

/// As [`seeded_init`], but weights are He-normal, N(0, 2/fan_in), and
/// biases 0: StarGAN-v2's `he_init` (kaiming_normal_, fan_in, ReLU gain),
/// which it applies to all of its networks.
pub fn seeded_he_init(vm: &VarMap, seed: u64) -> Result<()> {
    init_all(vm, seed, Init::He)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Init {
    PyTorch,
    He,
}

/// A standard normal draw (Box–Muller).
pub fn standard_normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

fn init_all(vm: &VarMap, seed: u64, init: Init) -> Result<()> {
    let data = vm.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for (k, name) in names.into_iter().enumerate() {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let stem = name.rsplit_once('.').map(|(s, _)| s).unwrap_or("");
        let is_norm = data
            .get(&format!("{stem}.weight"))
            .is_some_and(|w| w.rank() == 1);
        if is_norm || name.ends_with("running_mean") || name.ends_with("running_var") {
            let one = name.ends_with(".weight") || name.ends_with("running_var");
            let v = if one { 1.0 } else { 0.0 };
            var.set(
                &Tensor::full(v as f32, dims.as_slice(), var.device())?.to_dtype(var.dtype())?,
            )?;
            continue;
        }
        let fan_in = if name.ends_with(".bias") {
            let w = format!("{}.weight", name.trim_end_matches(".bias"));
            data.get(&w)
                .map(|w| w.dims()[1..].iter().product::<usize>())
                .unwrap_or(dims[0])
        } else {
            dims[1..].iter().product::<usize>().max(1)
        };
        let bound = 1.0 / (fan_in as f64).sqrt();
        let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(k as u64 * 0x9E37_79B9));
        let n: usize = dims.iter().product();
        let he_std = (2.0 / fan_in as f64).sqrt() as f32;
        let v: Vec<f32> = match init {
            Init::PyTorch => (0..n)
                .map(|_| rng.random_range(-bound..bound) as f32)
                .collect(),
            Init::He if name.ends_with(".bias") => vec![0.0; n],
            Init::He => (0..n).map(|_| standard_normal(&mut rng) * he_std).collect(),
        };
        let t = Tensor::from_vec(v, dims.as_slice(), var.device())?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}

/// Number of scalar parameters in a var map.
pub fn parameter_count(vm: &VarMap) -> usize {
    vm.all_vars().iter().map(|v| v.elem_count()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn upsample2x_matches_candle_nearest() {
        let x = Tensor::arange(0f32, 24., &Device::Cpu)
            .unwrap()
            .reshape((1, 2, 3, 4))
            .unwrap();
        let a: Vec<f32> = upsample2x(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let b: Vec<f32> = x
            .upsample_nearest2d(6, 8)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(a, b);
    }
}
