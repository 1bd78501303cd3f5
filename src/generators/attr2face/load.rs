//! attr2face and its dcgan ablation (Liu et al., "Generating Face Images
//! with Attributes for Free", Sec. III-B "Testing phase"): an image is
//! G_de(Φ(a)) for label vector a, judged by the attribute classifier C;
//! attr2face's autoencoder also reconstructs faces, G_de(G_en(x)) (dcgan
//! trains none).

use std::path::Path;

use anyhow::Result;
use candle_core::{Device, Module, Tensor};

use crate::data::celeba::Labels;
use crate::data::tensors::labels_tensor;
use crate::generators::model_file::ModelFile;
use crate::generators::{Batch, Generator, Reconstruction, files, weights};
use crate::models::began::{Autoencoder, Decoder};
use crate::models::classifier::Classifier;
use crate::models::mapping::Mapping;

use super::Layout;

/// Φ, G_de and C, and G_en + G_de where they were trained.
pub struct Attr2face {
    image_size: usize,
    mapping: Mapping,
    decoder: Decoder,
    classifier: Classifier,
    autoencoder: Option<Autoencoder>,
}

pub fn load(dir: &Path, model: &ModelFile, dev: &Device) -> Result<Box<dyn Generator>> {
    let Layout { network } = model.layout(dir)?;
    let network = &network;
    let vb = weights(dir, files::GENERATOR, dev)?;
    let autoencoder = match dir.join(files::AUTOENCODER).is_file() {
        true => Some(Autoencoder::new(
            &network.autoencoder,
            weights(dir, files::AUTOENCODER, dev)?,
        )?),
        false => None,
    };
    Ok(Box::new(Attr2face {
        image_size: network.image_size(),
        mapping: Mapping::new(&network.mapping, vb.pp("mapping"))?,
        decoder: Decoder::new(&network.autoencoder, vb.pp("decoder"))?,
        classifier: Classifier::new(&network.classifier, weights(dir, files::CLASSIFIER, dev)?)?,
        autoencoder,
    }))
}

impl Generator for Attr2face {
    fn image_size(&self) -> usize {
        self.image_size
    }

    fn edits_sources(&self) -> bool {
        false
    }

    fn draw(&self, batch: &Batch, dev: &Device) -> Result<Tensor> {
        let a = labels_tensor(batch.targets, dev)?;
        Ok(self.decoder.forward(&self.mapping.forward(&a)?)?)
    }

    fn agreement(&self, x: &Tensor, labels: &[Labels]) -> Result<Option<Vec<f64>>> {
        let logits = self.classifier.forward(x)?;
        let want = labels_tensor(labels, x.device())?;
        Ok(Some(crate::train::attr2face::label_agreement(
            &logits, &want,
        )?))
    }

    fn reconstruction(&self) -> Option<Reconstruction> {
        self.autoencoder.as_ref().map(|_| Reconstruction {
            images: "real test faces vs G_de(G_en(x))",
            notes: &[],
        })
    }

    fn face_encoder(&self) -> Option<&dyn Module> {
        self.autoencoder
            .as_ref()
            .map(|ae| &ae.encoder as &dyn Module)
    }

    fn reconstruct(&self, x: &Tensor) -> Result<Tensor> {
        match &self.autoencoder {
            Some(ae) => Ok(ae.forward(x)?),
            None => anyhow::bail!("this generator trained no autoencoder"),
        }
    }
}
