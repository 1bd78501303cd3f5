//! Translation generators: sggan (Zhang et al., SG-GAN), stargan (Choi et
//! al., StarGAN) and SeCGAN's RGB branch G_rgb (Sun et al., "SeCGAN", Sec. 3;
//! all `synthesize` needs of it). An image is G(source face, target labels)
//! over the attributes the generator edits, judged by the critic's class
//! head on those attributes (SG-GAN Sec. 5.3).

use std::path::Path;

use anyhow::Result;
use candle_core::{Device, Tensor};
use image::RgbImage;

use crate::data::celeba::Labels;
use crate::data::tensors::{images_tensor, resize_square};
use crate::generators::model_file::ModelFile;
use crate::generators::{Batch, Generator, attribute_indices, files, weights};
use crate::models::critic::Critic;
use crate::models::editor::Editor;
use crate::models::translator::{Kind, Translator};

use super::Layout;

/// G and the critic D (with its class head).
pub struct Translation {
    image_size: usize,
    kind: Kind,
    g: Translator,
    critic: Critic,
    /// CelebA indices of the edited attributes.
    attrs: Vec<usize>,
}

pub fn load(dir: &Path, model: &ModelFile, dev: &Device) -> Result<Box<dyn Generator>> {
    let Layout {
        translator,
        critic,
        attributes,
    } = model.layout(dir)?;
    Ok(Box::new(Translation {
        image_size: translator.image_size,
        kind: translator.kind,
        g: Translator::new(&translator, weights(dir, files::GENERATOR, dev)?)?,
        critic: Critic::new(&critic, weights(dir, files::CRITIC, dev)?)?,
        attrs: attribute_indices(&attributes, dir)?,
    }))
}

impl Translation {
    fn editor(&self) -> Editor<'_> {
        Editor {
            g: &self.g,
            kind: self.kind,
            attrs: &self.attrs,
        }
    }
}

impl Generator for Translation {
    fn image_size(&self) -> usize {
        self.image_size
    }

    fn edits_sources(&self) -> bool {
        true
    }

    fn editable(&self) -> Option<Labels> {
        Some(self.attrs.iter().map(|&a| 1u64 << a).sum())
    }

    fn draw(&self, batch: &Batch, dev: &Device) -> Result<Tensor> {
        let src: Vec<Labels> = batch.sources.iter().map(|r| r.0).collect();
        let imgs: Vec<RgbImage> = batch
            .sources
            .iter()
            .map(|r| resize_square(r.1.clone(), self.image_size))
            .collect();
        Ok(self
            .editor()
            .edit(&images_tensor(&imgs, dev)?, &src, batch.targets)?)
    }

    fn agreement(&self, x: &Tensor, labels: &[Labels]) -> Result<Option<Vec<f64>>> {
        Ok(Some(self.editor().critic_agreement(
            &self.critic,
            x,
            labels,
        )?))
    }

    fn source_grid(&self, x: &Tensor, labels: &[Labels]) -> Result<Option<RgbImage>> {
        Ok(Some(crate::train::translation::value_grid(
            &self.editor(),
            x,
            labels,
        )?))
    }

    fn translation_editor(&self) -> Option<Editor<'_>> {
        Some(self.editor())
    }
}
