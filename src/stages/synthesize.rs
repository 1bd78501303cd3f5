//! `kind = "synthesize"`: turns a balance plan into labelled images.
//!
//! For each plan row: `original` rows are the source faces, copied byte for
//! byte; `random_doubling` / `dynamic_balancing` rows are drawn by the
//! generator, `G_de(Φ(a))` (Liu et al. Sec. III-B, "Testing phase"), and
//! resized to the ingested image size — or, when the generator is a
//! translation generator (`sggan` / `stargan`), G(source face, target
//! labels): the source face at the translator's size, edited towards the
//! plan row's labels (every attribute the row changes must be one the
//! generator edits), resized back; `flip` / `crop` / `erase` rows apply
//! the image operation the plan recorded to the source face (random erasing
//! after Zhong et al. 2017); `ml_ros` rows are copies of their source.
//!
//! Tables: `synth` (every non-original row, with `label_agreement`: the
//! fraction of the 40 target labels on which the generator stage's
//! classifier C agrees with the image; for a translation generator, the
//! fraction of its edited attributes on which its critic's classification
//! head agrees) and `augmented` (the real rows plus
//! every synthesized row that passes `min_label_agreement`), the table to
//! train external classifiers on. `grid.png` is Fig. 6: for a few source
//! faces, the image drawn for their labels and for flips of smiling, hair
//! colour, pale skin, male and young; for a translation generator, each
//! source face under every value of every attribute it edits.
//!
//! BridgeGAN (`model = "bridgegan"`, Huang et al. App. B) edits towards
//! att_diff = target − source: `reference` rows (plan column
//! `reference_image_id`) are guided by E(reference face, att_diff), the
//! others by M(R, att_diff) with R seeded by the row's `sample_id`;
//! `reference_grid.png` is App. Figs. 11–12.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, StringArray};
use arrow::datatypes::Int64Type;
use arrow::record_batch::RecordBatch;
use candle_core::Device;
use image::RgbImage;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{GeneratorRef, InputStage, Lineage, StageIo, StageKind, StageOutput, Table};
use crate::contract::tables;
use crate::data::celeba::Labels;
use crate::data::images::{crop_back, decode_rgb, encode_png, erase, flip_horizontal};
use crate::data::parquet::{TableWriter, image_struct, read_columns};
use crate::data::schema::{
    self, N_ATTRIBUTES, Origin, PlanStrategy, attribute_column, attribute_index,
};
use crate::data::tensors::{
    FacesById, images_tensor, labels_of_batch, read_faces_by_id, resize_square, strings,
};
use crate::data_error;
use crate::generators;

fn default_batch() -> usize {
    64
}
fn default_grid_rows() -> usize {
    6
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Images per generator forward pass.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Keep only synthesized rows whose `label_agreement` is at least this
    /// (in `augmented`; `synth` keeps every row). Off by default.
    #[serde(default)]
    pub min_label_agreement: Option<f64>,
    /// Source faces in `grid.png` (0: no grid).
    #[serde(default = "default_grid_rows")]
    pub grid_rows: usize,
}

impl Config {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.batch_size == 0 {
            return Err("batch_size must be at least 1".into());
        }
        if let Some(m) = self.min_label_agreement
            && !(0.0..=1.0).contains(&m)
        {
            return Err(format!("min_label_agreement = {m}: must be in [0, 1]"));
        }
        Ok(())
    }
}

/// One plan row.
#[derive(Debug, Clone)]
struct PlanRow {
    sample_id: i64,
    source: String,
    strategy: PlanStrategy,
    op: Option<String>,
    op_box: [i32; 4],
    op_seed: Option<i64>,
    labels: Labels,
    /// `reference` rows: the real face whose features guide the edit.
    reference: Option<String>,
}

