//! Training loops. [`run_phase`] is the one loop every generator phase goes
//! through (StarGAN's `solver.py` shape): a step function returning named
//! losses, then log / sample / checkpoint at configured cadences, a NaN
//! guard, a progress bar, and resume from the last checkpoint.
//!
//! Checkpoints live in a *resume folder* that survives a killed or failed
//! run. A checkpoint is a folder `<phase>/ckpt-<step>/` holding each
//! network (`<net>.safetensors`) and each optimiser's moments
//! (`<opt>.adam.safetensors`, [`adam`]), written under a temporary name,
//! flushed to disk and renamed; then `<phase>/state.json` (step, extra state
//! such as BEGAN's k_t, the phase's log rows, and the size and sha256 of
//! every file of the checkpoint) replaces the previous one, which is kept
//! as `state.prev.json` with its checkpoint. A resume verifies sizes and
//! sums before loading: a damaged checkpoint is reported and the previous
//! one used; with neither, the phase starts over. Every step's batch and
//! random draws depend only on (seed, step), so a resumed phase takes the
//! same steps as an uninterrupted one.
//!
//! - [`losses`]: numerically stable loss functions.
//! - [`classifier`]: downstream attribute classifiers (best val epoch kept).
//! - [`attr2face`]: the three phases of the "for free" generator (and its ablations).
//! - [`translation`]: SG-GAN and StarGAN with WGAN-GP.
//! - [`bridgegan`]: BridgeGAN, label- and reference-guided translation.
//! - [`secgan`]: SeCGAN, RGB and semantic branches tied through the frozen parser.
//! - [`latent_map`]: which ST-GAN latent controls which attribute.
//! - [`st_gan`]: ST-GAN (InfoGAN + WGAN-GP critic + encoder), without labels.
//! - [`accumulate`]: gradients of a batch summed over micro-batches.
//! - [`adam`]: Adam whose moments go into the checkpoint.
//! - [`probe`]: the linear probe on frozen features (G_en or Inception).
//! - [`parser`]: the face parser P (U-Net) for SeCGAN's masks: loss, IoU, prior.

/// Makes candle keep the graph of gradients (`CANDLE_GRAD_DO_NOT_DETACH=1`),
/// which the WGAN-GP penalty needs: without it candle detaches inside
/// `backward()` and the penalty's gradient is silently wrong: only the
/// first layer gets a gradient, and a wrong one (`tests/gradient_penalty.rs`
/// shows both cases).
/// candle reads the variable once per thread, lazily, so this must run
/// before any thread exists: the `augment` binary calls it first thing.
///
/// # Safety
/// Modifies the process environment: call it while the process has one thread.
pub unsafe fn enable_second_order_gradients() {
    // SAFETY: the caller guarantees no other thread reads the environment.
    unsafe { std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1") };
}

/// Fails unless [`enable_second_order_gradients`] ran: every WGAN-GP phase
/// checks this before training (a detached penalty trains the wrong
/// function without any error).
pub fn require_second_order_gradients() -> Result<()> {
    if std::env::var_os("CANDLE_GRAD_DO_NOT_DETACH").is_none() {
        anyhow::bail!(
            "the gradient penalty needs second-order gradients: call \
             augment::train::enable_second_order_gradients() at start-up (the `augment` binary does)"
        );
    }
    Ok(())
}

pub mod accumulate;
pub mod adam;
pub mod attr2face;
pub mod bridgegan;
pub mod classifier;
pub mod latent_map;
pub mod losses;
pub mod parser;
pub mod probe;
pub mod secgan;
pub mod st_gan;
pub mod translation;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::collections::HashMap;

use crate::data_error;

/// One row of the `train_log` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRow {
    pub phase: String,
    pub step: u64,
    pub name: String,
    pub value: f64,
}

/// A `train_log` row.
pub fn log_row(phase: &str, step: usize, name: &str, value: f64) -> LogRow {
    LogRow {
        phase: phase.to_string(),
        step: step as u64,
        name: name.to_string(),
        value,
    }
}

/// How often a phase logs, samples and checkpoints (in steps; 0 = never,
/// except that the last step is always logged and checkpointed).
#[derive(Debug, Clone, Copy)]
pub struct Cadence {
    pub log_every: usize,
    pub sample_every: usize,
    pub checkpoint_every: usize,
}

