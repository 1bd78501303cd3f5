//! Downstream classifiers: trained on real or augmented rows, measured on
//! the real test split only, metrics consistent with their definitions.

use crate::common::*;

#[test]
fn classifiers_on_real_and_augmented_rows_are_measured_on_real_test_rows() {
    let d = tempfile::tempdir().unwrap();
    PipelineFile::demo("c", 1, 400, 32)
        .stages(
            r#"
[stages.erase]
kind = "balance"
inputs = ["ingest"]
strategy = "erase"

[stages.synth]
kind = "synthesize"
inputs = ["ingest", "erase"]

[stages.real]
kind = "train_classifier"
inputs = ["ingest"]
size = "tiny"
epochs = 2
lr = 1e-3

[stages.aug]
kind = "train_classifier"
inputs = ["ingest", "synth"]
size = "tiny"
epochs = 2
lr = 1e-3
attributes = ["Bald", "Smiling", "Male"]

[stages.mix]
kind = "train_classifier"
inputs = ["ingest", "synth"]
size = "tiny"
steps = 7
lr = 1e-3
attributes = ["Bald"]
real_fraction = 0.75
"#,
        )
        .write(d.path());
    let (code, _, err) = augment(&["run", "p.toml"], d.path());
    assert_eq!(code, 0, "{err}");
    // Predictions: every real test face × attribute, nothing else.
    let out = sql_csv(
        d.path(),
        "SELECT count(*) AS n, count(DISTINCT p.image_id) AS faces, \
         sum(CASE WHEN f.partition = 'test' THEN 1 ELSE 0 END) AS test_rows \
         FROM real_predictions p JOIN faces f ON p.image_id = f.image_id",
    );
    let test_faces: usize = sql_csv(
        d.path(),
        "SELECT count(*) AS n FROM faces WHERE partition = 'test'",
    )
    .lines()
    .nth(1)
    .unwrap()
    .parse()
    .unwrap();
    assert_eq!(
        out.trim(),
        format!(
            "n,faces,test_rows\n{},{test_faces},{}",
            test_faces * 40,
            test_faces * 40
        )
    );
    // The paper's accuracy equals the mean of the per-attribute accuracies,
    // and the per-attribute accuracy agrees with the predictions.
    let out = sql_csv(
        d.path(),
        "SELECT round(abs(a.value - m.mean), 9) AS diff FROM real_metrics a, \
         (SELECT avg(value) AS mean FROM real_metrics WHERE metric = 'accuracy' AND attribute IS NOT NULL) m \
         WHERE a.metric = 'accuracy' AND a.attribute IS NULL",
    );
    assert_eq!(out.trim(), "diff\n0.0", "{out}");
    let out = sql_csv(
        d.path(),
        "SELECT round(abs(m.value - p.acc), 9) AS diff FROM real_metrics m JOIN \
         (SELECT attribute, avg(CASE WHEN (probability > 0.5) = label THEN 1.0 ELSE 0.0 END) AS acc \
          FROM real_predictions GROUP BY attribute) p ON m.attribute = p.attribute \
         WHERE m.metric = 'accuracy' AND m.attribute = 'smiling'",
    );
    assert_eq!(out.trim(), "diff\n0.0", "{out}");
    // The augmented classifier trained on real + erased rows, 3 attributes.
    let out = sql_csv(
        d.path(),
        "SELECT count(DISTINCT attribute) AS a, min(details LIKE '%synth.augmented%') AS aug \
         FROM aug_metrics WHERE attribute IS NOT NULL",
    );
    assert_eq!(out.trim(), "a,aug\n3,true", "{out}");
    // `metrics` is the union over both classifier stages.
    let out = sql_csv(
        d.path(),
        "SELECT stage, count(*) AS n FROM metrics GROUP BY stage ORDER BY stage",
    );
    assert_eq!(out.trim(), "stage,n\naug,14\nmix,8\nreal,125", "{out}");
    let m = manifest(&d.path().join("run"));
    let real_rows = m["stages"]["real"]["summary"]["training_rows"]
        .as_u64()
        .unwrap();
    assert_eq!(
        m["stages"]["aug"]["summary"]["training_rows"]
            .as_u64()
            .unwrap(),
        2 * real_rows
    );
    // real_fraction: 48 of every 64 rows from the real half of the table;
    // steps = 7 is less than one pass (its val check, at step 7, is epoch 1).
    let said = format!(
        "mix: real_fraction: every batch of 64 takes 48 of the {real_rows} real rows and 16 of the {real_rows} added rows"
    );
    assert!(err.contains(&said), "{err}");
    let out = sql_csv(
        d.path(),
        "SELECT value FROM mix_metrics WHERE metric = 'best_epoch'",
    );
    assert_eq!(out.trim(), "value\n1.0", "{out}");
    // Bad mixing settings are one-line config errors naming the key.
    let text = std::fs::read_to_string(d.path().join("p.toml")).unwrap();
    for (bad, want) in [
        ("real_fraction = 0.75", "real_fraction = 1.5"),
        ("real_fraction = 0.75", "steps = 0"),
    ]
    .iter()
    .map(|(from, to)| (text.replace(from, to), *to))
    .chain(std::iter::once((
        text.replace(
            "epochs = 2\nlr = 1e-3\n\n[stages.aug]",
            "epochs = 2\nlr = 1e-3\nreal_fraction = 0.5\n\n[stages.aug]",
        ),
        "add one to `inputs`",
    ))) {
        assert_ne!(bad, text, "{want}");
        std::fs::write(d.path().join("bad.toml"), &bad).unwrap();
        let (code, _, err) = augment(&["run", "bad.toml"], d.path());
        assert_eq!(code, 2, "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        let key = want.split(' ').next().unwrap();
        assert!(err.contains(key), "{want}: {err}");
    }
}

/// On the 2,000 shared CelebA faces the tiny paper_cnn beats predicting each
/// attribute's majority (from train) on the real test split.
#[test]
fn classifier_beats_the_majority_baseline_on_real_celeba() {
    let Some(root) = celeba_dir("classifier_beats_the_majority_baseline_on_real_celeba") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    PipelineFile::celeba("c", 0, &root)
        .ingest("image_size = 32")
        .stages(
            r#"
[stages.cnn]
kind = "train_classifier"
inputs = ["ingest"]
size = "tiny"
epochs = 8
batch_size = 32
lr = 1e-3

[stages.resnet]
kind = "train_classifier"
inputs = ["ingest"]
architecture = "resnet18"
size = "tiny"
epochs = 8
batch_size = 32
lr = 1e-3
"#,
        )
        .write(d.path());
    let (code, _, err) = augment(&["run", "p.toml"], d.path());
    assert_eq!(code, 0, "{err}");
    // Majority baseline: per attribute, the train majority value scored on test.
    let cols: Vec<String> = (0..40)
        .map(augment::data::schema::attribute_column)
        .collect();
    let terms: Vec<String> = cols
        .iter()
        .map(|c| {
            format!(
                "avg(CASE WHEN \"{c}\" = (SELECT avg(CAST(\"{c}\" AS DOUBLE)) > 0.5 FROM faces WHERE partition = 'train') THEN 1.0 ELSE 0.0 END)"
            )
        })
        .collect();
    let q = format!(
        "SELECT ({}) / 40 AS majority FROM faces WHERE partition = 'test'",
        terms.join(" + ")
    );
    let majority: f64 = sql_value(d.path(), &q);
    for stage in ["cnn", "resnet"] {
        let acc: f64 = sql_value(
            d.path(),
            &format!(
                "SELECT value FROM {stage}_metrics WHERE metric = 'accuracy' AND attribute IS NULL"
            ),
        );
        eprintln!("{stage}: test accuracy {acc:.4}, majority baseline {majority:.4}");
        assert!(
            acc > majority + 0.01,
            "{stage}: accuracy {acc} vs majority {majority}"
        );
    }
}

/// The size sweep (Fig. 10), `evaluate` and `augment report` on demo faces:
/// the chosen size is the one with the best val accuracy, its reported test
/// accuracy is that classifier's, copied rows count once in `metrics`, and
/// the report lists every classifier with its numbers.
#[test]
fn size_sweep_evaluate_and_report() {
    let d = tempfile::tempdir().unwrap();
    PipelineFile::demo("sweep", 2, 300, 32)
        .stages(
            r#"
[stages.ros]
kind = "balance"
inputs = ["ingest"]
strategy = "ml_ros"
sizes = [1.5, 2, 3]

[stages.synth]
kind = "synthesize"
inputs = ["ingest", "ros"]

[stages.cls]
kind = "train_classifier"
inputs = ["ingest", "synth"]
size = "tiny"
epochs = 2
lr = 1e-3

[stages.real]
kind = "train_classifier"
inputs = ["ingest"]
architecture = "resnet18"
size = "tiny"
epochs = 2
lr = 1e-3

[stages.evaluate]
kind = "evaluate"
inputs = ["ingest", "cls", "real"]
fid = false
"#,
        )
        .write(d.path());
    let (code, _, err) = augment(&["run", "p.toml"], d.path());
    assert_eq!(code, 0, "{err}");
    let vals = sql_csv(
        d.path(),
        "SELECT stage, value FROM metrics WHERE metric = 'val_accuracy' AND stage LIKE 'cls_x%' ORDER BY value DESC, stage",
    );
    let best_stage = vals
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    let want_size = match best_stage.as_str() {
        "cls_x1_5" => 1.5,
        "cls_x2" => 2.0,
        "cls_x3" => 3.0,
        s => panic!("unexpected stage {s}"),
    };
    let sweep = sql_csv(
        d.path(),
        "SELECT metric, value FROM evaluate_metrics WHERE stage = 'cls' ORDER BY metric",
    );
    let get = |m: &str| -> f64 {
        sweep
            .lines()
            .find(|l| l.starts_with(&format!("{m},")))
            .unwrap_or_else(|| panic!("{m} in {sweep}"))
            .split(',')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap()
    };
    // Ties in val accuracy go to the smaller size, which ORDER BY stage gives too.
    assert_eq!(get("size_sweep_size"), want_size, "{vals}\n{sweep}");
    let test_acc: f64 = sql_csv(
        d.path(),
        &format!(
            "SELECT value FROM {best_stage}_metrics WHERE metric = 'accuracy' AND attribute IS NULL"
        ),
    )
    .lines()
    .nth(1)
    .unwrap()
    .parse()
    .unwrap();
    assert_eq!(get("size_sweep_accuracy"), test_acc);
    // `evaluate` copied the classifiers' rows; the `metrics` union has them once.
    let out = sql_csv(
        d.path(),
        "SELECT count(*) AS n FROM metrics WHERE stage = 'real' AND metric = 'accuracy' AND attribute IS NULL",
    );
    assert_eq!(out.trim(), "n\n1", "{out}");
    let out = sql_csv(d.path(), "SELECT DISTINCT run FROM metrics");
    assert_eq!(out.trim(), "run\nsweep", "{out}");

    // The report: four classifiers, real numbers, charts and the html page.
    augment_ok(&["report", "run", "--out", "rep"], d.path());
    let csv = std::fs::read_to_string(d.path().join("rep/table.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5, "{csv}");
    assert!(
        csv.contains("sweep,real,resnet18,\"no augmentation\""),
        "{csv}"
    );
    assert!(csv.contains("\"ml_ros ×1.5\""), "{csv}");
    let html = std::fs::read_to_string(d.path().join("rep/index.html")).unwrap();
    for s in [
        "cls_x1_5",
        "cls_x2",
        "cls_x3",
        "real",
        "size_sweep_accuracy",
        "per_attribute_accuracy.png",
    ] {
        assert!(html.contains(s), "{s} missing from index.html");
    }
    assert!(!html.contains("NaN"), "{html}");
    for f in [
        "per_attribute_accuracy.png",
        "per_attribute_accuracy.svg",
        "report.json",
    ] {
        assert!(
            d.path().join("rep").join(f).metadata().unwrap().len() > 1000,
            "{f}"
        );
    }
    let (code, _, err) = augment(&["report", "nowhere"], d.path());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a run folder"), "{err}");
}

/// `evaluate`'s statistics on demo faces: every classifier metric gets a
/// 95% bootstrap interval around it; the augmented classifier gets its
/// paired difference to the real-data classifier of the same architecture
/// (equal to the difference of their own reported metrics), an interval
/// around it, a p-value, and Holm-adjusted p-values per attribute; the
/// report shows them and says, from the interval, whether it beat the
/// real-data classifier. The statistics themselves are checked against
/// scipy/statsmodels in `metrics::stats`.
#[test]
fn evaluate_reports_intervals_and_paired_differences() {
    let d = tempfile::tempdir().unwrap();
    PipelineFile::demo("stats", 4, 300, 32)
        .stages(
            r#"
[stages.flip]
kind = "balance"
inputs = ["ingest"]
strategy = "flip"

[stages.synth]
kind = "synthesize"
inputs = ["ingest", "flip"]

[stages.aug]
kind = "train_classifier"
inputs = ["ingest", "synth"]
size = "tiny"
epochs = 2
lr = 1e-3
repeats = 3

[stages.real]
kind = "train_classifier"
inputs = ["ingest"]
size = "tiny"
epochs = 2
lr = 1e-3
repeats = 3

[stages.evaluate]
kind = "evaluate"
inputs = ["ingest", "aug", "real"]
fid = false
bootstrap = 300
permutations = 2000
"#,
        )
        .write(d.path());
    let (code, _, err) = augment(&["run", "p.toml"], d.path());
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("`aug` − `real`: balanced_accuracy"), "{err}");
    let value = |q: &str| -> f64 {
        let out = sql_csv(d.path(), q);
        out.lines()
            .nth(1)
            .unwrap_or_else(|| panic!("{q}: {out}"))
            .parse()
            .unwrap()
    };
    let overall = |stage: &str, metric: &str| {
        value(&format!(
            "SELECT value FROM evaluate_metrics WHERE stage = '{stage}' AND metric = '{metric}' \
             AND attribute IS NULL AND repeat IS NULL"
        ))
    };
    // Three trainings each: their rows, their mean (repeat null) and std.
    for stage in ["aug", "real"] {
        let reps = value(&format!(
            "SELECT count(DISTINCT repeat) FROM {stage}_predictions"
        ));
        assert_eq!(reps, 3.0, "{stage} predictions keep every repeat");
        let r0 = value(&format!(
            "SELECT value FROM {stage}_metrics WHERE metric = 'accuracy' AND attribute IS NULL AND repeat = 0"
        ));
        let r1 = value(&format!(
            "SELECT value FROM {stage}_metrics WHERE metric = 'accuracy' AND attribute IS NULL AND repeat = 1"
        ));
        assert_ne!(
            r0, r1,
            "{stage}: the repeats differ (seeds derived per repeat)"
        );
        let r2 = value(&format!(
            "SELECT value FROM {stage}_metrics WHERE metric = 'accuracy' AND attribute IS NULL AND repeat = 2"
        ));
        let mean = overall(stage, "accuracy");
        let want = (r0 + r1 + r2) / 3.0;
        assert!(
            (mean - want).abs() < 1e-12,
            "{stage}: {mean} vs {r0}, {r1}, {r2}"
        );
        let var = ((r0 - want).powi(2) + (r1 - want).powi(2) + (r2 - want).powi(2)) / 2.0;
        let std = overall(stage, "accuracy_std");
        assert!((std - var.sqrt()).abs() < 1e-12, "{stage}: std {std}");
    }
    for stage in ["aug", "real"] {
        for m in ["accuracy", "balanced_accuracy", "f1"] {
            let (lo, v, hi) = (
                overall(stage, &format!("{m}_low95")),
                overall(stage, m),
                overall(stage, &format!("{m}_high95")),
            );
            assert!(
                0.0 <= lo && lo < hi && hi <= 1.0,
                "{stage} {m}: {lo} {v} {hi}"
            );
            // A mean of per-face hits lies inside its percentile interval;
            // balanced accuracy and F1 need not (on 30 test faces a rare
            // attribute is often missing from a resample), but stay near.
            if m == "accuracy" {
                assert!(lo <= v && v <= hi, "{stage} {m}: {lo} {v} {hi}");
            }
            assert!(
                (v - (lo + hi) / 2.0).abs() < 0.1,
                "{stage} {m}: {lo} {v} {hi}"
            );
        }
        let per_attr = value(&format!(
            "SELECT count(*) FROM evaluate_metrics WHERE stage = '{stage}' AND metric = 'balanced_accuracy_low95' AND attribute IS NOT NULL"
        ));
        assert_eq!(per_attr, 40.0);
    }
    for m in ["accuracy", "balanced_accuracy", "f1"] {
        let diff = overall("aug", &format!("{m}_diff"));
        let own = overall("aug", m) - overall("real", m);
        assert!((diff - own).abs() < 1e-12, "{m}: {diff} vs {own}");
        let (lo, hi) = (
            overall("aug", &format!("{m}_diff_low95")),
            overall("aug", &format!("{m}_diff_high95")),
        );
        assert!(
            lo < hi && (diff - (lo + hi) / 2.0).abs() < 0.1,
            "{m}: {lo} {diff} {hi}"
        );
        if m == "accuracy" {
            assert!(lo <= diff && diff <= hi, "{m}: {lo} {diff} {hi}");
        }
        let p = overall("aug", &format!("{m}_diff_p"));
        assert!(p > 0.0 && p <= 1.0, "{m}: p {p}");
    }
    // The rare quarter: the 10 attributes with the fewest positive train
    // faces; its balanced accuracy is the mean of theirs, once per
    // classifier, and the augmented one's difference has an interval and p.
    let details = sql_csv(
        d.path(),
        "SELECT details FROM evaluate_metrics WHERE stage = 'real' AND metric = 'balanced_accuracy_rare'",
    );
    let details: serde_json::Value =
        serde_json::from_str(&csv_field(details.lines().nth(1).expect("one rare row"))).unwrap();
    let rare: Vec<String> = details["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(rare.len(), 10, "{details}");
    // Counted here from the ingest table: no rare attribute has more
    // positive train faces than any other attribute.
    let train = sql_csv(
        d.path(),
        "SELECT * EXCLUDE (image, image_id, partition, identity) FROM ingest_faces \
         WHERE partition = 'train'",
    );
    let mut lines = train.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let mut positives = vec![0usize; header.len()];
    for l in lines {
        for (j, v) in l.split(',').enumerate() {
            positives[j] += usize::from(v == "true");
        }
    }
    let count = |a: &str| positives[header.iter().position(|h| *h == a).unwrap()];
    let rare_max = rare.iter().map(|a| count(a)).max().unwrap();
    let others_min = header
        .iter()
        .filter(|h| !rare.iter().any(|r| r == *h))
        .map(|h| count(h))
        .min()
        .unwrap();
    assert!(
        rare_max <= others_min,
        "{rare:?}: {rare_max} vs {others_min}"
    );
    for stage in ["aug", "real"] {
        let per_attr: Vec<f64> = rare
            .iter()
            .map(|a| {
                value(&format!(
                    "SELECT value FROM {stage}_metrics WHERE metric = 'balanced_accuracy' \
                     AND attribute = '{a}' AND repeat IS NULL"
                ))
            })
            .collect();
        let want = per_attr.iter().sum::<f64>() / 10.0;
        let got = overall(stage, "balanced_accuracy_rare");
        assert!((got - want).abs() < 1e-9, "{stage}: {got} vs {want}");
        assert_eq!(
            value(&format!(
                "SELECT count(*) FROM evaluate_metrics WHERE stage = '{stage}' AND metric = 'balanced_accuracy_rare'"
            )),
            1.0
        );
    }
    let diff = overall("aug", "balanced_accuracy_rare_diff");
    let own = overall("aug", "balanced_accuracy_rare") - overall("real", "balanced_accuracy_rare");
    assert!((diff - own).abs() < 1e-12, "rare: {diff} vs {own}");
    let (lo, hi) = (
        overall("aug", "balanced_accuracy_rare_diff_low95"),
        overall("aug", "balanced_accuracy_rare_diff_high95"),
    );
    assert!(lo < hi, "rare: {lo} {hi}");
    let p = overall("aug", "balanced_accuracy_rare_diff_p");
    assert!(p > 0.0 && p <= 1.0, "rare: p {p}");
    assert!(
        err.contains("`aug` − `real`: balanced accuracy on the 10 rarest attributes"),
        "{err}"
    );

    // Holm never lowers a p-value, and the real-data classifier has no difference.
    let below = value(
        "SELECT count(*) FROM evaluate_metrics h JOIN evaluate_metrics p \
         ON h.stage = p.stage AND h.attribute = p.attribute \
         WHERE h.metric = 'balanced_accuracy_diff_p_holm' AND p.metric = 'balanced_accuracy_diff_p' \
         AND h.value < p.value",
    );
    assert_eq!(below, 0.0);
    let holm_rows = value(
        "SELECT count(*) FROM evaluate_metrics WHERE metric = 'balanced_accuracy_diff_p_holm'",
    );
    assert_eq!(holm_rows, 40.0);
    assert_eq!(
        value(
            "SELECT count(*) FROM evaluate_metrics WHERE stage = 'real' AND metric LIKE '%diff%'"
        ),
        0.0
    );

    augment_ok(&["report", "run", "--out", "rep"], d.path());
    let csv = std::fs::read_to_string(d.path().join("rep/table.csv")).unwrap();
    let aug = csv.lines().find(|l| l.starts_with("stats,aug,")).unwrap();
    assert!(aug.contains(",real,"), "baseline named: {aug}");
    let html = std::fs::read_to_string(d.path().join("rep/index.html")).unwrap();
    assert!(
        ["better than", "worse than", "not distinguishable from"]
            .iter()
            .any(|v| html.contains(&format!(
                "<b>{v}</b> the real-data classifier <code>real</code>"
            ))),
        "no verdict in the report"
    );
    // A classifier's intervals and differences are not listed again among
    // the other metrics.
    assert!(!html.contains("<td>balanced_accuracy_low95</td>"), "{html}");
}

/// `evaluate`'s `judge` names one of its inputs that is a classifier trained
/// on real faces only; anything else is one line before any stage runs.
#[test]
fn evaluate_judge_must_be_a_real_data_classifier_input() {
    assert_one_line_config_errors(
        r#"[stages.real]
kind = "train_classifier"
inputs = ["ingest"]
size = "tiny"

[stages.flip]
kind = "balance"
inputs = ["ingest"]
strategy = "flip"

[stages.synth]
kind = "synthesize"
inputs = ["ingest", "flip"]

[stages.aug]
kind = "train_classifier"
inputs = ["ingest", "synth"]
size = "tiny"

[stages.eval]
kind = "evaluate"
inputs = ["ingest", "real", "aug"]
fid = false"#,
        &[
            (
                "judge = \"nope\"",
                "[stages.eval]: judge = \"nope\" is not among the stage's inputs; add it to `inputs`",
            ),
            (
                "judge = \"aug\"",
                "judge = \"aug\" must be a train_classifier stage trained on real faces only",
            ),
            (
                "judge = \"flip\"",
                "judge = \"flip\" is not among the stage's inputs",
            ),
        ],
    );
}

/// One CSV field as `augment sql --format csv` writes it (quoted when it
/// holds commas or quotes, inner quotes doubled).
fn csv_field(f: &str) -> String {
    match f.strip_prefix('"').and_then(|f| f.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => f.to_string(),
    }
}
