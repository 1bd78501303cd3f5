//! `kind = "balance"`: CelebA's long-tailed labels → a plan of target label
//! vectors to synthesize (Liu et al., *Generating Face Images with Attributes
//! for Free*, Sec. IV), plus the classic image-operation baselines of their
//! Table 2 and multi-label random oversampling (ML-ROS, Charte et al. 2015).
//!
//! - `random_doubling` (IV-A): each source row once more, one uniformly chosen
//!   attribute of 40 flipped.
//! - `dynamic_balancing` (IV-B, steps 1–6): rank attributes by their positive
//!   proportion over the originals plus the rows added so far; copy a random
//!   source's labels, set the `bottom_k` rarest to 1 and the `top_k` most
//!   frequent to 0; repeat until `size × N` rows. `rerank_every = 1` reranks
//!   before every new row, exactly as the paper.
//! - `flip` / `crop` / `erase`: copies of a source's labels with a seeded
//!   image operation (random erasing after Zhong et al. 2017), executed later
//!   by the synthesize stage without a generator.
//! - `ml_ros`: clone rows carrying minority labels (IRLbl above MeanIR).
//! - `reference` (BridgeGAN, Huang et al. App. B): like `random_doubling`,
//!   one attribute flipped per source, plus a seeded real reference face
//!   from the same partitions that has the target value, whose features
//!   guide the edit (`reference_image_id`).

use std::sync::Arc;

use anyhow::Result;
use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, ListBuilder, StringArray,
    StringBuilder,
};
use arrow::record_batch::RecordBatch;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{Lineage, StageIo, StageKind, StageOutput, Table};
use crate::charts::{self, Series};
use crate::contract::tables;
use crate::data::celeba::{Labels, Partition, label};
use crate::data::parquet::{TableWriter, read_columns};
use crate::data::schema::{
    self, ABBREVIATIONS, N_ATTRIBUTES, PlanStrategy, attribute_column, attribute_index,
};
use crate::data::tensors::{labels_of_batch, strings};
use crate::data_error;
use crate::metrics::imbalance::{cvir, irlbl, minority_labels, spread};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    None,
    RandomDoubling,
    DynamicBalancing,
    Flip,
    Crop,
    Erase,
    MlRos,
    Reference,
}

