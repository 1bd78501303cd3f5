//! The options of a translation phase (`[stages.<name>.translation]`), which
//! (image, attribute) pairs keep their label under SG-GAN's sparse grouping,
//! and the learning-rate schedule.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::celeba::Labels;
use crate::models::translator::Kind;

/// Losses and schedule (config section `[stages.<name>.translation]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TranslationOptions {
    /// Attributes G edits (CelebA names). Default: SG-GAN's gender, smile
    /// and hair colour (`Male`, `Smiling`, `Black_Hair`, `Blond_Hair`);
    /// StarGAN's official five (`Black_Hair`, `Blond_Hair`, `Brown_Hair`,
    /// `Male`, `Young`).
    pub attributes: Option<Vec<String>>,
    /// Iterations (critic updates). Default: 20,000 (SG-GAN Sec. 4) or
    /// 200,000 (StarGAN's official `num_iters`).
    pub steps: Option<usize>,
    /// Learning rate of G.
    pub lr: f64,
    /// Learning rate of the critic.
    pub d_lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// Critic updates per generator update.
    pub n_critic: usize,
    pub lambda_gp: f64,
    pub lambda_cls: f64,
    /// α of SG-GAN's eq. 7, λ_rec of StarGAN.
    pub lambda_rec: f64,
    /// Step after which both learning rates decay linearly to 0 (default: half of `steps`).
    pub decay_start: Option<usize>,
    /// SG-GAN: fraction of training images that keep their labels.
    pub labelled_fraction: Option<f64>,
    /// SG-GAN: images per value of each attribute that keep that label
    /// (SG-GAN(500), SG-GAN(5000)).
    pub labelled_per_value: Option<usize>,
    /// Rows per forward/backward pass. A step's gradients are summed over
    /// its chunks, so the update equals the whole batch's (up to rounding)
    /// in less memory. Default: the whole batch.
    pub micro_batch: Option<usize>,
}

impl Default for TranslationOptions {
    fn default() -> Self {
        TranslationOptions {
            attributes: None,
            steps: None,
            lr: 1e-4,
            d_lr: 1e-4,
            beta1: 0.5,
            beta2: 0.999,
            n_critic: 5,
            lambda_gp: 10.0,
            lambda_cls: 1.0,
            lambda_rec: 10.0,
            decay_start: None,
            labelled_fraction: None,
            labelled_per_value: None,
            micro_batch: None,
        }
    }
}

impl TranslationOptions {
    pub fn default_attributes(kind: Kind) -> Vec<&'static str> {
        match kind {
            Kind::Sggan => vec!["Male", "Smiling", "Black_Hair", "Blond_Hair"],
            Kind::Stargan => vec!["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"],
        }
    }

    pub fn steps(&self, kind: Kind) -> usize {
        self.steps.unwrap_or(match kind {
            Kind::Sggan => 20_000,
            Kind::Stargan => 200_000,
        })
    }

    pub fn validate(&self, kind: Kind) -> std::result::Result<(), String> {
        crate::train::check_rates(&[("translation.lr", self.lr), ("translation.d_lr", self.d_lr)])?;
        crate::train::check_betas(&[
            ("translation.beta1", self.beta1),
            ("translation.beta2", self.beta2),
        ])?;
        crate::train::check_weights(&[
            ("translation.lambda_gp", self.lambda_gp),
            ("translation.lambda_cls", self.lambda_cls),
            ("translation.lambda_rec", self.lambda_rec),
        ])?;
        if self.n_critic == 0 {
            return Err("translation.n_critic must be at least 1".into());
        }
        if self.steps == Some(0) {
            return Err("translation.steps must be at least 1".into());
        }
        if let Some(d) = self.decay_start
            && d > self.steps(kind)
        {
            return Err(format!(
                "translation.decay_start = {d} is after the last step ({})",
                self.steps(kind)
            ));
        }
        match (kind, self.labelled_fraction, self.labelled_per_value) {
            (_, Some(_), Some(_)) => {
                return Err(
                    "set one of translation.labelled_fraction and translation.labelled_per_value"
                        .into(),
                );
            }
            (Kind::Stargan, Some(_), _) | (Kind::Stargan, _, Some(_)) => {
                return Err("labelled_fraction / labelled_per_value are SG-GAN's sparse grouping; StarGAN trains on fully labelled data".into());
            }
            (_, Some(f), _) if !(f > 0.0 && f <= 1.0) => {
                return Err(format!(
                    "translation.labelled_fraction = {f}: must be in (0, 1]"
                ));
            }
            (_, _, Some(0)) => {
                return Err("translation.labelled_per_value must be at least 1".into());
            }
            _ => {}
        }
        Ok(())
    }
}

