//! `model.json`: what a `train_generator` stage trained, written and read by
//! this one type so that writer and readers cannot disagree. `synthesize`,
//! `train_classifier` (a linear probe on G_en) and `evaluate` rebuild the
//! networks from the sizes recorded here, then load the safetensors beside it.
//!
//! The file carries a `version`; a file from another version is refused with
//! a line saying which file and what to do. A file without `version` was
//! written before versioning, with the same fields as version 1.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::models::{attr2face, bridgegan, critic, st_gan, translator};

/// The file name inside a generator stage's folder.
pub const FILE: &str = "model.json";
/// The layout written by this build.
pub const VERSION: u32 = 1;

/// Which generator a `train_generator` stage trains (its `model` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    /// The paper's method (Liu et al.): labels → face.
    Attr2face,
    /// Footnote-4 ablation of Liu et al.
    Dcgan,
    /// SG-GAN: one input, one output per attribute value (translation).
    Sggan,
    /// StarGAN: image + target labels → image (translation).
    Stargan,
    /// ST-GAN: unsupervised InfoGAN + encoder; edits by changing latent codes.
    StGan,
    /// BridgeGAN: image + att_diff, guided by labels (M) or a reference face (E).
    Bridgegan,
    /// SeCGAN: StarGAN-layout G_rgb on y_trg − y_src, trained beside a
    /// semantic branch through a frozen face parser.
    Secgan,
}

impl Model {
    pub fn name(self) -> &'static str {
        match self {
            Model::Attr2face => "attr2face",
            Model::Dcgan => "dcgan",
            Model::Sggan => "sggan",
            Model::Stargan => "stargan",
            Model::StGan => "st_gan",
            Model::Bridgegan => "bridgegan",
            Model::Secgan => "secgan",
        }
    }

    /// The translator kind of an image-to-image model.
    pub fn translator(self) -> Option<translator::Kind> {
        match self {
            Model::Sggan => Some(translator::Kind::Sggan),
            Model::Stargan => Some(translator::Kind::Stargan),
            Model::Attr2face | Model::Dcgan | Model::StGan | Model::Bridgegan | Model::Secgan => {
                None
            }
        }
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
    #[serde(flatten)]
    pub networks: Networks,
}

fn legacy_version() -> u32 {
    1
}

/// The network sizes, by model family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Networks {
    /// sggan / stargan / secgan: G, the critic (D with its class head) and
    /// the CelebA names of the attributes they edit, in label order; SeCGAN
    /// adds its semantic branch (not needed to edit).
    Translation {
        translator: translator::Config,
        critic: critic::Config,
        attributes: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        semantic: Option<Semantic>,
    },
    /// st_gan: G, D + Q and E (`generator`, `critic`, `encoder.safetensors`),
    /// their sizes and latent layout, the variant, LST-GAN's mask and the blending.
    StGan {
        st_gan: st_gan::Config,
        /// `global` or `local` (LST-GAN).
        variant: String,
        /// LST-GAN's box M, [top, left, height, width] fractions.
        mask: Option<[f64; 4]>,
        /// How synthesize puts an edit back: `poisson`, `mask` or `none`.
        blend: crate::train::st_gan::Blend,
        /// sha256 of `encoder.safetensors`.
        encoder_sha256: String,
    },
    /// bridgegan: G + M + E (`generator.safetensors`), D + C
    /// (`critic.safetensors`), and the CelebA names of att_diff's attributes.
    Bridgegan {
        bridgegan: bridgegan::Config,
        attributes: Vec<String>,
    },
    /// attr2face / dcgan: Φ, G_de, C, the discriminators and (attr2face) the autoencoder.
    Attr2face { network: attr2face::Config },
}

/// SeCGAN's semantic branch and the parser it was trained through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Semantic {
    /// G_seg (`semantic_generator.safetensors`) and D_seg (`semantic_critic.safetensors`).
    pub generator: translator::Config,
    pub critic: critic::Config,
    /// The segment classes, in channel order.
    pub classes: Vec<String>,
    /// The parse_faces stage and the sha256 of its `parser.safetensors`.
    pub parser_stage: String,
    pub parser_sha256: String,
}

impl ModelFile {
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

    fn attr2face_file() -> ModelFile {
        ModelFile {
            version: VERSION,
            model: Model::Attr2face,
            preset: "tiny".into(),
            generator_sha256: "ab".into(),
            networks: Networks::Attr2face {
                network: attr2face::Config::tiny(),
            },
        }
    }

    #[test]
    fn round_trips_and_refuses_other_versions() {
        let dir = tempfile::tempdir().unwrap();
        let f = attr2face_file();
        f.write(dir.path()).unwrap();
        assert_eq!(ModelFile::read(dir.path()).unwrap(), f);

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
}
