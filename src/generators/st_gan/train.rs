//! `model = "st_gan"` (Zhang et al., "ST-GAN"): trains G, D + Q and E without
//! labels in phase `st_gan` (`crate::train::st_gan`), then, when a
//! `train_classifier` stage trained on real faces is among the inputs, maps
//! the latent codes to attributes with it as the judge
//! (`crate::train::latent_map`).
//!
//! Outputs: `generator.safetensors` (G), `encoder.safetensors` (E),
//! `critic.safetensors` (D + Q), `model.json` (variant, sizes, latent layout,
//! sha256s), `train_log`, `latent_map` and `attribute_map` (with a judge),
//! `traversal_c1.png` / `traversal_c2.png` (Fig. 5–7: per row one prior
//! draw, per column a code setting), `prior_samples.png`, and
//! `samples/st_gan_<step>.png` (per face: original, G(E(x)), then every c₁ value).

use std::sync::Arc;

use anyhow::Result;
use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use candle_core::{Device, ModuleT, Tensor};
use sha2::{Digest, Sha256};

use crate::contract::tables;
use crate::contract::write_train_log as write_log;
use crate::contract::{Lineage, StageIo, StageKind, StageOutput, Table};
use crate::data::celeba::Partition;
use crate::data::parquet::TableWriter;
use crate::data::schema;
use crate::data::tensors::{images_tensor, resize_square, tensor_to_rgb};
use crate::data_error;
use crate::generators::files;
use crate::generators::options::{Config, Preset};
use crate::generators::training::{copy_resume_folder, load_faces, phase_env, save_generator};
use crate::train::classifier::SavedClassifier;
use crate::train::latent_map::{AttributeRow, LatentRow, map_latents, setting_name};
use crate::train::st_gan::{self, Nets, prior_grid, traversal_grid};

/// The judge of the attribute map: a `train_classifier` input trained on real faces.
struct Judge {
    name: String,
    saved: SavedClassifier,
    net: crate::train::classifier::Net,
}

pub fn run(c: &Config, io: &StageIo) -> Result<StageOutput> {
    let tiny = c.preset() == Preset::Tiny;
    let o: super::Options = c.options()?;
    let opts = &o.st_gan;
    let cfg = opts.network(tiny);
    let batch = opts.batch(tiny);
    let dev = io.candle_device()?;
    let judge = load_judge(io, &dev)?;
    let (faces, train) = load_faces(c, io, cfg.image_size, 1)?;
    let val = faces.rows_in(Partition::Val);
    say_setup(c, opts, io, &cfg, train.len(), batch);
    let data = st_gan::TrainSet {
        faces: &faces,
        train,
        val: val.clone(),
    };
    let env = phase_env(c, io);
    let seed = c.seed.unwrap_or(io.run_seed);
    let trained = st_gan::train(&cfg, opts, batch, seed, &data, &dev, &env)?;
    say_trained(io, &cfg, &trained.summary);

    let (sha, mut files) = save_networks(c, opts, io, &cfg, &trained)?;
    let nets = Nets::from_tensors(
        &cfg,
        &trained.generator,
        &trained.critic,
        &trained.encoder,
        &dev,
    )?;
    files.extend(write_grids(io, &cfg, &nets, seed + 46, &dev)?);
    files.extend(copy_resume_folder(io)?);
    let log_rows = write_log(&io.out_dir.join(tables::TRAIN_LOG.file), &trained.log)?;
    let mut tables = vec![Table::of(tables::TRAIN_LOG, log_rows)];
    let mut summary = trained.summary;
    summary["generator_sha256"] = sha.into();
    if let Some(judge) = &judge {
        let rows: Vec<usize> = if val.is_empty() {
            data.train.clone()
        } else {
            val
        };
        let rows: Vec<usize> = rows.into_iter().take(opts.map.samples).collect();
        let (map_tables, usable) =
            attribute_map(io, opts, &cfg, &nets, judge, (&faces, &rows), &dev)?;
        tables.extend(map_tables);
        summary["usable_attributes"] = usable.into();
        summary["judge"] = judge.name.clone().into();
    } else {
        io.say("no train_classifier input: no attribute map (synthesize needs one to edit faces)");
    }
    Ok(StageOutput {
        tables,
        files,
        summary,
        lineage: Lineage::default(),
    })
}