fn read_plan(path: &Path) -> Result<Vec<PlanRow>> {
    let mut cols: Vec<String> = [
        "sample_id",
        "source_image_id",
        "strategy",
        "op",
        "op_x",
        "op_y",
        "op_width",
        "op_height",
        "op_seed",
        "reference_image_id",
    ]
    .map(String::from)
    .to_vec();
    cols.extend((0..N_ATTRIBUTES).map(attribute_column));
    let names: Vec<&str> = cols.iter().map(String::as_str).collect();
    let mut rows = Vec::new();
    for b in read_columns(path, &names)? {
        let id = b
            .column(0)
            .as_primitive_opt::<Int64Type>()
            .context("sample_id is not Int64")?;
        let src = strings(&b, 1)?;
        let strategy = strings(&b, 2)?;
        let op = strings(&b, 3)?;
        let ints: Vec<_> = (4..8)
            .map(|c| {
                b.column(c)
                    .as_primitive_opt::<arrow::datatypes::Int32Type>()
                    .context("op box is not Int32")
            })
            .collect::<Result<_>>()?;
        let seed = b
            .column(8)
            .as_primitive_opt::<Int64Type>()
            .context("op_seed is not Int64")?;
        let reference = strings(&b, 9)?;
        let labels = labels_of_batch(&b, 10)?;
        for (r, &labels_r) in labels.iter().enumerate() {
            rows.push(PlanRow {
                sample_id: id.value(r),
                source: src.value(r).to_string(),
                strategy: PlanStrategy::from_name(strategy.value(r)).ok_or_else(|| {
                    data_error!(
                        "{}: unknown strategy {:?}; the plan was written by another augment, rerun its balance stage",
                        path.display(),
                        strategy.value(r)
                    )
                })?,
                op: (!op.is_null(r)).then(|| op.value(r).to_string()),
                op_box: [0, 1, 2, 3].map(|k| {
                    if ints[k].is_null(r) {
                        0
                    } else {
                        ints[k].value(r)
                    }
                }),
                op_seed: (!seed.is_null(r)).then(|| seed.value(r)),
                labels: labels_r,
                reference: (!reference.is_null(r)).then(|| reference.value(r).to_string()),
            });
        }
    }
    Ok(rows)
}

/// The generator stage's networks, loaded through its family.
struct Loaded {
    /// `<stage>@sha256:<generator file>`, recorded in every generated row.
    name: String,
    g: Box<dyn generators::Generator>,
}

impl Loaded {
    fn load(stage: &InputStage, dev: &Device) -> Result<Loaded> {
        let path = stage.dir.join(generators::files::GENERATOR);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let sha = hex::encode(Sha256::digest(&bytes));
        let g = generators::load(&stage.dir, dev)?;
        g.check_ready()?;
        Ok(Loaded {
            name: format!("{}@sha256:{sha}", stage.name),
            g,
        })
    }

    /// Agreement of each image with its target labels, by the generator's
    /// judge (None when it has none), in batches of `batch`.
    fn agreement(
        &self,
        imgs: &[RgbImage],
        labels: &[Labels],
        batch: usize,
        dev: &Device,
    ) -> Result<Option<Vec<f64>>> {
        let mut out = Vec::with_capacity(imgs.len());
        for (ic, lc) in imgs.chunks(batch).zip(labels.chunks(batch)) {
            let small: Vec<RgbImage> = ic
                .iter()
                .map(|i| resize_square(i.clone(), self.g.image_size()))
                .collect();
            match self.g.agreement(&images_tensor(&small, dev)?, lc)? {
                Some(a) => out.extend(a),
                None => return Ok(None),
            }
        }
        Ok(Some(out))
    }
}

/// Applies a classic row's operation to its source face.
fn classic_image(row: &PlanRow, src: &RgbImage) -> Result<RgbImage> {
    let [x, y, w, h] = row.op_box.map(|v| v.max(0) as u32);
    Ok(match row.op.as_deref() {
        Some("flip") => flip_horizontal(src),
        Some("crop") => crop_back(src, x, y, w, h),
        Some("erase") => erase(src, x, y, w, h, row.op_seed.unwrap_or(0) as u64),
        None => src.clone(),
        Some(other) => {
            return Err(data_error!(
                "plan row {}: unknown op `{other}`",
                row.sample_id
            ));
        }
    })
}

struct Writers {
    synth: TableWriter,
    augmented: TableWriter,
    dropped: usize,
}

/// A finished row before it becomes Arrow.
struct OutRow<'a> {
    plan: &'a PlanRow,
    origin: Origin,
    generator: Option<&'a str>,
    seed: Option<i64>,
    agreement: Option<f64>,
    png: Vec<u8>,
}

