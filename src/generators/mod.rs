//! Generator families as plug-ins. A family is one module holding its
//! training entry (`train.rs`: what a `train_generator` stage with its
//! `model` does), its inputs check, and its loaded type (`load.rs`, which
//! implements [`Generator`]: draw images for target labels, from labels
//! alone or by editing each row's source face; judge how well images carry
//! their labels; and, where the family can, reconstruct faces, sample its
//! prior or edit one attribute of a face). [`FAMILIES`] is the registry:
//! the stages call through it and the trait, and never name a family.
//! [`options`] is the `train_generator` config, [`model_file`] the
//! `model.json` every family writes, [`training`] what the training
//! entries share, [`files`] the file names writers and readers share. `docs/design.md` walks through adding a family.
//!
//! - [`attr2face`]: attr2face and dcgan (Liu et al., "Generating Face
//!   Images with Attributes for Free", Sec. III): G_de(Φ(a)), judged by C;
//!   reconstructions G_de(G_en(x)).
//! - [`translation`]: sggan (Zhang et al., SG-GAN) and stargan (Choi et
//!   al., StarGAN): G(x, labels), judged by the critic's class head.
//! - [`st_gan`]: ST-GAN (Zhang et al., "ST-GAN", Sec. 3.2): G(E(x)) with the
//!   code settings of its attribute map; reconstructions G(E(x)); prior samples.
//! - [`bridgegan`]: BridgeGAN (Huang et al., "Bridging the Gap between
//!   Label- and Reference-based Synthesis", App. B): G(x, M(R, att_diff)) or
//!   G(x, E(reference, att_diff)), judged by C.
//! - [`secgan`]: SeCGAN (Sun et al., "SeCGAN", Sec. 3): trains an RGB and a
//!   semantic branch through a frozen parser; loads as a translation generator.
//! - [`options`], [`model_file`], [`training`]: the stage's options,
//!   `model.json` and the training helpers.

pub mod attr2face;
pub mod bridgegan;
pub mod model_file;
pub mod options;
pub mod secgan;
pub mod st_gan;
pub mod training;
pub mod translation;

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;

use crate::contract::{StageIo, StageKind, StageOutput};
use crate::data::celeba::Labels;
use crate::data::tensors::tensor_to_rgb;
use crate::models::editor::Editor;
use model_file::{Model, ModelFile};
use options::{Config, Preset};

/// The files in a generator stage's folder, named once for the stage that
/// writes them and the stages that read them.
pub mod files {
    /// The generator (every family; attr2face: Φ and G_de).
    pub const GENERATOR: &str = "generator.safetensors";
    /// The critic D with its class head (translation, st_gan's D + Q, bridgegan's D + C).
    pub const CRITIC: &str = "critic.safetensors";
    /// attr2face / dcgan: the attribute classifier C.
    pub const CLASSIFIER: &str = "classifier.safetensors";
    /// attr2face: G_en and G_de.
    pub const AUTOENCODER: &str = "autoencoder.safetensors";
    /// st_gan: the encoder E.
    pub const ENCODER: &str = "encoder.safetensors";
    /// secgan: G_seg and D_seg.
    pub const SEMANTIC_GENERATOR: &str = "semantic_generator.safetensors";
    pub const SEMANTIC_CRITIC: &str = "semantic_critic.safetensors";
    /// st_gan: the `attribute_map` table (with a judge).
    pub const ATTRIBUTE_MAP: &str = crate::contract::tables::ATTRIBUTE_MAP.file;
}

/// What a family can do beyond drawing, known from `model.json` alone
/// (without loading any weights).
#[derive(Debug, Clone, Copy, Default)]
pub struct Abilities {
    /// Reconstructs faces (evaluate's `reconstruction_*`).
    pub reconstruct: bool,
    /// Samples its prior G(z, c) (evaluate's FID of prior samples).
    pub sample_prior: bool,
    /// Edits a face towards target labels, one attribute at a time
    /// (evaluate's reversal protocol).
    pub reverse: bool,
    /// Edits only through the attribute map that a `train_classifier`
    /// input of the generator stage (its judge) writes; a `synthesize`
    /// stage over a generator without one is refused when the pipeline loads.
    pub edits_need_judge: bool,
}

