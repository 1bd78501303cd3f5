//! CelebAMask-HQ face-parsing pairs (`images/<stem>.jpg`, `masks/<stem>.png`,
//! 19 class ids) for training our own parser P (SeCGAN, Sec. 3 "Parsing
//! network"): reading and checking the folder, the class sets, and the
//! similarity warp that puts an HQ pair into the ingest stage's crop of
//! CelebA's aligned 178×218 frame, with the random augmentation on top.

use std::path::{Path, PathBuf};

use anyhow::Result;
use image::{Rgb, RgbImage, imageops::FilterType};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::images::Crop;
use crate::{config_error, data_error};

/// Label of target pixels that count towards neither the loss nor the IoU
/// (outside the HQ frame after the warp).
pub const IGNORE: u8 = 255;

/// CelebAMask-HQ's 19 class ids (the data folder's README).
pub const CELEBAMASK19: [&str; 19] = [
    "background",
    "skin",
    "nose",
    "eyeglasses",
    "l_eye",
    "r_eye",
    "l_brow",
    "r_brow",
    "l_ear",
    "r_ear",
    "mouth",
    "u_lip",
    "l_lip",
    "hair",
    "hat",
    "earring",
    "necklace",
    "neck",
    "cloth",
];

/// SeCGAN's 12 segments (Sec. 3).
pub const SECGAN12: [&str; 12] = [
    "others",
    "skin",
    "eyebrows",
    "eyes",
    "eyeglasses",
    "ears",
    "earrings",
    "nose",
    "mouth",
    "lips",
    "neck",
    "hair",
];

/// SECGAN12's segment of each CelebAMask-HQ id: others = background, hat,
/// necklace, cloth; left and right merged.
const TO_SECGAN12: [u8; 19] = [0, 1, 7, 4, 3, 3, 2, 2, 5, 5, 8, 9, 9, 11, 0, 6, 0, 10, 0];

/// The left/right partner of each CelebAMask-HQ id (a horizontal flip swaps them).
const MIRROR19: [u8; 19] = [
    0, 1, 2, 3, 5, 4, 7, 6, 9, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18,
];

/// Which classes the parser predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassSet {
    /// SeCGAN's 12 segments (left and right merged).
    #[default]
    Secgan12,
    /// CelebAMask-HQ's raw 19 ids.
    Celebamask19,
}

impl ClassSet {
    pub fn names(self) -> &'static [&'static str] {
        match self {
            ClassSet::Secgan12 => &SECGAN12,
            ClassSet::Celebamask19 => &CELEBAMASK19,
        }
    }

    pub fn len(self) -> usize {
        self.names().len()
    }

    pub fn is_empty(self) -> bool {
        false
    }

    /// The class of raw id `id` (0..19).
    pub fn map(self, id: u8) -> u8 {
        match self {
            ClassSet::Secgan12 => TO_SECGAN12[id as usize],
            ClassSet::Celebamask19 => id,
        }
    }

    /// The class a pixel of class `c` becomes in the mirrored image.
    pub fn mirror(self, c: u8) -> u8 {
        match self {
            ClassSet::Secgan12 => c,
            ClassSet::Celebamask19 if c == IGNORE => c,
            ClassSet::Celebamask19 => MIRROR19[c as usize],
        }
    }

    /// The "others" class (background), where [`background_l1`]-style
    /// metrics look.
    pub fn others(self) -> u8 {
        0
    }

    /// Index of class `name`.
    pub fn index(self, name: &str) -> Option<usize> {
        self.names().iter().position(|n| *n == name)
    }
}

/// The stems of the folder's pairs, sorted; every image must have a mask
/// and every mask an image.
/// A colour per class for overlays.
pub fn palette(k: u8) -> image::Rgb<u8> {
    const P: [[u8; 3]; 19] = [
        [0, 0, 0],
        [230, 180, 140],
        [120, 60, 20],
        [40, 120, 255],
        [0, 200, 0],
        [255, 255, 0],
        [255, 140, 0],
        [150, 0, 150],
        [0, 200, 200],
        [255, 60, 60],
        [180, 0, 60],
        [100, 100, 255],
        [130, 70, 0],
        [200, 200, 200],
        [0, 90, 0],
        [255, 0, 255],
        [90, 90, 0],
        [0, 0, 140],
        [140, 140, 0],
    ];
    image::Rgb(P[k as usize % P.len()])
}

