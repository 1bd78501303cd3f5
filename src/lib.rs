//! `augment`: fix imbalanced multi-label image datasets by synthesizing
//! labelled images.
//!
//! Modules, top to bottom (`docs/design.md` has the map and the direction
//! of dependencies, which `tests/it/architecture.rs` checks):
//!
//! - [`cli`]: the command line (parsing only).
//! - [`report`]: the HTML report over runs and `augment chart`.
//! - [`compare`]: `augment ms-ssim`, `psnr` and `fid` on image folders or tables.
//! - [`query`]: read-only SQL over a run's outputs.
//! - [`pipeline`]: pipeline files → validated plans; the runner and manifest.
//! - [`stages`]: one module per stage kind (ingest, balance, ...).
//! - [`generators`]: trained generators for inference, one file per family.
//! - [`contract`]: what the runner hands a stage and what a stage returns.
//! - [`train`]: training loops, losses, checkpoints, `model.json`.
//! - [`weights`]: finding the FID Inception weights; `augment weights fetch`.
//! - [`charts`]: label-count charts.
//! - [`models`]: the networks (candle only).
//! - [`metrics`]: FID/KID, MS-SSIM, accuracy, imbalance statistics.
//! - [`data`]: Arrow schemas, CelebA parsing, images, Parquet, demo faces.
//! - [`ops`]: our CPU convolution kernels (im2col/col2im + GEMM) and the
//!   conv layers every model uses.
//! - [`progress`]: progress bars (hidden with `--quiet`).
//! - [`error`]: user errors (what to fix) vs bugs and environment failures.
//! - [`limits`]: the bounds on every value that sizes memory or work.
//! - [`fault`]: fault injection points for `tests/it/faults.rs` (inert otherwise).
//! - [`fuzz`] (tests only): the property-based fuzz pass over parsers,
//!   `--set` values and the image decoder.

pub mod charts;
pub mod cli;
pub mod compare;
pub mod contract;
pub mod data;
pub mod error;
pub mod fault;
#[cfg(test)]
mod fuzz;
pub mod generators;
pub mod limits;
pub mod metrics;
pub mod models;
pub mod ops;
pub mod pipeline;
pub mod progress;
pub mod query;
pub mod report;
pub mod stages;
pub mod train;
pub mod weights;

use anyhow::Result;

/// mimalloc for every binary that links the library (the CLI, tests, benches).
/// Training allocates and frees tensors of tens of MB many times a step; glibc
/// maps and unmaps each one anew, and the page faults, zeroing and TLB
/// shoot-downs took most of a convolution's backward pass (measured with perf:
/// 183 ms for the 3→64 stem at 64×64, batch 16, of which the GEMMs were a few
/// ms). mimalloc keeps freed pages for reuse.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub use data::VERSION;
pub use ops::configure_allocator;

/// Runs one parsed command.
pub fn run(cli: cli::Cli) -> Result<()> {
    match cli.command {
        cli::Command::Run {
            pipeline,
            only,
            force,
            dry_run,
            set,
        } => {
            let p = pipeline::config::load(&pipeline, &set)?;
            let opts = pipeline::runner::RunOptions {
                only,
                force,
                dry_run,
                quiet: cli.quiet,
            };
            pipeline::runner::run(&p, &opts)
        }
        cli::Command::Show { run_dir } => {
            print!("{}", pipeline::runner::show(&run_dir)?);
            Ok(())
        }
        cli::Command::Sql {
            run_dir,
            query,
            format,
        } => {
            let batches = query::sql(&run_dir, &query)?;
            println!("{}", query::render(&batches, format)?);
            Ok(())
        }
        cli::Command::DemoData { out, n, seed } => {
            if n == 0 {
                return Err(config_error!("--n must be at least 1"));
            }
            limits::check("--n", n as f64, limits::DEMO_FACES).map_err(|e| config_error!("{e}"))?;
            data::demo::write_layout(&out, n, seed, cli.quiet)?;
            if !cli.quiet {
                eprintln!(
                    "wrote {n} demo faces (procedural, not CelebA) to {}",
                    out.display()
                );
            }
            Ok(())
        }
        cli::Command::Fid(args) => fid(args, cli.quiet),
        cli::Command::MsSsim(a) => pairwise(compare::Pairwise::MsSsim, a),
        cli::Command::Psnr(a) => pairwise(compare::Pairwise::Psnr, a),
        cli::Command::Report { run_dirs, out } => {
            let (index, r) = report::write(&run_dirs, &out)?;
            if !cli.quiet {
                eprintln!(
                    "report of {} run(s), {} classifier(s): {}",
                    r.runs.len(),
                    r.comparison.len(),
                    index.display()
                );
            }
            Ok(())
        }
        cli::Command::Weights(cli::WeightsCommand::Fetch { from, force }) => {
            let r = weights::fetch(&weights::FetchOptions {
                from,
                force,
                quiet: cli.quiet,
            })?;
            println!("{}", r.human());
            Ok(())
        }
        cli::Command::Weights(cli::WeightsCommand::Show) => weights_show(),
        cli::Command::Chart { run_dir, out } => {
            let n = report::chart_run(&run_dir, &out)?;
            if !cli.quiet {
                eprintln!("drew {n} balance stage(s) to {}", out.display());
            }
            Ok(())
        }
    }
}

