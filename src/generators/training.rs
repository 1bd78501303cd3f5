//! What every family's training entry shares: the ingest's faces, where
//! and how often a phase logs and checkpoints, and writing the generator,
//! its judge and `model.json` into the stage folder.

use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::files;
use super::options::Config;
use crate::contract::tables;
use crate::contract::{StageIo, StageKind};
use crate::data::celeba::Partition;
use crate::data::tensors::FaceSet;
use crate::data_error;
use crate::generators::model_file::{self, ModelFile};
use crate::train::{Cadence, PhaseEnv};

/// The ingest input's train and val faces at `size`, and the train rows
/// (the first `limit`); at least `min_train` of them, or one line saying so.
pub fn load_faces(
    c: &Config,
    io: &StageIo,
    size: usize,
    min_train: usize,
) -> Result<(FaceSet, Vec<usize>)> {
    let ingest = io.input(StageKind::Ingest)?;
    let faces_path = ingest.table(tables::FACES)?;
    io.say(format!(
        "loading train/val faces at {size}×{size} from {}",
        faces_path.display()
    ));
    let faces = FaceSet::load(&faces_path, &[Partition::Train, Partition::Val], None, size)?;
    let mut train = faces.rows_in(Partition::Train);
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
/// the family's `layout`); returns the sha256 and the files written.
pub fn save_generator(
    c: &Config,
    io: &StageIo,
    generator: &std::collections::HashMap<String, candle_core::Tensor>,
    judge: (
        &str,
        &std::collections::HashMap<String, candle_core::Tensor>,
    ),
    layout: &impl serde::Serialize,
) -> Result<(String, Vec<String>)> {
    let out = &io.out_dir;
    let gen_path = out.join(files::GENERATOR);
    candle_core::safetensors::save(generator, &gen_path)?;
    candle_core::safetensors::save(judge.1, out.join(judge.0))?;
    let sha = hex::encode(Sha256::digest(std::fs::read(&gen_path)?));
    ModelFile::new(c.model, c.preset().name(), sha.clone(), layout)?.write(out)?;
    let files = vec![
        files::GENERATOR.to_string(),
        judge.0.to_string(),
        model_file::FILE.to_string(),
    ];
    Ok((sha, files))
}

/// Where and how often a phase of this stage logs, samples and checkpoints.
pub fn phase_env<'a>(c: &Config, io: &'a StageIo) -> PhaseEnv<'a> {
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
pub fn copy_resume_folder(io: &StageIo) -> Result<Vec<String>> {
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
