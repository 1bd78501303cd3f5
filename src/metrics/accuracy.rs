//! Attribute-recognition metrics.
//!
//! - The paper's accuracy (Liu et al. Sec. V-D, after AttGAN): for each
//!   sample the fraction of attributes recognised correctly, averaged over
//!   samples. With the same number of attributes per sample it equals the
//!   mean of the per-attribute accuracies.
//! - Per attribute: accuracy (Fig. 9), balanced accuracy (mean of the true
//!   positive and true negative rates, which plain accuracy hides for rare
//!   attributes: 98% accuracy on `Bald` is what "never bald" scores), F1.

use serde::Serialize;

/// Confusion counts of one attribute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub tp: u64,
    pub tn: u64,
    pub fp: u64,
    pub fn_: u64,
}

impl Counts {
    pub fn add(&mut self, predicted: bool, truth: bool) {
        match (predicted, truth) {
            (true, true) => self.tp += 1,
            (false, false) => self.tn += 1,
            (true, false) => self.fp += 1,
            (false, true) => self.fn_ += 1,
        }
    }

    pub fn n(&self) -> u64 {
        self.tp + self.tn + self.fp + self.fn_
    }

    pub fn accuracy(&self) -> f64 {
        (self.tp + self.tn) as f64 / self.n().max(1) as f64
    }

    /// (TPR + TNR) / 2; a rate with no samples of its class counts as 0.5
    /// only if both are missing, else the present one alone.
    pub fn balanced_accuracy(&self) -> f64 {
        let pos = self.tp + self.fn_;
        let neg = self.tn + self.fp;
        match (pos, neg) {
            (0, 0) => 0.5,
            (0, _) => self.tn as f64 / neg as f64,
            (_, 0) => self.tp as f64 / pos as f64,
            _ => 0.5 * (self.tp as f64 / pos as f64 + self.tn as f64 / neg as f64),
        }
    }

    /// 2TP / (2TP + FP + FN); 0 when there is nothing positive at all.
    pub fn f1(&self) -> f64 {
        let d = 2 * self.tp + self.fp + self.fn_;
        if d == 0 {
            0.0
        } else {
            2.0 * self.tp as f64 / d as f64
        }
    }
}

/// Per-attribute counts of predictions against labels (rows × attributes).
pub fn confusion(pred: &[Vec<bool>], truth: &[Vec<bool>]) -> Vec<Counts> {
    let k = truth.first().map(|r| r.len()).unwrap_or(0);
    let mut c = vec![Counts::default(); k];
    for (p, t) in pred.iter().zip(truth) {
        for a in 0..k {
            c[a].add(p[a], t[a]);
        }
    }
    c
}

/// The paper's accuracy: mean over samples of the fraction of attributes right.
pub fn paper_accuracy(pred: &[Vec<bool>], truth: &[Vec<bool>]) -> f64 {
    let per: Vec<f64> = pred
        .iter()
        .zip(truth)
        .map(|(p, t)| {
            p.iter().zip(t).filter(|(a, b)| a == b).count() as f64 / t.len().max(1) as f64
        })
        .collect();
    per.iter().sum::<f64>() / per.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_example() {
        // 4 samples, 2 attributes; attribute 0 is rare and never predicted.
        let truth = vec![
            vec![true, true],
            vec![false, true],
            vec![false, false],
            vec![false, false],
        ];
        let pred = vec![
            vec![false, true],
            vec![false, false],
            vec![false, false],
            vec![false, true],
        ];
        // Per sample: 1/2, 1/2, 1, 1/2 → 0.625.
        assert!((paper_accuracy(&pred, &truth) - 0.625).abs() < 1e-12);
        let c = confusion(&pred, &truth);
        assert_eq!(
            c[0],
            Counts {
                tp: 0,
                tn: 3,
                fp: 0,
                fn_: 1
            }
        );
        assert!((c[0].accuracy() - 0.75).abs() < 1e-12);
        assert!((c[0].balanced_accuracy() - 0.5).abs() < 1e-12); // (0/1 + 3/3) / 2
        assert_eq!(c[0].f1(), 0.0);
        // Attribute 1: tp 1, fn 1, tn 1, fp 1 → balanced 0.5, F1 2/4.
        assert!((c[1].f1() - 0.5).abs() < 1e-12);
        // The paper's accuracy equals the mean per-attribute accuracy.
        assert!(((c[0].accuracy() + c[1].accuracy()) / 2.0 - 0.625).abs() < 1e-12);
    }
}
