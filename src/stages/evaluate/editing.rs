//! Translation metrics of a synthesize stage's generated rows (SG-GAN
//! Sec. 5.3, Tables 1–3): editing and untouched-attribute accuracy under a
//! judge (the first `train_classifier` input trained on real faces), the
//! background MS-SSIM against the source face; and the summary of the
//! generator's own label agreement.

use super::*;

/// The classifier input that judges generated images: the one named by
/// `judge` (which must be trained on real faces), else the first trained on
/// real faces.
pub(super) fn judge(
    classifiers: &[&InputStage],
    named: Option<&str>,
    dev: &Device,
) -> Result<Option<Judge>> {
    use crate::train::classifier::SavedClassifier;
    if let Some(name) = named {
        let Some(s) = classifiers.iter().find(|s| s.name == name) else {
            return Err(crate::config_error!(
                "judge = {name:?} is not a train_classifier input of this evaluate stage; add it to `inputs`"
            ));
        };
        return match SavedClassifier::load(&s.dir, dev)? {
            Some((saved, net)) if saved.trained_on_real => Ok(Some(Judge {
                name: s.name.clone(),
                saved,
                net,
            })),
            _ => Err(crate::config_error!(
                "judge = {name:?} must be a classifier trained on real faces only (a `train_classifier` with `ingest` as its only data input)"
            )),
        };
    }
    let judge = classifiers
        .iter()
        .find_map(|s| match SavedClassifier::load(&s.dir, dev) {
            Ok(Some((saved, net))) if saved.trained_on_real => Some(Ok(Judge {
                name: s.name.clone(),
                saved,
                net,
            })),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        });
    judge.transpose()
}

/// The generator stage behind a synthesize stage, when it is a translation
/// generator: its name (from the synthesize stage's lineage).
pub(super) fn translation_generator(s: &InputStage) -> Option<&str> {
    s.lineage
        .generator
        .as_ref()
        .filter(|g| g.translator)
        .map(|g| g.stage.as_str())
}

/// The classifier trained on real faces that judges edits: its stage name,
/// what it predicts and the network.
pub(super) struct Judge {
    pub(super) name: String,
    pub(super) saved: crate::train::classifier::SavedClassifier,
    pub(super) net: crate::train::classifier::Net,
}

/// One generated row of a synthesize stage.
#[derive(Clone)]
pub(super) struct GenRow {
    pub(super) source: String,
    pub(super) labels: Labels,
    pub(super) png: Vec<u8>,
}

/// The generated rows of a translation generator's synthesize stage, at
/// most `translation_samples` of them, and the source faces they were
/// edited from.
pub(super) struct Translated {
    pub(super) generator: String,
    pub(super) rows: Vec<GenRow>,
    pub(super) source: crate::data::tensors::FacesById,
}

/// Translation metrics of a synthesize stage's generated rows (SG-GAN,
/// StarGAN): background MS-SSIM against the source face, and with a judge
/// the editing and untouched-attribute accuracies.
pub(super) fn translation(
    out: &mut Rows,
    s: &InputStage,
    faces: &Path,
    judge: Option<&Judge>,
    c: &Config,
    seed: u64,
    dev: &Device,
) -> Result<()> {
    let Some(generator) = translation_generator(s) else {
        return Ok(());
    };
    let rows = generated_rows(s, c.translation_samples, seed)?;
    if rows.is_empty() {
        return Ok(());
    }
    let wanted: std::collections::HashSet<&str> = rows.iter().map(|r| r.source.as_str()).collect();
    let source = crate::data::tensors::read_faces_by_id(faces, &wanted)?;
    out.io.say(format!(
        "translation metrics of {} generated rows of `{}` (generator `{generator}`)",
        rows.len(),
        s.name
    ));
    let t = Translated {
        generator: generator.to_string(),
        rows,
        source,
    };
    background(out, s, &t)?;
    let Some(judge) = judge else {
        out.io
            .say("no train_classifier input trained on real faces: no editing accuracy");
        return Ok(());
    };
    editing(out, s, &t, judge, c.batch_size, dev)
}

/// The generated rows of `s`, a seeded sample of `max` when there are more.
pub(super) fn generated_rows(s: &InputStage, max: usize, seed: u64) -> Result<Vec<GenRow>> {
    let mut cols = vec!["source_image_id".to_string(), "origin".to_string()];
    cols.extend((0..N_ATTRIBUTES).map(attribute_column));
    cols.push("image".into());
    let names: Vec<&str> = cols.iter().map(String::as_str).collect();
    let mut rows: Vec<GenRow> = Vec::new();
    for b in read_columns(&s.table(tables::SYNTH)?, &names)? {
        let src = strings(&b, 0)?;
        let origin = strings(&b, 1)?;
        let labels = labels_of_batch(&b, 2)?;
        let image = b
            .column_by_name("image")
            .context("synth table without an `image` column")?;
        for (r, &label) in labels.iter().enumerate() {
            if origin.value(r) == Origin::Generated.name()
                && let Some(bytes) = image_bytes(image.as_ref(), r)
            {
                rows.push(GenRow {
                    source: src.value(r).to_string(),
                    labels: label,
                    png: bytes.to_vec(),
                });
            }
        }
    }
    if rows.len() > max {
        rows.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        rows.truncate(max);
    }
    Ok(rows)
}

