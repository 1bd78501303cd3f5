//! The options of a `train_generator` stage (`[stages.<name>]` with
//! `kind = "train_generator"`): the keys every family reads ([`Config`]:
//! `model`, `preset`, `limit`, the logging cadence, `seed`) and the keys of
//! the family that trains `model`, which are that family's own serde type
//! ([`FamilyOptions`]: e.g. `[st_gan]` for ST-GAN, `batch_size` and
//! `[translation]` for sggan / stargan). A key the family's type does not
//! have is an error naming the model it belongs to, if any.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{FAMILIES, Family, of_model};
use crate::data::schema;

pub use super::model_file::Model;

/// Network sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Preset {
    /// attr2face / dcgan / st_gan at 64×64 (Liu et al.; Zhang et al.).
    #[serde(rename = "paper_64")]
    Paper64,
    /// sggan / stargan / bridgegan / secgan at 128×128 (their papers).
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
    Model::named("attr2face").expect("attr2face is registered (FAMILIES)")
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

/// The keys of a `train_generator` stage that every family reads, and the
/// family's own keys as it checked them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// `attr2face` (Liu et al.'s method, the default), `dcgan` (its
    /// footnote-4 ablation), `sggan` or `stargan` (translation generators),
    /// `st_gan` (unsupervised, edits through latent codes), `bridgegan`
    /// (label- or reference-guided) or `secgan` (with a semantic branch):
    /// any name in a registered family's `models`.
    #[serde(default = "default_model")]
    pub model: Model,
    /// One of the family's `presets`; default its paper's size (the first).
    #[serde(default)]
    pub preset: Option<Preset>,
    /// Train on at most this many training rows (the first ones).
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default = "default_log_every")]
    pub log_every: usize,
    #[serde(default = "default_sample_every")]
    pub sample_every: usize,
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: usize,
    /// Overrides the run seed.
    #[serde(default)]
    pub seed: Option<u64>,
    /// The family's own keys. [`Config::from_toml`] parses them as the
    /// family's type, checks them and stores them back with every default
    /// filled in; the family reads them with [`Config::options`].
    #[serde(flatten)]
    pub options: serde_json::Map<String, serde_json::Value>,
}

/// A family's own keys with every default filled in, as stored in [`Config::options`].
pub type Resolved = serde_json::Map<String, serde_json::Value>;

/// The keys every family reads (those of [`Config`]).
const COMMON_KEYS: [&str; 7] = [
    "model",
    "preset",
    "limit",
    "log_every",
    "sample_every",
    "checkpoint_every",
    "seed",
];

impl Config {
    /// The family that trains the stage's model.
    pub fn family(&self) -> &'static Family {
        of_model(self.model)
    }

    /// The stage's preset: the one written, or its family's paper size.
    pub fn preset(&self) -> Preset {
        self.preset.unwrap_or(self.family().presets[0])
    }

    /// A stage's keys as the pipeline file wrote them: the common keys
    /// checked, and the family's own keys parsed as its type, checked and
    /// kept with every default filled in (`Family::options`).
    pub fn from_toml(value: toml::Value) -> std::result::Result<Config, String> {
        let toml::Value::Table(mut own) = value.clone() else {
            return Err("a stage is a table of keys".into());
        };
        own.retain(|k, _| !COMMON_KEYS.contains(&k));
        let mut c: Config = value
            .try_into()
            .map_err(|e: toml::de::Error| e.message().to_string())?;
        let family = c.family();
        if c.limit == Some(0) {
            return Err("limit must be at least 1".into());
        }
        if let Some(p) = c.preset
            && !family.presets.contains(&p)
        {
            let names: Vec<String> = family
                .presets
                .iter()
                .map(|p| format!("\"{}\"", p.name()))
                .collect();
            return Err(format!(
                "preset = \"{}\" is not one of {}'s; use {}",
                p.name(),
                c.model.name(),
                names.join(" or ")
            ));
        }
        c.options = (family.options)(&c, own)?;
        Ok(c)
    }

    /// The family's own keys as its type `T`. They were checked when the
    /// pipeline loaded ([`Config::from_toml`]), so a failure here is a bug.
    pub fn options<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        Ok(serde_json::from_value(serde_json::Value::Object(
            self.options.clone(),
        ))?)
    }
}

