//! End-to-end tests of the binary on the procedural demo faces: pipeline
//! validation, fingerprint skipping, atomic stage outputs, `show`, and SQL
//! answers as golden files (`tests/golden/*.sql` → `*.out`; regenerate with
//! `UPDATE_GOLDEN=1 cargo test --test it cli::`).

use crate::common::*;
use std::path::Path;

const PIPELINE: &str = r#"
[run]
name = "t"
dir = "run"
seed = 0

[stages.ingest]
kind = "ingest"
source = "demo"
n = 300
image_size = 32

[stages.balance]
kind = "balance"
inputs = ["ingest"]
strategy = "dynamic_balancing"
size = 2.0

[stages.doubling]
kind = "balance"
inputs = ["ingest"]
strategy = "random_doubling"
"#;

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("p.toml"), PIPELINE);
    dir
}

#[test]
fn runs_skips_fresh_and_reruns_on_change() {
    let d = setup();
    let (code, _, err) = augment(&["run", "p.toml"], d.path());
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("300 of 300 annotated images found; 0 rejected"),
        "{err}"
    );
    assert!(d.path().join("run/ingest/faces.parquet").is_file());
    assert!(d.path().join("run/balance/label_counts.png").is_file());

    let (_, _, err) = augment(&["run", "p.toml"], d.path());
    assert!(
        err.contains("ingest: fresh") && err.contains("balance: fresh"),
        "{err}"
    );

    // Changing a balance key reruns only that stage.
    let (_, _, err) = augment(
        &["run", "p.toml", "--set", "stages.balance.size=1.5"],
        d.path(),
    );
    assert!(err.contains("ingest: fresh"), "{err}");
    assert!(err.contains("balance: done"), "{err}");
    let out = augment_ok(
        &[
            "sql",
            "run",
            "SELECT count(*) AS n FROM balance_plan",
            "--format",
            "csv",
        ],
        d.path(),
    );
    assert_eq!(out.trim(), "n\n362", "1.5 x 241 train rows");

    // `show` sees that the recorded pipeline (size 1.5) matches; --force reruns everything.
    let show = augment_ok(&["show", "run"], d.path());
    assert!(show.contains("balance (balance): fresh"), "{show}");
    assert!(show.contains("plan") && show.contains("362 rows"), "{show}");
    let (_, _, err) = augment(
        &["run", "p.toml", "--force", "--only", "doubling"],
        d.path(),
    );
    assert!(
        err.contains("doubling: done") && !err.contains("ingest: done"),
        "{err}"
    );
}

#[test]
fn dry_run_prints_plan_and_writes_nothing() {
    let d = setup();
    let out = augment_ok(
        &["run", "p.toml", "--dry-run", "--set", "stages.ingest.n=50"],
        d.path(),
    );
    assert!(
        out.contains("[stages.ingest]") && out.contains("n = 50"),
        "{out}"
    );
    assert!(out.contains("run (missing"), "{out}");
    assert!(!d.path().join("run").exists());
}

#[test]
fn config_errors_exit_2_with_one_line() {
    let d = setup();
    let cases: &[(&str, &str)] = &[
        ("n = 300", "n = 300\nresolution = 3"),
        (
            "strategy = \"random_doubling\"",
            "strategy = \"random_doubling\"\nsize = 3",
        ),
        (
            "kind = \"balance\"\ninputs = [\"ingest\"]\nstrategy = \"dynamic",
            "kind = \"balanse\"\ninputs = [\"ingest\"]\nstrategy = \"dynamic",
        ),
        (
            "inputs = [\"ingest\"]\nstrategy = \"random",
            "inputs = [\"ingst\"]\nstrategy = \"random",
        ),
        (
            "strategy = \"random_doubling\"",
            "strategy = \"random_doubling\"\nsizes = [2, 2]",
        ),
        ("n = 300", "n = 300\nsizes = [2, 3]"),
    ];
    let expect = [
        "unknown field `resolution`",
        "random_doubling adds exactly one row",
        "unknown kind \"balanse\"",
        "no stage named \"ingst\"",
        "the size 2 is listed twice",
        "only `balance` stages take a size sweep",
    ];
    for ((from, to), want) in cases.iter().zip(expect) {
        let text = PIPELINE.replacen(from, to, 1);
        assert_ne!(text, PIPELINE, "case {from:?} did not apply");
        write(&d.path().join("bad.toml"), &text);
        let (code, _, err) = augment(&["run", "bad.toml"], d.path());
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(want), "expected {want:?} in {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains("bad.toml"), "names the file: {err}");
    }
    let (code, _, err) = augment(&["run", "missing.toml"], d.path());
    assert_eq!(code, 2);
    assert!(err.contains("missing.toml"), "{err}");
    let (code, _, err) = augment(&["run", "p.toml", "--only", "nope"], d.path());
    assert_eq!(code, 2);
    assert!(err.contains("--only nope"), "{err}");
}

#[test]
fn sql_is_read_only() {
    let d = setup();
    augment_ok(&["run", "p.toml", "--only", "ingest"], d.path());
    for q in [
        "DROP TABLE faces",
        "CREATE TABLE x AS SELECT 1",
        "COPY faces TO 'x.csv'",
        "INSERT INTO faces SELECT * FROM faces",
    ] {
        let (code, _, err) = augment(&["sql", "run", q], d.path());
        assert_eq!(code, 2, "{q}: {err}");
        assert!(
            err.contains("read-only") || err.contains("not supported"),
            "{q}: {err}"
        );
    }
    assert!(!d.path().join("x.csv").exists());
}

