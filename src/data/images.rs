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

/// Decodes a JPEG or PNG into 8-bit RGB, strictly ([`decode_checked`]);
/// the error is the reject reason and the decoder's message.
pub fn decode_rgb(bytes: &[u8]) -> std::result::Result<RgbImage, String> {
    decode_checked(bytes).map_err(|r| r.to_string())
}

/// Why an image file cannot be used: a short `reason` code (a `rejects`
/// column users group by) and the `detail` that explains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// `unreadable`, `not_a_file`, `too_large`, `empty`, `not_an_image`,
    /// `truncated`, `corrupt`, `unsupported_color` or `wrong_size`.
    pub reason: &'static str,
    pub detail: String,
}

impl Reject {
    fn new(reason: &'static str, detail: impl Into<String>) -> Reject {
        Reject {
            reason,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // "truncated at byte 600: ..." already says its reason.
        if self.detail.starts_with(self.reason) {
            write!(f, "{}", self.detail)
        } else {
            write!(f, "{}: {}", self.reason, self.detail)
        }
    }
}

/// Reads and strictly decodes an image file ([`decode_checked`]).
/// Special files (FIFOs, devices) are `not_a_file` and files over
/// [`crate::limits::MAX_IMAGE_FILE_BYTES`] are `too_large`, neither read.
pub fn read_image(path: &std::path::Path) -> std::result::Result<RgbImage, Reject> {
    let bytes =
        crate::limits::read_file(path, crate::limits::MAX_IMAGE_FILE_BYTES).map_err(|e| match e
            .kind()
        {
            std::io::ErrorKind::InvalidInput => Reject::new("not_a_file", e.to_string()),
            std::io::ErrorKind::FileTooLarge => Reject::new("too_large", e.to_string()),
            _ => Reject::new("unreadable", e.to_string()),
        })?;
    decode_checked(&bytes)
}

/// Decodes a JPEG or PNG into 8-bit RGB, accepting only a complete file: a
/// JPEG must decode in zune-jpeg's strict mode (which fails where the lenient
/// mode pads missing data with grey) and reach its end-of-image marker after
/// its last scan; a PNG must pass its CRC checks (the `png` crate's default).
/// Greyscale and CMYK JPEGs are converted to RGB.
pub fn decode_checked(bytes: &[u8]) -> std::result::Result<RgbImage, Reject> {
    match bytes {
        [] => Err(Reject::new("empty", "zero-byte file")),
        [0xFF, 0xD8, 0xFF, ..] => decode_jpeg(bytes),
        [0x89, b'P', b'N', b'G', ..] => {
            let mut reader = image::ImageReader::with_format(
                std::io::Cursor::new(bytes),
                image::ImageFormat::Png,
            );
            reader.limits(decoder_limits());
            reader.decode().map(|img| img.into_rgb8()).map_err(|e| {
                let msg = e.to_string();
                if msg.contains("EOF") || msg.contains("end of") || msg.contains("eof") {
                    Reject::new(
                        "truncated",
                        format!("truncated at byte {}: {msg}", bytes.len()),
                    )
                } else {
                    Reject::new("corrupt", format!("PNG decoder: {msg}"))
                }
            })
        }
        _ => Err(Reject::new("not_an_image", sniff(bytes))),
    }
}

/// A header may declare any size: the decoders refuse more than
/// [`crate::limits::MAX_IMAGE_SIDE`] a side before allocating for it.
fn decoder_limits() -> image::Limits {
    let side = crate::limits::MAX_IMAGE_SIDE;
    let mut l = image::Limits::default();
    l.max_image_width = Some(side);
    l.max_image_height = Some(side);
    // RGBA at the largest side, plus the decoder's own buffers.
    l.max_alloc = Some(u64::from(side) * u64::from(side) * 4 + (64 << 20));
    l
}

/// What a file that is neither JPEG nor PNG looks like, for the reject detail.
fn sniff(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(64)];
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    let what = if bytes.starts_with(&[0x1F, 0x8B]) {
        "gzip data".to_string()
    } else if text.trim_start().starts_with("<!doctype html") || text.contains("<html") {
        "an HTML page (a failed download?)".to_string()
    } else if bytes.starts_with(b"PK\x03\x04") {
        "a zip archive".to_string()
    } else {
        let hex: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("unknown data starting {}", hex.join(" "))
    };
    format!("not a JPEG or PNG: {what}")
}