/// A family's own keys of a `train_generator` stage, as one serde type
/// (with `#[serde(default, deny_unknown_fields)]`).
pub trait FamilyOptions: Serialize + DeserializeOwned {
    /// Checks the values; `c` holds the common keys.
    fn check(&self, c: &Config) -> std::result::Result<(), String>;
}

/// `Family::options` of a family whose keys are `T`: parses the stage's
/// own keys `own` (as the pipeline file wrote them) as `T`, refusing a key
/// `T` lacks with the model it belongs to; checks them; returns them with
/// every default filled in.
pub fn resolve<T: FamilyOptions>(
    c: &Config,
    own: toml::Table,
) -> std::result::Result<Resolved, String> {
    let keys: Vec<String> = own.keys().cloned().collect();
    let parsed: T = toml::Value::Table(own)
        .try_into()
        .map_err(|e: toml::de::Error| {
            let msg = e.message().to_string();
            unknown_key_owner(c, &keys, &msg).unwrap_or(msg)
        })?;
    parsed.check(c)?;
    match serde_json::to_value(&parsed) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        _ => Err(format!(
            "the options of model {} do not serialize as a table (a bug)",
            c.model.name()
        )),
    }
}

/// For `Family::option_keys`: the top-level keys of a family's type `T`.
pub fn keys<T: DeserializeOwned>() -> &'static [&'static str] {
    fields::of::<T>()
}

/// Serde's "unknown field `k`" for a key of the stage, in the pipeline's
/// words: whose key it is, or which keys the model takes.
fn unknown_key_owner(c: &Config, written: &[String], serde_message: &str) -> Option<String> {
    let key = serde_message
        .strip_prefix("unknown field `")?
        .split_once('`')?
        .0;
    // Only a top-level key of the stage; a nested one keeps serde's message.
    if !written.iter().any(|k| k == key) {
        return None;
    }
    let model = c.model.name();
    let own: Vec<String> = (c.family().option_keys)()
        .iter()
        .map(|k| format!("`{k}`"))
        .collect();
    let owners: Vec<String> = FAMILIES
        .iter()
        .filter(|f| (f.option_keys)().contains(&key))
        .flat_map(|f| f.models.iter().map(|m| format!("\"{m}\"")))
        .collect();
    Some(if owners.is_empty() {
        format!(
            "unknown key `{key}` for model = \"{model}\"; its keys are {}, {}",
            COMMON_KEYS.join(", "),
            joined(&own, "and")
        )
    } else {
        format!(
            "`{key}` is for model = {}, not {model}; {model} reads {}",
            joined(&owners, "or"),
            joined(&own, "and")
        )
    })
}

/// "a", "a or b", "a, b or c" (with `word` "or").
fn joined(items: &[String], word: &str) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} {word} {last}", rest.join(", ")),
    }
}

