//! `edit_protocol = "reversal"` (Sun et al., "SeCGAN", Sec. 4.4 and App. A.3):
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
use candle_core::Device;
use image::RgbImage;

use super::{Config, Judge, Rows, features};
use crate::contract::tables;
use crate::data::celeba::Partition;
use crate::data::face_parsing as fp;
use crate::data::parquet::read_columns;
use crate::data::schema::attribute_column;
use crate::data::tensors::{
    FaceSet, image_bytes, images_tensor, resize_square, strings, tensor_to_rgb,
};
use crate::data_error;
use crate::generators;
use crate::metrics::translation::editing_accuracy;
use crate::metrics::{fid, inception::FidInception};
use crate::models::editor::Editor;
use crate::stages::InputStage;

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

/// The test faces and what each edit is measured against.
struct Reference {
    faces: FaceSet,
    /// Per face, its `others` pixels (with a parse_faces input).
    backgrounds: Option<HashMap<String, Vec<bool>>>,
    inception: Option<FidInception>,
    /// The real faces' Inception features, mean and covariance.
    real: Option<RealFeatures>,
}

/// The real test faces' Inception features, their mean and covariance.
struct RealFeatures {
    features: Vec<Vec<f64>>,
    mean: nalgebra::DVector<f64>,
    cov: nalgebra::DMatrix<f64>,
}

/// The judge's output column of each CelebA attribute it predicts, and its input size.
struct JudgeView<'a> {
    judge: &'a Judge,
    column: HashMap<usize, usize>,
    size: usize,
}

/// What every group of one generator is measured with.
struct Protocol<'a> {
    c: &'a Config,
    g: &'a InputStage,
    cx: &'a Setting<'a>,
    refs: &'a Reference,
}

/// One edit group (one attribute reversed on every face).
struct Group {
    /// The CelebA index of the reversed attribute.
    attribute: usize,
    edits: Vec<RgbImage>,
    /// The judge's call on the edited attribute, and the target value, per edit.
    predicted: Vec<Vec<bool>>,
    target: Vec<Vec<bool>>,
    /// Σ per-face background L1 and the faces that had a mask.
    bg_sum: f64,
    bg_n: usize,
}

/// Per-group values kept for the means over groups: (value, n).
#[derive(Default)]
struct Means {
    accuracy: Vec<(f64, usize)>,
    fid: Vec<(f64, usize)>,
    kid: Vec<(f64, usize)>,
    background: Vec<(f64, usize)>,
}

/// Runs the protocol for generator stage `g` (skipped, with a line, when it
/// is not a translation generator).
pub(super) fn reversal(out: &mut Rows, c: &Config, g: &InputStage, cx: &Setting) -> Result<()> {
    let io = out.io;
    let generator = generators::load(&g.dir, cx.dev)?;
    let Some(ed) = generator.translation_editor() else {
        io.say(format!(
            "`{}` is not a translation generator: no reversal protocol",
            g.name
        ));
        return Ok(());
    };
    let attrs = ed.attrs.to_vec();
    let refs = reference(out, c, cx, generator.image_size())?;
    io.say(format!(
        "reversal protocol: {} test faces × {} attributes through `{}`",
        refs.faces.len(),
        attrs.len(),
        g.name
    ));
    let judge = cx.judge.map(JudgeView::new);
    let protocol = Protocol {
        c,
        g,
        cx,
        refs: &refs,
    };
    let mut means = Means::default();
    let pb = io.progress((attrs.len() * refs.faces.len()) as u64, "edits");
    for &a in &attrs {
        let group = edit_group(&ed, a, &refs, judge.as_ref(), cx.dev, &pb)?;
        push_group(out, &protocol, &group, &mut means)?;
    }
    pb.finish_and_clear();
    push_means(out, &protocol, attrs.len(), &means);
    Ok(())
}

