//! attr2face and its dcgan ablation (Liu et al., "Generating Face Images
//! with Attributes for Free"): [`train`] (the three phases) and [`load`]
//! (G_de(Φ(a)) judged by C; reconstructions G_de(G_en(x))).

pub mod load;
pub mod train;

use serde::{Deserialize, Serialize};

use super::options::{self, Config, FamilyOptions, Preset};
use super::{Abilities, Family, ingest_and_optional_balance};
use crate::train::attr2face::{AutoencoderOptions, ClassifierOptions, MappingOptions};

pub const FAMILY: Family = Family {
    name: "attr2face",
    models: &["attr2face", "dcgan"],
    presets: &[Preset::Paper64, Preset::Tiny],
    options: options::resolve::<Options>,
    option_keys: options::keys::<Options>,
    abilities: Abilities {
        reconstruct: true,
        sample_prior: false,
        reverse: false,
        edits_need_judge: false,
    },
    inputs: ingest_and_optional_balance,
    train: train::run,
    load: load::load,
};

/// attr2face's and dcgan's own keys of a `train_generator` stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// Rows per step.
    pub batch_size: usize,
    /// `false`: the "Without Perceptual Loss" ablation.
    pub perceptual_loss: bool,
    /// Table 4: rounds of classifier retraining on augmented data, then Φ again.
    pub recursive_times: usize,
    pub autoencoder: AutoencoderOptions,
    pub classifier: ClassifierOptions,
    pub mapping: MappingOptions,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            batch_size: 16,
            perceptual_loss: true,
            recursive_times: 1,
            autoencoder: AutoencoderOptions::default(),
            classifier: ClassifierOptions::default(),
            mapping: MappingOptions::default(),
        }
    }
}

impl FamilyOptions for Options {
    fn check(&self, _: &Config) -> std::result::Result<(), String> {
        if self.batch_size == 0 {
            return Err("batch_size must be at least 1".into());
        }
        if !(1..=10).contains(&self.recursive_times) {
            return Err(format!(
                "recursive_times = {}: use 1 (no recursion) to 10",
                self.recursive_times
            ));
        }
        for (key, lr) in [
            ("autoencoder.lr", self.autoencoder.lr),
            ("classifier.lr", self.classifier.lr),
            ("mapping.lr", self.mapping.lr),
            ("mapping.discriminator_lr", self.mapping.discriminator_lr),
        ] {
            if !(lr > 0.0 && lr.is_finite()) {
                return Err(format!("{key} = {lr}: must be a positive number"));
            }
        }
        for (key, e) in [
            ("autoencoder.epochs", self.autoencoder.epochs),
            ("classifier.epochs", self.classifier.epochs),
            ("mapping.epochs", self.mapping.epochs),
        ] {
            if !(e > 0.0 && e.is_finite()) {
                return Err(format!("{key} = {e}: must be positive (or set `steps`)"));
            }
        }
        if !(0.0..=1.0).contains(&self.autoencoder.gamma) {
            return Err("autoencoder.gamma must be in [0, 1]".into());
        }
        Ok(())
    }
}

/// What `model.json` holds for attr2face / dcgan: Φ, G_de, C, the
/// discriminators and (attr2face) the autoencoder, by their sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    pub network: crate::models::attr2face::Config,
}