/// Nearest-neighbour resize of a square label map.
pub fn resize_labels(l: &[u8], from: usize, to: usize) -> Vec<u8> {
    if from == to {
        return l.to_vec();
    }
    let mut out = vec![0u8; to * to];
    for y in 0..to {
        let sy = ((y as f64 + 0.5) * from as f64 / to as f64) as usize;
        for x in 0..to {
            let sx = ((x as f64 + 0.5) * from as f64 / to as f64) as usize;
            out[y * to + x] = l[sy.min(from - 1) * from + sx.min(from - 1)];
        }
    }
    out
}

pub fn list_pairs(dir: &Path, setting: &str) -> Result<Vec<String>> {
    if !dir.is_dir() {
        return Err(config_error!(
            "{setting}: face-parsing folder {} does not exist (point it at CelebAMask-HQ pairs: images/<stem>.jpg and masks/<stem>.png)",
            dir.display()
        ));
    }
    let list = |sub: &str, ext: &str| -> Result<Vec<String>> {
        let d = dir.join(sub);
        let rd = std::fs::read_dir(&d).map_err(|_| {
            config_error!(
                "{setting}: {} is missing (the face-parsing folder holds images/ and masks/)",
                d.display()
            )
        })?;
        let mut v: Vec<String> = rd
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(ext).map(str::to_string)
            })
            .collect();
        v.sort();
        Ok(v)
    };
    let images = list("images", ".jpg")?;
    let masks = list("masks", ".png")?;
    let mset: std::collections::HashSet<&String> = masks.iter().collect();
    let iset: std::collections::HashSet<&String> = images.iter().collect();
    let no_mask: Vec<&String> = images.iter().filter(|s| !mset.contains(s)).collect();
    if !no_mask.is_empty() {
        return Err(data_error!(
            "{}: {} images have no mask in masks/ (first: {})",
            dir.display(),
            no_mask.len(),
            first5(&no_mask)
        ));
    }
    let no_image: Vec<&String> = masks.iter().filter(|s| !iset.contains(s)).collect();
    if !no_image.is_empty() {
        return Err(data_error!(
            "{}: {} masks have no image in images/ (first: {})",
            dir.display(),
            no_image.len(),
            first5(&no_image)
        ));
    }
    if images.is_empty() {
        return Err(data_error!(
            "{}: no image/mask pairs (images/*.jpg with masks/*.png)",
            dir.display()
        ));
    }
    Ok(images)
}

fn first5(v: &[&String]) -> String {
    v.iter()
        .take(5)
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Splits sorted `stems` into (train, holdout) by a seeded shuffle.
pub fn split(stems: &[String], holdout: usize, seed: u64) -> (Vec<String>, Vec<String>) {
    let mut idx: Vec<usize> = (0..stems.len()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x9a55_0f1e);
    for i in (1..idx.len()).rev() {
        let j = rng.random_range(0..=i);
        idx.swap(i, j);
    }
    let mut val: Vec<String> = idx[..holdout].iter().map(|&i| stems[i].clone()).collect();
    let mut train: Vec<String> = idx[holdout..].iter().map(|&i| stems[i].clone()).collect();
    val.sort();
    train.sort();
    (train, val)
}

/// A class-id mask: `w × h` raw ids, row-major.
#[derive(Debug, Clone)]
pub struct Mask {
    pub w: usize,
    pub h: usize,
    pub ids: Vec<u8>,
}

/// Decodes a mask PNG (8-bit grey or palette: the index is the class id)
/// and checks its ids; `what` names the file in errors.
pub fn decode_mask(bytes: &[u8], what: &str, max_id: u8) -> Result<Mask> {
    let mut dec = png::Decoder::new(std::io::Cursor::new(bytes));
    dec.set_transformations(png::Transformations::IDENTITY);
    let mut reader = dec
        .read_info()
        .map_err(|e| data_error!("{what}: not a readable PNG ({e})"))?;
    let (ct, depth) = reader.output_color_type();
    if !matches!(ct, png::ColorType::Grayscale | png::ColorType::Indexed)
        || depth != png::BitDepth::Eight
    {
        return Err(data_error!(
            "{what}: a mask must be an 8-bit grey or palette PNG of class ids, this one is {ct:?} at {depth:?} bits"
        ));
    }
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| data_error!("{what}: PNG too large"))?;
    let mut buf = vec![0u8; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| data_error!("{what}: corrupt PNG ({e})"))?;
    let (w, h) = (info.width as usize, info.height as usize);
    buf.truncate(w * h);
    let mut counts = [0usize; 256];
    for &v in &buf {
        counts[v as usize] += 1;
    }
    if let Some(bad) = (max_id as usize + 1..256).find(|&v| counts[v] > 0) {
        return Err(data_error!(
            "{what}: class id {bad} in {} pixels; ids must be 0..={max_id} (CelebAMask-HQ's 19 classes)",
            counts[bad]
        ));
    }
    Ok(Mask { w, h, ids: buf })
}

