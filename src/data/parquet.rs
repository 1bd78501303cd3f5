//! Parquet in and out: every stage table is written through [`TableWriter`],
//! which stamps the tool version, the Hugging Face feature metadata and any
//! stage metadata into the file's key-value metadata.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{ArrayRef, BinaryBuilder, StringBuilder, StructArray};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::data::schema::huggingface_metadata;

pub struct TableWriter {
    writer: ArrowWriter<File>,
    path: PathBuf,
    rows: usize,
}

impl TableWriter {
    /// `row_group_rows` bounds memory for wide rows (images); label tables can use large groups.
    pub fn create(
        path: &Path,
        schema: SchemaRef,
        metadata: &[(String, String)],
        row_group_rows: usize,
    ) -> Result<Self> {
        // The metadata goes into the Arrow schema itself: readers that restore
        // the embedded Arrow schema (pyarrow, hence pandas and `datasets`)
        // take schema metadata from there, not from the file's key-value list.
        let mut kv: HashMap<String, String> = HashMap::from([
            ("huggingface".to_string(), huggingface_metadata(&schema)),
            ("augment.version".to_string(), super::VERSION.to_string()),
        ]);
        kv.extend(metadata.iter().cloned());
        let schema = Arc::new(schema.as_ref().clone().with_metadata(kv));
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(row_group_rows))
            .build();
        crate::fault::check_write(path).with_context(|| format!("creating {}", path.display()))?;
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let writer = ArrowWriter::try_new(file, schema, Some(props))?;
        Ok(TableWriter {
            writer,
            path: path.to_path_buf(),
            rows: 0,
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows();
        if self.rows > batch.num_rows() {
            // Not the first batch: a test's "disk full" hits mid-file.
            crate::fault::check_write(&self.path)
                .with_context(|| format!("writing {}", self.path.display()))?;
        }
        self.writer
            .write(batch)
            .with_context(|| format!("writing {}", self.path.display()))
    }

    /// Closes the file and flushes it to disk; returns the number of rows written.
    pub fn finish(self) -> Result<usize> {
        crate::fault::check_write(&self.path)
            .with_context(|| format!("closing {}", self.path.display()))?;
        self.writer
            .close()
            .with_context(|| format!("closing {}", self.path.display()))?;
        // fsync through a second handle flushes the same file.
        File::open(&self.path)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("flushing {}", self.path.display()))?;
        Ok(self.rows)
    }
}

/// The column names of a Parquet file.
pub fn column_names(path: &Path) -> Result<Vec<String>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("reading Parquet metadata of {}", path.display()))?;
    Ok(builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect())
}

/// Reads the named columns of a Parquet file, in the order named (all
/// columns when `columns` is empty).
pub fn read_columns(path: &Path, columns: &[&str]) -> Result<Vec<RecordBatch>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("reading Parquet metadata of {}", path.display()))?;
    let builder = if columns.is_empty() {
        builder
    } else {
        let schema = builder.parquet_schema();
        let root: Vec<usize> = columns
            .iter()
            .map(|c| {
                builder
                    .schema()
                    .index_of(c)
                    .with_context(|| format!("{} has no column `{c}`", path.display()))
            })
            .collect::<Result<_>>()?;
        let mask = ProjectionMask::roots(schema, root);
        builder.with_projection(mask)
    };
    let reader = builder.with_batch_size(65_536).build()?;
    // A projection keeps the file's column order; callers index columns in
    // the order they asked for.
    reader
        .map(|b| {
            let b = b.map_err(anyhow::Error::from)?;
            if columns.is_empty() {
                return Ok(b);
            }
            let order: Vec<usize> = columns
                .iter()
                .map(|c| b.schema().index_of(c))
                .collect::<std::result::Result<_, _>>()?;
            Ok(b.project(&order)?)
        })
        .collect()
}

/// Builds the HF image struct column; `None` items are null structs.
pub fn image_struct<'a>(items: impl Iterator<Item = Option<(&'a [u8], String)>>) -> ArrayRef {
    let mut bytes = BinaryBuilder::new();
    let mut paths = StringBuilder::new();
    let mut valid = Vec::new();
    for it in items {
        match it {
            Some((b, p)) => {
                bytes.append_value(b);
                paths.append_value(p);
                valid.push(true);
            }
            None => {
                bytes.append_null();
                paths.append_null();
                valid.push(false);
            }
        }
    }
    let DataType::Struct(fields) = crate::data::schema::image_struct_type() else {
        unreachable!("image struct type")
    };
    Arc::new(StructArray::new(
        fields,
        vec![Arc::new(bytes.finish()), Arc::new(paths.finish())],
        Some(NullBuffer::from(valid)),
    ))
}