/// Background MS-SSIM, source vs translated at the synthesized size.
pub(super) fn background(out: &mut Rows, s: &InputStage, t: &Translated) -> Result<()> {
    let (rows, source, generator) = (&t.rows, &t.source, &t.generator);
    let pairs: Vec<(RgbImage, RgbImage)> = rows
        .par_iter()
        .filter_map(|r| {
            let spng = source.png.get(&r.source)?;
            Some((decode_rgb(spng).ok()?, decode_rgb(&r.png).ok()?))
        })
        .collect();
    let bg: Vec<(f64, usize, usize)> = pairs
        .par_iter()
        .map(|(a, b)| {
            let b = resize_square(b.clone(), a.width() as usize);
            let m = background_ms_ssim(&msssim::Planar::from_rgb(a), &msssim::Planar::from_rgb(&b))
                .map_err(|e| data_error!("{e}"))?;
            Ok((m.value, m.levels, m.window))
        })
        .collect::<Result<_>>()?;
    if let Some(&(_, levels, window)) = bg.first() {
        let mean = bg.iter().map(|v| v.0).sum::<f64>() / bg.len() as f64;
        out.push(
            &s.name,
            "background_ms_ssim",
            mean,
            bg.len(),
            serde_json::json!({"crop": "top-left 10x10", "levels": levels, "window": window,
                               "generator": generator, "reference": "each row's source face"}),
        );
        out.io
            .say(format!("`{}`: background MS-SSIM {mean:.4}", s.name));
    }
    Ok(())
}

/// Editing accuracy (edited attributes reach their target under the judge)
/// and untouched-attribute accuracy (the others keep their source value).
pub(super) fn editing(
    out: &mut Rows,
    s: &InputStage,
    t: &Translated,
    judge: &Judge,
    batch_size: usize,
    dev: &Device,
) -> Result<()> {
    let (rows, source, generator) = (&t.rows, &t.source, &t.generator);
    let (judge_name, saved) = (&judge.name, &judge.saved);
    let k = saved.attributes.len();
    let mut tally = EditTally {
        per_attr: vec![(0.0, 0); k],
        ..EditTally::default()
    };
    let bits = |l: Labels| -> Vec<bool> {
        saved
            .attributes
            .iter()
            .map(|&a| (l >> a) & 1 == 1)
            .collect()
    };
    for chunk in rows.chunks(batch_size.max(1)) {
        let probs = judge.probabilities(chunk, dev)?;
        for (r, p) in chunk.iter().zip(&probs) {
            let Some(src_labels) = source.labels.get(&r.source) else {
                continue;
            };
            let pred: Vec<bool> = p.iter().map(|&v| v > 0.5).collect();
            tally.add(&pred, &bits(r.labels), &bits(*src_labels));
        }
    }
    let details = serde_json::json!({"judge": judge_name, "generator": generator,
        "judge_attributes": k, "rows": rows.len()});
    let EditTally {
        edit_hit,
        edit_n,
        keep_hit,
        keep_n,
        per_attr,
    } = tally;
    if edit_n > 0 {
        let v = edit_hit / edit_n as f64;
        out.push(&s.name, "editing_accuracy", v, edit_n, details.clone());
        for (j, &(hit, n)) in per_attr.iter().enumerate() {
            if n > 0 {
                let col = Some(attribute_column(saved.attributes[j]));
                let v = hit / n as f64;
                out.push_attr(&s.name, "editing_accuracy", col, v, n, details.clone());
            }
        }
    }
    if keep_n > 0 {
        let v = keep_hit / keep_n as f64;
        out.push(&s.name, "untouched_accuracy", v, keep_n, details);
    }
    out.io.say(format!(
        "`{}`: editing accuracy {:.4} over {edit_n} edits, untouched-attribute accuracy {:.4} (judge `{judge_name}`)",
        s.name,
        edit_hit / edit_n.max(1) as f64,
        keep_hit / keep_n.max(1) as f64
    ));
    Ok(())
}

/// Running sums of editing and untouched-attribute accuracy over generated rows.
#[derive(Default)]
pub(super) struct EditTally {
    pub(super) edit_hit: f64,
    pub(super) edit_n: usize,
    pub(super) keep_hit: f64,
    pub(super) keep_n: usize,
    /// Per judge attribute: (hits, edits).
    pub(super) per_attr: Vec<(f64, usize)>,
}

