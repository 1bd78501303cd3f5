//! Upper bounds on every value that sizes memory or work, checked before
//! any work starts, so that a typo (`batch_size = 1600000`, `--n 1e12`)
//! is one line naming the key and the limit instead of an allocation abort
//! or the OOM killer. README.md "Limits" lists them; each is far above
//! what the papers use (CelebA has 202,599 faces, StarGAN trains 200,000
//! steps at batch 16) and far below what would exhaust a machine.
//!
//! Pipeline keys are checked by name wherever they appear in a stage's
//! validated config (`stages.gen.translation.batch_size` is bounded as a
//! `batch_size`), so an option added to any generator family is bounded
//! without a new line here; a count with no name of its own gets
//! [`OTHER_COUNT`]. A user's input files are read through [`read_file`],
//! which refuses special files and reads no further than a cap
//! ([`MAX_IMAGE_FILE_BYTES`], [`MAX_TEXT_FILE_BYTES`]); decoded images are
//! bounded by [`MAX_IMAGE_SIDE`], and `augment sql` results by
//! [`MAX_SQL_ROWS`] and [`SQL_MEMORY_BYTES`].

use serde_json::Value;

/// A limit: the largest value, and what it counts (for the message).
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub max: f64,
    pub what: &'static str,
}

const fn limit(max: f64, what: &'static str) -> Limit {
    Limit { max, what }
}

/// Rows per training or inference step.
pub const BATCH: Limit = limit(4096.0, "rows per step");
/// Optimisation steps of one phase.
pub const STEPS: Limit = limit(100_000_000.0, "steps");
/// Passes over the training rows.
pub const EPOCHS: Limit = limit(100_000.0, "epochs");
/// Rows a stage generates, samples or measures.
pub const ROWS: Limit = limit(10_000_000.0, "rows");
/// Demo faces rendered by `ingest` (`source = "demo"`) or `augment demo-data`.
pub const DEMO_FACES: Limit = limit(1_000_000.0, "demo faces");
/// Side of a square image in pixels (resize, crop, model input).
pub const IMAGE_SIDE: Limit = limit(1024.0, "pixels a side");
/// Channels, widths and latent sizes of a network.
pub const WIDTH: Limit = limit(4096.0, "channels or units a layer");
/// Blocks or levels of a network.
pub const DEPTH: Limit = limit(64.0, "blocks");
/// Rows of a sample grid.
pub const GRID_ROWS: Limit = limit(64.0, "grid rows");
/// Classifier repeats (each one a full training run).
pub const REPEATS: Limit = limit(100.0, "repeats");
/// Bootstrap or permutation resamples.
pub const RESAMPLES: Limit = limit(1_000_000.0, "resamples");
/// KID subsets.
pub const KID_SUBSETS: Limit = limit(10_000.0, "subsets");
/// Rows of one KID subset (its kernel sums grow with the square).
pub const KID_SUBSET_SIZE: Limit = limit(100_000.0, "rows a subset");
/// Balance size multipliers (`size`, `sizes`): the plan grows with them.
pub const SIZE_FACTOR: Limit = limit(100.0, "times the original rows");
/// Critic updates per generator update.
pub const N_CRITIC: Limit = limit(100.0, "critic steps per generator step");
/// Attributes picked per rerank (`top_k`, `bottom_k`).
pub const ATTRIBUTES: Limit = limit(256.0, "attributes");
/// Sizes of one balance sweep (`sizes`): each copies every stage downstream.
pub const SWEEP_SIZES: Limit = limit(16.0, "sizes a sweep");
/// Entries of any list in a stage's config (attributes, alphas, ...).
pub const LIST: Limit = limit(10_000.0, "entries");
/// Any other count in a stage's config.
pub const OTHER_COUNT: Limit = limit(1_000_000_000.0, "");

