//! `kind = "ingest"`: CelebA's layout (aligned JPEGs + annotation files) →
//! the `faces` and `rejects` tables.
//!
//! Real users often hold only part of CelebA, so the annotated images that
//! exist on disk are ingested and everything else is accounted for in
//! `rejects`. Images are decoded on all cores in bounded chunks and streamed
//! into Parquet row groups; the whole dataset is never held in memory.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{ArrayRef, BooleanArray, Int32Array, StringArray};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Lineage, StageIo, StageOutput, Table};
use crate::contract::tables;
use crate::data::celeba::{self, Labels, Partition};
use crate::data::demo;
use crate::data::images::{self, Crop, Reject, Resize};
use crate::data::parquet::{TableWriter, image_struct};
use crate::data::schema::{self, BBOX_COLUMNS, LANDMARK_COLUMNS, N_ATTRIBUTES};
use crate::data_error;

pub const ATTR_FILE: &str = "list_attr_celeba.txt";
pub const PARTITION_FILE: &str = "list_eval_partition.txt";
pub const IDENTITY_FILE: &str = "identity_CelebA.txt";
pub const BBOX_FILE: &str = "list_bbox_celeba.txt";
pub const LANDMARK_FILE: &str = "list_landmarks_align_celeba.txt";
pub const IMAGE_DIR: &str = "img_align_celeba";

/// Images per parallel chunk and per Parquet row group: bounds memory.
const CHUNK: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A CelebA download at `root`.
    #[default]
    Celeba,
    /// The procedural demo faces (not CelebA), generated on the fly.
    Demo,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub source: Source,
    /// CelebA folder (`source = "celeba"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// `false`: labels only, every annotated row, no image content.
    #[serde(default = "yes")]
    pub images: bool,
    #[serde(default = "all_partitions")]
    pub partitions: Vec<Partition>,
    /// At most this many annotated rows (after the partition filter), in file order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    #[serde(default)]
    pub crop: Crop,
    #[serde(default = "default_size")]
    pub image_size: u32,
    #[serde(default)]
    pub resize: Resize,
    /// Fraction of the images found on disk that may be rejected (undecodable or unannotated).
    #[serde(default = "default_reject")]
    pub max_reject_fraction: f64,
    /// Demo faces to generate (`source = "demo"`; default 3000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<usize>,
    /// Seed of the demo faces (default: the run's seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

fn yes() -> bool {
    true
}
fn all_partitions() -> Vec<Partition> {
    vec![Partition::Train, Partition::Val, Partition::Test]
}
fn default_size() -> u32 {
    64
}
fn default_reject() -> f64 {
    0.01
}

impl Config {
    /// Validates the keys and makes `root` absolute (relative to the pipeline file).
    pub fn resolve(&mut self, base: &Path) -> std::result::Result<(), String> {
        match self.source {
            Source::Celeba => {
                let Some(root) = &self.root else {
                    return Err("`root` is required with source = \"celeba\": the folder holding list_attr_celeba.txt and img_align_celeba/ (or use source = \"demo\")".into());
                };
                if self.n.is_some() || self.seed.is_some() {
                    return Err("`n` and `seed` only apply to source = \"demo\"".into());
                }
                let root = base.join(root);
                if !root.join(ATTR_FILE).is_file() {
                    return Err(format!(
                        "root = {:?}: no {ATTR_FILE} there; point `root` at your CelebA folder (or --set stages.<name>.root=DIR)",
                        root.display().to_string()
                    ));
                }
                self.root = Some(root);
            }
            Source::Demo => {
                if self.root.is_some() {
                    return Err(
                        "`root` does not apply to source = \"demo\" (the demo faces are generated)"
                            .into(),
                    );
                }
                if self.n == Some(0) {
                    return Err("`n` must be at least 1".into());
                }
            }
        }
        if self.partitions.is_empty() {
            return Err(
                "`partitions` is empty; use a subset of [\"train\", \"val\", \"test\"]".into(),
            );
        }
        if !(8..=1024).contains(&self.image_size) {
            return Err(format!(
                "image_size = {}: expected 8..=1024",
                self.image_size
            ));
        }
        if !(0.0..=1.0).contains(&self.max_reject_fraction) {
            return Err(format!(
                "max_reject_fraction = {}: expected 0..=1",
                self.max_reject_fraction
            ));
        }
        if self.limit == Some(0) {
            return Err("limit = 0 would ingest nothing".into());
        }
        Ok(())
    }
}