/// CelebA indices of attribute names under config key `key` (1 to 20,
/// known, each once).
pub fn attribute_indices(key: &str, names: &[String]) -> std::result::Result<Vec<usize>, String> {
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

/// The field names a derived `Deserialize` declares: serde hands them to
/// `Deserializer::deserialize_struct`, which this deserializer records
/// before refusing to go on.
mod fields {
    use serde::de::{self, Deserializer, Visitor};

    struct Fields(Option<&'static [&'static str]>);

    impl<'de> Deserializer<'de> for &mut Fields {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("only a struct's field names are read"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = Some(fields);
            Err(de::Error::custom("only a struct's field names are read"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    /// The field names of struct `T` (empty for any other shape).
    pub fn of<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
        let mut f = Fields(None);
        let _ = T::deserialize(&mut f);
        f.0.unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stage's keys as the pipeline hands them: parsed, then resolved.
    fn config(toml_text: &str) -> std::result::Result<Config, String> {
        Config::from_toml(toml::from_str(toml_text).unwrap())
    }

    #[test]
    fn another_models_key_is_an_unknown_key_naming_its_model() {
        // `st_gan.variant = "global"` is the default: the table still is st_gan's.
        assert_eq!(
            config("model = \"stargan\"\n[st_gan]\nvariant = \"global\"").unwrap_err(),
            "`st_gan` is for model = \"st_gan\", not stargan; stargan reads `batch_size` and `translation`"
        );
        assert_eq!(
            config("model = \"sggan\"\n[autoencoder]\nsteps = 10").unwrap_err(),
            "`autoencoder` is for model = \"attr2face\" or \"dcgan\", not sggan; sggan reads `batch_size` and `translation`"
        );
        assert_eq!(
            config("model = \"secgan\"\nbatch_size = 8").unwrap_err(),
            "`batch_size` is for model = \"attr2face\", \"dcgan\", \"sggan\" or \"stargan\", not secgan; secgan reads `secgan`"
        );
        assert_eq!(
            config("model = \"st_gan\"\nsteps = 8").unwrap_err(),
            "unknown key `steps` for model = \"st_gan\"; its keys are model, preset, limit, log_every, sample_every, checkpoint_every, seed, `st_gan`"
        );
        // A nested key keeps serde's words.
        let e = config("model = \"st_gan\"\n[st_gan]\nstepz = 8").unwrap_err();
        assert!(e.starts_with("unknown field `stepz`"), "{e}");
        let e = config("model = \"vqgan\"").unwrap_err();
        assert!(e.starts_with("unknown model `vqgan`; models are: attr2face, dcgan, sggan, stargan, st_gan, bridgegan, secgan"), "{e}");
        config("model = \"dcgan\"\nperceptual_loss = false").unwrap();
        config("model = \"stargan\"\n[translation]\nsteps = 10").unwrap();
    }

    #[test]
    fn presets_are_the_familys_and_default_to_its_paper_size() {
        assert_eq!(
            config("model = \"st_gan\"").unwrap().preset(),
            Preset::Paper64
        );
        assert_eq!(
            config("model = \"secgan\"").unwrap().preset(),
            Preset::Paper128
        );
        assert_eq!(
            config("model = \"bridgegan\"\npreset = \"paper_64\"").unwrap_err(),
            "preset = \"paper_64\" is not one of bridgegan's; use \"paper_128\" or \"tiny\""
        );
        assert_eq!(config("limit = 0").unwrap_err(), "limit must be at least 1");
    }

    #[test]
    fn resolved_options_hold_every_default_and_read_back() {
        let c = config("model = \"stargan\"\nbatch_size = 4").unwrap();
        assert_eq!(c.options["batch_size"], 4);
        assert!(c.options["translation"].is_object());
        // What was resolved reads back as the family's type, and from the
        // stage's recorded config (`manifest.json`, read by `augment report`).
        let o: crate::generators::translation::Options = c.options().unwrap();
        assert_eq!(o.batch_size, 4);
        let stored: Config = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(stored.options, c.options);
        assert_eq!(stored.model, c.model);
        // NaN reaches the family's checks (JSON has no NaN).
        assert_eq!(
            config("model = \"bridgegan\"\nbridgegan.lr = nan").unwrap_err(),
            "bridgegan.lr = NaN: must be a positive number"
        );
    }

    #[test]
    fn every_family_lists_its_keys() {
        for f in FAMILIES {
            assert!(!(f.option_keys)().is_empty(), "{}", f.name);
            for k in (f.option_keys)() {
                assert!(
                    !COMMON_KEYS.contains(k),
                    "{}: `{k}` is a common key",
                    f.name
                );
            }
        }
        assert_eq!(fields::of::<u32>(), &[] as &[&str]);
    }
}
