//! Rows of the `metrics` table (schema in [`super::schema::metrics`]), written
//! by `train_classifier` and `evaluate` and read back by `evaluate` and
//! `augment report`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;

use super::parquet::{TableWriter, read_columns};
use super::schema;

/// The names of the `metric` column that one stage writes and another reads
/// (`train_classifier` → `evaluate` → `augment report`).
pub mod metric {
    /// Liu et al. Sec. V-D: mean over test faces of the fraction of attributes right.
    pub const ACCURACY: &str = "accuracy";
    /// Mean over attributes of (TPR + TNR) / 2.
    pub const BALANCED_ACCURACY: &str = "balanced_accuracy";
    /// Mean over attributes of F1.
    pub const F1: &str = "f1";
    pub const VAL_ACCURACY: &str = "val_accuracy";
    pub const BEST_EPOCH: &str = "best_epoch";
    pub const FID: &str = "fid";
    pub const KID: &str = "kid";
    /// FID / KID of as many real faces (not the reference ones) against the
    /// same reference: what a perfect generator would score at that n.
    pub const FID_FLOOR: &str = "fid_floor";
    pub const KID_FLOOR: &str = "kid_floor";
    /// Liu et al. Fig. 10: the sweep's chosen size, its val and test accuracy.
    pub const SIZE_SWEEP_SIZE: &str = "size_sweep_size";
    pub const SIZE_SWEEP_VAL_ACCURACY: &str = "size_sweep_val_accuracy";
    pub const SIZE_SWEEP_ACCURACY: &str = "size_sweep_accuracy";
    /// The metrics with intervals and paired differences (`evaluate`).
    pub const WITH_INTERVALS: [&str; 3] = [ACCURACY, BALANCED_ACCURACY, F1];

    /// `<metric>_low95` / `_high95`: a 95% interval's ends.
    pub fn low95(m: &str) -> String {
        format!("{m}_low95")
    }
    pub fn high95(m: &str) -> String {
        format!("{m}_high95")
    }
    /// `<metric>_diff`: a classifier minus the real-data classifier.
    pub fn diff(m: &str) -> String {
        format!("{m}_diff")
    }
    /// `<metric>_diff_p`: its permutation p-value.
    pub fn diff_p(m: &str) -> String {
        format!("{m}_diff_p")
    }
}

/// The `details` of a `train_classifier` metrics row, written by it and
/// read back by `evaluate` and `augment report`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassifierDetails {
    /// The split the row was measured on (`test`).
    pub split: String,
    pub architecture: String,
    pub size: String,
    /// `<stage>.augmented` or `<stage>.faces (train)`.
    pub training_table: String,
    pub training_rows: u64,
    /// How many attributes the classifier predicts.
    pub attributes: u64,
    /// What its training adds: `best_epoch` (a network), `features`,
    /// `feature_dim` and `alphas` (a linear probe), `repeats` (the mean of
    /// several trainings).
    #[serde(flatten)]
    pub training: serde_json::Map<String, serde_json::Value>,
}

impl ClassifierDetails {
    /// A linear probe's features (`encoder`, `inception`); None for a network.
    pub fn features(&self) -> Option<&str> {
        self.training.get("features")?.as_str()
    }
}

/// The `details` of a paired-difference row (`<metric>_diff...`), written
/// by `evaluate` and read by `augment report`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DifferenceDetails {
    /// The real-data classifier it is compared with.
    pub baseline: String,
    /// `<classifier> − <baseline>`.
    pub difference: String,
    /// How the interval was made.
    pub interval: String,
    /// How the p-value was made.
    pub p_value: String,
    pub resamples: u64,
    pub permutations: u64,
    pub seed: u64,
}

/// One size of a size sweep (Liu et al. Fig. 10): its classifier's val and
/// test accuracy.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SweepPoint {
    pub stage: String,
    pub size: f64,
    pub val_accuracy: f64,
    pub accuracy: f64,
    pub n_test: usize,
}

/// The `details` of the `size_sweep_*` rows, written by `evaluate` and
/// read by `augment report`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SizeSweepDetails {
    pub sizes: Vec<SweepPoint>,
    /// How the size was chosen.
    pub criterion: String,
}

/// A typed `details` record as the JSON text of the column (keys sorted,
/// as every `details` value is written).
pub fn details_text<T: serde::Serialize>(d: &T) -> Result<String> {
    Ok(serde_json::to_value(d)?.to_string())
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    pub run: String,
    pub stage: String,
    pub metric: String,
    pub attribute: Option<String>,
    pub value: f64,
    pub n: i64,
    /// JSON object.
    pub details: String,
    /// Which training of a classifier with `repeats > 1`; None for the mean
    /// over repeats and for every other row.
    pub repeat: Option<i64>,
}

