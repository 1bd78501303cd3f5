//! `edit_protocol = "reversal"` (SeCGAN, seed 003, Sec. 4.4 and App. A.3):
//! every test face edited by each translation generator input with each of
//! its attributes reversed, one at a time.
//!
//! Per attribute (edit group) and as the mean over groups (Fig. 4, Table 1):
//! - `editing_accuracy`: the judge (the first `train_classifier` input trained
//!   on real faces only) assigns the reversed attribute its new value;
//! - `fid_edit` / `fid_edit_mean`: FID of the group's edits against the real
//!   test faces, then averaged over groups. This is ssFID's protocol on our
//!   Inception pool3 features: ssFID needs SwAV weights [23], which are not
//!   available, so it is named apart. `kid_edit` / `kid_edit_mean` beside it;
//! - `background_l1`: with a `parse_faces` input, the mean absolute
//!   difference (pixel values in [0, 1]) between the source face and its edit
//!   over the source mask's `others` pixels.
//!
//! The Inception Score cannot be computed: our Inception file holds only the
//! pool3 features, not the 1008-way head; `details` say so and no row is
//! labelled IS.

use std::collections::HashMap;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use image::RgbImage;

use super::{Config, Judge, Rows, features};
use crate::data::face_parsing as fp;
use crate::data::parquet::read_columns;
use crate::data::schema::attribute_column;
use crate::data::tensors::{
    FaceSet, image_bytes, images_tensor, resize_square, strings, tensor_to_rgb,
};
use crate::data_error;
use crate::metrics::{fid, inception::FidInception};
use crate::models::editor::Editor;
use crate::models::translator::Translator;
use crate::stages::InputStage;
use crate::train::model_file::Networks;

const NO_IS: &str = "not computable: the Inception file holds only the pool3 features, not the 1008-way head the Inception Score needs";
const NO_SSFID: &str = "not ssFID: ssFID uses SwAV features, which are not available; this is the same per-group average over Inception pool3 features";

/// What the protocol measures beside the generator.
pub(super) struct Setting<'a> {
    pub ingest: &'a InputStage,
    pub judge: Option<&'a Judge>,
    /// The parse_faces input whose `masks` give the background.
    pub parser: Option<&'a InputStage>,
    pub weights: Option<&'a std::path::Path>,
    pub seed: u64,
    pub dev: &'a Device,
}

