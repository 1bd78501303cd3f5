//! Helpers for integration tests: run the real `augment` binary in a temp dir
//! (ripgrep's `tests/util.rs` style) and find the shared CelebA data.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `augment` binary, single-threaded (`RAYON_NUM_THREADS=1`). The
/// harness already runs one test per core, and a tiny-preset training run
/// gains little from a second thread: BridgeGAN's 600 test steps took 172 s
/// on one thread and 154 s on two (2 cores), so two trainers side by side on
/// one thread each finish in about the time of one on two. (With every core
/// per process, two trainers oversubscribed the cores: 195 s and 52 s alone,
/// 393 s together.) Results depend on the thread count (summation order),
/// so the tests' measured values are those of one thread.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_augment"));
    c.env("RAYON_NUM_THREADS", "1");
    c
}

/// Runs `augment ARGS` and returns (exit code, stdout, stderr).
pub fn augment(args: &[&str], cwd: &Path) -> (i32, String, String) {
    let out: Output = bin()
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run augment");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Like [`augment`] but panics with the output unless it exits 0.
pub fn augment_ok(args: &[&str], cwd: &Path) -> String {
    let (code, out, err) = augment(args, cwd);
    assert_eq!(
        code, 0,
        "augment {args:?} failed:\nstdout: {out}\nstderr: {err}"
    );
    out
}

/// Says why a real-data test (or part of one) does not run. Where
/// `AUGMENT_REQUIRE_DATA` is set (`.ci/run` sets it, with the data) a skip
/// is a failure instead: there every real-data test must run.
pub fn skip(test: &str, why: &str) {
    if std::env::var_os("AUGMENT_REQUIRE_DATA").is_some() {
        panic!("{test} would be SKIPPED ({why}), but AUGMENT_REQUIRE_DATA is set");
    }
    eprintln!("SKIPPED {test}: {why}");
}

/// `$AUGMENT_CELEBA_DIR`, or None after printing why the test is skipped.
pub fn celeba_dir(test: &str) -> Option<PathBuf> {
    match std::env::var_os("AUGMENT_CELEBA_DIR").map(PathBuf::from) {
        Some(p) if p.join("list_attr_celeba.txt").is_file() => Some(p),
        Some(p) => {
            let why = format!(
                "AUGMENT_CELEBA_DIR={} has no list_attr_celeba.txt",
                p.display()
            );
            skip(test, &why);
            None
        }
        None => {
            skip(test, "set AUGMENT_CELEBA_DIR to a CelebA folder to run it");
            None
        }
    }
}

/// `$AUGMENT_FID_WEIGHTS` (the FID Inception file: `augment weights fetch`
/// writes it), or None after printing why the test is skipped.
pub fn fid_weights(test: &str) -> Option<PathBuf> {
    match std::env::var_os("AUGMENT_FID_WEIGHTS").map(PathBuf::from) {
        Some(p) if p.is_file() => Some(p),
        _ => {
            skip(
                test,
                "set AUGMENT_FID_WEIGHTS to the FID Inception file (augment weights fetch writes it) to run it",
            );
            None
        }
    }
}

/// The official attribute file parsed the plain way, independently of the crate:
/// (image id, 40 labels as bools).
pub fn parse_attr_independently(path: &Path) -> (Vec<String>, Vec<String>, Vec<[bool; 40]>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let n: usize = lines.next().unwrap().trim().parse().unwrap();
    let names: Vec<String> = lines
        .next()
        .unwrap()
        .split_whitespace()
        .map(String::from)
        .collect();
    let mut ids = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    for l in lines {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        ids.push(f[0].to_string());
        let mut row = [false; 40];
        for i in 0..40 {
            row[i] = f[i + 1] == "1";
        }
        labels.push(row);
    }
    assert_eq!(ids.len(), n);
    (names, ids, labels)
}

/// `augment sql run QUERY --format csv` in `dir`.
pub fn sql_csv(dir: &Path, query: &str) -> String {
    augment_ok(&["sql", "run", query, "--format", "csv"], dir)
}

/// A run folder's `manifest.json`.
pub fn manifest(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("manifest.json")).unwrap()).unwrap()
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// Reads boolean/string/int columns of a Parquet file as strings, row-major.
pub fn read_parquet(path: &Path) -> Vec<arrow::record_batch::RecordBatch> {
    let f = std::fs::File::open(path).unwrap();
    let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap();
    r.map(|b| b.unwrap()).collect()
}

/// A test's pipeline file: the `[run]` table (folder `run` beside the file)
/// and the `ingest` stage are written here once; each test adds its own
/// stages.
pub struct PipelineFile {
    head: String,
    ingest: Vec<String>,
    stages: String,
}

impl PipelineFile {
    /// `n` procedural demo faces at `image_size`.
    pub fn demo(name: &str, seed: u64, n: usize, image_size: usize) -> Self {
        PipelineFile {
            head: format!("[run]\nname = \"{name}\"\ndir = \"run\"\nseed = {seed}\n"),
            ingest: vec![
                "source = \"demo\"".into(),
                format!("n = {n}"),
                format!("image_size = {image_size}"),
            ],
            stages: String::new(),
        }
    }

