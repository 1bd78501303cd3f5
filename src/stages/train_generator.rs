//! `kind = "train_generator"`: trains a generator on the ingested faces.
//!
//! `model = "attr2face"` is the "for free" method of Liu et al. (Sec. III):
//! autoencoder, classifier and mapping phases, each checkpointed in the
//! stage's resume folder and skipped when finished, so a killed run resumes
//! where it stopped. `model = "dcgan"` is the footnote-4 ablation.
//!
//! `model = "sggan" | "stargan"` are translation generators, image =
//! G(source, target labels) (Zhang et al., SG-GAN; Choi et al., StarGAN),
//! trained with WGAN-GP in one phase (`crate::train::translation`) on the
//! attributes of `translation.attributes`; they write `generator.safetensors`
//! (G), `critic.safetensors` (D, whose classification head gives
//! `synthesize` its `label_agreement`), `model.json` (kind, sizes,
//! attributes), and for SG-GAN the `labelled` table: which (image,
//! attribute) pairs kept their label under sparse grouping.
//!
//! `model = "st_gan"`, `"bridgegan"` and `"secgan"` live in their own
//! files; SeCGAN also takes a `parse_faces` input (its frozen parser P).
//!
//! Outputs: `generator.safetensors` (Φ and G_de), `classifier.safetensors`
//! (C, used by `synthesize` for `label_agreement`), `autoencoder.safetensors`
//! (G_en and G_de, attr2face only: reconstructions for `evaluate`, embeddings
//! for a `linear_probe` classifier), `model.json` (network
//! sizes), the `train_log` table, sample grids under `samples/`, and every
//! phase's last checkpoint under `checkpoints/`.

mod bridgegan;
mod secgan;
mod st_gan;

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{ArrayRef, StringArray};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Lineage, StageIo, StageKind, StageOutput, Table};
use crate::data::celeba::Labels;
use crate::data::parquet::{TableWriter, read_columns};
use crate::data::schema::{self, N_ATTRIBUTES, Origin, PlanStrategy, attribute_column};
use crate::data::tensors::{FaceSet, labels_of_batch, strings};
use crate::data_error;
use crate::models::attr2face::{Config as NetConfig, Preset as AePreset};
use crate::models::translator::{self, Kind};
use crate::train::attr2face::{
    self, AutoencoderOptions, ClassifierOptions, Data, MappingOptions, Options,
};
use crate::train::bridgegan::Options as BridgeOptions;
use crate::train::model_file::{self, ModelFile, Networks};
use crate::train::secgan::Options as SecganOptions;
use crate::train::st_gan::Options as StGanOptions;
use crate::train::translation::{self, TranslationOptions};
use crate::train::{Cadence, PhaseEnv};

pub use crate::train::model_file::Model;

/// Network sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Preset {
    /// attr2face / dcgan at 64×64 (Liu et al.).
    #[serde(rename = "paper_64")]
    Paper64,
    /// sggan / stargan at 128×128 (both papers).
    #[serde(rename = "paper_128")]
    Paper128,
    /// Small widths at 32×32, for CPU tests and the quickstart.
    #[serde(rename = "tiny")]
    Tiny,
}

impl Preset {
    pub fn name(self) -> &'static str {
        match self {
            Preset::Paper64 => "paper_64",
            Preset::Paper128 => "paper_128",
            Preset::Tiny => "tiny",
        }
    }
}