/// Runs the protocol for generator stage `g` (skipped, with a line, when it
/// is not a translation generator).
pub(super) fn reversal(out: &mut Rows, c: &Config, g: &InputStage, cx: &Setting) -> Result<()> {
    let io = out.io;
    let model = g.model_file()?;
    let Networks::Translation {
        translator,
        attributes,
        ..
    } = &model.networks
    else {
        io.say(format!(
            "`{}` is not a translation generator: no reversal protocol",
            g.name
        ));
        return Ok(());
    };
    let dev = cx.dev;
    let attrs: Vec<usize> = attributes
        .iter()
        .map(|n| {
            crate::data::schema::attribute_by_any_name(n)
                .ok_or_else(|| data_error!("{}/model.json: unknown attribute `{n}`", g.name))
        })
        .collect::<Result<_>>()?;
    let gt = candle_core::safetensors::load(g.dir.join("generator.safetensors"), dev)
        .with_context(|| format!("reading {}", g.dir.join("generator.safetensors").display()))?;
    let net = Translator::new(
        translator,
        candle_nn::VarBuilder::from_tensors(gt, DType::F32, dev),
    )?;
    let ed = Editor {
        g: &net,
        kind: translator.kind,
        attrs: &attrs,
    };
    let size = translator.image_size;
    let faces = FaceSet::load(&cx.ingest.table("faces")?, &["test"], c.edit_faces, size)?;
    if faces.is_empty() {
        return Err(data_error!(
            "stage `{}`: edit_protocol = \"reversal\" needs test faces; `{}` has none",
            io.name,
            cx.ingest.name
        ));
    }
    let backgrounds = match cx.parser {
        Some(p) => Some(backgrounds(p, &faces)?),
        None => None,
    };
    let inception = match cx.weights {
        Some(w) => Some(FidInception::load(w, dev)?),
        None => None,
    };
    let real = match &inception {
        Some(net) => {
            let imgs: Vec<Vec<u8>> = (0..faces.len())
                .map(|i| png(&faces.rgb(i)))
                .collect::<Result<_>>()?;
            let f = features(io, net, &imgs, c.batch_size, dev)?;
            let (m, s) = fid::statistics(&f)?;
            Some((f, m, s))
        }
        None => None,
    };
    io.say(format!(
        "reversal protocol: {} test faces × {} attributes through `{}`",
        faces.len(),
        attrs.len(),
        g.name
    ));
    let judge_attrs: HashMap<usize, usize> = cx
        .judge
        .map(|j| {
            j.saved
                .attributes
                .iter()
                .enumerate()
                .map(|(k, &a)| (a, k))
                .collect()
        })
        .unwrap_or_default();
    let judge_size = cx.judge.map(|j| match &j.saved.network {
        crate::train::classifier::NetConfig::PaperCnn(c) => c.image_size,
        crate::train::classifier::NetConfig::ResNet18(c) => c.image_size,
    });
    let idx: Vec<usize> = (0..faces.len()).collect();
    let (mut acc, mut fids, mut kids, mut bgs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let pb = io.progress((attrs.len() * faces.len()) as u64, "edits");
    for &a in &attrs {
        let col = attribute_column(a);
        let mut edits: Vec<RgbImage> = Vec::with_capacity(faces.len());
        let (mut hit, mut n) = (0usize, 0usize);
        let (mut bg_sum, mut bg_n) = (0.0f64, 0usize);
        for chunk in idx.chunks(32) {
            let x = faces.images(chunk, dev)?;
            let src: Vec<u64> = chunk.iter().map(|&i| faces.labels[i]).collect();
            let trg: Vec<u64> = src.iter().map(|l| l ^ (1 << a)).collect();
            let y = tensor_to_rgb(&ed.edit(&x, &src, &trg)?)?;
            if let (Some(j), Some(&k), Some(js)) = (cx.judge, judge_attrs.get(&a), judge_size) {
                let imgs: Vec<RgbImage> =
                    y.iter().map(|im| resize_square(im.clone(), js)).collect();
                let p = crate::train::classifier::SavedClassifier::probabilities(
                    &j.net,
                    &images_tensor(&imgs, dev)?,
                )?;
                for (r, t) in p.iter().zip(&trg) {
                    hit += usize::from((r[k] > 0.5) == ((t >> a) & 1 == 1));
                    n += 1;
                }
            }
            if let Some(bg) = &backgrounds {
                for (k, &i) in chunk.iter().enumerate() {
                    if let Some(mask) = bg.get(&faces.image_ids[i]) {
                        let s = faces.rgb(i);
                        let (sum, cnt) = masked_l1(&s, &y[k], mask);
                        if cnt > 0 {
                            bg_sum += sum / cnt as f64;
                            bg_n += 1;
                        }
                    }
                }
            }
            pb.inc(chunk.len() as u64);
            edits.extend(y);
        }
        let details =
            serde_json::json!({"protocol": "reversal", "generator": g.name, "faces": faces.len()});
        if n > 0 {
            let v = hit as f64 / n as f64;
            let mut d = details.clone();
            d["judge"] = cx.judge.map(|j| j.name.clone()).into();
            out.push_attr(&g.name, "editing_accuracy", Some(col.clone()), v, n, d);
            acc.push((v, n));
        }
        if bg_n > 0 {
            let v = bg_sum / bg_n as f64;
            out.push_attr(
                &g.name,
                "background_l1",
                Some(col.clone()),
                v,
                bg_n,
                details.clone(),
            );
            bgs.push((v, bg_n));
        }
        if let (Some(net), Some((rf, m2, s2))) = (&inception, &real) {
            let encoded: Vec<Vec<u8>> = edits.iter().map(png).collect::<Result<_>>()?;
            let f = features(io, net, &encoded, c.batch_size, dev)?;
            if f.len() >= 2 {
                let (m1, s1) = fid::statistics(&f)?;
                let v = fid::frechet_distance(&m1, &s1, m2, s2)?;
                let n = f.len().min(rf.len());
                out.push_attr(
                    &g.name,
                    "fid_edit",
                    Some(col.clone()),
                    v,
                    n,
                    details.clone(),
                );
                fids.push((v, n));
                if c.kid {
                    let (k, _) = fid::kid(&f, rf, c.kid_subsets, c.kid_subset_size.min(n), cx.seed);
                    out.push_attr(
                        &g.name,
                        "kid_edit",
                        Some(col.clone()),
                        k,
                        n,
                        details.clone(),
                    );
                    kids.push((k, n));
                }
            }
        }
    }
    pb.finish_and_clear();
    let mean = |v: &[(f64, usize)]| v.iter().map(|x| x.0).sum::<f64>() / v.len().max(1) as f64;
    let total = |v: &[(f64, usize)]| v.iter().map(|x| x.1).sum::<usize>();
    let details = serde_json::json!({
        "protocol": "reversal",
        "generator": g.name,
        "faces": faces.len(),
        "groups": attrs.len(),
        "mean": "unweighted over the edit groups",
        "inception_score": NO_IS,
    });
    let mut said = Vec::new();
    if !acc.is_empty() {
        let mut d = details.clone();
        d["judge"] = cx.judge.map(|j| j.name.clone()).into();
        out.push(&g.name, "editing_accuracy", mean(&acc), total(&acc), d);
        said.push(format!("editing accuracy {:.4}", mean(&acc)));
    } else {
        io.say("reversal protocol: no train_classifier input trained on real faces (or none predicting these attributes): no editing accuracy");
    }
    if !fids.is_empty() {
        let mut d = details.clone();
        d["features"] = NO_SSFID.into();
        out.push(
            &g.name,
            "fid_edit_mean",
            mean(&fids),
            total(&fids),
            d.clone(),
        );
        said.push(format!("fid_edit_mean {:.3}", mean(&fids)));
        if !kids.is_empty() {
            out.push(&g.name, "kid_edit_mean", mean(&kids), total(&kids), d);
        }
    }
    if !bgs.is_empty() {
        let mut d = details.clone();
        d["pixels"] = "the source mask's `others` class; values in [0, 1]".into();
        out.push(&g.name, "background_l1", mean(&bgs), total(&bgs), d);
        said.push(format!("background L1 {:.4}", mean(&bgs)));
    }
    io.say(format!(
        "`{}` (reversal, {} faces): {}",
        g.name,
        faces.len(),
        said.join(", ")
    ));
    Ok(())
}

fn png(img: &RgbImage) -> Result<Vec<u8>> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)?;
    Ok(out.into_inner())
}

