//! ST-GAN (Zhang et al., "ST-GAN"): [`train`] (G, D + Q and E without
//! labels, then the attribute map under a judge) and [`load`] (edits through
//! the latent codes; reconstructions G(E(x)); prior samples).

pub mod load;
pub mod train;

use super::{Abilities, Family};
use crate::contract::StageKind;
use crate::generators::options::Config;
use crate::train::model_file::Model;

pub const FAMILY: Family = Family {
    name: "st_gan",
    models: &[Model::StGan],
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
