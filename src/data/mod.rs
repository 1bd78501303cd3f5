//! Data in and out: the Arrow schemas ([`schema`], the single source of truth),
//! CelebA's annotation files ([`celeba`]), image processing ([`images`]),
//! Parquet I/O ([`parquet`]), Arrow batches ⇄ candle tensors ([`tensors`]),
//! the `metrics` table every measuring stage writes ([`metrics_table`]) and
//! the procedural demo faces ([`demo`]).
//! The one place that speaks both Arrow and image/tensor formats.

/// The tool version, stamped in every table's Parquet metadata and in the
/// run manifest (a stage built by another version is rebuilt).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub mod celeba;
pub mod demo;
pub mod images;
pub mod metrics_table;
pub mod parquet;
pub mod schema;
pub mod tensors;