/// What a phase needs from its surroundings.
pub struct PhaseEnv<'a> {
    /// Resume folder (checkpoints, samples).
    pub dir: &'a Path,
    pub cadence: Cadence,
    pub quiet: bool,
    /// Prefix of user-facing lines (the stage name).
    pub label: &'a str,
}

impl PhaseEnv<'_> {
    pub fn say(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{}: {}", self.label, msg.as_ref());
        }
    }

    pub fn samples_dir(&self) -> PathBuf {
        self.dir.join("samples")
    }
}

/// A phase's training step, as [`run_phase`] drives it.
pub trait Phase {
    /// One optimisation step (1-based); returns the named losses.
    fn step(&mut self, step: usize) -> Result<Vec<(&'static str, f64)>>;
    /// Writes the fixed sample batch's grid to `path`.
    fn sample(&mut self, path: &Path) -> Result<()>;
    /// The networks to checkpoint, by file name.
    fn nets(&self) -> Vec<(&'static str, &VarMap)>;
    /// The optimisers to checkpoint, by file name.
    fn optimizers(&mut self) -> Vec<(&'static str, &mut adam::Adam)> {
        Vec::new()
    }
    /// Extra state to checkpoint (e.g. BEGAN's k_t).
    fn extra(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    fn restore_extra(&mut self, _v: &serde_json::Value) -> Result<()> {
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FileSum {
    bytes: u64,
    sha256: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct State {
    step: usize,
    steps: usize,
    done: bool,
    extra: serde_json::Value,
    log: Vec<LogRow>,
    /// The checkpoint's folder in the phase folder (`ckpt-0000300`).
    #[serde(default)]
    dir: String,
    /// Each file of the checkpoint folder: checked before it is loaded.
    #[serde(default)]
    files: std::collections::BTreeMap<String, FileSum>,
    /// Each optimiser's step count (its moments are in the checkpoint).
    #[serde(default)]
    optim: std::collections::BTreeMap<String, usize>,
}

/// How a phase ended.
#[derive(Debug)]
pub struct PhaseReport {
    pub log: Vec<LogRow>,
    /// Time spent training in this run (0 when the phase had finished before).
    pub wall_time_s: f64,
}

const STATE: &str = "state.json";
const PREV_STATE: &str = "state.prev.json";

fn read_state(path: &Path) -> Result<Option<State>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path)?;
    Ok(Some(
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?,
    ))
}

fn sum_file(path: &Path) -> Result<FileSum> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(FileSum {
        bytes: bytes.len() as u64,
        sha256: hex::encode(sha2::Sha256::digest(&bytes)),
    })
}

/// Why the checkpoint `s` describes cannot be trusted, if it cannot.
fn verify(pdir: &Path, s: &State) -> std::result::Result<(), String> {
    if s.dir.is_empty() {
        return Err("written by an older augment, without checksums".into());
    }
    for (name, want) in &s.files {
        let path = pdir.join(&s.dir).join(name);
        match sum_file(&path) {
            Err(_) => return Err(format!("{} is missing", path.display())),
            Ok(got) if got.bytes != want.bytes => {
                return Err(format!(
                    "{} has {} bytes, the checkpoint recorded {}",
                    path.display(),
                    got.bytes,
                    want.bytes
                ));
            }
            Ok(got) if got.sha256 != want.sha256 => {
                return Err(format!(
                    "{} has sha256 {}, the checkpoint recorded {}",
                    path.display(),
                    &got.sha256[..12],
                    &want.sha256[..12]
                ));
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

/// The newest checkpoint of `phase` whose files match their recorded sizes
/// and sums (`state.json`, else `state.prev.json`); `warn` hears why a
/// newer one was passed over.
fn good_state(dir: &Path, phase: &str, mut warn: impl FnMut(String)) -> Option<State> {
    let pdir = dir.join(phase);
    for file in [STATE, PREV_STATE] {
        let path = pdir.join(file);
        match read_state(&path) {
            Ok(None) => {}
            Err(e) => warn(format!(
                "{} is damaged ({e:#}); passed over",
                path.display()
            )),
            Ok(Some(s)) => match verify(&pdir, &s) {
                Ok(()) => return Some(s),
                Err(why) => warn(format!(
                    "the checkpoint at step {} of phase `{phase}` is damaged: {why}; passed over",
                    s.step
                )),
            },
        }
    }
    None
}

/// Path of a network's file in the checkpoint a phase would resume from.
pub fn checkpoint_path(dir: &Path, phase: &str, net: &str) -> Option<PathBuf> {
    let s = good_state(dir, phase, |_| {})?;
    Some(
        dir.join(phase)
            .join(s.dir)
            .join(format!("{net}.safetensors")),
    )
}

/// The networks of each phase's latest intact checkpoint in `dir`, as
/// (phase, file name, path); optimiser moments are left out.
pub fn final_checkpoints(dir: &Path) -> Result<Vec<(String, String, PathBuf)>> {
    let mut out = Vec::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    let mut phases: Vec<String> = std::fs::read_dir(dir)?
        .flatten()
        .filter(|e| e.path().join(STATE).is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    phases.sort();
    for phase in phases {
        if let Some(s) = good_state(dir, &phase, |_| {}) {
            for name in s.files.keys().filter(|n| !n.ends_with(".adam.safetensors")) {
                let path = dir.join(&phase).join(&s.dir).join(name);
                out.push((phase.clone(), name.clone(), path));
            }
        }
    }
    Ok(out)
}

/// The first network with a NaN or infinite weight: never checkpointed.
fn non_finite_net(p: &dyn Phase) -> Result<Option<&'static str>> {
    for (net, vm) in p.nets() {
        let data = vm.data().lock().expect("varmap lock");
        for v in data.values() {
            let total = v
                .as_tensor()
                .abs()?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            if !total.is_finite() {
                return Ok(Some(net));
            }
        }
    }
    Ok(None)
}

fn sync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("flushing {}", path.display()))
}

fn save_checkpoint(
    env: &PhaseEnv,
    phase: &str,
    p: &mut dyn Phase,
    step: usize,
    steps: usize,
    log: &[LogRow],
) -> Result<()> {
    let pdir = env.dir.join(phase);
    std::fs::create_dir_all(&pdir).with_context(|| format!("creating {}", pdir.display()))?;
    let ckpt = format!("ckpt-{step:07}");
    let tmp = pdir.join(format!(".{ckpt}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut names = Vec::new();
    for (net, vm) in p.nets() {
        let name = format!("{net}.safetensors");
        vm.save(tmp.join(&name))
            .with_context(|| format!("saving checkpoint {}", tmp.join(&name).display()))?;
        names.push(name);
        // A kill here leaves a half-written checkpoint folder.
        crate::fault::point(|| format!("{}:{phase}:checkpoint:{step}", env.label));
    }
    let mut optim = std::collections::BTreeMap::new();
    for (opt, adam) in p.optimizers() {
        let name = format!("{opt}.adam.safetensors");
        adam.save(&tmp.join(&name))?;
        optim.insert(opt.to_string(), adam.steps());
        names.push(name);
    }
    let mut files = std::collections::BTreeMap::new();
    for name in names {
        sync_file(&tmp.join(&name))?;
        files.insert(name.clone(), sum_file(&tmp.join(&name))?);
    }
    let gen_dir = pdir.join(&ckpt);
    if gen_dir.exists() {
        std::fs::remove_dir_all(&gen_dir)?;
    }
    std::fs::rename(&tmp, &gen_dir)
        .with_context(|| format!("moving {} into place", gen_dir.display()))?;
    let state = State {
        step,
        steps,
        done: step >= steps,
        extra: p.extra(),
        log: log.to_vec(),
        dir: ckpt.clone(),
        files,
        optim,
    };
    let current = pdir.join(STATE);
    if current.exists() {
        std::fs::rename(&current, pdir.join(PREV_STATE))?;
    }
    crate::data::write_atomic(&current, &serde_json::to_vec(&state)?)?;
    // Keep the two checkpoints the state files name; drop older ones.
    let keep: Vec<String> = [STATE, PREV_STATE]
        .iter()
        .filter_map(|f| read_state(&pdir.join(f)).ok().flatten().map(|s| s.dir))
        .collect();
    for e in std::fs::read_dir(&pdir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let stale = (name.starts_with("ckpt-") && !keep.contains(&name))
            || (name.starts_with(".ckpt-") && name.ends_with(".tmp"));
        if stale && e.path().is_dir() {
            std::fs::remove_dir_all(e.path())?;
        }
    }
    Ok(())
}

/// Loads networks from a phase's latest intact checkpoint into var maps.
pub fn load_nets(dir: &Path, phase: &str, nets: &[(&str, &VarMap)]) -> Result<()> {
    let s = good_state(dir, phase, |w| eprintln!("warning: {w}")).with_context(|| {
        format!(
            "no intact checkpoint of phase `{phase}` in {}",
            dir.display()
        )
    })?;
    load_state_nets(dir, phase, &s, nets)
}

fn load_state_nets(dir: &Path, phase: &str, s: &State, nets: &[(&str, &VarMap)]) -> Result<()> {
    for (net, vm) in nets {
        let path = dir
            .join(phase)
            .join(&s.dir)
            .join(format!("{net}.safetensors"));
        // VarMap::load needs `&mut`, but only to reach the shared map.
        let mut vm = (*vm).clone();
        vm.load(&path)
            .with_context(|| format!("loading checkpoint {}", path.display()))?;
    }
    Ok(())
}

/// Runs `steps` steps of a phase, resuming from its checkpoint in `env.dir`
/// and returning at once when the phase finished before.
pub fn run_phase(
    env: &PhaseEnv,
    name: &str,
    steps: usize,
    p: &mut dyn Phase,
) -> Result<PhaseReport> {
    let start_time = Instant::now();
    let mut start = 0;
    let mut log = Vec::new();
    let found = good_state(env.dir, name, |w| eprintln!("{}: warning: {w}", env.label));
    if let Some(state) = found
        && state.steps == steps
    {
        load_state_nets(env.dir, name, &state, &p.nets())?;
        let gen_dir = env.dir.join(name).join(&state.dir);
        for (opt, adam) in p.optimizers() {
            let t = state.optim.get(opt).copied().unwrap_or(0);
            adam.load(&gen_dir.join(format!("{opt}.adam.safetensors")), t)?;
        }
        p.restore_extra(&state.extra)?;
        log = state.log;
        start = state.step;
        if state.done {
            env.say(format!(
                "phase `{name}`: finished before ({steps} steps), loaded"
            ));
            return Ok(PhaseReport {
                log,
                wall_time_s: 0.0,
            });
        }
        env.say(format!(
            "phase `{name}`: resuming from the checkpoint at step {start} of {steps}"
        ));
    }
    if start == 0 {
        env.say(format!("phase `{name}`: {steps} steps"));
    }
    let pb = crate::progress::bar(steps as u64, "steps", env.quiet);
    pb.set_position(start as u64);
    pb.reset_eta();
    pb.set_prefix(name.to_string());
    let mut last_checkpoint = start;
    for step in start + 1..=steps {
        crate::fault::point(|| format!("{}:{name}:step:{step}", env.label));
        let losses = p.step(step)?;
        if let Some((loss, v)) = losses.iter().find(|(_, v)| !v.is_finite()) {
            pb.abandon();
            return Err(data_error!(
                "phase `{name}`: loss `{loss}` became {v} at step {step} \
                 (last good checkpoint: step {last_checkpoint}, kept in {}); training stopped. \
                 Lower the phase's `lr` (a changed config restarts the stage)",
                env.dir.display()
            ));
        }
        let last = step == steps;
        if last || (env.cadence.log_every > 0 && step % env.cadence.log_every == 0) {
            log.extend(losses.iter().map(|(n, v)| LogRow {
                phase: name.to_string(),
                step: step as u64,
                name: n.to_string(),
                value: *v,
            }));
        }
        if env.cadence.sample_every > 0 && (step % env.cadence.sample_every == 0 || last) {
            std::fs::create_dir_all(env.samples_dir())?;
            p.sample(&env.samples_dir().join(format!("{name}_{step:07}.png")))?;
        }
        if last || (env.cadence.checkpoint_every > 0 && step % env.cadence.checkpoint_every == 0) {
            if let Some(net) = non_finite_net(p)? {
                pb.abandon();
                return Err(data_error!(
                    "phase `{name}`: the weights of `{net}` became NaN or infinite by step {step} \
                     (a NaN or infinite gradient; last good checkpoint: step {last_checkpoint}, \
                     kept in {}); training stopped. Lower the phase's `lr`",
                    env.dir.display()
                ));
            }
            save_checkpoint(env, name, p, step, steps, &log)?;
            last_checkpoint = step;
        }
        pb.set_message(
            losses
                .iter()
                .take(4)
                .map(|(n, v)| format!("{n} {v:.4}"))
                .collect::<Vec<_>>()
                .join("  "),
        );
        pb.inc(1);
    }
    pb.finish_and_clear();
    if steps == 0 {
        save_checkpoint(env, name, p, 0, 0, &log)?;
    }
    Ok(PhaseReport {
        log,
        wall_time_s: start_time.elapsed().as_secs_f64(),
    })
}

/// The training rows of step `step` (1-based): epoch-wise permutations of
/// `0..n` seeded by (seed, epoch), so a resumed run sees the same batches.
pub fn batch_indices(n: usize, batch: usize, seed: u64, step: usize) -> Vec<usize> {
    let first = (step - 1) * batch;
    let mut out = Vec::with_capacity(batch);
    let mut epoch = usize::MAX;
    let mut perm: Vec<usize> = Vec::new();
    for k in first..first + batch {
        let e = k / n;
        if e != epoch {
            epoch = e;
            perm = (0..n).collect();
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (e as u64).wrapping_mul(0x2545_F491));
            perm.shuffle(&mut rng);
        }
        out.push(perm[k % n]);
    }
    out
}

/// Config checks shared by the GAN phases' options, each returning the
/// first bad `(key, value)` as one line: learning rates must be positive,
/// Adam's β in [0, 1), loss weights 0 or positive.
pub fn check_rates(v: &[(&str, f64)]) -> std::result::Result<(), String> {
    match v.iter().find(|(_, x)| !(*x > 0.0 && x.is_finite())) {
        Some((k, x)) => Err(format!("{k} = {x}: must be a positive number")),
        None => Ok(()),
    }
}

/// See [`check_rates`].
pub fn check_betas(v: &[(&str, f64)]) -> std::result::Result<(), String> {
    match v.iter().find(|(_, x)| !(0.0..1.0).contains(x)) {
        Some((k, x)) => Err(format!("{k} = {x}: must be in [0, 1)")),
        None => Ok(()),
    }
}

/// See [`check_rates`].
pub fn check_weights(v: &[(&str, f64)]) -> std::result::Result<(), String> {
    match v.iter().find(|(_, x)| !(*x >= 0.0 && x.is_finite())) {
        Some((k, x)) => Err(format!("{k} = {x}: must be 0 or positive")),
        None => Ok(()),
    }
}

/// A GAN phase's faces: `train` rows of `faces` (at the network's size)
/// train, `val` rows are measured before and after.
pub struct TrainSet<'a> {
    pub faces: &'a crate::data::tensors::FaceSet,
    pub train: Vec<usize>,
    pub val: Vec<usize>,
}

/// Steps for `epochs` passes over `n` rows at `batch` per step (at least 1).
pub fn steps_for_epochs(epochs: f64, n: usize, batch: usize) -> usize {
    ((epochs * n as f64 / batch as f64).ceil() as usize).max(1)
}

/// Detached copies of a var map's tensors: frozen networks get no gradients.
pub fn frozen(vm: &VarMap) -> HashMap<String, Tensor> {
    vm.data()
        .lock()
        .expect("varmap lock")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect()
}

/// Copies of a var map's tensors (training updates variables in place, so
/// [`frozen`]'s detached views would follow them): the networks at init.
pub fn snapshot(vm: &VarMap) -> Result<HashMap<String, Tensor>> {
    frozen(vm)
        .into_iter()
        .map(|(k, v)| Ok((k, v.copy()?)))
        .collect()
}

/// A var builder over plain tensors: networks built from it track no gradients.
pub fn vb_of(tensors: &HashMap<String, Tensor>, dev: &Device) -> VarBuilder<'static> {
    VarBuilder::from_tensors(tensors.clone(), DType::F32, dev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_each_epoch_exactly_once() {
        let n = 10;
        let mut seen: Vec<usize> = (1..=5).flat_map(|s| batch_indices(n, 2, 3, s)).collect();
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        // Deterministic, and epochs differ.
        assert_eq!(batch_indices(n, 4, 3, 7), batch_indices(n, 4, 3, 7));
        assert_ne!(batch_indices(n, 10, 3, 1), batch_indices(n, 10, 3, 2));
    }

    struct Exploding {
        vm: VarMap,
    }

    impl Phase for Exploding {
        fn step(&mut self, step: usize) -> Result<Vec<(&'static str, f64)>> {
            Ok(vec![("loss", if step < 5 { 1.0 } else { f64::NAN })])
        }
        fn sample(&mut self, _: &Path) -> Result<()> {
            Ok(())
        }
        fn nets(&self) -> Vec<(&'static str, &VarMap)> {
            vec![("net", &self.vm)]
        }
    }

    #[test]
    fn nan_loss_stops_the_phase_and_keeps_the_last_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let vm = VarMap::new();
        vm.get(
            2,
            "w",
            candle_nn::Init::Const(1.0),
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let env = PhaseEnv {
            dir: dir.path(),
            cadence: Cadence {
                log_every: 1,
                sample_every: 0,
                checkpoint_every: 3,
            },
            quiet: true,
            label: "test",
        };
        let err = run_phase(&env, "p", 10, &mut Exploding { vm }).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("loss `loss` became NaN at step 5"), "{msg}");
        assert!(msg.contains("(last good checkpoint: step 3"), "{msg}");
        let state = read_state(&dir.path().join("p").join(STATE))
            .unwrap()
            .unwrap();
        assert_eq!(state.step, 3);
        assert!(!state.done);
        assert_eq!(state.log.len(), 3);
    }

    /// Adds 1 to every weight per step; fails (as a kill would stop it) at `fail_at`.
    struct Counter {
        vm: VarMap,
        fail_at: Option<usize>,
    }

    impl Phase for Counter {
        fn step(&mut self, step: usize) -> Result<Vec<(&'static str, f64)>> {
            if self.fail_at == Some(step) {
                anyhow::bail!("stopped at {step}");
            }
            for v in self.vm.all_vars() {
                v.set(&(v.as_tensor() + 1.0)?)?;
            }
            Ok(vec![("loss", 1.0 / step as f64)])
        }
        fn sample(&mut self, _: &Path) -> Result<()> {
            Ok(())
        }
        fn nets(&self) -> Vec<(&'static str, &VarMap)> {
            vec![("net", &self.vm)]
        }
    }

    fn counter(fail_at: Option<usize>) -> Counter {
        let vm = VarMap::new();
        vm.get(
            3,
            "w",
            candle_nn::Init::Const(0.0),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        Counter { vm, fail_at }
    }

    fn weight(c: &Counter) -> f32 {
        c.vm.all_vars()[0].as_tensor().to_vec1::<f32>().unwrap()[0]
    }

    #[test]
    fn a_damaged_checkpoint_is_passed_over_for_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        let env = PhaseEnv {
            dir: dir.path(),
            cadence: Cadence {
                log_every: 1,
                sample_every: 0,
                checkpoint_every: 2,
            },
            quiet: true,
            label: "test",
        };
        run_phase(&env, "p", 10, &mut counter(Some(6))).unwrap_err();
        let pdir = dir.path().join("p");
        let mut ckpts: Vec<String> = std::fs::read_dir(&pdir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("ckpt-"))
            .collect();
        ckpts.sort();
        assert_eq!(
            ckpts,
            ["ckpt-0000002", "ckpt-0000004"],
            "two generations kept"
        );
        // Flip the last byte of the newest checkpoint's weights.
        let newest = pdir.join("ckpt-0000004/net.safetensors");
        let mut bytes = std::fs::read(&newest).unwrap();
        *bytes.last_mut().unwrap() ^= 0x40;
        std::fs::write(&newest, bytes).unwrap();
        let mut resumed = counter(None);
        run_phase(&env, "p", 10, &mut resumed).unwrap();
        // Resumed from step 2 (weights 2), then 8 more steps.
        assert_eq!(weight(&resumed), 10.0);
        let state = read_state(&pdir.join(STATE)).unwrap().unwrap();
        assert_eq!((state.step, state.done), (10, true));
        // Both checkpoints gone bad: the phase starts over, never from garbage.
        for f in [STATE, PREV_STATE] {
            let s = read_state(&pdir.join(f)).unwrap().unwrap();
            std::fs::write(pdir.join(&s.dir).join("net.safetensors"), b"garbage").unwrap();
        }
        assert!(good_state(dir.path(), "p", |_| {}).is_none());
        let mut fresh = counter(None);
        run_phase(&env, "p", 10, &mut fresh).unwrap();
        assert_eq!(weight(&fresh), 10.0);
    }
}
