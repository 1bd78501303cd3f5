//! Which ST-GAN latent controls which attribute (issue #17's `attribute_map`
//! phase; the paper reads its latents by eye, Sec. 4.3, Fig. 5–7). ST-GAN
//! trains without labels, so a judge (a classifier trained on real faces)
//! tells what each code setting does:
//!
//! 1. val faces are encoded to [z̃, c̃];
//! 2. for every c₁ value k, c̃₁ is set to onehot(k), the faces decoded, and
//!    the judge's probability of every attribute recorded;
//! 3. every c₂ dimension is swept over `c2_values`; per attribute, the
//!    Pearson correlation and the least-squares slope of the probability
//!    against the c₂ value are recorded;
//! 4. per attribute, the "on" and "off" settings are the c₁ values with the
//!    highest and lowest positive rate (probability > 0.5), or c₂ at its
//!    largest and smallest swept value by the sign of the correlation,
//!    whichever moves the positive rate more; an attribute is `usable` when
//!    on rate − off rate ≥ `min_effect`.
//!
//! A setting is written `c1=4` (c₁ values count from 1, as in the paper's
//! figures) or `c2=1` (`c2_2=-1` for a second c₂ dimension).

use anyhow::Result;
use candle_core::Tensor;

use super::st_gan::{CodeSetting, MapOptions, set_code};
use crate::data::celeba::Labels;
use crate::data::schema;
use crate::models::st_gan::Config;

/// One row of `latent_map`: what a latent unit does to one attribute.
#[derive(Debug, Clone, PartialEq)]
pub struct LatentRow {
    /// `c1=4`, `c2` or `c2_2`.
    pub unit: String,
    pub attribute: usize,
    /// The judge's mean probability over the faces (and, for c₂, the sweep).
    pub mean_probability: f64,
    /// `mean_probability` minus that of the plain reconstruction G(E(x)).
    pub change: f64,
    /// c₂ only: Pearson r and slope of probability against the c₂ value.
    pub correlation: Option<f64>,
    pub slope: Option<f64>,
    pub n: usize,
}

/// One row of `attribute_map`.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeRow {
    pub attribute: usize,
    pub on: CodeSetting,
    pub off: CodeSetting,
    pub on_rate: f64,
    pub off_rate: f64,
    pub usable: bool,
}

/// The name of a setting (`c1=4`, `c2=1`, `c2_2=-0.5`).
pub fn setting_name(s: &CodeSetting) -> String {
    match *s {
        CodeSetting::C1(k) => format!("c1={}", k + 1),
        CodeSetting::C2 { dim, value } => format!("{}={value}", c2_unit(dim)),
    }
}

fn c2_unit(dim: usize) -> String {
    if dim == 0 {
        "c2".into()
    } else {
        format!("c2_{}", dim + 1)
    }
}

/// Parses [`setting_name`]'s output.
pub fn parse_setting(s: &str) -> Option<CodeSetting> {
    let (unit, value) = s.split_once('=')?;
    if unit == "c1" {
        let k: usize = value.parse().ok()?;
        return (k >= 1).then(|| CodeSetting::C1(k - 1));
    }
    let dim = match unit {
        "c2" => 0,
        _ => unit
            .strip_prefix("c2_")?
            .parse::<usize>()
            .ok()?
            .checked_sub(1)?,
    };
    Some(CodeSetting::C2 {
        dim,
        value: value.parse().ok()?,
    })
}

/// Pearson r and slope of y on x (None when either is constant).
pub fn pearson_slope(x: &[f64], y: &[f64]) -> (Option<f64>, Option<f64>) {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    let slope = (sxx > 0.0).then(|| sxy / sxx);
    let r = (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt());
    (r, slope)
}