#[test]
fn failed_stage_leaves_previous_output_intact() {
    let d = setup();
    // A CelebA-layout folder whose one image becomes undecodable.
    let root = d.path().join("celeba");
    augment_ok(
        &[
            "demo-data",
            "--out",
            root.to_str().unwrap(),
            "--n",
            "20",
            "--seed",
            "1",
        ],
        d.path(),
    );
    let p = "[run]\nname = \"f\"\ndir = \"frun\"\n[stages.ingest]\nkind = \"ingest\"\nroot = \"celeba\"\nmax_reject_fraction = 0.0\n";
    write(&d.path().join("f.toml"), p);
    augment_ok(&["run", "f.toml"], d.path());
    let before = std::fs::read(d.path().join("frun/ingest/faces.parquet")).unwrap();
    write(
        &root.join("img_align_celeba/000003.jpg"),
        "this is not a jpeg",
    );
    let (code, _, err) = augment(&["run", "f.toml"], d.path());
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("stage `ingest` failed") && err.contains("000003.jpg"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(d.path().join("frun/ingest/faces.parquet")).unwrap(),
        before
    );
    let leftovers: Vec<_> = std::fs::read_dir(d.path().join("frun"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary folders left: {leftovers:?}"
    );
    // The manifest still describes the old, complete output.
    let show = augment_ok(&["show", "frun"], d.path());
    assert!(show.contains("faces") && show.contains("20 rows"), "{show}");
}

#[test]
fn same_seed_gives_byte_identical_plan() {
    let d = setup();
    augment_ok(&["run", "p.toml"], d.path());
    let a = std::fs::read(d.path().join("run/balance/plan.parquet")).unwrap();
    augment_ok(&["run", "p.toml", "--force", "--only", "balance"], d.path());
    let b = std::fs::read(d.path().join("run/balance/plan.parquet")).unwrap();
    assert_eq!(a, b);
    // Another seed gives another plan.
    augment_ok(
        &[
            "run",
            "p.toml",
            "--only",
            "balance",
            "--set",
            "stages.balance.seed=5",
        ],
        d.path(),
    );
    let c = std::fs::read(d.path().join("run/balance/plan.parquet")).unwrap();
    assert_ne!(a, c);
}

#[test]
fn sql_golden_files() {
    let d = setup();
    augment_ok(&["run", "p.toml"], d.path());
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut queries: Vec<_> = std::fs::read_dir(&golden)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    queries.sort();
    assert!(queries.len() >= 5, "golden queries missing");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for q in queries {
        let sql = std::fs::read_to_string(&q).unwrap();
        let got = augment_ok(&["sql", "run", sql.trim()], d.path());
        let out_path = q.with_extension("out");
        if update {
            std::fs::write(&out_path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&out_path).unwrap_or_default();
        if got != want {
            failures.push(format!(
                "{}:\n--- want\n{want}\n--- got\n{got}",
                q.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn demo_data_is_celeba_layout() {
    let d = tempfile::tempdir().unwrap();
    augment_ok(
        &["demo-data", "--out", "demo", "--n", "12", "--seed", "3"],
        d.path(),
    );
    let attr = std::fs::read_to_string(d.path().join("demo/list_attr_celeba.txt")).unwrap();
    assert!(attr.starts_with("12\r\n5_o_Clock_Shadow Arched_Eyebrows"));
    let img = image::open(d.path().join("demo/img_align_celeba/000012.jpg")).unwrap();
    assert_eq!((img.width(), img.height()), (178, 218));
    let (_, ids, _) = parse_attr_independently(&d.path().join("demo/list_attr_celeba.txt"));
    assert_eq!(ids.len(), 12);
    assert!(
        std::fs::read_to_string(d.path().join("demo/list_eval_partition.txt"))
            .unwrap()
            .contains("000012.jpg 2")
    );
}

/// Every pipeline file shipped in `pipelines/` validates (pointed at the
/// shared CelebA folder, on CPU): a dry run plans its stages, size sweeps
/// expanded.
#[test]
fn shipped_pipelines_validate() {
    let Some(root) = celeba_dir("shipped_pipelines_validate") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    names.sort();
    assert!(names.len() >= 6, "{names:?}");
    for p in names {
        let root_set = format!("stages.ingest.root={}", root.display());
        let run_dir = format!("run.dir={}", d.path().join("run").display());
        let mut args = vec![
            "run",
            p.to_str().unwrap(),
            "--dry-run",
            "--set",
            "run.device=cpu",
            "--set",
            &run_dir,
        ];
        let is_demo = std::fs::read_to_string(&p)
            .unwrap()
            .contains("source = \"demo\"");
        if !is_demo {
            args.extend(["--set", &root_set]);
        }
        let out = augment_ok(&args, d.path());
        assert!(out.contains("(validated)"), "{}: {out}", p.display());
        if p.ends_with("dynamic_balance.toml") {
            for s in [
                "dynamic_x1_5",
                "synthesize_dynamic_x3",
                "classifier_dynamic_x2",
            ] {
                assert!(out.contains(&format!("[stages.{s}]")), "{s} in {out}");
            }
        }
    }
    assert!(!d.path().join("run").exists(), "a dry run writes nothing");
}