/// Per test face, the `others` pixels of its parsed mask at the faces' size.
fn backgrounds(p: &InputStage, faces: &FaceSet) -> Result<HashMap<String, Vec<bool>>> {
    let file = p.dir.join("model.json");
    let pf: crate::train::parser::ParserFile = serde_json::from_str(
        &std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?,
    )
    .map_err(|e| {
        data_error!(
            "{}: {e}; rerun the parse_faces stage `{}`",
            file.display(),
            p.name
        )
    })?;
    let others = pf.class_set.others();
    let max_id = pf.classes.len().saturating_sub(1).min(255) as u8;
    let wanted: std::collections::HashSet<&str> =
        faces.image_ids.iter().map(String::as_str).collect();
    let mut out = HashMap::new();
    for b in read_columns(&p.table("masks")?, &["image_id", "mask"])? {
        let ids = strings(&b, 0)?;
        for r in 0..b.num_rows() {
            let id = ids.value(r);
            if !wanted.contains(id) {
                continue;
            }
            let bytes = image_bytes(b.column(1).as_ref(), r)
                .ok_or_else(|| data_error!("{}.masks: face {id} has no mask", p.name))?;
            let m = fp::decode_mask(bytes, &format!("{}.masks row {id}", p.name), max_id)?;
            if m.w != m.h {
                return Err(data_error!(
                    "{}.masks: face {id}: mask is {}x{}, not square",
                    p.name,
                    m.w,
                    m.h
                ));
            }
            let l = fp::resize_labels(&m.ids, m.w, faces.size);
            out.insert(id.to_string(), l.iter().map(|&c| c == others).collect());
        }
    }
    Ok(out)
}

/// Σ |a − b| / 255 over the channels of the pixels where `mask` is set, and
/// the number of values summed.
fn masked_l1(a: &RgbImage, b: &RgbImage, mask: &[bool]) -> (f64, usize) {
    let (mut s, mut n) = (0.0, 0);
    for ((pa, pb), &m) in a.pixels().zip(b.pixels()).zip(mask) {
        if m {
            for c in 0..3 {
                s += (f64::from(pa[c]) - f64::from(pb[c])).abs() / 255.0;
            }
            n += 3;
        }
    }
    (s, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_l1_counts_only_masked_pixels() {
        let a = RgbImage::from_pixel(2, 1, image::Rgb([0, 0, 0]));
        let mut b = a.clone();
        b.put_pixel(0, 0, image::Rgb([255, 51, 0]));
        b.put_pixel(1, 0, image::Rgb([255, 255, 255]));
        let (s, n) = masked_l1(&a, &b, &[true, false]);
        assert_eq!(n, 3);
        assert!((s - 1.2).abs() < 1e-12, "{s}");
    }
}
