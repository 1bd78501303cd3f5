//! Procedural demo faces: **not CelebA**. A deterministic renderer that writes
//! CelebA's exact layout (178×218 JPEGs in `img_align_celeba/`,
//! `list_attr_celeba.txt`, `list_eval_partition.txt`, `identity_CelebA.txt`)
//! so that a fresh clone can run every stage without downloading anything.
//!
//! Labels follow CelebA's long tail: the marginals below are the positive
//! rates of the official `list_attr_celeba.txt` (202,599 rows), counted with
//! `awk` over the file. Sex-specific attributes (beards,
//! lipstick, ...) are drawn conditionally on `Male` with rates scaled so the
//! marginals stay close to CelebA's. Every face is drawn from its labels,
//! and every one of the 40 attributes has a visible cue, sized to survive
//! the BEGAN crop at 32×32 (4 source pixels per pixel): hair colours, bald
//! (with a shine), bangs, wavy hair (horizontal waves) and straight hair
//! (vertical strands), a receding hairline, eyeglasses, smiling, mouth open,
//! big lips, lipstick, mustache, goatee, beard (`No_Beard` off), stubble
//! (5 o'clock shadow), sideburns, pale skin, rosy cheeks, high cheekbones
//! (highlights), heavy makeup (eye shadow), bags under the eyes, arched and
//! bushy eyebrows, narrow eyes, big and pointy noses, chubby (a fuller jaw),
//! a double chin, an oval face (narrower and longer), a hat, earrings,
//! necklace and necktie (on the neck below the chin), young (no lines on the
//! forehead and cheeks), attractive (a beauty mark) and blurry. The cues are
//! arbitrary drawings, not claims about what the attributes look like.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::data::celeba::{self, Labels};
use crate::data::images::encode_jpeg;
use crate::data::schema::{ATTRIBUTES, N_ATTRIBUTES, attribute_index};

pub const DEFAULT_COUNT: usize = 3000;
pub const WIDTH: u32 = crate::data::celeba::ALIGNED_WIDTH;
pub const HEIGHT: u32 = crate::data::celeba::ALIGNED_HEIGHT;
/// Images per identity, as in the shared CelebA sample.
const PER_IDENTITY: usize = 5;

/// CelebA positive rates (official file, 202,599 rows), in `ATTRIBUTES` order.
pub const CELEBA_RATES: [f64; N_ATTRIBUTES] = [
    0.1111, 0.2670, 0.5125, 0.2046, 0.0224, 0.1516, 0.2408, 0.2345, 0.2393, 0.1480, 0.0509, 0.2052,
    0.1422, 0.0576, 0.0467, 0.0651, 0.0628, 0.0419, 0.3869, 0.4550, 0.4168, 0.4834, 0.0415, 0.1151,
    0.8349, 0.2841, 0.0429, 0.2774, 0.0798, 0.0657, 0.0565, 0.4821, 0.2084, 0.3196, 0.1889, 0.0485,
    0.4724, 0.1230, 0.0727, 0.7736,
];

fn a(name: &str) -> usize {
    attribute_index(name).unwrap_or_else(|| panic!("unknown attribute {name}"))
}

/// What is fixed per identity.
struct Identity {
    male: bool,
    skin: [f32; 3],
    pale: bool,
    hair: Option<usize>,
    bald: bool,
    face_w: f32,
    chubby: bool,
    big_nose: bool,
    young: bool,
    background: [f32; 3],
}

fn rate(name: &str) -> f64 {
    CELEBA_RATES[a(name)]
}