fn default_model() -> Model {
    Model::Attr2face
}
fn default_true() -> bool {
    true
}
fn default_one() -> usize {
    1
}
fn default_log_every() -> usize {
    50
}
fn default_sample_every() -> usize {
    500
}
fn default_checkpoint_every() -> usize {
    1000
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `attr2face` (Liu et al.'s method, the default), `dcgan` (its
    /// footnote-4 ablation), `sggan` or `stargan` (translation generators),
    /// `st_gan` (unsupervised, edits through latent codes), `bridgegan`
    /// (label- or reference-guided) or `secgan` (with a semantic branch).
    #[serde(default = "default_model")]
    pub model: Model,
    /// `paper_64` (attr2face, dcgan, st_gan), `paper_128` (sggan, stargan,
    /// bridgegan, secgan) or `tiny`; default the model's paper size.
    #[serde(default)]
    pub preset: Option<Preset>,
    /// Rows per step (default 16). st_gan reads `st_gan.batch_size` instead.
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Train on at most this many training rows (the first ones).
    #[serde(default)]
    pub limit: Option<usize>,
    /// `false`: the "Without Perceptual Loss" ablation.
    #[serde(default = "default_true")]
    pub perceptual_loss: bool,
    /// Table 4: rounds of classifier retraining on augmented data, then Φ again.
    #[serde(default = "default_one")]
    pub recursive_times: usize,
    #[serde(default = "default_log_every")]
    pub log_every: usize,
    #[serde(default = "default_sample_every")]
    pub sample_every: usize,
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: usize,
    /// Overrides the run seed.
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub autoencoder: AutoencoderOptions,
    #[serde(default)]
    pub classifier: ClassifierOptions,
    #[serde(default)]
    pub mapping: MappingOptions,
    /// sggan / stargan: attributes, losses and schedule.
    #[serde(default)]
    pub translation: TranslationOptions,
    /// st_gan: latent layout, losses, schedule and the attribute map.
    #[serde(default)]
    pub st_gan: StGanOptions,
    /// bridgegan: attributes, losses and schedule.
    #[serde(default)]
    pub bridgegan: BridgeOptions,
    /// secgan: attributes, losses and schedule.
    #[serde(default)]
    pub secgan: SecganOptions,
}

impl Config {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.batch_size == Some(0) {
            return Err("batch_size must be at least 1".into());
        }
        if self.model == Model::Secgan {
            return self.validate_secgan();
        } else if self.secgan != SecganOptions::default() {
            return Err(format!(
                "[secgan] is for model = \"secgan\", not {}",
                self.model.name()
            ));
        }
        if self.model == Model::Bridgegan {
            return self.validate_bridgegan();
        } else if self.bridgegan != BridgeOptions::default() {
            return Err(format!(
                "[bridgegan] is for model = \"bridgegan\", not {}",
                self.model.name()
            ));
        }
        if self.model == Model::StGan {
            return self.validate_st_gan();
        } else if self.st_gan != StGanOptions::default() {
            return Err(format!(
                "[st_gan] is for model = \"st_gan\", not {}",
                self.model.name()
            ));
        }
        match (self.model.translator(), self.preset()) {
            (Some(_), Preset::Paper64) => {
                return Err(format!(
                    "preset = \"paper_64\" is attr2face's; {} uses \"paper_128\" or \"tiny\"",
                    self.model.name()
                ));
            }
            (None, Preset::Paper128) => {
                return Err(format!(
                    "preset = \"paper_128\" is for sggan / stargan; {} uses \"paper_64\" or \"tiny\"",
                    self.model.name()
                ));
            }
            _ => {}
        }
        if let Some(kind) = self.model.translator() {
            self.translation.validate(kind)?;
            self.translation_attributes()?;
            if self.recursive_times != 1 {
                return Err(
                    "recursive_times is attr2face's (Table 4); remove it for sggan / stargan"
                        .into(),
                );
            }
        } else if self.translation != TranslationOptions::default() {
            return Err(format!(
                "[translation] is for model = \"sggan\" or \"stargan\", not {}",
                self.model.name()
            ));
        }
        if !(1..=10).contains(&self.recursive_times) {
            return Err(format!(
                "recursive_times = {}: use 1 (no recursion) to 10",
                self.recursive_times
            ));
        }
        if self.limit == Some(0) {
            return Err("limit must be at least 1".into());
        }
        for (key, lr) in [
            ("autoencoder.lr", self.autoencoder.lr),
            ("classifier.lr", self.classifier.lr),
            ("mapping.lr", self.mapping.lr),
            ("mapping.discriminator_lr", self.mapping.discriminator_lr),
        ] {
            if !(lr > 0.0 && lr.is_finite()) {
                return Err(format!("{key} = {lr}: must be a positive number"));
            }
        }
        for (key, e) in [
            ("autoencoder.epochs", self.autoencoder.epochs),
            ("classifier.epochs", self.classifier.epochs),
            ("mapping.epochs", self.mapping.epochs),
        ] {
            if !(e > 0.0 && e.is_finite()) {
                return Err(format!("{key} = {e}: must be positive (or set `steps`)"));
            }
        }
        if !(0.0..=1.0).contains(&self.autoencoder.gamma) {
            return Err("autoencoder.gamma must be in [0, 1]".into());
        }
        Ok(())
    }

    fn validate_st_gan(&self) -> std::result::Result<(), String> {
        if self.translation != TranslationOptions::default() {
            return Err("translation.* keys are for sggan/stargan; st_gan reads st_gan.*".into());
        }
        if self.preset() == Preset::Paper128 {
            return Err("preset = \"paper_128\" is for sggan / stargan; st_gan uses \"paper_64\" or \"tiny\"".into());
        }
        if self.batch_size.is_some() {
            return Err(
                "batch_size: st_gan reads st_gan.batch_size (default 64, 16 with preset \"tiny\")"
                    .into(),
            );
        }
        if self.recursive_times != 1 {
            return Err("recursive_times is attr2face's (Table 4); remove it for st_gan".into());
        }
        if self.limit == Some(0) {
            return Err("limit must be at least 1".into());
        }
        self.st_gan.validate(self.preset() == Preset::Tiny)
    }

    fn validate_bridgegan(&self) -> std::result::Result<(), String> {
        if self.translation != TranslationOptions::default() {
            return Err(
                "translation.* keys are for sggan/stargan; bridgegan reads bridgegan.*".into(),
            );
        }
        if self.preset() == Preset::Paper64 {
            return Err(
                "preset = \"paper_64\" is attr2face's; bridgegan uses \"paper_128\" or \"tiny\""
                    .into(),
            );
        }
        if self.batch_size.is_some() {
            return Err("batch_size: bridgegan reads bridgegan.batch_size (default 48, 8 with preset \"tiny\")".into());
        }
        if self.recursive_times != 1 {
            return Err("recursive_times is attr2face's (Table 4); remove it for bridgegan".into());
        }
        if self.limit == Some(0) {
            return Err("limit must be at least 1".into());
        }
        self.bridgegan.validate()?;
        self.bridgegan_attributes()?;
        Ok(())
    }

    fn validate_secgan(&self) -> std::result::Result<(), String> {
        if self.translation != TranslationOptions::default() {
            return Err("translation.* keys are for sggan/stargan; secgan reads secgan.*".into());
        }
        if self.bridgegan != BridgeOptions::default() || self.st_gan != StGanOptions::default() {
            return Err("[bridgegan] / [st_gan] keys are not secgan's; it reads secgan.*".into());
        }
        if self.preset() == Preset::Paper64 {
            return Err(
                "preset = \"paper_64\" is attr2face's; secgan uses \"paper_128\" or \"tiny\""
                    .into(),
            );
        }
        if self.batch_size.is_some() {
            return Err("batch_size: secgan reads secgan.batch_size (default 16)".into());
        }
        if self.recursive_times != 1 {
            return Err("recursive_times is attr2face's (Table 4); remove it for secgan".into());
        }
        if self.limit == Some(0) {
            return Err("limit must be at least 1".into());
        }
        self.secgan.validate()?;
        self.secgan_attributes()?;
        Ok(())
    }

    /// CelebA indices of SeCGAN's attributes.
    pub fn secgan_attributes(&self) -> std::result::Result<Vec<usize>, String> {
        attribute_indices("secgan.attributes", &self.secgan.attribute_names())
    }

    /// CelebA indices of BridgeGAN's attributes.
    pub fn bridgegan_attributes(&self) -> std::result::Result<Vec<usize>, String> {
        attribute_indices("bridgegan.attributes", &self.bridgegan.attribute_names())
    }

    /// Rows per step of attr2face / dcgan / sggan / stargan.
    pub fn batch(&self) -> usize {
        self.batch_size.unwrap_or(16)
    }

    pub fn preset(&self) -> Preset {
        self.preset.unwrap_or(match self.model {
            Model::Sggan | Model::Stargan | Model::Bridgegan | Model::Secgan => Preset::Paper128,
            _ => Preset::Paper64,
        })
    }

    pub fn network(&self) -> NetConfig {
        NetConfig::preset(match self.preset() {
            Preset::Tiny => AePreset::Tiny,
            _ => AePreset::Paper64,
        })
    }

    /// CelebA indices of the attributes a translation generator edits.
    pub fn translation_attributes(&self) -> std::result::Result<Vec<usize>, String> {
        let kind = self.model.translator().unwrap_or(Kind::Stargan);
        let names: Vec<String> = match &self.translation.attributes {
            Some(v) => v.clone(),
            None => TranslationOptions::default_attributes(kind)
                .into_iter()
                .map(String::from)
                .collect(),
        };
        attribute_indices("translation.attributes", &names)
    }
}