/// Left eye, right eye and mouth centroids, in pixels.
pub type Landmarks = [(f64, f64); 3];

/// Eye and mouth centroids of one raw-id mask: (left eye, right eye, mouth)
/// in pixels, the eyes ordered by x; None where a part is absent.
pub fn landmarks(m: &Mask) -> Option<Landmarks> {
    let mut acc = [(0.0, 0.0, 0usize); 3];
    for y in 0..m.h {
        for x in 0..m.w {
            let k = match m.ids[y * m.w + x] {
                4 => 0,
                5 => 1,
                10..=12 => 2,
                _ => continue,
            };
            acc[k].0 += x as f64 + 0.5;
            acc[k].1 += y as f64 + 0.5;
            acc[k].2 += 1;
        }
    }
    if acc.iter().any(|a| a.2 < 4) {
        return None;
    }
    let c = acc.map(|a| (a.0 / a.2 as f64, a.1 / a.2 as f64));
    let (l, r) = if c[0].0 <= c[1].0 {
        (c[0], c[1])
    } else {
        (c[1], c[0])
    };
    Some([l, r, c[2]])
}

/// Mean landmarks of CelebA's aligned 178×218 faces: left eye, right eye,
/// mouth (the mean of the two mouth corners), in pixels. Means of
/// `list_landmarks_align_celeba.txt` (CelebA's official landmark file, not
/// in our shared folder), rounded.
pub const CELEBA_ALIGNED_LANDMARKS: [(f64, f64); 3] =
    [(69.0, 111.0), (108.0, 111.0), (89.0, 152.0)];

/// A 2-D similarity q = a·p + b (a complex: scale and rotation).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Similarity {
    pub a_re: f64,
    pub a_im: f64,
    pub b_x: f64,
    pub b_y: f64,
}

impl Similarity {
    /// The least-squares similarity taking points `p` onto `q`.
    pub fn fit(p: &[(f64, f64)], q: &[(f64, f64)]) -> Similarity {
        let n = p.len() as f64;
        let pm = (
            p.iter().map(|v| v.0).sum::<f64>() / n,
            p.iter().map(|v| v.1).sum::<f64>() / n,
        );
        let qm = (
            q.iter().map(|v| v.0).sum::<f64>() / n,
            q.iter().map(|v| v.1).sum::<f64>() / n,
        );
        let (mut num_re, mut num_im, mut den) = (0.0, 0.0, 0.0);
        for (pi, qi) in p.iter().zip(q) {
            let (px, py) = (pi.0 - pm.0, pi.1 - pm.1);
            let (qx, qy) = (qi.0 - qm.0, qi.1 - qm.1);
            // (q) · conj(p)
            num_re += qx * px + qy * py;
            num_im += qy * px - qx * py;
            den += px * px + py * py;
        }
        let (a_re, a_im) = (num_re / den, num_im / den);
        Similarity {
            a_re,
            a_im,
            b_x: qm.0 - (a_re * pm.0 - a_im * pm.1),
            b_y: qm.1 - (a_im * pm.0 + a_re * pm.1),
        }
    }