fn batch_of(
    rows: &[OutRow],
    with_image_id: bool,
    schema: arrow::datatypes::SchemaRef,
) -> Result<RecordBatch> {
    let mut cols: Vec<ArrayRef> = Vec::new();
    let file_name = |r: &OutRow| {
        if r.origin == Origin::Real {
            r.plan.source.clone()
        } else {
            format!("synth_{:08}.png", r.plan.sample_id)
        }
    };
    if with_image_id {
        cols.push(Arc::new(StringArray::from_iter_values(
            rows.iter().map(file_name),
        )));
    }
    cols.push(Arc::new(Int64Array::from_iter_values(
        rows.iter().map(|r| r.plan.sample_id),
    )));
    cols.push(Arc::new(StringArray::from_iter_values(
        rows.iter().map(|r| r.plan.source.as_str()),
    )));
    cols.push(Arc::new(StringArray::from_iter_values(
        rows.iter().map(|r| r.plan.strategy.name()),
    )));
    cols.push(Arc::new(StringArray::from_iter_values(
        rows.iter().map(|r| r.origin.name()),
    )));
    cols.push(Arc::new(StringArray::from_iter(
        rows.iter().map(|r| r.generator),
    )));
    cols.push(Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.seed))));
    for i in 0..N_ATTRIBUTES {
        cols.push(Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some((r.plan.labels >> i) & 1 == 1)),
        )));
    }
    cols.push(Arc::new(Float64Array::from_iter(
        rows.iter().map(|r| r.agreement),
    )));
    let names: Vec<String> = rows.iter().map(file_name).collect();
    cols.push(image_struct(
        rows.iter()
            .zip(&names)
            .map(|(r, n)| Some((r.png.as_slice(), n.clone()))),
    ));
    Ok(RecordBatch::try_new(schema, cols)?)
}

pub fn run(c: &Config, io: &StageIo) -> Result<StageOutput> {
    let dev = io.candle_device()?;
    let plan_stage = io.input(StageKind::Balance)?;
    let plan = read_plan(&plan_stage.table(tables::PLAN)?)?;
    let generator = match io.optional_input(StageKind::TrainGenerator) {
        Some(s) => Some(Loaded::load(s, &dev)?),
        None => None,
    };
    let n_generated = plan
        .iter()
        .filter(|r| r.strategy.origin() == Origin::Generated)
        .count();
    if n_generated > 0 && generator.is_none() {
        return Err(data_error!(
            "plan `{}` has {n_generated} generator rows; add a `train_generator` stage to this stage's inputs",
            plan_stage.name
        ));
    }
    let s = load_synthesis(c, io, dev, generator, &plan)?;
    let out = &io.out_dir;
    let mut w = Writers {
        synth: TableWriter::create(&out.join(tables::SYNTH.file), schema::synth(), &[], 512)?,
        augmented: TableWriter::create(
            &out.join(tables::AUGMENTED.file),
            schema::augmented(),
            &[],
            512,
        )?,
        dropped: 0,
    };
    // Real rows first.
    let (originals, todo): (Vec<&PlanRow>, Vec<&PlanRow>) = plan
        .iter()
        .partition(|r| r.strategy == PlanStrategy::Original);
    s.write_originals(&mut w, &originals)?;
    io.say(format!(
        "{} real rows, {} to synthesize ({} by the generator, {} by image operations)",
        originals.len(),
        todo.len(),
        n_generated,
        todo.len() - n_generated
    ));
    let (agreement_sum, agreement_n) = s.write_synthesized(io, &mut w, &todo)?;
    let synth_rows = w.synth.finish()?;
    let augmented_rows = w.augmented.finish()?;
    if let Some(m) = c.min_label_agreement {
        io.say(format!(
            "min_label_agreement {m}: dropped {} of {} synthesized rows from `augmented`",
            w.dropped, synth_rows
        ));
    }
    let mean_agreement = (agreement_n > 0).then(|| agreement_sum / agreement_n as f64);
    if let Some(a) = mean_agreement {
        io.say(format!("mean label agreement of synthesized rows: {a:.4}"));
    }
    let files = s.write_grids(out, &originals)?;
    Ok(StageOutput {
        tables: vec![
            Table::of(tables::SYNTH, synth_rows),
            Table::of(tables::AUGMENTED, augmented_rows),
        ],
        files,
        summary: serde_json::json!({
            "real_rows": originals.len(),
            "synthesized_rows": synth_rows,
            "generated_rows": n_generated,
            "dropped_by_min_label_agreement": w.dropped,
            "mean_label_agreement": mean_agreement,
            "generator": s.gen_name,
        }),
        lineage: Lineage {
            generator: io
                .optional_input(StageKind::TrainGenerator)
                .zip(s.generator.as_ref())
                .map(|(i, g)| GeneratorRef {
                    stage: i.name.clone(),
                    translator: g.g.edits_sources(),
                }),
            ..Lineage::inherit(&io.inputs)
        },
    })
}

