//! Data in and out: the Arrow schemas ([`schema`], the single source of truth),
//! CelebA's annotation files ([`celeba`]), image processing ([`images`],
//! and Poisson blending in [`poisson`]),
//! Parquet I/O ([`parquet`]), Arrow batches ⇄ candle tensors ([`tensors`]),
//! the `metrics` table every measuring stage writes ([`metrics_table`]),
//! the procedural demo faces ([`demo`]) and the CelebAMask-HQ face-parsing
//! pairs with their warp into CelebA's aligned frame ([`face_parsing`]).
//! The one place that speaks both Arrow and image/tensor formats.

/// The tool version, stamped in every table's Parquet metadata and in the
/// run manifest (a stage built by another version is rebuilt).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub mod celeba;
pub mod demo;
pub mod face_parsing;
pub mod images;
pub mod metrics_table;
pub mod parquet;
pub mod poisson;
pub mod schema;
pub mod tensors;

/// Writes `bytes` to `dest` so that `dest` is always either its old content
/// or all of the new: a temporary sibling, flushed to disk, then renamed. A
/// failed write (a full disk) names the file and leaves `dest` as it was.
pub fn write_atomic(dest: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dest.with_file_name(format!(".{name}.tmp.{}", std::process::id()));
    let written = crate::fault::check_write(dest).and_then(|_| {
        std::fs::File::create(&tmp).and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()))
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", dest.display()));
    }
    std::fs::rename(&tmp, dest).with_context(|| format!("moving {} into place", dest.display()))
}
