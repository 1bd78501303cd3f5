//! One-off pairwise image metrics, the way researchers call
//! `python -m pytorch_fid dirA dirB`: `augment ms-ssim A B` and
//! `augment psnr A B`, where A and B are image folders (PNG/JPEG) or Parquet
//! tables with an HF image column. Images are paired by name: a folder's file
//! name or a table's key column, extension dropped (`000001.jpg` pairs with
//! `000001.png`).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use arrow::array::{Array, AsArray};
use image::RgbImage;
use rayon::prelude::*;
use serde::Serialize;

use crate::data::images::decode_rgb;
use crate::data::tensors::resize_square;
use crate::metrics::msssim::{self, Planar};
use crate::{config_error, data_error};

/// Which pairwise metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pairwise {
    MsSsim,
    Psnr,
}

impl Pairwise {
    pub fn name(self) -> &'static str {
        match self {
            Pairwise::MsSsim => "ms_ssim",
            Pairwise::Psnr => "psnr",
        }
    }
}

/// Options shared by both sides.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Key column of Parquet inputs.
    pub key: String,
    /// SQL filter on Parquet inputs (a `WHERE` clause without the keyword).
    pub filter: Option<String>,
    /// Resize both images of a pair to this square size first.
    pub resize: Option<usize>,
    /// Compare only the top-left `crop`×`crop` region (SG-GAN's background: 10).
    pub crop: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub metric: &'static str,
    /// Mean over pairs (PSNR: over pairs with a finite value).
    pub value: f64,
    pub pairs: usize,
    pub only_in_a: usize,
    pub only_in_b: usize,
    /// MS-SSIM only: scales and window used (see `metrics::msssim`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub levels: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<usize>,
    /// PSNR only: identical pairs (infinite PSNR), left out of the mean.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identical_pairs: Option<usize>,
    pub resize: Option<usize>,
    pub crop: Option<usize>,
}

impl Report {
    pub fn human(&self) -> String {
        let mut s = format!(
            "{} {:.6} over {} pairs",
            match self.metric {
                "ms_ssim" => "MS-SSIM",
                _ => "PSNR",
            },
            self.value,
            self.pairs
        );
        if self.metric == "psnr" {
            s.push_str(" (dB)");
        }
        if let (Some(l), Some(w)) = (self.levels, self.window) {
            s.push_str(&format!("; {l} scales, window {w}"));
        }
        if let Some(i) = self.identical_pairs.filter(|&i| i > 0) {
            s.push_str(&format!("; {i} identical pairs (infinite PSNR) left out"));
        }
        if let Some(c) = self.crop {
            s.push_str(&format!("; top-left {c}×{c} crop"));
        }
        if self.only_in_a + self.only_in_b > 0 {
            s.push_str(&format!(
                "; unpaired: {} only in A, {} only in B",
                self.only_in_a, self.only_in_b
            ));
        }
        s
    }
}

fn stem(name: &str) -> String {
    match name.rsplit_once('.') {
        Some((s, _)) if !s.is_empty() => s.to_string(),
        _ => name.to_string(),
    }
}

