//! SG-GAN's losses (Zhang et al. Sec. 3.2 and 4, eq. 2–8): the critic's and
//! G's gradients for one batch, accumulated over micro-batches.

use anyhow::Result;
use candle_core::Tensor;
use rand_chacha::ChaCha8Rng;

use super::TranslationPhase;
use crate::models::critic::value_logit;
use crate::train::accumulate::{Accumulated, accumulate};
use crate::train::losses::{bce_elements, gradient_penalty, scalar};

impl TranslationPhase<'_> {
    /// The critic's SG-GAN gradients on rows `idx` (one draw of ε from `rng`).
    pub(super) fn critic_grads_sggan(
        &self,
        idx: &[usize],
        rng: &mut ChaCha8Rng,
    ) -> Result<Accumulated> {
        let n = self.n();
        let m = 2 * n;
        let b = idx.len();
        let o = &self.opts;
        let ed = self.editor(&self.g);
        let labels = self.labels_of(idx);
        let mask = self.mask_tensor(idx)?;
        let labelled = scalar(&mask.sum_all()?)?.max(1.0);
        let eps = self.eps(rng, b * m)?;
        let d = &self.d;
        accumulate(&self.d_vars, b, o.micro_batch, |s, k| {
            let share = k as f64 / b as f64;
            let x = self.data.faces.images(&idx[s..s + k], &self.dev)?;
            let (_, c, h, w) = x.dims4()?;
            let lab = ed.attr_tensor(&labels[s..s + k], &self.dev)?;
            let fakes = self
                .g
                .forward(&x, None)?
                .reshape((k * m, c, h, w))?
                .detach();
            let (adv_real, cls_real) = d.forward(&x)?;
            let d_real = adv_real.mean_all()?;
            let d_fake = d.critic_value(&fakes)?.mean_all()?;
            let wdist = ((&d_real - &d_fake)? * share)?;
            let ce = bce_elements(&value_logit(&cls_real, n)?, &lab)?;
            let d_cls = ((&ce * &mask.narrow(0, s, k)?)?.sum_all()? / labelled)?;
            let x_rep = x
                .unsqueeze(1)?
                .broadcast_as((k, m, c, h, w))?
                .reshape((k * m, c, h, w))?;
            let e = eps.narrow(0, s * m, k * m)?;
            let gp = (gradient_penalty(|t| d.critic_value(t), &x_rep, &fakes, &e)?
                * (m as f64 * share))?;
            let loss = ((wdist.neg()? * m as f64)? + (&d_cls * o.lambda_cls)?)?
                .add(&(&gp * o.lambda_gp)?)?;
            Ok([loss, wdist, d_cls, gp])
        })
    }

    /// G's SG-GAN gradients on rows `idx`.
    pub(super) fn g_grads_sggan(&self, idx: &[usize]) -> Result<Accumulated> {
        let n = self.n();
        let m = 2 * n;
        let b = idx.len();
        let o = &self.opts;
        accumulate(&self.g_vars, b, o.micro_batch, |s, k| {
            let share = k as f64 / b as f64;
            let x = self.data.faces.images(&idx[s..s + k], &self.dev)?;
            let (_, c, h, w) = x.dims4()?;
            let y = self.g.forward(&x, None)?; // (k, m, 3, H, W)
            let flat = y.reshape((k * m, c, h, w))?;
            let (adv_fake, cls_fake) = self.d.forward(&flat)?;
            let g_adv = (adv_fake.flatten_from(1)?.mean(1)?.mean_all()? * (-(m as f64) * share))?;
            // Output o = 2j + v is judged by head j against value v.
            let mut sel = vec![0f32; k * m * n];
            let mut tgt = vec![0f32; k * m * n];
            for r in 0..k {
                for out_i in 0..m {
                    let row = r * m + out_i;
                    sel[row * n + out_i / 2] = 1.0;
                    tgt[row * n + out_i / 2] = (out_i % 2) as f32;
                }
            }
            let sel = Tensor::from_vec(sel, (k * m, n), &self.dev)?;
            let tgt = Tensor::from_vec(tgt, (k * m, n), &self.dev)?;
            let g_cls =
                ((bce_elements(&value_logit(&cls_fake, n)?, &tgt)? * &sel)?.sum_all()? / b as f64)?;
            // Eq. 5: each output translated back to its attribute's other value.
            let z = self.g.forward(&flat, None)?.reshape((k, m, m, c, h, w))?;
            let mut diffs = Vec::with_capacity(m);
            for out_i in 0..m {
                let partner = out_i ^ 1;
                let back = z.narrow(1, out_i, 1)?.narrow(2, partner, 1)?.squeeze(2)?;
                let want = y.narrow(1, partner, 1)?;
                diffs.push((back - want)?.abs()?);
            }
            let g_rec = (Tensor::cat(&diffs, 1)?.mean_all()? * share)?;
            let loss = ((&g_adv + (&g_cls * o.lambda_cls)?)? + (&g_rec * o.lambda_rec)?)?;
            Ok([loss, g_adv, g_cls, g_rec])
        })
    }
}
