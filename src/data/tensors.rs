//! Faces ⇄ tensors. Stage tables hold PNG bytes and boolean label columns;
//! networks want `f32` tensors: images as (B, 3, H, W) in [-1, 1], labels as
//! (B, 40) of 0/1. [`FaceSet`] keeps the decoded pixels as `u8` (a quarter of
//! the memory of `f32`: the 162,770 CelebA training faces at 64×64 are 2 GB)
//! and builds `f32` batches on demand.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::{Context, Result, bail};
use arrow::array::{Array, AsArray, BooleanArray, RecordBatch, StringArray};
use candle_core::{Device, Tensor};
use image::RgbImage;
use image::imageops::FilterType;
use rayon::prelude::*;

use crate::data::celeba::Labels;
use crate::data::celeba::Partition;
use crate::data::images::decode_rgb;
use crate::data::parquet::read_columns;
use crate::data::schema::{N_ATTRIBUTES, attribute_column};
use crate::data_error;

/// Decoded faces of one table, square, at one size.
#[derive(Debug, Clone)]
pub struct FaceSet {
    pub image_ids: Vec<String>,
    pub partitions: Vec<String>,
    pub labels: Vec<Labels>,
    pub size: usize,
    /// N × H × W × 3, row-major RGB.
    pixels: Vec<u8>,
}

/// The 40 boolean label columns of a batch (columns `first..first + 40`) as bitsets.
pub fn labels_of_batch(b: &RecordBatch, first: usize) -> Result<Vec<Labels>> {
    let attrs: Vec<&BooleanArray> = (0..N_ATTRIBUTES)
        .map(|i| {
            b.column(first + i)
                .as_boolean_opt()
                .with_context(|| format!("label column {} is not boolean", attribute_column(i)))
        })
        .collect::<Result<_>>()?;
    Ok((0..b.num_rows())
        .map(|r| {
            attrs
                .iter()
                .enumerate()
                .fold(0u64, |m, (i, a)| m | ((a.value(r) as u64) << i))
        })
        .collect())
}

/// A string column by position.
pub fn strings(b: &RecordBatch, col: usize) -> Result<&StringArray> {
    b.column(col).as_string_opt::<i32>().with_context(|| {
        format!(
            "column {} is not a string column",
            b.schema().field(col).name()
        )
    })
}

/// The PNG/JPEG bytes of row `r` of an HF image struct column.
pub fn image_bytes(col: &dyn Array, r: usize) -> Option<&[u8]> {
    let s = col.as_struct_opt()?;
    if s.is_null(r) {
        return None;
    }
    let bytes = s.column_by_name("bytes")?;
    if let Some(b) = bytes.as_binary_opt::<i32>() {
        return (!b.is_null(r)).then(|| b.value(r));
    }
    let b = bytes.as_binary_view_opt()?;
    (!b.is_null(r)).then(|| b.value(r))
}

