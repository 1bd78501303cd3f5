//! The run manifest (`<run dir>/manifest.json`): per stage its fingerprint,
//! the fingerprints of the inputs it was built from, its outputs with row
//! counts, and its wall time. `augment show` and `augment sql` read only this.
//!
//! Each stage folder also carries a stamp ([`STAMP_FILE`]: the stage's name
//! and fingerprint), written inside the temporary folder before it is renamed
//! into place. The manifest's rename is the one commit point: a stage folder
//! whose stamp does not match its manifest record (a run killed between the
//! folder's rename and the manifest's) is never trusted, queried or skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::config_error;
use serde::{Deserialize, Serialize};

use crate::stages::{Lineage, StageKind, Table};

pub const FILE: &str = "manifest.json";
/// The resolved pipeline of the latest `augment run` in this folder.
pub const PIPELINE_FILE: &str = "pipeline.toml";
/// A manifest records a few kilobytes per stage.
const MAX_MANIFEST_BYTES: u64 = 256 << 20;
/// In each stage folder: which stage and fingerprint its outputs are.
pub const STAMP_FILE: &str = ".stage.json";

/// The content of a stage folder's [`STAMP_FILE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub stage: String,
    pub fingerprint: String,
}

impl Stamp {
    pub fn write(&self, stage_dir: &Path) -> Result<()> {
        crate::data::write_atomic(&stage_dir.join(STAMP_FILE), &serde_json::to_vec(self)?)
    }