/// CelebA indices of attribute names under config key `key` (1 to 20,
/// known, each once).
fn attribute_indices(key: &str, names: &[String]) -> std::result::Result<Vec<usize>, String> {
    if names.is_empty() || names.len() > 20 {
        return Err(format!(
            "{key}: give 1 to 20 attributes, not {}",
            names.len()
        ));
    }
    let mut out = Vec::new();
    for n in names {
        let i = schema::attribute_by_any_name(n).ok_or_else(|| {
            format!("{key}: unknown attribute `{n}` (use CelebA names such as `Male`, `Smiling`)")
        })?;
        if out.contains(&i) {
            return Err(format!("{key}: `{n}` is listed twice"));
        }
        out.push(i);
    }
    Ok(out)
}

/// Label vectors of a plan's generator rows (for recursive rounds).
fn plan_generator_labels(path: &Path) -> Result<Vec<Labels>> {
    let mut cols = vec!["strategy".to_string()];
    cols.extend((0..N_ATTRIBUTES).map(attribute_column));
    let names: Vec<&str> = cols.iter().map(String::as_str).collect();
    let mut out = Vec::new();
    for b in read_columns(path, &names)? {
        let strategy = strings(&b, 0)?;
        let labels = labels_of_batch(&b, 1)?;
        for (r, l) in labels.into_iter().enumerate() {
            if PlanStrategy::from_name(strategy.value(r))
                .is_some_and(|s| s.origin() == Origin::Generated)
            {
                out.push(l);
            }
        }
    }
    Ok(out)
}