/// Encoded images by name from a folder or a Parquet table.
pub fn load_encoded(path: &Path, opts: &Options) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    if path.is_dir() {
        for e in std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().to_string();
            let lower = name.to_ascii_lowercase();
            if [".png", ".jpg", ".jpeg"].iter().any(|x| lower.ends_with(x)) {
                let bytes =
                    crate::limits::read_file(&e.path(), crate::limits::MAX_IMAGE_FILE_BYTES)
                        .map_err(|err| data_error!("{}: {err}", e.path().display()))?;
                out.insert(stem(&name), bytes);
            }
        }
        return Ok(out);
    }
    if path.extension().and_then(|e| e.to_str()) != Some("parquet") {
        return Err(config_error!(
            "{}: not an image folder or a .parquet table",
            path.display()
        ));
    }
    let key = opts.key.replace('"', "");
    let filter = opts
        .filter
        .as_ref()
        .map(|w| format!(" WHERE {w}"))
        .unwrap_or_default();
    // An empty key numbers the rows (FID needs no pairing).
    let key_expr = if key.is_empty() {
        "''".to_string()
    } else {
        format!("CAST(\"{key}\" AS VARCHAR)")
    };
    let q = format!("SELECT {key_expr} AS k, image['bytes'] AS b FROM t{filter}");
    let mut row = 0usize;
    for b in crate::query::sql_on_file(path, &q)
        .map_err(|e| config_error!("{}: {e:#} (key column `{key}`)", path.display()))?
    {
        let keys = b.column(0).as_string_opt::<i32>().map(|a| {
            (0..a.len())
                .map(|i| a.value(i).to_string())
                .collect::<Vec<_>>()
        });
        let keys = match keys {
            Some(k) => k,
            None => {
                let a = b.column(0).as_string_view();
                (0..a.len()).map(|i| a.value(i).to_string()).collect()
            }
        };
        let col = b.column(1);
        for (i, k) in keys.into_iter().enumerate() {
            let bytes = if let Some(a) = col.as_binary_opt::<i32>() {
                (!a.is_null(i)).then(|| a.value(i).to_vec())
            } else if let Some(a) = col.as_binary_view_opt() {
                (!a.is_null(i)).then(|| a.value(i).to_vec())
            } else {
                return Err(config_error!(
                    "{}: column `image` is not an image struct",
                    path.display()
                ));
            };
            if let Some(bytes) = bytes {
                let k = if key.is_empty() {
                    row.to_string()
                } else {
                    stem(&k)
                };
                out.insert(k, bytes);
            }
            row += 1;
        }
    }
    Ok(out)
}

fn prepare(bytes: &[u8], name: &str, opts: &Options) -> Result<Planar> {
    let img: RgbImage = decode_rgb(bytes).map_err(|e| config_error!("{name}: {e}"))?;
    let img = match opts.resize {
        Some(s) => resize_square(img, s),
        None => img,
    };
    let p = Planar::from_rgb(&img);
    Ok(match opts.crop {
        Some(c) => p.crop_top_left(c),
        None => p,
    })
}

/// Computes `metric` over the pairs of A and B.
pub fn pairwise(metric: Pairwise, a: &Path, b: &Path, opts: &Options) -> Result<Report> {
    let ea = load_encoded(a, opts)?;
    let eb = load_encoded(b, opts)?;
    let names: Vec<&String> = ea.keys().filter(|k| eb.contains_key(*k)).collect();
    if names.is_empty() {
        return Err(config_error!(
            "no image names in common between {} ({} images) and {} ({} images); pairs are matched by file name or `--key` without extension",
            a.display(),
            ea.len(),
            b.display(),
            eb.len()
        ));
    }
    let values: Vec<(f64, usize, usize)> = names
        .par_iter()
        .map(|n| -> Result<(f64, usize, usize)> {
            let x = prepare(&ea[*n], n, opts)?;
            let y = prepare(&eb[*n], n, opts)?;
            match metric {
                Pairwise::MsSsim => {
                    let m = msssim::ms_ssim(&x, &y, 255.0)
                        .map_err(|e| config_error!("pair {n}: {e}; try --resize"))?;
                    Ok((m.value, m.levels, m.window))
                }
                Pairwise::Psnr => Ok((
                    msssim::psnr(&x, &y, 255.0)
                        .map_err(|e| config_error!("pair {n}: {e}; try --resize"))?,
                    0,
                    0,
                )),
            }
        })
        .collect::<Result<_>>()?;
    let finite: Vec<f64> = values
        .iter()
        .map(|v| v.0)
        .filter(|v| v.is_finite())
        .collect();
    let value = finite.iter().sum::<f64>() / finite.len().max(1) as f64;
    let n = names.len();
    Ok(Report {
        metric: metric.name(),
        value: if finite.is_empty() {
            f64::INFINITY
        } else {
            value
        },
        pairs: n,
        only_in_a: ea.len() - n,
        only_in_b: eb.len() - n,
        levels: (metric == Pairwise::MsSsim).then(|| values.iter().map(|v| v.1).min().unwrap_or(0)),
        window: (metric == Pairwise::MsSsim).then(|| values.iter().map(|v| v.2).min().unwrap_or(0)),
        identical_pairs: (metric == Pairwise::Psnr).then(|| n - finite.len()),
        resize: opts.resize,
        crop: opts.crop,
    })
}

