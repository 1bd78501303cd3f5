//! SeCGAN (Sun et al., "SeCGAN"): [`train`] (the RGB and semantic branches
//! side by side through a frozen face parser P). Inference needs only its
//! RGB branch G_rgb, a StarGAN-layout translator on y_trg − y_src, so it
//! loads as a translation generator.

pub mod train;

use super::{Abilities, Family};
use crate::contract::StageKind;
use crate::generators::options::Config;
use crate::train::model_file::Model;

pub const FAMILY: Family = Family {
    name: "secgan",
    models: &[Model::Secgan],
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