pub fn run(c: &Config, io: &StageIo) -> Result<StageOutput> {
    if c.model == Model::StGan {
        return st_gan::run(c, io);
    }
    if c.model == Model::Bridgegan {
        return bridgegan::run(c, io);
    }
    if c.model == Model::Secgan {
        return secgan::run(c, io);
    }
    if let Some(kind) = c.model.translator() {
        return run_translation(c, kind, io);
    }
    let net = c.network();
    let dev = io.candle_device()?;
    let (faces, train) = load_faces(c, io, net.image_size(), 1)?;
    let val = faces.rows_in("val");
    let plan_labels = match io.optional_input(StageKind::Balance) {
        Some(b) => plan_generator_labels(&b.table("plan")?)?,
        None => Vec::new(),
    };
    io.say(format!(
        "{} `{}` on {} train / {} val faces, preset {}, device {}",
        c.model.name(),
        io.name,
        train.len(),
        val.len(),
        serde_json::to_value(c.preset())?.as_str().unwrap_or("?"),
        io.device
    ));
    let data = Data {
        faces: &faces,
        train,
        val,
        plan_labels,
    };
    let opts = Options {
        model: if c.model == Model::Dcgan {
            attr2face::Model::Dcgan
        } else {
            attr2face::Model::Attr2face
        },
        batch_size: c.batch(),
        perceptual_loss: c.perceptual_loss,
        recursive_times: c.recursive_times,
        seed: c.seed.unwrap_or(io.run_seed),
        autoencoder: c.autoencoder.clone(),
        classifier: c.classifier.clone(),
        mapping: c.mapping.clone(),
    };
    let env = phase_env(c, io);
    let trained = attr2face::train(&net, &opts, &data, &dev, &env)?;
    say_summary(io, &trained.summary);

    // Outputs.
    let out = &io.out_dir;
    let (sha, mut files) = save_generator(
        c,
        io,
        &trained.generator,
        ("classifier.safetensors", &trained.classifier),
        Networks::Attr2face { network: net },
    )?;
    if let Some(ae) = &trained.autoencoder {
        candle_core::safetensors::save(ae, out.join("autoencoder.safetensors"))?;
        files.push("autoencoder.safetensors".to_string());
    }
    files.extend(copy_resume_folder(io)?);
    let rows = super::write_train_log(&out.join("train_log.parquet"), &trained.log)?;
    let mut summary = trained.summary;
    summary["generator_sha256"] = sha.into();
    Ok(StageOutput {
        tables: vec![Table::new("train_log", "train_log.parquet", rows)],
        files,
        summary,
        lineage: Lineage::default(),
    })
}

