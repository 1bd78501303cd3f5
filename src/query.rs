//! `augment sql`: a read-only DataFusion session over a run's stage outputs.
//!
//! Every table recorded in the run manifest is registered under its own name
//! (`faces`, `plan`, ...) when that name is unique in the run, and always as
//! `<stage>_<table>` (e.g. `balance_plan`) so several stages of one kind can
//! be compared. DDL, DML, `COPY` and `SET` statements are refused.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{Array, ArrayRef, AsArray, StringArray, StructArray};
use arrow::datatypes::{DataType, Field, Fields, Schema};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::execution::options::ParquetReadOptions;
use datafusion::prelude::{SQLOptions, SessionContext};

use crate::config_error;
use crate::pipeline::manifest::{self, Manifest};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// The registered table names of a run: (SQL name, stage, table, rows).
pub fn table_names(
    m: &Manifest,
    run_dir: &Path,
) -> Vec<(String, String, String, std::path::PathBuf, usize)> {
    let tables = m.tables(run_dir);
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for (_, t, _, _) in &tables {
        *uses.entry(t.as_str()).or_default() += 1;
    }
    let mut out = Vec::new();
    for (stage, table, path, rows) in &tables {
        if uses[table.as_str()] == 1 {
            out.push((
                table.clone(),
                stage.clone(),
                table.clone(),
                path.clone(),
                *rows,
            ));
        }
        out.push((
            format!("{stage}_{table}"),
            stage.clone(),
            table.clone(),
            path.clone(),
            *rows,
        ));
    }
    out
}

/// Runs `query` read-only over the run in `run_dir`.
pub fn sql(run_dir: &Path, query: &str) -> Result<Vec<RecordBatch>> {
    let m = Manifest::load(run_dir)?.ok_or_else(|| {
        config_error!(
            "{}: not a run folder (no {}); run a pipeline first",
            run_dir.display(),
            manifest::FILE
        )
    })?;
    let mut tables: Vec<(String, Vec<std::path::PathBuf>)> = table_names(&m, run_dir)
        .into_iter()
        .map(|(name, _, _, path, _)| (name, vec![path]))
        .collect();
    // Tables that carry their stage in a column are also the union over stages.
    for union in UNION_TABLES {
        let paths: Vec<std::path::PathBuf> = m
            .tables(run_dir)
            .into_iter()
            .filter(|(_, t, _, _)| t == union)
            .map(|(_, _, p, _)| p)
            .collect();
        if paths.len() > 1 {
            tables.push((union.to_string(), paths));
        }
    }
    run_read_only(&tables, query)
}

/// Tables with a `stage` column: registered under their bare name as the
/// distinct union over all stages (e.g. `metrics` of every classifier and
/// evaluate stage; rows an `evaluate` stage copied appear once).
pub const UNION_TABLES: [&str; 1] = ["metrics"];

/// Runs `query` read-only over one Parquet file registered as table `t`.
pub fn sql_on_file(path: &Path, query: &str) -> Result<Vec<RecordBatch>> {
    if !path.is_file() {
        return Err(config_error!("{}: no such Parquet file", path.display()));
    }
    run_read_only(&[("t".to_string(), vec![path.to_path_buf()])], query)
}

fn run_read_only(
    tables: &[(String, Vec<std::path::PathBuf>)],
    query: &str,
) -> Result<Vec<RecordBatch>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .build()
        .context("starting the query runtime")?;
    rt.block_on(async {
        // Sorts, joins and aggregates fail with a message past this memory
        // instead of growing until the OOM killer ends the process.
        let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
            .with_memory_limit(crate::limits::SQL_MEMORY_BYTES, 1.0)
            .build_arc()?;
        let ctx = SessionContext::new_with_config_rt(
            datafusion::prelude::SessionConfig::new(),
            runtime,
        );
        for (name, paths) in tables {
            let ps: Vec<String> = paths
                .iter()
                .map(|p| p.to_str().map(String::from).context("non-UTF-8 path"))
                .collect::<Result<_>>()?;
            if let [p] = ps.as_slice() {
                ctx.register_parquet(name, p, ParquetReadOptions::default())
                    .await
                    .with_context(|| format!("registering {p}"))?;
            } else {
                // Distinct union: `evaluate` copies the rows of the
                // classifier stages it collects, which must not count twice.
                let df = ctx
                    .read_parquet(ps, ParquetReadOptions::default())
                    .await
                    .with_context(|| format!("registering the union table {name}"))?
                    .distinct()?;
                ctx.register_table(name, df.into_view())?;
            }
        }
        let opts = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = ctx.sql_with_options(query, opts).await.map_err(|e| {
            let msg = e.to_string();
            if msg.contains("not supported")
                && (msg.contains("DDL") || msg.contains("DML") || msg.contains("Statement"))
            {
                config_error!("augment sql is read-only: {}", one_line(&msg))
            } else {
                config_error!("SQL error: {}", one_line(&msg))
            }
        })?;
        // One row past the limit tells an over-long result from one at it.
        let max = crate::limits::MAX_SQL_ROWS;
        let batches = df
            .limit(0, Some(max + 1))
            .map_err(|e| config_error!("SQL error: {}", one_line(&e.to_string())))?
            .collect()
            .await
            .map_err(|e| config_error!("SQL error: {}", one_line(&e.to_string())))?;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        if rows > max {
            return Err(config_error!(
                "the result has more than {max} rows, the limit of augment sql; aggregate, add a LIMIT, or read the Parquet files themselves (augment show lists them)"
            ));
        }
        Ok(batches)
    })
}

fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Renders results. Binary values (images) show as `<N bytes>` in table and CSV output.
pub fn render(batches: &[RecordBatch], format: Format) -> Result<String> {
    match format {
        Format::Table => {
            let shown: Vec<RecordBatch> = batches.iter().map(displayable).collect::<Result<_>>()?;
            Ok(arrow::util::pretty::pretty_format_batches(&shown)?.to_string())
        }
        Format::Csv => {
            let mut out = Vec::new();
            {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out);
                for b in batches {
                    w.write(&flatten_to_strings(&displayable(b)?)?)?;
                }
            }
            Ok(String::from_utf8(out)?)
        }
        Format::Json => {
            let mut out = Vec::new();
            {
                let mut w = arrow::json::ArrayWriter::new(&mut out);
                let refs: Vec<&RecordBatch> = batches.iter().collect();
                w.write_batches(&refs)?;
                w.finish()?;
            }
            let s = String::from_utf8(out)?;
            Ok(if s.is_empty() { "[]".into() } else { s })
        }
    }
}

fn displayable(b: &RecordBatch) -> Result<RecordBatch> {
    let cols: Vec<ArrayRef> = b.columns().iter().map(replace_binary).collect();
    let fields: Vec<Field> = b
        .schema()
        .fields()
        .iter()
        .zip(&cols)
        .map(|(f, c)| Field::new(f.name(), c.data_type().clone(), true))
        .collect();
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}

fn replace_binary(a: &ArrayRef) -> ArrayRef {
    let describe = |len: usize, get: &dyn Fn(usize) -> usize| -> ArrayRef {
        Arc::new(StringArray::from_iter(
            (0..len).map(|i| (!a.is_null(i)).then(|| format!("<{} bytes>", get(i)))),
        ))
    };
    match a.data_type() {
        DataType::Binary => {
            let b = a.as_binary::<i32>();
            describe(b.len(), &|i| b.value(i).len())
        }
        DataType::LargeBinary => {
            let b = a.as_binary::<i64>();
            describe(b.len(), &|i| b.value(i).len())
        }
        DataType::BinaryView => {
            let b = a.as_binary_view();
            describe(b.len(), &|i| b.value(i).len())
        }
        DataType::Struct(fields) => {
            let s = a.as_struct();
            let cols: Vec<ArrayRef> = s.columns().iter().map(replace_binary).collect();
            let new_fields: Fields = fields
                .iter()
                .zip(&cols)
                .map(|(f, c)| Field::new(f.name(), c.data_type().clone(), true))
                .collect();
            Arc::new(StructArray::new(new_fields, cols, s.nulls().cloned()))
        }
        _ => a.clone(),
    }
}

/// CSV cannot hold nested values: structs and lists become their display strings.
fn flatten_to_strings(b: &RecordBatch) -> Result<RecordBatch> {
    let opts = FormatOptions::default().with_null("");
    let mut cols = Vec::new();
    let mut fields = Vec::new();
    for (f, c) in b.schema().fields().iter().zip(b.columns()) {
        if matches!(
            c.data_type(),
            DataType::Struct(_)
                | DataType::List(_)
                | DataType::LargeList(_)
                | DataType::ListView(_)
        ) {
            let fmt = ArrayFormatter::try_new(c.as_ref(), &opts)?;
            let vals: Vec<Option<String>> = (0..c.len())
                .map(|i| (!c.is_null(i)).then(|| fmt.value(i).to_string()))
                .collect();
            cols.push(Arc::new(StringArray::from(vals)) as ArrayRef);
            fields.push(Field::new(f.name(), DataType::Utf8, true));
        } else {
            cols.push(c.clone());
            fields.push(f.as_ref().clone());
        }
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}