fn identity(seed: u64, id: usize) -> Identity {
    let mut r = ChaCha8Rng::seed_from_u64(seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let male = r.random_bool(rate("Male"));
    let pale = r.random_bool(rate("Pale_Skin"));
    let bald = male && r.random_bool((rate("Bald") / rate("Male")).min(1.0));
    let young = r.random_bool(rate("Young"));
    // One hair colour at most, with CelebA's shares; gray mostly when not young.
    let hair = if bald {
        None
    } else {
        let u: f64 = r.random();
        let gray = if young { 0.01 } else { 0.15 };
        let black = rate("Black_Hair");
        let blond = rate("Blond_Hair") * if male { 0.3 } else { 1.6 };
        let brown = rate("Brown_Hair");
        if u < gray {
            Some(a("Gray_Hair"))
        } else if u < gray + black {
            Some(a("Black_Hair"))
        } else if u < gray + black + blond {
            Some(a("Blond_Hair"))
        } else if u < gray + black + blond + brown {
            Some(a("Brown_Hair"))
        } else {
            None
        }
    };
    let tone = r.random_range(0.0..1.0f32);
    let skin = if pale {
        [0.96, 0.88, 0.84]
    } else {
        let dark = [0.45, 0.30, 0.22];
        let light = [0.92, 0.74, 0.62];
        [0, 1, 2].map(|k| dark[k] + (light[k] - dark[k]) * (0.35 + 0.65 * tone))
    };
    let chubby = r.random_bool(rate("Chubby"));
    Identity {
        male,
        skin,
        pale,
        hair,
        bald,
        face_w: r.random_range(0.9..1.05)
            * if male { 1.06 } else { 1.0 }
            * if chubby { 1.25 } else { 1.0 },
        chubby,
        big_nose: r.random_bool(rate("Big_Nose")),
        young,
        background: [
            r.random_range(0.2..0.95),
            r.random_range(0.2..0.95),
            r.random_range(0.2..0.95),
        ],
    }
}

/// Samples the 40 labels of one image of an identity.
fn sample_labels(idn: &Identity, r: &mut ChaCha8Rng) -> Labels {
    let mut l: Labels = 0;
    let mut set = |name: &str, v: bool| {
        if v {
            l |= 1 << a(name);
        }
    };
    let male_only = |name: &str| (rate(name) / rate("Male")).min(0.95);
    let female_only = |name: &str| (rate(name) / (1.0 - rate("Male"))).min(0.95);
    set("Male", idn.male);
    set("Pale_Skin", idn.pale);
    set("Bald", idn.bald);
    set("Young", idn.young);
    set("Chubby", idn.chubby);
    set("Big_Nose", idn.big_nose);
    if let Some(h) = idn.hair {
        set(ATTRIBUTES[h], true);
    }
    let bearded = idn.male && r.random_bool((1.0 - rate("No_Beard")) / rate("Male"));
    let goatee = bearded && r.random_bool(rate("Goatee") / (1.0 - rate("No_Beard")));
    set("No_Beard", !bearded);
    set("Goatee", goatee);
    set("Mustache", idn.male && r.random_bool(male_only("Mustache")));
    set(
        "Sideburns",
        idn.male && r.random_bool(male_only("Sideburns")),
    );
    set(
        "5_o_Clock_Shadow",
        idn.male && !bearded && r.random_bool(male_only("5_o_Clock_Shadow")),
    );
    set(
        "Wearing_Necktie",
        idn.male && r.random_bool(male_only("Wearing_Necktie")),
    );
    set(
        "Wearing_Lipstick",
        !idn.male && r.random_bool(female_only("Wearing_Lipstick")),
    );
    set(
        "Heavy_Makeup",
        !idn.male && r.random_bool(female_only("Heavy_Makeup")),
    );
    set(
        "Wearing_Earrings",
        !idn.male && r.random_bool(female_only("Wearing_Earrings")),
    );
    set(
        "Wearing_Necklace",
        !idn.male && r.random_bool(female_only("Wearing_Necklace")),
    );
    set(
        "Rosy_Cheeks",
        !idn.male && r.random_bool(female_only("Rosy_Cheeks")),
    );
    set(
        "Arched_Eyebrows",
        !idn.male && r.random_bool(female_only("Arched_Eyebrows")),
    );
    set("Bangs", !idn.bald && r.random_bool(rate("Bangs")));
    let wavy = !idn.bald && r.random_bool(rate("Wavy_Hair"));
    set("Wavy_Hair", wavy);
    set(
        "Straight_Hair",
        !idn.bald && !wavy && r.random_bool(rate("Straight_Hair") / (1.0 - rate("Wavy_Hair"))),
    );
    let smiling = r.random_bool(rate("Smiling"));
    set("Smiling", smiling);
    set(
        "High_Cheekbones",
        r.random_bool(if smiling { 0.8 } else { 0.12 }),
    );
    set(
        "Mouth_Slightly_Open",
        r.random_bool(if smiling { 0.7 } else { 0.28 }),
    );
    set("Wearing_Hat", r.random_bool(rate("Wearing_Hat")));
    // The remaining attributes, independently with CelebA's rates.
    for name in [
        "Attractive",
        "Bags_Under_Eyes",
        "Big_Lips",
        "Blurry",
        "Bushy_Eyebrows",
        "Double_Chin",
        "Eyeglasses",
        "Narrow_Eyes",
        "Oval_Face",
        "Pointy_Nose",
        "Receding_Hairline",
    ] {
        set(name, r.random_bool(rate(name)));
    }
    l
}

/// The class ids of the demo faces' label canvas: SeCGAN's 12 segments
/// (`data::face_parsing::SECGAN12`, same order).
pub mod class {
    pub const OTHERS: u8 = 0;
    pub const SKIN: u8 = 1;
    pub const EYEBROWS: u8 = 2;
    pub const EYES: u8 = 3;
    pub const EYEGLASSES: u8 = 4;
    pub const EARS: u8 = 5;
    pub const EARRINGS: u8 = 6;
    pub const NOSE: u8 = 7;
    pub const MOUTH: u8 = 8;
    pub const LIPS: u8 = 9;
    pub const NECK: u8 = 10;
    pub const HAIR: u8 = 11;
}

/// A float canvas with a few filled shapes; converted to RGB at the end.
/// Beside the colours it keeps a label canvas: a shape drawn while `class`
/// is set writes that class on every pixel whose centre it covers, if it
/// is at least half opaque (light overlays draw with `class` None and
/// change no label).
struct Canvas {
    w: usize,
    h: usize,
    px: Vec<[f32; 3]>,
    labels: Vec<u8>,
    class: Option<u8>,
}

impl Canvas {
    fn new(w: u32, h: u32, bg: [f32; 3]) -> Self {
        Canvas {
            w: w as usize,
            h: h as usize,
            px: vec![bg; (w * h) as usize],
            labels: vec![class::OTHERS; (w * h) as usize],
            class: None,
        }
    }
    /// Sets the class the next shapes write.
    fn paint(&mut self, class: Option<u8>) {
        self.class = class;
    }
    /// Labels pixel (x, y), whose centre lies inside the shape being drawn
    /// at `opacity`: covered at least half (the centre is inside) by a shape
    /// at least half opaque.
    fn mark(&mut self, x: usize, y: usize, opacity: f32) {
        if let Some(k) = self.class
            && opacity >= 0.5
        {
            self.labels[y * self.w + x] = k;
        }
    }
    fn blend(&mut self, x: usize, y: usize, c: [f32; 3], alpha: f32) {
        let p = &mut self.px[y * self.w + x];
        for k in 0..3 {
            p[k] = p[k] * (1.0 - alpha) + c[k] * alpha;
        }
    }
    /// Fills the ellipse centred at (cx, cy) with radii (rx, ry); `inside`
    /// may restrict the region further.
    fn ellipse(
        &mut self,
        (cx, cy, rx, ry): (f32, f32, f32, f32),
        c: [f32; 3],
        alpha: f32,
        inside: impl Fn(f32, f32) -> bool,
    ) {
        let (x0, x1) = (
            (cx - rx).floor().max(0.0) as usize,
            ((cx + rx).ceil() as usize).min(self.w - 1),
        );
        let (y0, y1) = (
            (cy - ry).floor().max(0.0) as usize,
            ((cy + ry).ceil() as usize).min(self.h - 1),
        );
        for y in y0..=y1 {
            for x in x0..=x1 {
                let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
                let d = ((fx - cx) / rx).powi(2) + ((fy - cy) / ry).powi(2);
                if d <= 1.0 && inside(fx, fy) {
                    // Soft edge over the outer ~1.5 px.
                    let edge = ((1.0 - d.sqrt()) * rx.min(ry) / 1.5).clamp(0.0, 1.0);
                    self.blend(x, y, c, alpha * edge);
                    self.mark(x, y, alpha);
                }
            }
        }
    }
    fn ring(&mut self, cx: f32, cy: f32, r: f32, thick: f32, c: [f32; 3]) {
        let x0 = (cx - r - thick).max(0.0) as usize;
        let y0 = (cy - r - thick).max(0.0) as usize;
        for y in y0..((cy + r + thick) as usize).min(self.h) {
            for x in x0..((cx + r + thick) as usize).min(self.w) {
                let d = ((x as f32 + 0.5 - cx).powi(2) + (y as f32 + 0.5 - cy).powi(2)).sqrt();
                if (d - r).abs() < thick / 2.0 {
                    self.blend(x, y, c, 1.0);
                    self.mark(x, y, 1.0);
                }
            }
        }
    }
    /// Fills the pixels of the box (x0, y0, x1, y1) whose centres pass
    /// `inside`.
    fn fill(
        &mut self,
        (x0, y0, x1, y1): (f32, f32, f32, f32),
        c: [f32; 3],
        alpha: f32,
        inside: impl Fn(f32, f32) -> bool,
    ) {
        for y in (y0.max(0.0) as usize)..(y1.min(self.h as f32) as usize) {
            for x in (x0.max(0.0) as usize)..(x1.min(self.w as f32) as usize) {
                if inside(x as f32 + 0.5, y as f32 + 0.5) {
                    self.blend(x, y, c, alpha);
                    self.mark(x, y, alpha);
                }
            }
        }
    }
    fn rect(&mut self, x0: f32, y0: f32, x1: f32, y1: f32, c: [f32; 3], alpha: f32) {
        for y in (y0.max(0.0) as usize)..(y1.min(self.h as f32) as usize) {
            for x in (x0.max(0.0) as usize)..(x1.min(self.w as f32) as usize) {
                self.blend(x, y, c, alpha);
                self.mark(x, y, alpha);
            }
        }
    }
    /// A thick polyline through `pts`.
    fn line(&mut self, pts: &[(f32, f32)], thick: f32, c: [f32; 3], alpha: f32) {
        for w in pts.windows(2) {
            let ((ax, ay), (bx, by)) = (w[0], w[1]);
            let steps = ((bx - ax).abs().max((by - ay).abs()) * 2.0).ceil().max(1.0) as usize;
            for s in 0..=steps {
                let t = s as f32 / steps as f32;
                let (x, y) = (ax + (bx - ax) * t, ay + (by - ay) * t);
                self.ellipse((x, y, thick / 2.0, thick / 2.0), c, alpha, |_, _| true);
            }
        }
    }
    fn box_blur(&mut self, radius: usize) {
        let src = self.px.clone();
        for y in 0..self.h {
            for x in 0..self.w {
                let mut acc = [0.0f32; 3];
                let mut n = 0.0;
                for yy in y.saturating_sub(radius)..(y + radius + 1).min(self.h) {
                    for xx in x.saturating_sub(radius)..(x + radius + 1).min(self.w) {
                        let p = src[yy * self.w + xx];
                        for k in 0..3 {
                            acc[k] += p[k];
                        }
                        n += 1.0;
                    }
                }
                self.px[y * self.w + x] = acc.map(|v| v / n);
            }
        }
    }
    fn into_rgb(self, r: &mut ChaCha8Rng) -> RgbImage {
        let mut img = RgbImage::new(self.w as u32, self.h as u32);
        for (i, p) in self.px.iter().enumerate() {
            let noise: f32 = r.random_range(-0.02..0.02);
            let px = p.map(|v| ((v + noise).clamp(0.0, 1.0) * 255.0).round() as u8);
            img.put_pixel((i % self.w) as u32, (i / self.w) as u32, Rgb(px));
        }
        img
    }
}

fn hair_colour(h: Option<usize>) -> [f32; 3] {
    match h.map(|i| ATTRIBUTES[i]) {
        Some("Black_Hair") => [0.08, 0.07, 0.06],
        Some("Blond_Hair") => [0.90, 0.78, 0.45],
        Some("Brown_Hair") => [0.42, 0.26, 0.14],
        Some("Gray_Hair") => [0.70, 0.70, 0.70],
        _ => [0.55, 0.22, 0.12], // auburn: no hair-colour label
    }
}

fn scale(c: [f32; 3], f: f32) -> [f32; 3] {
    c.map(|v| (v * f).clamp(0.0, 1.0))
}

/// A face being drawn: the canvas, the identity and labels, and the head's
/// geometry (centre, half width and half height), hair and skin colours.
struct Face<'a> {
    idn: &'a Identity,
    l: Labels,
    cx: f32,
    cy: f32,
    fw: f32,
    fh: f32,
    hair: [f32; 3],
    skin: [f32; 3],
}

