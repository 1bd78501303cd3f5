//! SeCGAN (Sun et al., "SeCGAN"): [`train`] (the RGB and semantic branches
//! side by side through a frozen face parser P). Inference needs only its
//! RGB branch G_rgb, a StarGAN-layout translator on y_trg − y_src, so it
//! loads as a translation generator.

pub mod train;

use serde::{Deserialize, Serialize};

use super::options::{self, Config, FamilyOptions, Preset};
use super::{Abilities, Family};
use crate::contract::StageKind;
use crate::models::{critic, translator};
use crate::train::secgan::Options as SecganOptions;

pub const FAMILY: Family = Family {
    name: "secgan",
    models: &["secgan"],
    presets: &[Preset::Paper128, Preset::Tiny],
    options: options::resolve::<Options>,
    option_keys: options::keys::<Options>,
    abilities: Abilities {
        reconstruct: false,
        sample_prior: false,
        reverse: true,
        edits_need_judge: false,
    },
    inputs,
    train: train::run,
    load: super::translation::load::load,
};

/// One `ingest` stage and one `parse_faces` stage (the frozen parser P).
fn inputs(_: &Config, inputs: &[StageKind]) -> std::result::Result<(), String> {
    if StageKind::sorted(inputs) == StageKind::sorted(&[StageKind::Ingest, StageKind::ParseFaces]) {
        return Ok(());
    }
    Err(format!(
        "`train_generator` with model = \"secgan\" needs one `ingest` stage and one `parse_faces` stage (its frozen parser P), got {}",
        StageKind::list(inputs)
    ))
}

/// SeCGAN's own keys of a `train_generator` stage: the `[secgan]` table
/// (attributes, losses, schedule, batch size).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    pub secgan: SecganOptions,
}

impl FamilyOptions for Options {
    fn check(&self, _: &Config) -> std::result::Result<(), String> {
        self.secgan.validate()?;
        self.attributes()?;
        Ok(())
    }
}

impl Options {
    /// CelebA indices of the attributes G_rgb edits.
    pub fn attributes(&self) -> std::result::Result<Vec<usize>, String> {
        options::attribute_indices("secgan.attributes", &self.secgan.attribute_names())
    }
}

/// What `model.json` holds for SeCGAN: G_rgb and D_rgb as a translator
/// (so it loads as one), and its semantic branch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    #[serde(flatten)]
    pub rgb: super::translation::Layout,
    pub semantic: Semantic,
}

/// SeCGAN's semantic branch and the parser it was trained through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Semantic {
    /// G_seg (`semantic_generator.safetensors`) and D_seg (`semantic_critic.safetensors`).
    pub generator: translator::Config,
    pub critic: critic::Config,
    /// The segment classes, in channel order.
    pub classes: Vec<String>,
    /// The parse_faces stage and the sha256 of its `parser.safetensors`.
    pub parser_stage: String,
    pub parser_sha256: String,
}
