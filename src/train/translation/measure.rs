//! Quality measures of a translator on validation faces, before and after
//! training: the critic's Wasserstein estimate and classification losses,
//! and the reconstruction error of G(x, source labels).

use anyhow::Result;
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::data::celeba::Labels;
use crate::data::tensors::FaceSet;
use crate::models::critic::{Critic, value_logit};
use crate::models::editor::Editor;
use crate::models::translator::Kind;
use crate::train::losses::{bce_elements, scalar};

/// Quality measures on val rows: the critic's Wasserstein estimate, its
/// classification loss on the real faces, G's classification loss under
/// it, and L1(G(x, source labels), x).
pub(super) struct Measures {
    pub wasserstein: f64,
    pub critic_cls: f64,
    pub g_cls: f64,
    pub rec_l1: f64,
}

/// [`Measures`] of G's edits of `rows` under each of `critics` (G's edits
/// are made once for all of them).
pub(super) fn measure<const C: usize>(
    ed: &Editor,
    critics: [&Critic; C],
    faces: &FaceSet,
    rows: &[usize],
    seed: u64,
    dev: &Device,
) -> Result<[Measures; C]> {
    let (kind, attrs) = (ed.kind, ed.attrs);
    let n = attrs.len();
    let bce = |logits: &Tensor, labels: &[Labels]| -> Result<f64> {
        let t = ed.attr_tensor(labels, dev)?;
        let ce = match kind {
            Kind::Sggan => bce_elements(&value_logit(logits, n)?, &t)?,
            Kind::Stargan => bce_elements(logits, &t)?,
        };
        Ok(scalar(&ce.mean_all()?)?)
    };
    // Per critic: sums of the Wasserstein estimate, the classification loss
    // on real faces and on the edits; then the reconstruction (G only).
    let mut sums = [[0.0; 3]; C];
    let (mut rec, mut count) = (0.0, 0usize);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for chunk in rows.chunks(32) {
        let x = faces.images(chunk, dev)?;
        let src: Vec<Labels> = chunk.iter().map(|&i| faces.labels[i]).collect();
        // Targets: one attribute of the edited ones flipped per row.
        let trg: Vec<Labels> = src
            .iter()
            .map(|&l| l ^ (1 << attrs[rng.random_range(0..n)]))
            .collect();
        let y = ed.edit(&x, &src, &trg)?;
        let back = ed.edit(&x, &src, &src)?;
        let k = chunk.len() as f64;
        for (d, s) in critics.iter().zip(sums.iter_mut()) {
            let (adv_real, logits_real) = d.forward(&x)?;
            let (adv_fake, logits) = d.forward(&y)?;
            let real = scalar(&adv_real.mean_all()?)?;
            let fake = scalar(&adv_fake.mean_all()?)?;
            s[0] += (real - fake) * k;
            s[1] += bce(&logits_real, &src)? * k;
            s[2] += bce(&logits, &trg)? * k;
        }
        rec += scalar(&(&back - &x)?.abs()?.mean_all()?)? * k;
        count += chunk.len();
    }
    let c = count.max(1) as f64;
    Ok(sums.map(|[w, real_cls, cls]| Measures {
        wasserstein: w / c,
        critic_cls: real_cls / c,
        g_cls: cls / c,
        rec_l1: rec / c,
    }))
}