impl Face<'_> {
    fn has(&self, name: &str) -> bool {
        celeba::label(self.l, a(name))
    }
    /// Beards and sideburns: the hair colour toward the skin's, so that a
    /// mustache (the hair colour, darker) shows on a beard.
    fn beard(&self) -> [f32; 3] {
        [0, 1, 2].map(|k| 0.65 * 0.8 * self.hair[k] + 0.35 * self.skin[k])
    }
}

/// Renders one 178×218 face from its identity and labels, back to front,
/// with its class map (178×218 ids of [`class`]; blur changes no class).
///
/// Every cue is sized for the BEGAN crop (the 128×128 box at top 50, left
/// 25) seen at 32×32, the `tiny` presets' size: 4 source pixels per
/// pixel there, so no cue is thinner than about 3 pixels here.
fn render(idn: &Identity, l: Labels, r: &mut ChaCha8Rng) -> (RgbImage, Vec<u8>) {
    let cx = 89.0 + r.random_range(-3.0..3.0);
    let cy = 114.0 + r.random_range(-3.0..3.0);
    let mut cv = Canvas::new(WIDTH, HEIGHT, idn.background);
    let oval = celeba::label(l, a("Oval_Face"));
    let f = Face {
        idn,
        l,
        cx,
        cy,
        fw: 40.0 * idn.face_w * if oval { 0.88 } else { 1.0 },
        fh: 48.0 * if oval { 1.08 } else { 1.0 },
        hair: hair_colour(idn.hair),
        skin: idn.skin,
    };
    shoulders_and_long_hair(&mut cv, &f, r);
    head_and_ears(&mut cv, &f);
    facial_hair(&mut cv, &f);
    hair_on_top(&mut cv, &f);
    eyes_and_brows(&mut cv, &f);
    nose_and_cheeks(&mut cv, &f);
    mouth(&mut cv, &f);
    hat_and_neckwear(&mut cv, &f, r);
    let blur = if f.has("Blurry") { 7 } else { 1 };
    cv.box_blur(blur);
    let labels = std::mem::take(&mut cv.labels);
    (cv.into_rgb(r), labels)
}

