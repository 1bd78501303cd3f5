//! FID and KID (Heusel et al. 2017; Bińkowski et al. 2018) of synthesized
//! rows and of prior samples against the real test faces, with the FID
//! Inception network and pytorch-fid's input conventions; per changed
//! attribute for a translation generator's edits (BridgeGAN Table 2).

use super::*;

/// The FID weights to use, or None (with `fid = "auto"` and no weights, a
/// recorded skip row per synthesize stage).
pub(super) fn fid_weights(
    out: &mut Rows,
    c: &Config,
    measured: &[&str],
) -> Result<Option<PathBuf>> {
    let io = out.io;
    Ok(match c.fid {
        FidMode::Off => None,
        _ if measured.is_empty() => None,
        FidMode::Required => Some(
            crate::weights::require(c.weights.as_deref(), "weights")
                .map_err(|e| data_error!("stage `{}`: {e:#} — or set fid = \"auto\"", io.name))?,
        ),
        FidMode::Auto => {
            let found = crate::weights::find(c.weights.as_deref(), "weights")?;
            if found.is_none() {
                io.say(format!("fid: {FID_SKIPPED}"));
                for name in measured {
                    let details = serde_json::json!({ "fid": FID_SKIPPED });
                    out.push(name, metric::FID, f64::NAN, 0, details);
                }
            }
            found.map(|(p, _)| p)
        }
    })
}

/// Images whose FID is measured, read one set at a time: a synthesize
/// stage's synthesized rows, or an ST-GAN generator's prior samples.
pub(super) enum ImageSet<'a> {
    Synth(&'a InputStage),
    Prior(&'a InputStage),
}

impl ImageSet<'_> {
    fn stage(&self) -> &str {
        match self {
            ImageSet::Synth(s) | ImageSet::Prior(s) => &s.name,
        }
    }

    /// What the images are, for `details`.
    fn what(&self) -> String {
        match self {
            ImageSet::Synth(s) => format!("{}.synth origin <> 'real'", s.name),
            ImageSet::Prior(g) => format!("{}: G(z, c) with z and c drawn from the prior", g.name),
        }
    }

    /// At most `n` images (PNG bytes), sampled or drawn with `seed`.
    fn images(&self, n: usize, seed: u64, dev: &Device) -> Result<Vec<Vec<u8>>> {
        match self {
            ImageSet::Synth(s) => Ok(sample(
                read_images(&s.table(tables::SYNTH)?, "origin", |o| {
                    o != Origin::Real.name()
                })?,
                n,
                seed,
            )),
            ImageSet::Prior(g) => prior_samples(g, n, seed, dev),
        }
    }
}

/// `n` samples G(z, c) of an ST-GAN stage with z and c from the prior
/// (seeded), G in inference mode, as PNG bytes.
pub(super) fn prior_samples(
    g: &InputStage,
    n: usize,
    seed: u64,
    dev: &Device,
) -> Result<Vec<Vec<u8>>> {
    let Some(images) = generators::load(&g.dir, dev)?.prior_samples(n, seed, dev)? else {
        anyhow::bail!("{} does not sample a prior", g.name);
    };
    images.iter().map(crate::data::images::encode_png).collect()
}

/// FID (and KID) of each image set (synthesized rows, ST-GAN prior
/// samples) against the real test faces of the ingest input.
pub(super) fn fid_and_kid(
    out: &mut Rows,
    c: &Config,
    ingest: &InputStage,
    sets: &[ImageSet],
    weights: &Path,
    seed: u64,
    dev: &Device,
) -> Result<()> {
    let io = out.io;
    let faces = ingest.table(tables::FACES)?;

    let net = FidInception::load(weights, dev)?;
    let real = sample(
        read_images(&faces, "partition", |p| p == "test")?,
        c.fid_samples,
        seed,
    );
    if real.len() < 2 {
        return Err(data_error!(
            "FID needs at least 2 real test images; the ingest input has {}",
            real.len()
        ));
    }
    io.say(format!(
        "Inception features of {} real test images",
        real.len()
    ));
    let real_f = features(io, &net, &real, c.batch_size, dev)?;
    let (m2, s2) = fid::statistics(&real_f)?;
    let mut floor = Floor::new(io, c, &faces, ingest, &net, seed, dev)?;
    for s in sets {
        crate::fault::point(|| format!("{}:fid:{}", io.name, s.stage()));
        // A translation generator's edits: the same sample, kept as rows so
        // that subsets of it get their own FID below.
        let edits = match s {
            ImageSet::Synth(st) if translation_generator(st).is_some() => {
                Some(generated_rows(st, c.fid_samples, seed)?)
            }
            _ => None,
        };
        let imgs = match &edits {
            Some(rows) if !rows.is_empty() => rows.iter().map(|r| r.png.clone()).collect(),
            _ => s.images(c.fid_samples, seed, dev)?,
        };
        if imgs.len() < 2 {
            io.say(format!(
                "`{}` has fewer than 2 synthesized images; no FID",
                s.stage()
            ));
            continue;
        }
        io.say(format!(
            "Inception features of {} images of `{}`",
            imgs.len(),
            s.stage()
        ));
        let f = features(io, &net, &imgs, c.batch_size, dev)?;
        let real = RealStats {
            name: &ingest.name,
            features: &real_f,
            mean: &m2,
            cov: &s2,
        };
        push_fid_kid(out, s, &f, &real, &mut floor, c, seed)?;
        if let Some(rows) = edits.filter(|r| r.len() == f.len()) {
            edit_fids(out, s.stage(), &faces, &rows, &f, &real)?;
        }
    }
    Ok(())
}