impl FaceSet {
    /// Reads `image_id`, `partition`, the 40 labels and the images of a
    /// `faces`-like table, keeping rows whose partition is in `partitions`
    /// (all rows when empty), at most `limit` of them, resized to `size`.
    pub fn load(
        path: &Path,
        partitions: &[Partition],
        limit: Option<usize>,
        size: usize,
    ) -> Result<FaceSet> {
        // Tables without a `partition` column (`augmented`) are all training rows.
        let has_partition = crate::data::parquet::column_names(path)?
            .iter()
            .any(|c| c == "partition");
        let mut cols: Vec<String> = vec!["image_id".into(), "partition".into()];
        if !has_partition {
            cols.pop();
        }
        cols.extend((0..N_ATTRIBUTES).map(attribute_column));
        cols.push("image".into());
        let first_label = if has_partition { 2 } else { 1 };
        let names: Vec<&str> = cols.iter().map(String::as_str).collect();
        let mut ids = Vec::new();
        let mut parts = Vec::new();
        let mut labels = Vec::new();
        let mut encoded: Vec<Vec<u8>> = Vec::new();
        'batches: for b in read_columns(path, &names)? {
            let id = strings(&b, 0)?;
            let part = if has_partition {
                Some(strings(&b, 1)?)
            } else {
                None
            };
            let part_of = |r: usize| part.map(|p| p.value(r)).unwrap_or("train");
            let lab = labels_of_batch(&b, first_label)?;
            let img = b
                .column_by_name("image")
                .with_context(|| format!("{}: no `image` column", path.display()))?;
            for (r, &labels_r) in lab.iter().enumerate() {
                if limit.is_some_and(|l| ids.len() >= l) {
                    break 'batches;
                }
                if !partitions.is_empty() && !partitions.iter().any(|p| p.name() == part_of(r)) {
                    continue;
                }
                let Some(bytes) = image_bytes(img.as_ref(), r) else {
                    return Err(data_error!(
                        "{}: row {} has no image; ingest with `images = true` to train on it",
                        path.display(),
                        id.value(r)
                    ));
                };
                ids.push(id.value(r).to_string());
                parts.push(part_of(r).to_string());
                labels.push(labels_r);
                encoded.push(bytes.to_vec());
            }
        }
        let decoded: Vec<Vec<u8>> = encoded
            .par_iter()
            .zip(ids.par_iter())
            .map(|(bytes, id)| {
                let img = decode_rgb(bytes)
                    .map_err(|e| data_error!("{}: image {id}: {e}", path.display()))?;
                Ok(resize_square(img, size).into_raw())
            })
            .collect::<Result<_>>()?;
        let mut pixels = Vec::with_capacity(decoded.len() * size * size * 3);
        for d in decoded {
            pixels.extend_from_slice(&d);
        }
        Ok(FaceSet {
            image_ids: ids,
            partitions: parts,
            labels,
            size,
            pixels,
        })
    }

    /// A set from raw RGB pixels (N × size × size × 3), every row in `train`.
    #[cfg(test)]
    pub(crate) fn from_pixels(labels: Vec<Labels>, size: usize, pixels: Vec<u8>) -> FaceSet {
        assert_eq!(pixels.len(), labels.len() * size * size * 3);
        FaceSet {
            image_ids: (0..labels.len()).map(|i| format!("{i:06}.jpg")).collect(),
            partitions: vec!["train".into(); labels.len()],
            labels,
            size,
            pixels,
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The rows whose partition is `p`.
    pub fn rows_in(&self, p: Partition) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| self.partitions[i] == p.name())
            .collect()
    }

    /// Images `idx` as a (B, 3, H, W) tensor in [-1, 1].
    pub fn images(&self, idx: &[usize], dev: &Device) -> Result<Tensor> {
        let s = self.size;
        let plane = s * s;
        let mut out = vec![0f32; idx.len() * 3 * plane];
        for (b, &i) in idx.iter().enumerate() {
            let src = &self.pixels[i * plane * 3..(i + 1) * plane * 3];
            let dst = &mut out[b * 3 * plane..(b + 1) * 3 * plane];
            for p in 0..plane {
                for c in 0..3 {
                    dst[c * plane + p] = src[p * 3 + c] as f32 / 127.5 - 1.0;
                }
            }
        }
        Ok(Tensor::from_vec(out, (idx.len(), 3, s, s), dev)?)
    }

    /// Labels `idx` as a (B, 40) tensor of 0/1.
    pub fn label_tensor(&self, idx: &[usize], dev: &Device) -> Result<Tensor> {
        let l: Vec<Labels> = idx.iter().map(|&i| self.labels[i]).collect();
        labels_tensor(&l, dev)
    }

    /// One image as RGB.
    pub fn rgb(&self, i: usize) -> RgbImage {
        let n = self.size * self.size * 3;
        RgbImage::from_raw(
            self.size as u32,
            self.size as u32,
            self.pixels[i * n..(i + 1) * n].to_vec(),
        )
        .expect("buffer size matches")
    }
}

/// Resizes to `size`×`size` (antialiased); square input keeps its aspect.
pub fn resize_square(img: RgbImage, size: usize) -> RgbImage {
    if img.width() as usize == size && img.height() as usize == size {
        img
    } else {
        image::imageops::resize(&img, size as u32, size as u32, FilterType::Triangle)
    }
}

/// Label bitsets as a (B, 40) tensor of 0/1.
pub fn labels_tensor(labels: &[Labels], dev: &Device) -> Result<Tensor> {
    let v: Vec<f32> = labels
        .iter()
        .flat_map(|l| (0..N_ATTRIBUTES).map(move |i| ((l >> i) & 1) as f32))
        .collect();
    Ok(Tensor::from_vec(v, (labels.len(), N_ATTRIBUTES), dev)?)
}

/// RGB images as a (B, 3, H, W) tensor in [-1, 1]; all must share one size.
pub fn images_tensor(imgs: &[RgbImage], dev: &Device) -> Result<Tensor> {
    let Some(first) = imgs.first() else {
        bail!("no images to stack")
    };
    let (w, h) = first.dimensions();
    let plane = (w * h) as usize;
    let mut out = vec![0f32; imgs.len() * 3 * plane];
    for (b, img) in imgs.iter().enumerate() {
        if img.dimensions() != (w, h) {
            bail!("images of different sizes in one batch");
        }
        let dst = &mut out[b * 3 * plane..(b + 1) * 3 * plane];
        for (p, px) in img.pixels().enumerate() {
            for c in 0..3 {
                dst[c * plane + p] = px.0[c] as f32 / 127.5 - 1.0;
            }
        }
    }
    Ok(Tensor::from_vec(
        out,
        (imgs.len(), 3, h as usize, w as usize),
        dev,
    )?)
}