/// One generator family: the models it trains, its presets and options,
/// what it can do, the inputs it needs, its training entry and its loader.
pub struct Family {
    pub name: &'static str,
    /// The `model = "..."` values it trains.
    pub models: &'static [&'static str],
    /// The `preset` values it takes; the first (its paper's size) is the default.
    pub presets: &'static [Preset],
    /// Its own keys of the stage: `options::resolve::<T>` for its type `T`
    /// (parsed, checked, returned with every default filled in).
    pub options: fn(&Config, toml::Table) -> std::result::Result<options::Resolved, String>,
    /// The top-level keys of that type: `options::keys::<T>`.
    pub option_keys: fn() -> &'static [&'static str],
    pub abilities: Abilities,
    /// Checks the kinds of a `train_generator` stage's inputs.
    pub inputs: fn(&Config, &[StageKind]) -> std::result::Result<(), String>,
    /// Trains the stage's networks and writes them (`train_generator`).
    pub train: fn(&Config, &StageIo) -> Result<StageOutput>,
    /// Loads the stage folder's networks (and what they need) for inference.
    pub load: fn(&Path, &ModelFile, &Device) -> Result<Box<dyn Generator>>,
}

/// The registry. Adding a family is one module and one line here.
pub const FAMILIES: &[&Family] = &[
    &attr2face::FAMILY,
    &translation::FAMILY,
    &st_gan::FAMILY,
    &bridgegan::FAMILY,
    &secgan::FAMILY,
];

/// The family that trains `model` (a [`Model`] is a name from a family's
/// `models`, so there is one).
pub fn of_model(model: Model) -> &'static Family {
    FAMILIES
        .iter()
        .copied()
        .find(|f| f.models.contains(&model.name()))
        .expect("a Model is named by a registered family")
}

/// The family of a trained generator's `model.json`.
pub fn family(model: &ModelFile) -> &'static Family {
    of_model(model.model)
}

/// Trains the generator of a `train_generator` stage.
pub fn train(c: &Config, io: &StageIo) -> Result<StageOutput> {
    (of_model(c.model).train)(c, io)
}

/// Checks the inputs of a `train_generator` stage.
pub fn check_inputs(c: &Config, inputs: &[StageKind]) -> std::result::Result<(), String> {
    (of_model(c.model).inputs)(c, inputs)
}

/// The inputs most families take: an `ingest` stage and optionally a
/// `balance` stage (for attr2face's `recursive_times`).
fn ingest_and_optional_balance(
    _: &Config,
    inputs: &[StageKind],
) -> std::result::Result<(), String> {
    let k = StageKind::sorted(inputs);
    if k == [StageKind::Ingest] || k == [StageKind::Balance, StageKind::Ingest] {
        return Ok(());
    }
    Err(format!(
        "`train_generator` needs one `ingest` stage and optionally one `balance` stage (for `recursive_times`), got {}",
        StageKind::list(inputs)
    ))
}

/// What the generator of the stage folder `dir` can do, from its
/// `model.json` alone.
pub fn abilities(dir: &Path) -> Result<Abilities> {
    Ok(family(&ModelFile::read(dir)?).abilities)
}

/// Loads the generator of the stage folder `dir` (its `model.json`, then its weights).
pub fn load(dir: &Path, dev: &Device) -> Result<Box<dyn Generator>> {
    let model = ModelFile::read(dir)?;
    (family(&model).load)(dir, &model, dev)
}

/// The tensors of one weight file of `dir`, as a var builder.
pub fn weights(dir: &Path, file: &str, dev: &Device) -> Result<VarBuilder<'static>> {
    let path = dir.join(file);
    let t = candle_core::safetensors::load(&path, dev)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(VarBuilder::from_tensors(t, DType::F32, dev))
}

/// Rows of one forward pass.
pub struct Batch<'a> {
    /// The label vector each image should carry.
    pub targets: &'a [Labels],
    /// Per row, its source face's labels and image, for a generator that
    /// edits sources (empty otherwise).
    pub sources: &'a [(Labels, RgbImage)],
    /// Per row, a reference face guiding the edit, or None.
    pub refs: &'a [Option<RgbImage>],
    /// Per row, its plan `sample_id` (seeds per-row noise).
    pub ids: &'a [i64],
}

/// A trained generator, loaded.
pub trait Generator: Send + Sync {
    /// The side of the images it reads and draws.
    fn image_size(&self) -> usize;

    /// Whether drawing reads each row's source face (an editor), rather
    /// than the target labels alone.
    fn edits_sources(&self) -> bool;

    /// Bits of the attributes it can change; None: any of them.
    fn editable(&self) -> Option<Labels> {
        None
    }

    /// Whether rows may carry a reference face.
    fn uses_references(&self) -> bool {
        false
    }

    /// Fails when the generator cannot draw at all as trained (said once,
    /// before any row).
    fn check_ready(&self) -> Result<()> {
        Ok(())
    }