/// The colour of hair texture on hair of colour `hair`: lighter on dark
/// hair, darker on light hair.
fn streak_colour(hair: [f32; 3]) -> [f32; 3] {
    let luma = 0.3 * hair[0] + 0.59 * hair[1] + 0.11 * hair[2];
    if luma > 0.5 {
        scale(hair, 0.5)
    } else {
        hair.map(|v| v + (1.0 - v) * 0.45)
    }
}

/// Whether hair at (x, y) carries a streak: wavy hair has horizontal waves,
/// straight hair vertical strands (4 px periods at 32×32), other hair none.
fn streak(f: &Face, x: f32, y: f32) -> bool {
    if f.has("Wavy_Hair") {
        (y + 5.0 * (x * 0.25).sin()).rem_euclid(16.0) < 7.0
    } else if f.has("Straight_Hair") {
        x.rem_euclid(16.0) < 7.0
    } else {
        false
    }
}

/// Shoulders, clothes, the neck and long hair behind the head (not for bald
/// faces or men).
fn shoulders_and_long_hair(cv: &mut Canvas, f: &Face, r: &mut ChaCha8Rng) {
    let (cx, cy, fw, fh, hair, skin) = (f.cx, f.cy, f.fw, f.fh, f.hair, f.skin);
    let idn = f.idn;
    // Shoulders / clothes.
    let cloth = [
        r.random_range(0.1..0.9),
        r.random_range(0.1..0.9),
        r.random_range(0.1..0.9),
    ];
    cv.paint(Some(class::OTHERS));
    cv.ellipse((cx, 230.0, 80.0, 50.0), cloth, 1.0, |_, _| true);
    cv.paint(Some(class::NECK));
    cv.rect(
        cx - 15.0,
        cy + 30.0,
        cx + 15.0,
        200.0,
        scale(skin, 0.9),
        1.0,
    );
    if idn.bald || idn.male {
        return;
    }
    cv.paint(Some(class::HAIR));
    let rx = fw + 16.0;
    let (ecx, ecy, erx, ery) = (cx, cy + 10.0, rx + 6.0, fh + 30.0);
    let inside = move |x: f32, y: f32| {
        ((x - ecx) / erx).powi(2) + ((y - ecy) / ery).powi(2) <= 1.0 && (x - cx).abs() < rx
    };
    cv.ellipse((ecx, ecy, erx, ery), hair, 1.0, |x, _| (x - cx).abs() < rx);
    cv.paint(None);
    cv.fill(
        (cx - rx, ecy - ery, cx + rx, ecy + ery),
        streak_colour(hair),
        0.9,
        |x, y| inside(x, y) && streak(f, x, y),
    );
}

