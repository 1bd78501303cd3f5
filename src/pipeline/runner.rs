//! Runs a [`Pipeline`]: stages in dependency order, each skipped when its
//! fingerprint is unchanged and its outputs exist, each written into a
//! temporary sibling folder and renamed into place only when it succeeded,
//! so a killed run never leaves a half-written stage that looks complete.
//!
//! Committing a stage: its temporary folder gets the stage's stamp
//! (name and fingerprint), the previous folder is moved aside, the new one
//! renamed into place, then the manifest is renamed over the old one: that
//! last rename is the commit. A kill before it leaves a folder whose stamp
//! disagrees with the manifest, which every later run, `show` and `sql`
//! treat as missing. Only a run folder that is ours is written to
//! ([`super::ownership`]), and only stage folders that the manifest or a
//! stamp say are ours are replaced.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::config_error;
use crate::pipeline::config::{Pipeline, StageDef};
use crate::pipeline::lock::{self, RunLock};
use crate::pipeline::manifest::{self, Manifest, StageRecord, Stamp};
use crate::pipeline::ownership;
use crate::stages::{self, InputStage, StageIo};

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub only: Vec<String>,
    pub force: bool,
    pub dry_run: bool,
    pub quiet: bool,
}

/// Freshness of a stage in a run folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Fresh,
    Stale,
    Missing,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Fresh => "fresh",
            Status::Stale => "stale",
            Status::Missing => "missing",
        }
    }
}

/// hash(tool version + kind + stage config + run seed + input fingerprints + external data).
pub fn fingerprint(
    def: &StageDef,
    input_fps: &BTreeMap<String, String>,
    external: &str,
    run_seed: u64,
) -> Result<String> {
    let material = serde_json::json!({
        "run_seed": run_seed,
        "tool": crate::data::VERSION,
        "kind": def.kind().name(),
        "config": serde_json::to_value(&def.config)?,
        "inputs": input_fps,
        "external": external,
    });
    Ok(hex::encode(Sha256::digest(material.to_string().as_bytes())))
}

/// The fingerprint of every stage, in pipeline order.
pub fn fingerprints(p: &Pipeline) -> Result<BTreeMap<String, String>> {
    let mut fps: BTreeMap<String, String> = BTreeMap::new();
    for def in &p.stages {
        let inputs: BTreeMap<String, String> = def
            .inputs
            .iter()
            .map(|i| (i.clone(), fps[i].clone()))
            .collect();
        let ext = def.config.external_fingerprint()?;
        fps.insert(
            def.name.clone(),
            fingerprint(def, &inputs, &ext, p.run.seed)?,
        );
    }
    Ok(fps)
}

fn status_of(
    p: &Pipeline,
    m: Option<&Manifest>,
    fps: &BTreeMap<String, String>,
    name: &str,
) -> Status {
    let Some(rec) = m.and_then(|m| m.stages.get(name)) else {
        return Status::Missing;
    };
    if !rec.outputs_exist(&p.run.dir.join(name)) {
        return Status::Missing;
    }
    if rec.fingerprint == fps[name] {
        Status::Fresh
    } else {
        Status::Stale
    }
}

pub fn run(p: &Pipeline, opts: &RunOptions) -> Result<()> {
    for o in &opts.only {
        if p.stage(o).is_none() {
            let names: Vec<&str> = p.stages.iter().map(|s| s.name.as_str()).collect();
            return Err(config_error!(
                "--only {o}: no such stage; stages are: {}",
                names.join(", ")
            ));
        }
    }
    let fps = fingerprints(p)?;
    ownership::check_run_dir(p)?;
    let existing = Manifest::load(&p.run.dir)?;
    check_stage_folders(p, existing.as_ref())?;
    if opts.dry_run {
        print_plan(p, existing.as_ref(), &fps, opts);
        return Ok(());
    }
    let _lock = RunLock::acquire_creating(&p.run.dir)?;
    let mut m = open_manifest(p, opts.quiet)?;

    for def in &p.stages {
        let selected = opts.only.is_empty() || opts.only.contains(&def.name);
        let status = status_of(p, Some(&m), &fps, &def.name);
        if !selected {
            continue;
        }
        for i in &def.inputs {
            let st = status_of(p, Some(&m), &fps, i);
            if st != Status::Fresh {
                return Err(config_error!(
                    "stage `{}` needs `{i}`, which is {}; run it too (drop --only, or add --only {i})",
                    def.name,
                    st.name()
                ));
            }
        }
        if let Some(Err(why)) = m
            .stages
            .get(&def.name)
            .map(|r| r.check_outputs(&p.run.dir.join(&def.name)))
            && !opts.quiet
        {
            eprintln!("{}: {why}; rebuilding it", def.name);
        }
        if status == Status::Fresh && !opts.force {
            drop_spent_resume_folder(&p.run.dir, &def.name, &fps[&def.name])?;
            if !opts.quiet {
                eprintln!(
                    "{}: fresh (fingerprint {}), skipped; --force reruns it",
                    def.name,
                    &fps[&def.name][..12]
                );
            }
            continue;
        }
        let (tmp_dir, rec) = run_stage(p, def, &m, &fps, opts.quiet)
            .with_context(|| format!("stage `{}` failed", def.name))?;
        commit(p, &def.name, &tmp_dir, &mut m, rec.clone())
            .with_context(|| format!("stage `{}` failed while committing", def.name))?;
        if !opts.quiet {
            let rows: Vec<String> = rec
                .tables
                .iter()
                .map(|t| format!("{} {} rows", t.name, t.rows))
                .collect();
            eprintln!(
                "{}: done in {:.1}s ({})",
                def.name,
                rec.wall_time_s,
                rows.join(", ")
            );
        }
    }
    Ok(())
}

