//! TOML → validated [`Pipeline`]. Nothing runs before this succeeds: unknown
//! keys, unknown kinds, missing inputs and cycles are rejected with one line
//! naming the key and what was expected.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::config_error;
pub use crate::stages::Device;
use crate::stages::{
    StageConfig, StageKind, balance, evaluate, ingest, parse_faces, synthesize, train_classifier,
    train_generator,
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRun {
    name: String,
    dir: Option<PathBuf>,
    #[serde(default)]
    seed: u64,
    #[serde(default = "default_device")]
    device: String,
}

fn default_device() -> String {
    "cpu".into()
}

#[derive(Debug, Clone, Serialize)]
pub struct RunConfig {
    pub name: String,
    /// Output folder of the run (absolute after resolution).
    pub dir: PathBuf,
    pub seed: u64,
    pub device: Device,
}

#[derive(Debug, Clone, Serialize)]
pub struct StageDef {
    pub name: String,
    pub inputs: Vec<String>,
    pub config: StageConfig,
    /// The stage this one is a size-sweep copy of (`classifier_x2` →
    /// `classifier`); None for a stage written in the file.
    #[serde(skip)]
    pub sweep_of: Option<String>,
}

impl StageDef {
    pub fn kind(&self) -> StageKind {
        self.config.kind()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Pipeline {
    pub file: PathBuf,
    pub run: RunConfig,
    /// In dependency order (inputs before the stages that use them; ties in declaration order).
    pub stages: Vec<StageDef>,
    /// The resolved TOML (after `--set`), recorded in the run folder.
    #[serde(skip)]
    pub resolved_toml: String,
}

impl Pipeline {
    pub fn stage(&self, name: &str) -> Option<&StageDef> {
        self.stages.iter().find(|s| s.name == name)
    }
}

/// A pipeline file is a few kilobytes of TOML.
const MAX_PIPELINE_BYTES: u64 = 16 << 20;

/// Loads a pipeline file, applies `--set KEY=VALUE` overrides and validates it.
pub fn load(path: &Path, overrides: &[String]) -> Result<Pipeline> {
    let bytes = crate::limits::read_file(path, MAX_PIPELINE_BYTES)
        .map_err(|e| config_error!("{}: cannot read pipeline file: {e}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        config_error!(
            "{}: a pipeline file is UTF-8 TOML text; byte {} is not UTF-8",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| {
        config_error!(
            "{}: invalid TOML: {}",
            path.display(),
            one_line(&e.to_string())
        )
    })?;
    for o in overrides {
        apply_override(&mut table, o)?;
    }
    let base = path
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    let resolved_toml = toml::to_string(&table).unwrap_or_default();
    from_table(path, &base, table, resolved_toml)
}

/// `stages.ingest.root=/data/celeba`: the value is parsed as TOML when it can
/// be (numbers, booleans, arrays, inline tables), else taken as a string.
fn apply_override(table: &mut toml::Table, spec: &str) -> Result<()> {
    let Some((key, raw)) = spec.split_once('=') else {
        return Err(config_error!(
            "--set {spec:?}: expected KEY=VALUE, e.g. --set stages.ingest.root=/data/celeba"
        ));
    };
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = key.trim().split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(config_error!(
            "--set {spec:?}: empty key segment in {key:?}"
        ));
    }
    let mut cur = table;
    for p in &parts[..parts.len() - 1] {
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| config_error!("--set {spec:?}: `{p}` is not a table"))?;
    }
    cur.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The longest stage name: the name becomes a folder, and the run's
/// temporary siblings (`.<name>.tmp.<pid>`, `.<name>.resume`) must fit in
/// every file system's 255-byte name limit.
pub const MAX_STAGE_NAME: usize = 100;

/// Lowercase letters, digits and `_`, starting with a letter, at most
/// [`MAX_STAGE_NAME`] bytes: a portable folder name and a SQL identifier.
pub fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_STAGE_NAME
        && matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn from_table(
    file: &Path,
    base: &Path,
    mut table: toml::Table,
    resolved_toml: String,
) -> Result<Pipeline> {
    let f = file.display().to_string();
    for key in table.keys() {
        if key != "run" && key != "stages" {
            return Err(config_error!(
                "{f}: unknown top-level key `{key}`; expected `[run]` or `[stages.NAME]`"
            ));
        }
    }
    let raw_run = table.remove("run");
    let run = run_config(&f, base, raw_run)?;
    let stages_table = match table.remove("stages") {
        Some(toml::Value::Table(t)) => t,
        Some(_) => {
            return Err(config_error!(
                "{f}: `stages` must be a table of `[stages.NAME]` tables"
            ));
        }
        None => {
            return Err(config_error!(
                "{f}: no stages; add at least one `[stages.NAME]` table with a `kind`"
            ));
        }
    };
    let mut stages_table = stages_table;
    let variant_of = expand_sweeps(&mut stages_table).map_err(|e| config_error!("{f}: {e}"))?;
    // toml::Table keeps keys sorted; declaration order is recovered from the text below when possible.
    let mut defs = Vec::new();
    for (name, value) in stages_table {
        defs.push(stage_def(&f, base, name, value, &variant_of)?);
    }
    check_inputs(&f, &defs)?;
    let order = declaration_order(file);
    let position = |name: &str| {
        order
            .get(name)
            .or_else(|| variant_of.get(name).and_then(|b| order.get(b)))
            .copied()
            .unwrap_or(usize::MAX)
    };
    defs.sort_by(|a, b| {
        position(&a.name)
            .cmp(&position(&b.name))
            .then(a.name.cmp(&b.name))
    });
    let stages = topological(defs)
        .map_err(|cycle| config_error!("{f}: stages form a cycle through inputs: {cycle}"))?;
    Ok(Pipeline {
        file: file.to_path_buf(),
        run,
        stages,
        resolved_toml,
    })
}

/// The `[run]` table.
fn run_config(f: &str, base: &Path, raw: Option<toml::Value>) -> Result<RunConfig> {
    let raw_run: RawRun = raw
        .ok_or_else(|| {
            config_error!(
                "{f}: missing `[run]` table (with `name`, and optionally `dir`, `seed`, `device`)"
            )
        })?
        .try_into()
        .map_err(|e: toml::de::Error| config_error!("{f}: [run]: {}", one_line(e.message())))?;
    let device = Device::parse(&raw_run.device).ok_or_else(|| {
        config_error!(
            "{f}: [run] device = {:?}: expected \"cpu\" or \"cuda:N\"",
            raw_run.device
        )
    })?;
    if matches!(device, Device::Cuda(_)) && !cfg!(feature = "cuda") {
        return Err(config_error!(
            "{f}: [run] device = {:?}: this augment was built without CUDA; rebuild with `cargo build --release --features cuda` or use device = \"cpu\"",
            raw_run.device
        ));
    }
    let dir = base.join(
        raw_run
            .dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("runs").join(&raw_run.name)),
    );
    Ok(RunConfig {
        name: raw_run.name,
        dir,
        seed: raw_run.seed,
        device,
    })
}

/// One `[stages.NAME]` table as a typed stage.
fn stage_def(
    f: &str,
    base: &Path,
    name: String,
    value: toml::Value,
    variant_of: &HashMap<String, String>,
) -> Result<StageDef> {
    let ctx = format!("{f}: [stages.{name}]");
    if !valid_stage_name(&name) {
        return Err(config_error!(
            "{ctx}: stage names must be lowercase letters, digits and `_`, starting with a letter, at most {MAX_STAGE_NAME} characters (they become folder names and SQL table prefixes)"
        ));
    }
    let toml::Value::Table(mut t) = value else {
        return Err(config_error!("{ctx}: must be a table"));
    };
    let kind_name = match t.remove("kind") {
        Some(toml::Value::String(k)) => k,
        Some(_) => return Err(config_error!("{ctx}: `kind` must be a string")),
        None => {
            return Err(config_error!(
                "{ctx}: missing `kind`; expected one of: {}",
                StageKind::names().join(", ")
            ));
        }
    };
    let kind = StageKind::from_name(&kind_name).ok_or_else(|| {
        config_error!(
            "{ctx}: unknown kind {kind_name:?}; expected one of: {}",
            StageKind::names().join(", ")
        )
    })?;
    let inputs: Vec<String> = match t.remove("inputs") {
        None => vec![],
        Some(v) => v.try_into().map_err(|_| {
            config_error!(
                "{ctx}: `inputs` must be a list of stage names, e.g. inputs = [\"ingest\"]"
            )
        })?,
    };
    let config = stage_config(kind, toml::Value::Table(t), base)
        .map_err(|e| config_error!("{ctx}: {}", one_line(&e)))?;
    let values = serde_json::to_value(&config)?;
    crate::limits::check_config(&format!("stages.{name}"), &values)
        .map_err(|e| config_error!("{f}: {e}"))?;
    Ok(StageDef {
        sweep_of: variant_of.get(&name).cloned(),
        name,
        inputs,
        config,
    })
}

/// Every input names a stage, and each stage's inputs are of the kinds it reads.
fn check_inputs(f: &str, defs: &[StageDef]) -> Result<()> {
    let kinds: HashMap<String, StageKind> =
        defs.iter().map(|d| (d.name.clone(), d.kind())).collect();
    for d in defs {
        for i in &d.inputs {
            if i == &d.name {
                return Err(config_error!(
                    "{f}: [stages.{}]: inputs: a stage cannot be its own input",
                    d.name
                ));
            }
            if !kinds.contains_key(i) {
                let mut names: Vec<&String> = kinds.keys().collect();
                names.sort();
                return Err(config_error!(
                    "{f}: [stages.{}]: inputs: no stage named {i:?}; stages are: {}",
                    d.name,
                    names
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        let input_kinds: Vec<StageKind> = d.inputs.iter().map(|i| kinds[i]).collect();
        d.config
            .check_inputs(&input_kinds)
            .map_err(|e| config_error!("{f}: [stages.{}]: inputs: {e}", d.name))?;
        if d.kind() == StageKind::Synthesize {
            check_generator_judge(f, d, defs)?;
        }
        if let StageConfig::Evaluate(c) = &d.config
            && let Some(judge) = &c.judge
        {
            check_evaluate_judge(f, d, judge, &kinds, defs)?;
        }
    }
    Ok(())
}

/// An evaluate stage's `judge` is one of its `train_classifier` inputs,
/// trained on real faces only (its only inputs are ingest stages).
fn check_evaluate_judge(
    f: &str,
    eval: &StageDef,
    judge: &str,
    kinds: &HashMap<String, StageKind>,
    defs: &[StageDef],
) -> Result<()> {
    let ctx = format!("{f}: [stages.{}]: judge = {judge:?}", eval.name);
    let def = defs.iter().find(|d| d.name == judge);
    let Some(def) = def.filter(|d| eval.inputs.contains(&d.name)) else {
        return Err(config_error!(
            "{ctx} is not among the stage's inputs; add it to `inputs`"
        ));
    };
    // `get`: the judge's own inputs may not have been checked yet.
    let real_only = def
        .inputs
        .iter()
        .all(|i| kinds.get(i) == Some(&StageKind::Ingest));
    if def.kind() != StageKind::TrainClassifier || !real_only {
        return Err(config_error!(
            "{ctx} must be a train_classifier stage trained on real faces only (inputs = [\"ingest\"])"
        ));
    }
    Ok(())
}

/// A synthesize stage may edit through a generator's attribute map (ST-GAN),
/// which only a judge (a `train_classifier` input of the generator) writes.
/// Said before anything runs, so nobody trains a generator to learn this.
fn check_generator_judge(f: &str, synth: &StageDef, defs: &[StageDef]) -> Result<()> {
    for i in &synth.inputs {
        let Some(g) = defs.iter().find(|d| &d.name == i) else {
            continue;
        };
        let StageConfig::TrainGenerator(c) = &g.config else {
            continue;
        };
        let judged = g.inputs.iter().any(|j| {
            defs.iter()
                .any(|d| &d.name == j && d.kind() == StageKind::TrainClassifier)
        });
        let family = c.family();
        if family.abilities.edits_need_judge && !judged {
            return Err(config_error!(
                "{f}: [stages.{}]: inputs: {} needs an attribute map: add a train_classifier stage trained on real faces to {}'s inputs",
                synth.name,
                family.name,
                g.name
            ));
        }
    }
    Ok(())
}

/// Deserializes a stage's own keys (without `kind`/`inputs`) into its typed
/// config; relative paths are resolved against `base`, the pipeline file's folder.
fn stage_config(
    kind: StageKind,
    value: toml::Value,
    base: &Path,
) -> std::result::Result<StageConfig, String> {
    Ok(match kind {
        StageKind::Ingest => {
            let mut c: ingest::Config = parse(value)?;
            c.resolve(base)?;
            StageConfig::Ingest(c)
        }
        StageKind::Balance => {
            let c: balance::Config = parse(value)?;
            c.validate()?;
            StageConfig::Balance(c)
        }
        StageKind::TrainGenerator => {
            let c = train_generator::Config::from_toml(value.clone())
                .map_err(|e| with_key(e, &value))?;
            StageConfig::TrainGenerator(c)
        }
        StageKind::Synthesize => {
            let c: synthesize::Config = parse(value)?;
            c.validate()?;
            StageConfig::Synthesize(c)
        }
        StageKind::TrainClassifier => {
            let c: train_classifier::Config = parse(value)?;
            c.validate()?;
            StageConfig::TrainClassifier(c)
        }
        StageKind::ParseFaces => {
            let mut c: parse_faces::Config = parse(value)?;
            c.validate()?;
            if let Some(d) = &c.data {
                c.data = Some(base.join(d));
            }
            StageConfig::ParseFaces(c)
        }
        StageKind::Evaluate => {
            let c: evaluate::Config = parse(value)?;
            c.validate()?;
            StageConfig::Evaluate(c)
        }
    })
}

/// A stage's keys as its typed config. serde names a bad enum value but not
/// its key (`unknown variant `huge`, expected ...`), so the key is added.
fn parse<T: serde::de::DeserializeOwned>(value: toml::Value) -> std::result::Result<T, String> {
    value
        .clone()
        .try_into()
        .map_err(|e: toml::de::Error| with_key(e.message().to_string(), &value))
}

/// Serde's message with the key it is about, where serde leaves it out
/// (`unknown variant `huge`, expected ...` under `size = "huge"`).
fn with_key(msg: String, value: &toml::Value) -> String {
    let bad = msg
        .strip_prefix("unknown variant `")
        .and_then(|r| r.split_once('`'))
        .map(|(v, _)| v);
    match bad.and_then(|v| key_holding(value, v).map(|k| (k, v))) {
        Some((key, v)) => format!("{key} = {v:?}: {msg}"),
        None => msg,
    }
}

/// The dotted key whose value is the string `s`, if any.
fn key_holding(v: &toml::Value, s: &str) -> Option<String> {
    let t = v.as_table()?;
    t.iter().find_map(|(k, v)| match v {
        toml::Value::String(x) if x == s => Some(k.clone()),
        toml::Value::Table(_) => key_holding(v, s).map(|sub| format!("{k}.{sub}")),
        _ => None,
    })
}

/// The augmentation-size sweep (Liu et al. Fig. 10): a `balance` stage with
/// `sizes = [1.5, 2, 3]` becomes one stage per size, `<name>_x1_5`,
/// `<name>_x2`, `<name>_x3`, each with `size` set; every stage downstream of
/// it is copied per size the same way (`<stage>_x2` reads `<name>_x2`), and an
/// `evaluate` stage that lists the stage gets every copy, picks the size with
/// the best val accuracy and reports its test accuracy. Returns copy → the
/// name it was copied from.
fn expand_sweeps(stages: &mut toml::Table) -> std::result::Result<HashMap<String, String>, String> {
    let mut sweeps = Sweeps::default();
    sweeps.expand_balance_stages(stages)?;
    if sweeps.expanded.is_empty() {
        return Ok(sweeps.variant_of);
    }
    sweeps.copy_downstream(stages)?;
    sweeps.widen_evaluate_inputs(stages);
    Ok(sweeps.variant_of)
}

/// The state of a sweep expansion.
#[derive(Default)]
struct Sweeps {
    /// Copy → the stage it was copied from.
    variant_of: HashMap<String, String>,
    /// Expanded stage → its (copy name, tag) per size.
    expanded: BTreeMap<String, Vec<(String, String)>>,
}

/// The stage names a stage's `inputs` lists.
fn inputs_of(t: &toml::Table) -> Vec<String> {
    t.get("inputs")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

impl Sweeps {
    /// Each `balance` stage with `sizes` becomes one copy per size.
    fn expand_balance_stages(
        &mut self,
        stages: &mut toml::Table,
    ) -> std::result::Result<(), String> {
        let (variant_of, expanded) = (&mut self.variant_of, &mut self.expanded);
        let names: Vec<String> = stages.keys().cloned().collect();
        for name in names {
            let Some(toml::Value::Table(t)) = stages.get(&name) else {
                continue;
            };
            let Some(sizes) = t.get("sizes") else {
                continue;
            };
            let ctx = format!("[stages.{name}] sizes");
            if t.get("kind").and_then(|k| k.as_str()) != Some("balance") {
                return Err(format!("{ctx}: only `balance` stages take a size sweep"));
            }
            if t.contains_key("size") {
                return Err(format!("{ctx}: give either `size` or `sizes`, not both"));
            }
            let values: Vec<f64> = sizes
                .as_array()
                .filter(|a| !a.is_empty())
                .and_then(|a| {
                    a.iter()
                        .map(|v| v.as_float().or(v.as_integer().map(|i| i as f64)))
                        .collect()
                })
                .ok_or_else(|| {
                    format!("{ctx}: expected a list of numbers, e.g. sizes = [1.5, 2, 3]")
                })?;
            // Every size copies each stage downstream: checked before copying.
            let l = crate::limits::SWEEP_SIZES;
            if values.len() as f64 > l.max {
                return Err(format!(
                    "{ctx}: {} sizes, over the limit of {} {}",
                    values.len(),
                    l.max,
                    l.what
                ));
            }
            let mut t = t.clone();
            t.remove("sizes");
            stages.remove(&name);
            let mut copies = Vec::new();
            for v in values {
                if !(v.is_finite() && v > 1.0) {
                    return Err(format!(
                        "{ctx}: {v} is not a size above 1 (the augmented table is size × the train split)"
                    ));
                }
                let tag = format!("{v}").replace('.', "_");
                let copy = format!("{name}_x{tag}");
                let mut c = t.clone();
                c.insert("size".into(), toml::Value::Float(v));
                if stages.insert(copy.clone(), toml::Value::Table(c)).is_some() {
                    return Err(format!(
                        "{ctx}: the size {v} is listed twice, or a stage is already named `{copy}`"
                    ));
                }
                variant_of.insert(copy.clone(), name.clone());
                copies.push((copy, tag));
            }
            expanded.insert(name, copies);
        }
        Ok(())
    }

    /// Copies the downstream stages (except `evaluate`) until no stage reads
    /// an expanded one.
    fn copy_downstream(&mut self, stages: &mut toml::Table) -> std::result::Result<(), String> {
        let (variant_of, expanded) = (&mut self.variant_of, &mut self.expanded);
        loop {
            let mut next = None;
            for (name, v) in stages.iter() {
                let Some(t) = v.as_table() else { continue };
                if t.get("kind").and_then(|k| k.as_str()) == Some("evaluate") {
                    continue;
                }
                let hits: Vec<String> = inputs_of(t)
                    .into_iter()
                    .filter(|i| expanded.contains_key(i))
                    .collect();
                match hits.len() {
                    0 => {}
                    1 => {
                        next = Some((name.clone(), hits[0].clone()));
                        break;
                    }
                    _ => {
                        return Err(format!(
                            "[stages.{name}] inputs: reads two size sweeps ({}); sweep one stage at a time",
                            hits.join(", ")
                        ));
                    }
                }
            }
            let Some((name, input)) = next else { break };
            let t = stages
                .remove(&name)
                .and_then(|v| v.as_table().cloned())
                .unwrap_or_default();
            let mut copies = Vec::new();
            for (input_copy, tag) in expanded[&input].clone() {
                let copy = format!("{name}_x{tag}");
                let mut c = t.clone();
                let ins: Vec<toml::Value> = inputs_of(&t)
                    .into_iter()
                    .map(|i| toml::Value::String(if i == input { input_copy.clone() } else { i }))
                    .collect();
                c.insert("inputs".into(), toml::Value::Array(ins));
                if stages.insert(copy.clone(), toml::Value::Table(c)).is_some() {
                    return Err(format!(
                        "[stages.{name}]: a stage is already named `{copy}`, the copy of `{name}` for the size sweep of `{input}`"
                    ));
                }
                variant_of.insert(copy.clone(), name.clone());
                copies.push((copy, tag));
            }
            expanded.insert(name, copies);
        }
        Ok(())
    }

    /// Evaluate stages get every copy of the expanded stages they list.
    fn widen_evaluate_inputs(&self, stages: &mut toml::Table) {
        let expanded = &self.expanded;
        let names: Vec<String> = stages.keys().cloned().collect();
        for name in names {
            let Some(t) = stages.get_mut(&name).and_then(|v| v.as_table_mut()) else {
                continue;
            };
            if t.get("kind").and_then(|k| k.as_str()) != Some("evaluate") {
                continue;
            }
            let ins: Vec<toml::Value> = inputs_of(t)
                .into_iter()
                .flat_map(|i| match expanded.get(&i) {
                    Some(c) => c.iter().map(|(n, _)| n.clone()).collect(),
                    None => vec![i],
                })
                .map(toml::Value::String)
                .collect();
            if t.contains_key("inputs") {
                t.insert("inputs".into(), toml::Value::Array(ins));
            }
        }
    }
}

/// Position of each `[stages.NAME]` header in the file, for stable ordering.
fn declaration_order(file: &Path) -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("[stages.")
            && let Some(name) = rest.split(']').next()
        {
            let n = out.len();
            out.entry(name.trim().to_string()).or_insert(n);
        }
    }
    out
}

/// Kahn's algorithm, keeping declaration order among ready stages.
fn topological(defs: Vec<StageDef>) -> std::result::Result<Vec<StageDef>, String> {
    let mut remaining = defs;
    let mut done: Vec<StageDef> = Vec::new();
    while !remaining.is_empty() {
        let pos = remaining
            .iter()
            .position(|d| d.inputs.iter().all(|i| done.iter().any(|x| &x.name == i)));
        match pos {
            Some(p) => done.push(remaining.remove(p)),
            None => {
                let names: Vec<&str> = remaining.iter().map(|d| d.name.as_str()).collect();
                return Err(names.join(" -> "));
            }
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str, overrides: &[&str]) -> Result<Pipeline> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.toml");
        std::fs::write(&p, text).unwrap();
        std::fs::create_dir_all(dir.path().join("celeba")).unwrap();
        let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        load(&p, &o)
    }

    const OK: &str = r#"
[run]
name = "t"
seed = 3
[stages.balance]
kind = "balance"
inputs = ["ingest"]
strategy = "random_doubling"
[stages.ingest]
kind = "ingest"
source = "demo"
n = 10
"#;

    /// Regression: sweep membership once came from a `_x<size>` name suffix,
    /// so a stage the user named `cls_x2` was read as a sweep copy.
    #[test]
    fn sweep_membership_comes_from_the_expansion_not_the_name() {
        let text = format!(
            "{OK}
[stages.dyn]
kind = \"balance\"
inputs = [\"ingest\"]
strategy = \"dynamic_balancing\"
sizes = [1.5, 2]
[stages.synth]
kind = \"synthesize\"
inputs = [\"ingest\", \"dyn\"]
[stages.synth_x3]
kind = \"synthesize\"
inputs = [\"ingest\", \"balance\"]
"
        );
        let p = load_str(&text, &[]).unwrap();
        let sweep_of = |n: &str| p.stage(n).unwrap().sweep_of.clone();
        assert_eq!(sweep_of("dyn_x1_5").as_deref(), Some("dyn"));
        assert_eq!(sweep_of("synth_x2").as_deref(), Some("synth"));
        assert_eq!(sweep_of("synth_x3"), None, "written by the user");
        assert_eq!(sweep_of("balance"), None);
    }

    #[test]
    fn orders_by_inputs() {
        let p = load_str(OK, &[]).unwrap();
        let names: Vec<&str> = p.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["ingest", "balance"]);
        assert_eq!(p.run.seed, 3);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load_str(&OK.replace("n = 10", "n = 10\nrot = 1"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[stages.ingest]") && err.contains("rot"),
            "{err}"
        );
    }

    #[test]
    fn unknown_kind_lists_kinds() {
        let err = load_str(&OK.replace("kind = \"ingest\"", "kind = \"ingset\""), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("ingset") && err.contains("balance"), "{err}");
    }

    #[test]
    fn missing_input_and_cycle() {
        let err = load_str(
            &OK.replace("inputs = [\"ingest\"]", "inputs = [\"nope\"]"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("no stage named \"nope\""), "{err}");
        // With today's kinds a cycle also breaks the input-kind rule; check the sort itself.
        let def = |name: &str, inputs: &[&str]| StageDef {
            name: name.into(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            config: StageConfig::Balance(toml::from_str("strategy = \"none\"").unwrap()),
            sweep_of: None,
        };
        let err = topological(vec![def("a", &["b"]), def("b", &["a"]), def("c", &[])]).unwrap_err();
        assert_eq!(err, "a -> b");
        let ok = topological(vec![def("x", &["y"]), def("y", &[])]).unwrap();
        assert_eq!(
            ok.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
            ["y", "x"]
        );
    }

    #[test]
    fn set_overrides_any_key() {
        let p = load_str(
            OK,
            &[
                "stages.ingest.n=25",
                "run.seed=9",
                "stages.balance.strategy=none",
            ],
        )
        .unwrap();
        assert_eq!(p.run.seed, 9);
        assert!(p.resolved_toml.contains("n = 25"));
        let err = load_str(OK, &["nokey"]).unwrap_err().to_string();
        assert!(err.contains("KEY=VALUE"));
    }

    #[test]
    fn device_is_validated() {
        let err = load_str(&OK.replace("seed = 3", "seed = 3\ndevice = \"gpu\""), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("cuda:N"), "{err}");
    }
}