/// The head, a double chin, ears and earrings.
fn head_and_ears(cv: &mut Canvas, f: &Face) {
    let (cx, cy, fw, fh, skin) = (f.cx, f.cy, f.fw, f.fh, f.skin);
    let has = |name: &str| f.has(name);
    cv.paint(Some(class::SKIN));
    cv.ellipse((cx, cy, fw, fh), skin, 1.0, |_, _| true);
    if f.idn.chubby {
        // Full lower cheeks: a rounder, wider jaw.
        for s in [-1.0f32, 1.0] {
            cv.ellipse(
                (cx + s * fw * 0.55, cy + fh * 0.35, fw * 0.5, fh * 0.45),
                skin,
                1.0,
                |_, _| true,
            );
        }
    }
    if has("Double_Chin") {
        cv.ellipse((cx, cy + fh - 2.0, fw * 0.55, 10.0), skin, 1.0, |_, _| true);
        cv.paint(None);
        cv.line(
            &[
                (cx - fw * 0.45, cy + fh - 9.0),
                (cx, cy + fh - 1.0),
                (cx + fw * 0.45, cy + fh - 9.0),
            ],
            4.5,
            scale(skin, 0.5),
            1.0,
        );
        cv.paint(Some(class::SKIN));
    }
    for s in [-1.0f32, 1.0] {
        cv.paint(Some(class::EARS));
        cv.ellipse(
            (cx + s * (fw + 2.0), cy + 2.0, 7.0, 12.0),
            scale(skin, 0.9),
            1.0,
            |_, _| true,
        );
        if has("Wearing_Earrings") {
            cv.paint(Some(class::EARRINGS));
            cv.ellipse(
                (cx + s * (fw + 3.0), cy + 17.0, 6.0, 6.0),
                [1.0, 0.85, 0.1],
                1.0,
                |_, _| true,
            );
        }
    }
}

/// Beard, goatee, stubble, sideburns.
fn facial_hair(cv: &mut Canvas, f: &Face) {
    let (cx, cy, fw, fh) = (f.cx, f.cy, f.fw, f.fh);
    let has = |name: &str| f.has(name);
    let beard_col = f.beard();
    // CelebAMask-HQ has no beard class: facial hair is skin.
    cv.paint(Some(class::SKIN));
    if !has("No_Beard") && !has("Goatee") {
        cv.ellipse(
            (cx, cy + 20.0, fw * 0.95, fh * 0.65),
            beard_col,
            0.9,
            move |_, y| y > cy + 12.0,
        );
    }
    if has("Goatee") {
        cv.ellipse((cx, cy + fh - 8.0, 13.0, 12.0), beard_col, 0.95, |_, _| {
            true
        });
    }
    if has("5_o_Clock_Shadow") {
        cv.paint(None);
        cv.ellipse(
            (cx, cy + 20.0, fw * 0.92, fh * 0.62),
            [0.15, 0.15, 0.2],
            0.45,
            move |_, y| y > cy + 10.0,
        );
    }
    if has("Sideburns") {
        cv.paint(Some(class::SKIN));
        for s in [-1.0f32, 1.0] {
            cv.rect(
                cx + s * (fw - 3.0) - 7.0,
                cy - 20.0,
                cx + s * (fw - 3.0) + 7.0,
                cy + 14.0,
                beard_col,
                0.95,
            );
        }
    }
}

/// Hair on top (with bangs, a receding hairline, waves or strands), a
/// shine on a bald head.
fn hair_on_top(cv: &mut Canvas, f: &Face) {
    let (cx, cy, fw, fh, hair) = (f.cx, f.cy, f.fw, f.fh, f.hair);
    let has = |name: &str| f.has(name);
    if f.idn.bald {
        cv.paint(None);
        cv.ellipse(
            (cx - 10.0, cy - fh * 0.7, 14.0, 8.0),
            [1.0, 1.0, 1.0],
            0.5,
            |_, _| true,
        );
        return;
    }
    cv.paint(Some(class::HAIR));
    let top = cy - fh * if has("Receding_Hairline") { 0.78 } else { 0.42 };
    let (ecx, ecy, erx, ery) = (cx, cy - fh * 0.55, fw + 4.0, fh * 0.6);
    cv.ellipse((ecx, ecy, erx, ery), hair, 1.0, move |_, y| y < top);
    let bangs = has("Bangs").then_some((cx - fw * 0.8, top - 4.0, cx + fw * 0.8, cy - fh * 0.28));
    if let Some((x0, y0, x1, y1)) = bangs {
        cv.rect(x0, y0, x1, y1, hair, 1.0);
    }
    cv.paint(None);
    cv.fill(
        (ecx - erx, ecy - ery, ecx + erx, cy),
        streak_colour(hair),
        0.9,
        |x, y| {
            let on_top = ((x - ecx) / erx).powi(2) + ((y - ecy) / ery).powi(2) <= 1.0 && y < top;
            let on_bangs =
                bangs.is_some_and(|(x0, y0, x1, y1)| x >= x0 && x < x1 && y >= y0 && y < y1);
            (on_top || on_bangs) && streak(f, x, y)
        },
    );
}

