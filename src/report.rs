//! `augment report RUN_DIR... --out DIR`: one comparison across runs, like
//! Table 2 of Liu et al. (method, data amount, accuracy, balanced accuracy,
//! FID), the per-attribute accuracy chart of Fig. 9 (PNG and SVG), the size
//! sweeps of Fig. 10, generator quality (reconstruction MS-SSIM/PSNR, label
//! agreement), and an `index.html` with those tables, the charts, each
//! balance stage's label-count chart and each synthesize stage's sample grid.
//! Also `table.csv` and `report.json` for scripts. Reads only manifests and
//! `metrics` tables.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use arrow::array::Int64Array;

use crate::charts::{self, Series};
use crate::config_error;
use crate::contract::tables;
use crate::data::metrics_table::{
    self, ClassifierDetails, DifferenceDetails, MetricRow, SizeSweepDetails, metric,
};
use crate::data::parquet::read_columns;
use crate::data::schema::{ATTRIBUTES, N_ATTRIBUTES};
use crate::pipeline::manifest::Manifest;
use crate::stages::{StageKind, balance, synthesize, train_classifier, train_generator};

/// One row of the comparison (a downstream classifier).
#[derive(Debug, Clone, Serialize)]
pub struct ComparisonRow {
    pub run: String,
    pub classifier: String,
    pub architecture: String,
    pub method: String,
    /// Training rows (the "data amount" of Table 2).
    pub training_rows: u64,
    pub accuracy: f64,
    pub balanced_accuracy: f64,
    pub f1: f64,
    pub n_test: i64,
    /// FID of the synthesized images the classifier trained on, if measured.
    pub fid: Option<f64>,
    /// Real faces' FID at the same n against the same reference (the floor).
    pub fid_floor: Option<f64>,
    /// 95% bootstrap intervals over test faces (`evaluate`), when measured.
    pub accuracy_ci: Option<[f64; 2]>,
    pub balanced_accuracy_ci: Option<[f64; 2]>,
    pub f1_ci: Option<[f64; 2]>,
    /// Paired differences to the real-data classifier of the same
    /// architecture (`evaluate`), one per metric.
    pub vs_real: Vec<Difference>,
    #[serde(skip)]
    per_attribute: Vec<f64>,
    #[serde(skip)]
    per_attribute_ci: crate::charts::Whiskers,
}

/// A classifier minus its real-data baseline on the same test faces.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub metric: String,
    pub baseline: String,
    pub difference: f64,
    pub low95: f64,
    pub high95: f64,
    /// Two-sided paired permutation p-value.
    pub p: f64,
}