impl Strategy {
    /// The `strategy` of the rows it adds to a plan (None adds none).
    pub fn plan_strategy(self) -> Option<PlanStrategy> {
        match self {
            Strategy::None => None,
            Strategy::RandomDoubling => Some(PlanStrategy::RandomDoubling),
            Strategy::DynamicBalancing => Some(PlanStrategy::DynamicBalancing),
            Strategy::Flip => Some(PlanStrategy::Flip),
            Strategy::Crop => Some(PlanStrategy::Crop),
            Strategy::Erase => Some(PlanStrategy::Erase),
            Strategy::MlRos => Some(PlanStrategy::MlRos),
            Strategy::Reference => Some(PlanStrategy::Reference),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Strategy::None => "none",
            Strategy::RandomDoubling => "random_doubling",
            Strategy::DynamicBalancing => "dynamic_balancing",
            Strategy::Flip => "flip",
            Strategy::Crop => "crop",
            Strategy::Erase => "erase",
            Strategy::MlRos => "ml_ros",
            Strategy::Reference => "reference",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Source rows: these partitions of the ingest stage's `faces`.
    #[serde(default = "train_only")]
    pub partitions: Vec<Partition>,
    pub strategy: Strategy,
    /// Rows after augmentation as a multiple of the source rows (default 2; 1 for `none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<f64>,
    #[serde(default = "eight")]
    pub top_k: usize,
    #[serde(default = "eight")]
    pub bottom_k: usize,
    #[serde(default = "one")]
    pub rerank_every: usize,
    /// Default: the run's seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// `random_doubling` / `dynamic_balancing` / `reference`: the attributes
    /// the strategy may change (default all 40). A translation generator can only edit
    /// the attributes it was trained on: list those here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Vec<String>>,
    /// Resolve implausible label vectors (opt-in; the paper does not).
    #[serde(default)]
    pub exclusive_groups: bool,
    /// `crop`: side of the random crop as a fraction of the image side.
    #[serde(default = "crop_fraction")]
    pub crop_fraction: f64,
    /// `erase`: area range and aspect-ratio lower bound of Zhong et al. (2017).
    #[serde(default = "erase_area")]
    pub erase_area: [f64; 2],
    #[serde(default = "erase_ratio")]
    pub erase_min_aspect: f64,
}

fn train_only() -> Vec<Partition> {
    vec![Partition::Train]
}
fn eight() -> usize {
    8
}
fn one() -> usize {
    1
}
fn crop_fraction() -> f64 {
    0.875
}
fn erase_area() -> [f64; 2] {
    [0.02, 0.4]
}
fn erase_ratio() -> f64 {
    0.3
}

impl Config {
    /// Indices of the attributes the strategy may change.
    pub fn candidates(&self) -> std::result::Result<Vec<usize>, String> {
        let Some(names) = &self.attributes else {
            return Ok((0..N_ATTRIBUTES).collect());
        };
        if names.is_empty() {
            return Err("`attributes` is empty; leave it out to use all 40".into());
        }
        let mut out = Vec::new();
        for n in names {
            let i = schema::attribute_by_any_name(n)
                .ok_or_else(|| format!("attributes: unknown attribute `{n}`"))?;
            if out.contains(&i) {
                return Err(format!("attributes: `{n}` is listed twice"));
            }
            out.push(i);
        }
        Ok(out)
    }

    pub fn size(&self) -> f64 {
        self.size.unwrap_or(if self.strategy == Strategy::None {
            1.0
        } else {
            2.0
        })
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        let s = self.size();
        match self.strategy {
            Strategy::None if s != 1.0 => {
                return Err(format!(
                    "size = {s}: strategy \"none\" keeps the originals (size 1)"
                ));
            }
            Strategy::RandomDoubling | Strategy::Reference if s != 2.0 => {
                return Err(format!(
                    "size = {s}: {} adds exactly one row per source (size 2)",
                    self.strategy.name()
                ));
            }
            Strategy::Flip | Strategy::Crop | Strategy::Erase if s.fract() != 0.0 || s < 2.0 => {
                return Err(format!(
                    "size = {s}: {} makes whole copies of every source (size 2, 3, 4, ...)",
                    self.strategy.name()
                ));
            }
            Strategy::DynamicBalancing | Strategy::MlRos if s <= 1.0 => {
                return Err(format!(
                    "size = {s}: must be above 1 (e.g. 1.5, 2, 3 as in Table 2)"
                ));
            }
            _ => {}
        }
        let cands = self.candidates()?;
        if self.attributes.is_some()
            && !matches!(
                self.strategy,
                Strategy::RandomDoubling | Strategy::DynamicBalancing | Strategy::Reference
            )
        {
            return Err(format!(
                "`attributes` restricts random_doubling, dynamic_balancing and reference; {} does not change labels",
                self.strategy.name()
            ));
        }
        if self.strategy == Strategy::DynamicBalancing && self.top_k + self.bottom_k > cands.len() {
            return Err(format!(
                "top_k + bottom_k = {} exceeds the {} attributes it may change",
                self.top_k + self.bottom_k,
                cands.len()
            ));
        }
        if self.rerank_every == 0 {
            return Err("rerank_every must be at least 1".into());
        }
        if self.partitions.is_empty() {
            return Err("`partitions` is empty".into());
        }
        if !(0.1..=1.0).contains(&self.crop_fraction) {
            return Err(format!(
                "crop_fraction = {}: expected 0.1..=1",
                self.crop_fraction
            ));
        }
        let [lo, hi] = self.erase_area;
        let area_ok = 0.0 < lo && lo <= hi && hi < 1.0;
        let aspect_ok = 0.0 < self.erase_min_aspect && self.erase_min_aspect <= 1.0;
        if !(area_ok && aspect_ok) {
            return Err(
                "erase_area must be 0 < lo <= hi < 1 and erase_min_aspect in (0, 1]".into(),
            );
        }
        Ok(())
    }
}

/// An image operation of a classic row, in pixels of the ingested image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Flip,
    Crop {
        x: i32,
        y: i32,
        w: i32,
        h: i32,
    },
    Erase {
        x: i32,
        y: i32,
        w: i32,
        h: i32,
        seed: i64,
    },
}

/// One planned sample.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanRow {
    pub source: usize,
    pub strategy: PlanStrategy,
    pub labels: Labels,
    pub op: Option<Op>,
    /// `reference` rows: the source index of the reference face.
    pub reference: Option<usize>,
}

/// Groups of attributes of which at most one can be true in a plausible face.
pub const EXCLUSIVE_GROUPS: [&[&str]; 4] = [
    &[
        "Black_Hair",
        "Blond_Hair",
        "Brown_Hair",
        "Gray_Hair",
        "Bald",
    ],
    &["Bald", "Bangs"],
    &["Bald", "Straight_Hair", "Wavy_Hair"],
    &["Goatee", "No_Beard"],
];

pub fn group_masks() -> Vec<Labels> {
    EXCLUSIVE_GROUPS
        .iter()
        .map(|g| {
            g.iter()
                .map(|n| 1u64 << attribute_index(n).expect("known attribute"))
                .fold(0, |a, b| a | b)
        })
        .collect()
}