/// Eyes, brows, bags, makeup and eyeglasses.
fn eyes_and_brows(cv: &mut Canvas, f: &Face) {
    let (cx, cy, hair) = (f.cx, f.cy, f.hair);
    let has = |name: &str| f.has(name);
    let eye_y = cy - 6.0;
    let eye_dx = 16.0 * f.idn.face_w;
    let eye_ry = if has("Narrow_Eyes") { 1.5 } else { 5.0 };
    for s in [-1.0f32, 1.0] {
        let ex = cx + s * eye_dx;
        if has("Heavy_Makeup") {
            cv.paint(None);
            cv.ellipse(
                (ex, eye_y - 4.0, 10.0, 6.0),
                [0.45, 0.2, 0.6],
                0.85,
                |_, _| true,
            );
        }
        cv.paint(Some(class::EYES));
        cv.ellipse((ex, eye_y, 7.5, eye_ry), [0.97, 0.97, 0.97], 1.0, |_, _| {
            true
        });
        cv.ellipse(
            (ex, eye_y, 3.0, eye_ry.min(3.0)),
            [0.12, 0.08, 0.05],
            1.0,
            |_, _| true,
        );
        if has("Bags_Under_Eyes") {
            cv.paint(None);
            cv.ellipse(
                (ex, eye_y + 8.0, 7.5, 3.5),
                [0.35, 0.22, 0.35],
                0.75,
                |_, _| true,
            );
        }
        let brow_t = if has("Bushy_Eyebrows") { 7.5 } else { 3.5 };
        let arch = if has("Arched_Eyebrows") { 9.0 } else { 1.0 };
        let by = eye_y - 11.0;
        cv.paint(Some(class::EYEBROWS));
        cv.line(
            &[(ex - 9.0, by + 1.0), (ex, by - arch), (ex + 9.0, by + 1.0)],
            brow_t,
            scale(hair, 0.6),
            1.0,
        );
        if has("Eyeglasses") {
            cv.paint(Some(class::EYEGLASSES));
            cv.ring(ex, eye_y, 11.0, 3.5, [0.05, 0.05, 0.05]);
        }
    }
    if has("Eyeglasses") {
        cv.paint(Some(class::EYEGLASSES));
        cv.line(
            &[(cx - eye_dx + 11.0, eye_y), (cx + eye_dx - 11.0, eye_y)],
            3.0,
            [0.05, 0.05, 0.05],
            1.0,
        );
    }
}

/// The nose (big, pointy), cheeks (rosy, high cheekbones), a beauty mark
/// (attractive) and, when not young, lines on the forehead and cheeks.
fn nose_and_cheeks(cv: &mut Canvas, f: &Face) {
    let (cx, cy, fh, skin) = (f.cx, f.cy, f.fh, f.skin);
    let has = |name: &str| f.has(name);
    cv.paint(Some(class::NOSE));
    let (nose_w, nose_h) = if f.idn.big_nose {
        (12.0, 9.0)
    } else {
        (4.5, 5.0)
    };
    cv.ellipse(
        (cx, cy + 12.0, nose_w, nose_h),
        scale(skin, 0.75),
        1.0,
        |_, _| true,
    );
    if has("Pointy_Nose") {
        cv.line(
            &[(cx, cy - 2.0), (cx, cy + 18.0)],
            3.5,
            scale(skin, 0.55),
            1.0,
        );
    }
    cv.paint(None);
    for s in [-1.0f32, 1.0] {
        if has("High_Cheekbones") {
            cv.ellipse(
                (cx + s * 24.0, cy + 1.0, 8.0, 4.0),
                [1.0, 0.97, 0.9],
                0.6,
                |_, _| true,
            );
        }
        if has("Rosy_Cheeks") {
            cv.ellipse(
                (cx + s * 22.0, cy + 13.0, 11.0, 7.0),
                [0.95, 0.3, 0.4],
                0.9,
                |_, _| true,
            );
        }
        if !f.idn.young {
            // Nasolabial folds.
            cv.line(
                &[(cx + s * 10.0, cy + 15.0), (cx + s * 18.0, cy + 32.0)],
                4.0,
                scale(skin, 0.5),
                1.0,
            );
        }
    }
    if !f.idn.young {
        for k in 0..2 {
            let y = cy - fh * 0.4 + k as f32 * 6.0;
            cv.line(
                &[(cx - 16.0, y), (cx + 16.0, y)],
                3.0,
                scale(skin, 0.55),
                1.0,
            );
        }
    }
    if has("Attractive") {
        cv.ellipse(
            (cx + 21.0, cy + 24.0, 3.5, 3.5),
            [0.2, 0.1, 0.05],
            1.0,
            |_, _| true,
        );
    }
}

