//! Gradients of a batch computed in micro-batches and summed, for losses
//! whose second-order graph (the WGAN-GP penalty) does not fit in memory at
//! once; any GAN step of `train/` can use it (the translators do).

use anyhow::Result;
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::Optimizer;

use crate::train::adam::Adam;

use super::losses::scalar;

/// A loss's gradients summed over the chunks of a batch, and the values of
/// the loss and its terms (N − 1 of them; 3 unless a phase logs more).
pub struct Accumulated<const N: usize = 4> {
    pub grads: GradStore,
    pub values: [f64; N],
}

/// Gradients of a batch loss computed `micro` rows at a time (0: all at
/// once). `chunk_terms(start, len)` returns the loss and its terms
/// for rows `start..start + len`, each as its share of the batch value (a
/// batch mean enters as the chunk mean × len / rows), so the sums over
/// chunks are the batch's values and gradients. Each chunk's graph is freed
/// before the next: with second-order gradients on, candle keeps the whole
/// backward graph alive until the gradients are dropped, and at `paper_128`
/// a batch of 8 SG-GAN rows did not fit in 24 GB.
pub fn accumulate<const N: usize>(
    vars: &[Var],
    rows: usize,
    micro: Option<usize>,
    mut chunk_terms: impl FnMut(usize, usize) -> Result<[Tensor; N]>,
) -> Result<Accumulated<N>> {
    let micro = micro.unwrap_or(rows).clamp(1, rows.max(1));
    let mut sums: Vec<Option<Tensor>> = vec![None; vars.len()];
    let mut values = [0.0; N];
    let mut start = 0;
    while start < rows {
        let len = micro.min(rows - start);
        let terms = chunk_terms(start, len)?;
        let grads = terms[0].backward()?;
        for (sum, var) in sums.iter_mut().zip(vars) {
            if let Some(g) = grads.get(var.as_tensor()) {
                let g = g.detach();
                *sum = Some(match sum.take() {
                    Some(acc) => (acc + g)?,
                    None => g,
                });
            }
        }
        for (v, t) in values.iter_mut().zip(&terms) {
            *v += scalar(t)?;
        }
        start += len;
    }
    let mut grads = GradStore::default();
    for (sum, var) in sums.into_iter().zip(vars) {
        if let Some(g) = sum {
            grads.insert(var.as_tensor(), g);
        }
    }
    Ok(Accumulated { grads, values })
}

/// One optimiser step with `acc`'s gradients; returns the named values.
pub fn apply<const N: usize>(
    opt: &mut Adam,
    names: [&'static str; N],
    acc: Accumulated<N>,
) -> Result<Vec<(&'static str, f64)>> {
    opt.step(&acc.grads)?;
    Ok(names.into_iter().zip(acc.values).collect())
}