/// The label vector breaks one of [`EXCLUSIVE_GROUPS`].
pub fn implausible(l: Labels, masks: &[Labels]) -> bool {
    masks.iter().any(|m| (l & m).count_ones() > 1)
}

/// Keeps one member of each violated group, chosen at random.
pub fn resolve_exclusions(mut l: Labels, masks: &[Labels], rng: &mut impl Rng) -> Labels {
    for m in masks {
        let on = l & m;
        let n = on.count_ones();
        if n > 1 {
            let keep = rng.random_range(0..n);
            let bit = (0..64)
                .filter(|b| on >> b & 1 == 1)
                .nth(keep as usize)
                .unwrap_or(0);
            l = (l & !m) | (1 << bit);
        }
    }
    l
}

/// Attributes `cands` by positive count, most frequent first; ties by attribute index.
fn ranking(counts: &[u64; N_ATTRIBUTES], cands: &[usize]) -> Vec<usize> {
    let mut idx = cands.to_vec();
    idx.sort_by(|&a, &b| counts[b].cmp(&counts[a]).then(a.cmp(&b)));
    idx
}

fn count(labels: &[Labels]) -> [u64; N_ATTRIBUTES] {
    let mut c = [0u64; N_ATTRIBUTES];
    for &l in labels {
        for (i, ci) in c.iter_mut().enumerate() {
            *ci += l >> i & 1;
        }
    }
    c
}

/// A plan being built: the rows so far, the random stream every strategy
/// draws from, and the exclusive-group repair applied to each new row.
struct Planner {
    rows: Vec<PlanRow>,
    rng: ChaCha8Rng,
    masks: Vec<Labels>,
    exclusive_groups: bool,
    /// Rows whose labels broke an exclusive group and were repaired.
    resolved: usize,
}

impl Planner {
    fn push(&mut self, source: usize, strategy: PlanStrategy, labels: Labels, op: Option<Op>) {
        let mut labels = labels;
        if self.exclusive_groups && implausible(labels, &self.masks) {
            labels = resolve_exclusions(labels, &self.masks, &mut self.rng);
            self.resolved += 1;
        }
        self.rows.push(PlanRow {
            source,
            strategy,
            labels,
            op,
            reference: None,
        });
    }
}

/// Builds the plan (originals first) for `sources` labels. `image_size` sizes crop/erase boxes.
pub fn plan(c: &Config, sources: &[Labels], seed: u64, image_size: u32) -> (Vec<PlanRow>, usize) {
    let n = sources.len();
    let cands = c
        .candidates()
        .unwrap_or_else(|_| (0..N_ATTRIBUTES).collect());
    let mut p = Planner {
        rows: (0..n)
            .map(|i| PlanRow {
                source: i,
                strategy: PlanStrategy::Original,
                labels: sources[i],
                op: None,
                reference: None,
            })
            .collect(),
        rng: ChaCha8Rng::seed_from_u64(seed),
        masks: group_masks(),
        exclusive_groups: c.exclusive_groups,
        resolved: 0,
    };
    let total = (c.size() * n as f64).round() as usize;
    let new = total.saturating_sub(n);
    p.rows.reserve(new);
    if n == 0 {
        return (p.rows, 0);
    }
    match c.strategy {
        Strategy::None => {}
        Strategy::RandomDoubling => random_doubling(&mut p, sources, &cands),
        Strategy::DynamicBalancing => dynamic_balancing(&mut p, c, sources, &cands, new),
        Strategy::Flip | Strategy::Crop | Strategy::Erase => {
            image_operations(&mut p, c, sources, new, image_size)
        }
        Strategy::MlRos => ml_ros(&mut p, sources, new),
        Strategy::Reference => reference(&mut p, sources, &cands),
    }
    (p.rows, p.resolved)
}

/// For the `reference` strategy: the first candidate attribute and value
/// that some source would be flipped to but no source has (so no reference
/// can show it), as (attribute index, value).
pub fn missing_reference(c: &Config, sources: &[Labels]) -> Option<(usize, bool)> {
    let cands = c.candidates().ok()?;
    let counts = count(sources);
    let n = sources.len() as u64;
    cands.into_iter().find_map(|a| match counts[a] {
        0 if n > 0 => Some((a, true)),
        k if k == n && n > 0 => Some((a, false)),
        _ => None,
    })
}

