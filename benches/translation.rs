//! Training throughput of the translation generators (SG-GAN, StarGAN):
//! training images per second, where one step is one critic update and
//! every fifth step also updates G (n_critic = 5), at the `tiny` and
//! `paper_128` presets, through the real pipeline runner on 400 demo faces.
//! CPU by default; `AUGMENT_BENCH_DEVICE=cuda:0` (with `--features cuda`)
//! measures a GPU. Run: `cargo bench --profile dev --bench translation`.

use augment::pipeline::{config, runner};

fn main() -> anyhow::Result<()> {
    // SAFETY: first thing in main, before any thread exists.
    unsafe { augment::train::enable_second_order_gradients() };
    let device = std::env::var("AUGMENT_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into());
    let dir = tempfile::tempdir()?;
    println!("translation training benchmark on {device}, demo faces, n_critic 5");
    println!(
        "{:<8} {:<10} {:>6} {:>6} {:>10} {:>10}",
        "model", "preset", "batch", "steps", "s/step", "images/s"
    );
    for preset in ["tiny", "paper_128"] {
        for (model, batch, attrs) in [
            (
                "sggan",
                8,
                r#"["Male", "Smiling", "Black_Hair", "Blond_Hair"]"#,
            ),
            (
                "stargan",
                16,
                r#"["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"]"#,
            ),
        ] {
            let steps = if preset == "tiny" { 50 } else { 5 };
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
translation = {{ steps = {steps}, attributes = {attrs} }}
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
            println!(
                "{model:<8} {preset:<10} {batch:>6} {steps:>6} {:>10.3} {:>10.1}",
                wall / steps as f64,
                (steps * batch) as f64 / wall
            );
        }
    }
    Ok(())
}