/// An image file's size: CelebA's aligned JPEGs are ~10 KB, a 1024² PNG a few MB.
pub const MAX_IMAGE_FILE_BYTES: u64 = 64 << 20;
/// A decoded image's width and height (before the crop and resize).
pub const MAX_IMAGE_SIDE: u32 = 8192;
/// A text annotation file: `list_attr_celeba.txt` is 26 MB.
pub const MAX_TEXT_FILE_BYTES: u64 = 1 << 30;
/// Rows `augment sql` returns; aggregate or add a LIMIT beyond that.
pub const MAX_SQL_ROWS: usize = 1_000_000;
/// Memory a query's sorts, joins and aggregates may hold before it fails.
pub const SQL_MEMORY_BYTES: usize = 4 << 30;

/// A crop box in the source image's pixels (`crop.top`, `crop.size`, ...).
pub const CROP: Limit = limit(MAX_IMAGE_SIDE as f64, "pixels of the source image");

/// Reads a user's input file whole, refusing what is not a regular file
/// and anything over `max_bytes`: a FIFO, socket or device (`/dev/zero`
/// saved as `x.jpg`, a named pipe in an image folder) is opened without
/// blocking and refused, and a file is never read past `max_bytes`, even
/// one that grows while it is read. The error says which, in one line.
pub fn read_file(path: &std::path::Path, max_bytes: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    let t = meta.file_type();
    let special = if t.is_dir() {
        Some("a folder")
    } else if t.is_fifo() {
        Some("a named pipe (FIFO)")
    } else if t.is_socket() {
        Some("a socket")
    } else if t.is_char_device() || t.is_block_device() {
        Some("a device")
    } else if !t.is_file() {
        Some("not a regular file")
    } else {
        None
    };
    if let Some(what) = special {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("not a regular file: {what}"),
        ));
    }
    let too_large = |n: u64| {
        Error::new(
            ErrorKind::FileTooLarge,
            format!("{n} bytes or more, over the limit of {max_bytes} bytes for this kind of file"),
        )
    };
    if meta.len() > max_bytes {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max_bytes + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// The limit of a config key, by its last name segment (and its parent for
/// a crop box); None: unbounded (seeds, floats other than size factors).
fn limit_of(parent: Option<&str>, key: &str) -> Option<Limit> {
    if parent == Some("crop") {
        return Some(CROP);
    }
    Some(match key {
        "batch_size" | "micro_batch" => BATCH,
        "steps" | "decay_start" | "log_every" | "sample_every" | "checkpoint_every"
        | "rerank_every" | "lr_halve_every" | "max_iterations" => STEPS,
        "epochs" => EPOCHS,
        "n" => DEMO_FACES,
        "image_size" => IMAGE_SIDE,
        "channels" | "g_channels" | "d_channels" | "map_channels" | "width" | "spade_hidden"
        | "q_hidden" | "mapping_fc" | "embedding" | "z_dim" | "noise_dim" | "categorical"
        | "continuous" => WIDTH,
        "res_blocks" | "layers" | "levels" => DEPTH,
        "grid_rows" | "rows" => GRID_ROWS,
        "repeats" => REPEATS,
        "bootstrap" | "permutations" => RESAMPLES,
        "kid_subsets" => KID_SUBSETS,
        "kid_subset_size" => KID_SUBSET_SIZE,
        "size" | "sizes" => SIZE_FACTOR,
        "n_critic" => N_CRITIC,
        "top_k" | "bottom_k" => ATTRIBUTES,
        "fid_samples"
        | "reconstruction_samples"
        | "translation_samples"
        | "edit_faces"
        | "holdout"
        | "limit"
        | "samples" => ROWS,
        k if k.ends_with("seed") => return None,
        _ => OTHER_COUNT,
    })
}

/// Checks one value against a limit: `key = value: over the limit of ...`.
pub fn check(key: &str, value: f64, l: Limit) -> std::result::Result<(), String> {
    if value <= l.max {
        return Ok(());
    }
    let what = if l.what.is_empty() {
        String::new()
    } else {
        format!(" {}", l.what)
    };
    Err(format!(
        "{key} = {}: over the limit of {}{what}; lower it (limits: README.md, \"Limits\")",
        show(value),
        show(l.max)
    ))
}

/// Every number in a stage's validated config (as serialized) within its
/// limit; `prefix` is the dotted key of the stage (`stages.gen`).
pub fn check_config(prefix: &str, config: &Value) -> std::result::Result<(), String> {
    walk(prefix, &[], config)
}

/// Checks `v`, found at dotted `key` under the config's keys `path`.
fn walk(key: &str, path: &[&str], v: &Value) -> std::result::Result<(), String> {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let mut inner = path.to_vec();
                inner.push(k.as_str());
                walk(&format!("{key}.{k}"), &inner, child)?;
            }
            Ok(())
        }
        Value::Array(a) => {
            if a.len() as f64 > LIST.max {
                return Err(format!(
                    "{key} has {} entries: over the limit of {} entries; shorten it",
                    a.len(),
                    show(LIST.max)
                ));
            }
            a.iter().try_for_each(|v| walk(key, path, v))
        }
        Value::Number(n) => check_number(key, path, n),
        _ => Ok(()),
    }
}