    /// The stamp of `stage_dir`, if it has a readable one.
    pub fn read(stage_dir: &Path) -> Option<Stamp> {
        let text = crate::limits::read_file(&stage_dir.join(STAMP_FILE), 1 << 20).ok()?;
        serde_json::from_slice(&text).ok()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Manifest {
    pub run_name: String,
    /// Stage names in pipeline order.
    #[serde(default)]
    pub order: Vec<String>,
    pub stages: BTreeMap<String, StageRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRecord {
    pub kind: StageKind,
    pub fingerprint: String,
    pub tool_version: String,
    /// Input stage name → its fingerprint when this stage ran.
    pub inputs: BTreeMap<String, String>,
    pub config: serde_json::Value,
    pub tables: Vec<Table>,
    /// Other files (charts, grids), relative to the stage folder.
    pub files: Vec<String>,
    pub wall_time_s: f64,
    /// Seconds since the Unix epoch.
    pub finished_at: u64,
    /// Stage-specific figures (e.g. the balance summary), for `augment show`.
    pub summary: serde_json::Value,
    /// Where the stage's rows come from, handed to the stages that read it.
    #[serde(default)]
    pub lineage: Lineage,
}

impl Manifest {
    pub fn load(run_dir: &Path) -> Result<Option<Manifest>> {
        let p = run_dir.join(FILE);
        if !p.exists() {
            return Ok(None);
        }
        let text = crate::limits::read_file(&p, MAX_MANIFEST_BYTES)
            .map_err(|e| config_error!("cannot read the run manifest {}: {e}", p.display()))?;
        let m: Manifest = serde_json::from_slice(&text).map_err(|e| {
            config_error!(
                "{} is damaged ({e}); it is the record of which stages are done: \
                 delete it and `augment run` rebuilds every stage of this run folder",
                p.display()
            )
        })?;
        m.check_paths().map_err(|why| {
            config_error!(
                "{}: {why}; a manifest only names files inside its run folder: \
                 delete it and `augment run` rebuilds every stage of this run folder",
                p.display()
            )
        })?;
        Ok(Some(m))
    }

    /// Written to a temporary file, flushed to disk and renamed, so a kill or
    /// a power cut never leaves half a manifest.
    pub fn save(&self, run_dir: &Path) -> Result<()> {
        let dest = run_dir.join(FILE);
        crate::data::write_atomic(&dest, serde_json::to_string_pretty(self)?.as_bytes())
    }

    /// Every stage name is a plain folder name and every output a relative
    /// path below it: `augment sql` and `show` never follow a (hand-edited)
    /// manifest out of the run folder.
    fn check_paths(&self) -> std::result::Result<(), String> {
        for (name, rec) in &self.stages {
            if !crate::pipeline::config::valid_stage_name(name) {
                return Err(format!("stage {name:?} is not a stage name"));
            }
            let files = rec.tables.iter().map(|t| &t.file).chain(&rec.files);
            for f in files {
                let inside = Path::new(f)
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
                if f.is_empty() || !inside {
                    return Err(format!(
                        "stage `{name}` records the output {f:?}, which is not a path inside its folder"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every table of every committed stage: (stage, table, absolute path,
    /// rows). A stage whose folder's stamp disagrees with its record (a
    /// commit interrupted by a kill) is left out.
    pub fn tables(&self, run_dir: &Path) -> Vec<(String, String, PathBuf, usize)> {
        let mut out = Vec::new();
        for name in self.ordered_names() {
            let rec = &self.stages[&name];
            let stamp = Stamp::read(&run_dir.join(&name));
            if stamp.is_none_or(|s| s.fingerprint != rec.fingerprint) {
                continue;
            }
            for t in &rec.tables {
                out.push((
                    name.clone(),
                    t.name.clone(),
                    run_dir.join(&name).join(&t.file),
                    t.rows,
                ));
            }
        }
        out
    }

    /// Recorded stages, pipeline order first.
    pub fn ordered_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .order
            .iter()
            .filter(|n| self.stages.contains_key(*n))
            .cloned()
            .collect();
        for k in self.stages.keys() {
            if !names.contains(k) {
                names.push(k.clone());
            }
        }
        names
    }
}

impl StageRecord {
    /// All recorded outputs are on disk.
    pub fn outputs_exist(&self, stage_dir: &Path) -> bool {
        self.check_outputs(stage_dir).is_ok()
    }

    /// What is wrong with the recorded outputs, if anything: a missing stage
    /// folder or file, or a table whose Parquet footer cannot be read or
    /// counts other rows than recorded (a file cut short or edited by hand).
    /// Reads only each table's footer.
    pub fn check_outputs(&self, stage_dir: &Path) -> std::result::Result<(), String> {
        if !stage_dir.is_dir() {
            return Err(format!("{} is missing", stage_dir.display()));
        }
        match Stamp::read(stage_dir) {
            Some(s) if s.fingerprint == self.fingerprint => {}
            Some(s) => {
                return Err(format!(
                    "{} holds the outputs of fingerprint {}, the manifest records {} \
                     (a run was stopped while committing it)",
                    stage_dir.display(),
                    short(&s.fingerprint),
                    short(&self.fingerprint)
                ));
            }
            None => {
                return Err(format!(
                    "{} has no readable {STAMP_FILE} (written by an older augment, or damaged)",
                    stage_dir.display()
                ));
            }
        }
        for f in &self.files {
            let path = stage_dir.join(f);
            if !path.is_file() {
                return Err(format!("{} is missing", path.display()));
            }
        }
        for t in &self.tables {
            let path = stage_dir.join(&t.file);
            if !path.is_file() {
                return Err(format!("{} is missing", path.display()));
            }
            let rows = std::fs::File::open(&path)
                .map_err(|e| e.to_string())
                .and_then(|f| {
                    parquet::file::reader::SerializedFileReader::new(f).map_err(|e| e.to_string())
                })
                .map(|r| {
                    use parquet::file::reader::FileReader;
                    r.metadata().file_metadata().num_rows()
                });
            match rows {
                Err(e) => return Err(format!("{} is damaged ({e})", path.display())),
                Ok(n) if n as usize != t.rows => {
                    return Err(format!(
                        "{} has {n} rows, the manifest recorded {}",
                        path.display(),
                        t.rows
                    ));
                }
                Ok(_) => {}
            }
        }
        Ok(())
    }
}

/// The first 12 hex digits of a fingerprint, as printed.
pub fn short(fingerprint: &str) -> &str {
    fingerprint.get(..12).unwrap_or(fingerprint)
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
