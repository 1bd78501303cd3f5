//! Metrics against their reference implementations, on committed fixtures
//! (values written once by the script next to them; CI only reads them).

mod common;

use std::path::{Path, PathBuf};

use augment::metrics::msssim::{Planar, ms_ssim, psnr, ssim};
use common::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/msssim")
}

fn load(name: &str) -> Planar {
    let img = image::open(fixtures().join(name)).unwrap().into_rgb8();
    Planar::from_rgb(&img)
}

fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("reference.json")).unwrap())
        .unwrap()
}

fn close(got: f64, want: f64, rel: f64, what: &str) {
    assert!(
        ((got - want) / want).abs() <= rel,
        "{what}: got {got}, pytorch_msssim {want}"
    );
}

/// tests/fixtures/msssim/make_reference.py (pytorch_msssim 1.0.0): SSIM,
/// MS-SSIM (≥ 161 px: the reference's 5 scales, including odd sizes whose
/// pooling pads with zeros) and PSNR within 1e-4 relative.
#[test]
fn ms_ssim_ssim_and_psnr_match_pytorch_msssim() {
    let r = reference();
    for pair in ["large", "odd", "small"] {
        let a = load(&format!("{pair}_a.png"));
        let b = load(&format!("{pair}_b.png"));
        let want = &r[pair];
        close(
            ssim(&a, &b, 255.0).unwrap(),
            want["ssim"].as_f64().unwrap(),
            1e-4,
            &format!("{pair} ssim"),
        );
        close(
            psnr(&a, &b, 255.0).unwrap(),
            want["psnr"].as_f64().unwrap(),
            1e-6,
            &format!("{pair} psnr"),
        );
        if let Some(m) = want.get("ms_ssim") {
            let got = ms_ssim(&a, &b, 255.0).unwrap();
            assert_eq!((got.levels, got.window), (5, 11));
            close(
                got.value,
                m.as_f64().unwrap(),
                1e-4,
                &format!("{pair} ms_ssim"),
            );
        }
    }
}

#[test]
fn ms_ssim_command_pairs_folders_by_name() {
    let d = tempfile::tempdir().unwrap();
    for side in ["a", "b"] {
        std::fs::create_dir(d.path().join(side)).unwrap();
        for pair in ["large", "odd"] {
            std::fs::copy(
                fixtures().join(format!("{pair}_{side}.png")),
                d.path().join(side).join(format!("{pair}.png")),
            )
            .unwrap();
        }
    }
    // An unpaired file is reported, not compared.
    std::fs::copy(fixtures().join("small_a.png"), d.path().join("a/extra.png")).unwrap();
    let out = augment_ok(&["ms-ssim", "a", "b", "--json"], d.path());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let r = reference();
    let want =
        (r["large"]["ms_ssim"].as_f64().unwrap() + r["odd"]["ms_ssim"].as_f64().unwrap()) / 2.0;
    close(v["value"].as_f64().unwrap(), want, 1e-4, "mean ms_ssim");
    assert_eq!(v["pairs"], 2);
    assert_eq!(v["only_in_a"], 1);
    assert_eq!(v["levels"], 5);

    // SG-GAN's background metric: the top-left 10×10 crop, one scale, window 9.
    let out = augment_ok(&["ms-ssim", "a", "b", "--crop", "10"], d.path());
    assert!(
        out.contains("over 2 pairs; 1 scales, window 9; top-left 10×10 crop"),
        "{out}"
    );

    let out = augment_ok(&["psnr", "a", "a"], d.path());
    assert!(
        out.contains("3 identical pairs (infinite PSNR) left out"),
        "{out}"
    );

    let (code, _, err) = augment(&["psnr", "a", "nowhere.txt"], d.path());
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("not an image folder or a .parquet table"),
        "{err}"
    );
}

#[test]
fn ms_ssim_command_reads_parquet_tables_with_a_filter() {
    let d = tempfile::tempdir().unwrap();
    write(
        &d.path().join("p.toml"),
        "[run]\nname = \"m\"\ndir = \"run\"\n[stages.ingest]\nkind = \"ingest\"\nsource = \"demo\"\nn = 60\nimage_size = 32\n",
    );
    augment_ok(&["run", "p.toml"], d.path());
    let faces = "run/ingest/faces.parquet";
    let out = augment_ok(
        &[
            "ms-ssim",
            faces,
            faces,
            "--where",
            "partition = 'train'",
            "--json",
        ],
        d.path(),
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["pairs"], 48, "{out}");
    assert!((v["value"].as_f64().unwrap() - 1.0).abs() < 1e-9);
    assert_eq!(v["levels"], 2, "32 px: two scales fit the 11-px window");
}
