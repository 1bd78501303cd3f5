//! Training sggan and stargan (Zhang et al., SG-GAN; Choi et al., StarGAN):
//! image = G(source, target labels), trained with WGAN-GP in one phase
//! (`crate::train::translation`) on the attributes of
//! `translation.attributes`. Writes `generator.safetensors` (G),
//! `critic.safetensors` (D, whose classification head gives `synthesize`
//! its `label_agreement`), `model.json` (kind, sizes, attributes), and for
//! SG-GAN the `labelled` table: which (image, attribute) pairs kept their
//! label under sparse grouping.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use arrow::array::{ArrayRef, StringArray};
use arrow::record_batch::RecordBatch;

use crate::contract::tables;
use crate::contract::{Lineage, StageIo, StageOutput, Table, write_train_log};
use crate::data::celeba::Partition;
use crate::data::parquet::TableWriter;
use crate::data::schema;
use crate::data::tensors::FaceSet;
use crate::data_error;
use crate::generators::files;
use crate::generators::options::{Config, Preset};
use crate::generators::training::{copy_resume_folder, load_faces, phase_env, save_generator};
use crate::models::translator::{self, Kind};
use crate::train::translation;

use super::{Layout, Options};

/// `model = "sggan" | "stargan"`.
pub fn run(c: &Config, io: &StageIo) -> Result<StageOutput> {
    let o: Options = c.options()?;
    let kind = super::kind(c.model);
    let attrs = o.attributes(c.model).map_err(|e| data_error!("{e}"))?;
    let nets = translator::presets(kind, c.preset() == Preset::Tiny, attrs.len());
    let size = nets.0.image_size;
    let dev = io.candle_device()?;
    let (faces, train) = load_faces(c, io, size, 1)?;
    let names: Vec<&str> = attrs.iter().map(|&a| schema::ATTRIBUTES[a]).collect();
    let steps = o.translation.steps(kind);
    io.say(format!(
        "{} `{}` on {} train / {} val faces, attributes {}, preset {}, {steps} steps, device {}",
        c.model.name(),
        io.name,
        train.len(),
        faces.rows_in(Partition::Val).len(),
        names.join(", "),
        c.preset().name(),
        io.device
    ));
    let data = translation::TrainSet {
        faces: &faces,
        train: train.clone(),
        val: faces.rows_in(Partition::Val),
    };
    let env = phase_env(c, io);
    let seed = c.seed.unwrap_or(io.run_seed);
    let spec = translation::Spec {
        kind,
        nets: nets.clone(),
        attrs: attrs.clone(),
        opts: o.translation.clone(),
        batch: o.batch_size,
        seed,
    };
    let trained = translation::train(&spec, &data, &dev, &env)?;
    let f = |k: &str| trained.summary[k].as_f64().unwrap_or(f64::NAN);
    io.say(format!(
        "val: critic's Wasserstein estimate {:.4} → {:.4}; its classification loss on real faces \
         {:.4} → {:.4}; G classification loss {:.4} → {:.4}; L1(G(x, source labels), x) {:.4} → {:.4}",
        f("wasserstein_init"),
        f("wasserstein"),
        f("critic_cls_init"),
        f("critic_cls"),
        f("g_cls_init"),
        f("g_cls"),
        f("rec_l1_init"),
        f("rec_l1")
    ));

    let out = &io.out_dir;
    let (sha, mut files) = save_generator(
        c,
        io,
        &trained.generator,
        (files::CRITIC, &trained.critic),
        &Layout {
            translator: nets.0,
            critic: nets.1,
            attributes: names.iter().map(|n| n.to_string()).collect(),
        },
    )?;
    files.extend(copy_resume_folder(io)?);
    let log_rows = write_train_log(&out.join(tables::TRAIN_LOG.file), &trained.log)?;
    let mut tables = vec![Table::of(tables::TRAIN_LOG, log_rows)];
    if kind == Kind::Sggan {
        let n = write_labelled(
            &out.join(tables::LABELLED.file),
            &faces,
            &train,
            &attrs,
            &trained.labelled,
        )?;
        tables.push(Table::of(tables::LABELLED, n));
    }
    let mut summary = trained.summary;
    summary["generator_sha256"] = sha.into();
    summary["attributes"] = names.into();
    Ok(StageOutput {
        tables,
        files,
        summary,
        lineage: Lineage::default(),
    })
}

/// The (image, attribute) pairs SG-GAN trained with their label.
fn write_labelled(
    path: &Path,
    faces: &FaceSet,
    train: &[usize],
    attrs: &[usize],
    mask: &[u64],
) -> Result<usize> {
    let (mut ids, mut names, mut values) = (Vec::new(), Vec::new(), Vec::new());
    for (k, &i) in train.iter().enumerate() {
        for (j, &a) in attrs.iter().enumerate() {
            if mask[k] >> j & 1 == 1 {
                ids.push(faces.image_ids[i].as_str());
                names.push(schema::ATTRIBUTES[a]);
                values.push((faces.labels[i] >> a) & 1 == 1);
            }
        }
    }
    let schema = schema::labelled();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(ids)),
        Arc::new(StringArray::from_iter_values(names)),
        Arc::new(arrow::array::BooleanArray::from(values)),
    ];
    let batch = RecordBatch::try_new(schema.clone(), cols)?;
    let mut w = TableWriter::create(path, schema, &[], 1 << 16)?;
    w.write(&batch)?;
    w.finish()
}
