//! BridgeGAN (Huang et al., "Bridging the Gap between Label- and
//! Reference-based Synthesis"): [`train`] (G, M, E and D + C in one phase)
//! and [`load`] (label- or reference-guided edits, judged by C).

pub mod load;
pub mod train;

use super::{Abilities, Family, ingest_and_optional_balance};
use crate::train::model_file::Model;

pub const FAMILY: Family = Family {
    name: "bridgegan",
    models: &[Model::Bridgegan],
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
