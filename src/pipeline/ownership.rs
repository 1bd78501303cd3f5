//! Which folders `augment run` may write into, checked before anything is
//! written (and by `--dry-run`), whatever `--force` says.
//!
//! A run folder is ours when it does not exist yet, is empty, holds our
//! `manifest.json`, or holds nothing but what a run writes (stage folders
//! carrying their [`STAMP_FILE`], `pipeline.toml`, the lock and a killed
//! run's leftovers: a run whose manifest was deleted). Any other folder is
//! refused: a run replaces folders named like its stages, so pointing
//! `run.dir` at a data folder would delete the user's files. A run folder
//! may also never be, or contain, one of the pipeline's inputs (the
//! pipeline file's folder, a dataset root, a weights file).

use std::path::{Component, Path, PathBuf};

use anyhow::Result;

use crate::config_error;
use crate::pipeline::config::Pipeline;
use crate::pipeline::lock;
use crate::pipeline::manifest::{self, Manifest, STAMP_FILE};

/// Refuses a `run.dir` that is not ours or that holds an input.
pub fn check_run_dir(p: &Pipeline) -> Result<()> {
    let run_dir = absolute(&p.run.dir);
    for (what, input, is_stage_input) in inputs(p) {
        let input = absolute(&input);
        // Inside a stage's input folder (a dataset root) a run would add
        // to the data it reads; the pipeline's folder is the usual parent
        // of `runs/`.
        let inside = is_stage_input && input.is_dir() && run_dir.starts_with(&input);
        if input.starts_with(&run_dir) || inside {
            let relation = if input == run_dir {
                "is"
            } else if inside {
                "is inside"
            } else {
                "contains"
            };
            return Err(config_error!(
                "{}: [run] dir = {} {relation} {what} {}; a run replaces what is in its folder, so choose a run folder of its own (e.g. dir = \"runs/{}\")",
                p.file.display(),
                run_dir.display(),
                input.display(),
                p.run.name
            ));
        }
    }
    check_contents(&run_dir).map_err(|why| {
        config_error!(
            "{}: [run] dir = {}: {why}; augment writes only into a new or empty folder or one of its own run folders: choose another dir (or --set run.dir=DIR)",
            p.file.display(),
            run_dir.display()
        )
    })
}

/// The paths a pipeline reads from outside its run folder, with what each
/// is and whether a stage reads it (rather than it holding the pipeline).
fn inputs(p: &Pipeline) -> Vec<(String, PathBuf, bool)> {
    let mut out = Vec::new();
    if let Some(folder) = p.file.parent() {
        let folder = if folder.as_os_str().is_empty() {
            Path::new(".")
        } else {
            folder
        };
        out.push((
            "the pipeline file's folder".to_string(),
            folder.to_path_buf(),
            false,
        ));
    }
    for def in &p.stages {
        for (key, path) in def.config.input_paths() {
            out.push((format!("[stages.{}] {key}", def.name), path, true));
        }
    }
    out
}

/// Whether `dir` may be used as a run folder; otherwise why not.
fn check_contents(dir: &Path) -> std::result::Result<(), String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(_) if dir.exists() && !dir.is_dir() => {
            return Err("it exists and is not a folder".into());
        }
        Err(e) => return Err(format!("cannot list it ({e})")),
    };
    let mut foreign = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot list it ({e})"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_ours(&entry.path(), &name) {
            foreign.push(name);
        }
    }
    let has_manifest = foreign.iter().any(|n| n == manifest::FILE);
    if has_manifest && Manifest::load(dir).is_ok() {
        // Our manifest: the folder is a run folder, whatever else the user
        // put in it (we never touch what the manifest does not record).
        return Ok(());
    }
    // A damaged manifest among our own outputs is ours too (loading it
    // then says how to recover); beside anything else it is not.
    foreign.retain(|n| n != manifest::FILE || !has_manifest_only_damage(dir));
    if foreign.is_empty() {
        return Ok(());
    }
    foreign.sort();
    let shown: Vec<String> = foreign.iter().take(3).map(|n| format!("{n:?}")).collect();
    let more = if foreign.len() > 3 {
        format!(" and {} more", foreign.len() - 3)
    } else {
        String::new()
    };
    Err(format!(
        "the folder exists and is not an augment run folder (it holds {}{more}, and no {} of ours)",
        shown.join(", "),
        manifest::FILE
    ))
}

/// A damaged `manifest.json` in a folder that otherwise holds only our
/// outputs, with at least one stamped stage folder or our `pipeline.toml`.
fn has_manifest_only_damage(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let mut evidence = false;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == manifest::FILE {
            continue;
        }
        if !is_ours(&entry.path(), &name) {
            return false;
        }
        evidence |= !name.starts_with('.');
    }
    evidence
}

/// What a run writes at the top of its folder.
fn is_ours(path: &Path, name: &str) -> bool {
    name == manifest::PIPELINE_FILE
        || name == lock::FILE
        || lock::is_leftover_name(name)
        || (path.is_dir() && path.join(STAMP_FILE).is_file())
}

/// `path` made absolute with symbolic links resolved as far as it exists,
/// so that `runs/../data` and a link to `data` compare equal to `data`.
pub fn absolute(path: &Path) -> PathBuf {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = path.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            let mut out = real;
            for c in rest.iter().rev() {
                match c {
                    Component::ParentDir => {
                        out.pop();
                    }
                    Component::CurDir => {}
                    c => out.push(c),
                }
            }
            return out;
        }
        match (existing.parent(), existing.components().next_back()) {
            (Some(parent), Some(last)) => {
                rest.push(last);
                existing = parent;
            }
            _ => return path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_resolves_dots_and_missing_tails() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().canonicalize().unwrap();
        std::fs::create_dir(real.join("data")).unwrap();
        assert_eq!(absolute(&real.join("runs/../data")), real.join("data"));
        assert_eq!(absolute(&real.join("new/a/../b")), real.join("new/b"));
        std::os::unix::fs::symlink(real.join("data"), real.join("link")).unwrap();
        assert_eq!(absolute(&real.join("link/x")), real.join("data/x"));
    }

    #[test]
    fn only_new_empty_or_own_folders_are_accepted() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        assert!(check_contents(&dir.join("new")).is_ok());
        assert!(check_contents(dir).is_ok(), "empty");
        std::fs::create_dir(dir.join("ingest")).unwrap();
        std::fs::write(dir.join("ingest").join(STAMP_FILE), "{}").unwrap();
        std::fs::write(dir.join(manifest::PIPELINE_FILE), "").unwrap();
        std::fs::create_dir(dir.join(".balance.tmp.77")).unwrap();
        std::fs::write(dir.join(lock::FILE), "").unwrap();
        assert!(check_contents(dir).is_ok(), "a run without its manifest");
        std::fs::write(dir.join(manifest::FILE), "{ damaged").unwrap();
        assert!(check_contents(dir).is_ok(), "damage among our outputs");
        std::fs::create_dir(dir.join("img_align_celeba")).unwrap();
        let why = check_contents(dir).unwrap_err();
        assert!(
            why.contains("\"img_align_celeba\"") && why.contains("\"manifest.json\""),
            "{why}"
        );
        std::fs::write(
            dir.join(manifest::FILE),
            r#"{"run_name": "r", "stages": {}}"#,
        )
        .unwrap();
        assert!(check_contents(dir).is_ok(), "our manifest: a run folder");
        let file = dir.join("file");
        std::fs::write(&file, "").unwrap();
        assert_eq!(
            check_contents(&file).unwrap_err(),
            "it exists and is not a folder"
        );
    }
}