/// Reference rows (BridgeGAN): every source once more with one random
/// candidate attribute flipped, and a seeded reference among the other
/// sources that has the row's final value of that attribute.
fn reference(p: &mut Planner, sources: &[Labels], cands: &[usize]) {
    // Sources with each candidate attribute off [0] and on [1].
    let mut bags: Vec<[Vec<usize>; 2]> = vec![[Vec::new(), Vec::new()]; N_ATTRIBUTES];
    for &a in cands {
        for (s, &l) in sources.iter().enumerate() {
            bags[a][usize::from(label(l, a))].push(s);
        }
    }
    for (src, &labels) in sources.iter().enumerate() {
        let bit = cands[p.rng.random_range(0..cands.len())];
        p.push(src, PlanStrategy::Reference, labels ^ (1 << bit), None);
        let Some(row) = p.rows.last_mut() else {
            continue;
        };
        let bag = &bags[bit][usize::from(label(row.labels, bit))];
        // The source itself is in the bag only if exclusive_groups turned
        // the flip back; then any other face with that value will do.
        let others = bag.len() - usize::from(bag.binary_search(&src).is_ok());
        if others == 0 {
            continue;
        }
        let mut k = p.rng.random_range(0..others);
        if let Ok(at) = bag.binary_search(&src)
            && k >= at
        {
            k += 1;
        }
        row.reference = Some(bag[k]);
    }
}

/// Random doubling (Liu et al. Sec. IV-A): one copy of every face with one
/// random candidate attribute flipped.
fn random_doubling(p: &mut Planner, sources: &[Labels], cands: &[usize]) {
    for (src, &labels) in sources.iter().enumerate() {
        let bit = cands[p.rng.random_range(0..cands.len())];
        p.push(src, PlanStrategy::RandomDoubling, labels ^ (1 << bit), None);
    }
}

/// Dynamic balancing (Liu et al. Sec. IV-B): every `rerank_every` rows, rank
/// the candidates by positives over originals and rows added so far; a new
/// row is a random source with the `bottom_k` rarest attributes on and the
/// `top_k` most frequent off.
fn dynamic_balancing(p: &mut Planner, c: &Config, sources: &[Labels], cands: &[usize], new: usize) {
    let n = sources.len();
    let mut counts = count(sources);
    let (mut high, mut low) = (0u64, 0u64);
    for j in 0..new {
        if j % c.rerank_every == 0 {
            // Step (1): rank by proportion over originals + rows added so far
            // (all share the same denominator, so counts rank the same).
            let rank = ranking(&counts, cands);
            low = rank[..c.top_k].iter().fold(0, |m, &i| m | 1 << i);
            high = rank[rank.len() - c.bottom_k..]
                .iter()
                .fold(0, |m, &i| m | 1 << i);
        }
        // Steps (2)-(3): a random source; rare attributes on, frequent ones off.
        let src = p.rng.random_range(0..n);
        p.push(
            src,
            PlanStrategy::DynamicBalancing,
            (sources[src] | high) & !low,
            None,
        );
        let l = p.rows.last().map(|r| r.labels).unwrap_or(0);
        for (i, ci) in counts.iter_mut().enumerate() {
            *ci += l >> i & 1;
        }
    }
}

/// The classic baselines: sources in turn, each under a flip, a random crop
/// or a random erasing box; labels unchanged.
fn image_operations(p: &mut Planner, c: &Config, sources: &[Labels], new: usize, image_size: u32) {
    let n = sources.len();
    let side = image_size as f64;
    let strategy = c.strategy.plan_strategy().unwrap_or(PlanStrategy::Flip);
    for k in 0..new {
        let src = k % n;
        let op = match c.strategy {
            Strategy::Flip => Op::Flip,
            Strategy::Crop => {
                let s = (side * c.crop_fraction).round().max(1.0) as i32;
                let room = image_size as i32 - s;
                Op::Crop {
                    x: p.rng.random_range(0..=room),
                    y: p.rng.random_range(0..=room),
                    w: s,
                    h: s,
                }
            }
            _ => erase_box(&mut p.rng, image_size, c.erase_area, c.erase_min_aspect),
        };
        p.push(src, strategy, sources[src], Some(op));
    }
}

