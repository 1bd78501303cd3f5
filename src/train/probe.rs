//! Linear probe: one L2-regularised logistic regression per attribute
//! (`linfa-logistic`, L-BFGS) on frozen features, a fast CPU baseline for
//! the downstream classifiers of Liu et al. Sec. V-D. Features are
//! standardised with the training rows' mean and deviation; the
//! regularisation strength is chosen per attribute by accuracy on the real
//! `val` split, as the CNNs choose their epoch.

use anyhow::{Context, Result};
use linfa::prelude::*;
use linfa_logistic::{FittedLogisticRegression, LogisticRegression};
use ndarray::{Array1, Array2, Axis};

/// Probe settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// L2 strengths tried per attribute (linfa's `alpha`).
    pub alphas: Vec<f64>,
    pub max_iterations: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            alphas: vec![0.01, 0.1, 1.0, 10.0],
            max_iterations: 200,
        }
    }
}

enum Model {
    Logistic(FittedLogisticRegression<f64, bool>),
    /// Training rows of one class only: predict its frequency.
    Constant(f64),
}

/// One fitted probe per attribute.
pub struct Probe {
    mean: Array1<f64>,
    scale: Array1<f64>,
    models: Vec<Model>,
    /// The chosen `alpha` per attribute (None where the probe is constant).
    pub alphas: Vec<Option<f64>>,
    /// Mean val accuracy over attributes, as the paper averages it.
    pub val_accuracy: f64,
}

fn matrix(rows: &[Vec<f32>]) -> Result<Array2<f64>> {
    let d = rows.first().map(Vec::len).unwrap_or(0);
    let flat: Vec<f64> = rows
        .iter()
        .flat_map(|r| r.iter().map(|&v| v as f64))
        .collect();
    Array2::from_shape_vec((rows.len(), d), flat).context("feature rows differ in length")
}

impl Probe {
    fn standardise(&self, x: &Array2<f64>) -> Array2<f64> {
        (x - &self.mean) / &self.scale
    }

    /// Probabilities (rows × attributes).
    pub fn predict(&self, features: &[Vec<f32>]) -> Result<Vec<Vec<f64>>> {
        let x = self.standardise(&matrix(features)?);
        let cols: Vec<Array1<f64>> = self
            .models
            .iter()
            .map(|m| match m {
                Model::Logistic(f) => p_true(f, &x),
                Model::Constant(p) => Array1::from_elem(x.nrows(), *p),
            })
            .collect();
        Ok((0..x.nrows())
            .map(|r| cols.iter().map(|c| c[r]).collect())
            .collect())
    }
}

/// P(attribute present): linfa reports the probability of whichever class it
/// took as "positive" (it depends on the order of the training labels).
fn p_true(m: &FittedLogisticRegression<f64, bool>, x: &Array2<f64>) -> Array1<f64> {
    let p = m.predict_probabilities(x);
    if m.labels().pos.class {
        p
    } else {
        p.mapv(|v| 1.0 - v)
    }
}

fn accuracy(probs: &Array1<f64>, truth: &[bool]) -> f64 {
    let ok = probs
        .iter()
        .zip(truth)
        .filter(|(p, t)| (**p > 0.5) == **t)
        .count();
    ok as f64 / truth.len().max(1) as f64
}

/// Fits one probe per label column of `train_y` (rows × attributes).
pub fn fit(
    train_x: &[Vec<f32>],
    train_y: &[Vec<bool>],
    val_x: &[Vec<f32>],
    val_y: &[Vec<bool>],
    opts: &Options,
    mut progress: impl FnMut(),
) -> Result<Probe> {
    let x = matrix(train_x)?;
    let mean = x.mean_axis(Axis(0)).context("no training rows")?;
    let scale = x
        .std_axis(Axis(0), 0.0)
        .mapv(|s| if s > 1e-12 { s } else { 1.0 });
    let mut probe = Probe {
        mean,
        scale,
        models: Vec::new(),
        alphas: Vec::new(),
        val_accuracy: 0.0,
    };
    let xs = probe.standardise(&x);
    let vx = probe.standardise(&matrix(val_x)?);
    let k = train_y.first().map(Vec::len).unwrap_or(0);
    let mut val_sum = 0.0;
    for a in 0..k {
        let y: Array1<bool> = train_y.iter().map(|r| r[a]).collect();
        let vy: Vec<bool> = val_y.iter().map(|r| r[a]).collect();
        let positives = y.iter().filter(|&&v| v).count();
        if positives == 0 || positives == y.len() {
            let p = positives as f64 / y.len().max(1) as f64;
            val_sum += accuracy(&Array1::from_elem(vx.nrows(), p), &vy);
            probe.models.push(Model::Constant(p));
            probe.alphas.push(None);
            progress();
            continue;
        }
        let data = Dataset::new(xs.clone(), y);
        let mut best: Option<(f64, f64, FittedLogisticRegression<f64, bool>)> = None;
        for &alpha in &opts.alphas {
            let m = LogisticRegression::default()
                .alpha(alpha)
                .max_iterations(opts.max_iterations)
                .fit(&data)
                .with_context(|| format!("logistic regression for attribute {a}, alpha {alpha}"))?;
            let acc = accuracy(&p_true(&m, &vx), &vy);
            if best.as_ref().is_none_or(|b| acc > b.0) {
                best = Some((acc, alpha, m));
            }
        }
        let (acc, alpha, m) = best.context("no alpha to try")?;
        val_sum += acc;
        probe.models.push(Model::Logistic(m));
        probe.alphas.push(Some(alpha));
        progress();
    }
    probe.val_accuracy = val_sum / k.max(1) as f64;
    Ok(probe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Two attributes linear in 5-d Gaussian features plus a constant one:
    /// the probe recovers the first two and predicts the constant one.
    #[test]
    fn probe_learns_linear_attributes() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut make = |n: usize| {
            let x: Vec<Vec<f32>> = (0..n)
                .map(|_| (0..5).map(|_| rng.random_range(-1.0f32..1.0)).collect())
                .collect();
            let y: Vec<Vec<bool>> = x
                .iter()
                .map(|r| vec![r[0] + 0.5 * r[1] > 0.1, r[3] < -0.2, true])
                .collect();
            (x, y)
        };
        let (tx, ty) = make(400);
        let (vx, vy) = make(200);
        let probe = fit(&tx, &ty, &vx, &vy, &Options::default(), || {}).unwrap();
        assert!(probe.val_accuracy > 0.95, "{}", probe.val_accuracy);
        assert_eq!(probe.alphas[2], None);
        let p = probe.predict(&vx).unwrap();
        let acc0 = p
            .iter()
            .zip(&vy)
            .filter(|(p, y)| (p[0] > 0.5) == y[0])
            .count();
        assert!(acc0 as f64 / 200.0 > 0.95);
        assert!(p.iter().all(|r| r[2] == 1.0));
    }
}
