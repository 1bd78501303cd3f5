//! Command-line interface: clap derive only, no logic.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::query::Format;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  a stage failed (bad data, I/O, or a bug; the message says which)
  2  usage or configuration error (bad flag, pipeline file, key or path)";

/// Balance imbalanced multi-label face datasets (CelebA) by synthesizing
/// labelled images. A pipeline file declares stages (ingest, balance, ...);
/// every stage writes Parquet that `augment sql` can query.
#[derive(Debug, Parser)]
#[command(name = "augment", version, about, after_help = EXIT_CODES, propagate_version = true)]
pub struct Cli {
    /// Print nothing but results and errors (no progress bars).
    #[arg(long, short, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a pipeline's stages in dependency order, skipping fresh ones.
    #[command(
        after_help = "Examples:\n  augment run pipelines/quickstart.toml\n  augment run pipelines/celeba_balance.toml --set stages.ingest.root=/data/celeba\n  augment run pipelines/quickstart.toml --only balance --force\n  augment run pipelines/quickstart.toml --dry-run"
    )]
    Run {
        /// The pipeline TOML file.
        pipeline: PathBuf,
        /// Run only this stage (repeatable); its inputs must already be fresh.
        #[arg(long, value_name = "STAGE")]
        only: Vec<String>,
        /// Rerun stages even when their fingerprint is unchanged.
        #[arg(long)]
        force: bool,
        /// Print the resolved, validated plan and exit without running anything.
        #[arg(long)]
        dry_run: bool,
        /// Override any key of the file, e.g. `--set stages.ingest.root=/data/celeba` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Show each stage of a run: status (fresh / stale / missing), row counts, outputs, duration.
    Show {
        /// The run folder (the pipeline's `[run] dir`).
        run_dir: PathBuf,
    },
    /// Query a run's tables with SQL (DataFusion; read-only).
    #[command(
        after_help = "Tables: every table of every stage, by name (faces, rejects, plan, label_stats) when \
the name is unique in the run, and always as <stage>_<table> (e.g. balance_plan).\n\nExample:\n  augment sql runs/quickstart \
\"SELECT partition, count(*), avg(CAST(smiling AS DOUBLE)) FROM faces GROUP BY partition\""
    )]
    Sql {
        run_dir: PathBuf,
        query: String,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Write the procedural demo faces (not CelebA) in CelebA's layout.
    DemoData {
        /// Output folder (gets img_align_celeba/, list_attr_celeba.txt, ...).
        #[arg(long)]
        out: PathBuf,
        /// Number of faces.
        #[arg(long, default_value_t = 3000)]
        n: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Draw the per-attribute positives of the originals and of every balance stage of a run on one chart.
    Chart {
        run_dir: PathBuf,
        /// Output file; `.png` or `.svg`.
        #[arg(long, default_value = "label_counts.png")]
        out: PathBuf,
    },
}