/// ML-ROS (Charte et al. 2015): clone random sources carrying a minority
/// label (IRLbl above MeanIR), a label leaving the minority once it is not.
fn ml_ros(p: &mut Planner, sources: &[Labels], new: usize) {
    let n = sources.len();
    let mut counts = count(sources);
    // Bags of sources carrying each label.
    let bags: Vec<Vec<usize>> = (0..N_ATTRIBUTES)
        .map(|i| (0..n).filter(|&s| label(sources[s], i)).collect())
        .collect();
    let mut minority = minority_labels(&counts);
    let mut added = 0;
    while added < new {
        if minority.is_empty() {
            minority = minority_labels(&counts);
        }
        if minority.is_empty() {
            // Perfectly balanced: fall back to uniform cloning.
            let src = p.rng.random_range(0..n);
            p.push(src, PlanStrategy::MlRos, sources[src], None);
            added += 1;
            continue;
        }
        let mut next = Vec::new();
        for &lbl in &minority {
            if added >= new {
                break;
            }
            let bag = &bags[lbl];
            let src = bag[p.rng.random_range(0..bag.len())];
            p.push(src, PlanStrategy::MlRos, sources[src], None);
            added += 1;
            for (i, ci) in counts.iter_mut().enumerate() {
                *ci += sources[src] >> i & 1;
            }
            let (ir, mean) = irlbl(&counts);
            if ir[lbl].is_some_and(|v| v > mean) {
                next.push(lbl);
            }
        }
        minority = next;
    }
}

fn erase_box(rng: &mut ChaCha8Rng, size: u32, area: [f64; 2], min_aspect: f64) -> Op {
    let s = size as f64;
    // Zhong et al. (2017), Alg. 1: retry until the rectangle fits.
    for _ in 0..100 {
        let a = rng.random_range(area[0]..=area[1]) * s * s;
        let ratio = (rng.random_range(min_aspect.ln()..=(1.0 / min_aspect).ln())).exp();
        let h = (a * ratio).sqrt().round() as i32;
        let w = (a / ratio).sqrt().round() as i32;
        if w >= 1 && h >= 1 && w < size as i32 && h < size as i32 {
            let x = rng.random_range(0..=size as i32 - w);
            let y = rng.random_range(0..=size as i32 - h);
            return Op::Erase {
                x,
                y,
                w,
                h,
                seed: rng.random_range(0..i64::MAX),
            };
        }
    }
    let w = (s / 4.0).max(1.0) as i32;
    Op::Erase {
        x: 0,
        y: 0,
        w,
        h: w,
        seed: rng.random_range(0..i64::MAX),
    }
}

/// Reads `image_id`, `partition` and the 40 labels of a `faces` table.
pub fn read_sources(
    path: &std::path::Path,
    partitions: &[Partition],
) -> Result<(Vec<String>, Vec<Labels>)> {
    let mut cols: Vec<String> = vec!["image_id".into(), "partition".into()];
    cols.extend((0..N_ATTRIBUTES).map(attribute_column));
    let names: Vec<&str> = cols.iter().map(String::as_str).collect();
    let wanted: Vec<&str> = partitions.iter().map(|p| p.name()).collect();
    let mut ids = Vec::new();
    let mut labels = Vec::new();
    for b in read_columns(path, &names)? {
        let id = strings(&b, 0)?;
        let part = strings(&b, 1)?;
        for (r, l) in labels_of_batch(&b, 2)?.into_iter().enumerate() {
            if wanted.contains(&part.value(r)) {
                ids.push(id.value(r).to_string());
                labels.push(l);
            }
        }
    }
    Ok((ids, labels))
}

pub fn run(c: &Config, io: &StageIo) -> Result<StageOutput> {
    let ingest = io.input(StageKind::Ingest)?;
    let (ids, sources) = read_sources(&ingest.table(tables::FACES)?, &c.partitions)?;
    if sources.is_empty() {
        let p: Vec<&str> = c.partitions.iter().map(|p| p.name()).collect();
        return Err(data_error!(
            "input `{}` has no rows in partitions {:?}; check `partitions` of both stages",
            ingest.name,
            p
        ));
    }
    if c.strategy == Strategy::Reference
        && let Some((a, v)) = missing_reference(c, &sources)
    {
        let p: Vec<&str> = c.partitions.iter().map(|p| p.name()).collect();
        return Err(data_error!(
            "strategy reference: no {} face has {} = {} to serve as a reference; leave it out of `attributes`",
            p.join(" or "),
            schema::ATTRIBUTES[a],
            u8::from(v)
        ));
    }
    let image_size = ingest.lineage.image_size.unwrap_or(64);
    let seed = c.seed.unwrap_or(io.run_seed);
    let (rows, resolved) = plan(c, &sources, seed, image_size);
    let masks = group_masks();

    let meta = vec![(
        "augment.stage_config".to_string(),
        serde_json::to_string(c)?,
    )];
    let plan_rows = write_plan(
        &io.out_dir.join(tables::PLAN.file),
        &rows,
        &ids,
        &sources,
        &masks,
        &meta,
    )?;

    let before = count(&sources);
    let after = count(&rows.iter().map(|r| r.labels).collect::<Vec<_>>());
    write_label_stats(
        &io.out_dir.join(tables::LABEL_STATS.file),
        &before,
        &after,
        sources.len(),
        rows.len(),
        &meta,
    )?;

    let summary = summarize(c, io, (&sources, &rows), (&before, &after), resolved);
    write_charts(c, io, (sources.len(), rows.len()), (&before, &after))?;
    Ok(StageOutput {
        tables: vec![
            Table::of(tables::PLAN, plan_rows),
            Table::of(tables::LABEL_STATS, N_ATTRIBUTES),
        ],
        files: vec!["label_counts.png".into(), "label_counts.svg".into()],
        summary,
        lineage: Lineage {
            balance_size: c.size,
            ..Lineage::inherit(&io.inputs)
        },
    })
}

