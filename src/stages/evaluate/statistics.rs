//! Uncertainty of the classifier metrics (our addition, not in the papers'
//! tables): percentile-bootstrap intervals of each classifier's test
//! metrics, and paired differences (bootstrap interval, permutation p-value,
//! Holm adjustment) between a classifier trained on augmented rows and the
//! real-data classifier of the same architecture.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use arrow::array::{Array, Float64Array};
use rayon::prelude::*;

use super::{Config, Rows};
use crate::contract::tables;
use crate::data::metrics_table::{self, ClassifierDetails, DifferenceDetails, metric};
use crate::data::parquet::read_columns;
use crate::data::tensors::strings;
use crate::metrics::accuracy::Counts;
use crate::metrics::stats::{self, Interval};
use crate::stages::InputStage;

/// One classifier's test predictions, attribute-major, for each repeat.
struct Predictions {
    faces: Vec<String>,
    attributes: Vec<String>,
    /// `[attribute][face]`
    truth: Vec<Vec<bool>>,
    /// `[repeat][attribute][face]`
    pred: Vec<Vec<Vec<bool>>>,
}

impl Predictions {
    fn read(path: &Path) -> Result<Predictions> {
        // (attribute, face) → label; (repeat, attribute, face) → prediction.
        let mut labels_of: BTreeMap<(String, String), bool> = BTreeMap::new();
        let mut repeated: BTreeMap<(i64, String, String), bool> = BTreeMap::new();
        // Written before `repeat` existed: one training.
        let has_repeat = crate::data::parquet::column_names(path)?
            .iter()
            .any(|c| c == "repeat");
        let cols = ["image_id", "attribute", "label", "probability", "repeat"];
        for b in read_columns(path, &cols[..if has_repeat { 5 } else { 4 }])? {
            let ids = strings(&b, 0)?;
            let attrs = strings(&b, 1)?;
            let labels = b
                .column(2)
                .as_any()
                .downcast_ref::<arrow::array::BooleanArray>()
                .with_context(|| format!("{}: `label` is not boolean", path.display()))?;
            let probs = b
                .column(3)
                .as_any()
                .downcast_ref::<Float64Array>()
                .with_context(|| format!("{}: `probability` is not a float", path.display()))?;
            let reps = if has_repeat {
                Some(
                    b.column(4)
                        .as_any()
                        .downcast_ref::<arrow::array::Int64Array>()
                        .with_context(|| {
                            format!("{}: `repeat` is not an integer", path.display())
                        })?,
                )
            } else {
                None
            };
            for i in 0..b.num_rows() {
                let key = (attrs.value(i).to_string(), ids.value(i).to_string());
                repeated.insert(
                    (reps.map_or(0, |c| c.value(i)), key.0.clone(), key.1.clone()),
                    probs.value(i) > 0.5,
                );
                labels_of.insert(key, labels.value(i));
            }
        }
        fn distinct<T: Ord>(it: impl Iterator<Item = T>) -> Vec<T> {
            it.collect::<std::collections::BTreeSet<T>>()
                .into_iter()
                .collect()
        }
        let repeats = distinct(repeated.keys().map(|k| k.0));
        let attributes = distinct(labels_of.keys().map(|k| k.0.clone()));
        let faces = distinct(labels_of.keys().map(|k| k.1.clone()));
        let mut truth = vec![vec![false; faces.len()]; attributes.len()];
        let mut pred = vec![truth.clone(); repeats.len()];
        for (a, attr) in attributes.iter().enumerate() {
            for (f, face) in faces.iter().enumerate() {
                let t = labels_of
                    .get(&(attr.clone(), face.clone()))
                    .with_context(|| {
                        format!("{}: no prediction of `{attr}` for {face}", path.display())
                    })?;
                truth[a][f] = *t;
                for (k, r) in repeats.iter().enumerate() {
                    pred[k][a][f] = *repeated
                        .get(&(*r, attr.clone(), face.clone()))
                        .with_context(|| {
                            format!(
                                "{}: repeat {r} has no prediction of `{attr}` for {face}",
                                path.display()
                            )
                        })?;
                }
            }
        }
        Ok(Predictions {
            faces,
            attributes,
            truth,
            pred,
        })
    }
}

/// The three test metrics, as `train_classifier` computes them.
const STAT_METRICS: [&str; 3] = metric::WITH_INTERVALS;

fn metric_of(name: &str, c: &Counts) -> f64 {
    match name {
        metric::ACCURACY => c.accuracy(),
        metric::BALANCED_ACCURACY => c.balanced_accuracy(),
        _ => c.f1(),
    }
}

