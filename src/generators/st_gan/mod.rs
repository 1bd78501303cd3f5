//! ST-GAN (Zhang et al., "ST-GAN"): [`train`] (G, D + Q and E without
//! labels, then the attribute map under a judge) and [`load`] (edits through
//! the latent codes; reconstructions G(E(x)); prior samples).

pub mod load;
pub mod train;

use serde::{Deserialize, Serialize};

use super::options::{self, Config, FamilyOptions, Preset};
use super::{Abilities, Family};
use crate::contract::StageKind;
use crate::train::st_gan::{Blend, Options as StGanOptions};

pub const FAMILY: Family = Family {
    name: "st_gan",
    models: &["st_gan"],
    presets: &[Preset::Paper64, Preset::Tiny],
    options: options::resolve::<Options>,
    option_keys: options::keys::<Options>,
    abilities: Abilities {
        reconstruct: true,
        sample_prior: true,
        reverse: false,
        edits_need_judge: true,
    },
    inputs,
    train: train::run,
    load: load::load,
};

/// An `ingest` stage, and optionally a `train_classifier` stage trained on
/// real faces (the judge of the attribute map).
fn inputs(_: &Config, inputs: &[StageKind]) -> std::result::Result<(), String> {
    let k = StageKind::sorted(inputs);
    if k == [StageKind::Ingest] || k == [StageKind::Ingest, StageKind::TrainClassifier] {
        return Ok(());
    }
    Err(format!(
        "`train_generator` with model = \"st_gan\" needs one `ingest` stage and optionally one `train_classifier` stage trained on real faces (the judge of its attribute map), got {}",
        StageKind::list(inputs)
    ))
}

/// ST-GAN's own keys of a `train_generator` stage: the `[st_gan]` table
/// (latent layout, losses, schedule, batch size and the attribute map).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    pub st_gan: StGanOptions,
}

impl FamilyOptions for Options {
    fn check(&self, c: &Config) -> std::result::Result<(), String> {
        self.st_gan.validate(c.preset() == Preset::Tiny)
    }
}

/// What `model.json` holds for ST-GAN: G, D + Q and E (`generator`,
/// `critic`, `encoder.safetensors`), their sizes and latent layout, the
/// variant, LST-GAN's mask and the blending.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    pub st_gan: crate::models::st_gan::Config,
    /// `global` or `local` (LST-GAN).
    pub variant: String,
    /// LST-GAN's box M, [top, left, height, width] fractions.
    pub mask: Option<[f64; 4]>,
    /// How synthesize puts an edit back: `poisson`, `mask` or `none`.
    pub blend: Blend,
    /// sha256 of `encoder.safetensors`.
    pub encoder_sha256: String,
}