/// The summary (spread, MeanIR and CVIR before and after, implausible
/// label vectors), and two lines saying it.
fn summarize(
    c: &Config,
    io: &StageIo,
    (sources, rows): (&[Labels], &[PlanRow]),
    (before, after): (&[u64; N_ATTRIBUTES], &[u64; N_ATTRIBUTES]),
    resolved: usize,
) -> serde_json::Value {
    let masks = group_masks();
    let implausible_orig = sources.iter().filter(|&&l| implausible(l, &masks)).count();
    let implausible_new = rows[sources.len()..]
        .iter()
        .filter(|r| implausible(r.labels, &masks))
        .count();
    let (min_b, max_b, sd_b) = spread(before);
    let (min_a, max_a, sd_a) = spread(after);
    let (_, mean_ir_b) = irlbl(before);
    let (_, mean_ir_a) = irlbl(after);
    let summary = serde_json::json!({
        "strategy": c.strategy.name(),
        "source_rows": sources.len(),
        "plan_rows": rows.len(),
        "new_rows": rows.len() - sources.len(),
        "positives_min_before": min_b, "positives_max_before": max_b, "positives_std_before": sd_b,
        "positives_min_after": min_a, "positives_max_after": max_a, "positives_std_after": sd_a,
        "mean_ir_before": mean_ir_b, "mean_ir_after": mean_ir_a,
        "cvir_before": cvir(before), "cvir_after": cvir(after),
        "implausible_original_rows": implausible_orig,
        "implausible_new_rows": implausible_new,
        "exclusive_groups_changed": resolved,
    });
    io.say(format!(
        "{}: {} source rows -> {} plan rows; positives per attribute min/max/std {}/{}/{:.0} -> {}/{}/{:.0}; MeanIR {:.2} -> {:.2}; CVIR {:.2} -> {:.2}",
        c.strategy.name(), sources.len(), rows.len(), min_b, max_b, sd_b, min_a, max_a, sd_a,
        mean_ir_b, mean_ir_a, cvir(before), cvir(after)
    ));
    io.say(format!(
        "implausible label vectors (two hair colours, bald with hair or bangs, straight+wavy, goatee+no_beard): {implausible_new} of {} new rows ({implausible_orig} among the originals){}",
        rows.len() - sources.len(),
        if c.exclusive_groups { format!("; exclusive_groups changed {resolved} rows") } else { String::new() }
    ));
    summary
}

/// `label_counts.png` / `.svg`: positives per attribute before and after.
fn write_charts(
    c: &Config,
    io: &StageIo,
    (sources, rows): (usize, usize),
    (before, after): (&[u64; N_ATTRIBUTES], &[u64; N_ATTRIBUTES]),
) -> Result<()> {
    let series = vec![
        Series {
            name: "original".into(),
            counts: before.to_vec(),
        },
        Series {
            name: format!("{} ({})", io.name, c.strategy.name()),
            counts: after.to_vec(),
        },
    ];
    let title = format!(
        "Positives per attribute: {} ({sources} rows -> {rows})",
        c.strategy.name(),
    );
    charts::label_counts(&io.out_dir.join("label_counts.png"), &title, &series)?;
    charts::label_counts(&io.out_dir.join("label_counts.svg"), &title, &series)?;
    Ok(())
}

