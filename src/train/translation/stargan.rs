//! StarGAN's losses (Choi et al. 2018, official PyTorch code): the critic's
//! and G's gradients for one batch, accumulated over micro-batches.

use anyhow::Result;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::TranslationPhase;
use crate::data::celeba::Labels;
use crate::train::accumulate::{Accumulated, accumulate};
use crate::train::losses::{bce_elements, gradient_penalty};

impl TranslationPhase<'_> {
    /// StarGAN's targets for rows `idx`: the batch's labels in a random order.
    pub(super) fn stargan_targets(&self, idx: &[usize], rng: &mut ChaCha8Rng) -> Vec<Labels> {
        let src = self.labels_of(idx);
        let mut perm: Vec<usize> = (0..idx.len()).collect();
        perm.shuffle(rng);
        perm.iter().map(|&p| src[p]).collect()
    }

    /// The critic's StarGAN gradients on rows `idx` translated to `trg`.
    pub(super) fn critic_grads_stargan(
        &self,
        idx: &[usize],
        trg: &[Labels],
        rng: &mut ChaCha8Rng,
    ) -> Result<Accumulated> {
        let n = self.n() as f64;
        let b = idx.len();
        let o = &self.opts;
        let ed = self.editor(&self.g);
        let c_src = ed.attr_tensor(&self.labels_of(idx), &self.dev)?;
        let c_trg = ed.attr_tensor(trg, &self.dev)?;
        let eps = self.eps(rng, b)?;
        let d = &self.d;
        accumulate(&self.d_vars, b, o.micro_batch, |s, k| {
            let share = k as f64 / b as f64;
            let x = self.data.faces.images(&idx[s..s + k], &self.dev)?;
            let fake = self.g.forward(&x, Some(&c_trg.narrow(0, s, k)?))?.detach();
            let (adv_real, cls_real) = d.forward(&x)?;
            let d_real = adv_real.mean_all()?;
            let d_fake = d.critic_value(&fake)?.mean_all()?;
            let wdist = ((&d_real - &d_fake)? * share)?;
            let d_cls =
                (bce_elements(&cls_real, &c_src.narrow(0, s, k)?)?.mean_all()? * (n * share))?;
            let e = eps.narrow(0, s, k)?;
            let gp = (gradient_penalty(|t| d.critic_value(t), &x, &fake, &e)? * share)?;
            let loss = ((wdist.neg()? + (&d_cls * o.lambda_cls)?)? + (&gp * o.lambda_gp)?)?;
            Ok([loss, wdist, d_cls, gp])
        })
    }

    /// G's StarGAN gradients on rows `idx` translated to `trg`.
    pub(super) fn g_grads_stargan(&self, idx: &[usize], trg: &[Labels]) -> Result<Accumulated> {
        let n = self.n() as f64;
        let b = idx.len();
        let o = &self.opts;
        let ed = self.editor(&self.g);
        let c_src = ed.attr_tensor(&self.labels_of(idx), &self.dev)?;
        let c_trg = ed.attr_tensor(trg, &self.dev)?;
        accumulate(&self.g_vars, b, o.micro_batch, |s, k| {
            let share = k as f64 / b as f64;
            let x = self.data.faces.images(&idx[s..s + k], &self.dev)?;
            let c_trg = c_trg.narrow(0, s, k)?;
            let fake = self.g.forward(&x, Some(&c_trg))?;
            let (adv_fake, cls_fake) = self.d.forward(&fake)?;
            let g_adv = (adv_fake.mean_all()?.neg()? * share)?;
            let g_cls = (bce_elements(&cls_fake, &c_trg)?.mean_all()? * (n * share))?;
            let back = self.g.forward(&fake, Some(&c_src.narrow(0, s, k)?))?;
            let g_rec = ((&x - &back)?.abs()?.mean_all()? * share)?;
            let loss = ((&g_adv + (&g_cls * o.lambda_cls)?)? + (&g_rec * o.lambda_rec)?)?;
            Ok([loss, g_adv, g_cls, g_rec])
        })
    }
}
