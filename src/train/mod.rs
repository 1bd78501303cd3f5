//! Training loops. [`run_phase`] is the one loop every generator phase goes
//! through (StarGAN's `solver.py` shape): a step function returning named
//! losses, then log / sample / checkpoint at configured cadences, a NaN
//! guard, a progress bar, and resume from the last checkpoint.
//!
//! Checkpoints live in a *resume folder* that survives a killed or failed
//! run: `<phase>/<net>.safetensors` plus `<phase>/state.json` (step, extra
//! state such as BEGAN's k_t, and the phase's log rows), written after the
//! weights and renamed into place, so a state file always describes a
//! complete checkpoint. Adam's moment estimates are not checkpointed
//! (candle's `AdamW` keeps them private): after a resume they restart from
//! zero with bias correction, which only changes the first few steps.
//!
//! - [`losses`]: numerically stable loss functions.
//! - [`classifier`]: downstream attribute classifiers (best val epoch kept).
//! - [`attr2face`]: the three phases of the "for free" generator (and its ablations).
//! - [`translation`]: SG-GAN and StarGAN with WGAN-GP.
//! - [`accumulate`]: gradients of a batch summed over micro-batches.
//! - [`probe`]: the linear probe on frozen features (G_en or Inception).
//! - [`model_file`]: `model.json`, the typed record of a trained generator.

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

pub mod accumulate;
pub mod attr2face;
pub mod classifier;
pub mod losses;
pub mod model_file;
pub mod probe;
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
    /// Extra state to checkpoint (e.g. BEGAN's k_t).
    fn extra(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    fn restore_extra(&mut self, _v: &serde_json::Value) -> Result<()> {
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct State {
    step: usize,
    steps: usize,
    done: bool,
    extra: serde_json::Value,
    log: Vec<LogRow>,
}

/// How a phase ended.
#[derive(Debug)]
pub struct PhaseReport {
    pub log: Vec<LogRow>,
    /// Time spent training in this run (0 when the phase had finished before).
    pub wall_time_s: f64,
}

fn state_path(dir: &Path, phase: &str) -> PathBuf {
    dir.join(phase).join("state.json")
}

/// Whether `phase` finished in `dir` already.
pub fn phase_done(dir: &Path, phase: &str) -> bool {
    read_state(dir, phase).is_ok_and(|s| s.is_some_and(|s| s.done))
}

fn read_state(dir: &Path, phase: &str) -> Result<Option<State>> {
    let p = state_path(dir, phase);
    if !p.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&p)?;
    Ok(Some(
        serde_json::from_str(&text).with_context(|| format!("reading {}", p.display()))?,
    ))
}

/// Path of a network's checkpoint in a phase.
pub fn checkpoint_path(dir: &Path, phase: &str, net: &str) -> PathBuf {
    dir.join(phase).join(format!("{net}.safetensors"))
}

fn save_checkpoint(
    dir: &Path,
    phase: &str,
    p: &dyn Phase,
    step: usize,
    steps: usize,
    log: &[LogRow],
) -> Result<()> {
    let pdir = dir.join(phase);
    std::fs::create_dir_all(&pdir)?;
    for (net, vm) in p.nets() {
        let tmp = pdir.join(format!(".{net}.safetensors.tmp"));
        vm.save(&tmp)
            .with_context(|| format!("saving checkpoint {}", tmp.display()))?;
        std::fs::rename(&tmp, checkpoint_path(dir, phase, net))?;
    }
    let state = State {
        step,
        steps,
        done: step >= steps,
        extra: p.extra(),
        log: log.to_vec(),
    };
    let tmp = pdir.join(".state.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&state)?)?;
    std::fs::rename(&tmp, state_path(dir, phase))?;
    Ok(())
}

/// Loads a phase's networks from its checkpoint into `p`'s var maps.
pub fn load_nets(dir: &Path, phase: &str, nets: &[(&str, &VarMap)]) -> Result<()> {
    for (net, vm) in nets {
        let path = checkpoint_path(dir, phase, net);
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
    if let Some(state) = read_state(env.dir, name)?
        && state.steps == steps
    {
        let nets = p.nets();
        load_nets(env.dir, name, &nets)?;
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
        let losses = p.step(step)?;
        if let Some((loss, v)) = losses.iter().find(|(_, v)| !v.is_finite()) {
            pb.abandon();
            return Err(data_error!(
                "phase `{name}`: loss `{loss}` became {v} at step {step}; training stopped. \
                 The last good checkpoint (step {last_checkpoint}) is kept in {}. \
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
            save_checkpoint(env.dir, name, p, step, steps, &log)?;
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
        save_checkpoint(env.dir, name, p, 0, 0, &log)?;
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
        assert!(msg.contains("checkpoint (step 3)"), "{msg}");
        let state = read_state(dir.path(), "p").unwrap().unwrap();
        assert_eq!(state.step, 3);
        assert!(!state.done);
        assert_eq!(state.log.len(), 3);
    }
}