/// `augment fid A B`.
fn fid(args: cli::FidArgs, quiet: bool) -> Result<()> {
    let cli::FidArgs {
        a,
        b,
        weights,
        kid,
        kid_subsets,
        kid_subset_size,
        batch_size,
        device,
        filter,
        filter_a,
        filter_b,
        json,
    } = args;
    [
        ("--batch-size", batch_size, limits::BATCH),
        ("--kid-subsets", kid_subsets, limits::KID_SUBSETS),
        (
            "--kid-subset-size",
            kid_subset_size,
            limits::KID_SUBSET_SIZE,
        ),
    ]
    .iter()
    .try_for_each(|(key, v, l)| limits::check(key, *v as f64, *l))
    .map_err(|e| config_error!("{e}"))?;
    let weights = weights::require(weights.as_deref(), "--weights")?;
    let device = stages::Device::parse(&device)
        .ok_or_else(|| config_error!("--device {device}: expected cpu or cuda:N"))?
        .to_candle()?;
    if batch_size == 0 || (kid && (kid_subsets == 0 || kid_subset_size < 2)) {
        return Err(config_error!(
            "--batch-size must be ≥ 1, --kid-subsets ≥ 1 and --kid-subset-size ≥ 2"
        ));
    }
    let sel = |f: Option<String>| compare::Options {
        key: String::new(),
        filter: f.or_else(|| filter.clone()),
        ..Default::default()
    };
    let (sel_a, sel_b) = (sel(filter_a), sel(filter_b));
    let o = compare::FidOptions {
        weights,
        batch: batch_size,
        device,
        kid: kid.then_some((kid_subsets, kid_subset_size)),
        quiet,
    };
    let r = compare::fid(&a, &b, &sel_a, &sel_b, &o)?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!("{}", r.human());
    }
    Ok(())
}

/// `augment weights show`: which weights file is used, and from where.
fn weights_show() -> Result<()> {
    match weights::find(None, "--weights")? {
        Some((path, origin)) => {
            let from = match origin {
                weights::Origin::Environment => "$AUGMENT_FID_WEIGHTS",
                weights::Origin::Cache => "the cache",
                weights::Origin::Explicit => "--weights",
            };
            println!("{} (from {from})", path.display());
        }
        None => {
            let cache = weights::cache_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_else(|| "none: no HOME".into());
            return Err(data_error!(
                "no FID Inception weights ($AUGMENT_FID_WEIGHTS unset; cache {cache}): {}",
                weights::HOW_TO_GET
            ));
        }
    }
    Ok(())
}

fn pairwise(metric: compare::Pairwise, a: cli::PairArgs) -> Result<()> {
    if a.crop == Some(0) || a.resize == Some(0) {
        return Err(config_error!("--crop and --resize must be at least 1"));
    }
    [("--crop", a.crop), ("--resize", a.resize)]
        .iter()
        .filter_map(|(key, v)| v.map(|v| (key, v)))
        .try_for_each(|(key, v)| limits::check(key, v as f64, limits::IMAGE_SIDE))
        .map_err(|e| config_error!("{e}"))?;
    let opts = compare::Options {
        key: a.key,
        filter: a.filter,
        resize: a.resize,
        crop: a.crop,
    };
    let r = compare::pairwise(metric, &a.a, &a.b, &opts)?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!("{}", r.human());
    }
    Ok(())
}