/// Size and mtime of the annotation files plus a digest of the image listing:
/// a changed download makes the stage stale.
pub fn external_fingerprint(c: &Config) -> Result<String> {
    let Some(root) = &c.root else {
        return Ok(String::new());
    };
    let mut parts = Vec::new();
    for f in [
        ATTR_FILE,
        PARTITION_FILE,
        IDENTITY_FILE,
        BBOX_FILE,
        LANDMARK_FILE,
    ] {
        if let Ok(md) = std::fs::metadata(root.join(f)) {
            let mtime = md
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            parts.push(format!("{f}:{}:{mtime}", md.len()));
        }
    }
    if c.images {
        let mut listing: Vec<(String, u64)> = Vec::new();
        if let Ok(rd) = std::fs::read_dir(root.join(IMAGE_DIR)) {
            for e in rd.flatten() {
                let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                listing.push((e.file_name().to_string_lossy().into_owned(), len));
            }
        }
        listing.sort();
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for (n, l) in &listing {
            h.update(n.as_bytes());
            h.update(l.to_le_bytes());
        }
        parts.push(format!(
            "images:{}:{}",
            listing.len(),
            hex::encode(h.finalize())
        ));
    }
    Ok(parts.join(";"))
}

/// One annotated row selected for ingestion.
struct Row {
    image_id: String,
    partition: Partition,
    identity: Option<i32>,
    labels: Labels,
    bbox: Option<Vec<i32>>,
    landmarks: Option<Vec<i32>>,
}

pub fn run(c: &Config, io: &StageIo) -> Result<StageOutput> {
    // The demo faces are written in CelebA's layout to a temporary folder and
    // ingested exactly like a download.
    let _demo_dir;
    let root: PathBuf = match c.source {
        Source::Celeba => c.root.clone().context("root missing after validation")?,
        Source::Demo => {
            let dir = tempfile::tempdir()?;
            let n = c.n.unwrap_or(demo::DEFAULT_COUNT);
            let seed = c.seed.unwrap_or(io.run_seed);
            io.say(format!(
                "rendering {n} demo faces (seed {seed}; procedural, not CelebA)"
            ));
            demo::write_layout(dir.path(), n, seed, io.quiet)?;
            let p = dir.path().to_path_buf();
            _demo_dir = dir;
            p
        }
    };
    let ann = Annotations::read(&root)?;
    let rows = ann.select(c, &root)?;

    let schema = schema::faces(ann.bboxes.is_some(), ann.landmarks.is_some());
    let meta = vec![
        (
            "augment.stage_config".to_string(),
            serde_json::to_string(c)?,
        ),
        (
            "augment.annotation_md5".to_string(),
            serde_json::to_string(&ann.md5)?,
        ),
    ];
    let faces_path = io.out_dir.join(tables::FACES.file);
    let mut out = FacesOut {
        faces: TableWriter::create(&faces_path, schema.clone(), &meta, CHUNK * 2)?,
        schema,
        rejects: Vec::new(),
        summary: serde_json::Map::new(),
    };
    let annotated = ann.attrs.image_ids.len();
    if !c.images {
        for chunk in rows.chunks(CHUNK * 8) {
            let refs: Vec<(&Row, Option<Vec<u8>>)> = chunk.iter().map(|r| (r, None)).collect();
            out.faces.write(&faces_batch(&out.schema, &refs)?)?;
        }
        io.say(format!(
            "{} annotated rows ingested without images (images = false)",
            fmt_int(rows.len())
        ));
    } else {
        write_images(c, io, &root, &ann.attrs.image_ids, &rows, &mut out)?;
    }
    let FacesOut {
        faces,
        rejects,
        mut summary,
        ..
    } = out;
    let n_faces = faces.finish()?;
    // Demo faces come with their class maps: the ground truth a face parser
    // is scored against.
    let demo_masks = if c.source == Source::Demo && c.images {
        let rejected: HashSet<&str> = rejects.iter().map(|r| r.image_id.as_str()).collect();
        let kept: Vec<&Row> = rows
            .iter()
            .filter(|r| !rejected.contains(r.image_id.as_str()))
            .collect();
        Some(write_demo_masks(
            c,
            &root,
            &kept,
            &io.out_dir.join(tables::DEMO_MASKS.file),
        )?)
    } else {
        None
    };
    let n_rejects = write_rejects(&io.out_dir.join(tables::REJECTS.file), &meta, &rejects)?;
    summary.insert("annotated".into(), annotated.into());
    summary.insert("selected".into(), rows.len().into());
    summary.insert("faces".into(), n_faces.into());
    summary.insert("rejects".into(), n_rejects.into());
    Ok(StageOutput {
        tables: [
            Table::of(tables::FACES, n_faces),
            Table::of(tables::REJECTS, n_rejects),
        ]
        .into_iter()
        .chain(demo_masks.map(|n| Table::of(tables::DEMO_MASKS, n)))
        .collect(),
        files: vec![],
        summary: serde_json::Value::Object(summary),
        lineage: Lineage {
            image_size: Some(c.image_size),
            crop: Some(c.crop),
            ..Lineage::default()
        },
    })
}