/// The faces the plan names (sources and references), checked against the
/// plan, with the generator they will go through.
fn load_synthesis<'a>(
    c: &'a Config,
    io: &StageIo,
    dev: candle_core::Device,
    generator: Option<Loaded>,
    plan: &[PlanRow],
) -> Result<Synthesis<'a>> {
    let faces_path = io.input(StageKind::Ingest)?.table(tables::FACES)?;
    let wanted: HashSet<&str> = plan
        .iter()
        .flat_map(|r| std::iter::once(r.source.as_str()).chain(r.reference.as_deref()))
        .collect();
    let faces = read_faces_by_id(&faces_path, &wanted)?;
    check_plan(plan, &faces_path, &faces, generator.as_ref())?;
    let face_size = match faces.png.values().next() {
        Some(b) => decode_rgb(b).map_err(|e| data_error!("{e}"))?.width() as usize,
        None => 64,
    };
    let gen_name = generator.as_ref().map(|g| g.name.clone());
    Ok(Synthesis {
        c,
        dev,
        generator,
        faces,
        face_size,
        run_seed: io.run_seed as i64,
        gen_name,
    })
}

/// Every plan row names a face of the ingest input, and a translation
/// generator's rows change only the attributes it edits.
fn check_plan(
    plan: &[PlanRow],
    faces_path: &Path,
    faces: &FacesById,
    generator: Option<&Loaded>,
) -> Result<()> {
    if let Some(missing) = plan.iter().find(|r| !faces.png.contains_key(&r.source)) {
        return Err(data_error!(
            "plan row {} names source {}, which `{}` does not have; rerun the balance stage on this ingest",
            missing.sample_id,
            missing.source,
            faces_path.display()
        ));
    }
    if let Some(id) = plan
        .iter()
        .filter_map(|r| r.reference.as_ref())
        .find(|id| !faces.png.contains_key(*id))
    {
        return Err(data_error!(
            "reference_image_id {id} is not in the ingest faces (`{}`); rerun the balance stage on this ingest",
            faces_path.display()
        ));
    }
    if let Some(r) = plan.iter().find(|r| r.reference.is_some())
        && !generator.is_some_and(|g| g.g.uses_references())
    {
        return Err(data_error!(
            "plan row {} has a reference image; only model = \"bridgegan\" uses references",
            r.sample_id
        ));
    }
    if let Some(g) = generator {
        for r in plan
            .iter()
            .filter(|r| r.strategy.origin() == Origin::Generated)
        {
            g.g.check_edit(r.sample_id, faces.labels[&r.source], r.labels)?;
        }
    }
    if let Some(g) = generator
        && let Some(editable) = g.g.editable()
        && let Some(bad) = plan.iter().find(|r| {
            r.strategy.origin() == Origin::Generated
                && (r.labels ^ faces.labels[&r.source]) & !editable != 0
        })
    {
        let changed = (bad.labels ^ faces.labels[&bad.source]) & !editable;
        let names: Vec<&str> = (0..N_ATTRIBUTES)
            .filter(|&i| changed >> i & 1 == 1)
            .map(|i| schema::ATTRIBUTES[i])
            .collect();
        return Err(data_error!(
            "plan row {} changes {}, which translation generator `{}` does not edit; \
             give the balance stage `attributes = [...]` within the generator's attributes (`translation.attributes` or `bridgegan.attributes`)",
            bad.sample_id,
            names.join(", "),
            g.name.split('@').next().unwrap_or("")
        ));
    }
    Ok(())
}

