//! The "for free" generator family of Liu et al. (Sec. III): every network's
//! configuration in one serde struct with the named presets, written next to
//! the checkpoints so that the synthesize stage can rebuild the networks.
//!
//! At test time an image for labels `a` is `G_de(Φ(a))` (Sec. III-B,
//! "Testing phase").

use serde::{Deserialize, Serialize};

use super::{Activation, began, classifier, discriminator, mapping};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// G_en, G_de and the BEGAN discriminator (same sizes).
    pub autoencoder: began::Config,
    /// C.
    pub classifier: classifier::Config,
    /// Φ.
    pub mapping: mapping::Config,
    pub d_fc: discriminator::FcConfig,
    /// D_conv's convolution stack (ReLU in the paper, leaky ReLU for the DCGAN ablation).
    pub d_conv: classifier::Config,
}

impl Config {
    pub fn paper_64() -> Self {
        Config {
            autoencoder: began::Config::paper_64(),
            classifier: classifier::Config::paper_64(),
            mapping: mapping::Config::paper_64(),
            d_fc: discriminator::FcConfig::paper_64(),
            d_conv: classifier::Config {
                activation: Activation::Relu,
                ..classifier::Config::paper_64()
            },
        }
    }

    pub fn tiny() -> Self {
        Config {
            autoencoder: began::Config::tiny(),
            classifier: classifier::Config::tiny(),
            mapping: mapping::Config::tiny(),
            d_fc: discriminator::FcConfig::tiny(),
            d_conv: classifier::Config {
                activation: Activation::Relu,
                ..classifier::Config::tiny()
            },
        }
    }

    pub fn image_size(&self) -> usize {
        self.autoencoder.image_size
    }

    /// Sizes must agree across networks.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.autoencoder.validate()?;
        self.classifier.validate()?;
        self.d_conv.validate()?;
        let s = self.autoencoder.image_size;
        if self.classifier.image_size != s || self.d_conv.image_size != s {
            return Err("classifier and d_conv must use the autoencoder's image_size".into());
        }
        let e = self.autoencoder.embedding;
        if self.mapping.embedding() != e || self.d_fc.embedding != e {
            return Err(format!(
                "mapping output and d_fc input must equal the embedding size {e}"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::began::{Autoencoder, Decoder, Encoder};
    use crate::models::classifier::Classifier;
    use crate::models::discriminator::{ConvDiscriminator, FcDiscriminator};
    use crate::models::mapping::Mapping;
    use candle_core::{DType, Device, Module, Tensor};
    use candle_nn::{VarBuilder, VarMap};

    fn vm() -> (VarMap, Device) {
        (VarMap::new(), Device::Cpu)
    }

    /// Every parameter of `vm` gets a non-zero gradient from `loss`.
    fn assert_all_grads(vm: &VarMap, loss: &Tensor, what: &str) {
        let grads = loss.backward().unwrap();
        let data = vm.data().lock().unwrap();
        assert!(!data.is_empty());
        for (name, var) in data.iter() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{what}: no gradient for {name}"));
            let norm: f32 = g.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
            assert!(
                norm > 0.0 && norm.is_finite(),
                "{what}: zero gradient for {name}"
            );
        }
    }

    #[test]
    fn paper_64_shapes_and_every_parameter_gets_a_gradient() {
        let cfg = Config::paper_64();
        cfg.validate().unwrap();
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (2, 3, 64, 64), &dev).unwrap();
        let a = Tensor::new(&[[1f32; 40], [0f32; 40]], &dev).unwrap();

        let (m, d) = vm();
        let vb = VarBuilder::from_varmap(&m, DType::F32, &d);
        let enc = Encoder::new(&cfg.autoencoder, vb.pp("encoder")).unwrap();
        let dec = Decoder::new(&cfg.autoencoder, vb.pp("decoder")).unwrap();
        let z = enc.forward(&x).unwrap();
        assert_eq!(z.dims(), &[2, 64]);
        let y = dec.forward(&z).unwrap();
        assert_eq!(y.dims(), &[2, 3, 64, 64]);
        assert_all_grads(
            &m,
            &(y - &x).unwrap().abs().unwrap().mean_all().unwrap(),
            "autoencoder",
        );

        let (m, d) = vm();
        let disc = Autoencoder::new(
            &cfg.autoencoder,
            VarBuilder::from_varmap(&m, DType::F32, &d),
        )
        .unwrap();
        let y = disc.forward(&x).unwrap();
        assert_eq!(y.dims(), &[2, 3, 64, 64]);
        assert_all_grads(
            &m,
            &(y - &x).unwrap().abs().unwrap().mean_all().unwrap(),
            "began d",
        );

        let (m, d) = vm();
        let c =
            Classifier::new(&cfg.classifier, VarBuilder::from_varmap(&m, DType::F32, &d)).unwrap();
        let logits = c.forward(&x).unwrap();
        assert_eq!(logits.dims(), &[2, 40]);
        assert_all_grads(&m, &logits.sqr().unwrap().mean_all().unwrap(), "classifier");

        let (m, d) = vm();
        let phi = Mapping::new(&cfg.mapping, VarBuilder::from_varmap(&m, DType::F32, &d)).unwrap();
        let zh = phi.forward(&a).unwrap();
        assert_eq!(zh.dims(), &[2, 64]);
        assert_all_grads(&m, &zh.sqr().unwrap().mean_all().unwrap(), "mapping");

        let (m, d) = vm();
        let dfc =
            FcDiscriminator::new(&cfg.d_fc, VarBuilder::from_varmap(&m, DType::F32, &d)).unwrap();
        let o = dfc.forward(&zh.detach(), &a).unwrap();
        assert_eq!(o.dims(), &[2, 1]);
        assert_all_grads(&m, &o.sqr().unwrap().mean_all().unwrap(), "d_fc");

        let (m, d) = vm();
        let dconv =
            ConvDiscriminator::new(&cfg.d_conv, VarBuilder::from_varmap(&m, DType::F32, &d))
                .unwrap();
        let o = dconv.forward(&x, &a).unwrap();
        assert_eq!(o.dims(), &[2, 1]);
        assert_all_grads(&m, &o.sqr().unwrap().mean_all().unwrap(), "d_conv");
    }

    #[test]
    fn tiny_preset_is_consistent_and_small() {
        let cfg = Config::tiny();
        cfg.validate().unwrap();
        let dev = Device::Cpu;
        let m = VarMap::new();
        let vb = VarBuilder::from_varmap(&m, DType::F32, &dev);
        let enc = Encoder::new(&cfg.autoencoder, vb.pp("e")).unwrap();
        let x = Tensor::zeros((1, 3, 32, 32), DType::F32, &dev).unwrap();
        assert_eq!(enc.forward(&x).unwrap().dims(), &[1, 64]);
        assert!(crate::models::parameter_count(&m) < 500_000);
    }

    #[test]
    fn seeded_init_is_reproducible() {
        let dev = Device::Cpu;
        let build = |seed| {
            let m = VarMap::new();
            let vb = VarBuilder::from_varmap(&m, DType::F32, &dev);
            let phi = Mapping::new(&mapping::Config::tiny(), vb).unwrap();
            crate::models::seeded_init(&m, seed).unwrap();
            let a = Tensor::ones((1, 40), DType::F32, &dev).unwrap();
            phi.forward(&a)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(build(7), build(7));
        assert_ne!(build(7), build(8));
    }
}