/// The mouth: a smile curves up; an open mouth shows a dark inside; lips, lipstick, mustache.
fn mouth(cv: &mut Canvas, f: &Face) {
    let (cx, cy, hair, skin) = (f.cx, f.cy, f.hair, f.skin);
    let has = |name: &str| f.has(name);
    let my = cy + 28.0;
    let lip = if has("Wearing_Lipstick") {
        [0.85, 0.05, 0.12]
    } else {
        scale(skin, 0.7)
    };
    let open = has("Mouth_Slightly_Open");
    let smile = has("Smiling");
    let mw = if smile { 16.0 } else { 11.0 };
    if open {
        cv.paint(Some(class::MOUTH));
        cv.ellipse(
            (cx, my + 1.0, mw * 0.8, if smile { 6.0 } else { 4.5 }),
            [0.25, 0.05, 0.05],
            1.0,
            |_, _| true,
        );
        if smile {
            cv.rect(
                cx - mw * 0.6,
                my - 2.0,
                cx + mw * 0.6,
                my + 1.0,
                [0.97, 0.97, 0.95],
                1.0,
            );
        }
    }
    let curve = if smile { 8.0 } else { 0.0 };
    let lip_t = if has("Big_Lips") { 8.0 } else { 3.0 };
    cv.paint(Some(class::LIPS));
    cv.line(
        &[
            (cx - mw, my - curve),
            (cx - mw / 2.0, my + curve * 0.3),
            (cx, my + curve * 0.5),
            (cx + mw / 2.0, my + curve * 0.3),
            (cx + mw, my - curve),
        ],
        lip_t,
        lip,
        1.0,
    );
    if has("Mustache") {
        cv.paint(Some(class::SKIN));
        cv.line(
            &[(cx - 13.0, my - 7.0), (cx, my - 9.0), (cx + 13.0, my - 7.0)],
            6.0,
            scale(hair, 0.4),
            1.0,
        );
    }
}

/// Hat (a crown and brim high on the head, so that the hair below it
/// shows), necktie (with a white collar) and necklace, on the neck just
/// below the chin.
fn hat_and_neckwear(cv: &mut Canvas, f: &Face, r: &mut ChaCha8Rng) {
    let (cx, cy, fw, fh) = (f.cx, f.cy, f.fw, f.fh);
    let has = |name: &str| f.has(name);
    // Hat, necktie and necklace count as others.
    cv.paint(Some(class::OTHERS));
    if has("Wearing_Hat") {
        let hat = [
            r.random_range(0.0..0.6),
            r.random_range(0.0..0.6),
            r.random_range(0.2..0.8),
        ];
        cv.rect(
            cx - fw * 0.8,
            cy - fh - 22.0,
            cx + fw * 0.8,
            cy - fh * 0.8,
            hat,
            1.0,
        );
        cv.rect(
            cx - fw - 10.0,
            cy - fh * 0.9,
            cx + fw + 10.0,
            cy - fh * 0.76,
            scale(hat, 0.75),
            1.0,
        );
    }
    let neck_y = cy + fh;
    if has("Wearing_Necktie") {
        for s in [-1.0f32, 1.0] {
            cv.line(
                &[(cx + s * 15.0, neck_y + 2.0), (cx + s * 3.0, neck_y + 12.0)],
                5.0,
                [0.97, 0.97, 0.97],
                1.0,
            );
        }
        cv.rect(
            cx - 6.0,
            neck_y + 6.0,
            cx + 6.0,
            218.0,
            [0.7, 0.05, 0.1],
            1.0,
        );
    }
    if has("Wearing_Necklace") {
        cv.line(
            &[
                (cx - 15.0, neck_y + 2.0),
                (cx, neck_y + 9.0),
                (cx + 15.0, neck_y + 2.0),
            ],
            4.0,
            [1.0, 0.85, 0.2],
            1.0,
        );
        cv.ellipse(
            (cx, neck_y + 11.0, 4.0, 4.0),
            [1.0, 0.85, 0.2],
            1.0,
            |_, _| true,
        );
    }
}

/// Image ids `000001.jpg`, ... and their labels/identities for `n` demo faces.
pub fn labels(n: usize, seed: u64) -> Vec<(String, Labels, i32)> {
    (0..n)
        .map(|i| {
            let id = i / PER_IDENTITY;
            let idn = identity(seed, id);
            let mut r = image_rng(seed, i);
            (
                format!("{:06}.jpg", i + 1),
                sample_labels(&idn, &mut r),
                id as i32 + 1,
            )
        })
        .collect()
}

fn image_rng(seed: u64, i: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed.wrapping_mul(6_364_136_223_846_793_005) ^ (i as u64 + 1))
}

/// The folder of the demo faces' class maps (grey PNGs of [`class`] ids,
/// 178×218, named like the images) beside `img_align_celeba/`.
pub const MASK_DIR: &str = "demo_masks";