/// What synthesizing needs: the settings, the generator (if any) and the
/// source faces of the plan.
struct Synthesis<'a> {
    c: &'a Config,
    dev: Device,
    generator: Option<Loaded>,
    faces: FacesById,
    /// Side of the ingested faces; generated images are resized to it.
    face_size: usize,
    run_seed: i64,
    /// `<stage>@sha256:<generator file>`, recorded in generated rows.
    gen_name: Option<String>,
}

impl Synthesis<'_> {
    fn source_image(&self, r: &PlanRow) -> Result<RgbImage> {
        decode_rgb(&self.faces.png[&r.source]).map_err(|e| data_error!("{e}"))
    }

    /// The real rows into `augmented`, in chunks of 512.
    fn write_originals(&self, w: &mut Writers, originals: &[&PlanRow]) -> Result<()> {
        for chunk in originals.chunks(512) {
            let rows: Vec<OutRow> = chunk
                .iter()
                .map(|r| OutRow {
                    plan: r,
                    origin: Origin::Real,
                    generator: None,
                    seed: None,
                    agreement: None,
                    png: self.faces.png[&r.source].clone(),
                })
                .collect();
            w.augmented
                .write(&batch_of(&rows, true, schema::augmented())?)?;
        }
        Ok(())
    }

    /// The synthesized rows into `synth`, and those that pass
    /// `min_label_agreement` into `augmented`; returns the sum and count of
    /// their label agreements.
    fn write_synthesized(
        &self,
        io: &StageIo,
        w: &mut Writers,
        todo: &[&PlanRow],
    ) -> Result<(f64, usize)> {
        let pb = io.progress(todo.len() as u64, "images");
        let mut agreement_sum = 0.0;
        let mut agreement_n = 0usize;
        for (k, chunk) in todo.chunks(512).enumerate() {
            crate::fault::point(|| format!("{}:chunk:{k}", io.name));
            let rows = self.synthesize(chunk)?;
            for a in rows.iter().filter_map(|r| r.agreement) {
                agreement_sum += a;
                agreement_n += 1;
            }
            w.synth.write(&batch_of(&rows, false, schema::synth())?)?;
            let keep: Vec<OutRow> = rows
                .into_iter()
                .filter(|r| match (self.c.min_label_agreement, r.agreement) {
                    (Some(m), Some(a)) => a >= m,
                    _ => true,
                })
                .collect();
            w.dropped += chunk.len() - keep.len();
            if !keep.is_empty() {
                w.augmented
                    .write(&batch_of(&keep, true, schema::augmented())?)?;
            }
            pb.inc(chunk.len() as u64);
        }
        pb.finish_and_clear();
        Ok((agreement_sum, agreement_n))
    }

    /// The rows of one chunk of the plan: generated rows in one batched
    /// pass, classic rows in parallel, then the judge's label agreement.
    fn synthesize<'r>(&'r self, chunk: &[&'r PlanRow]) -> Result<Vec<OutRow<'r>>> {
        let imgs = self.images(chunk)?;
        let agreement: Vec<Option<f64>> = match &self.generator {
            Some(g) => {
                let labels: Vec<Labels> = chunk.iter().map(|r| r.labels).collect();
                match g.agreement(&imgs, &labels, self.c.batch_size, &self.dev)? {
                    Some(a) => a.into_iter().map(Some).collect(),
                    None => vec![None; chunk.len()],
                }
            }
            None => vec![None; chunk.len()],
        };
        let pngs: Vec<Vec<u8>> = imgs.par_iter().map(encode_png).collect::<Result<_>>()?;
        Ok(chunk
            .iter()
            .zip(pngs)
            .zip(&agreement)
            .map(|((r, png), a)| {
                let origin = r.strategy.origin();
                OutRow {
                    plan: r,
                    origin,
                    generator: (origin == Origin::Generated)
                        .then_some(self.gen_name.as_deref())
                        .flatten(),
                    seed: Some(if r.op.as_deref() == Some("erase") {
                        r.op_seed.unwrap_or(self.run_seed)
                    } else {
                        self.run_seed
                    }),
                    agreement: *a,
                    png,
                }
            })
            .collect())
    }

    /// The image of every row of `chunk`.
    fn images(&self, chunk: &[&PlanRow]) -> Result<Vec<RgbImage>> {
        let gen_idx: Vec<usize> = (0..chunk.len())
            .filter(|&i| chunk[i].strategy.origin() == Origin::Generated)
            .collect();
        let mut imgs: Vec<Option<RgbImage>> = chunk
            .par_iter()
            .map(|r| -> Result<Option<RgbImage>> {
                if r.strategy.origin() == Origin::Generated {
                    return Ok(None);
                }
                Ok(Some(classic_image(r, &self.source_image(r)?)?))
            })
            .collect::<Result<_>>()?;
        if let Some(g) = &self.generator
            && !gen_idx.is_empty()
        {
            let targets: Vec<Labels> = gen_idx.iter().map(|&i| chunk[i].labels).collect();
            let sources: Vec<(Labels, RgbImage)> = match g.g.edits_sources() {
                true => gen_idx
                    .par_iter()
                    .map(|&i| {
                        let r = chunk[i];
                        Ok((self.faces.labels[&r.source], self.source_image(r)?))
                    })
                    .collect::<Result<_>>()?,
                false => Vec::new(),
            };
            let refs: Vec<Option<RgbImage>> = gen_idx
                .par_iter()
                .map(|&i| match &chunk[i].reference {
                    Some(id) => Ok(Some(
                        decode_rgb(&self.faces.png[id]).map_err(|e| data_error!("{e}"))?,
                    )),
                    None => Ok(None),
                })
                .collect::<Result<_>>()?;
            let ids: Vec<i64> = gen_idx.iter().map(|&i| chunk[i].sample_id).collect();
            let rows = generators::Batch {
                targets: &targets,
                sources: &sources,
                refs: &refs,
                ids: &ids,
            };
            let drawn = generators::draw_all(g.g.as_ref(), &rows, self.c.batch_size, &self.dev)?;
            let finished: Vec<RgbImage> = drawn
                .into_par_iter()
                .enumerate()
                .map(|(k, img)| {
                    g.g.put_back(
                        resize_square(img, self.face_size),
                        sources.get(k).map(|s| &s.1),
                    )
                })
                .collect();
            for (&i, img) in gen_idx.iter().zip(finished) {
                imgs[i] = Some(img);
            }
        }
        Ok(imgs
            .into_iter()
            .map(|i| i.expect("every row drawn"))
            .collect())
    }

    /// Faces `rows` at the generator's size, as a tensor, with their labels.
    fn source_faces(
        &self,
        g: &Loaded,
        rows: &[&PlanRow],
    ) -> Result<(candle_core::Tensor, Vec<Labels>)> {
        let imgs: Vec<RgbImage> = rows
            .iter()
            .map(|r| Ok(resize_square(self.source_image(r)?, g.g.image_size())))
            .collect::<Result<_>>()?;
        let labels = rows.iter().map(|r| self.faces.labels[&r.source]).collect();
        Ok((images_tensor(&imgs, &self.dev)?, labels))
    }

    /// A generator that takes references (BridgeGAN, App. Figs. 11–12): the
    /// first `grid_rows` real faces along the top, each edited by the next
    /// `grid_rows` real faces as references.
    fn reference_grid(&self, originals: &[&PlanRow]) -> Result<Option<RgbImage>> {
        let Some(g) = self.generator.as_ref().filter(|g| g.g.uses_references()) else {
            return Ok(None);
        };
        let k = self.c.grid_rows.min(originals.len() / 2);
        if k == 0 {
            return Ok(None);
        }
        let (x, labels) = self.source_faces(g, &originals[..k])?;
        let (refs, ref_labels) = self.source_faces(g, &originals[k..2 * k])?;
        g.g.reference_grid((&x, &labels), (&refs, &ref_labels))
    }

    /// `grid.png` and `reference_grid.png` (when there is something to show).
    fn write_grids(&self, out: &std::path::Path, originals: &[&PlanRow]) -> Result<Vec<String>> {
        let mut files = Vec::new();
        if let Some(grid) = self.sample_grid(originals)? {
            grid.save(out.join("grid.png"))?;
            files.push("grid.png".to_string());
        }
        if let Some(grid) = self.reference_grid(originals)? {
            grid.save(out.join("reference_grid.png"))?;
            files.push("reference_grid.png".to_string());
        }
        Ok(files)
    }

    /// The sample grid of the generator on the first `grid_rows` real faces
    /// (a translator's value grid, or Fig. 6 for attr2face).
    fn sample_grid(&self, originals: &[&PlanRow]) -> Result<Option<RgbImage>> {
        let Some(g) = &self.generator else {
            return Ok(None);
        };
        if self.c.grid_rows == 0 || originals.is_empty() {
            return Ok(None);
        }
        let sources: Vec<&PlanRow> = originals.iter().copied().take(self.c.grid_rows).collect();
        let grid = match g.g.edits_sources() {
            true => {
                let (x, labels) = self.source_faces(g, &sources)?;
                g.g.source_grid(&x, &labels)?
            }
            false => None,
        };
        let grid = match grid {
            Some(grid) => grid,
            None => fig6_grid(g, &sources, &self.faces.png, self.face_size, &self.dev)?,
        };
        Ok(Some(grid))
    }
}

