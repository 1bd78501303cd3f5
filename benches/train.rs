//! Training throughput of each attr2face phase (images per second, batch 16)
//! at the `tiny` and `paper_64` presets, through the real pipeline runner on
//! 400 demo faces. CPU by default; `AUGMENT_BENCH_DEVICE=cuda:0` (with
//! `--features cuda`) measures a GPU.
//! Run: `cargo bench --profile dev --bench train`.

use std::time::Instant;

use augment::pipeline::{config, runner};

fn main() -> anyhow::Result<()> {
    // SAFETY: first thing in main, before any thread exists (candle stops
    // re-reading /proc/cpuinfo on every matrix product).
    unsafe { augment::ops::fix_thread_count() };
    let device = std::env::var("AUGMENT_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into());
    let dir = tempfile::tempdir()?;
    let steps = |preset: &str| if preset == "tiny" { 30 } else { 4 };
    println!("train benchmark on {device}, batch 16, demo faces");
    println!(
        "{:<10} {:<12} {:>6} {:>10} {:>10}",
        "preset", "phase", "steps", "s/step", "images/s"
    );
    for preset in ["tiny", "paper_64"] {
        let n = steps(preset);
        let toml = format!(
            r#"
[run]
name = "bench"
dir = "run_{preset}"
seed = 0
device = "{device}"

[stages.ingest]
kind = "ingest"
source = "demo"
n = 400

[stages.gen]
kind = "train_generator"
inputs = ["ingest"]
preset = "{preset}"
batch_size = 16
sample_every = 0
checkpoint_every = 0
autoencoder.steps = {n}
classifier.steps = {n}
mapping.steps = {n}
"#
        );
        let path = dir.path().join(format!("{preset}.toml"));
        std::fs::write(&path, toml)?;
        let p = config::load(&path, &[])?;
        let t = Instant::now();
        runner::run(
            &p,
            &runner::RunOptions {
                quiet: true,
                ..Default::default()
            },
        )?;
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p.run.dir.join("manifest.json"))?)?;
        let s = &manifest["stages"]["gen"]["summary"];
        for phase in ["autoencoder", "classifier", "mapping"] {
            let wall = s[phase]["wall_time_s"].as_f64().unwrap_or(f64::NAN);
            println!(
                "{preset:<10} {phase:<12} {n:>6} {:>10.3} {:>10.1}",
                wall / n as f64,
                16.0 * n as f64 / wall
            );
        }
        eprintln!(
            "({preset}: whole pipeline {:.1}s)",
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
