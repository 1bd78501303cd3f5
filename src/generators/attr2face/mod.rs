//! attr2face and its dcgan ablation (Liu et al., "Generating Face Images
//! with Attributes for Free"): [`train`] (the three phases) and [`load`]
//! (G_de(Φ(a)) judged by C; reconstructions G_de(G_en(x))).

pub mod load;
pub mod train;

use super::{Abilities, Family, ingest_and_optional_balance};
use crate::train::model_file::Model;

pub const FAMILY: Family = Family {
    name: "attr2face",
    models: &[Model::Attr2face, Model::Dcgan],
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
