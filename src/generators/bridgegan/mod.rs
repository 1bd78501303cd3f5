//! BridgeGAN (Huang et al., "Bridging the Gap between Label- and
//! Reference-based Synthesis"): [`train`] (G, M, E and D + C in one phase)
//! and [`load`] (label- or reference-guided edits, judged by C).

pub mod load;
pub mod train;

use serde::{Deserialize, Serialize};

use super::options::{self, Config, FamilyOptions, Preset};
use super::{Abilities, Family, ingest_and_optional_balance};
use crate::train::bridgegan::Options as BridgeOptions;

pub const FAMILY: Family = Family {
    name: "bridgegan",
    models: &["bridgegan"],
    presets: &[Preset::Paper128, Preset::Tiny],
    options: options::resolve::<Options>,
    option_keys: options::keys::<Options>,
    abilities: Abilities {
        reconstruct: false,
        sample_prior: false,
        reverse: false,
        edits_need_judge: false,
    },
    inputs: ingest_and_optional_balance,
    train: train::run,
    load: load::load,
};

/// BridgeGAN's own keys of a `train_generator` stage: the `[bridgegan]`
/// table (attributes, losses, schedule, batch size).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    pub bridgegan: BridgeOptions,
}

impl FamilyOptions for Options {
    fn check(&self, _: &Config) -> std::result::Result<(), String> {
        self.bridgegan.validate()?;
        self.attributes()?;
        Ok(())
    }
}

impl Options {
    /// CelebA indices of att_diff's attributes.
    pub fn attributes(&self) -> std::result::Result<Vec<usize>, String> {
        options::attribute_indices("bridgegan.attributes", &self.bridgegan.attribute_names())
    }
}

/// What `model.json` holds for BridgeGAN: the sizes of G + M + E
/// (`generator.safetensors`) and D + C (`critic.safetensors`), and the
/// CelebA names of att_diff's attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    pub bridgegan: crate::models::bridgegan::Config,
    pub attributes: Vec<String>,
}
