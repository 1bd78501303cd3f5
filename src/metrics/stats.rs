//! Statistics for telling whether one classifier beats another on the same
//! test faces:
//!
//! - [`bootstrap`]: the percentile bootstrap interval of a statistic over
//!   test faces resampled with replacement (Efron & Tibshirani 1993, Sec. 13.3).
//! - [`paired_bootstrap`]: the same for the difference of two classifiers,
//!   both measured on each resample, so the faces are resampled together.
//! - [`paired_permutation`]: the two-sided p-value of that difference, from
//!   swapping the two classifiers' predictions on randomly chosen faces
//!   (a paired permutation test; exact, over every swap, when there are few
//!   faces on which the two disagree).
//! - [`holm`]: Holm's (1979) step-down correction for many comparisons.
//!
//! Reference values: `tests/fixtures/stats/make_reference.py` (numpy,
//! scipy.stats.permutation_test / bootstrap, statsmodels multipletests).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

pub fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// Sample standard deviation (n − 1 in the denominator); NaN below 2 values.
pub fn std(x: &[f64]) -> f64 {
    if x.len() < 2 {
        return f64::NAN;
    }
    let m = mean(x);
    (x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (x.len() - 1) as f64).sqrt()
}

/// The `q`-th percentile (0–100) with linear interpolation between order
/// statistics (numpy's default method).
pub fn percentile(x: &[f64], q: f64) -> f64 {
    let mut s: Vec<f64> = x.to_vec();
    s.sort_by(f64::total_cmp);
    percentile_sorted(&s, q)
}

fn percentile_sorted(s: &[f64], q: f64) -> f64 {
    if s.is_empty() {
        return f64::NAN;
    }
    let pos = q / 100.0 * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}

/// Holm's step-down adjusted p-values, in the input order.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut out = vec![0.0; m];
    let mut running = 0.0f64;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((m - rank) as f64 * p[i]).min(1.0));
        out[i] = running;
    }
    out
}

/// A point estimate with a 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
}

/// `reps` resamples of `0..n` with replacement, seeded.
fn resamples(n: usize, reps: usize, seed: u64) -> impl Iterator<Item = Vec<usize>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..reps).map(move |_| (0..n).map(|_| rng.random_range(0..n)).collect())
}

fn interval(estimate: f64, mut draws: Vec<f64>) -> Interval {
    draws.retain(|v| v.is_finite());
    draws.sort_by(f64::total_cmp);
    Interval {
        estimate,
        low: percentile_sorted(&draws, 2.5),
        high: percentile_sorted(&draws, 97.5),
    }
}

/// The percentile bootstrap 95% interval of `stat` over `n` test faces.
/// `stat` gets the face indices of one sample (with repeats); resamples on
/// which it is undefined (NaN: no positive face, say) are left out.
pub fn bootstrap(n: usize, reps: usize, seed: u64, stat: impl Fn(&[usize]) -> f64) -> Interval {
    let all: Vec<usize> = (0..n).collect();
    let draws = resamples(n, reps, seed).map(|idx| stat(&idx)).collect();
    interval(stat(&all), draws)
}

/// The percentile bootstrap 95% interval of `a − b`, both measured on the
/// same resampled faces.
pub fn paired_bootstrap(
    n: usize,
    reps: usize,
    seed: u64,
    a: impl Fn(&[usize]) -> f64,
    b: impl Fn(&[usize]) -> f64,
) -> Interval {
    let all: Vec<usize> = (0..n).collect();
    let draws = resamples(n, reps, seed)
        .map(|idx| a(&idx) - b(&idx))
        .collect();
    interval(a(&all) - b(&all), draws)
}