/// The ingest input's train and val faces at `size`, and the train rows
/// (the first `limit`); at least `min_train` of them, or one line saying so.
pub(super) fn load_faces(
    c: &Config,
    io: &StageIo,
    size: usize,
    min_train: usize,
) -> Result<(FaceSet, Vec<usize>)> {
    let ingest = io.input(StageKind::Ingest)?;
    let faces_path = ingest.table("faces")?;
    io.say(format!(
        "loading train/val faces at {size}×{size} from {}",
        faces_path.display()
    ));
    let faces = FaceSet::load(&faces_path, &["train", "val"], None, size)?;
    let mut train = faces.rows_in("train");
    if let Some(l) = c.limit {
        train.truncate(l);
    }
    if train.is_empty() {
        return Err(data_error!(
            "input `{}` has no `train` rows with images; ingest the train partition",
            ingest.name
        ));
    }
    if train.len() < min_train {
        return Err(data_error!(
            "input `{}` has {} `train` rows with images; {} needs at least {min_train}",
            ingest.name,
            train.len(),
            c.model.name()
        ));
    }
    Ok((faces, train))
}

/// Writes `generator.safetensors`, the judging network `judge` (C or the
/// critic) and `model.json` (model, preset, the generator's sha256 and
/// `sizes`); returns the sha256 and the files written.
pub(super) fn save_generator(
    c: &Config,
    io: &StageIo,
    generator: &std::collections::HashMap<String, candle_core::Tensor>,
    judge: (
        &str,
        &std::collections::HashMap<String, candle_core::Tensor>,
    ),
    networks: Networks,
) -> Result<(String, Vec<String>)> {
    let out = &io.out_dir;
    let gen_path = out.join("generator.safetensors");
    candle_core::safetensors::save(generator, &gen_path)?;
    candle_core::safetensors::save(judge.1, out.join(judge.0))?;
    let sha = hex::encode(Sha256::digest(std::fs::read(&gen_path)?));
    ModelFile {
        version: model_file::VERSION,
        model: c.model,
        preset: c.preset().name().to_string(),
        generator_sha256: sha.clone(),
        networks,
    }
    .write(out)?;
    let files = vec![
        "generator.safetensors".to_string(),
        judge.0.to_string(),
        model_file::FILE.to_string(),
    ];
    Ok((sha, files))
}

/// Where and how often a phase of this stage logs, samples and checkpoints.
pub(super) fn phase_env<'a>(c: &Config, io: &'a StageIo) -> PhaseEnv<'a> {
    PhaseEnv {
        dir: &io.resume_dir,
        cadence: Cadence {
            log_every: c.log_every,
            sample_every: c.sample_every,
            checkpoint_every: c.checkpoint_every,
        },
        quiet: io.quiet,
        label: &io.name,
    }
}

/// Sample grids and the networks of each phase's last checkpoint, from the
/// resume folder into the stage's output (`samples/`,
/// `checkpoints/<phase>/<net>.safetensors`).
pub(super) fn copy_resume_folder(io: &StageIo) -> Result<Vec<String>> {
    let out = &io.out_dir;
    let mut files = copy_tree(&io.resume_dir.join("samples"), out, "samples")?;
    for (phase, name, path) in crate::train::final_checkpoints(&io.resume_dir)? {
        let rel = format!("checkpoints/{phase}/{name}");
        std::fs::create_dir_all(out.join("checkpoints").join(&phase))?;
        std::fs::copy(&path, out.join(&rel))
            .with_context(|| format!("copying {}", path.display()))?;
        files.push(rel);
    }
    Ok(files)
}

