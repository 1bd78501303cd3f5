//! Training throughput and memory of the translation generators (SG-GAN,
//! StarGAN): training images per second, where one step is one critic
//! update and every fifth step also updates G (n_critic = 5), and the
//! process's peak resident memory during each run (Linux: the peak is reset
//! through /proc/self/clear_refs before each), at the `tiny` and `paper_128`
//! presets, through the real pipeline runner on 400 demo faces. The peak
//! includes the stage's measuring pass after training. At `paper_128` the
//! batches are small so that a 24 GB machine holds them; `micro_batch` rows
//! go through each forward/backward pass. CPU by default;
//! `AUGMENT_BENCH_DEVICE=cuda:0` (with `--features cuda`) measures a GPU
//! (the memory column is then host memory only).
//! Run: `cargo bench --profile dev --bench translation`.

use augment::pipeline::{config, runner};

fn main() -> anyhow::Result<()> {
    // SAFETY: first thing in main, before any thread exists (candle stops
    // re-reading /proc/cpuinfo on every matrix product).
    unsafe { augment::ops::fix_thread_count() };
    // SAFETY: first thing in main, before any thread exists.
    unsafe { augment::train::enable_second_order_gradients() };
    let device = std::env::var("AUGMENT_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into());
    let dir = tempfile::tempdir()?;
    println!("translation training benchmark on {device}, demo faces, n_critic 5");
    println!(
        "{:<8} {:<10} {:>6} {:>6} {:>6} {:>10} {:>10} {:>12}",
        "model", "preset", "batch", "micro", "steps", "s/step", "images/s", "peak RSS MB"
    );
    let sggan_attrs = r#"["Male", "Smiling", "Black_Hair", "Blond_Hair"]"#;
    let stargan_attrs = r#"["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"]"#;
    for preset in ["tiny", "paper_128"] {
        // (model, batch, micro_batch, attributes)
        let runs = if preset == "tiny" {
            [
                ("sggan", 8, None, sggan_attrs),
                ("stargan", 16, None, stargan_attrs),
            ]
        } else {
            [
                ("sggan", 2, Some(1), sggan_attrs),
                ("stargan", 4, None, stargan_attrs),
            ]
        };
        for (model, batch, micro, attrs) in runs {
            let steps = if preset == "tiny" { 50 } else { 5 };
            let micro_key = micro.map_or(String::new(), |m| format!(", micro_batch = {m}"));
            reset_peak();
            let toml = format!(
                r#"
[run]
name = "bench"
dir = "run_{model}_{preset}"
seed = 0
device = "{device}"

[stages.ingest]
kind = "ingest"
source = "demo"
n = 400
image_size = 128

[stages.gen]
kind = "train_generator"
inputs = ["ingest"]
model = "{model}"
preset = "{preset}"
batch_size = {batch}
sample_every = 0
checkpoint_every = 0
translation = {{ steps = {steps}, attributes = {attrs}{micro_key} }}
"#
            );
            let path = dir.path().join(format!("{model}_{preset}.toml"));
            std::fs::write(&path, toml)?;
            let p = config::load(&path, &[])?;
            runner::run(
                &p,
                &runner::RunOptions {
                    quiet: true,
                    ..Default::default()
                },
            )?;
            let manifest: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(p.run.dir.join("manifest.json"))?)?;
            let wall = manifest["stages"]["gen"]["summary"]["wall_time_s"]
                .as_f64()
                .unwrap_or(f64::NAN);
            let micro = micro.map_or("all".to_string(), |m: usize| m.to_string());
            let peak = peak_mb().map_or("-".to_string(), |m| format!("{m:.0}"));
            println!(
                "{model:<8} {preset:<10} {batch:>6} {micro:>6} {steps:>6} {:>10.3} {:>10.2} {peak:>12}",
                wall / steps as f64,
                (steps * batch) as f64 / wall
            );
        }
    }
    Ok(())
}

/// Resets the kernel's peak-RSS counter of this process (Linux; ignored elsewhere).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident memory since the last [`reset_peak`], in MB (Linux).
fn peak_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