    pub fn apply(&self, (x, y): (f64, f64)) -> (f64, f64) {
        (
            self.a_re * x - self.a_im * y + self.b_x,
            self.a_im * x + self.a_re * y + self.b_y,
        )
    }

    pub fn inverse(&self, (x, y): (f64, f64)) -> (f64, f64) {
        let (dx, dy) = (x - self.b_x, y - self.b_y);
        let d = self.a_re * self.a_re + self.a_im * self.a_im;
        (
            (self.a_re * dx + self.a_im * dy) / d,
            (-self.a_im * dx + self.a_re * dy) / d,
        )
    }

    pub fn scale(&self) -> f64 {
        self.a_re.hypot(self.a_im)
    }
}

/// How HQ pairs are placed into the output frame.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Placement {
    /// HQ pixel → aligned 178×218 pixel, then the ingest crop.
    Aligned { to_aligned: Similarity, crop: Crop },
    /// The whole HQ frame resized to the output (`geometry = "none"`).
    Whole,
}

/// One pair, decoded, with its image and mask at a working resolution
/// where the warp samples about 1:1.
pub struct Pair {
    pub stem: String,
    /// The image at `scale` × its original size.
    img: RgbImage,
    /// Class ids (of the class set) at the same size as `img`.
    mask: Vec<u8>,
    /// HQ pixels per working pixel.
    scale: f64,
}

/// Random augmentation of one sample (the ranges).
#[derive(Debug, Clone, Copy)]
pub struct Jitter {
    pub scale: f64,
    pub angle: f64,
    pub tx: f64,
    pub ty: f64,
    pub flip: bool,
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    /// Down-up resize factor (1 = none).
    pub soften: f64,
}

impl Jitter {
    pub const NONE: Jitter = Jitter {
        scale: 1.0,
        angle: 0.0,
        tx: 0.0,
        ty: 0.0,
        flip: false,
        brightness: 1.0,
        contrast: 1.0,
        saturation: 1.0,
        soften: 1.0,
    };

    /// Scale ×0.9–1.1, rotation ±8°, translation ±5%, a coin-flip mirror,
    /// brightness/contrast/saturation ±15%, a down-up resize to 0.5–1 of the side.
    pub fn random(rng: &mut impl Rng) -> Jitter {
        Jitter {
            scale: rng.random_range(0.9..1.1),
            angle: rng.random_range(-8.0f64..8.0).to_radians(),
            tx: rng.random_range(-0.05..0.05),
            ty: rng.random_range(-0.05..0.05),
            flip: rng.random_bool(0.5),
            brightness: rng.random_range(0.85..1.15),
            contrast: rng.random_range(0.85..1.15),
            saturation: rng.random_range(0.85..1.15),
            soften: rng.random_range(0.5..1.0),
        }
    }
}

/// A warped sample: the image and its labels (class ids, [`IGNORE`] outside
/// the HQ frame), `size × size`.
pub struct Sample {
    pub img: RgbImage,
    pub labels: Vec<u8>,
}

/// Reads a pair: decodes both files, checks the mask, maps its ids to
/// `classes` and shrinks both to `scale` of the original side (image
/// antialiased, mask nearest).
pub fn read_pair(dir: &Path, stem: &str, classes: ClassSet, scale: f64) -> Result<Pair> {
    let (img, mask) = read_raw(dir, stem)?;
    let (w, h) = (mask.w, mask.h);
    let ws = ((w as f64 * scale).round() as u32).clamp(8, w as u32);
    let hs = ((h as f64 * scale).round() as u32).clamp(8, h as u32);
    let img = image::imageops::resize(&img, ws, hs, FilterType::Triangle);
    let mut small = vec![0u8; (ws * hs) as usize];
    for y in 0..hs as usize {
        let sy = (((y as f64 + 0.5) * h as f64 / hs as f64) as usize).min(h - 1);
        for x in 0..ws as usize {
            let sx = (((x as f64 + 0.5) * w as f64 / ws as f64) as usize).min(w - 1);
            small[y * ws as usize + x] = classes.map(mask.ids[sy * w + sx]);
        }
    }
    Ok(Pair {
        stem: stem.to_string(),
        img,
        mask: small,
        scale: w as f64 / ws as f64,
    })
}

