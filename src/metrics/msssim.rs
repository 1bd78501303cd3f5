//! SSIM and multi-scale SSIM (Wang, Simoncelli & Bovik 2003), with the
//! conventions of `pytorch_msssim` 1.0 (Gaussian window 11, σ 1.5, K1 0.01,
//! K2 0.03, "valid" separable filtering, scale weights 0.0448, 0.2856,
//! 0.3001, 0.2363, 0.1333, negative contrast terms clipped to 0, 2×2 average
//! pooling that pads odd sizes with zeros and counts them, as PyTorch's
//! `avg_pool2d(..., padding=s % 2)` does).
//!
//! The reference refuses images whose smaller side is ≤ 160 px. SG-GAN's
//! background metric (Sec. 5.3) needs a 10×10 crop, and our faces are 64×64,
//! so [`ms_ssim`] adapts instead: it uses as many scales as fit (the first
//! `levels` weights, renormalised to sum to 1), and when not even one scale
//! fits it shrinks the window to the largest odd size that does (σ scaled
//! with it). [`MsSsim`] reports the levels and window actually used; on
//! images of 161 px or more it is exactly the reference computation.

/// An image as planar `f64` channels (C × H × W), values in `[0, data_range]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Planar {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<f64>,
}

impl Planar {
    pub fn from_rgb(img: &image::RgbImage) -> Planar {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut data = vec![0.0; 3 * w * h];
        for (i, p) in img.pixels().enumerate() {
            for c in 0..3 {
                data[c * w * h + i] = p.0[c] as f64;
            }
        }
        Planar {
            channels: 3,
            height: h,
            width: w,
            data,
        }
    }

    fn plane(&self, c: usize) -> &[f64] {
        let n = self.height * self.width;
        &self.data[c * n..(c + 1) * n]
    }

    /// The top-left `size`×`size` crop (SG-GAN's background region).
    pub fn crop_top_left(&self, size: usize) -> Planar {
        let (h, w) = (size.min(self.height), size.min(self.width));
        let mut data = Vec::with_capacity(self.channels * h * w);
        for c in 0..self.channels {
            let p = self.plane(c);
            for y in 0..h {
                data.extend_from_slice(&p[y * self.width..y * self.width + w]);
            }
        }
        Planar {
            channels: self.channels,
            height: h,
            width: w,
            data,
        }
    }
}

/// The reference's defaults.
pub const WEIGHTS: [f64; 5] = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333];
pub const WINDOW: usize = 11;
pub const SIGMA: f64 = 1.5;
pub const K1: f64 = 0.01;
pub const K2: f64 = 0.03;

/// An MS-SSIM value with the settings that produced it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct MsSsim {
    pub value: f64,
    pub levels: usize,
    pub window: usize,
    pub sigma: f64,
}

