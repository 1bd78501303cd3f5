//! The classifiers' own metrics, copied, and the size sweep over copies of
//! one classifier (Liu et al. Fig. 10: the size with the best val accuracy
//! and its test accuracy).

use super::*;
use crate::data::metrics_table::{SizeSweepDetails, SweepPoint};

/// The classifiers' own metrics rows, and per size sweep the size with the
/// best val accuracy and its test accuracy (Liu et al. Fig. 10).
pub(super) fn classifier_metrics(
    out: &mut Rows,
    classifiers: &[&InputStage],
    summary: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    let io = out.io;
    let mut classifier_rows: BTreeMap<&str, Vec<MetricRow>> = BTreeMap::new();
    for s in classifiers {
        let rows = metrics_table::read(&s.table(tables::METRICS)?)?;
        out.rows.extend(rows.iter().map(|r| MetricRow {
            run: io.run_name.clone(),
            ..r.clone()
        }));
        classifier_rows.insert(&s.name, rows);
    }
    for (group, members) in sweep_groups(classifiers) {
        let sweep = size_sweep(io, &group, &members, &classifier_rows)?;
        summary.insert(format!("size_sweep/{group}"), serde_json::to_value(&sweep)?);
        let best = &sweep.chosen;
        let details = serde_json::to_value(SizeSweepDetails {
            sizes: sweep.sizes.clone(),
            criterion: "best val accuracy (Liu et al. Fig. 10)".into(),
        })?;
        let n = best.n_test;
        out.push(
            &group,
            metric::SIZE_SWEEP_SIZE,
            best.size,
            n,
            details.clone(),
        );
        out.push(
            &group,
            metric::SIZE_SWEEP_VAL_ACCURACY,
            best.val_accuracy,
            n,
            details.clone(),
        );
        out.push(
            &group,
            metric::SIZE_SWEEP_ACCURACY,
            best.accuracy,
            n,
            details,
        );
        io.say(format!(
            "size sweep `{group}`: size {} has the best val accuracy ({:.4}); its test accuracy {:.4}",
            best.size, best.val_accuracy, best.accuracy
        ));
    }
    Ok(())
}

/// Size-sweep copies grouped by the stage they were copied from (the
/// pipeline's expansion, [`InputStage::sweep_of`]); a group needs two sizes.
pub(super) fn sweep_groups<'a>(
    classifiers: &[&'a InputStage],
) -> BTreeMap<String, Vec<&'a InputStage>> {
    let mut g: BTreeMap<String, Vec<&InputStage>> = BTreeMap::new();
    for s in classifiers {
        if let Some(base) = &s.sweep_of {
            g.entry(base.clone()).or_default().push(s);
        }
    }
    g.retain(|_, v| v.len() >= 2);
    g
}

/// A sweep's sizes and the one chosen by val accuracy.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Sweep {
    pub(super) sizes: Vec<SweepPoint>,
    pub(super) chosen: SweepPoint,
}

pub(super) fn size_sweep(
    io: &StageIo,
    group: &str,
    members: &[&InputStage],
    metrics: &BTreeMap<&str, Vec<MetricRow>>,
) -> Result<Sweep> {
    let mut sizes = Vec::new();
    for s in members {
        let rows = &metrics[s.name.as_str()];
        let get = |k: &str| {
            rows.iter()
                .find(|r| r.metric == k && r.attribute.is_none() && r.repeat.is_none())
                .map(|r| (r.value, r.n))
        };
        let (val_accuracy, _) =
            get(metric::VAL_ACCURACY).context("classifier metrics lack val_accuracy")?;
        let (accuracy, n_test) =
            get(metric::ACCURACY).context("classifier metrics lack accuracy")?;
        let size = s.lineage.balance_size.ok_or_else(|| {
            data_error!(
                "stage `{}`: `{}` is a size-sweep copy of `{group}` but no balance stage with a `size` is upstream of it",
                io.name,
                s.name
            )
        })?;
        sizes.push(SweepPoint {
            stage: s.name.clone(),
            size,
            val_accuracy,
            accuracy,
            n_test: usize::try_from(n_test).unwrap_or(0),
        });
    }
    // Ties go to the smaller size (less synthesis for the same result).
    let chosen = sizes
        .iter()
        .max_by(|a, b| {
            a.val_accuracy
                .total_cmp(&b.val_accuracy)
                .then(b.size.total_cmp(&a.size))
        })
        .cloned()
        .context("empty sweep")?;
    Ok(Sweep { sizes, chosen })
}
