//! `kind = "train_generator"`: trains a generator on the ingested faces.
//! The stage is the generator family's: [`crate::generators`] maps the
//! stage's `model` to its family, which checks its options and inputs,
//! trains, and writes the networks, `model.json`, the `train_log` table,
//! sample grids under `samples/` and every phase's last checkpoint under
//! `checkpoints/` (each family's `train.rs` lists its outputs).

use anyhow::Result;

use super::{StageIo, StageOutput};

pub use crate::generators::options::{Config, Model, Preset};

pub fn run(c: &Config, io: &StageIo) -> Result<StageOutput> {
    crate::generators::train(c, io)
}