/// The `demo_masks` table: each kept demo face's class map, cropped like
/// its image and resized (nearest neighbour) to `image_size`.
fn write_demo_masks(c: &Config, root: &Path, rows: &[&Row], path: &Path) -> Result<usize> {
    let pngs: Vec<Vec<u8>> = rows
        .par_iter()
        .map(|r| -> Result<Vec<u8>> {
            let p = root
                .join(demo::MASK_DIR)
                .join(r.image_id.replace(".jpg", ".png"));
            let m = image::open(&p)
                .with_context(|| format!("reading {}", p.display()))?
                .to_luma8();
            let k = c.crop;
            let box_ = image::imageops::crop_imm(&m, k.left, k.top, k.size, k.size).to_image();
            let small = image::imageops::resize(
                &box_,
                c.image_size,
                c.image_size,
                image::imageops::FilterType::Nearest,
            );
            let mut out = Vec::new();
            image::DynamicImage::ImageLuma8(small)
                .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)?;
            Ok(out)
        })
        .collect::<Result<_>>()?;
    let sch = schema::demo_masks();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.image_id.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.partition.name()),
        )),
        image_struct(
            rows.iter()
                .zip(&pngs)
                .map(|(r, p)| Some((p.as_slice(), r.image_id.replace(".jpg", ".png")))),
        ),
    ];
    let mut w = TableWriter::create(path, sch.clone(), &[], 4096)?;
    w.write(&RecordBatch::try_new(sch, cols)?)?;
    w.finish()
}

/// CelebA's annotation files under a root: the attributes (required), the
/// optional partition, identity, bbox and landmark files, and the md5 of
/// each file read.
struct Annotations {
    attrs: celeba::Attributes,
    md5: BTreeMap<String, String>,
    partitions: Option<(HashMap<String, Partition>, String)>,
    identities: Option<(HashMap<String, i32>, String)>,
    bboxes: Option<(HashMap<String, Vec<i32>>, String)>,
    landmarks: Option<(HashMap<String, Vec<i32>>, String)>,
}