impl EditTally {
    /// One row: the judge's calls, the row's target labels and its source's
    /// labels, each over the judge's attributes.
    fn add(&mut self, pred: &[bool], target: &[bool], src: &[bool]) {
        let (edited, kept): (Vec<usize>, Vec<usize>) =
            (0..target.len()).partition(|&j| target[j] != src[j]);
        let pred = [pred.to_vec()];
        if !edited.is_empty() {
            let a = editing_accuracy(&pred, &[target.to_vec()], &edited);
            self.edit_hit += a * edited.len() as f64;
            self.edit_n += edited.len();
            for &j in &edited {
                self.per_attr[j].0 += f64::from(u8::from(pred[0][j] == target[j]));
                self.per_attr[j].1 += 1;
            }
        }
        if !kept.is_empty() {
            let a = untouched_accuracy(&pred, &[src.to_vec()], &kept);
            self.keep_hit += a * kept.len() as f64;
            self.keep_n += kept.len();
        }
    }
}

impl Judge {
    /// The judge's probabilities for generated rows, resized to its input.
    fn probabilities(&self, rows: &[GenRow], dev: &Device) -> Result<Vec<Vec<f64>>> {
        let size = match &self.saved.network {
            crate::train::classifier::NetConfig::PaperCnn(c) => c.image_size,
            crate::train::classifier::NetConfig::ResNet18(c) => c.image_size,
        };
        let imgs: Vec<RgbImage> = rows
            .iter()
            .map(|r| {
                Ok(resize_square(
                    decode_rgb(&r.png).map_err(|e| data_error!("{e}"))?,
                    size,
                ))
            })
            .collect::<Result<_>>()?;
        crate::train::classifier::SavedClassifier::probabilities(
            &self.net,
            &images_tensor(&imgs, dev)?,
        )
    }
}

/// Label agreement of a drawing generator's rows (attr2face, dcgan) under
/// the judge, a classifier trained on real faces only: per generated row,
/// the fraction of the judge's attributes on which its call matches the
/// label the row was drawn for (the paper's accuracy, Liu et al. Sec. V-D,
/// with the row's target labels as truth); per attribute, the accuracy over
/// the rows. Unlike `label_agreement` (the generator's own classifier),
/// this judge never saw a generated face.
pub(super) fn judge_agreement(
    out: &mut Rows,
    s: &InputStage,
    judge: &Judge,
    c: &Config,
    seed: u64,
    dev: &Device,
) -> Result<()> {
    if translation_generator(s).is_some() || s.lineage.generator.is_none() {
        return Ok(());
    }
    let rows = generated_rows(s, c.translation_samples, seed)?;
    if rows.is_empty() {
        return Ok(());
    }
    let attrs = &judge.saved.attributes;
    let mut per_attr = vec![0usize; attrs.len()];
    let mut row_sum = 0.0;
    for chunk in rows.chunks(c.batch_size.max(1)) {
        for (r, p) in chunk.iter().zip(judge.probabilities(chunk, dev)?) {
            let mut hits = 0;
            for (j, &a) in attrs.iter().enumerate() {
                if (p[j] > 0.5) == ((r.labels >> a) & 1 == 1) {
                    per_attr[j] += 1;
                    hits += 1;
                }
            }
            row_sum += hits as f64 / attrs.len() as f64;
        }
    }
    let n = rows.len();
    let details = serde_json::json!({"judge": judge.name, "judge_attributes": attrs.len(),
        "table": format!("{}.synth origin = 'generated'", s.name),
        "truth": "each row's target labels"});
    let mean = row_sum / n as f64;
    out.push(&s.name, "judge_agreement", mean, n, details.clone());
    for (j, &hits) in per_attr.iter().enumerate() {
        let col = Some(attribute_column(attrs[j]));
        out.push_attr(
            &s.name,
            "judge_agreement",
            col,
            hits as f64 / n as f64,
            n,
            details.clone(),
        );
    }
    out.io.say(format!(
        "`{}`: label agreement {mean:.4} under judge `{}` ({n} generated rows)",
        s.name, judge.name
    ));
    Ok(())
}

pub(super) fn label_agreement(out: &mut Rows, s: &InputStage) -> Result<()> {
    let path = s.table(tables::SYNTH)?;
    let mut by_strategy: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for b in read_columns(&path, &["strategy", "label_agreement"])? {
        let strat = strings(&b, 0)?;
        let agree = b
            .column(1)
            .as_any()
            .downcast_ref::<Float64Array>()
            .context("label_agreement is not float64")?;
        for r in 0..b.num_rows() {
            if !agree.is_null(r) {
                by_strategy
                    .entry(strat.value(r).to_string())
                    .or_default()
                    .push(agree.value(r));
            }
        }
    }
    for (strategy, v) in by_strategy {
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let full = v.iter().filter(|&&a| a >= 1.0).count() as f64 / n as f64;
        let d = serde_json::json!({"strategy": strategy, "table": format!("{}.synth", s.name), "judge": "the generator stage's classifier C (attr2face, dcgan) or its critic's classification head (sggan, stargan)"});
        out.push(&s.name, "label_agreement", mean, n, d.clone());
        out.push(&s.name, "label_agreement_full", full, n, d);
    }
    Ok(())
}
