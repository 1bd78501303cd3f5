//! Image decode, crop, resize and PNG encode.
//!
//! The default crop is the BEGAN preprocessing the core paper follows
//! (Liu et al. Sec. V; Berthelot et al. 2017): the 128×128 box at top 50,
//! left 25 of the 178×218 aligned face, then a resize to `image_size`.

use std::io::Cursor;

use anyhow::Result;
use image::{ImageEncoder, RgbImage, imageops::FilterType};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Crop {
    pub top: u32,
    pub left: u32,
    pub size: u32,
}

impl Default for Crop {
    fn default() -> Self {
        Crop {
            top: 50,
            left: 25,
            size: 128,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resize {
    /// Lanczos with a support scaled to the downsampling factor: antialiased.
    #[default]
    Lanczos3,
    Bilinear,
    /// No antialiasing; BEGAN's own preprocessing.
    Nearest,
}

impl Resize {
    fn filter(self) -> FilterType {
        match self {
            Resize::Lanczos3 => FilterType::Lanczos3,
            Resize::Bilinear => FilterType::Triangle,
            Resize::Nearest => FilterType::Nearest,
        }
    }
}

/// Decodes any supported image (JPEG, PNG) into 8-bit RGB. The error is the
/// decoder's own message, which ends up in the `rejects` table.
pub fn decode_rgb(bytes: &[u8]) -> std::result::Result<RgbImage, String> {
    let img = image::load_from_memory(bytes).map_err(|e| e.to_string())?;
    Ok(img.into_rgb8())
}

/// Crops and resizes; errors (as a reject reason) when the crop box does not fit.
pub fn crop_resize(
    img: &RgbImage,
    crop: Option<Crop>,
    size: u32,
    resize: Resize,
) -> std::result::Result<RgbImage, String> {
    let cropped = match crop {
        Some(c) => {
            if c.left + c.size > img.width() || c.top + c.size > img.height() {
                return Err(format!(
                    "crop box {}x{} at ({}, {}) does not fit a {}x{} image",
                    c.size,
                    c.size,
                    c.left,
                    c.top,
                    img.width(),
                    img.height()
                ));
            }
            image::imageops::crop_imm(img, c.left, c.top, c.size, c.size).to_image()
        }
        None => img.clone(),
    };
    if cropped.width() == size && cropped.height() == size {
        return Ok(cropped);
    }
    Ok(image::imageops::resize(
        &cropped,
        size,
        size,
        resize.filter(),
    ))
}

pub fn encode_png(img: &RgbImage) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity((img.width() * img.height()) as usize);
    image::codecs::png::PngEncoder::new_with_quality(
        Cursor::new(&mut out),
        image::codecs::png::CompressionType::Fast,
        image::codecs::png::FilterType::Adaptive,
    )
    .write_image(
        img.as_raw(),
        img.width(),
        img.height(),
        image::ExtendedColorType::Rgb8,
    )?;
    Ok(out)
}

pub fn encode_jpeg(img: &RgbImage, quality: u8) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(Cursor::new(&mut out), quality)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )?;
    Ok(out)
}

/// Mirror left–right (the `flip` baseline).
pub fn flip_horizontal(img: &RgbImage) -> RgbImage {
    image::imageops::flip_horizontal(img)
}

/// Crops the box (clipped to the image) and resizes it back to the image's
/// size (the `crop` baseline: random cropping, Krizhevsky et al. 2012).
pub fn crop_back(img: &RgbImage, x: u32, y: u32, w: u32, h: u32) -> RgbImage {
    let (iw, ih) = img.dimensions();
    let x = x.min(iw - 1);
    let y = y.min(ih - 1);
    let w = w.clamp(1, iw - x);
    let h = h.clamp(1, ih - y);
    let part = image::imageops::crop_imm(img, x, y, w, h).to_image();
    image::imageops::resize(&part, iw, ih, FilterType::Triangle)
}

/// Random erasing (Zhong et al. 2017, Alg. 1): the box is filled with
/// uniform random pixel values drawn from `seed`.
pub fn erase(img: &RgbImage, x: u32, y: u32, w: u32, h: u32, seed: u64) -> RgbImage {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = img.clone();
    let (iw, ih) = img.dimensions();
    for yy in y.min(ih)..(y + h).min(ih) {
        for xx in x.min(iw)..(x + w).min(iw) {
            out.put_pixel(xx, yy, image::Rgb(rng.random::<[u8; 3]>()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn began_crop_then_resize() {
        let img = RgbImage::from_fn(178, 218, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let out = crop_resize(&img, Some(Crop::default()), 128, Resize::Nearest).unwrap();
        assert_eq!(out.dimensions(), (128, 128));
        assert_eq!(out.get_pixel(0, 0).0, [25, 50, 0]);
        let small = crop_resize(&img, Some(Crop::default()), 64, Resize::Lanczos3).unwrap();
        assert_eq!(small.dimensions(), (64, 64));
        let err = crop_resize(
            &RgbImage::new(100, 100),
            Some(Crop::default()),
            64,
            Resize::Nearest,
        )
        .unwrap_err();
        assert!(err.contains("does not fit"));
    }

    #[test]
    fn png_roundtrip() {
        let img = RgbImage::from_fn(8, 8, |x, y| image::Rgb([x as u8 * 30, y as u8 * 30, 7]));
        let back = decode_rgb(&encode_png(&img).unwrap()).unwrap();
        assert_eq!(back, img);
    }
}