/// Maps latents to attributes. `latents` are E(x) of the val faces,
/// `decode` is G in inference mode, `judge` gives per image the probability
/// of each of `attributes` (CelebA indices, in the judge's output order).
pub fn map_latents(
    cfg: &Config,
    latents: &Tensor,
    decode: impl Fn(&Tensor) -> Result<Tensor>,
    judge: impl Fn(&Tensor) -> Result<Vec<Vec<f64>>>,
    attributes: &[usize],
    opts: &MapOptions,
) -> Result<(Vec<LatentRow>, Vec<AttributeRow>)> {
    let na = attributes.len();
    let probs = |lat: &Tensor| -> Result<Vec<Vec<f64>>> { judge(&decode(lat)?) };
    let mean = |p: &[Vec<f64>], j: usize| p.iter().map(|r| r[j]).sum::<f64>() / p.len() as f64;
    let rate =
        |p: &[Vec<f64>], j: usize| p.iter().filter(|r| r[j] > 0.5).count() as f64 / p.len() as f64;
    let base = probs(latents)?;
    let n = base.len();
    let mut rows = Vec::new();
    // Per attribute: (setting, positive rate) candidates.
    let mut c1_rates: Vec<Vec<(CodeSetting, f64)>> = vec![Vec::new(); na];
    for k in 0..cfg.categorical {
        let s = CodeSetting::C1(k);
        let p = probs(&set_code(cfg, latents, &s)?)?;
        for (j, &a) in attributes.iter().enumerate() {
            let m = mean(&p, j);
            rows.push(LatentRow {
                unit: format!("c1={}", k + 1),
                attribute: a,
                mean_probability: m,
                change: m - mean(&base, j),
                correlation: None,
                slope: None,
                n,
            });
            c1_rates[j].push((s, rate(&p, j)));
        }
    }
    let lo = opts.c2_values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = opts
        .c2_values
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    // Per attribute and c₂ dimension: (r, rate at lo, rate at hi).
    let mut c2_stats: Vec<Vec<(Option<f64>, f64, f64)>> = vec![Vec::new(); na];
    for dim in 0..cfg.continuous {
        let mut xs = Vec::new();
        let mut ys: Vec<Vec<f64>> = vec![Vec::new(); na];
        let (mut rate_lo, mut rate_hi) = (vec![0.0; na], vec![0.0; na]);
        for &v in &opts.c2_values {
            let p = probs(&set_code(cfg, latents, &CodeSetting::C2 { dim, value: v })?)?;
            xs.extend(std::iter::repeat_n(v, p.len()));
            for j in 0..na {
                ys[j].extend(p.iter().map(|r| r[j]));
                if v == lo {
                    rate_lo[j] = rate(&p, j);
                }
                if v == hi {
                    rate_hi[j] = rate(&p, j);
                }
            }
        }
        for (j, &a) in attributes.iter().enumerate() {
            let (r, slope) = pearson_slope(&xs, &ys[j]);
            let m = ys[j].iter().sum::<f64>() / ys[j].len() as f64;
            rows.push(LatentRow {
                unit: c2_unit(dim),
                attribute: a,
                mean_probability: m,
                change: m - mean(&base, j),
                correlation: r,
                slope,
                n: ys[j].len(),
            });
            c2_stats[j].push((r, rate_lo[j], rate_hi[j]));
        }
    }
    let out = choose_settings(attributes, &c1_rates, &c2_stats, (lo, hi), opts.min_effect);
    Ok((rows, out))
}

/// Per attribute, the on/off code settings with the largest difference in
/// positive rate: the c₁ values with the highest and lowest rate, or a c₂
/// dimension at its extremes (`lo`, `hi`), oriented by the sign of its correlation.
fn choose_settings(
    attributes: &[usize],
    c1_rates: &[Vec<(CodeSetting, f64)>],
    c2_stats: &[Vec<(Option<f64>, f64, f64)>],
    (lo, hi): (f64, f64),
    min_effect: f64,
) -> Vec<AttributeRow> {
    let mut out = Vec::with_capacity(attributes.len());
    for (j, &a) in attributes.iter().enumerate() {
        let mut best: Option<(CodeSetting, CodeSetting, f64, f64)> = None;
        let mut consider = |on: CodeSetting, off: CodeSetting, on_rate: f64, off_rate: f64| {
            if best.is_none_or(|b| on_rate - off_rate > b.2 - b.3) {
                best = Some((on, off, on_rate, off_rate));
            }
        };
        let c1 = &c1_rates[j];
        if let (Some(on), Some(off)) = (
            c1.iter().max_by(|x, y| x.1.total_cmp(&y.1)),
            c1.iter().min_by(|x, y| x.1.total_cmp(&y.1)),
        ) {
            consider(on.0, off.0, on.1, off.1);
        }
        for (dim, &(r, rate_lo, rate_hi)) in c2_stats[j].iter().enumerate() {
            let at = |value| CodeSetting::C2 { dim, value };
            if r.unwrap_or(0.0) >= 0.0 {
                consider(at(hi), at(lo), rate_hi, rate_lo);
            } else {
                consider(at(lo), at(hi), rate_lo, rate_hi);
            }
        }
        if let Some((on, off, on_rate, off_rate)) = best {
            out.push(AttributeRow {
                attribute: a,
                on,
                off,
                on_rate,
                off_rate,
                usable: on_rate - off_rate >= min_effect,
            });
        }
    }
    out
}