/// Writes the `plan` table in row groups of 65,536 rows.
pub fn write_plan(
    path: &std::path::Path,
    rows: &[PlanRow],
    ids: &[String],
    sources: &[Labels],
    masks: &[Labels],
    meta: &[(String, String)],
) -> Result<usize> {
    let schema = schema::plan();
    let mut w = TableWriter::create(path, schema.clone(), meta, 65_536)?;
    let names: Vec<String> = (0..N_ATTRIBUTES).map(attribute_column).collect();
    for (chunk_no, chunk) in rows.chunks(65_536).enumerate() {
        let base = chunk_no * 65_536;
        let boxes = |f: fn(&Op) -> Option<i32>| -> ArrayRef {
            Arc::new(Int32Array::from_iter(
                chunk.iter().map(|r| r.op.as_ref().and_then(f)),
            ))
        };
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(
                (0..chunk.len()).map(|k| (base + k) as i64),
            )),
            Arc::new(StringArray::from_iter_values(
                chunk.iter().map(|r| ids[r.source].as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                chunk.iter().map(|r| r.strategy.name()),
            )),
            Arc::new(StringArray::from_iter(chunk.iter().map(|r| {
                r.op.map(|o| match o {
                    Op::Flip => "flip",
                    Op::Crop { .. } => "crop",
                    Op::Erase { .. } => "erase",
                })
            }))),
            boxes(|o| match *o {
                Op::Crop { x, .. } | Op::Erase { x, .. } => Some(x),
                Op::Flip => None,
            }),
            boxes(|o| match *o {
                Op::Crop { y, .. } | Op::Erase { y, .. } => Some(y),
                Op::Flip => None,
            }),
            boxes(|o| match *o {
                Op::Crop { w, .. } | Op::Erase { w, .. } => Some(w),
                Op::Flip => None,
            }),
            boxes(|o| match *o {
                Op::Crop { h, .. } | Op::Erase { h, .. } => Some(h),
                Op::Flip => None,
            }),
            Arc::new(Int64Array::from_iter(chunk.iter().map(|r| match r.op {
                Some(Op::Erase { seed, .. }) => Some(seed),
                _ => None,
            }))),
        ];
        for i in 0..N_ATTRIBUTES {
            cols.push(Arc::new(BooleanArray::from_iter(
                chunk.iter().map(|r| Some(label(r.labels, i))),
            )));
        }
        let mut changed = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(
            arrow::datatypes::Field::new("item", arrow::datatypes::DataType::Utf8, false),
        ));
        for r in chunk {
            let diff = r.labels ^ sources[r.source];
            for (i, name) in names.iter().enumerate() {
                if diff >> i & 1 == 1 {
                    changed.values().append_value(name);
                }
            }
            changed.append(true);
        }
        cols.push(Arc::new(changed.finish()));
        cols.push(Arc::new(BooleanArray::from_iter(
            chunk.iter().map(|r| Some(implausible(r.labels, masks))),
        )));
        cols.push(Arc::new(StringArray::from_iter(
            chunk.iter().map(|r| r.reference.map(|k| ids[k].as_str())),
        )));
        w.write(&RecordBatch::try_new(schema.clone(), cols)?)?;
        crate::fault::point(|| "balance:write".into());
    }
    w.finish()
}