/// A (B, 3, H, W) tensor in [-1, 1] (values outside are clamped) as RGB images.
pub fn tensor_to_rgb(t: &Tensor) -> Result<Vec<RgbImage>> {
    let (b, c, h, w) = t.dims4()?;
    if c != 3 {
        bail!("expected 3 channels, got {c}");
    }
    let v: Vec<f32> = t
        .to_device(&Device::Cpu)?
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    let plane = h * w;
    Ok((0..b)
        .map(|i| {
            let src = &v[i * 3 * plane..(i + 1) * 3 * plane];
            let mut raw = vec![0u8; plane * 3];
            for p in 0..plane {
                for ch in 0..3 {
                    let x = (src[ch * plane + p] + 1.0) * 127.5;
                    raw[p * 3 + ch] = x.round().clamp(0.0, 255.0) as u8;
                }
            }
            RgbImage::from_raw(w as u32, h as u32, raw).expect("buffer size matches")
        })
        .collect())
}

/// Tiles images (all one size) into a grid with `cols` columns and a 2 px white gutter.
pub fn grid(images: &[RgbImage], cols: usize) -> RgbImage {
    let cols = cols.max(1);
    let rows = images.len().div_ceil(cols).max(1);
    let (w, h) = images.first().map(|i| i.dimensions()).unwrap_or((1, 1));
    let pad = 2;
    let mut out = RgbImage::from_pixel(
        cols as u32 * (w + pad) + pad,
        rows as u32 * (h + pad) + pad,
        image::Rgb([255, 255, 255]),
    );
    for (k, img) in images.iter().enumerate() {
        let x = pad + (k % cols) as u32 * (w + pad);
        let y = pad + (k / cols) as u32 * (h + pad);
        image::imageops::overlay(&mut out, img, x as i64, y as i64);
    }
    out
}

/// A grid whose columns are `columns` (each the same number of images,
/// one per row).
pub fn grid_of_columns(columns: &[Vec<RgbImage>]) -> RgbImage {
    let rows = columns.first().map_or(0, Vec::len);
    let cells: Vec<RgbImage> = (0..rows)
        .flat_map(|r| columns.iter().map(move |c| c[r].clone()))
        .collect();
    grid(&cells, columns.len())
}

/// PNG bytes and labels of faces, by image id.
pub struct FacesById {
    pub png: HashMap<String, Vec<u8>>,
    pub labels: HashMap<String, Labels>,
}

/// The faces of a `faces`-shaped table (image_id, the 40 labels, image)
/// whose ids are in `wanted`; a wanted face without an image is an error.
pub fn read_faces_by_id(path: &Path, wanted: &HashSet<&str>) -> Result<FacesById> {
    let mut out = HashMap::new();
    let mut labels_out = HashMap::new();
    let mut cols = vec!["image_id".to_string(), "image".to_string()];
    cols.extend((0..N_ATTRIBUTES).map(attribute_column));
    let names: Vec<&str> = cols.iter().map(String::as_str).collect();
    for b in read_columns(path, &names)? {
        let id = strings(&b, 0)?;
        let labels = labels_of_batch(&b, 2)?;
        for (r, &label) in labels.iter().enumerate() {
            if !wanted.contains(id.value(r)) {
                continue;
            }
            let Some(bytes) = image_bytes(b.column(1).as_ref(), r) else {
                return Err(data_error!(
                    "{}: face {} has no image; ingest with `images = true`",
                    path.display(),
                    id.value(r)
                ));
            };
            out.insert(id.value(r).to_string(), bytes.to_vec());
            labels_out.insert(id.value(r).to_string(), label);
        }
    }
    Ok(FacesById {
        png: out,
        labels: labels_out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgb_tensor_round_trip_is_exact() {
        let img = RgbImage::from_fn(5, 4, |x, y| image::Rgb([x as u8 * 50, y as u8 * 60, 255]));
        let t = images_tensor(std::slice::from_ref(&img), &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[1, 3, 4, 5]);
        let back = tensor_to_rgb(&t).unwrap();
        assert_eq!(back[0], img);
    }

    #[test]
    fn labels_tensor_sets_bits_in_attribute_order() {
        let t = labels_tensor(&[0b101, 1 << 39], &Device::Cpu).unwrap();
        let v: Vec<Vec<f32>> = t.to_vec2().unwrap();
        assert_eq!(&v[0][..3], &[1.0, 0.0, 1.0]);
        assert_eq!(v[1][39], 1.0);
        assert_eq!(v[1].iter().sum::<f32>(), 1.0);
    }
}