/// A number at `path` (its key's segments) within its limit.
fn check_number(
    key: &str,
    path: &[&str],
    n: &serde_json::Number,
) -> std::result::Result<(), String> {
    let (leaf, parent) = match path {
        [.., parent, leaf] => (*leaf, Some(*parent)),
        [leaf] => (*leaf, None),
        [] => return Ok(()),
    };
    let Some(l) = limit_of(parent, leaf) else {
        return Ok(());
    };
    // Integers everywhere; floats only where a factor sizes work.
    let is_count = n.is_u64() || n.is_i64();
    let sized_float = parent != Some("crop") && matches!(leaf, "size" | "sizes" | "epochs");
    match n.as_f64() {
        Some(x) if is_count || sized_float => check(key, x, l),
        _ => Ok(()),
    }
}

/// 4096 → "4,096"; 1.5 → "1.5".
fn show(x: f64) -> String {
    if x.fract() != 0.0 || x.abs() >= 1e15 {
        return format!("{x}");
    }
    let digits = format!("{}", x as i64);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 && c != '-' {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bounded_by_their_name_wherever_they_sit() {
        let cfg = serde_json::json!({
            "batch_size": 16,
            "translation": {"batch_size": 100000, "steps": 10},
            "seed": u64::MAX,
            "sizes": [1.5, 2.0],
            "lr": 1e9,
        });
        let err = check_config("stages.gen", &cfg).unwrap_err();
        assert_eq!(
            err,
            "stages.gen.translation.batch_size = 100,000: over the limit of 4,096 rows per step; lower it (limits: README.md, \"Limits\")"
        );
        let ok = serde_json::json!({"seed": u64::MAX, "sizes": [1.5, 3.0], "lr": 1e9});
        check_config("s", &ok).unwrap();
        let big = serde_json::json!({"sizes": [1.5, 1000.0]});
        assert!(
            check_config("s", &big)
                .unwrap_err()
                .starts_with("s.sizes = 1,000: over the limit of 100 times")
        );
        let long = serde_json::json!({"alphas": vec![0.5; 10_001]});
        assert!(
            check_config("s", &long)
                .unwrap_err()
                .starts_with("s.alphas has 10001 entries: over the limit of 10,000")
        );
        let crop = serde_json::json!({"crop": {"top": 40, "left": 4, "size": 170}});
        check_config("s", &crop).unwrap();
        let other = serde_json::json!({"whatever_count": 10_000_000_000u64});
        assert!(
            check_config("s", &other)
                .unwrap_err()
                .contains("over the limit of 1,000,000,000;")
        );
    }
}
