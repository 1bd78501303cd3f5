//! The options of a `train_generator` stage (`[stages.<name>]` with
//! `kind = "train_generator"`): the keys every family reads (`model`,
//! `preset`, `limit`, the logging cadence, `seed`) and each family's own
//! table (`[translation]`, `[st_gan]`, `[bridgegan]`, `[secgan]`; attr2face's
//! `[autoencoder]`, `[classifier]`, `[mapping]`). A table of another model is
//! refused with a line naming the model it belongs to.

use serde::{Deserialize, Serialize};

use crate::data::schema;
use crate::models::attr2face::Config as Attr2faceNet;
use crate::models::translator::Kind;
use crate::train::attr2face::{AutoencoderOptions, ClassifierOptions, MappingOptions};
use crate::train::bridgegan::Options as BridgeOptions;
use crate::train::secgan::Options as SecganOptions;
use crate::train::st_gan::Options as StGanOptions;
use crate::train::translation::TranslationOptions;

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
    /// The keys the pipeline file wrote for this stage (not serialized):
    /// a family's table under another model is refused by its presence,
    /// even when every value in it is a default.
    #[serde(skip)]
    pub written: std::collections::BTreeSet<String>,
}

/// attr2face's own keys (`model = "attr2face"` or `"dcgan"`).
const ATTR2FACE_KEYS: [&str; 4] = ["autoencoder", "classifier", "mapping", "perceptual_loss"];

impl Config {
    /// Whether the pipeline file wrote `key` for this stage.
    fn wrote(&self, key: &str) -> bool {
        self.written.contains(key)
    }

    /// Checks the options: those of the stage's model, and that no table
    /// of another model was written.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.batch_size == Some(0) {
            return Err("batch_size must be at least 1".into());
        }
        if !matches!(self.model, Model::Attr2face | Model::Dcgan)
            && let Some(k) = ATTR2FACE_KEYS.iter().find(|k| self.wrote(k))
        {
            return Err(format!(
                "{k} is for model = \"attr2face\" or \"dcgan\", not {}",
                self.model.name()
            ));
        }
        if self.model == Model::Secgan {
            return self.validate_secgan();
        } else if self.wrote("secgan") {
            return Err(format!(
                "[secgan] is for model = \"secgan\", not {}",
                self.model.name()
            ));
        }
        if self.model == Model::Bridgegan {
            return self.validate_bridgegan();
        } else if self.wrote("bridgegan") {
            return Err(format!(
                "[bridgegan] is for model = \"bridgegan\", not {}",
                self.model.name()
            ));
        }
        if self.model == Model::StGan {
            return self.validate_st_gan();
        } else if self.wrote("st_gan") {
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
        } else if self.wrote("translation") {
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
        if self.wrote("translation") {
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
        if self.wrote("translation") {
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
        if self.wrote("translation") {
            return Err("translation.* keys are for sggan/stargan; secgan reads secgan.*".into());
        }
        if self.wrote("bridgegan") || self.wrote("st_gan") {
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

    /// attr2face's network sizes at the stage's preset.
    pub fn network(&self) -> Attr2faceNet {
        match self.preset() {
            Preset::Tiny => Attr2faceNet::tiny(),
            _ => Attr2faceNet::paper_64(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The stage's keys as the pipeline hands them: parsed, with the keys it wrote.
    fn config(toml_text: &str) -> Config {
        let v: toml::Value = toml::from_str(toml_text).unwrap();
        let mut c: Config = v.clone().try_into().unwrap();
        c.written = v.as_table().unwrap().keys().cloned().collect();
        c
    }

    #[test]
    fn another_models_table_is_refused_even_when_it_holds_defaults() {
        // `st_gan.variant = "global"` is the default: the table still is st_gan's.
        let c = config("model = \"stargan\"\n[st_gan]\nvariant = \"global\"");
        assert_eq!(
            c.validate().unwrap_err(),
            "[st_gan] is for model = \"st_gan\", not stargan"
        );
        let c = config("model = \"sggan\"\n[autoencoder]\nsteps = 10");
        assert_eq!(
            c.validate().unwrap_err(),
            "autoencoder is for model = \"attr2face\" or \"dcgan\", not sggan"
        );
        config("model = \"dcgan\"\nperceptual_loss = false")
            .validate()
            .unwrap();
        config("model = \"stargan\"\n[translation]\nsteps = 10")
            .validate()
            .unwrap();
    }
}
