//! Poisson image blending (Pérez, Gangnet and Blake 2003, "Poisson image
//! editing", eq. 7–8 with the source's gradients as the guidance field):
//! inside a rectangle Ω the result f solves Δf = Δs (s the pasted image),
//! with f equal to the target on Ω's border; outside Ω the target is kept
//! untouched. ST-GAN (Zhang et al., Sec. 3.2, after eq. 9) blends LST-GAN's
//! edited region into the input face this way.
//!
//! The discrete equation per pixel p of Ω with neighbours N_p (4-connected,
//! inside the image): |N_p|·f_p − Σ_{q ∈ N_p ∩ Ω} f_q = Σ_{q ∈ N_p \ Ω} t_q +
//! Σ_{q ∈ N_p} (s_p − s_q), solved per channel by successive over-relaxation
//! from f = s until no value moves by more than 1e-3 (at most 5,000 sweeps).

use image::RgbImage;

/// A rectangle of pixels: left, top, width, height.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl Region {
    /// The pixels of a box given as fractions [top, left, height, width] of
    /// an image of side `size` (at least one pixel, inside the image).
    pub fn from_fractions(b: [f64; 4], size: u32) -> Region {
        let s = size as f64;
        let px = |v: f64| ((v * s).round().max(0.0) as u32).min(size);
        let (y, x) = (px(b[0]).min(size - 1), px(b[1]).min(size - 1));
        let h = px(b[2]).clamp(1, size - y);
        let w = px(b[3]).clamp(1, size - x);
        Region { x, y, w, h }
    }

    pub fn contains(&self, x: u32, y: u32) -> bool {
        x >= self.x && x < self.x + self.w && y >= self.y && y < self.y + self.h
    }
}

/// `target` with `region` replaced by `source`'s pixels (eq. 9 without blending).
pub fn paste(target: &RgbImage, source: &RgbImage, r: Region) -> RgbImage {
    let mut out = target.clone();
    for y in r.y..r.y + r.h {
        for x in r.x..r.x + r.w {
            out.put_pixel(x, y, *source.get_pixel(x, y));
        }
    }
    out
}

/// `source` blended into `target` over `region` (both images the same size).
pub fn blend(target: &RgbImage, source: &RgbImage, r: Region) -> RgbImage {
    assert_eq!(
        target.dimensions(),
        source.dimensions(),
        "blend: sizes differ"
    );
    let (iw, ih) = target.dimensions();
    let (w, h) = (r.w as usize, r.h as usize);
    let mut out = target.clone();
    let neighbours = |x: u32, y: u32| {
        let mut n = Vec::with_capacity(4);
        if x > 0 {
            n.push((x - 1, y));
        }
        if y > 0 {
            n.push((x, y - 1));
        }
        if x + 1 < iw {
            n.push((x + 1, y));
        }
        if y + 1 < ih {
            n.push((x, y + 1));
        }
        n
    };
    for c in 0..3 {
        let s = |x: u32, y: u32| source.get_pixel(x, y)[c] as f64;
        let t = |x: u32, y: u32| target.get_pixel(x, y)[c] as f64;
        // Per pixel of Ω: the right-hand side, |N_p| and its Ω neighbours.
        let mut rhs = vec![0.0; w * h];
        let mut count = vec![0.0; w * h];
        let mut inner: Vec<Vec<usize>> = vec![Vec::new(); w * h];
        let mut f = vec![0.0; w * h];
        for j in 0..h {
            for i in 0..w {
                let (x, y) = (r.x + i as u32, r.y + j as u32);
                let k = j * w + i;
                f[k] = s(x, y);
                for (qx, qy) in neighbours(x, y) {
                    count[k] += 1.0;
                    rhs[k] += s(x, y) - s(qx, qy);
                    if r.contains(qx, qy) {
                        inner[k].push((qy - r.y) as usize * w + (qx - r.x) as usize);
                    } else {
                        rhs[k] += t(qx, qy);
                    }
                }
            }
        }
        let omega = 1.9;
        for _ in 0..5000 {
            let mut moved: f64 = 0.0;
            for k in 0..w * h {
                let sum: f64 = inner[k].iter().map(|&q| f[q]).sum();
                let gs = (rhs[k] + sum) / count[k];
                let next = f[k] + omega * (gs - f[k]);
                moved = moved.max((next - f[k]).abs());
                f[k] = next;
            }
            if moved < 1e-3 {
                break;
            }
        }
        for j in 0..h {
            for i in 0..w {
                let v = f[j * w + i].round().clamp(0.0, 255.0) as u8;
                out.get_pixel_mut(r.x + i as u32, r.y + j as u32)[c] = v;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(seed: u32) -> RgbImage {
        RgbImage::from_fn(24, 20, |x, y| {
            let v = (x * 7 + y * 13 + seed * 31) % 200;
            image::Rgb([v as u8 + 20, (v / 2) as u8 + 40, (235 - v) as u8])
        })
    }

    const R: Region = Region {
        x: 5,
        y: 4,
        w: 10,
        h: 8,
    };

    #[test]
    fn pixels_outside_the_region_are_the_target_and_self_blending_is_identity() {
        let (t, s) = (face(1), face(2));
        let b = blend(&t, &s, R);
        for (x, y, p) in b.enumerate_pixels() {
            if !R.contains(x, y) {
                assert_eq!(p, t.get_pixel(x, y), "({x}, {y})");
            }
        }
        assert_ne!(b, t, "the region changed");
        assert_eq!(blend(&t, &t, R), t);
    }

    #[test]
    fn a_brightness_shifted_copy_blends_back_to_the_original() {
        // Same gradients, different level: Poisson blending takes the level
        // from the border, so the result is the target again (up to rounding).
        let t = face(3);
        let mut s = t.clone();
        for p in s.pixels_mut() {
            for c in 0..3 {
                p[c] = p[c].saturating_sub(15);
            }
        }
        let b = blend(&t, &s, R);
        let worst = b
            .pixels()
            .zip(t.pixels())
            .flat_map(|(a, b)| (0..3).map(move |c| (a[c] as i32 - b[c] as i32).abs()))
            .max()
            .unwrap();
        assert!(worst <= 1, "{worst}");
        // A plain paste keeps the shift.
        assert_ne!(paste(&t, &s, R), t);
    }

    #[test]
    fn fraction_boxes_stay_inside_the_image() {
        assert_eq!(
            Region::from_fractions([0.5, 0.25, 0.25, 0.5], 32),
            Region {
                x: 8,
                y: 16,
                w: 16,
                h: 8
            }
        );
        let r = Region::from_fractions([0.9, 0.9, 0.5, 0.5], 10);
        assert!(r.x + r.w <= 10 && r.y + r.h <= 10 && r.w >= 1);
    }
}