/// The decoded image and raw mask of one pair, checked against each other.
pub fn read_raw(dir: &Path, stem: &str) -> Result<(RgbImage, Mask)> {
    let ipath = dir.join("images").join(format!("{stem}.jpg"));
    let mpath = dir.join("masks").join(format!("{stem}.png"));
    let img = crate::data::images::read_image(&ipath)
        .map_err(|r| data_error!("{}: {r}", ipath.display()))?;
    let bytes = crate::limits::read_file(&mpath, crate::limits::MAX_IMAGE_FILE_BYTES)
        .map_err(|e| data_error!("{}: {e}", mpath.display()))?;
    let mask = decode_mask(&bytes, &mpath.display().to_string(), 18)?;
    if (mask.w, mask.h) != (img.width() as usize, img.height() as usize) {
        return Err(data_error!(
            "{}: mask is {}x{} but its image is {}x{}",
            mpath.display(),
            mask.w,
            mask.h,
            img.width(),
            img.height()
        ));
    }
    Ok((img, mask))
}

/// The raw-id masks' landmarks (None for a mask missing an eye or the mouth).
pub fn mask_landmarks(dir: &Path, stems: &[String]) -> Result<Vec<Option<Landmarks>>> {
    stems
        .par_iter()
        .map(|s| {
            let p = dir.join("masks").join(format!("{s}.png"));
            let bytes = crate::limits::read_file(&p, crate::limits::MAX_IMAGE_FILE_BYTES)
                .map_err(|e| data_error!("{}: {e}", p.display()))?;
            Ok(landmarks(&decode_mask(
                &bytes,
                &p.display().to_string(),
                18,
            )?))
        })
        .collect()
}

/// The similarity from HQ pixels to CelebA's aligned frame, fitted on the
/// mean landmarks of `marks`.
pub fn fit_to_aligned(marks: &[Option<Landmarks>]) -> Result<Similarity> {
    let found: Vec<&Landmarks> = marks.iter().flatten().collect();
    if found.is_empty() {
        return Err(data_error!(
            "no training mask shows both eyes (ids 4, 5) and the mouth (ids 10-12): cannot place the faces"
        ));
    }
    let n = found.len() as f64;
    let mean: Vec<(f64, f64)> = (0..3)
        .map(|k| {
            (
                found.iter().map(|m| m[k].0).sum::<f64>() / n,
                found.iter().map(|m| m[k].1).sum::<f64>() / n,
            )
        })
        .collect();
    Ok(Similarity::fit(&mean, &CELEBA_ALIGNED_LANDMARKS))
}

/// The working-resolution factor for an output of side `size`: the warp
/// then samples about 1:1 (never upsampling the HQ file).
pub fn working_scale(place: &Placement, hq_side: f64, size: usize) -> f64 {
    let out_per_hq = match place {
        Placement::Aligned { to_aligned, crop } => {
            to_aligned.scale() * size as f64 / crop.size as f64
        }
        Placement::Whole => size as f64 / hq_side,
    };
    out_per_hq.min(1.0)
}

impl Pair {
    /// A pair already in the output frame (demo faces and their class maps):
    /// `labels` are class ids of the set, row-major, one per pixel of `img`.
    pub fn from_parts(stem: &str, img: RgbImage, labels: Vec<u8>) -> Pair {
        Pair {
            stem: stem.to_string(),
            img,
            mask: labels,
            scale: 1.0,
        }
    }