/// The optional `train_classifier` input, which must hold a classifier trained on real faces.
fn load_judge(io: &StageIo, dev: &Device) -> Result<Option<Judge>> {
    let Some(s) = io.optional_input(StageKind::TrainClassifier) else {
        return Ok(None);
    };
    let (saved, net) = SavedClassifier::load(&s.dir, dev)?.ok_or_else(|| {
        data_error!(
            "input `{}` saved no classifier (classifier.json); st_gan's attribute map needs a paper_cnn or resnet18 classifier",
            s.name
        )
    })?;
    if !saved.trained_on_real {
        return Err(data_error!(
            "input `{}` was trained on augmented data; st_gan's attribute map needs a train_classifier stage trained on real faces only",
            s.name
        ));
    }
    Ok(Some(Judge {
        name: s.name.clone(),
        saved,
        net,
    }))
}

fn say_setup(
    c: &Config,
    opts: &st_gan::Options,
    io: &StageIo,
    cfg: &crate::models::st_gan::Config,
    train: usize,
    batch: usize,
) {
    io.say(format!(
        "st_gan ({}) `{}` on {train} train faces (labels unused), c₁ {} values, c₂ {} dims, z {}, preset {}, {} steps of {} critic updates at batch {batch}, device {}",
        opts.variant,
        io.name,
        cfg.categorical,
        cfg.continuous,
        cfg.z_dim,
        c.preset().name(),
        opts.steps,
        opts.n_critic,
        io.device
    ));
}

/// One line of what training reached, from its summary.
fn say_trained(io: &StageIo, cfg: &crate::models::st_gan::Config, summary: &serde_json::Value) {
    let f = |k: &str| summary[k].as_f64().unwrap_or(f64::NAN);
    io.say(format!(
        "MI lower bound {:.3} → {:.3} nats (ln K = {:.3}); Q's c₁ accuracy {:.3} → {:.3}; val reconstruction PSNR {:.2} → {:.2} dB, MS-SSIM {:.4} → {:.4}",
        f("mi_lower_bound_init"),
        f("mi_lower_bound"),
        (cfg.categorical.max(1) as f64).ln(),
        f("q_c1_accuracy_init"),
        f("q_c1_accuracy"),
        f("reconstruction_psnr_init"),
        f("reconstruction_psnr"),
        f("reconstruction_ms_ssim_init"),
        f("reconstruction_ms_ssim"),
    ));
}

/// `encoder.safetensors`, then G, D + Q and `model.json`; returns G's
/// sha256 and the files written.
fn save_networks(
    c: &Config,
    opts: &st_gan::Options,
    io: &StageIo,
    cfg: &crate::models::st_gan::Config,
    trained: &st_gan::Trained,
) -> Result<(String, Vec<String>)> {
    let enc_path = io.out_dir.join(files::ENCODER);
    candle_core::safetensors::save(&trained.encoder, &enc_path)?;
    let encoder_sha256 = hex::encode(Sha256::digest(std::fs::read(&enc_path)?));
    let (sha, mut files) = save_generator(
        c,
        io,
        &trained.generator,
        (files::CRITIC, &trained.critic),
        &super::Layout {
            st_gan: cfg.clone(),
            variant: opts.variant.clone(),
            mask: opts.mask_box().map_err(|e| data_error!("{e}"))?,
            blend: opts.blend(),
            encoder_sha256,
        },
    )?;
    files.push(files::ENCODER.into());
    Ok((sha, files))
}

/// `prior_samples.png` and the c₁ / c₂ traversals (Fig. 5–7).
fn write_grids(
    io: &StageIo,
    cfg: &crate::models::st_gan::Config,
    nets: &Nets,
    grid_seed: u64,
    dev: &Device,
) -> Result<Vec<String>> {
    let out = &io.out_dir;
    let mut files = Vec::new();
    prior_grid(cfg, nets, 8, 8, grid_seed, dev)?.save(out.join("prior_samples.png"))?;
    files.push("prior_samples.png".into());
    if cfg.categorical > 0 {
        traversal_grid(cfg, nets, true, 8, grid_seed, dev)?.save(out.join("traversal_c1.png"))?;
        files.push("traversal_c1.png".into());
    }
    if cfg.continuous > 0 {
        traversal_grid(cfg, nets, false, 8, grid_seed, dev)?.save(out.join("traversal_c2.png"))?;
        files.push("traversal_c2.png".into());
    }
    Ok(files)
}