/// `model = "sggan" | "stargan"`.
fn run_translation(c: &Config, kind: Kind, io: &StageIo) -> Result<StageOutput> {
    let attrs = c.translation_attributes().map_err(|e| data_error!("{e}"))?;
    let nets = translator::presets(kind, c.preset() == Preset::Tiny, attrs.len());
    let size = nets.0.image_size;
    let dev = io.candle_device()?;
    let (faces, train) = load_faces(c, io, size, 1)?;
    let names: Vec<&str> = attrs.iter().map(|&a| schema::ATTRIBUTES[a]).collect();
    let steps = c.translation.steps(kind);
    io.say(format!(
        "{} `{}` on {} train / {} val faces, attributes {}, preset {}, {steps} steps, device {}",
        c.model.name(),
        io.name,
        train.len(),
        faces.rows_in("val").len(),
        names.join(", "),
        serde_json::to_value(c.preset())?.as_str().unwrap_or("?"),
        io.device
    ));
    let data = translation::Data {
        faces: &faces,
        train: train.clone(),
        val: faces.rows_in("val"),
    };
    let env = phase_env(c, io);
    let seed = c.seed.unwrap_or(io.run_seed);
    let spec = translation::Spec {
        kind,
        nets: nets.clone(),
        attrs: attrs.clone(),
        opts: c.translation.clone(),
        batch: c.batch(),
        seed,
    };
    let trained = translation::train(&spec, &data, &dev, &env)?;
    let f = |k: &str| trained.summary[k].as_f64().unwrap_or(f64::NAN);
    io.say(format!(
        "val: critic's Wasserstein estimate {:.4} → {:.4}; its classification loss on real faces \
         {:.4} → {:.4}; G classification loss {:.4} → {:.4}; L1(G(x, source labels), x) {:.4} → {:.4}",
        f("wasserstein_init"),
        f("wasserstein"),
        f("critic_cls_init"),
        f("critic_cls"),
        f("g_cls_init"),
        f("g_cls"),
        f("rec_l1_init"),
        f("rec_l1")
    ));

    let out = &io.out_dir;
    let (sha, mut files) = save_generator(
        c,
        io,
        &trained.generator,
        ("critic.safetensors", &trained.critic),
        Networks::Translation {
            translator: nets.0,
            critic: nets.1,
            attributes: names.iter().map(|n| n.to_string()).collect(),
            semantic: None,
        },
    )?;
    files.extend(copy_resume_folder(io)?);
    let log_rows = super::write_train_log(&out.join("train_log.parquet"), &trained.log)?;
    let mut tables = vec![Table::new("train_log", "train_log.parquet", log_rows)];
    if kind == Kind::Sggan {
        let n = write_labelled(
            &out.join("labelled.parquet"),
            &faces,
            &train,
            &attrs,
            &trained.labelled,
        )?;
        tables.push(Table::new("labelled", "labelled.parquet", n));
    }
    let mut summary = trained.summary;
    summary["generator_sha256"] = sha.into();
    summary["attributes"] = names.into();
    Ok(StageOutput {
        tables,
        files,
        summary,
        lineage: Lineage::default(),
    })
}

/// The (image, attribute) pairs SG-GAN trained with their label.
fn write_labelled(
    path: &Path,
    faces: &FaceSet,
    train: &[usize],
    attrs: &[usize],
    mask: &[u64],
) -> Result<usize> {
    let (mut ids, mut names, mut values) = (Vec::new(), Vec::new(), Vec::new());
    for (k, &i) in train.iter().enumerate() {
        for (j, &a) in attrs.iter().enumerate() {
            if mask[k] >> j & 1 == 1 {
                ids.push(faces.image_ids[i].as_str());
                names.push(schema::ATTRIBUTES[a]);
                values.push((faces.labels[i] >> a) & 1 == 1);
            }
        }
    }
    let schema = schema::labelled();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(ids)),
        Arc::new(StringArray::from_iter_values(names)),
        Arc::new(arrow::array::BooleanArray::from(values)),
    ];
    let batch = RecordBatch::try_new(schema.clone(), cols)?;
    let mut w = TableWriter::create(path, schema, &[], 1 << 16)?;
    w.write(&batch)?;
    w.finish()
}

fn say_summary(io: &StageIo, s: &serde_json::Value) {
    let f = |v: &serde_json::Value| v.as_f64().map(|x| format!("{x:.4}")).unwrap_or("-".into());
    if let Some(a) = s.get("autoencoder") {
        io.say(format!(
            "autoencoder: val L1 {} at init → {} (k_t {})",
            f(&a["val_rec_l1_init"]),
            f(&a["val_rec_l1"]),
            f(&a["k_t"])
        ));
    }
    if let Some(a) = s.get("classifier") {
        io.say(format!(
            "classifier: val accuracy {} (per-attribute majority {})",
            f(&a["val_accuracy"]),
            f(&a["val_majority_accuracy"])
        ));
    }
    if let Some(a) = s.get("mapping") {
        io.say(format!(
            "mapping: val embedding MSE {} at init → {}",
            f(&a["val_rec_emb_init"]),
            f(&a["val_rec_emb"])
        ));
    }
}

/// Copies files of `src` (recursively) to `out/rel`; returns their paths relative to `out`.
fn copy_tree(src: &Path, out: &Path, rel: &str) -> Result<Vec<String>> {
    let mut files = Vec::new();
    if !src.exists() {
        return Ok(files);
    }
    std::fs::create_dir_all(out.join(rel))?;
    let mut entries: Vec<_> = std::fs::read_dir(src)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        let r = format!("{rel}/{name}");
        if e.file_type()?.is_dir() {
            files.extend(copy_tree(&e.path(), out, &r)?);
        } else {
            std::fs::copy(e.path(), out.join(&r))
                .with_context(|| format!("copying {}", e.path().display()))?;
            files.push(r);
        }
    }
    Ok(files)
}