/// Options of `augment fid`.
#[derive(Debug, Clone)]
pub struct FidOptions {
    pub weights: std::path::PathBuf,
    pub batch: usize,
    pub device: candle_core::Device,
    /// KID subsets and subset size (None: no KID).
    pub kid: Option<(usize, usize)>,
    pub quiet: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct FidReport {
    pub fid: f64,
    pub n_a: usize,
    pub n_b: usize,
    pub resize: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid_mean: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid_std: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid_subsets: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid_subset_size: Option<usize>,
}

pub use crate::metrics::fid::FID_RESIZE;

impl FidReport {
    pub fn human(&self) -> String {
        let mut s = format!(
            "FID {:.4} ({} vs {} images; {})",
            self.fid, self.n_a, self.n_b, FID_RESIZE
        );
        if let (Some(m), Some(sd)) = (self.kid_mean, self.kid_std) {
            s.push_str(&format!(
                "\nKID {m:.6} ± {sd:.6} ({} subsets of {})",
                self.kid_subsets.unwrap_or(0),
                self.kid_subset_size.unwrap_or(0)
            ));
        }
        if self.n_a.min(self.n_b) < 2048 {
            s.push_str("\nnote: fewer than 2048 images per set; FID is biased upwards at this size, compare KID or equal-size runs");
        }
        s
    }
}

/// FID (and KID) between the images of A and B (all images, no pairing).
pub fn fid(
    a: &Path,
    b: &Path,
    sel_a: &Options,
    sel_b: &Options,
    o: &FidOptions,
) -> Result<FidReport> {
    let net = crate::metrics::inception::FidInception::load(&o.weights, &o.device)?;
    let mut feats = Vec::new();
    for (side, sel) in [(a, sel_a), (b, sel_b)] {
        let encoded = load_encoded(side, sel)?;
        if encoded.len() < 2 {
            return Err(config_error!(
                "{}: FID needs at least 2 images, found {}",
                side.display(),
                encoded.len()
            ));
        }
        let images: Vec<RgbImage> = encoded
            .par_iter()
            .map(|(n, b)| decode_rgb(b).map_err(|e| config_error!("{n}: {e}")))
            .collect::<Result<_>>()?;
        let pb = crate::progress::bar(images.len() as u64, "images", o.quiet);
        let f =
            crate::metrics::fid::features(&net, &images, o.batch, &o.device, |n| pb.inc(n as u64))?;
        pb.finish_and_clear();
        feats.push(f);
    }
    let (mu1, s1) = crate::metrics::fid::statistics(&feats[0])?;
    let (mu2, s2) = crate::metrics::fid::statistics(&feats[1])?;
    let value = crate::metrics::fid::frechet_distance(&mu1, &s1, &mu2, &s2)?;
    let kid = o.kid.map(|(subsets, size)| {
        (
            crate::metrics::fid::kid(&feats[0], &feats[1], subsets, size, 0),
            subsets,
            size.min(feats[0].len()).min(feats[1].len()),
        )
    });
    Ok(FidReport {
        fid: value,
        n_a: feats[0].len(),
        n_b: feats[1].len(),
        resize: FID_RESIZE,
        kid_mean: kid.map(|k| k.0.0),
        kid_std: kid.map(|k| k.0.1),
        kid_subsets: kid.map(|k| k.1),
        kid_subset_size: kid.map(|k| k.2),
    })
}
