//! Tests on the real CelebA files in `$AUGMENT_CELEBA_DIR` (CI: ../shared/data/celeba):
//! the full attribute file, the 2,000 shared images, and each failure mode of
//! ingest on a small copy. Skipped, with a line saying why, when the variable is unset.

use std::path::Path;

use crate::common::*;
use arrow::array::{Array, AsArray};

fn pipeline(dir: &Path, root: &Path, extra: &str) {
    let text = format!(
        "[run]\nname = \"c\"\ndir = \"run\"\n[stages.ingest]\nkind = \"ingest\"\nroot = {:?}\n{extra}\n",
        root.display().to_string()
    );
    write(&dir.join("p.toml"), &text);
}

#[test]
fn full_attribute_file_parses_with_independent_counts() {
    let Some(celeba) = celeba_dir("full_attribute_file_parses_with_independent_counts") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    pipeline(d.path(), &celeba, "images = false");
    augment_ok(&["run", "p.toml", "-q"], d.path());
    let (names, ids, labels) = parse_attr_independently(&celeba.join("list_attr_celeba.txt"));
    assert_eq!(ids.len(), 202_599);
    // `5_o_clock_shadow` starts with a digit, so SQL needs it quoted.
    let sums: Vec<String> = names
        .iter()
        .map(|n| format!("sum(CAST(\"{}\" AS BIGINT))", n.to_lowercase()))
        .collect();
    let sql = format!("SELECT count(*), {} FROM faces", sums.join(", "));
    let out = sql_csv(d.path(), &sql);
    let row: Vec<u64> = out
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(row[0], 202_599);
    for (i, name) in names.iter().enumerate() {
        let expected = labels.iter().filter(|l| l[i]).count() as u64;
        assert_eq!(row[i + 1], expected, "positives of {name}");
    }
    // Spot values from the paper's Sec. V / the task: Bald ~2%, No_Beard ~83%.
    assert_eq!(row[1 + 4], 4_547);
    assert_eq!(row[1 + 24], 169_158);
    // Official split, no rejects for missing images when images = false.
    let out = augment_ok(
        &[
            "sql",
            "run",
            "SELECT partition, count(*) FROM faces GROUP BY partition ORDER BY partition",
            "--format",
            "csv",
        ],
        d.path(),
    );
    assert_eq!(
        out.trim(),
        "partition,count(*)\ntest,19962\ntrain,162770\nval,19867"
    );
    let out = augment_ok(
        &[
            "sql",
            "run",
            "SELECT count(*) AS n FROM rejects",
            "--format",
            "csv",
        ],
        d.path(),
    );
    assert_eq!(out.trim(), "n\n0");
}

#[test]
fn shared_images_ingest_completely() {
    let Some(celeba) = celeba_dir("shared_images_ingest_completely") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    pipeline(d.path(), &celeba, "");
    let (code, _, err) = augment(&["run", "p.toml"], d.path());
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(
            "2,000 of 202,599 annotated images found; 0 rejected; 0 on disk without annotation"
        ),
        "{err}"
    );
    let out = augment_ok(
        &[
            "sql",
            "run",
            "SELECT partition, count(*) AS n FROM faces GROUP BY partition ORDER BY partition",
            "--format",
            "csv",
        ],
        d.path(),
    );
    assert_eq!(out.trim(), "partition,n\ntest,205\ntrain,1560\nval,235");
    // Every image on disk was used: the only rejects are annotated images that are not on disk.
    let out = augment_ok(
        &[
            "sql",
            "run",
            "SELECT reason, count(*) AS n FROM rejects GROUP BY reason",
            "--format",
            "csv",
        ],
        d.path(),
    );
    assert_eq!(out.trim(), "reason,n\nmissing,200599");
    // 64x64 PNGs in the HF image struct; identities joined; annotation md5 recorded.
    let batches = read_parquet(&d.path().join("run/ingest/faces.parquet"));
    let b = &batches[0];
    let img = b.column_by_name("image").unwrap().as_struct();
    let png = img.column(0).as_binary::<i32>().value(0);
    let decoded = image::load_from_memory(png).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (64, 64));
    assert!(b.column_by_name("identity").unwrap().null_count() == 0);
    // The metadata lives in the embedded Arrow schema, where pyarrow/pandas/datasets read it.
    let f = std::fs::File::open(d.path().join("run/ingest/faces.parquet")).unwrap();
    let builder =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).unwrap();
    let kv = builder.schema().metadata().clone();
    let get = |k: &str| kv.get(k).cloned().unwrap();
    assert!(get("augment.annotation_md5").contains("75e246fa4810816ffd6ee81facbd244c"));
    assert!(get("huggingface").contains("\"_type\":\"Image\""));
}

