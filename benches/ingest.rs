//! Ingest throughput on `$AUGMENT_CELEBA_DIR` (CI: the 2,000 shared real images),
//! next to a decode-only loop over the same files on all cores: the ceiling.
//! Run: `AUGMENT_CELEBA_DIR=... cargo bench --profile dev --bench ingest`.

use std::path::PathBuf;
use std::time::Instant;

use rayon::prelude::*;

fn main() -> anyhow::Result<()> {
    let Some(root) = std::env::var_os("AUGMENT_CELEBA_DIR").map(PathBuf::from) else {
        eprintln!("SKIPPED: set AUGMENT_CELEBA_DIR to a CelebA folder");
        return Ok(());
    };
    let files: Vec<PathBuf> = std::fs::read_dir(root.join("img_align_celeba"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    let threads = rayon::current_num_threads();
    println!(
        "ingest benchmark: {} images in {}, {threads} threads",
        files.len(),
        root.display()
    );

    // Ceiling: read + JPEG decode only.
    let mut best_decode = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let ok = files
            .par_iter()
            .filter(|p| {
                std::fs::read(p)
                    .ok()
                    .and_then(|b| augment::data::images::decode_rgb(&b).ok())
                    .is_some()
            })
            .count();
        assert_eq!(ok, files.len());
        best_decode = best_decode.min(t.elapsed().as_secs_f64());
    }

    // The whole stage: parse annotations, decode, crop, resize, PNG, Parquet.
    let dir = tempfile::tempdir()?;
    let pipeline = dir.path().join("p.toml");
    std::fs::write(
        &pipeline,
        format!(
            "[run]\nname = \"bench\"\ndir = \"run\"\n[stages.ingest]\nkind = \"ingest\"\nroot = {:?}\n",
            root.display().to_string()
        ),
    )?;
    let mut best_ingest = f64::MAX;
    for _ in 0..3 {
        let p = augment::pipeline::config::load(&pipeline, &[])?;
        let opts = augment::pipeline::runner::RunOptions {
            force: true,
            quiet: true,
            ..Default::default()
        };
        let t = Instant::now();
        augment::pipeline::runner::run(&p, &opts)?;
        best_ingest = best_ingest.min(t.elapsed().as_secs_f64());
    }
    let n = files.len() as f64;
    println!(
        "decode only (ceiling):  {:>8.0} images/s  ({best_decode:.2} s)",
        n / best_decode
    );
    println!(
        "ingest stage, 64x64:    {:>8.0} images/s  ({best_ingest:.2} s, incl. parsing 202,599 annotation rows)",
        n / best_ingest
    );
    Ok(())
}