impl Annotations {
    fn read(root: &Path) -> Result<Annotations> {
        let attrs = celeba::parse_attributes(&root.join(ATTR_FILE))?;
        let mut md5: BTreeMap<String, String> =
            BTreeMap::from([(ATTR_FILE.to_string(), attrs.md5.clone())]);
        let partitions = optional(&root.join(PARTITION_FILE), celeba::parse_partitions)?;
        let identities = optional(&root.join(IDENTITY_FILE), celeba::parse_identities)?;
        let bboxes = optional(&root.join(BBOX_FILE), |p| {
            celeba::parse_int_table(p, &["x_1", "y_1", "width", "height"])
        })?;
        let landmarks = optional(&root.join(LANDMARK_FILE), |p| {
            celeba::parse_int_table(p, &LANDMARK_COLUMNS)
        })?;
        for (f, m) in [
            (PARTITION_FILE, partitions.as_ref().map(|x| &x.1)),
            (IDENTITY_FILE, identities.as_ref().map(|x| &x.1)),
            (BBOX_FILE, bboxes.as_ref().map(|x| &x.1)),
            (LANDMARK_FILE, landmarks.as_ref().map(|x| &x.1)),
        ] {
            if let Some(m) = m {
                md5.insert(f.to_string(), m.clone());
            }
        }
        Ok(Annotations {
            attrs,
            md5,
            partitions,
            identities,
            bboxes,
            landmarks,
        })
    }

    /// The annotated rows of the configured partitions (up to `limit`).
    fn select(&self, c: &Config, root: &Path) -> Result<Vec<Row>> {
        let Annotations {
            attrs,
            partitions,
            identities,
            bboxes,
            landmarks,
            ..
        } = self;
        let wanted: HashSet<Partition> = c.partitions.iter().copied().collect();
        let mut rows = Vec::new();
        for (id, &labels) in attrs.image_ids.iter().zip(&attrs.labels) {
            let partition = match &partitions {
                Some((map, _)) => *map.get(id).ok_or_else(|| {
                    data_error!("{}: image {id} is annotated but has no partition", root.join(PARTITION_FILE).display())
                })?,
                None => celeba::official_partition(id).ok_or_else(|| {
                    data_error!("image {id}: cannot infer its partition from its number without {PARTITION_FILE}; add that file")
                })?,
            };
            if !wanted.contains(&partition) {
                continue;
            }
            rows.push(Row {
                image_id: id.clone(),
                partition,
                identity: identities.as_ref().and_then(|(m, _)| m.get(id).copied()),
                labels,
                bbox: bboxes.as_ref().and_then(|(m, _)| m.get(id).cloned()),
                landmarks: landmarks.as_ref().and_then(|(m, _)| m.get(id).cloned()),
            });
            if c.limit.is_some_and(|l| rows.len() >= l) {
                break;
            }
        }
        Ok(rows)
    }
}

/// The `faces` table being written, with the rejects and summary figures
/// gathered on the way.
struct FacesOut {
    faces: TableWriter,
    schema: SchemaRef,
    rejects: Vec<RejectRow>,
    summary: serde_json::Map<String, serde_json::Value>,
}

/// One row of the `rejects` table.
struct RejectRow {
    image_id: String,
    reason: String,
    detail: String,
}

impl RejectRow {
    fn new(image_id: &str, reason: &str, detail: impl Into<String>) -> RejectRow {
        RejectRow {
            image_id: image_id.to_string(),
            reason: reason.to_string(),
            detail: detail.into(),
        }
    }
}