/// The test faces at the generator's size, their backgrounds and Inception statistics.
fn reference(out: &Rows, c: &Config, cx: &Setting, size: usize) -> Result<Reference> {
    let io = out.io;
    let faces = FaceSet::load(
        &cx.ingest.table(tables::FACES)?,
        &[Partition::Test],
        c.edit_faces,
        size,
    )?;
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
        Some(w) => Some(FidInception::load(w, cx.dev)?),
        None => None,
    };
    let real = match &inception {
        Some(net) => {
            let imgs: Vec<Vec<u8>> = (0..faces.len())
                .map(|i| png(&faces.rgb(i)))
                .collect::<Result<_>>()?;
            let f = features(io, net, &imgs, c.batch_size, cx.dev)?;
            let (mean, cov) = fid::statistics(&f)?;
            Some(RealFeatures {
                features: f,
                mean,
                cov,
            })
        }
        None => None,
    };
    Ok(Reference {
        faces,
        backgrounds,
        inception,
        real,
    })
}

impl<'a> JudgeView<'a> {
    fn new(judge: &'a Judge) -> JudgeView<'a> {
        let column = judge
            .saved
            .attributes
            .iter()
            .enumerate()
            .map(|(k, &a)| (a, k))
            .collect();
        let size = match &judge.saved.network {
            crate::train::classifier::NetConfig::PaperCnn(c) => c.image_size,
            crate::train::classifier::NetConfig::ResNet18(c) => c.image_size,
        };
        JudgeView {
            judge,
            column,
            size,
        }
    }

    /// The judge's call on attribute `a` (its column `k`) for each image.
    fn predict(&self, k: usize, images: &[RgbImage], dev: &Device) -> Result<Vec<bool>> {
        let imgs: Vec<RgbImage> = images
            .iter()
            .map(|im| resize_square(im.clone(), self.size))
            .collect();
        let p = crate::train::classifier::SavedClassifier::probabilities(
            &self.judge.net,
            &images_tensor(&imgs, dev)?,
        )?;
        Ok(p.iter().map(|r| r[k] > 0.5).collect())
    }
}

/// Every test face with attribute `a` reversed: the edits, the judge's calls
/// and the background L1 sums.
fn edit_group(
    ed: &Editor,
    a: usize,
    refs: &Reference,
    judge: Option<&JudgeView>,
    dev: &Device,
    pb: &indicatif::ProgressBar,
) -> Result<Group> {
    let faces = &refs.faces;
    let mut group = Group {
        attribute: a,
        edits: Vec::with_capacity(faces.len()),
        predicted: Vec::new(),
        target: Vec::new(),
        bg_sum: 0.0,
        bg_n: 0,
    };
    let column = judge.and_then(|j| j.column.get(&a).map(|&k| (j, k)));
    let idx: Vec<usize> = (0..faces.len()).collect();
    for chunk in idx.chunks(32) {
        let x = faces.images(chunk, dev)?;
        let src: Vec<u64> = chunk.iter().map(|&i| faces.labels[i]).collect();
        let trg: Vec<u64> = src.iter().map(|l| l ^ (1 << a)).collect();
        let y = tensor_to_rgb(&ed.edit(&x, &src, &trg)?)?;
        if let Some((j, k)) = column {
            for (p, t) in j.predict(k, &y, dev)?.into_iter().zip(&trg) {
                group.predicted.push(vec![p]);
                group.target.push(vec![(t >> a) & 1 == 1]);
            }
        }
        if let Some(bg) = &refs.backgrounds {
            for (k, &i) in chunk.iter().enumerate() {
                if let Some(mask) = bg.get(&faces.image_ids[i]) {
                    let (sum, cnt) = masked_l1(&faces.rgb(i), &y[k], mask);
                    if cnt > 0 {
                        group.bg_sum += sum / cnt as f64;
                        group.bg_n += 1;
                    }
                }
            }
        }
        pb.inc(chunk.len() as u64);
        group.edits.extend(y);
    }
    Ok(group)
}

/// The per-group rows of attribute `a`: editing accuracy, background L1,
/// FID and KID of the edits against the real test faces.
fn push_group(out: &mut Rows, p: &Protocol, group: &Group, means: &mut Means) -> Result<()> {
    let Protocol { c, g, cx, refs } = *p;
    let col = attribute_column(group.attribute);
    let details =
        serde_json::json!({"protocol": "reversal", "generator": g.name, "faces": refs.faces.len()});
    let n = group.predicted.len();
    if n > 0 {
        let v = editing_accuracy(&group.predicted, &group.target, &[0]);
        let mut d = details.clone();
        d["judge"] = cx.judge.map(|j| j.name.clone()).into();
        out.push_attr(&g.name, "editing_accuracy", Some(col.clone()), v, n, d);
        means.accuracy.push((v, n));
    }
    if group.bg_n > 0 {
        let v = group.bg_sum / group.bg_n as f64;
        let d = details.clone();
        out.push_attr(
            &g.name,
            "background_l1",
            Some(col.clone()),
            v,
            group.bg_n,
            d,
        );
        means.background.push((v, group.bg_n));
    }
    let (Some(net), Some(real)) = (&refs.inception, &refs.real) else {
        return Ok(());
    };
    let encoded: Vec<Vec<u8>> = group.edits.iter().map(png).collect::<Result<_>>()?;
    let f = features(out.io, net, &encoded, c.batch_size, cx.dev)?;
    if f.len() < 2 {
        return Ok(());
    }
    let (m1, s1) = fid::statistics(&f)?;
    let v = fid::frechet_distance(&m1, &s1, &real.mean, &real.cov)?;
    let n = f.len().min(real.features.len());
    out.push_attr(
        &g.name,
        "fid_edit",
        Some(col.clone()),
        v,
        n,
        details.clone(),
    );
    means.fid.push((v, n));
    if c.kid {
        let (k, _) = fid::kid(
            &f,
            &real.features,
            c.kid_subsets,
            c.kid_subset_size.min(n),
            cx.seed,
        );
        out.push_attr(&g.name, "kid_edit", Some(col), k, n, details);
        means.kid.push((k, n));
    }
    Ok(())
}

/// The means over edit groups (Fig. 4, Table 1), and one line saying them.
fn push_means(out: &mut Rows, p: &Protocol, groups: usize, means: &Means) {
    let (io, g, cx, faces) = (out.io, p.g, p.cx, p.refs.faces.len());
    let mean = |v: &[(f64, usize)]| v.iter().map(|x| x.0).sum::<f64>() / v.len().max(1) as f64;
    let total = |v: &[(f64, usize)]| v.iter().map(|x| x.1).sum::<usize>();
    let details = serde_json::json!({
        "protocol": "reversal",
        "generator": g.name,
        "faces": faces,
        "groups": groups,
        "mean": "unweighted over the edit groups",
        "inception_score": NO_IS,
    });
    let mut said = Vec::new();
    let acc = &means.accuracy;
    if !acc.is_empty() {
        let mut d = details.clone();
        d["judge"] = cx.judge.map(|j| j.name.clone()).into();
        out.push(&g.name, "editing_accuracy", mean(acc), total(acc), d);
        said.push(format!("editing accuracy {:.4}", mean(acc)));
    } else {
        io.say("reversal protocol: no train_classifier input trained on real faces (or none predicting these attributes): no editing accuracy");
    }
    let fids = &means.fid;
    if !fids.is_empty() {
        let mut d = details.clone();
        d["features"] = NO_SSFID.into();
        out.push(&g.name, "fid_edit_mean", mean(fids), total(fids), d.clone());
        said.push(format!("fid_edit_mean {:.3}", mean(fids)));
        if !means.kid.is_empty() {
            let kids = &means.kid;
            out.push(&g.name, "kid_edit_mean", mean(kids), total(kids), d);
        }
    }
    let bgs = &means.background;
    if !bgs.is_empty() {
        let mut d = details.clone();
        d["pixels"] = "the source mask's `others` class; values in [0, 1]".into();
        out.push(&g.name, "background_l1", mean(bgs), total(bgs), d);
        said.push(format!("background L1 {:.4}", mean(bgs)));
    }
    io.say(format!(
        "`{}` (reversal, {faces} faces): {}",
        g.name,
        said.join(", ")
    ));
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
    for b in read_columns(&p.table(tables::MASKS)?, &["image_id", "mask"])? {
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