fn decode_jpeg(bytes: &[u8]) -> std::result::Result<RgbImage, Reject> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;
    let side = crate::limits::MAX_IMAGE_SIDE as usize;
    let opts = DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(side)
        .set_max_height(side)
        .jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), opts);
    let pixels = dec.decode().map_err(|e| {
        // A file without its end-of-image marker was cut short, wherever
        // the cut fell (header, a scan); otherwise the data is bad.
        if ends_after_last_scan(bytes) {
            Reject::new("corrupt", format!("JPEG decoder: {e}"))
        } else {
            Reject::new(
                "truncated",
                format!("truncated at byte {}: JPEG decoder: {e}", bytes.len()),
            )
        }
    })?;
    if !ends_after_last_scan(bytes) {
        return Err(Reject::new(
            "truncated",
            format!(
                "truncated at byte {}: no end-of-image marker after the last scan",
                bytes.len()
            ),
        ));
    }
    let info = dec
        .info()
        .ok_or_else(|| Reject::new("corrupt", "JPEG decoder returned no image info"))?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    let rgb = match dec.output_colorspace() {
        Some(ColorSpace::RGB) => pixels,
        Some(ColorSpace::Luma) => pixels.iter().flat_map(|&v| [v, v, v]).collect(),
        other => {
            return Err(Reject::new(
                "unsupported_color",
                format!("JPEG colour space {other:?} cannot be converted to RGB"),
            ));
        }
    };
    RgbImage::from_raw(w, h, rgb).ok_or_else(|| {
        Reject::new(
            "corrupt",
            format!("JPEG decoder returned a short {w}x{h} image"),
        )
    })
}

/// Whether the JPEG's last start-of-scan marker (FF DA) is followed by an
/// end-of-image marker (FF D9). Inside entropy-coded data FF is always
/// followed by 00 or a restart marker, so an FF D9 after the last FF DA is
/// the real end, not a byte pair inside the scan (an embedded EXIF
/// thumbnail's markers come before the main image's scans).
fn ends_after_last_scan(bytes: &[u8]) -> bool {
    let find_last = |m: u8| bytes.windows(2).rposition(|w| w == [0xFF, m]);
    match (find_last(0xDA), find_last(0xD9)) {
        (Some(sos), Some(eoi)) => eoi > sos,
        _ => false,
    }
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

    fn jpeg(img: &image::DynamicImage) -> Vec<u8> {
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Jpeg)
            .unwrap();
        out
    }

    fn noisy(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 7 + y * 3) as u8, (x * y) as u8, (x ^ y) as u8])
        })
    }

    #[test]
    fn a_jpeg_cut_anywhere_is_truncated_and_a_whole_one_decodes() {
        let bytes = jpeg(&image::DynamicImage::ImageRgb8(noisy(64, 48)));
        let whole = decode_checked(&bytes).unwrap();
        assert_eq!(whole.dimensions(), (64, 48));
        // Inside the header, inside the scan, halfway, one byte short.
        for cut in [20, bytes.len() / 3, bytes.len() / 2, bytes.len() - 1] {
            let err = decode_checked(&bytes[..cut]).unwrap_err();
            assert_eq!(
                err.reason,
                "truncated",
                "cut at {cut} of {}: {err}",
                bytes.len()
            );
        }
        let err = decode_checked(&bytes[..bytes.len() - 1]).unwrap_err();
        assert_eq!(err.reason, "truncated");
        assert!(
            err.to_string()
                .starts_with(&format!("truncated at byte {}", bytes.len() - 1)),
            "{err}"
        );
    }

    #[test]
    fn greyscale_jpegs_become_rgb() {
        let grey = image::GrayImage::from_fn(32, 32, |x, y| image::Luma([(x * 8 + y) as u8]));
        let bytes = jpeg(&image::DynamicImage::ImageLuma8(grey));
        let rgb = decode_checked(&bytes).unwrap();
        assert_eq!(rgb.dimensions(), (32, 32));
        let p = rgb.get_pixel(5, 9).0;
        assert!(p[0] == p[1] && p[1] == p[2], "{p:?}");
    }

    #[test]
    fn files_that_are_not_images_say_what_they_are() {
        assert_eq!(decode_checked(&[]).unwrap_err().reason, "empty");
        let html = decode_checked(b"<!DOCTYPE html><html><body>Quota exceeded").unwrap_err();
        assert_eq!(html.reason, "not_an_image");
        assert!(html.detail.contains("HTML"), "{html}");
        let gz = decode_checked(&[0x1f, 0x8b, 8, 0, 0, 0]).unwrap_err();
        assert!(gz.detail.contains("gzip"), "{gz}");
    }

    #[test]
    fn a_png_with_a_wrong_checksum_is_corrupt() {
        let mut png = encode_png(&noisy(16, 16)).unwrap();
        // The IDAT chunk's CRC: flip a byte of the compressed data.
        let idat = png.windows(4).position(|w| w == b"IDAT").unwrap();
        png[idat + 6] ^= 0xFF;
        let err = decode_checked(&png).unwrap_err();
        assert!(
            err.reason == "corrupt" || err.reason == "truncated",
            "{err}"
        );
        let cut = encode_png(&noisy(16, 16)).unwrap();
        assert!(decode_checked(&cut[..cut.len() - 8]).is_err());
    }

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