fn counts_on(pred: &[bool], truth: &[bool], idx: &[usize]) -> Counts {
    let mut c = Counts::default();
    for &i in idx {
        c.add(pred[i], truth[i]);
    }
    c
}

/// `metric` of attribute `a` (or the mean over attributes, `None`) on
/// faces `idx`, averaged over the classifier's repeats.
fn stat_on(p: &Predictions, metric: &str, a: Option<usize>, idx: &[usize]) -> f64 {
    match a {
        Some(a) => stat_mean(p, metric, &[a], idx),
        None => stat_mean(p, metric, &(0..p.attributes.len()).collect::<Vec<_>>(), idx),
    }
}

/// The mean of `metric` over attributes `attrs` on faces `idx`, averaged
/// over the classifier's repeats.
fn stat_mean(p: &Predictions, metric: &str, attrs: &[usize], idx: &[usize]) -> f64 {
    let one = |pred: &Vec<Vec<bool>>| {
        attrs
            .iter()
            .map(|&a| metric_of(metric, &counts_on(&pred[a], &p.truth[a], idx)))
            .sum::<f64>()
            / attrs.len() as f64
    };
    p.pred.iter().map(one).sum::<f64>() / p.pred.len() as f64
}

/// The difference `a − b` of `metric` with the two classifiers'
/// predictions swapped on the faces `mask` marks.
fn swapped_diff(
    (pa, pb): (&Predictions, &Predictions),
    metric: &str,
    attr: Option<usize>,
    mask: &[bool],
) -> f64 {
    // Repeat r of one classifier is paired with repeat r of the other.
    let reps = pa.pred.len();
    let one = |a: usize| {
        let mut total = 0.0;
        for r in 0..reps {
            let (mut ca, mut cb) = (Counts::default(), Counts::default());
            for (f, &swap) in mask.iter().enumerate() {
                let (x, y) = if swap {
                    (pb.pred[r][a][f], pa.pred[r][a][f])
                } else {
                    (pa.pred[r][a][f], pb.pred[r][a][f])
                };
                ca.add(x, pa.truth[a][f]);
                cb.add(y, pa.truth[a][f]);
            }
            total += metric_of(metric, &ca) - metric_of(metric, &cb);
        }
        total / reps as f64
    };
    match attr {
        Some(a) => one(a),
        None => {
            let k = pa.attributes.len();
            (0..k).map(one).sum::<f64>() / k as f64
        }
    }
}

/// [`swapped_diff`] of the mean over attributes `attrs`.
fn swapped_mean_diff(
    pair: (&Predictions, &Predictions),
    metric: &str,
    attrs: &[usize],
    mask: &[bool],
) -> f64 {
    attrs
        .iter()
        .map(|&a| swapped_diff(pair, metric, Some(a), mask))
        .sum::<f64>()
        / attrs.len() as f64
}

/// What a classifier was trained on, from its `metrics` details: the
/// architecture key (architecture, size, probe features) and whether the
/// rows were real faces only.
fn classifier_kind(s: &InputStage) -> Result<(String, bool)> {
    let rows = metrics_table::read(&s.table(tables::METRICS)?)?;
    let Some(first) = rows.first() else {
        return Err(crate::data_error!(
            "classifier `{}` wrote no metrics rows; rerun it",
            s.name
        ));
    };
    let d: ClassifierDetails = first.details_as()?;
    let key = format!("{} {} {:?}", d.architecture, d.size, d.features());
    let real = d.training_table.ends_with(".faces (train)");
    Ok((key, real))
}

/// One classifier input: its predictions and what it was trained on.
struct Classifier<'a> {
    stage: &'a InputStage,
    p: Predictions,
    /// Architecture, size and probe features ([`classifier_kind`]).
    key: String,
    /// Trained on real faces only.
    real: bool,
}