    /// The pair warped into the output frame (`size`×`size`) with `j`.
    pub fn warp(&self, place: &Placement, classes: ClassSet, size: usize, j: &Jitter) -> Sample {
        let (w, h) = (self.img.width() as usize, self.img.height() as usize);
        let s = size as f64;
        let (cos, sin) = (j.angle.cos(), j.angle.sin());
        let mut img = RgbImage::new(size as u32, size as u32);
        let mut labels = vec![IGNORE; size * size];
        for v in 0..size {
            for u in 0..size {
                // Output pixel centre → un-jittered output frame.
                let (cx, cy) = (
                    u as f64 + 0.5 - s / 2.0 - j.tx * s,
                    v as f64 + 0.5 - s / 2.0 - j.ty * s,
                );
                let mut x = (cos * cx + sin * cy) / j.scale + s / 2.0;
                let y = (-sin * cx + cos * cy) / j.scale + s / 2.0;
                if j.flip {
                    x = s - x;
                }
                // Output frame → HQ pixels → working pixels.
                let (hx, hy) = match place {
                    Placement::Aligned { to_aligned, crop } => to_aligned.inverse((
                        crop.left as f64 + x * crop.size as f64 / s,
                        crop.top as f64 + y * crop.size as f64 / s,
                    )),
                    Placement::Whole => {
                        (x * w as f64 * self.scale / s, y * h as f64 * self.scale / s)
                    }
                };
                let (px, py) = (hx / self.scale, hy / self.scale);
                let i = v * size + u;
                img.put_pixel(u as u32, v as u32, bilinear(&self.img, px - 0.5, py - 0.5));
                if px >= 0.0 && py >= 0.0 && px < w as f64 && py < h as f64 {
                    let c = self.mask[py as usize * w + px as usize];
                    labels[i] = if j.flip { classes.mirror(c) } else { c };
                }
            }
        }
        let img = photometric(img, j);
        Sample { img, labels }
    }
}

/// Bilinear sample at (x, y) (pixel-index coordinates), edges padded.
fn bilinear(img: &RgbImage, x: f64, y: f64) -> Rgb<u8> {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let at = |xi: i64, yi: i64| img.get_pixel(xi.clamp(0, w - 1) as u32, yi.clamp(0, h - 1) as u32);
    let (x0, y0) = (x0 as i64, y0 as i64);
    let (p00, p10, p01, p11) = (
        at(x0, y0),
        at(x0 + 1, y0),
        at(x0, y0 + 1),
        at(x0 + 1, y0 + 1),
    );
    let mut out = [0u8; 3];
    for c in 0..3 {
        let top = p00[c] as f64 * (1.0 - fx) + p10[c] as f64 * fx;
        let bot = p01[c] as f64 * (1.0 - fx) + p11[c] as f64 * fx;
        out[c] = (top * (1.0 - fy) + bot * fy).round().clamp(0.0, 255.0) as u8;
    }
    Rgb(out)
}

