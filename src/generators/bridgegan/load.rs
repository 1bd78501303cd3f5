//! BridgeGAN (Huang et al., "Bridging the Gap between Label- and
//! Reference-based Synthesis in Multi-attribute Image-to-Image
//! Translation", App. B): a face x is edited towards att_diff = target −
//! source over the generator's attributes, guided by M(R, att_diff) with R
//! seeded by the plan row's `sample_id`, or, for rows with a reference face,
//! by E(reference, att_diff). Judged by the critic's class head C.

use std::path::Path;

use anyhow::Result;
use candle_core::{Device, Tensor};
use image::RgbImage;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::celeba::Labels;
use crate::data::tensors::{images_tensor, resize_square};
use crate::generators::model_file::ModelFile;
use crate::generators::{Batch, Generator, attribute_indices, files, weights};
use crate::models::bridgegan::{Config, Critic, GuidedEditor};
use crate::train::bridgegan::{attr_values, flip_grid, noise, reference_grid};

/// G, M and E, the critic D + C, and the CelebA indices of att_diff's attributes.
pub struct Bridgegan {
    cfg: Config,
    ed: GuidedEditor,
    critic: Critic,
    attrs: Vec<usize>,
}

pub fn load(dir: &Path, model: &ModelFile, dev: &Device) -> Result<Box<dyn Generator>> {
    let super::Layout {
        bridgegan: cfg,
        attributes,
    } = model.layout(dir)?;
    Ok(Box::new(Bridgegan {
        ed: GuidedEditor::new(&cfg, weights(dir, files::GENERATOR, dev)?)?,
        critic: Critic::new(&cfg, weights(dir, files::CRITIC, dev)?)?,
        attrs: attribute_indices(&attributes, dir)?,
        cfg,
    }))
}

impl Generator for Bridgegan {
    fn image_size(&self) -> usize {
        self.cfg.image_size
    }

    fn edits_sources(&self) -> bool {
        true
    }

    fn editable(&self) -> Option<Labels> {
        Some(self.attrs.iter().map(|&a| 1u64 << a).sum())
    }

    fn uses_references(&self) -> bool {
        true
    }

    fn draw(&self, batch: &Batch, dev: &Device) -> Result<Tensor> {
        let (c, size) = (batch.sources, self.cfg.image_size);
        let src: Vec<Labels> = c.iter().map(|r| r.0).collect();
        let (a, b) = (
            attr_values(&src, &self.attrs),
            attr_values(batch.targets, &self.attrs),
        );
        let diff: Vec<f32> = b.iter().zip(&a).map(|(t, s)| t - s).collect();
        let diff = Tensor::from_vec(diff, (c.len(), self.attrs.len()), dev)?;
        let r: Vec<Tensor> = batch
            .ids
            .iter()
            .map(|&id| {
                let mut rng = ChaCha8Rng::seed_from_u64(id as u64);
                noise(1, self.cfg.noise_dim, &mut rng, dev)
            })
            .collect::<Result<_>>()?;
        let imgs: Vec<RgbImage> = c.iter().map(|r| resize_square(r.1.clone(), size)).collect();
        let guides: Vec<Option<Tensor>> = (0..c.len())
            .map(|i| match batch.refs.get(i) {
                Some(Some(img)) => Ok(Some(images_tensor(
                    &[resize_square(img.clone(), size)],
                    dev,
                )?)),
                _ => Ok(None),
            })
            .collect::<Result<_>>()?;
        Ok(self.ed.mixed(
            &images_tensor(&imgs, dev)?,
            &Tensor::cat(&r, 0)?,
            &diff,
            &guides,
        )?)
    }

    fn agreement(&self, x: &Tensor, labels: &[Labels]) -> Result<Option<Vec<f64>>> {
        let (_, logits) = self.critic.forward(x)?;
        let want = attr_values(labels, &self.attrs);
        let got = logits.flatten_all()?.to_vec1::<f32>()?;
        let n = self.attrs.len();
        let mut out = Vec::with_capacity(labels.len());
        for (row, w) in got.chunks(n).zip(want.chunks(n)) {
            let hits = row
                .iter()
                .zip(w)
                .filter(|(l, t)| (**l > 0.0) == (**t > 0.5))
                .count();
            out.push(hits as f64 / n as f64);
        }
        Ok(Some(out))
    }

    /// App. Figs. 14–19: each source face with each attribute flipped.
    fn source_grid(&self, x: &Tensor, labels: &[Labels]) -> Result<Option<RgbImage>> {
        let g = flip_grid(&self.ed, &self.attrs, x, labels, self.cfg.noise_dim, 0)?;
        Ok(Some(g))
    }

    /// App. Figs. 11–12.
    fn reference_grid(
        &self,
        (x, labels): (&Tensor, &[Labels]),
        (refs, ref_labels): (&Tensor, &[Labels]),
    ) -> Result<Option<RgbImage>> {
        let g = reference_grid(&self.ed, &self.attrs, x, labels, refs, ref_labels)?;
        Ok(Some(g))
    }
}