/// Under the lock: removes what a killed run left, re-reads the manifest
/// (it may have changed while we waited), orders it by this pipeline, and
/// writes it with the resolved pipeline before any stage runs, so that the
/// folder is recognisably a run folder from now on.
fn open_manifest(p: &Pipeline, quiet: bool) -> Result<Manifest> {
    for line in lock::clean_leftovers(&p.run.dir)? {
        if !quiet {
            eprintln!(
                "{}: {line} (an earlier run was killed)",
                p.run.dir.display()
            );
        }
    }
    let existing = Manifest::load(&p.run.dir)?;
    check_stage_folders(p, existing.as_ref())?;
    let mut m = existing.unwrap_or_default();
    m.run_name = p.run.name.clone();
    // Pipelines may share a run folder (pipelines/no_augmentation.toml,
    // random_doubling.toml, ... share `ingest` and the real-data classifier):
    // stages recorded by another pipeline stay listed after this one's.
    let mut order: Vec<String> = p.stages.iter().map(|s| s.name.clone()).collect();
    for old in &m.order {
        if !order.contains(old) && m.stages.contains_key(old) {
            order.push(old.clone());
        }
    }
    m.order = order;
    m.save(&p.run.dir)?;
    crate::data::write_atomic(
        &p.run.dir.join(manifest::PIPELINE_FILE),
        p.resolved_toml.as_bytes(),
    )?;
    Ok(m)
}

