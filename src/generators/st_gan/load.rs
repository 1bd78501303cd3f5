//! ST-GAN (Zhang et al., "ST-GAN", Sec. 3.2): a face is edited by encoding
//! it, E(x), setting the latent codes that the attribute map (the judge's
//! rates under each code setting, `train::latent_map`) says turn the target
//! attributes on or off, and decoding with G; LST-GAN's edits go back into
//! the face by the recorded blending (eq. 8–9). It has no judge of its own.
//! It also reconstructs faces, G(E(x)) (eq. 10), and samples its prior
//! G(z, c).

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{Device, ModuleT, Tensor};
use image::RgbImage;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::celeba::Labels;
use crate::data::parquet::read_columns;
use crate::data::poisson::{self, Region};
use crate::data::schema::attribute_index;
use crate::data::tensors::{images_tensor, resize_square, strings, tensor_to_rgb};
use crate::data_error;
use crate::generators::model_file::ModelFile;
use crate::generators::{Batch, Generator, Reconstruction, files, weights};
use crate::models::st_gan::{Config, Encoder, Generator as G};
use crate::train::latent_map::{parse_setting, settings_for};
use crate::train::st_gan::{Blend, CodeSetting, Latents, edit_grid, set_codes};

/// (attribute, on, off, usable) rows of the attribute map.
type AttributeMap = Vec<(usize, CodeSetting, CodeSetting, bool)>;

/// G and E, the attribute map (None without a judge) and LST-GAN's blending.
pub struct StGan {
    cfg: Config,
    g: G,
    e: Encoder,
    map: Option<AttributeMap>,
    /// The stage folder, named in errors.
    dir: std::path::PathBuf,
    /// LST-GAN: the box M (fractions) and how edits go back into the face.
    mask: Option<[f64; 4]>,
    blend: Blend,
}

pub fn load(dir: &Path, model: &ModelFile, dev: &Device) -> Result<Box<dyn Generator>> {
    let super::Layout {
        st_gan: cfg,
        mask,
        blend,
        ..
    } = model.layout(dir)?;
    // G and D index their channel lists: a hand-edited file is refused here.
    cfg.validate().map_err(|e| {
        data_error!(
            "{}: {e}; rerun the stage with `augment run --force --only <stage>`",
            dir.join(crate::generators::model_file::FILE).display()
        )
    })?;
    let cfg = &cfg;
    let map = match dir.join(files::ATTRIBUTE_MAP).is_file() {
        true => Some(read_attribute_map(dir)?),
        false => None,
    };
    Ok(Box::new(StGan {
        g: G::new(cfg, weights(dir, files::GENERATOR, dev)?)?,
        e: Encoder::new(cfg, weights(dir, files::ENCODER, dev)?)?,
        cfg: cfg.clone(),
        map,
        dir: dir.to_path_buf(),
        mask,
        blend,
    }))
}

/// The `attribute_map` table of an st_gan generator stage.
fn read_attribute_map(dir: &Path) -> Result<AttributeMap> {
    let path = dir.join(files::ATTRIBUTE_MAP);
    let mut out = Vec::new();
    for b in read_columns(&path, &["attribute", "on", "off", "usable"])? {
        let (attr, on, off) = (strings(&b, 0)?, strings(&b, 1)?, strings(&b, 2)?);
        let usable = arrow::array::AsArray::as_boolean_opt(b.column(3).as_ref())
            .context("usable is not Boolean")?;
        for r in 0..b.num_rows() {
            let bad = || {
                data_error!(
                    "{}: row {r} is not an attribute map this augment wrote; rerun `{}`",
                    path.display(),
                    stage_name(dir)
                )
            };
            out.push((
                attribute_index(attr.value(r)).ok_or_else(bad)?,
                parse_setting(on.value(r)).ok_or_else(bad)?,
                parse_setting(off.value(r)).ok_or_else(bad)?,
                usable.value(r),
            ));
        }
    }
    Ok(out)
}