/// The FID and KID of one image set's features `f` against the real test
/// faces, each beside its floor at the same n.
fn push_fid_kid(
    out: &mut Rows,
    s: &ImageSet,
    f: &[Vec<f64>],
    real: &RealStats,
    floor: &mut Floor,
    c: &Config,
    seed: u64,
) -> Result<()> {
    let (m1, s1) = fid::statistics(f)?;
    let value = fid::frechet_distance(&m1, &s1, real.mean, real.cov)?;
    let details = serde_json::json!({
        "reference": format!("{}.faces partition = 'test'", real.name),
        "images": s.what(),
        "n_synthesized": f.len(),
        "n_reference": real.features.len(),
        "resize": fid::FID_RESIZE,
    });
    let n = f.len().min(real.features.len());
    out.push(s.stage(), metric::FID, value, n, details.clone());
    let fl = floor.at(f.len(), real, c, seed)?;
    out.push(s.stage(), metric::FID_FLOOR, fl.fid, n, fl.details.clone());
    out.io.say(format!(
        "`{}`: FID {value:.3} ({} vs {} real test images; real faces score {:.3} at this n)",
        s.stage(),
        f.len(),
        real.features.len(),
        fl.fid
    ));
    if c.kid {
        let size = c.kid_subset_size.min(n);
        let (mean, sd) = fid::kid(f, real.features, c.kid_subsets, size, seed);
        let kid_details = |mut d: serde_json::Value, sd: f64| {
            d["kid_std"] = sd.into();
            d["kid_subsets"] = c.kid_subsets.into();
            d["kid_subset_size"] = size.into();
            d
        };
        out.push(s.stage(), metric::KID, mean, n, kid_details(details, sd));
        let (fl_mean, fl_sd) = fl.kid;
        let d = kid_details(fl.details, fl_sd);
        out.push(s.stage(), metric::KID_FLOOR, fl_mean, n, d);
    }
    Ok(())
}

/// The floor beside every FID and KID: real faces that are not the
/// reference ones (the ingest's train and val faces), as many as the
/// measured set has, against the same real test reference. FID is biased
/// upwards at small n, so 62 at n = 64 can be a perfect score; the floor
/// says what perfect is at that n.
struct Floor {
    /// Inception features of up to `fid_samples` real non-test faces.
    features: Vec<Vec<f64>>,
    /// What the floor images are, for `details`.
    what: String,
    /// Floors already measured, by n.
    done: BTreeMap<usize, FloorAt>,
}

#[derive(Clone)]
struct FloorAt {
    fid: f64,
    /// KID mean and standard deviation over subsets.
    kid: (f64, f64),
    details: serde_json::Value,
}

impl Floor {
    fn new(
        io: &StageIo,
        c: &Config,
        faces: &Path,
        ingest: &InputStage,
        net: &FidInception,
        seed: u64,
        dev: &Device,
    ) -> Result<Self> {
        let imgs = sample(
            read_images(faces, "partition", |p| p != "test")?,
            c.fid_samples,
            seed.wrapping_add(1),
        );
        io.say(format!(
            "Inception features of {} real train/val images (the floor: real vs real at the same n)",
            imgs.len()
        ));
        Ok(Floor {
            features: features(io, net, &imgs, c.batch_size, dev)?,
            what: format!("{}.faces partition <> 'test' (real faces)", ingest.name),
            done: BTreeMap::new(),
        })
    }