/// The two-sided p-value of a paired difference by permutation: `diff`
/// gets a mask saying on which faces the two classifiers' predictions are
/// swapped and returns the difference then. Only faces where the two
/// predict differently (`differ`) change anything; when those are at most
/// log2(`reps`) the test is exact over every swap (as scipy's
/// `permutation_test` with `n_resamples=inf`), otherwise it draws `reps`
/// random swaps and returns (1 + hits) / (1 + reps).
pub fn paired_permutation(
    differ: &[bool],
    reps: usize,
    seed: u64,
    diff: impl Fn(&[bool]) -> f64,
) -> f64 {
    let n = differ.len();
    let observed = diff(&vec![false; n]);
    // scipy's tolerance for ties with the observed statistic.
    let gamma = observed.abs() * 1e-14;
    let at_least = |d: f64| d.abs() >= observed.abs() - gamma;
    let free: Vec<usize> = (0..n).filter(|&i| differ[i]).collect();
    let k = free.len();
    if k < usize::BITS as usize && (1usize << k) <= reps.max(1) {
        let mut hits = 0usize;
        let mut mask = vec![false; n];
        for bits in 0..(1usize << k) {
            for (j, &i) in free.iter().enumerate() {
                mask[i] = bits >> j & 1 == 1;
            }
            if at_least(diff(&mask)) {
                hits += 1;
            }
        }
        return hits as f64 / (1usize << k) as f64;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut mask = vec![false; n];
    let mut hits = 0usize;
    for _ in 0..reps {
        for &i in &free {
            mask[i] = rng.random::<bool>();
        }
        if at_least(diff(&mask)) {
            hits += 1;
        }
    }
    (1 + hits) as f64 / (1 + reps) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    // The plain definitions scipy's side uses (both classes present).
    /// Accuracy of `pred` against `truth` on the faces `idx` (with repeats).
    fn accuracy_on(pred: &[bool], truth: &[bool], idx: &[usize]) -> f64 {
        idx.iter().filter(|&&i| pred[i] == truth[i]).count() as f64 / idx.len() as f64
    }

    /// Balanced accuracy, (TPR + TNR) / 2, on the faces `idx`; NaN when they
    /// hold no positive or no negative face.
    fn balanced_accuracy_on(pred: &[bool], truth: &[bool], idx: &[usize]) -> f64 {
        let (mut tp, mut pos, mut tn, mut neg) = (0usize, 0usize, 0usize, 0usize);
        for &i in idx {
            if truth[i] {
                pos += 1;
                tp += pred[i] as usize;
            } else {
                neg += 1;
                tn += !pred[i] as usize;
            }
        }
        if pos == 0 || neg == 0 {
            return f64::NAN;
        }
        0.5 * (tp as f64 / pos as f64 + tn as f64 / neg as f64)
    }

    fn reference() -> serde_json::Value {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/stats/reference.json"
        ))
        .unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn floats(v: &serde_json::Value) -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    }

    fn bools(v: &serde_json::Value) -> Vec<bool> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_bool().unwrap())
            .collect()
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn mean_std_and_percentiles_match_numpy() {
        let r = reference();
        let x = floats(&r["std"]["x"]);
        assert!(close(mean(&x), r["std"]["mean"].as_f64().unwrap(), 1e-15));
        assert!(close(std(&x), r["std"]["std"].as_f64().unwrap(), 1e-15));
        let y = floats(&r["percentile"]["x"]);
        for (q, want) in floats(&r["percentile"]["q"])
            .into_iter()
            .zip(floats(&r["percentile"]["values"]))
        {
            assert!(close(percentile(&y, q), want, 1e-12), "q {q}");
        }
    }

    #[test]
    fn holm_matches_statsmodels() {
        let r = reference();
        let got = holm(&floats(&r["holm"]["p"]));
        for (g, w) in got.iter().zip(floats(&r["holm"]["adjusted"])) {
            assert!(close(*g, w, 1e-15), "{got:?}");
        }
    }

    #[test]
    fn exact_paired_permutation_matches_scipy() {
        let r = &reference()["permutation"];
        let (t, a, b) = (bools(&r["truth"]), bools(&r["pred_a"]), bools(&r["pred_b"]));
        let differ: Vec<bool> = a.iter().zip(&b).map(|(x, y)| x != y).collect();
        let swapped = |mask: &[bool]| -> (Vec<bool>, Vec<bool>) {
            let sa = (0..t.len())
                .map(|i| if mask[i] { b[i] } else { a[i] })
                .collect();
            let sb = (0..t.len())
                .map(|i| if mask[i] { a[i] } else { b[i] })
                .collect();
            (sa, sb)
        };
        let all: Vec<usize> = (0..t.len()).collect();
        let acc = |mask: &[bool]| {
            let (sa, sb) = swapped(mask);
            accuracy_on(&sa, &t, &all) - accuracy_on(&sb, &t, &all)
        };
        let bal = |mask: &[bool]| {
            let (sa, sb) = swapped(mask);
            balanced_accuracy_on(&sa, &t, &all) - balanced_accuracy_on(&sb, &t, &all)
        };
        assert!(close(
            acc(&vec![false; t.len()]),
            r["accuracy_diff"].as_f64().unwrap(),
            1e-12
        ));
        assert!(close(
            bal(&vec![false; t.len()]),
            r["balanced_accuracy_diff"].as_f64().unwrap(),
            1e-12
        ));
        let p = paired_permutation(&differ, 10_000, 0, acc);
        assert!(close(p, r["accuracy_p"].as_f64().unwrap(), 1e-12), "{p}");
        let p = paired_permutation(&differ, 10_000, 0, bal);
        assert!(
            close(p, r["balanced_accuracy_p"].as_f64().unwrap(), 1e-12),
            "{p}"
        );
        // Too many differing faces for the exact test: the random one lands
        // near the exact value (10,000 draws: standard error about 0.005).
        let p = paired_permutation(&differ, 16, 3, acc);
        assert!(p > 0.0 && p <= 1.0);
    }

    #[test]
    fn bootstrap_intervals_agree_with_scipy() {
        let r = &reference()["bootstrap"];
        let (t, a, b) = (bools(&r["truth"]), bools(&r["pred_a"]), bools(&r["pred_b"]));
        let n = t.len();
        let ia = bootstrap(n, 20_000, 1, |idx| accuracy_on(&a, &t, idx));
        assert!(close(ia.estimate, r["accuracy_a"].as_f64().unwrap(), 1e-12));
        // Both sides are Monte Carlo (20,000 vs 100,000 resamples of 400
        // faces); their interval ends agree to within a face or two.
        assert!(
            close(ia.low, r["accuracy_a_low"].as_f64().unwrap(), 0.006),
            "{ia:?}"
        );
        assert!(
            close(ia.high, r["accuracy_a_high"].as_f64().unwrap(), 0.006),
            "{ia:?}"
        );
        let d = paired_bootstrap(
            n,
            20_000,
            1,
            |idx| accuracy_on(&a, &t, idx),
            |idx| accuracy_on(&b, &t, idx),
        );
        assert!(close(d.estimate, r["diff"].as_f64().unwrap(), 1e-12));
        assert!(
            close(d.low, r["diff_low"].as_f64().unwrap(), 0.006),
            "{d:?}"
        );
        assert!(
            close(d.high, r["diff_high"].as_f64().unwrap(), 0.006),
            "{d:?}"
        );
        // Seeded: the same interval twice.
        assert_eq!(ia, bootstrap(n, 20_000, 1, |idx| accuracy_on(&a, &t, idx)));
    }
}
