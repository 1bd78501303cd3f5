//! sggan and stargan (Zhang et al., SG-GAN; Choi et al., StarGAN): [`train`]
//! (one WGAN-GP phase) and [`load`] (G(x, labels) judged by the critic's
//! class head; SeCGAN's RGB branch loads the same way).

pub mod load;
pub mod train;

use super::{Abilities, Family, ingest_and_optional_balance};
use crate::train::model_file::Model;

pub const FAMILY: Family = Family {
    name: "translation",
    models: &[Model::Sggan, Model::Stargan],
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
