//! Metrics of translated images (SG-GAN, Zhang et al. Sec. 4.2, Tables 1–3):
//! whether the evaluation classifier sees the requested edit, whether the
//! attributes that were not edited survive, and whether the background is
//! untouched (MS-SSIM of the top-left 10×10 crop, adapted to its size).

use super::msssim::{MsSsim, Planar, ms_ssim};

/// SG-GAN's background region: the top-left 10×10 pixels.
pub const BACKGROUND_CROP: usize = 10;

/// Editing accuracy: over images and the attributes in `edited`, the
/// fraction where the classifier's prediction equals the target value.
/// `pred` and `target` are rows × attributes.
pub fn editing_accuracy(pred: &[Vec<bool>], target: &[Vec<bool>], edited: &[usize]) -> f64 {
    agreement(pred, target, edited)
}

/// Accuracy of the untouched attributes: over images and the attributes in
/// `kept`, the fraction where the prediction on the translated image equals
/// the source image's label (an edit of gender should keep smile and hair).
pub fn untouched_accuracy(pred: &[Vec<bool>], source: &[Vec<bool>], kept: &[usize]) -> f64 {
    agreement(pred, source, kept)
}

fn agreement(pred: &[Vec<bool>], want: &[Vec<bool>], attrs: &[usize]) -> f64 {
    let mut hit = 0usize;
    let mut n = 0usize;
    for (p, w) in pred.iter().zip(want) {
        for &a in attrs {
            hit += usize::from(p[a] == w[a]);
            n += 1;
        }
    }
    if n == 0 {
        f64::NAN
    } else {
        hit as f64 / n as f64
    }
}

/// MS-SSIM between the top-left 10×10 crops of a source and its translation
/// (one scale and a shrunk window at this size; both are in the result).
pub fn background_ms_ssim(source: &Planar, translated: &Planar) -> Result<MsSsim, String> {
    ms_ssim(
        &source.crop_top_left(BACKGROUND_CROP),
        &translated.crop_top_left(BACKGROUND_CROP),
        255.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editing_and_untouched_accuracy_count_the_right_cells() {
        // Two images, attributes 0 (edited) and 1, 2 (kept).
        let pred = vec![vec![true, false, true], vec![false, false, false]];
        let target = vec![vec![true, true, true], vec![true, true, true]];
        let source = vec![vec![false, false, true], vec![false, true, false]];
        assert_eq!(editing_accuracy(&pred, &target, &[0]), 0.5);
        assert_eq!(untouched_accuracy(&pred, &source, &[1, 2]), 0.75);
        assert!(editing_accuracy(&pred, &target, &[]).is_nan());
    }

    #[test]
    fn background_ms_ssim_uses_only_the_corner() {
        let img = image::RgbImage::from_fn(64, 64, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 4) as u8, 90])
        });
        let mut edited = img.clone();
        // Change everything outside the corner: the background score stays 1.
        for (x, y, p) in edited.enumerate_pixels_mut() {
            if x >= 10 || y >= 10 {
                *p = image::Rgb([255, 0, 0]);
            }
        }
        let (a, b) = (Planar::from_rgb(&img), Planar::from_rgb(&edited));
        let m = background_ms_ssim(&a, &b).unwrap();
        assert!((m.value - 1.0).abs() < 1e-12, "{m:?}");
        assert_eq!((m.levels, m.window), (1, 9));
        // A changed corner lowers it.
        let mut corner = img.clone();
        corner.put_pixel(3, 3, image::Rgb([0, 255, 255]));
        let m = background_ms_ssim(&a, &Planar::from_rgb(&corner)).unwrap();
        assert!(m.value < 0.999, "{m:?}");
    }
}