#[test]
fn truncated_jpeg_is_rejected_with_the_byte_it_ends_at() {
    let Some(celeba) = celeba_dir("truncated_jpeg_is_rejected_with_the_byte_it_ends_at") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("celeba");
    let files = small_copy(&celeba, &root, 20);
    let victim = root.join("img_align_celeba").join(&files[3]);
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..600]).unwrap(); // a truncated download
    // 1 of 20 = 5% > the default 1%: the stage fails and names the image.
    pipeline(d.path(), &root, "");
    let (code, _, err) = augment(&["run", "p.toml"], d.path());
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&files[3]) && err.contains("max_reject_fraction"),
        "{err}"
    );
    assert!(!d.path().join("run/ingest").exists());
    // Allowed: 19 rows and the decoder's message in `rejects`.
    pipeline(d.path(), &root, "max_reject_fraction = 0.1");
    augment_ok(&["run", "p.toml", "-q"], d.path());
    let out = augment_ok(
        &[
            "sql",
            "run",
            "SELECT image_id, reason, detail FROM rejects",
            "--format",
            "csv",
        ],
        d.path(),
    );
    let out = out.replace('"', "");
    let lines: Vec<&str> = out.trim().lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[1].starts_with(&format!("{},truncated,truncated at byte 600", files[3])),
        "{out}"
    );
    assert!(
        lines[1].len() > files[3].len() + 20,
        "the decoder's message is kept: {out}"
    );
    let out = augment_ok(
        &[
            "sql",
            "run",
            "SELECT count(*) AS n FROM faces",
            "--format",
            "csv",
        ],
        d.path(),
    );
    assert_eq!(out.trim(), "n\n19");
}

#[test]
fn missing_and_unannotated_images_go_to_rejects() {
    let Some(celeba) = celeba_dir("missing_and_unannotated_images_go_to_rejects") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("celeba");
    let files = small_copy(&celeba, &root, 20);
    std::fs::remove_file(root.join("img_align_celeba").join(&files[0])).unwrap();
    std::fs::copy(
        root.join("img_align_celeba").join(&files[1]),
        root.join("img_align_celeba/999999.jpg"),
    )
    .unwrap();
    pipeline(d.path(), &root, "max_reject_fraction = 0.1");
    let (code, _, err) = augment(&["run", "p.toml"], d.path());
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("19 of 20 annotated images found; 0 rejected; 1 on disk without annotation"),
        "{err}"
    );
    let out = augment_ok(
        &[
            "sql",
            "run",
            "SELECT image_id, reason FROM rejects ORDER BY image_id",
            "--format",
            "csv",
        ],
        d.path(),
    );
    assert_eq!(
        out.trim(),
        format!(
            "image_id,reason\n{},missing\n999999.jpg,not_annotated",
            files[0]
        )
    );
}

fn attr_error(celeba: &Path, edit: impl Fn(&str) -> String) -> String {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("celeba");
    small_copy(celeba, &root, 10);
    let p = root.join("list_attr_celeba.txt");
    let text = std::fs::read_to_string(&p).unwrap();
    write(&p, &edit(&text));
    pipeline(d.path(), &root, "");
    let (code, _, err) = augment(&["run", "p.toml"], d.path());
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("list_attr_celeba.txt"), "{err}");
    err
}

#[test]
fn truncated_line_minus_two_and_html_name_file_and_line() {
    let Some(celeba) = celeba_dir("truncated_line_minus_two_and_html_name_file_and_line") else {
        return;
    };
    // Row 4 (line 6) loses its last 10 values.
    let err = attr_error(&celeba, |t| {
        let mut lines: Vec<String> = t.split("\r\n").map(String::from).collect();
        let f: Vec<&str> = lines[5].split_whitespace().collect();
        lines[5] = f[..31].join(" ");
        lines.join("\r\n")
    });
    assert!(
        err.contains("line 6") && err.contains("found 30 values"),
        "{err}"
    );
    // A -2 for Bald (5th attribute) on line 3.
    let err = attr_error(&celeba, |t| {
        let mut lines: Vec<String> = t.split("\r\n").map(String::from).collect();
        let mut f: Vec<String> = lines[2].split_whitespace().map(String::from).collect();
        f[5] = "-2".into();
        lines[2] = f.join(" ");
        lines.join("\r\n")
    });
    assert!(
        err.contains("line 3") && err.contains("\"-2\"") && err.contains("Bald"),
        "{err}"
    );
    // A Google Drive quota page saved under the file's name.
    let err = attr_error(&celeba, |_| {
        "<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body>Too many users have viewed or downloaded this file recently.</body></html>".into()
    });
    assert!(err.contains("HTML page"), "{err}");
    // A row count that disagrees with line 1.
    let err = attr_error(&celeba, |t| t.replacen("10\r\n", "11\r\n", 1));
    assert!(
        err.contains("declares 11 images but the file has 10 rows"),
        "{err}"
    );
}