/// Demo face `i` of `seed`: its image, its class map (178×218 ids of
/// [`class`], row-major) and its labels, exactly as [`write_layout`] draws it.
pub fn face(seed: u64, i: usize) -> (RgbImage, Vec<u8>, Labels) {
    let id = i / PER_IDENTITY;
    let idn = identity(seed, id);
    let mut r = image_rng(seed, i);
    let l = sample_labels(&idn, &mut r);
    let (img, labels) = render(&idn, l, &mut r);
    (img, labels, l)
}

/// Writes `n` demo faces in CelebA's layout under `dir`, and their class
/// maps under `dir/demo_masks/`.
pub fn write_layout(dir: &Path, n: usize, seed: u64, quiet: bool) -> Result<()> {
    let img_dir = dir.join("img_align_celeba");
    std::fs::create_dir_all(&img_dir).with_context(|| format!("creating {}", img_dir.display()))?;
    let mask_dir = dir.join(MASK_DIR);
    std::fs::create_dir_all(&mask_dir)
        .with_context(|| format!("creating {}", mask_dir.display()))?;
    let rows = labels(n, seed);
    let pb = crate::progress::bar(n as u64, "faces", quiet);
    rows.par_iter()
        .enumerate()
        .try_for_each(|(i, (name, l, id))| -> Result<()> {
            let idn = identity(seed, (*id - 1) as usize);
            let mut r = image_rng(seed, i);
            let _ = sample_labels(&idn, &mut r); // keep the stream aligned with `labels`
            let (img, labels) = render(&idn, *l, &mut r);
            std::fs::write(img_dir.join(name), encode_jpeg(&img, 92)?)?;
            let mask = image::GrayImage::from_raw(WIDTH, HEIGHT, labels)
                .context("demo label canvas size")?;
            mask.save(mask_dir.join(name.replace(".jpg", ".png")))?;
            pb.inc(1);
            Ok(())
        })?;
    pb.finish_and_clear();
    let attr_rows: Vec<(String, Labels)> = rows.iter().map(|(n, l, _)| (n.clone(), *l)).collect();
    let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("list_attr_celeba.txt"))?);
    celeba::write_attributes(&mut f, &attr_rows)?;
    f.flush()?;
    // The official split's proportions: 162,770 / 19,867 / 19,962 of 202,599.
    let n_train = (n as f64 * 162_770.0 / 202_599.0).round() as usize;
    let n_val = (n as f64 * 19_867.0 / 202_599.0).round() as usize;
    let mut part =
        std::io::BufWriter::new(std::fs::File::create(dir.join("list_eval_partition.txt"))?);
    let mut ident =
        std::io::BufWriter::new(std::fs::File::create(dir.join("identity_CelebA.txt"))?);
    for (i, (name, _, id)) in rows.iter().enumerate() {
        let p = if i < n_train {
            0
        } else if i < n_train + n_val {
            1
        } else {
            2
        };
        write!(part, "{name} {p}\r\n")?;
        write!(ident, "{name} {id}\r\n")?;
    }
    part.flush()?;
    ident.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_long_tailed() {
        let a1 = labels(2000, 7);
        assert_eq!(a1, labels(2000, 7));
        let rate =
            |name: &str| a1.iter().filter(|r| celeba::label(r.1, a(name))).count() as f64 / 2000.0;
        assert!(rate("No_Beard") > 0.7, "{}", rate("No_Beard"));
        assert!(rate("Bald") < 0.06);
        assert!((rate("Smiling") - 0.48).abs() < 0.06);
        // At most one hair colour, never with Bald.
        for (_, l, _) in &a1 {
            let hair = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair"]
                .iter()
                .filter(|h| celeba::label(*l, a(h)))
                .count();
            assert!(hair <= 1);
            assert!(!(celeba::label(*l, a("Bald")) && hair > 0));
        }
    }

    #[test]
    fn class_maps_are_deterministic_and_follow_eyeglasses_and_an_open_mouth() {
        let (img, m, _) = face(3, 5);
        let (img2, m2, _) = face(3, 5);
        assert_eq!((img, m.clone()), (img2, m2));
        assert_eq!(m.len(), (WIDTH * HEIGHT) as usize);
        let (mut glasses, mut open) = ([0; 2], [0; 2]);
        for i in 0..300 {
            let (_, m, l) = face(11, i);
            let has = |c: u8| m.contains(&c);
            let g = celeba::label(l, a("Eyeglasses"));
            let o = celeba::label(l, a("Mouth_Slightly_Open"));
            assert_eq!(
                has(class::EYEGLASSES),
                g,
                "face {i}: eyeglasses pixels vs label"
            );
            assert_eq!(has(class::MOUTH), o, "face {i}: mouth pixels vs label");
            glasses[g as usize] += 1;
            open[o as usize] += 1;
            // Every face has skin, eyes, a nose and lips; others around it.
            for c in [
                class::SKIN,
                class::EYES,
                class::NOSE,
                class::LIPS,
                class::OTHERS,
            ] {
                assert!(has(c), "face {i}: no class {c}");
            }
            assert!(m.iter().all(|&c| c <= class::HAIR));
        }
        // Both kinds of face were drawn.
        assert!(
            glasses.iter().all(|&n| n > 0) && open.iter().all(|&n| n > 0),
            "{glasses:?} {open:?}"
        );
    }
}