    /// The CelebA folder `root` (the shared 2,000 faces: the images missing
    /// from a full annotation file are rejects, so any reject fraction passes).
    pub fn celeba(name: &str, seed: u64, root: &Path) -> Self {
        PipelineFile {
            head: format!("[run]\nname = \"{name}\"\ndir = \"run\"\nseed = {seed}\n"),
            ingest: vec![
                "source = \"celeba\"".into(),
                format!("root = {:?}", root.display().to_string()),
                "max_reject_fraction = 1.0".into(),
            ],
            stages: String::new(),
        }
    }

    /// One more `key = value` line for the ingest stage.
    pub fn ingest(mut self, line: &str) -> Self {
        self.ingest.push(line.to_string());
        self
    }

    /// The test's own `[stages.NAME]` tables.
    pub fn stages(mut self, toml: &str) -> Self {
        self.stages.push_str(toml);
        self
    }

    pub fn text(&self) -> String {
        format!(
            "{}\n[stages.ingest]\nkind = \"ingest\"\n{}\n{}",
            self.head,
            self.ingest.join("\n"),
            self.stages
        )
    }

    /// Writes the file as `dir/p.toml`.
    pub fn write(&self, dir: &Path) {
        std::fs::write(dir.join("p.toml"), self.text()).expect("write p.toml");
    }

    /// Writes `dir/p.toml`, runs it (which must succeed) and returns the run
    /// folder `dir/run`.
    pub fn run(&self, dir: &Path) -> PathBuf {
        self.write(dir);
        let (code, _, err) = augment(&["run", "p.toml"], dir);
        assert_eq!(code, 0, "{err}");
        dir.join("run")
    }
}

/// A small CelebA-layout copy: the attribute rows of `n` shared images, and those images.
pub fn small_copy(celeba: &Path, dir: &Path, n: usize) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(celeba.join("img_align_celeba"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    files.truncate(n);
    let text = std::fs::read_to_string(celeba.join("list_attr_celeba.txt")).unwrap();
    let mut lines = text.split("\r\n");
    let _count = lines.next();
    let header = lines.next().unwrap();
    let rows: Vec<&str> = lines
        .filter(|l| {
            l.split(' ')
                .next()
                .is_some_and(|id| files.binary_search(&id.to_string()).is_ok())
        })
        .collect();
    let mut out = format!("{}\r\n{header}\r\n", rows.len());
    for r in &rows {
        out.push_str(r);
        out.push_str("\r\n");
    }
    std::fs::create_dir_all(dir.join("img_align_celeba")).unwrap();
    write(&dir.join("list_attr_celeba.txt"), &out);
    for f in &files {
        std::fs::copy(
            celeba.join("img_align_celeba").join(f),
            dir.join("img_align_celeba").join(f),
        )
        .unwrap();
    }
    files
}

/// Each `(extra lines, wanted text)` added to the generator stage `head`
/// (its `[stages.NAME]` table up to its model keys) on 8 demo faces: the
/// run fails before any stage runs, with one stderr line containing the text.
pub fn assert_one_line_config_errors(head: &str, cases: &[(&str, &str)]) {
    let d = tempfile::tempdir().unwrap();
    for (extra, want) in cases {
        PipelineFile::demo("bad", 0, 8, 32)
            .stages(&format!("{head}\n{extra}\n"))
            .write(d.path());
        let (code, _, err) = augment(&["run", "p.toml"], d.path());
        assert_ne!(code, 0, "{extra}");
        assert!(err.contains(want), "{extra}: {err}");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{extra}: more than one line: {err}"
        );
        assert!(!d.path().join("run/ingest").exists(), "{extra}: ran");
    }
}

/// A JSON number (a summary value), or a panic naming what it was.
pub fn num(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// The one value a one-row, one-column query returns, parsed.
pub fn sql_value<T: std::str::FromStr>(dir: &Path, query: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    let out = sql_csv(dir, query);
    let rows: Vec<&str> = out.trim().lines().collect();
    assert_eq!(
        rows.len(),
        2,
        "{query}: expected a header and one row, got\n{out}"
    );
    assert!(
        !rows[1].contains(','),
        "{query}: expected one column, got\n{out}"
    );
    rows[1]
        .parse()
        .unwrap_or_else(|e| panic!("{query}: {:?} does not parse: {e:?}", rows[1]))
}

/// The mean of `loss` in `table` (a `train_log`) over its first and its
/// last 50 logged steps after step 0.
pub fn first_last_50(dir: &Path, table: &str, loss: &str) -> (f64, f64) {
    let q = |order: &str| {
        sql_value(
            dir,
            &format!(
                "SELECT avg(value) AS v FROM (SELECT value FROM {table} WHERE loss = '{loss}' \
                 AND step > 0 ORDER BY step {order} LIMIT 50)"
            ),
        )
    };
    (q("ASC"), q("DESC"))
}

/// The sha256 of a file, hex.
pub fn sha256_file(p: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
}