    /// Fails when plan row `sample_id` asks for an edit it cannot make.
    fn check_edit(&self, _sample_id: i64, _source: Labels, _target: Labels) -> Result<()> {
        Ok(())
    }

    /// The images of one batch, (B, 3, size, size) in [-1, 1].
    fn draw(&self, batch: &Batch, dev: &Device) -> Result<Tensor>;

    /// Per image (B, 3, size, size), the fraction of its target labels its
    /// judge agrees with; None when the family has no judge.
    fn agreement(&self, x: &Tensor, labels: &[Labels]) -> Result<Option<Vec<f64>>>;

    /// An edit `drawn` put back into its `source` face (both at the face
    /// size); by default the drawn image as it is.
    fn put_back(&self, drawn: RgbImage, _source: Option<&RgbImage>) -> RgbImage {
        drawn
    }

    /// `grid.png` over source faces `x` (at the generator's size) with
    /// their labels; None: the caller draws Fig. 6 (label flips).
    fn source_grid(&self, _x: &Tensor, _labels: &[Labels]) -> Result<Option<RgbImage>> {
        Ok(None)
    }

    /// `reference_grid.png`: faces `x` (top) edited by references `refs`
    /// (side); None for a family without references.
    fn reference_grid(
        &self,
        _x: (&Tensor, &[Labels]),
        _refs: (&Tensor, &[Labels]),
    ) -> Result<Option<RgbImage>> {
        Ok(None)
    }

    /// What a reconstruction is (for `details`) and the notes to add; None
    /// when it reconstructs nothing.
    fn reconstruction(&self) -> Option<Reconstruction> {
        None
    }

    /// Reconstructions of faces `x`.
    fn reconstruct(&self, x: &Tensor) -> Result<Tensor> {
        let _ = x;
        anyhow::bail!("this generator reconstructs nothing")
    }

    /// `n` images drawn from its prior with `seed`; None without a prior.
    fn prior_samples(&self, _n: usize, _seed: u64, _dev: &Device) -> Result<Option<Vec<RgbImage>>> {
        Ok(None)
    }

    /// The encoder whose features a linear probe reads (attr2face's G_en);
    /// None when the family trained none.
    fn face_encoder(&self) -> Option<&dyn candle_core::Module> {
        None
    }

    /// The label editor of a translation generator (the reversal protocol).
    fn translation_editor(&self) -> Option<Editor<'_>> {
        None
    }
}

/// How a family reconstructs faces, for `details`.
pub struct Reconstruction {
    pub images: &'static str,
    /// Extra `details` keys (e.g. why a paper's metric is missing).
    pub notes: &'static [(&'static str, &'static str)],
}

/// Draws every row of `targets` in forward passes of at most `batch` rows.
pub fn draw_all(
    g: &dyn Generator,
    rows: &Batch,
    batch: usize,
    dev: &Device,
) -> Result<Vec<RgbImage>> {
    let mut out = Vec::with_capacity(rows.targets.len());
    for (k, targets) in rows.targets.chunks(batch).enumerate() {
        // Per-row inputs a family does not use may be empty.
        let rows_of = k * batch..k * batch + targets.len();
        let slice = |len: usize| if len == 0 { 0..0 } else { rows_of.clone() };
        let b = Batch {
            targets,
            sources: &rows.sources[slice(rows.sources.len())],
            refs: &rows.refs[slice(rows.refs.len())],
            ids: &rows.ids[slice(rows.ids.len())],
        };
        out.extend(tensor_to_rgb(&g.draw(&b, dev)?)?);
    }
    Ok(out)
}

/// CelebA indices of the attribute names a generator's `model.json` lists.
fn attribute_indices(names: &[String], dir: &Path) -> Result<Vec<usize>> {
    names
        .iter()
        .map(|a| {
            crate::data::schema::attribute_index(a).ok_or_else(|| {
                crate::data_error!(
                    "{}: unknown attribute `{a}` in `attributes`",
                    dir.join(model_file::FILE).display()
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `of_model`'s `expect` cannot fire: every model name belongs to
    /// exactly one registered family, and a `Model` is only made from one.
    #[test]
    fn every_model_has_exactly_one_family() {
        for name in Model::all() {
            let m = Model::named(name).unwrap();
            let n = FAMILIES.iter().filter(|f| f.models.contains(&name)).count();
            assert_eq!(n, 1, "{name}");
            assert_eq!(m.name(), name);
            assert!(!of_model(m).presets.is_empty(), "{name}");
        }
        assert_eq!(Model::named("vqgan"), None);
    }
}