/// 95% percentile-bootstrap intervals of every classifier's test metrics
/// (overall and per attribute), and for every classifier trained on
/// augmented rows its paired difference to the real-data classifier of the
/// same architecture (the first among `baselines`): the difference, its paired-bootstrap interval, the
/// paired permutation p-value, and Holm-adjusted p-values across attributes.
pub(super) fn classifier_statistics(
    out: &mut Rows,
    classifiers: &[&InputStage],
    baselines: &[&InputStage],
    rare: &[String],
    c: &Config,
    seed: u64,
) -> Result<()> {
    if c.bootstrap == 0 || classifiers.is_empty() {
        return Ok(());
    }
    let mut all = Vec::new();
    for s in classifiers {
        let p = Predictions::read(&s.table(tables::PREDICTIONS)?)?;
        let (key, real) = classifier_kind(s)?;
        all.push(Classifier {
            stage: s,
            p,
            key,
            real,
        });
    }
    let rare_of = |p: &Predictions| -> Vec<usize> {
        rare.iter()
            .filter_map(|r| p.attributes.iter().position(|a| a == r))
            .collect()
    };
    for k in &all {
        intervals(out, k, c, seed);
        rare_interval(out, k, &rare_of(&k.p), c, seed);
    }
    for k in all.iter().filter(|k| !k.real) {
        let Some(base) = all.iter().find(|b| {
            b.real
                && baselines.iter().any(|s| s.name == b.stage.name)
                && b.key == k.key
                && b.p.faces == k.p.faces
                && b.p.attributes == k.p.attributes
                && b.p.pred.len() == k.p.pred.len()
        }) else {
            out.io.say(format!(
                "`{}`: no real-data classifier of the same architecture, test faces and \
                 number of repeats among the inputs; no paired difference",
                k.stage.name
            ));
            continue;
        };
        for m in STAT_METRICS {
            paired_difference(out, (k, base), m, c, seed);
        }
        rare_difference(out, (k, base), &rare_of(&k.p), c, seed);
    }
    Ok(())
}

/// `balanced_accuracy_rare`: the mean balanced accuracy over `attrs`, the
/// quarter of attributes with the fewest positive training faces, with its
/// 95% bootstrap interval.
fn rare_interval(out: &mut Rows, k: &Classifier, attrs: &[usize], c: &Config, seed: u64) {
    if attrs.is_empty() {
        return;
    }
    let n = k.p.faces.len();
    let m = metric::BALANCED_ACCURACY;
    let name = format!("{m}_rare");
    let details = rare_details(&k.p, attrs, c, seed);
    let iv = stats::bootstrap(n, c.bootstrap, seed, |idx| stat_mean(&k.p, m, attrs, idx));
    let full = stat_mean(&k.p, m, attrs, &(0..n).collect::<Vec<_>>());
    let stage = &k.stage.name;
    out.push(stage, &name, full, n, details.clone());
    out.push(stage, &metric::low95(&name), iv.low, n, details.clone());
    out.push(stage, &metric::high95(&name), iv.high, n, details);
}

fn rare_details(p: &Predictions, attrs: &[usize], c: &Config, seed: u64) -> serde_json::Value {
    serde_json::json!({
        "attributes": attrs.iter().map(|&a| p.attributes[a].clone()).collect::<Vec<_>>(),
        "group": "the quarter of attributes with the fewest positive faces in the ingest train split",
        "interval": "95% percentile bootstrap over test faces (paired for the difference)",
        "p_value": "two-sided paired permutation test",
        "resamples": c.bootstrap,
        "permutations": c.permutations,
        "seed": seed,
    })
}

/// `balanced_accuracy_rare_diff`: classifier `k` minus its baseline on the
/// rare quarter `attrs`, with its paired bootstrap interval and permutation
/// p-value: "does augmentation help the rare attributes?" as one test (no
/// correction across attributes needed).
fn rare_difference(
    out: &mut Rows,
    (k, base): (&Classifier, &Classifier),
    attrs: &[usize],
    c: &Config,
    seed: u64,
) {
    let (p, bp) = (&k.p, &base.p);
    if attrs.is_empty() {
        return;
    }
    let n = p.faces.len();
    let m = metric::BALANCED_ACCURACY;
    let name = format!("{m}_rare");
    let mut details = rare_details(p, attrs, c, seed);
    details["baseline"] = base.stage.name.clone().into();
    let iv = stats::paired_bootstrap(
        n,
        c.bootstrap,
        seed,
        |idx| stat_mean(p, m, attrs, idx),
        |idx| stat_mean(bp, m, attrs, idx),
    );
    let differ: Vec<bool> = (0..n)
        .map(|f| {
            (0..p.pred.len()).any(|r| attrs.iter().any(|&a| p.pred[r][a][f] != bp.pred[r][a][f]))
        })
        .collect();
    let pv = stats::paired_permutation(&differ, c.permutations, seed, |mask| {
        swapped_mean_diff((p, bp), m, attrs, mask)
    });
    let diff = metric::diff(&name);
    let stage = &k.stage.name;
    out.push(stage, &diff, iv.estimate, n, details.clone());
    out.push(stage, &metric::low95(&diff), iv.low, n, details.clone());
    out.push(stage, &metric::high95(&diff), iv.high, n, details.clone());
    out.push(stage, &metric::diff_p(&name), pv, n, details);
    out.io.say(format!(
        "`{stage}` − `{}`: balanced accuracy on the {} rarest attributes {:+.4} (95% CI {:+.4} to {:+.4}, p = {pv:.3})",
        base.stage.name,
        attrs.len(),
        iv.estimate,
        iv.low,
        iv.high
    ));
}