/// Decodes, crops and re-encodes the `present` rows' images in parallel
/// chunks into `faces`; files that fail become rejects. Returns the count
/// of rejected files by reason.
fn encode_present(
    c: &Config,
    io: &StageIo,
    present: &[&Row],
    on_disk: &HashMap<String, PathBuf>,
    faces: &mut TableWriter,
    schema: &SchemaRef,
    rejects: &mut Vec<RejectRow>,
) -> Result<BTreeMap<&'static str, usize>> {
    let pb = io.progress(present.len() as u64, "images");
    let mut bad_files: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (k, chunk) in present.chunks(CHUNK).enumerate() {
        crate::fault::point(|| format!("{}:chunk:{k}", io.name));
        let results: Vec<std::result::Result<Vec<u8>, Reject>> = chunk
            .par_iter()
            .map(|r| process_image(&on_disk[&r.image_id], c))
            .collect();
        let mut ok: Vec<(&Row, Option<Vec<u8>>)> = Vec::with_capacity(chunk.len());
        for (r, res) in chunk.iter().zip(results) {
            match res {
                Ok(png) => ok.push((r, Some(png))),
                Err(rej) => {
                    *bad_files.entry(rej.reason).or_default() += 1;
                    let detail = rej.detail.split_whitespace().collect::<Vec<_>>().join(" ");
                    rejects.push(RejectRow::new(&r.image_id, rej.reason, detail));
                }
            }
        }
        if !ok.is_empty() {
            faces.write(&faces_batch(schema, &ok)?)?;
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    Ok(bad_files)
}

/// Fails when more than `max_reject_fraction` of the images on disk were rejected.
fn check_reject_fraction(
    c: &Config,
    rejects: &[RejectRow],
    bad: usize,
    found: usize,
) -> Result<()> {
    let frac = bad as f64 / found as f64;
    if frac > c.max_reject_fraction {
        let examples: Vec<String> = rejects
            .iter()
            .filter(|r| r.reason != "missing")
            .take(3)
            .map(|r| format!("{}: {}: {}", r.image_id, r.reason, r.detail))
            .collect();
        return Err(data_error!(
            "{bad} of {found} images on disk were rejected ({:.1}% > max_reject_fraction {}%), e.g. {}; fix the files or raise max_reject_fraction",
            frac * 100.0,
            c.max_reject_fraction * 100.0,
            examples.join("; ")
        ));
    }
    Ok(())
}

/// Decodes, crops and re-encodes the images of `rows` in parallel chunks;
/// files that fail become rejects, as do images without annotation and
/// annotated images not on disk.
fn write_images(
    c: &Config,
    io: &StageIo,
    root: &Path,
    annotated_ids: &[String],
    rows: &[Row],
    out: &mut FacesOut,
) -> Result<()> {
    let annotated = annotated_ids.len();
    let FacesOut {
        faces,
        schema,
        rejects,
        summary,
    } = out;
    let img_dir = root.join(IMAGE_DIR);
    let on_disk = list_images(&img_dir)?;
    if on_disk.is_empty() {
        return Err(data_error!(
            "{}: no images found; download img_align_celeba, or set images = false to ingest labels only",
            img_dir.display()
        ));
    }
    let annotated_set: HashSet<&str> = annotated_ids.iter().map(String::as_str).collect();
    let mut not_annotated: Vec<&String> = on_disk
        .keys()
        .filter(|n| !annotated_set.contains(n.as_str()))
        .collect();
    not_annotated.sort();
    for n in &not_annotated {
        rejects.push(RejectRow::new(
            n,
            "not_annotated",
            format!("in {IMAGE_DIR}/ but not in {}", ATTR_FILE),
        ));
    }
    let (present, missing): (Vec<&Row>, Vec<&Row>) =
        rows.iter().partition(|r| on_disk.contains_key(&r.image_id));
    for r in &missing {
        rejects.push(RejectRow::new(
            &r.image_id,
            "missing",
            format!("in {} but not in {IMAGE_DIR}/", ATTR_FILE),
        ));
    }
    let bad_files = encode_present(c, io, &present, &on_disk, faces, schema, rejects)?;
    let found = on_disk.len();
    let undecodable: usize = bad_files.values().sum();
    let by_reason: Vec<String> = bad_files
        .iter()
        .map(|(r, n)| format!("{r} {}", fmt_int(*n)))
        .collect();
    io.say(format!(
        "{} of {} annotated images found; {} rejected{}; {} on disk without annotation",
        fmt_int(present.len()),
        fmt_int(annotated),
        fmt_int(undecodable),
        if by_reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", by_reason.join(", "))
        },
        fmt_int(not_annotated.len())
    ));
    check_reject_fraction(c, rejects, undecodable + not_annotated.len(), found)?;
    summary.insert("found_on_disk".into(), found.into());
    summary.insert("missing".into(), missing.len().into());
    summary.insert("undecodable".into(), undecodable.into());
    summary.insert(
        "rejected_by_reason".into(),
        serde_json::to_value(&bad_files)?,
    );
    summary.insert("not_annotated".into(), not_annotated.len().into());
    Ok(())
}