fn gaussian(size: usize, sigma: f64) -> Vec<f64> {
    let half = (size / 2) as f64;
    let g: Vec<f64> = (0..size)
        .map(|i| {
            let x = i as f64 - half;
            (-(x * x) / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let s: f64 = g.iter().sum();
    g.into_iter().map(|v| v / s).collect()
}

/// "Valid" separable filtering of one plane (h × w) → ((h−k+1) × (w−k+1)).
/// A dimension shorter than the window is left unfiltered (the reference
/// does the same, with a warning).
fn filter(p: &[f64], h: usize, w: usize, g: &[f64]) -> (Vec<f64>, usize, usize) {
    let k = g.len();
    let (oh, ow) = (
        if h >= k { h - k + 1 } else { h },
        if w >= k { w - k + 1 } else { w },
    );
    // Along H first, then W, like the reference.
    let mut tmp = vec![0.0; oh * w];
    for y in 0..oh {
        for x in 0..w {
            tmp[y * w + x] = if h >= k {
                (0..k).map(|i| g[i] * p[(y + i) * w + x]).sum()
            } else {
                p[y * w + x]
            };
        }
    }
    let mut out = vec![0.0; oh * ow];
    for y in 0..oh {
        for x in 0..ow {
            out[y * ow + x] = if w >= k {
                (0..k).map(|i| g[i] * tmp[y * w + x + i]).sum()
            } else {
                tmp[y * w + x]
            };
        }
    }
    (out, oh, ow)
}

/// Per-channel (SSIM, contrast-structure) means.
fn ssim_cs(a: &Planar, b: &Planar, g: &[f64], data_range: f64) -> Vec<(f64, f64)> {
    let c1 = (K1 * data_range).powi(2);
    let c2 = (K2 * data_range).powi(2);
    let (h, w) = (a.height, a.width);
    (0..a.channels)
        .map(|c| {
            let (x, y) = (a.plane(c), b.plane(c));
            let xx: Vec<f64> = x.iter().map(|v| v * v).collect();
            let yy: Vec<f64> = y.iter().map(|v| v * v).collect();
            let xy: Vec<f64> = x.iter().zip(y).map(|(u, v)| u * v).collect();
            let (mu1, _, _) = filter(x, h, w, g);
            let (mu2, _, _) = filter(y, h, w, g);
            let (fxx, _, _) = filter(&xx, h, w, g);
            let (fyy, _, _) = filter(&yy, h, w, g);
            let (fxy, _, _) = filter(&xy, h, w, g);
            let n = mu1.len() as f64;
            let (mut s, mut cs) = (0.0, 0.0);
            for i in 0..mu1.len() {
                let s1 = fxx[i] - mu1[i] * mu1[i];
                let s2 = fyy[i] - mu2[i] * mu2[i];
                let s12 = fxy[i] - mu1[i] * mu2[i];
                let csv = (2.0 * s12 + c2) / (s1 + s2 + c2);
                let l = (2.0 * mu1[i] * mu2[i] + c1) / (mu1[i] * mu1[i] + mu2[i] * mu2[i] + c1);
                s += l * csv;
                cs += csv;
            }
            (s / n, cs / n)
        })
        .collect()
}

/// 2×2 average pooling; odd sizes are padded with one zero row/column on
/// each side and the zeros are counted (PyTorch's `count_include_pad`).
fn pool(a: &Planar) -> Planar {
    let (ph, pw) = (a.height % 2, a.width % 2);
    let oh = (a.height + 2 * ph - 2) / 2 + 1;
    let ow = (a.width + 2 * pw - 2) / 2 + 1;
    let mut data = Vec::with_capacity(a.channels * oh * ow);
    for c in 0..a.channels {
        let p = a.plane(c);
        let at = |y: isize, x: isize| -> f64 {
            if y < 0 || x < 0 || y >= a.height as isize || x >= a.width as isize {
                0.0
            } else {
                p[y as usize * a.width + x as usize]
            }
        };
        for y in 0..oh {
            for x in 0..ow {
                let (y0, x0) = (2 * y as isize - ph as isize, 2 * x as isize - pw as isize);
                data.push(
                    (at(y0, x0) + at(y0, x0 + 1) + at(y0 + 1, x0) + at(y0 + 1, x0 + 1)) / 4.0,
                );
            }
        }
    }
    Planar {
        channels: a.channels,
        height: oh,
        width: ow,
        data,
    }
}

fn check(a: &Planar, b: &Planar) -> Result<(), String> {
    if (a.channels, a.height, a.width) != (b.channels, b.height, b.width) {
        return Err(format!(
            "images differ in size: {}×{}×{} vs {}×{}×{}",
            a.channels, a.height, a.width, b.channels, b.height, b.width
        ));
    }
    if a.height == 0 || a.width == 0 {
        return Err("empty image".into());
    }
    Ok(())
}

/// Single-scale SSIM, averaged over channels.
pub fn ssim(a: &Planar, b: &Planar, data_range: f64) -> Result<f64, String> {
    check(a, b)?;
    let per = ssim_cs(a, b, &gaussian(WINDOW, SIGMA), data_range);
    Ok(per.iter().map(|p| p.0).sum::<f64>() / per.len() as f64)
}

/// The window and number of scales for an image whose smaller side is `side`.
pub fn settings(side: usize) -> (usize, usize, f64) {
    let levels = (1..=WEIGHTS.len())
        .rev()
        .find(|&l| side > (WINDOW - 1) << (l - 1))
        .unwrap_or(0);
    if levels > 0 {
        return (levels, WINDOW, SIGMA);
    }
    // Not even one scale fits: the largest odd window not above the side.
    let window = if side % 2 == 1 { side } else { side - 1 }.max(1);
    (1, window, SIGMA * window as f64 / WINDOW as f64)
}

/// Multi-scale SSIM, averaged over channels (see the module docs for the
/// adaptation to small images).
pub fn ms_ssim(a: &Planar, b: &Planar, data_range: f64) -> Result<MsSsim, String> {
    check(a, b)?;
    let (levels, window, sigma) = settings(a.height.min(a.width));
    let g = gaussian(window, sigma);
    let total: f64 = WEIGHTS[..levels].iter().sum();
    let weights: Vec<f64> = WEIGHTS[..levels].iter().map(|w| w / total).collect();
    let (mut x, mut y) = (a.clone(), b.clone());
    let mut value_per_channel = vec![1.0; a.channels];
    for (l, w) in weights.iter().enumerate() {
        let per = ssim_cs(&x, &y, &g, data_range);
        let last = l + 1 == levels;
        for (c, (s, cs)) in per.into_iter().enumerate() {
            let term = if last { s } else { cs };
            value_per_channel[c] *= term.max(0.0).powf(*w);
        }
        if !last {
            x = pool(&x);
            y = pool(&y);
        }
    }
    Ok(MsSsim {
        value: value_per_channel.iter().sum::<f64>() / a.channels as f64,
        levels,
        window,
        sigma,
    })
}

/// Peak signal-to-noise ratio in dB over all pixels; infinite for identical images.
pub fn psnr(a: &Planar, b: &Planar, data_range: f64) -> Result<f64, String> {
    check(a, b)?;
    let mse = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(u, v)| (u - v) * (u - v))
        .sum::<f64>()
        / a.data.len() as f64;
    Ok(10.0 * (data_range * data_range / mse).log10())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psnr_of_a_known_mse() {
        // Every value off by 10: MSE 100, PSNR = 10·log10(255² / 100) = 28.1308 dB.
        let a = image::RgbImage::from_fn(12, 9, |x, y| {
            image::Rgb([(x * 9) as u8, (y * 11) as u8, 100])
        });
        let mut b = a.clone();
        for p in b.pixels_mut() {
            for c in 0..3 {
                p[c] += 10;
            }
        }
        let v = psnr(&Planar::from_rgb(&a), &Planar::from_rgb(&b), 255.0).unwrap();
        assert!((v - 28.130_803).abs() < 1e-5, "{v}");
    }

    fn noise(c: usize, h: usize, w: usize, seed: u64) -> Planar {
        use rand::{Rng, SeedableRng};
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        Planar {
            channels: c,
            height: h,
            width: w,
            data: (0..c * h * w).map(|_| r.random_range(0.0..255.0)).collect(),
        }
    }

    #[test]
    fn identical_images_score_one_and_psnr_is_infinite() {
        let a = noise(3, 64, 64, 1);
        let m = ms_ssim(&a, &a, 255.0).unwrap();
        assert!((m.value - 1.0).abs() < 1e-12);
        assert_eq!((m.levels, m.window), (3, 11));
        assert!(psnr(&a, &a, 255.0).unwrap().is_infinite());
    }

    #[test]
    fn small_images_use_fewer_scales_then_a_smaller_window() {
        assert_eq!(settings(161), (5, 11, 1.5));
        assert_eq!(settings(160), (4, 11, 1.5));
        assert_eq!(settings(64), (3, 11, 1.5));
        assert_eq!(settings(11), (1, 11, 1.5));
        let (l, w, s) = settings(10);
        assert_eq!((l, w), (1, 9));
        assert!((s - 1.5 * 9.0 / 11.0).abs() < 1e-12);
        let a = noise(3, 64, 64, 2);
        let b = noise(3, 64, 64, 3);
        let crop = ms_ssim(&a.crop_top_left(10), &b.crop_top_left(10), 255.0).unwrap();
        assert_eq!((crop.levels, crop.window), (1, 9));
        assert!(crop.value < 0.2, "{crop:?}");
    }

    #[test]
    fn pooling_counts_zero_padding_like_pytorch() {
        // torch.nn.functional.avg_pool2d(torch.arange(9.).view(1,1,3,3), 2, padding=1)
        // = [[0.00, 0.75], [2.25, 6.00]]  (sums 0; 1+2=3; 3+6=9; 4+5+7+8=24, all / 4)
        let a = Planar {
            channels: 1,
            height: 3,
            width: 3,
            data: (0..9).map(f64::from).collect(),
        };
        assert_eq!(pool(&a).data, vec![0.0, 0.75, 2.25, 6.0]);
    }

    #[test]
    fn psnr_of_a_constant_offset() {
        // MSE = 100 → 10·log10(255² / 100) = 28.1308 dB
        let a = noise(1, 8, 8, 4);
        let mut b = a.clone();
        b.data.iter_mut().for_each(|v| *v += 10.0);
        assert!((psnr(&a, &b, 255.0).unwrap() - 28.130_803_608_679_1).abs() < 1e-9);
    }
}