/// Brightness, contrast and saturation jitter, then the down-up resize.
fn photometric(mut img: RgbImage, j: &Jitter) -> RgbImage {
    if (j.brightness, j.contrast, j.saturation) != (1.0, 1.0, 1.0) {
        let grey = |p: &Rgb<u8>| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32;
        let n = (img.width() * img.height()) as f32;
        let mean = img.pixels().map(grey).sum::<f32>() / n * j.brightness;
        for p in img.pixels_mut() {
            let v = [0, 1, 2].map(|c| p[c] as f32 * j.brightness);
            let g = 0.299 * v[0] + 0.587 * v[1] + 0.114 * v[2];
            for c in 0..3 {
                let sat = g + (v[c] - g) * j.saturation;
                let con = mean + (sat - mean) * j.contrast;
                p[c] = con.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    if j.soften < 1.0 {
        let (w, h) = (img.width(), img.height());
        let sw = ((w as f64 * j.soften).round() as u32).max(4);
        let sh = ((h as f64 * j.soften).round() as u32).max(4);
        let small = image::imageops::resize(&img, sw, sh, FilterType::Triangle);
        img = image::imageops::resize(&small, w, h, FilterType::Triangle);
    }
    img
}

/// The folder a `data` setting or `$AUGMENT_FACE_PARSING_DIR` names.
pub fn data_dir(setting: Option<&Path>) -> Result<PathBuf> {
    match setting {
        Some(p) => Ok(p.to_path_buf()),
        None => std::env::var_os("AUGMENT_FACE_PARSING_DIR")
            .map(PathBuf::from)
            .ok_or_else(|| {
                config_error!(
                    "parse_faces: no `data` folder and AUGMENT_FACE_PARSING_DIR is not set; point `data` at CelebAMask-HQ pairs (images/, masks/)"
                )
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::ImageEncoder;

    #[test]
    fn similarity_fit_recovers_a_known_transform() {
        let t = Similarity {
            a_re: 0.3 * 0.1f64.cos(),
            a_im: 0.3 * 0.1f64.sin(),
            b_x: 12.0,
            b_y: -4.0,
        };
        let p = [(100.0, 200.0), (300.0, 210.0), (190.0, 380.0)];
        let q: Vec<(f64, f64)> = p.iter().map(|&x| t.apply(x)).collect();
        let f = Similarity::fit(&p, &q);
        for (a, b) in [
            (f.a_re, t.a_re),
            (f.a_im, t.a_im),
            (f.b_x, t.b_x),
            (f.b_y, t.b_y),
        ] {
            assert!((a - b).abs() < 1e-9, "{f:?} vs {t:?}");
        }
        let back = f.inverse(f.apply((5.0, 7.0)));
        assert!((back.0 - 5.0).abs() < 1e-9 && (back.1 - 7.0).abs() < 1e-9);
    }

    #[test]
    fn secgan12_merges_left_and_right_and_groups_others() {
        let c = ClassSet::Secgan12;
        let name = |id: u8| c.names()[c.map(id) as usize];
        assert_eq!(
            (0..19).map(name).collect::<Vec<_>>(),
            [
                "others",
                "skin",
                "nose",
                "eyeglasses",
                "eyes",
                "eyes",
                "eyebrows",
                "eyebrows",
                "ears",
                "ears",
                "mouth",
                "lips",
                "lips",
                "hair",
                "others",
                "earrings",
                "others",
                "neck",
                "others"
            ]
        );
        // The raw set swaps left and right in a mirror image.
        let r = ClassSet::Celebamask19;
        assert_eq!(
            (r.mirror(4), r.mirror(7), r.mirror(9), r.mirror(13)),
            (5, 6, 8, 13)
        );
    }

    #[test]
    fn masks_reject_ids_above_18_with_the_pixel_count() {
        let mut png_bytes = Vec::new();
        let mut px = vec![1u8; 16];
        px[3] = 19;
        px[5] = 19;
        image::codecs::png::PngEncoder::new(&mut png_bytes)
            .write_image(&px, 4, 4, image::ExtendedColorType::L8)
            .unwrap();
        let e = decode_mask(&png_bytes, "m.png", 18)
            .unwrap_err()
            .to_string();
        assert!(e.contains("class id 19 in 2 pixels"), "{e}");
        px[3] = 2;
        px[5] = 18;
        png_bytes.clear();
        image::codecs::png::PngEncoder::new(&mut png_bytes)
            .write_image(&px, 4, 4, image::ExtendedColorType::L8)
            .unwrap();
        assert_eq!(decode_mask(&png_bytes, "m.png", 18).unwrap().ids, px);
    }

    #[test]
    fn an_unjittered_warp_of_a_mirrored_pair_mirrors_the_labels() {
        let mut img = RgbImage::new(16, 16);
        let mut mask = vec![0u8; 256];
        for y in 0..16 {
            for x in 0..4 {
                mask[y * 16 + x] = 4; // l_eye on the left
                img.put_pixel(x as u32, y as u32, Rgb([255, 0, 0]));
            }
        }
        let p = Pair {
            stem: "t".into(),
            img,
            mask,
            scale: 1.0,
        };
        let c = ClassSet::Celebamask19;
        let a = p.warp(&Placement::Whole, c, 16, &Jitter::NONE);
        let b = p.warp(
            &Placement::Whole,
            c,
            16,
            &Jitter {
                flip: true,
                ..Jitter::NONE
            },
        );
        assert_eq!(a.labels[0], 4);
        assert_eq!(b.labels[15], 5, "l_eye becomes r_eye in the mirror");
        assert_eq!(b.labels[0], 0);
        assert_eq!(a.img.get_pixel(0, 0), &Rgb([255, 0, 0]));
        assert!(a.labels.iter().all(|&l| l != IGNORE));
    }
}