/// The `rejects` table: one row per rejected image with its reason and detail.
fn write_rejects(path: &Path, meta: &[(String, String)], rejects: &[RejectRow]) -> Result<usize> {
    let mut rw = TableWriter::create(path, schema::rejects(), meta, 1 << 20)?;
    rw.write(&RecordBatch::try_new(
        schema::rejects(),
        vec![
            Arc::new(StringArray::from_iter_values(
                rejects.iter().map(|r| r.image_id.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                rejects.iter().map(|r| r.reason.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                rejects.iter().map(|r| r.detail.as_str()),
            )),
        ],
    )?)?;
    rw.finish()
}

fn optional<T>(path: &Path, parse: impl Fn(&Path) -> Result<T>) -> Result<Option<T>> {
    if path.exists() {
        parse(path).map(Some)
    } else {
        Ok(None)
    }
}

/// Image files in the folder, by file name.
fn list_images(dir: &Path) -> Result<HashMap<String, PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| {
        data_error!(
            "{}: cannot list images ({e}); download img_align_celeba, or set images = false",
            dir.display()
        )
    })?;
    let mut out = HashMap::new();
    for e in rd {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".jpg") || lower.ends_with(".jpeg") || lower.ends_with(".png") {
            out.insert(name, e.path());
        }
    }
    Ok(out)
}

/// One image file, read, strictly decoded, checked for CelebA's aligned
/// size (the crop box is placed for it), cropped, resized and PNG-encoded.
fn process_image(path: &Path, c: &Config) -> std::result::Result<Vec<u8>, Reject> {
    let img = images::read_image(path)?;
    let (w, h) = (celeba::ALIGNED_WIDTH, celeba::ALIGNED_HEIGHT);
    if img.dimensions() != (w, h) {
        return Err(Reject {
            reason: "wrong_size",
            detail: format!(
                "{}x{}, not the {w}x{h} of CelebA's aligned faces that the crop box is placed for",
                img.width(),
                img.height()
            ),
        });
    }
    let img =
        images::crop_resize(&img, Some(c.crop), c.image_size, c.resize).map_err(|e| Reject {
            reason: "wrong_size",
            detail: e,
        })?;
    images::encode_png(&img).map_err(|e| Reject {
        reason: "corrupt",
        detail: format!("re-encoding as PNG: {e}"),
    })
}

fn faces_batch(schema: &SchemaRef, rows: &[(&Row, Option<Vec<u8>>)]) -> Result<RecordBatch> {
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|(r, _)| r.image_id.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|(r, _)| r.partition.name()),
        )),
        Arc::new(Int32Array::from_iter(rows.iter().map(|(r, _)| r.identity))),
    ];
    for i in 0..N_ATTRIBUTES {
        cols.push(Arc::new(BooleanArray::from_iter(
            rows.iter().map(|(r, _)| Some(celeba::label(r.labels, i))),
        )));
    }
    if schema.index_of(BBOX_COLUMNS[0]).is_ok() {
        for k in 0..BBOX_COLUMNS.len() {
            cols.push(Arc::new(Int32Array::from_iter(
                rows.iter().map(|(r, _)| r.bbox.as_ref().map(|b| b[k])),
            )));
        }
    }
    if schema.index_of(LANDMARK_COLUMNS[0]).is_ok() {
        for k in 0..LANDMARK_COLUMNS.len() {
            cols.push(Arc::new(Int32Array::from_iter(
                rows.iter().map(|(r, _)| r.landmarks.as_ref().map(|b| b[k])),
            )));
        }
    }
    cols.push(image_struct(rows.iter().map(|(r, png)| {
        png.as_deref().map(|b| (b, png_name(&r.image_id)))
    })));
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}

fn png_name(image_id: &str) -> String {
    let stem = image_id.rsplit_once('.').map(|s| s.0).unwrap_or(image_id);
    format!("{stem}.png")
}

pub fn fmt_int(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
