//! `model.json`: what a `train_generator` stage trained, written and read by
//! this one type so that writer and readers cannot disagree. `synthesize`,
//! `train_classifier` (a linear probe on G_en) and `evaluate` rebuild the
//! networks from the sizes recorded here, then load the safetensors beside it.
//!
//! The header (`version`, `model`, `preset`, `generator_sha256`) is the
//! same for every family; the rest of the file is the family's own layout
//! type (its network sizes), written by its `train.rs` and read back by its
//! `load.rs` through [`ModelFile::layout`].
//!
//! The file carries a `version`; a file from another version is refused with
//! a line saying which file and what to do. A file without `version` was
//! written before versioning, with the same fields as version 1.

use std::path::Path;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::FAMILIES;

/// The file name inside a generator stage's folder.
pub const FILE: &str = "model.json";
/// The layout written by this build.
pub const VERSION: u32 = 1;

/// Which generator a `train_generator` stage trains (its `model` key): one
/// of the names the registered families list in `Family::models`, so a
/// model that exists has a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Model(&'static str);

impl Model {
    /// The model of that name, if a registered family trains it.
    pub fn named(name: &str) -> Option<Model> {
        FAMILIES
            .iter()
            .flat_map(|f| f.models.iter())
            .find(|m| **m == name)
            .map(|m| Model(m))
    }

    pub fn name(self) -> &'static str {
        self.0
    }

    /// Every model name, in registry order (for messages).
    pub fn all() -> Vec<&'static str> {
        FAMILIES
            .iter()
            .flat_map(|f| f.models.iter().copied())
            .collect()
    }
}

impl Serialize for Model {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for Model {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Model, D::Error> {
        let name = String::deserialize(d)?;
        Model::named(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown model `{name}`; models are: {}",
                Model::all().join(", ")
            ))
        })
    }
}

/// The contents of `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelFile {
    #[serde(default = "legacy_version")]
    pub version: u32,
    pub model: Model,
    /// The preset the sizes came from (`paper_64`, `paper_128`, `tiny`).
    pub preset: String,
    /// sha256 of `generator.safetensors`, recorded in every synthesized row.
    pub generator_sha256: String,
    /// The family's layout (network sizes and what else its loader needs),
    /// as its own type serialized; see [`ModelFile::layout`].
    #[serde(flatten)]
    pub layout: serde_json::Map<String, serde_json::Value>,
}

fn legacy_version() -> u32 {
    1
}
impl ModelFile {
    /// The header for `model` at `preset`, with the family's `layout`.
    pub fn new<L: Serialize>(
        model: Model,
        preset: &str,
        generator_sha256: String,
        layout: &L,
    ) -> Result<ModelFile> {
        let serde_json::Value::Object(layout) = serde_json::to_value(layout)? else {
            anyhow::bail!("a family's layout must serialize as a table of keys");
        };
        Ok(ModelFile {
            version: VERSION,
            model,
            preset: preset.to_string(),
            generator_sha256,
            layout,
        })
    }

    /// The family's layout, read back as the type that wrote it; a file
    /// that does not match is refused naming `<dir>/model.json`.
    pub fn layout<L: DeserializeOwned>(&self, dir: &Path) -> Result<L> {
        serde_json::from_value(serde_json::Value::Object(self.layout.clone())).map_err(|e| {
            crate::data_error!(
                "{}: {e}; the file does not match this augment's layout for model {}, rerun the stage with `augment run --force --only <stage>`",
                dir.join(FILE).display(),
                self.model.name()
            )
        })
    }

    /// Reads `<dir>/model.json`.
    pub fn read(dir: &Path) -> Result<ModelFile> {
        let path = dir.join(FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let raw: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            crate::data_error!(
                "{}: not valid JSON ({e}); delete the stage folder and rerun",
                path.display()
            )
        })?;
        let version = raw.get("version").and_then(|v| v.as_u64()).unwrap_or(1);
        if version != u64::from(VERSION) {
            return Err(crate::data_error!(
                "{}: model file version {version}, but this augment reads version {VERSION}; rerun the stage with `augment run --force --only <stage>`",
                path.display()
            ));
        }
        serde_json::from_value(raw).map_err(|e| {
            crate::data_error!(
                "{}: {e}; the file does not match this augment's model layout, rerun the stage with `augment run --force --only <stage>`",
                path.display()
            )
        })
    }

    /// Writes `<dir>/model.json`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(FILE);
        std::fs::write(&path, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Layout {
        network: crate::models::attr2face::Config,
    }

    fn attr2face_file() -> ModelFile {
        let layout = Layout {
            network: crate::models::attr2face::Config::tiny(),
        };
        ModelFile::new(
            Model::named("attr2face").unwrap(),
            "tiny",
            "ab".into(),
            &layout,
        )
        .unwrap()
    }

    #[test]
    fn round_trips_and_refuses_other_versions() {
        let dir = tempfile::tempdir().unwrap();
        let f = attr2face_file();
        f.write(dir.path()).unwrap();
        let back = ModelFile::read(dir.path()).unwrap();
        assert_eq!(back, f);
        assert_eq!(
            back.layout::<Layout>(dir.path()).unwrap().network,
            crate::models::attr2face::Config::tiny()
        );

        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(FILE)).unwrap()).unwrap();
        v["version"] = 2.into();
        std::fs::write(dir.path().join(FILE), v.to_string()).unwrap();
        let e = ModelFile::read(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("model file version 2") && e.contains("--force"),
            "{e}"
        );

        // Written before versioning: the same fields without `version`.
        v.as_object_mut().unwrap().remove("version");
        std::fs::write(dir.path().join(FILE), v.to_string()).unwrap();
        assert_eq!(ModelFile::read(dir.path()).unwrap(), f);
    }

    #[test]
    fn unknown_models_and_foreign_layouts_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = serde_json::to_value(attr2face_file()).unwrap();
        v["model"] = "vqgan".into();
        std::fs::write(dir.path().join(FILE), v.to_string()).unwrap();
        let e = ModelFile::read(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("unknown model `vqgan`; models are: attr2face, dcgan"),
            "{e}"
        );

        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Other {
            translator: crate::models::translator::Config,
        }
        let e = attr2face_file()
            .layout::<Other>(dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("model.json")
                && e.contains("missing field `translator`")
                && e.contains("attr2face"),
            "{e}"
        );
    }
}