fn write_label_stats(
    path: &std::path::Path,
    before: &[u64; N_ATTRIBUTES],
    after: &[u64; N_ATTRIBUTES],
    n_before: usize,
    n_after: usize,
    meta: &[(String, String)],
) -> Result<()> {
    let (ir_b, _) = irlbl(before);
    let (ir_a, _) = irlbl(after);
    let schema = schema::label_stats();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(
                (0..N_ATTRIBUTES).map(attribute_column),
            )),
            Arc::new(StringArray::from_iter_values(ABBREVIATIONS)),
            Arc::new(Int64Array::from_iter_values(
                before.iter().map(|&c| c as i64),
            )),
            Arc::new(Int64Array::from_iter_values(
                after.iter().map(|&c| c as i64),
            )),
            Arc::new(Float64Array::from_iter_values(
                before.iter().map(|&c| c as f64 / n_before.max(1) as f64),
            )),
            Arc::new(Float64Array::from_iter_values(
                after.iter().map(|&c| c as f64 / n_after.max(1) as f64),
            )),
            Arc::new(Float64Array::from_iter(ir_b)),
            Arc::new(Float64Array::from_iter(ir_a)),
        ],
    )?;
    let mut w = TableWriter::create(path, schema, meta, 1 << 16)?;
    w.write(&batch)?;
    w.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(strategy: Strategy, size: Option<f64>) -> Config {
        let mut c: Config = toml::from_str(&format!("strategy = \"{}\"", strategy.name())).unwrap();
        c.size = size;
        c
    }

    #[test]
    fn attributes_restrict_what_generator_strategies_change() {
        let names = ["Male", "Smiling", "Bald", "Young"];
        let allowed: Labels = names
            .iter()
            .map(|n| 1u64 << attribute_index(n).unwrap())
            .sum();
        let sources: Vec<Labels> = (0..50u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect();
        for (strategy, size) in [
            (Strategy::RandomDoubling, None),
            (Strategy::DynamicBalancing, Some(1.5)),
        ] {
            let mut c = cfg(strategy, size);
            c.attributes = Some(names.iter().map(|s| s.to_string()).collect());
            c.top_k = 1;
            c.bottom_k = 1;
            c.validate().unwrap();
            let (rows, _) = plan(&c, &sources, 7, 64);
            let generated: Vec<&PlanRow> = rows
                .iter()
                .filter(|r| r.strategy != PlanStrategy::Original)
                .collect();
            assert!(!generated.is_empty());
            assert!(generated.iter().any(|r| r.labels != sources[r.source]));
            for r in generated {
                assert_eq!((r.labels ^ sources[r.source]) & !allowed, 0, "{strategy:?}");
            }
        }
        let mut c = cfg(Strategy::DynamicBalancing, Some(1.5));
        c.attributes = Some(vec!["Male".into(), "Smiling".into()]);
        assert!(
            c.validate()
                .unwrap_err()
                .contains("exceeds the 2 attributes")
        );
        let mut c = cfg(Strategy::Flip, None);
        c.attributes = Some(vec!["Male".into()]);
        assert!(c.validate().is_err());
    }

    #[test]
    fn exclusions_are_detected_and_resolved() {
        let masks = group_masks();
        let black = 1u64 << attribute_index("Black_Hair").unwrap();
        let blond = 1u64 << attribute_index("Blond_Hair").unwrap();
        let bald = 1u64 << attribute_index("Bald").unwrap();
        assert!(!implausible(black, &masks));
        assert!(implausible(black | blond, &masks));
        assert!(implausible(
            bald | (1 << attribute_index("Bangs").unwrap()),
            &masks
        ));
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..50 {
            let r = resolve_exclusions(black | blond | bald, &masks, &mut rng);
            assert!(!implausible(r, &masks));
            assert_eq!(r.count_ones(), 1);
        }
    }

    #[test]
    fn classic_copies_keep_labels_and_boxes_fit() {
        let sources: Vec<Labels> = (0..10).map(|i| i * 977).collect();
        for s in [Strategy::Flip, Strategy::Crop, Strategy::Erase] {
            let (rows, _) = plan(&cfg(s, Some(4.0)), &sources, 3, 64);
            assert_eq!(rows.len(), 40);
            for r in &rows[10..] {
                assert_eq!(r.labels, sources[r.source]);
                if let Some(Op::Crop { x, y, w, h } | Op::Erase { x, y, w, h, .. }) = r.op {
                    assert!(x >= 0 && y >= 0 && x + w <= 64 && y + h <= 64, "{:?}", r.op);
                }
            }
        }
    }

    #[test]
    fn reference_rows_flip_one_attribute_towards_a_reference_with_it() {
        let sources: Vec<Labels> = (0..200u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 7)
            .collect();
        let mut c = cfg(Strategy::Reference, None);
        c.attributes = Some(vec!["Male".into(), "Gray_Hair".into(), "Smiling".into()]);
        c.validate().unwrap();
        assert_eq!(missing_reference(&c, &sources), None);
        let (rows, _) = plan(&c, &sources, 11, 64);
        assert_eq!(rows.len(), 400);
        let allowed: Vec<usize> = c.candidates().unwrap();
        for r in &rows[200..] {
            assert_eq!(r.strategy, PlanStrategy::Reference);
            let diff = r.labels ^ sources[r.source];
            assert_eq!(diff.count_ones(), 1);
            let a = diff.trailing_zeros() as usize;
            assert!(allowed.contains(&a));
            let k = r.reference.expect("every row has a reference");
            assert_ne!(k, r.source);
            assert_eq!(label(sources[k], a), label(r.labels, a));
        }
        assert!(rows[..200].iter().all(|r| r.reference.is_none()));
        // Deterministic per seed, different across seeds.
        assert_eq!(plan(&c, &sources, 11, 64).0, rows);
        assert_ne!(plan(&c, &sources, 12, 64).0, rows);
        // No source has Bald = 1: no reference can show it.
        let bald = attribute_index("Bald").unwrap();
        let no_bald: Vec<Labels> = sources.iter().map(|l| l & !(1 << bald)).collect();
        c.attributes = Some(vec!["Male".into(), "Bald".into()]);
        assert_eq!(missing_reference(&c, &no_bald), Some((bald, true)));
        assert!(cfg(Strategy::Reference, Some(3.0)).validate().is_err());
    }

    #[test]
    fn ml_ros_raises_minority_labels() {
        let bald = attribute_index("Bald").unwrap();
        let mut sources: Vec<Labels> = vec![1 << 0; 90];
        sources.extend(vec![1u64 << bald | 1; 10]);
        let (rows, _) = plan(&cfg(Strategy::MlRos, Some(1.5)), &sources, 1, 64);
        assert_eq!(rows.len(), 150);
        let after = count(&rows.iter().map(|r| r.labels).collect::<Vec<_>>());
        assert!(after[bald] > 10 + 40, "{}", after[bald]);
    }
}
