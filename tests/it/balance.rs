//! The paper's invariants of the balance strategies (Liu et al. Sec. IV) on the
//! real attribute file: all 162,770 train rows of `$AUGMENT_CELEBA_DIR`.
//! Expected values are computed here from the text file, not with the stage's code.

use std::collections::HashMap;

use crate::common::*;
use arrow::array::AsArray;

/// (source id, strategy, 40 labels) of every plan row, in sample_id order.
fn read_plan(path: &std::path::Path) -> Vec<(String, String, [bool; 40])> {
    let mut rows = Vec::new();
    for b in read_parquet(path) {
        let src = b
            .column_by_name("source_image_id")
            .unwrap()
            .as_string::<i32>()
            .clone();
        let strat = b
            .column_by_name("strategy")
            .unwrap()
            .as_string::<i32>()
            .clone();
        let attrs: Vec<_> = (0..40)
            .map(|i| b.column(9 + i).as_boolean().clone())
            .collect();
        for r in 0..b.num_rows() {
            let mut l = [false; 40];
            for i in 0..40 {
                l[i] = attrs[i].value(r);
            }
            rows.push((src.value(r).to_string(), strat.value(r).to_string(), l));
        }
    }
    rows
}

fn std_dev(c: &[u64; 40]) -> f64 {
    let m = c.iter().sum::<u64>() as f64 / 40.0;
    (c.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / 40.0).sqrt()
}

#[test]
fn random_doubling_and_dynamic_balancing_invariants() {
    let Some(celeba) = celeba_dir("random_doubling_and_dynamic_balancing_invariants") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let p = format!(
        "[run]\nname = \"b\"\ndir = \"run\"\nseed = 11\n\
         [stages.ingest]\nkind = \"ingest\"\nroot = {:?}\nimages = false\n\
         [stages.doubling]\nkind = \"balance\"\ninputs = [\"ingest\"]\nstrategy = \"random_doubling\"\n\
         [stages.dynamic]\nkind = \"balance\"\ninputs = [\"ingest\"]\nstrategy = \"dynamic_balancing\"\nsize = 2.0\n",
        celeba.display().to_string()
    );
    write(&d.path().join("p.toml"), &p);
    augment_ok(&["run", "p.toml", "-q"], d.path());

    // Train rows (official split: ids 1..=162,770) from the text file.
    let (_, ids, labels) = parse_attr_independently(&celeba.join("list_attr_celeba.txt"));
    let n = 162_770;
    let src: HashMap<&str, [bool; 40]> = ids[..n]
        .iter()
        .map(String::as_str)
        .zip(labels[..n].iter().copied())
        .collect();
    let mut base = [0u64; 40];
    for l in &labels[..n] {
        for i in 0..40 {
            base[i] += l[i] as u64;
        }
    }

    // Random doubling: exactly 2N rows; each new row differs from its source in
    // exactly one attribute; every source used once; the flipped attribute is uniform.
    let rd = read_plan(&d.path().join("run/doubling/plan.parquet"));
    assert_eq!(rd.len(), 2 * n);
    let mut flips = [0u64; 40];
    let mut seen = std::collections::HashSet::new();
    let mut rd_counts = [0u64; 40];
    for (k, (s, strat, l)) in rd.iter().enumerate() {
        for i in 0..40 {
            rd_counts[i] += l[i] as u64;
        }
        if k < n {
            assert_eq!(strat, "original");
            assert_eq!(l, &src[s.as_str()]);
            continue;
        }
        assert_eq!(strat, "random_doubling");
        assert!(seen.insert(s.clone()), "source {s} used twice");
        let diff: Vec<usize> = (0..40).filter(|&i| l[i] != src[s.as_str()][i]).collect();
        assert_eq!(diff.len(), 1, "row {k} differs in {diff:?}");
        flips[diff[0]] += 1;
    }
    let expect = n as f64 / 40.0;
    let chi2: f64 = flips
        .iter()
        .map(|&f| (f as f64 - expect).powi(2) / expect)
        .sum();
    assert!(
        chi2 < 80.0,
        "flipped attribute far from uniform: chi2 = {chi2:.1} (39 dof), {flips:?}"
    );

    // Dynamic balancing: 2N rows; replaying the paper's steps with counts kept
    // here, every new row has its 8 rarest attributes (at the time) set to 1 and
    // its 8 most frequent set to 0. Ties at the rank boundary may go either way.
    let db = read_plan(&d.path().join("run/dynamic/plan.parquet"));
    assert_eq!(db.len(), 2 * n);
    let mut counts = base;
    for (k, (s, strat, l)) in db.iter().enumerate().skip(n) {
        assert_eq!(strat, "dynamic_balancing");
        let mut sorted = counts;
        sorted.sort_unstable();
        let (eighth_lowest, eighth_highest) = (sorted[7], sorted[32]);
        let forced_on: Vec<usize> = (0..40).filter(|&i| counts[i] < eighth_lowest).collect();
        let forced_off: Vec<usize> = (0..40).filter(|&i| counts[i] > eighth_highest).collect();
        for &i in &forced_on {
            assert!(l[i], "row {k}: rare attribute {i} not set");
        }
        for &i in &forced_off {
            assert!(!l[i], "row {k}: frequent attribute {i} not cleared");
        }
        let on_boundary = (0..40)
            .filter(|&i| counts[i] == eighth_lowest && l[i])
            .count();
        assert!(
            forced_on.len() + on_boundary >= 8,
            "row {k}: fewer than 8 rare attributes set"
        );
        // Attributes in neither group keep the source's value.
        for i in 0..40 {
            if counts[i] > eighth_lowest && counts[i] < eighth_highest {
                assert_eq!(l[i], src[s.as_str()][i], "row {k}: attribute {i} changed");
            }
        }
        for i in 0..40 {
            counts[i] += l[i] as u64;
        }
    }
    // The spread of per-attribute positives falls far below random doubling's
    // (paper, Sec. IV-C: std 64.9k -> 29.8k).
    let (sd_rd, sd_db) = (std_dev(&rd_counts), std_dev(&counts));
    eprintln!(
        "positives per attribute: random doubling min {} max {} std {sd_rd:.0}; dynamic balancing min {} max {} std {sd_db:.0}",
        rd_counts.iter().min().unwrap(),
        rd_counts.iter().max().unwrap(),
        counts.iter().min().unwrap(),
        counts.iter().max().unwrap()
    );
    assert!(sd_db < 0.6 * sd_rd, "{sd_db} vs {sd_rd}");
    assert!(counts.iter().min() > rd_counts.iter().min());
    assert!(counts.iter().max() < rd_counts.iter().max());

    // The stage's label_stats agree with the counts made here.
    let out = augment_ok(
        &[
            "sql",
            "run",
            "SELECT positives_after FROM dynamic_label_stats",
            "--format",
            "csv",
        ],
        d.path(),
    );
    let got: Vec<u64> = out
        .trim()
        .lines()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(got, counts.to_vec());
    // SQL over the plan without quoting.
    let out = augment_ok(
        &[
            "sql",
            "run",
            "SELECT strategy, count(*) AS n, avg(CAST(bald AS DOUBLE)) > 0.3 AS bald_up FROM dynamic_plan GROUP BY strategy ORDER BY strategy",
            "--format",
            "csv",
        ],
        d.path(),
    );
    assert_eq!(
        out.trim(),
        "strategy,n,bald_up\ndynamic_balancing,162770,true\noriginal,162770,false"
    );
}