/// Which (training row, attribute) pairs keep their label: bit j of
/// `mask[i]` is set when row i is group-labelled for attribute j.
pub fn labelled_mask(
    labels: &[Labels],
    attrs: &[usize],
    opts: &TranslationOptions,
    seed: u64,
) -> Vec<u64> {
    let n = labels.len();
    let all = (1u64 << attrs.len()) - 1;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    if let Some(f) = opts.labelled_fraction {
        let mut rows: Vec<usize> = (0..n).collect();
        rows.shuffle(&mut rng);
        let k = ((f * n as f64).round() as usize).clamp(1, n.max(1));
        let mut mask = vec![0u64; n];
        for &r in rows.iter().take(k) {
            mask[r] = all;
        }
        mask
    } else if let Some(k) = opts.labelled_per_value {
        let mut mask = vec![0u64; n];
        for (j, &a) in attrs.iter().enumerate() {
            for v in [false, true] {
                let mut rows: Vec<usize> = (0..n)
                    .filter(|&r| ((labels[r] >> a) & 1 == 1) == v)
                    .collect();
                rows.shuffle(&mut rng);
                for &r in rows.iter().take(k) {
                    mask[r] |= 1 << j;
                }
            }
        }
        mask
    } else {
        vec![all; n]
    }
}

/// The learning-rate multiplier at `step` of `steps`: 1 up to `decay_start`
/// (default half of the steps), then linearly down to 0 at the last step.
pub fn lr_factor(steps: usize, decay_start: Option<usize>, step: usize) -> f64 {
    let start = decay_start.unwrap_or(steps / 2);
    if step <= start || steps <= start {
        1.0
    } else {
        steps.saturating_sub(step) as f64 / (steps - start) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_mask_per_value_and_fraction() {
        // Attribute 0 positive on rows 0..3, attribute 1 on even rows.
        let labels: Vec<Labels> = (0..10u64)
            .map(|r| u64::from(r < 3) | (u64::from(r % 2 == 0) << 1))
            .collect();
        let opts = TranslationOptions {
            labelled_per_value: Some(2),
            ..Default::default()
        };
        let m = labelled_mask(&labels, &[0, 1], &opts, 1);
        for j in 0..2 {
            for v in [false, true] {
                let k = (0..10)
                    .filter(|&r| (labels[r] >> j & 1 == 1) == v && m[r] >> j & 1 == 1)
                    .count();
                assert_eq!(k, 2, "attribute {j} value {v}");
            }
        }
        let opts = TranslationOptions {
            labelled_fraction: Some(0.3),
            ..Default::default()
        };
        let m = labelled_mask(&labels, &[0, 1], &opts, 1);
        assert_eq!(m.iter().filter(|&&b| b == 3).count(), 3);
        assert_eq!(m.iter().filter(|&&b| b == 0).count(), 7);
        assert_eq!(
            labelled_mask(&labels, &[0, 1], &TranslationOptions::default(), 1),
            vec![3; 10]
        );
    }

    #[test]
    fn lr_decays_linearly_over_the_second_half() {
        assert_eq!(lr_factor(100, None, 1), 1.0);
        assert_eq!(lr_factor(100, None, 50), 1.0);
        assert_eq!(lr_factor(100, None, 75), 0.5);
        assert_eq!(lr_factor(100, None, 100), 0.0);
        assert_eq!(lr_factor(100, Some(80), 90), 0.5);
        assert_eq!(lr_factor(100, Some(100), 100), 1.0);
    }
}
