//! The pipeline: a TOML file turned into a validated, typed plan
//! ([`config`]), run in dependency order with fingerprints and atomic outputs
//! ([`runner`]), and recorded in the run manifest ([`manifest`]); one run
//! at a time per run folder ([`lock`]), and only in a folder that is ours
//! ([`ownership`]).

pub mod config;
pub mod lock;
pub mod manifest;
pub mod ownership;
pub mod runner;