/// A fresh stage's resume folder is spent when it holds no checkpoints or
/// only this very fingerprint's (a run killed after committing the stage):
/// removed. One of another fingerprint may still serve a config change back.
fn drop_spent_resume_folder(run_dir: &Path, name: &str, fingerprint: &str) -> Result<()> {
    let dir = run_dir.join(format!(".{name}.resume"));
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    let only_fingerprint = entries.flatten().all(|e| e.file_name() == "fingerprint");
    let same = std::fs::read_to_string(dir.join("fingerprint")).is_ok_and(|f| f == fingerprint);
    if only_fingerprint || same {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}

/// A stage folder that is in the way and not ours is refused before
/// anything runs: neither the manifest records it nor does it carry our
/// stamp for that stage (the user made it, or it is another tool's).
fn check_stage_folders(p: &Pipeline, m: Option<&Manifest>) -> Result<()> {
    for def in &p.stages {
        let dir = p.run.dir.join(&def.name);
        let recorded = m.is_some_and(|m| m.stages.contains_key(&def.name));
        let stamped = Stamp::read(&dir).is_some_and(|s| s.stage == def.name);
        if dir.symlink_metadata().is_ok() && !recorded && !stamped {
            return Err(config_error!(
                "{}: stage `{}` would replace {}, which augment did not write (no manifest record, no {}); move it away or rename the stage",
                p.file.display(),
                def.name,
                dir.display(),
                manifest::STAMP_FILE
            ));
        }
    }
    Ok(())
}

/// Publishes a stage whose outputs are complete in `tmp_dir`: stamp, move
/// the previous folder aside, rename the new one into place, commit the
/// manifest, then drop the previous folder and the resume checkpoints.
/// Each step is a named fault point for `tests/it/faults.rs`.
fn commit(
    p: &Pipeline,
    name: &str,
    tmp_dir: &Path,
    m: &mut Manifest,
    rec: StageRecord,
) -> Result<()> {
    let point = |at: &str| crate::fault::point(|| format!("{name}:commit:{at}"));
    Stamp {
        stage: name.to_string(),
        fingerprint: rec.fingerprint.clone(),
    }
    .write(tmp_dir)?;
    let dest = p.run.dir.join(name);
    let old = p.run.dir.join(format!(".{name}.old"));
    if old.exists() {
        std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    point("aside");
    if dest.exists() {
        std::fs::rename(&dest, &old).with_context(|| format!("moving {} aside", dest.display()))?;
    }
    point("swap");
    std::fs::rename(tmp_dir, &dest)
        .with_context(|| format!("moving {} into place", dest.display()))?;
    point("manifest");
    m.stages.insert(name.to_string(), rec);
    m.save(&p.run.dir)?;
    point("cleanup");
    if old.exists() {
        std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    let resume_dir = p.run.dir.join(format!(".{name}.resume"));
    if resume_dir.exists() {
        std::fs::remove_dir_all(&resume_dir)
            .with_context(|| format!("removing {}", resume_dir.display()))?;
    }
    Ok(())
}

fn run_stage(
    p: &Pipeline,
    def: &StageDef,
    m: &Manifest,
    fps: &BTreeMap<String, String>,
    quiet: bool,
) -> Result<(PathBuf, StageRecord)> {
    let tmp_dir = lock::tmp_dir(&p.run.dir, &def.name);
    if tmp_dir.exists() {
        // Left by a killed run: never trusted.
        std::fs::remove_dir_all(&tmp_dir)
            .with_context(|| format!("removing {}", tmp_dir.display()))?;
    }
    std::fs::create_dir_all(&tmp_dir).with_context(|| format!("creating {}", tmp_dir.display()))?;
    // Checkpoints of long stages survive a kill here, but only for the same
    // fingerprint: a changed config or input starts over.
    let resume_dir = p.run.dir.join(format!(".{}.resume", def.name));
    let resume_fp = resume_dir.join("fingerprint");
    if resume_dir.exists()
        && std::fs::read_to_string(&resume_fp).ok().as_deref() != Some(fps[&def.name].as_str())
    {
        std::fs::remove_dir_all(&resume_dir)
            .with_context(|| format!("removing {}", resume_dir.display()))?;
    }
    std::fs::create_dir_all(&resume_dir)
        .with_context(|| format!("creating {}", resume_dir.display()))?;
    crate::data::write_atomic(&resume_fp, fps[&def.name].as_bytes())?;
    let inputs: Vec<InputStage> = def
        .inputs
        .iter()
        .map(|i| {
            let rec = &m.stages[i];
            InputStage {
                name: i.clone(),
                kind: rec.kind,
                dir: p.run.dir.join(i),
                tables: rec.tables.clone(),
                files: rec.files.clone(),
                lineage: rec.lineage.clone(),
                sweep_of: p.stage(i).and_then(|d| d.sweep_of.clone()),
            }
        })
        .collect();
    let io = StageIo {
        name: def.name.clone(),
        run_name: p.run.name.clone(),
        out_dir: tmp_dir.clone(),
        resume_dir: resume_dir.clone(),
        inputs,
        run_seed: p.run.seed,
        device: p.run.device.clone(),
        quiet,
    };
    let start = Instant::now();
    let out = match stages::run(&def.config, &io) {
        Ok(o) => o,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp_dir);
            // Keep the resume folder only when the stage left checkpoints in it.
            let only_fingerprint = std::fs::read_dir(&resume_dir)
                .map(|d| d.flatten().all(|e| e.file_name() == "fingerprint"))
                .unwrap_or(true);
            if only_fingerprint {
                let _ = std::fs::remove_dir_all(&resume_dir);
            }
            return Err(e);
        }
    };
    let wall = start.elapsed().as_secs_f64();
    let rec = StageRecord {
        kind: def.kind(),
        fingerprint: fps[&def.name].clone(),
        tool_version: crate::data::VERSION.to_string(),
        inputs: def
            .inputs
            .iter()
            .map(|i| (i.clone(), fps[i].clone()))
            .collect(),
        config: serde_json::to_value(&def.config)?,
        tables: out.tables,
        files: out.files,
        wall_time_s: wall,
        finished_at: manifest::now_unix(),
        summary: out.summary,
        lineage: out.lineage,
    };
    Ok((tmp_dir, rec))
}

fn print_plan(
    p: &Pipeline,
    m: Option<&Manifest>,
    fps: &BTreeMap<String, String>,
    opts: &RunOptions,
) {
    println!("pipeline {}  (validated)", p.file.display());
    println!(
        "run: name = {:?}, dir = {}, seed = {}, device = {}",
        p.run.name,
        p.run.dir.display(),
        p.run.seed,
        p.run.device
    );
    println!();
    for (k, def) in p.stages.iter().enumerate() {
        let st = status_of(p, m, fps, &def.name);
        let selected = opts.only.is_empty() || opts.only.contains(&def.name);
        let action = if !selected {
            "not selected"
        } else if st == Status::Fresh && !opts.force {
            "skip (fresh)"
        } else {
            "run"
        };
        println!(
            "{}. [stages.{}] kind = {:?}, inputs = {:?} -- {} ({}, fingerprint {})",
            k + 1,
            def.name,
            def.kind().name(),
            def.inputs,
            action,
            st.name(),
            &fps[&def.name][..12]
        );
        if let Ok(v) = serde_json::to_value(&def.config)
            && let Ok(t) = toml::to_string(&without_nulls(v))
        {
            for line in t.lines() {
                println!("     {line}");
            }
        }
    }
}

/// TOML has no null: unset options are left out of the printed plan.
fn without_nulls(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => m
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k, without_nulls(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        other => other,
    }
}

/// An `evaluate` stage's FIDs and KIDs, each beside its floor (real faces
/// at the same n against the same reference), one line per image set.
fn shown_fids(summary: &serde_json::Value) -> String {
    let Some(fids) = summary.get("fid").and_then(|v| v.as_object()) else {
        return String::new();
    };
    let mut out = String::new();
    for (stage, v) in fids {
        let get = |k: &str| v.get(k).and_then(serde_json::Value::as_f64);
        let pair = |name: &str, m: &str, digits: usize| match (get(m), get(&format!("{m}_floor"))) {
            (Some(x), Some(fl)) => format!("  {name} {x:.digits$} (real faces: {fl:.digits$})"),
            (Some(x), None) => format!("  {name} {x:.digits$}"),
            _ => String::new(),
        };
        out.push_str(&format!(
            "  {stage:<28}{}{}  n {}\n",
            pair("FID", "fid", 2),
            pair("KID", "kid", 4),
            get("n").unwrap_or(0.0)
        ));
    }
    out
}

/// `augment show`: the status of each stage recorded in a run folder.
pub fn show(run_dir: &Path) -> Result<String> {
    let m = Manifest::load(run_dir)?.ok_or_else(|| {
        config_error!(
            "{}: not a run folder (no {}); run a pipeline first",
            run_dir.display(),
            manifest::FILE
        )
    })?;
    // Recompute fingerprints from the recorded pipeline when it still validates,
    // so that a changed upstream stage shows its dependents as stale.
    let pipeline = crate::pipeline::config::load(&run_dir.join(manifest::PIPELINE_FILE), &[]).ok();
    let current = pipeline.as_ref().and_then(|p| fingerprints(p).ok());
    let mut names = m.ordered_names();
    if let Some(p) = &pipeline {
        for s in &p.stages {
            if !names.contains(&s.name) {
                names.push(s.name.clone());
            }
        }
    }
    let mut out = format!("run {:?} in {}\n", m.run_name, run_dir.display());
    for name in names {
        let Some(rec) = m.stages.get(&name) else {
            out.push_str(&format!("\n{name}: missing (never ran)\n"));
            continue;
        };
        let dir = run_dir.join(&name);
        let damage = rec.check_outputs(&dir).err();
        let mut status = if damage.is_some() {
            Status::Missing
        } else {
            Status::Fresh
        };
        if status == Status::Fresh {
            let inputs_changed = rec
                .inputs
                .iter()
                .any(|(i, fp)| m.stages.get(i).map(|r| &r.fingerprint) != Some(fp));
            let config_changed = current
                .as_ref()
                .and_then(|c| c.get(&name))
                .is_some_and(|fp| fp != &rec.fingerprint);
            if inputs_changed || config_changed || rec.tool_version != crate::data::VERSION {
                status = Status::Stale;
            }
        }
        out.push_str(&format!(
            "\n{name} ({}): {}  wall {:.1}s  fingerprint {}\n",
            rec.kind,
            status.name(),
            rec.wall_time_s,
            manifest::short(&rec.fingerprint)
        ));
        if let Some(why) = damage {
            out.push_str(&format!("  ! {why}; `augment run` rebuilds the stage\n"));
        }
        for t in &rec.tables {
            out.push_str(&format!(
                "  table {:<12} {:>9} rows  {}\n",
                t.name,
                t.rows,
                dir.join(&t.file).display()
            ));
        }
        for f in &rec.files {
            out.push_str(&format!("  file  {}\n", dir.join(f).display()));
        }
        out.push_str(&shown_fids(&rec.summary));
    }
    Ok(out)
}
