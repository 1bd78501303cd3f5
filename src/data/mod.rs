//! Data in and out: the Arrow schemas ([`schema`], the single source of truth),
//! CelebA's annotation files ([`celeba`]), image processing ([`images`]),
//! Parquet I/O ([`parquet`]) and the procedural demo faces ([`demo`]).
//! The one place that speaks both Arrow and image/tensor formats.

pub mod celeba;
pub mod demo;
pub mod images;
pub mod metrics_table;
pub mod parquet;
pub mod schema;
pub mod tensors;