impl Difference {
    /// Whether the 95% interval excludes zero, and which way.
    pub fn verdict(&self) -> &'static str {
        if self.low95 > 0.0 {
            "better than"
        } else if self.high95 < 0.0 {
            "worse than"
        } else {
            "not distinguishable from"
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub runs: Vec<String>,
    pub comparison: Vec<ComparisonRow>,
    /// Every other metric row (FID, KID, reconstruction, label agreement, sweeps).
    pub other: Vec<OtherRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OtherRow {
    pub run: String,
    pub stage: String,
    pub metric: String,
    pub value: f64,
    pub n: i64,
    pub details: serde_json::Value,
    /// `details` in words, for the HTML table.
    #[serde(skip)]
    pub shown: String,
}

struct RunData {
    dir: PathBuf,
    manifest: Manifest,
    rows: Vec<MetricRow>,
}

fn load_run(dir: &Path) -> Result<RunData> {
    let manifest = Manifest::load(dir)?.ok_or_else(|| {
        config_error!(
            "{}: not a run folder (no manifest.json); pass the `dir` of a pipeline's [run]",
            dir.display()
        )
    })?;
    let mut rows = Vec::new();
    let mut seen = BTreeSet::new();
    for stage in &manifest.order {
        let Some(rec) = manifest.stages.get(stage) else {
            continue;
        };
        for t in rec.tables.iter().filter(|t| t.name == tables::METRICS.name) {
            for r in metrics_table::read(&dir.join(stage).join(&t.file))? {
                // A classifier with `repeats > 1` is shown by its mean rows.
                if r.repeat.is_some() {
                    continue;
                }
                let key = format!(
                    "{}|{}|{:?}|{}|{}",
                    r.stage, r.metric, r.attribute, r.value, r.details
                );
                if seen.insert(key) {
                    rows.push(r);
                }
            }
        }
    }
    Ok(RunData {
        dir: dir.to_path_buf(),
        manifest,
        rows,
    })
}

/// A stage's config as the manifest recorded it, read back as the type
/// that wrote it.
fn stored<T: serde::de::DeserializeOwned>(m: &Manifest, stage: &str) -> Result<T> {
    serde_json::from_value(m.stages[stage].config.clone()).map_err(|e| {
        crate::data_error!(
            "{}: the recorded config of stage `{stage}` does not match this augment ({e}); rerun the stage",
            m.run_name
        )
    })
}

/// How a classifier's training table was made, in words.
fn method(m: &Manifest, classifier: &str) -> Result<(String, Option<String>)> {
    let Some(rec) = m.stages.get(classifier) else {
        return Ok(("?".into(), None));
    };
    let synth = rec.inputs.keys().find(|i| {
        m.stages
            .get(*i)
            .is_some_and(|r| r.kind == StageKind::Synthesize)
    });
    let Some(synth) = synth else {
        return Ok(("no augmentation".into(), None));
    };
    let srec = &m.stages[synth];
    let mut parts = Vec::new();
    for i in srec.inputs.keys() {
        let Some(r) = m.stages.get(i) else { continue };
        match r.kind {
            StageKind::Balance => {
                let b: balance::Config = stored(m, i)?;
                let strategy = b.strategy.name();
                parts.insert(
                    0,
                    match b.size {
                        Some(s) => format!("{strategy} ×{s}"),
                        None => strategy.to_string(),
                    },
                );
            }
            StageKind::TrainGenerator => {
                let g: train_generator::Config = stored(m, i)?;
                parts.push(format!("generator {} ({i})", g.model.name()));
            }
            _ => {}
        }
    }
    // The knobs that make two classifiers on the same table differ.
    let s: synthesize::Config = stored(m, synth)?;
    if let Some(a) = s.min_label_agreement {
        parts.push(format!("label agreement ≥ {a}"));
    }
    let c: train_classifier::Config = stored(m, classifier)?;
    if let Some(f) = c.real_fraction {
        parts.push(format!("{}% real rows per batch", (f * 100.0).round()));
    }
    if let Some(n) = c.steps {
        parts.push(format!("{n} steps"));
    }
    Ok((parts.join(", "), Some(synth.clone())))
}

fn build(run_dirs: &[PathBuf]) -> Result<(Report, Vec<RunData>)> {
    let runs: Vec<RunData> = run_dirs
        .iter()
        .map(|d| load_run(d))
        .collect::<Result<_>>()?;
    let mut comparison = Vec::new();
    let mut other = Vec::new();
    for run in &runs {
        let of = |m: &str| -> BTreeMap<&str, f64> {
            run.rows
                .iter()
                .filter(|r| r.metric == m && r.attribute.is_none() && r.value.is_finite())
                .map(|r| (r.stage.as_str(), r.value))
                .collect()
        };
        let fid_of = (of(metric::FID), of(metric::FID_FLOOR));
        let classifiers = run.manifest.order.iter().filter(|s| is_classifier(run, s));
        for c in classifiers {
            comparison.extend(comparison_row(run, c, &fid_of)?);
        }
        other.extend(other_rows(run)?);
    }
    let report = Report {
        runs: runs.iter().map(|r| r.manifest.run_name.clone()).collect(),
        comparison,
        other,
    };
    Ok((report, runs))
}

fn is_classifier(run: &RunData, stage: &str) -> bool {
    run.manifest
        .stages
        .get(stage)
        .is_some_and(|r| r.kind == StageKind::TrainClassifier)
}

/// Classifier `c`'s row of the comparison table (None when it recorded no accuracy).
fn comparison_row(
    run: &RunData,
    c: &String,
    (fid_of, floor_of): &(BTreeMap<&str, f64>, BTreeMap<&str, f64>),
) -> Result<Option<ComparisonRow>> {
    let rows: Vec<&MetricRow> = run.rows.iter().filter(|r| &r.stage == c).collect();
    let overall = |k: &str| rows.iter().find(|r| r.metric == k && r.attribute.is_none());
    let Some(acc) = overall(metric::ACCURACY) else {
        return Ok(None);
    };
    let details: ClassifierDetails = acc.details_as()?;
    let (per_attribute, per_attribute_ci) = per_attribute_accuracy(&rows);
    let (method, synth) = method(&run.manifest, c)?;
    let ci = |m: &str| -> Option<[f64; 2]> {
        let lo = overall(&metric::low95(m))?.value;
        let hi = overall(&metric::high95(m))?.value;
        Some([lo, hi])
    };
    let mut vs_real: Vec<Difference> = Vec::new();
    for m in [metric::BALANCED_ACCURACY, metric::ACCURACY, metric::F1] {
        let diff = metric::diff(m);
        let (Some(d), Some(low), Some(high), Some(p)) = (
            overall(&diff),
            overall(&metric::low95(&diff)),
            overall(&metric::high95(&diff)),
            overall(&metric::diff_p(m)),
        ) else {
            continue;
        };
        vs_real.push(Difference {
            metric: m.to_string(),
            baseline: d.details_as::<DifferenceDetails>()?.baseline,
            difference: d.value,
            low95: low.value,
            high95: high.value,
            p: p.value,
        });
    }
    Ok(Some(ComparisonRow {
        run: run.manifest.run_name.clone(),
        classifier: c.clone(),
        architecture: details.architecture,
        method,
        training_rows: details.training_rows,
        accuracy: acc.value,
        balanced_accuracy: overall(metric::BALANCED_ACCURACY)
            .map(|r| r.value)
            .unwrap_or(f64::NAN),
        f1: overall(metric::F1).map(|r| r.value).unwrap_or(f64::NAN),
        n_test: acc.n,
        fid: synth.as_ref().and_then(|s| fid_of.get(s.as_str()).copied()),
        fid_floor: synth.and_then(|s| floor_of.get(s.as_str()).copied()),
        accuracy_ci: ci(metric::ACCURACY),
        balanced_accuracy_ci: ci(metric::BALANCED_ACCURACY),
        f1_ci: ci(metric::F1),
        vs_real,
        per_attribute,
        per_attribute_ci,
    }))
}

/// A classifier's per-attribute accuracy and its 95% interval, in CelebA order.
fn per_attribute_accuracy(rows: &[&MetricRow]) -> (Vec<f64>, crate::charts::Whiskers) {
    let mut per_attribute = vec![f64::NAN; N_ATTRIBUTES];
    let mut lows = vec![f64::NAN; N_ATTRIBUTES];
    let mut highs = vec![f64::NAN; N_ATTRIBUTES];
    for r in rows {
        let target = if r.metric == metric::ACCURACY {
            &mut per_attribute
        } else if r.metric == metric::low95(metric::ACCURACY) {
            &mut lows
        } else if r.metric == metric::high95(metric::ACCURACY) {
            &mut highs
        } else {
            continue;
        };
        if let Some(a) = &r.attribute
            && let Some(i) = ATTRIBUTES.iter().position(|n| n.eq_ignore_ascii_case(a))
        {
            target[i] = r.value;
        }
    }
    let ci = lows
        .iter()
        .zip(&highs)
        .map(|(&lo, &hi)| (lo.is_finite() && hi.is_finite()).then_some([lo, hi]))
        .collect();
    (per_attribute, ci)
}

/// The run's overall metrics that are not in the comparison table.
fn other_rows(run: &RunData) -> Result<Vec<OtherRow>> {
    let classifier_metrics = [
        metric::ACCURACY,
        metric::BALANCED_ACCURACY,
        metric::F1,
        metric::VAL_ACCURACY,
        metric::BEST_EPOCH,
    ];
    let mut other = Vec::new();
    for r in &run.rows {
        // A classifier's metrics, their intervals and differences are
        // in the comparison table.
        let in_comparison = classifier_metrics
            .iter()
            .any(|m| r.metric == *m || r.metric.starts_with(&format!("{m}_")));
        if r.attribute.is_none() && !(is_classifier(run, &r.stage) && in_comparison) {
            other.push(OtherRow {
                run: run.manifest.run_name.clone(),
                stage: r.stage.clone(),
                metric: r.metric.clone(),
                value: r.value,
                n: r.n,
                details: r.details_json()?,
                shown: shown_details(r)?,
            });
        }
    }
    Ok(other)
}

/// A row's `details` in words: `key: value; ...`, and for a size sweep
/// each size's val and test accuracy.
fn shown_details(r: &MetricRow) -> Result<String> {
    let sweep = [
        metric::SIZE_SWEEP_SIZE,
        metric::SIZE_SWEEP_VAL_ACCURACY,
        metric::SIZE_SWEEP_ACCURACY,
    ];
    if sweep.contains(&r.metric.as_str()) {
        let d: SizeSweepDetails = r.details_as()?;
        let sizes: Vec<String> = d
            .sizes
            .iter()
            .map(|s| {
                format!(
                    "×{}: val {}, test {}",
                    s.size,
                    num(s.val_accuracy, 4),
                    num(s.accuracy, 4)
                )
            })
            .collect();
        return Ok(format!("criterion: {}; {}", d.criterion, sizes.join("; ")));
    }
    Ok(match r.details_json()? {
        serde_json::Value::Object(m) => m
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}: {}",
                    v.as_str()
                        .map(String::from)
                        .unwrap_or_else(|| v.to_string())
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        v => v.to_string(),
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn num(v: f64, digits: usize) -> String {
    if v.is_finite() {
        format!("{v:.digits$}")
    } else {
        "–".into()
    }
}

/// Writes the report into `out`; returns the path of `index.html`.
pub fn write(run_dirs: &[PathBuf], out: &Path) -> Result<(PathBuf, Report)> {
    if run_dirs.is_empty() {
        return Err(config_error!(
            "name at least one run folder, e.g. augment report runs/quickstart"
        ));
    }
    let (report, runs) = build(run_dirs)?;
    if report.comparison.is_empty() && report.other.is_empty() {
        return Err(config_error!(
            "no metrics in {}: run `train_classifier` or `evaluate` stages first",
            run_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    std::fs::create_dir_all(out.join("img"))
        .with_context(|| format!("creating {}", out.display()))?;

    let charts_html = per_attribute_chart(&report, out)?;
    let gallery = gallery(&runs, out)?;
    let (table, csv) = comparison_table(&report);
    let others = other_metrics_table(&report);
    let html = format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>augment report: {title}</title>
<style>
body {{ font-family: system-ui, -apple-system, "DejaVu Sans", sans-serif; margin: 2rem auto; max-width: 1500px; padding: 0 1rem; color: #222; }}
h1 {{ font-size: 1.6rem; }} h2 {{ margin-top: 2.2rem; font-size: 1.25rem; border-bottom: 1px solid #ddd; padding-bottom: .3rem; }}
table {{ border-collapse: collapse; margin: .5rem 0; font-size: .92rem; }}
th, td {{ border: 1px solid #ccc; padding: .3rem .6rem; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }} td.n, th.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
tr.best td {{ background: #eef7ee; font-weight: 600; }}
td.details {{ font-size: .8rem; color: #555; max-width: 40rem; }}
img.wide {{ max-width: 100%; border: 1px solid #ddd; }}
.gallery {{ display: flex; flex-wrap: wrap; gap: 1rem; }}
figure {{ margin: 0; }} figure img {{ max-width: 700px; max-height: 420px; border: 1px solid #ddd; image-rendering: pixelated; }}
figcaption {{ font-size: .85rem; color: #555; }}
.note {{ color: #555; font-size: .9rem; }}
</style>
</head>
<body>
<h1>augment report: {title}</h1>
<p class="note">Accuracy is the paper's (Liu et al. Sec. V-D: mean over real test faces of the fraction of attributes recognised); balanced accuracy and F1 are means over attributes. Data amount = training rows. FID: the classifier's synthesized training images against the real test images (FID Inception, pytorch-fid conventions); small N biases FID upwards, so compare at equal N; in brackets, the floor: as many real train/val faces against the same reference (what a perfect generator scores at that N). Best accuracy highlighted. Brackets: 95% percentile-bootstrap intervals over the test faces (<code>evaluate</code>); last column: the classifier minus the real-data classifier of the same architecture on the same faces, with its paired-bootstrap interval and paired permutation p-value. One test split gives one draw of each classifier; differences inside the interval are noise.</p>
<h2>Comparison (Table 2)</h2>
{table}
{charts_html}
{others}
<h2>Label counts and samples</h2>
{gallery}
</body>
</html>
"#,
        title = esc(&report.runs.join(", ")),
    );
    let index = out.join("index.html");
    std::fs::write(&index, html)?;
    std::fs::write(out.join("table.csv"), csv)?;
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    Ok((index, report))
}

/// Fig. 9: per-attribute accuracy, one series per classifier (PNG and SVG
/// in `out`); returns its HTML section.
fn per_attribute_chart(report: &Report, out: &Path) -> Result<String> {
    let series: Vec<(String, Vec<f64>)> = report
        .comparison
        .iter()
        .map(|r| {
            let name = if report.runs.len() > 1 {
                format!("{}/{}", r.run, r.classifier)
            } else {
                r.classifier.clone()
            };
            (
                name,
                r.per_attribute
                    .iter()
                    .map(|v| if v.is_finite() { *v } else { 0.0 })
                    .collect(),
            )
        })
        .collect();
    let whiskers: Vec<charts::Whiskers> = report
        .comparison
        .iter()
        .map(|r| r.per_attribute_ci.clone())
        .collect();
    let has_whiskers = whiskers.iter().flatten().any(Option::is_some);
    let mut charts_html = String::new();
    if !series.is_empty() {
        for ext in ["png", "svg"] {
            charts::per_attribute(
                &out.join(format!("per_attribute_accuracy.{ext}")),
                if has_whiskers {
                    "Per-attribute test accuracy (Liu et al. Fig. 9); whiskers: 95% bootstrap intervals"
                } else {
                    "Per-attribute test accuracy (Liu et al. Fig. 9)"
                },
                "accuracy",
                &series,
                &whiskers,
            )?;
        }
        charts_html.push_str("<h2>Per-attribute accuracy (Fig. 9)</h2>\n<p><a href=\"per_attribute_accuracy.svg\">SVG</a></p>\n<img class=\"wide\" src=\"per_attribute_accuracy.png\" alt=\"per-attribute accuracy\">\n");
    }
    Ok(charts_html)
}

/// Label-count charts and sample grids of each run, copied into `out/img`;
/// returns the HTML gallery.
fn gallery(runs: &[RunData], out: &Path) -> Result<String> {
    let mut gallery = String::new();
    for run in runs {
        let mut items = String::new();
        for stage in &run.manifest.order {
            let Some(rec) = run.manifest.stages.get(stage) else {
                continue;
            };
            let pick: &[(&str, &str)] = match rec.kind {
                StageKind::Balance => &[("label_counts.png", "label counts")],
                StageKind::Synthesize => &[("grid.png", "sample grid")],
                _ => &[],
            };
            for (file, what) in pick {
                let src = run.dir.join(stage).join(file);
                if !src.is_file() {
                    continue;
                }
                let name = format!("{}_{}_{}", run.manifest.run_name, stage, file);
                std::fs::copy(&src, out.join("img").join(&name))
                    .with_context(|| format!("copying {}", src.display()))?;
                let _ = writeln!(
                    items,
                    "<figure><img src=\"img/{}\" alt=\"{}\"><figcaption>{} — {}</figcaption></figure>",
                    esc(&name),
                    esc(what),
                    esc(stage),
                    esc(what)
                );
            }
        }
        if !items.is_empty() {
            let _ = write!(
                gallery,
                "<h3>{}</h3>\n<div class=\"gallery\">\n{items}</div>\n",
                esc(&run.manifest.run_name)
            );
        }
    }
    Ok(gallery)
}

/// Table 2: one row per classifier (the best accuracy marked), as HTML and CSV.
fn comparison_table(report: &Report) -> (String, String) {
    let mut table = String::from(
        "<table>\n<thead><tr><th>run</th><th>classifier</th><th>architecture</th><th>method</th><th class=\"n\">data amount</th><th class=\"n\">accuracy</th><th class=\"n\">balanced accuracy</th><th class=\"n\">F1</th><th class=\"n\">FID</th><th class=\"n\">test N</th><th class=\"n\">balanced accuracy − real-data classifier [95% CI], p</th></tr></thead>\n<tbody>\n",
    );
    let best = report
        .comparison
        .iter()
        .map(|r| r.accuracy)
        .fold(f64::NEG_INFINITY, f64::max);
    let mut csv = String::from(
        "run,classifier,architecture,method,training_rows,accuracy,accuracy_low95,accuracy_high95,balanced_accuracy,balanced_accuracy_low95,balanced_accuracy_high95,f1,f1_low95,f1_high95,fid,fid_floor,n_test,baseline,balanced_accuracy_diff,balanced_accuracy_diff_low95,balanced_accuracy_diff_high95,balanced_accuracy_diff_p\n",
    );
    for r in &report.comparison {
        let mark = if r.accuracy == best {
            " class=\"best\""
        } else {
            ""
        };
        let with_ci = |v: f64, ci: Option<[f64; 2]>| match ci {
            Some([lo, hi]) => format!("{} [{}, {}]", num(v, 4), num(lo, 3), num(hi, 3)),
            None => num(v, 4),
        };
        let bal_diff = r
            .vs_real
            .iter()
            .find(|d| d.metric == metric::BALANCED_ACCURACY);
        let diff_cell = bal_diff
            .map(|d| {
                format!(
                    "{:+.4} [{:+.3}, {:+.3}], p = {:.3}",
                    d.difference, d.low95, d.high95, d.p
                )
            })
            .unwrap_or_else(|| "–".into());
        let _ = writeln!(
            table,
            "<tr{mark}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&r.run),
            esc(&r.classifier),
            esc(&r.architecture),
            esc(&r.method),
            r.training_rows,
            with_ci(r.accuracy, r.accuracy_ci),
            with_ci(r.balanced_accuracy, r.balanced_accuracy_ci),
            with_ci(r.f1, r.f1_ci),
            match (r.fid, r.fid_floor) {
                (Some(v), Some(fl)) => format!("{} (floor {})", num(v, 2), num(fl, 2)),
                (Some(v), None) => num(v, 2),
                _ => "–".into(),
            },
            r.n_test,
            esc(&diff_cell)
        );
        let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        let lo = |ci: Option<[f64; 2]>| opt(ci.map(|c| c[0]));
        let hi = |ci: Option<[f64; 2]>| opt(ci.map(|c| c[1]));
        let _ = writeln!(
            csv,
            "{},{},{},\"{}\",{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            r.run,
            r.classifier,
            r.architecture,
            r.method.replace('"', "\"\""),
            r.training_rows,
            r.accuracy,
            lo(r.accuracy_ci),
            hi(r.accuracy_ci),
            r.balanced_accuracy,
            lo(r.balanced_accuracy_ci),
            hi(r.balanced_accuracy_ci),
            r.f1,
            lo(r.f1_ci),
            hi(r.f1_ci),
            opt(r.fid),
            opt(r.fid_floor),
            r.n_test,
            bal_diff.map(|d| d.baseline.clone()).unwrap_or_default(),
            opt(bal_diff.map(|d| d.difference)),
            opt(bal_diff.map(|d| d.low95)),
            opt(bal_diff.map(|d| d.high95)),
            opt(bal_diff.map(|d| d.p)),
        );
    }
    table.push_str("</tbody>\n</table>\n");
    table.push_str(&verdicts(report));
    (table, csv)
}

/// One sentence per classifier compared with its real-data baseline,
/// computed from the interval: better, worse, or not distinguishable at 95%.
fn verdicts(report: &Report) -> String {
    let mut out = String::new();
    for r in &report.comparison {
        let Some(d) = r
            .vs_real
            .iter()
            .find(|d| d.metric == metric::BALANCED_ACCURACY)
        else {
            continue;
        };
        let _ = writeln!(
            out,
            "<li>{} ({}, {}): balanced accuracy {:+.4} (95% CI {:+.4} to {:+.4}, paired permutation p = {:.3}): <b>{}</b> the real-data classifier <code>{}</code> at 95%.</li>",
            esc(&r.method),
            esc(&r.classifier),
            esc(&r.run),
            d.difference,
            d.low95,
            d.high95,
            d.p,
            d.verdict(),
            esc(&d.baseline)
        );
    }
    if out.is_empty() {
        out
    } else {
        format!("<ul class=\"note\">\n{out}</ul>\n")
    }
}

/// The other metrics (synthesized images, generators, size sweeps) as HTML.
fn other_metrics_table(report: &Report) -> String {
    let mut others = String::new();
    if !report.other.is_empty() {
        others.push_str("<h2>Synthesized images, generators and size sweeps</h2>\n<table>\n<thead><tr><th>run</th><th>stage</th><th>metric</th><th class=\"n\">value</th><th class=\"n\">N</th><th>details</th></tr></thead>\n<tbody>\n");
        for r in &report.other {
            let d = &r.shown;
            let _ = writeln!(
                others,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"details\">{}</td></tr>",
                esc(&r.run),
                esc(&r.stage),
                esc(&r.metric),
                num(r.value, 4),
                r.n,
                esc(d)
            );
        }
        others.push_str("</tbody>\n</table>\n");
    }
    others
}

/// `augment chart`: the originals and every balance stage of a run on one chart.
pub fn chart_run(run_dir: &std::path::Path, out: &std::path::Path) -> Result<usize> {
    charts::check_output(out).map_err(|e| crate::config_error!("--out {e}"))?;
    let m = Manifest::load(run_dir)?.ok_or_else(|| {
        crate::config_error!("{}: not a run folder (no manifest.json)", run_dir.display())
    })?;
    let mut series = Vec::new();
    for name in m.ordered_names() {
        let rec = &m.stages[&name];
        if rec.kind != StageKind::Balance {
            continue;
        }
        let Some(t) = rec
            .tables
            .iter()
            .find(|t| t.name == tables::LABEL_STATS.name)
        else {
            continue;
        };
        let batches = read_columns(
            &run_dir.join(&name).join(&t.file),
            &["positives_before", "positives_after"],
        )?;
        let col = |k: usize| -> Vec<u64> {
            batches
                .iter()
                .flat_map(|b| {
                    let a = b
                        .column(k)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .map(|a| a.values().to_vec())
                        .unwrap_or_default();
                    a.into_iter().map(|v| v as u64)
                })
                .collect()
        };
        if series.is_empty() {
            series.push(Series {
                name: "original".into(),
                counts: col(0),
            });
        }
        let strategy = rec
            .summary
            .get("strategy")
            .and_then(|s| s.as_str())
            .unwrap_or("");
        series.push(Series {
            name: format!("{name} ({strategy})"),
            counts: col(1),
        });
    }
    if series.is_empty() {
        return Err(crate::config_error!(
            "{}: the run has no finished balance stage",
            run_dir.display()
        ));
    }
    // The folder was checked above: what fails now is the write itself
    // (permissions, a full disk), which the user fixes too.
    charts::label_counts(
        out,
        &format!("Positives per attribute: {}", m.run_name),
        &series,
    )
    .map_err(|e| crate::config_error!("--out {}: cannot write it: {e:#}", out.display()))?;
    Ok(series.len() - 1)
}