/// A stage's name: its folder's.
fn stage_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl StGan {
    fn map(&self) -> Result<&AttributeMap> {
        self.map.as_ref().ok_or_else(|| {
            data_error!(
                "st_gan needs an attribute map: add a train_classifier stage trained on real faces to {}'s inputs",
                stage_name(&self.dir)
            )
        })
    }

    fn encode(&self, imgs: &[RgbImage], dev: &Device) -> Result<Tensor> {
        let small: Vec<RgbImage> = imgs
            .iter()
            .map(|i| resize_square(i.clone(), self.cfg.image_size))
            .collect();
        Ok(self
            .e
            .encode(&images_tensor(&small, dev)?, false)?
            .latent()?)
    }
}

impl Generator for StGan {
    fn image_size(&self) -> usize {
        self.cfg.image_size
    }

    fn edits_sources(&self) -> bool {
        true
    }

    fn check_ready(&self) -> Result<()> {
        self.map().map(|_| ())
    }

    fn check_edit(&self, sample_id: i64, source: Labels, target: Labels) -> Result<()> {
        settings_for(sample_id, source, target, self.map()?).map_err(|e| data_error!("{e}"))?;
        Ok(())
    }

    fn draw(&self, batch: &Batch, dev: &Device) -> Result<Tensor> {
        let map = self.map()?;
        let settings: Vec<Vec<CodeSetting>> = batch
            .sources
            .iter()
            .zip(batch.targets)
            .map(|(s, &t)| settings_for(-1, s.0, t, map).map_err(anyhow::Error::msg))
            .collect::<Result<_>>()?;
        let imgs: Vec<RgbImage> = batch.sources.iter().map(|s| s.1.clone()).collect();
        let lat = self.encode(&imgs, dev)?;
        Ok(self
            .g
            .forward_t(&set_codes(&self.cfg, &lat, &settings)?, false)?)
    }

    fn agreement(&self, _x: &Tensor, _labels: &[Labels]) -> Result<Option<Vec<f64>>> {
        Ok(None)
    }

    /// LST-GAN (eq. 8–9): the edit put back into its source face by the
    /// recorded blending; global ST-GAN's edits as they are.
    fn put_back(&self, drawn: RgbImage, source: Option<&RgbImage>) -> RgbImage {
        let (Some(b), Some(src)) = (self.mask, source) else {
            return drawn;
        };
        let region = Region::from_fractions(b, drawn.width());
        match self.blend {
            Blend::Poisson => poisson::blend(src, &drawn, region),
            Blend::Mask => poisson::paste(src, &drawn, region),
            Blend::None => drawn,
        }
    }

    fn source_grid(&self, x: &Tensor, _labels: &[Labels]) -> Result<Option<RgbImage>> {
        Ok(Some(edit_grid(&self.cfg, &self.g, &self.e, x)?))
    }

    fn reconstruction(&self) -> Option<Reconstruction> {
        Some(Reconstruction {
            images: "real test faces vs G(E(x)) (ST-GAN, eq. 10)",
            // ST-GAN's Table 1 reports an Inception Score; the shared FID
            // weights have no 1008-way classification head to compute one.
            notes: &[(
                "inception_score",
                "unavailable: the shared FID Inception weights lack the 1008-way classification head the Inception Score needs",
            )],
        })
    }

    fn reconstruct(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self
            .g
            .forward_t(&self.e.encode(x, false)?.latent()?, false)?)
    }

    fn prior_samples(&self, n: usize, seed: u64, dev: &Device) -> Result<Option<Vec<RgbImage>>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5747_4741);
        let mut images = Vec::with_capacity(n);
        let mut left = n;
        while left > 0 {
            let k = left.min(64);
            let lat = Latents::draw(&self.cfg, k, &mut rng);
            let x = self.g.forward_t(&lat.tensor(&self.cfg, dev)?, false)?;
            images.extend(tensor_to_rgb(&x)?);
            left -= k;
        }
        Ok(Some(images))
    }
}