/// The code settings that turn `source` labels into `target`, from the
/// attribute map (`(attribute, on, off, usable)`); `row` names the plan row
/// in errors.
pub fn settings_for(
    row: i64,
    source: Labels,
    target: Labels,
    map: &[(usize, CodeSetting, CodeSetting, bool)],
) -> std::result::Result<Vec<CodeSetting>, String> {
    let changed = source ^ target;
    let mut out: Vec<(usize, CodeSetting)> = Vec::new();
    for a in (0..schema::N_ATTRIBUTES).filter(|a| changed >> a & 1 == 1) {
        let Some(&(_, on, off, _)) = map.iter().find(|m| m.0 == a && m.3) else {
            let usable: Vec<&str> = map
                .iter()
                .filter(|m| m.3)
                .map(|m| schema::ATTRIBUTES[m.0])
                .collect();
            return Err(format!(
                "plan row {row} changes {}, which no ST-GAN latent controls (usable: {}); give the balance stage attributes = [{}]",
                schema::ATTRIBUTES[a],
                if usable.is_empty() {
                    "none".to_string()
                } else {
                    usable.join(", ")
                },
                usable
                    .iter()
                    .map(|u| format!("\"{u}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        let s = if target >> a & 1 == 1 { on } else { off };
        let unit = |s: &CodeSetting| match s {
            CodeSetting::C1(_) => usize::MAX,
            CodeSetting::C2 { dim, .. } => *dim,
        };
        if let Some((b, t)) = out.iter().find(|(_, t)| unit(t) == unit(&s) && *t != s) {
            return Err(format!(
                "plan row {row} needs {} for {} and {} for {}",
                setting_name(t),
                schema::ATTRIBUTES[*b],
                setting_name(&s),
                schema::ATTRIBUTES[a]
            ));
        }
        out.push((a, s));
    }
    let mut settings: Vec<CodeSetting> = Vec::new();
    for (_, s) in out {
        if !settings.contains(&s) {
            settings.push(s);
        }
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn a_stub_where_c2_drives_one_attribute_is_mapped_to_c2() {
        // Stub G: every pixel equals c₂. Stub judge: attribute 0's
        // probability is (pixel + 1) / 2, attribute 1's is 0.5 whatever
        // the image (nothing controls it).
        let cfg = Config::tiny();
        let dev = Device::Cpu;
        let lat = Tensor::zeros((8, cfg.latent_dim()), DType::F32, &dev).unwrap();
        let c2_col = cfg.latent_dim() - 1;
        let decode = |l: &Tensor| -> Result<Tensor> {
            let c2 = l.narrow(1, c2_col, 1)?;
            Ok(c2
                .reshape((l.dim(0)?, 1, 1, 1))?
                .broadcast_as((l.dim(0)?, 3, 2, 2))?
                .contiguous()?)
        };
        let judge = |x: &Tensor| -> Result<Vec<Vec<f64>>> {
            let v = x.flatten_from(1)?.mean(1)?.to_vec1::<f32>()?;
            Ok(v.iter()
                .map(|&p| vec![(p as f64 + 1.0) / 2.0, 0.5])
                .collect())
        };
        let (rows, map) =
            map_latents(&cfg, &lat, decode, judge, &[31, 15], &MapOptions::default()).unwrap();
        let c2 = rows
            .iter()
            .find(|r| r.unit == "c2" && r.attribute == 31)
            .unwrap();
        assert!(c2.correlation.unwrap() > 0.9, "{c2:?}");
        assert!((c2.slope.unwrap() - 0.5).abs() < 1e-6);
        assert_eq!(c2.n, 8 * 5);
        assert_eq!(map[0].on, CodeSetting::C2 { dim: 0, value: 1.0 });
        assert_eq!(
            map[0].off,
            CodeSetting::C2 {
                dim: 0,
                value: -1.0
            }
        );
        assert!(map[0].usable && map[0].on_rate == 1.0 && map[0].off_rate == 0.0);
        assert!(!map[1].usable, "{:?}", map[1]);
        // Ten c₁ rows and one c₂ row per attribute.
        assert_eq!(rows.len(), 2 * 11);
    }

    #[test]
    fn settings_parse_back_and_plan_rows_get_their_codes() {
        for s in [
            CodeSetting::C1(3),
            CodeSetting::C2 {
                dim: 0,
                value: -1.0,
            },
            CodeSetting::C2 { dim: 1, value: 0.5 },
        ] {
            assert_eq!(parse_setting(&setting_name(&s)), Some(s));
        }
        assert_eq!(setting_name(&CodeSetting::C1(3)), "c1=4");
        assert_eq!(parse_setting("c1=0"), None);
        let male = schema::attribute_index("Male").unwrap();
        let smile = schema::attribute_index("Smiling").unwrap();
        let glasses = schema::attribute_index("Eyeglasses").unwrap();
        let bangs = schema::attribute_index("Bangs").unwrap();
        let c2 = |v| CodeSetting::C2 { dim: 0, value: v };
        let map = vec![
            (male, CodeSetting::C1(3), CodeSetting::C1(0), true),
            (smile, c2(1.0), c2(-1.0), true),
            (bangs, CodeSetting::C1(5), CodeSetting::C1(1), true),
            (glasses, CodeSetting::C1(2), CodeSetting::C1(1), false),
        ];
        let s = settings_for(1, 0, (1 << male) | (1 << smile), &map).unwrap();
        assert_eq!(s, vec![CodeSetting::C1(3), c2(1.0)]);
        let e = settings_for(123, 0, 1 << glasses, &map).unwrap_err();
        assert_eq!(
            e,
            "plan row 123 changes Eyeglasses, which no ST-GAN latent controls (usable: Male, Smiling, Bangs); give the balance stage attributes = [\"Male\", \"Smiling\", \"Bangs\"]"
        );
        let e = settings_for(123, 0, (1 << male) | (1 << bangs), &map).unwrap_err();
        assert_eq!(e, "plan row 123 needs c1=6 for Bangs and c1=4 for Male");
        assert!(
            settings_for(5, 1 << male, 1 << male, &map)
                .unwrap()
                .is_empty()
        );
    }
}