impl MetricRow {
    /// `details` as JSON; details that do not parse are an error naming the row.
    pub fn details_json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.details).map_err(|e| self.bad_details(e))
    }

    /// `details` as the typed record its writer used.
    pub fn details_as<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.details).map_err(|e| self.bad_details(e))
    }

    fn bad_details(&self, e: serde_json::Error) -> anyhow::Error {
        crate::data_error!(
            "metrics row `{}` of stage `{}`{}: details {:?} do not parse ({e}); rerun stage `{}`",
            self.metric,
            self.stage,
            self.attribute
                .as_deref()
                .map(|a| format!(" ({a})"))
                .unwrap_or_default(),
            self.details,
            self.stage
        )
    }
}

pub fn write(path: &Path, rows: &[MetricRow]) -> Result<usize> {
    let schema = schema::metrics();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.run.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.stage.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.metric.as_str()),
        )),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.attribute.as_deref()),
        )),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.value))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.n))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.details.as_str()),
        )),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.repeat))),
    ];
    let mut w = TableWriter::create(path, schema.clone(), &[], 1 << 16)?;
    w.write(&RecordBatch::try_new(schema, cols)?)?;
    w.finish()
}

pub fn read(path: &Path) -> Result<Vec<MetricRow>> {
    let mut out = Vec::new();
    let names = [
        "run",
        "stage",
        "metric",
        "attribute",
        "value",
        "n",
        "details",
        "repeat",
    ];
    // Tables written before `repeat` existed have every row a single training.
    let has_repeat = super::parquet::column_names(path)?
        .iter()
        .any(|c| c == "repeat");
    let wanted = if has_repeat { &names[..] } else { &names[..7] };
    for b in read_columns(path, wanted)? {
        let s = |i: usize| -> Result<&StringArray> {
            b.column(i)
                .as_any()
                .downcast_ref::<StringArray>()
                .with_context(|| {
                    format!("{}: column `{}` is not a string", path.display(), names[i])
                })
        };
        let (run, stage, metric, attr, details) = (s(0)?, s(1)?, s(2)?, s(3)?, s(6)?);
        let value = b
            .column(4)
            .as_any()
            .downcast_ref::<Float64Array>()
            .context("value")?;
        let n = b
            .column(5)
            .as_any()
            .downcast_ref::<Int64Array>()
            .context("n")?;
        let repeat = if has_repeat {
            Some(
                b.column(7)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .context("repeat")?,
            )
        } else {
            None
        };
        for r in 0..b.num_rows() {
            out.push(MetricRow {
                run: run.value(r).to_string(),
                stage: stage.value(r).to_string(),
                metric: metric.value(r).to_string(),
                attribute: (!attr.is_null(r)).then(|| attr.value(r).to_string()),
                value: value.value(r),
                n: n.value(r),
                details: details.value(r).to_string(),
                repeat: repeat.and_then(|c| (!c.is_null(r)).then(|| c.value(r))),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};

    fn row(repeat: Option<i64>) -> MetricRow {
        MetricRow {
            run: "r".into(),
            stage: "clf".into(),
            metric: "accuracy".into(),
            attribute: None,
            value: 0.5,
            n: 10,
            details: "{}".into(),
            repeat,
        }
    }

    #[test]
    fn round_trips_and_reads_tables_from_before_the_repeat_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.parquet");
        let rows = vec![row(None), row(Some(0)), row(Some(1))];
        write(&path, &rows).unwrap();
        assert_eq!(read(&path).unwrap(), rows);

        // The seven columns written before `repeat` existed.
        let full = schema::metrics();
        let old = Arc::new(Schema::new(
            full.fields()
                .iter()
                .take(7)
                .map(|f| f.as_ref().clone())
                .collect::<Vec<Field>>(),
        ));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec!["r"])),
            Arc::new(StringArray::from(vec!["clf"])),
            Arc::new(StringArray::from(vec!["accuracy"])),
            Arc::new(StringArray::from(vec![None::<&str>])),
            Arc::new(Float64Array::from(vec![0.5])),
            Arc::new(Int64Array::from(vec![10])),
            Arc::new(StringArray::from(vec!["{}"])),
        ];
        let old_path = dir.path().join("old.parquet");
        let mut w = TableWriter::create(&old_path, old.clone(), &[], 16).unwrap();
        w.write(&RecordBatch::try_new(old, cols).unwrap()).unwrap();
        w.finish().unwrap();
        assert_eq!(read(&old_path).unwrap(), vec![row(None)]);
    }
}