/// `<metric>_low95` / `_high95` of one classifier, overall and per attribute.
fn intervals(out: &mut Rows, k: &Classifier, c: &Config, seed: u64) {
    let p = &k.p;
    let n = p.faces.len();
    let method = serde_json::json!({
        "interval": "95% percentile bootstrap over test faces",
        "resamples": c.bootstrap,
        "seed": seed,
    });
    let rows: Vec<(Option<usize>, &str, Interval)> = std::iter::once(None)
        .chain((0..p.attributes.len()).map(Some))
        .flat_map(|a| STAT_METRICS.iter().map(move |m| (a, *m)))
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|(a, m)| {
            let iv = stats::bootstrap(n, c.bootstrap, seed, |idx| stat_on(p, m, a, idx));
            (a, m, iv)
        })
        .collect();
    for (a, m, iv) in rows {
        let attr = a.map(|a| p.attributes[a].clone());
        let name = &k.stage.name;
        out.push_attr(
            name,
            &format!("{m}_low95"),
            attr.clone(),
            iv.low,
            n,
            method.clone(),
        );
        out.push_attr(
            name,
            &format!("{m}_high95"),
            attr,
            iv.high,
            n,
            method.clone(),
        );
    }
}

/// `<metric>_diff` (with interval, p and Holm-adjusted p) of classifier
/// `k` against the real-data classifier `base`, overall and per attribute.
fn paired_difference(
    out: &mut Rows,
    (k, base): (&Classifier, &Classifier),
    m: &str,
    c: &Config,
    seed: u64,
) {
    let (p, bp) = (&k.p, &base.p);
    let n = p.faces.len();
    // The faces where swapping the two classifiers changes anything.
    let differ = |attr: Option<usize>| -> Vec<bool> {
        (0..n)
            .map(|f| {
                (0..p.pred.len()).any(|r| match attr {
                    Some(a) => p.pred[r][a][f] != bp.pred[r][a][f],
                    None => (0..p.attributes.len()).any(|a| p.pred[r][a][f] != bp.pred[r][a][f]),
                })
            })
            .collect()
    };
    let results: Vec<(Option<usize>, Interval, f64)> = std::iter::once(None)
        .chain((0..p.attributes.len()).map(Some))
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|a| {
            let iv = stats::paired_bootstrap(
                n,
                c.bootstrap,
                seed,
                |idx| stat_on(p, m, a, idx),
                |idx| stat_on(bp, m, a, idx),
            );
            let pv = stats::paired_permutation(&differ(a), c.permutations, seed, |mask| {
                swapped_diff((p, bp), m, a, mask)
            });
            (a, iv, pv)
        })
        .collect();
    let details = serde_json::to_value(DifferenceDetails {
        baseline: base.stage.name.clone(),
        difference: format!("{} − {}", k.stage.name, base.stage.name),
        interval: "95% paired percentile bootstrap over test faces".into(),
        p_value: "two-sided paired permutation test (the two classifiers' predictions swapped on random test faces)".into(),
        resamples: c.bootstrap as u64,
        permutations: c.permutations as u64,
        seed,
    })
    .expect("a struct of strings and numbers serializes");
    let per_attr: Vec<f64> = results
        .iter()
        .filter(|r| r.0.is_some())
        .map(|r| r.2)
        .collect();
    let holm = stats::holm(&per_attr);
    let name = format!("{m}_diff");
    let stage = &k.stage.name;
    for (i, (a, iv, pv)) in results.iter().enumerate() {
        let attr = a.map(|a| p.attributes[a].clone());
        let mut push = |metric: &str, v: f64| {
            out.push_attr(stage, metric, attr.clone(), v, n, details.clone());
        };
        push(&name, iv.estimate);
        push(&format!("{name}_low95"), iv.low);
        push(&format!("{name}_high95"), iv.high);
        push(&format!("{name}_p"), *pv);
        if a.is_some() {
            push(&format!("{name}_p_holm"), holm[i - 1]);
        }
    }
    if let Some((_, iv, pv)) = results.first() {
        out.io.say(format!(
            "`{}` − `{}`: {m} {:+.4} (95% CI {:+.4} to {:+.4}, p = {:.3})",
            stage, base.stage.name, iv.estimate, iv.low, iv.high, pv
        ));
    }
}
