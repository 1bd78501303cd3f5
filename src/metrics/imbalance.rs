//! Label-imbalance statistics of a multi-label dataset, from the positive
//! count of each label (Charte et al., "Addressing imbalance in multilabel
//! classification", Neurocomputing 2015, Sec. 3): IRLbl, MeanIR and CVIR.
//! The `balance` stage reports them before and after a plan, and ML-ROS
//! clones the rows of labels whose IRLbl is above MeanIR.

/// IRLbl per label (the largest count divided by the label's count; None
/// when the label has no positives) and MeanIR, the mean of the defined ones.
pub fn irlbl(counts: &[u64]) -> (Vec<Option<f64>>, f64) {
    let max = counts.iter().copied().max().unwrap_or(0) as f64;
    let ir: Vec<Option<f64>> = counts
        .iter()
        .map(|&c| (c > 0).then(|| max / c as f64))
        .collect();
    let vals: Vec<f64> = ir.iter().flatten().copied().collect();
    let mean = if vals.is_empty() {
        0.0
    } else {
        vals.iter().sum::<f64>() / vals.len() as f64
    };
    (ir, mean)
}

/// CVIR: the coefficient of variation of IRLbl (sample standard deviation / MeanIR).
pub fn cvir(counts: &[u64]) -> f64 {
    let (ir, mean) = irlbl(counts);
    let vals: Vec<f64> = ir.iter().flatten().copied().collect();
    if vals.len() < 2 || mean == 0.0 {
        return 0.0;
    }
    let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (vals.len() - 1) as f64;
    var.sqrt() / mean
}

/// The minority labels: IRLbl above MeanIR.
pub fn minority_labels(counts: &[u64]) -> Vec<usize> {
    let (ir, mean) = irlbl(counts);
    (0..counts.len())
        .filter(|&i| ir[i].is_some_and(|v| v > mean))
        .collect()
}

/// (min, max, population standard deviation) of the per-label positives.
pub fn spread(counts: &[u64]) -> (u64, u64, f64) {
    let min = counts.iter().copied().min().unwrap_or(0);
    let max = counts.iter().copied().max().unwrap_or(0);
    let n = counts.len().max(1) as f64;
    let mean = counts.iter().sum::<u64>() as f64 / n;
    let sd = (counts
        .iter()
        .map(|&c| (c as f64 - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    (min, max, sd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn irlbl_and_cvir_by_hand() {
        let mut c = [0u64; 40];
        c[0] = 100;
        c[1] = 50;
        c[2] = 25;
        let (ir, mean) = irlbl(&c);
        assert_eq!(ir[0], Some(1.0));
        assert_eq!(ir[2], Some(4.0));
        assert_eq!(ir[3], None);
        assert!((mean - 7.0 / 3.0).abs() < 1e-12);
        // sd of (1, 2, 4) with n-1 = 1.5275252; / mean 2.3333
        assert!((cvir(&c) - 1.527_525_231_651_947 / (7.0 / 3.0)).abs() < 1e-9);
        assert_eq!(minority_labels(&c), vec![2]);
    }

    #[test]
    fn spread_by_hand() {
        // numpy: np.std([1, 2, 3, 6]) = 1.8708286933869707
        let (min, max, sd) = spread(&[1, 2, 3, 6]);
        assert_eq!((min, max), (1, 6));
        assert!((sd - 1.870_828_693_386_970_7).abs() < 1e-12);
    }
}