    /// The floor at `n` images (fewer when there are not that many real
    /// train/val faces: `details` says how many).
    fn at(&mut self, n: usize, real: &RealStats, c: &Config, seed: u64) -> Result<FloorAt> {
        if let Some(f) = self.done.get(&n) {
            return Ok(f.clone());
        }
        let f = &self.features[..n.min(self.features.len())];
        if f.len() < 2 {
            return Err(data_error!(
                "the FID floor needs at least 2 real train/val images; the ingest input has {}",
                f.len()
            ));
        }
        let (m1, s1) = fid::statistics(f)?;
        let fid = fid::frechet_distance(&m1, &s1, real.mean, real.cov)?;
        let size = c.kid_subset_size.min(f.len()).min(real.features.len());
        let kid = fid::kid(f, real.features, c.kid_subsets, size, seed);
        let details = serde_json::json!({
            "reference": format!("{}.faces partition = 'test'", real.name),
            "images": self.what,
            "n_synthesized": f.len(),
            "n_reference": real.features.len(),
            "resize": fid::FID_RESIZE,
            "note": "real faces against the same reference at the same n: the best score a generator can reach",
        });
        let at = FloorAt { fid, kid, details };
        self.done.insert(n, at.clone());
        Ok(at)
    }
}

/// The real test faces' Inception features and their statistics.
pub(super) struct RealStats<'a> {
    pub(super) name: &'a str,
    pub(super) features: &'a [Vec<f64>],
    pub(super) mean: &'a nalgebra::DVector<f64>,
    pub(super) cov: &'a nalgebra::DMatrix<f64>,
}

/// Rows an attribute needs among the sampled edits for its own FID.
pub(super) const MIN_FID_PER_ATTRIBUTE: usize = 10;

/// BridgeGAN Table 2 for a translation generator's edits `rows` (features
/// `f`): FID per changed attribute over the rows that change it (at least
/// [`MIN_FID_PER_ATTRIBUTE`]).
pub(super) fn edit_fids(
    out: &mut Rows,
    stage: &str,
    faces: &Path,
    rows: &[GenRow],
    f: &[Vec<f64>],
    real: &RealStats,
) -> Result<()> {
    let wanted: std::collections::HashSet<&str> = rows.iter().map(|r| r.source.as_str()).collect();
    let source = crate::data::tensors::read_faces_by_id(faces, &wanted)?;
    let changed: Vec<Labels> = rows
        .iter()
        .map(|r| source.labels.get(&r.source).map_or(0, |l| l ^ r.labels))
        .collect();
    let fid_of = |idx: &[usize]| -> Result<f64> {
        let sub: Vec<Vec<f64>> = idx.iter().map(|&i| f[i].clone()).collect();
        let (m1, s1) = fid::statistics(&sub)?;
        fid::frechet_distance(&m1, &s1, real.mean, real.cov)
    };
    let details = |n: usize| {
        serde_json::json!({
            "reference": format!("{}.faces partition = 'test'", real.name),
            "images": format!("{stage}.synth origin = 'generated'"),
            "n_synthesized": n,
            "n_reference": real.features.len(),
            "resize": fid::FID_RESIZE,
            "note": "FID is biased upwards at small n: compare values at equal n only",
        })
    };
    for a in 0..N_ATTRIBUTES {
        let with: Vec<usize> = (0..rows.len())
            .filter(|&i| changed[i] >> a & 1 == 1)
            .collect();
        if with.len() < MIN_FID_PER_ATTRIBUTE {
            continue;
        }
        let v = fid_of(&with)?;
        out.push_attr(
            stage,
            metric::FID,
            Some(attribute_column(a)),
            v,
            with.len().min(real.features.len()),
            details(with.len()),
        );
    }
    Ok(())
}

/// The images of a table's rows whose string column `column` satisfies `keep`.
pub(super) fn read_images(
    path: &Path,
    column: &str,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for b in read_columns(path, &[column, "image"])? {
        let k = strings(&b, 0)?;
        for r in 0..b.num_rows() {
            if keep(k.value(r))
                && let Some(bytes) = image_bytes(b.column(1).as_ref(), r)
            {
                out.push(bytes.to_vec());
            }
        }
    }
    Ok(out)
}

pub(super) fn sample(mut v: Vec<Vec<u8>>, n: usize, seed: u64) -> Vec<Vec<u8>> {
    if v.len() > n {
        v.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        v.truncate(n);
    }
    v
}

pub(super) fn features(
    io: &StageIo,
    net: &FidInception,
    encoded: &[Vec<u8>],
    batch: usize,
    dev: &Device,
) -> Result<Vec<Vec<f64>>> {
    let images: Vec<RgbImage> = encoded
        .par_iter()
        .map(|b| decode_rgb(b).map_err(|e| data_error!("undecodable image: {e}")))
        .collect::<Result<_>>()?;
    let pb = io.progress(images.len() as u64, "images");
    let f = fid::features(net, &images, batch, dev, |n| pb.inc(n as u64))?;
    pb.finish_and_clear();
    Ok(f)
}