/// Fig. 6: per source face, the real image, the image drawn for its labels,
/// and for flips of smiling, hair colour (black ↔ blond), pale skin, male, young.
fn fig6_grid(
    g: &Loaded,
    sources: &[&PlanRow],
    face_png: &HashMap<String, Vec<u8>>,
    size: usize,
    dev: &Device,
) -> Result<RgbImage> {
    let idx = |n: &str| attribute_index(n).expect("known attribute");
    let flip = |l: Labels, n: &str| l ^ (1u64 << idx(n));
    let hair = |l: Labels| {
        let black = 1u64 << idx("Black_Hair");
        let blond = 1u64 << idx("Blond_Hair");
        let others = (1u64 << idx("Brown_Hair")) | (1u64 << idx("Gray_Hair"));
        let l = l & !others;
        if l & black != 0 {
            (l & !black) | blond
        } else {
            (l & !blond) | black
        }
    };
    let mut labels = Vec::new();
    for s in sources {
        let l = s.labels;
        labels.extend([
            l,
            flip(l, "Smiling"),
            hair(l),
            flip(l, "Pale_Skin"),
            flip(l, "Male"),
            flip(l, "Young"),
        ]);
    }
    let rows = generators::Batch {
        targets: &labels,
        sources: &[],
        refs: &[],
        ids: &[],
    };
    let drawn = generators::draw_all(g.g.as_ref(), &rows, 64, dev)?;
    let mut cells = Vec::new();
    for (k, s) in sources.iter().enumerate() {
        let real = decode_rgb(&face_png[&s.source]).map_err(|e| data_error!("{e}"))?;
        cells.push(resize_square(real, size));
        for img in &drawn[k * 6..(k + 1) * 6] {
            cells.push(resize_square(img.clone(), size));
        }
    }
    Ok(crate::data::tensors::grid(&cells, 7))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(sample_id: i64, source: &str, reference: Option<&str>) -> PlanRow {
        PlanRow {
            sample_id,
            source: source.into(),
            strategy: PlanStrategy::Reference,
            op: None,
            op_box: [0; 4],
            op_seed: None,
            labels: 1,
            reference: reference.map(String::from),
        }
    }

    #[test]
    fn reference_rows_need_their_face_and_a_bridgegan_generator() {
        let ids = ["a.jpg", "b.jpg"];
        let faces = FacesById {
            png: ids.iter().map(|i| (i.to_string(), Vec::new())).collect(),
            labels: ids.iter().map(|i| (i.to_string(), 0)).collect(),
        };
        let path = Path::new("run/ingest/faces.parquet");
        let mut plan = vec![row(0, "a.jpg", None), row(17, "a.jpg", Some("c.jpg"))];
        let e = check_plan(&plan, path, &faces, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("reference_image_id c.jpg is not in the ingest faces"),
            "{e}"
        );
        plan[1].reference = Some("b.jpg".into());
        let e = check_plan(&plan, path, &faces, None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "plan row 17 has a reference image; only model = \"bridgegan\" uses references"
        );
        plan[1].reference = None;
        check_plan(&plan, path, &faces, None).unwrap();
    }
}