/// The `latent_map` and `attribute_map` tables: the judge's rates under
/// each code setting of the encoded `rows`; returns the usable attributes.
fn attribute_map(
    io: &StageIo,
    opts: &st_gan::Options,
    cfg: &crate::models::st_gan::Config,
    nets: &Nets,
    judge: &Judge,
    (faces, rows): (&crate::data::tensors::FaceSet, &[usize]),
    dev: &Device,
) -> Result<(Vec<Table>, Vec<&'static str>)> {
    let out = &io.out_dir;
    let mut tables = Vec::new();
    io.say(format!(
        "attribute map: {} faces encoded, judged by `{}` on {} attributes",
        rows.len(),
        judge.name,
        judge.saved.attributes.len()
    ));
    let latents = nets.e.encode(&faces.images(rows, dev)?, false)?.latent()?;
    let judge_size = judge.saved.network.image_size();
    let judge_fn = |x: &Tensor| -> Result<Vec<Vec<f64>>> {
        let x = resized(x, judge_size, dev)?;
        let mut out = Vec::new();
        for k in (0..x.dim(0)?).step_by(128) {
            let n = 128.min(x.dim(0)? - k);
            out.extend(SavedClassifier::probabilities(
                &judge.net,
                &x.narrow(0, k, n)?,
            )?);
        }
        Ok(out)
    };
    let decode = |l: &Tensor| -> Result<Tensor> { Ok(nets.g.forward_t(l, false)?) };
    let (lrows, arows) = map_latents(
        cfg,
        &latents,
        decode,
        judge_fn,
        &judge.saved.attributes,
        &opts.map,
    )?;
    let n = write_latent_map(&out.join(tables::LATENT_MAP.file), &lrows)?;
    tables.push(Table::of(tables::LATENT_MAP, n));
    let n = write_attribute_map(&out.join(files::ATTRIBUTE_MAP), &arows)?;
    tables.push(Table::of(tables::ATTRIBUTE_MAP, n));
    let usable: Vec<&str> = arows
        .iter()
        .filter(|r| r.usable)
        .map(|r| schema::ATTRIBUTES[r.attribute])
        .collect();
    io.say(format!(
        "attribute map: {} of {} attributes usable (on − off rate ≥ {}): {}",
        usable.len(),
        arows.len(),
        opts.map.min_effect,
        if usable.is_empty() {
            "none".to_string()
        } else {
            usable.join(", ")
        }
    ));
    Ok((tables, usable))
}

/// `x` (B, 3, s, s) at `size`×`size` (bilinear through RGB when it differs).
fn resized(x: &Tensor, size: usize, dev: &Device) -> Result<Tensor> {
    if x.dim(2)? == size {
        return Ok(x.clone());
    }
    let imgs: Vec<_> = tensor_to_rgb(x)?
        .into_iter()
        .map(|i| resize_square(i, size))
        .collect();
    images_tensor(&imgs, dev)
}

fn write_latent_map(path: &std::path::Path, rows: &[LatentRow]) -> Result<usize> {
    let schema = schema::latent_map();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.unit.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| schema::ATTRIBUTES[r.attribute]),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.mean_probability),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.change),
        )),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.correlation))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.slope))),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.n as i64),
        )),
    ];
    let batch = RecordBatch::try_new(schema.clone(), cols)?;
    let mut w = TableWriter::create(path, schema, &[], 1 << 16)?;
    w.write(&batch)?;
    w.finish()
}

fn write_attribute_map(path: &std::path::Path, rows: &[AttributeRow]) -> Result<usize> {
    let schema = schema::attribute_map();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| schema::ATTRIBUTES[r.attribute]),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| setting_name(&r.on)),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| setting_name(&r.off)),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.on_rate),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.off_rate),
        )),
        Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.usable)))),
    ];
    let batch = RecordBatch::try_new(schema.clone(), cols)?;
    let mut w = TableWriter::create(path, schema, &[], 1 << 16)?;
    w.write(&batch)?;
    w.finish()
}
