//! sggan and stargan (Zhang et al., SG-GAN; Choi et al., StarGAN): [`train`]
//! (one WGAN-GP phase) and [`load`] (G(x, labels) judged by the critic's
//! class head; SeCGAN's RGB branch loads the same way).

pub mod load;
pub mod train;

use serde::{Deserialize, Serialize};

use super::model_file::Model;
use super::options::{self, Config, FamilyOptions, Preset};
use super::{Abilities, Family, ingest_and_optional_balance};
use crate::models::{critic, translator};
use crate::train::translation::TranslationOptions;

pub const FAMILY: Family = Family {
    name: "translation",
    models: &["sggan", "stargan"],
    presets: &[Preset::Paper128, Preset::Tiny],
    options: options::resolve::<Options>,
    option_keys: options::keys::<Options>,
    abilities: Abilities {
        reconstruct: false,
        sample_prior: false,
        reverse: true,
        edits_need_judge: false,
    },
    inputs: ingest_and_optional_balance,
    train: train::run,
    load: load::load,
};

/// The translator a model trains.
pub fn kind(model: Model) -> translator::Kind {
    match model.name() {
        "sggan" => translator::Kind::Sggan,
        _ => translator::Kind::Stargan,
    }
}

/// sggan's and stargan's own keys of a `train_generator` stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// Rows per step.
    pub batch_size: usize,
    /// Attributes, losses and schedule.
    pub translation: TranslationOptions,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            batch_size: 16,
            translation: TranslationOptions::default(),
        }
    }
}

impl FamilyOptions for Options {
    fn check(&self, c: &Config) -> std::result::Result<(), String> {
        if self.batch_size == 0 {
            return Err("batch_size must be at least 1".into());
        }
        self.translation.validate(kind(c.model))?;
        self.attributes(c.model)?;
        Ok(())
    }
}

impl Options {
    /// CelebA indices of the attributes the translator edits.
    pub fn attributes(&self, model: Model) -> std::result::Result<Vec<usize>, String> {
        let names: Vec<String> = match &self.translation.attributes {
            Some(v) => v.clone(),
            None => TranslationOptions::default_attributes(kind(model))
                .into_iter()
                .map(String::from)
                .collect(),
        };
        options::attribute_indices("translation.attributes", &names)
    }
}

/// What `model.json` holds for a translator (sggan, stargan and SeCGAN's
/// RGB branch): G, the critic (D with its class head) and the CelebA names
/// of the attributes they edit, in label order. Other keys (SeCGAN's
/// semantic branch) are not needed to edit and are ignored here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    pub translator: translator::Config,
    pub critic: critic::Config,
    pub attributes: Vec<String>,
}
