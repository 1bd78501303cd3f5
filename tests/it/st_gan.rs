//! ST-GAN (Zhang et al., "ST-GAN") end to end on real CelebA (tiny preset, CPU): trained
//! without labels through the `augment` binary, its losses, mutual
//! information and reconstruction move the right way, a real-face
//! classifier maps its codes to attributes, synthesize edits faces with
//! them, the label columns do not touch training, and bad configs get one
//! clear line.

use crate::common::*;

const STAGES: &str = r#"
[stages.judge]
kind = "train_classifier"
inputs = ["ingest"]
size = "tiny"
epochs = 3
lr = 1e-3
attributes = ["Male", "Smiling", "Young", "Eyeglasses", "Bangs"]

[stages.stg]
kind = "train_generator"
inputs = ["ingest", "judge"]
model = "st_gan"
preset = "tiny"
log_every = 1
sample_every = 450
checkpoint_every = 450
st_gan.steps = 900
st_gan.lr = 5e-4
st_gan.d_lr = 5e-4

[stages.doubling]
kind = "balance"
inputs = ["ingest"]
strategy = "random_doubling"
attributes = ["Male"]

[stages.synth]
kind = "synthesize"
inputs = ["ingest", "doubling", "stg"]
"#;

/// About 2 minutes on 2 cores.
#[test]
fn st_gan_learns_without_labels_and_edits_faces_through_its_attribute_map() {
    let name = "st_gan_learns_without_labels_and_edits_faces_through_its_attribute_map";
    let Some(root) = celeba_dir(name) else {
        return;
    };
    let Some(weights) = fid_weights(name) else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    // lr 5e-4 instead of the paper's 1e-4: 900 steps have to show the direction.
    PipelineFile::celeba("stg", 0, &root)
        .stages(STAGES)
        .stages(&format!(
            r#"
[stages.eval]
kind = "evaluate"
inputs = ["ingest", "judge", "synth", "stg"]
fid = true
weights = {:?}
fid_samples = 24
kid = false
translation_samples = 200
"#,
            weights.display().to_string()
        ))
        .write(d.path());
    let (code, _, err) = augment(&["run", "p.toml"], d.path());
    assert_eq!(code, 0, "{err}");
    let run = d.path().join("run");
    let s = &manifest(&run)["stages"]["stg"]["summary"];
    eprintln!("{}", serde_json::to_string_pretty(s).unwrap());

    // E learns to invert G: L_prior falls in training ...
    for loss in ["E/prior_z", "E/prior_c"] {
        let (a, b) = first_last_50(d.path(), "train_log", loss);
        assert!(b < 0.6 * a, "{loss}: first 50 steps {a}, last 50 {b}");
    }
    // ... and on a fixed prior batch under the final G and D, E's losses
    // (eq. 6's feature term included) are far below the initial E's.
    for key in ["fixed_prior_z", "fixed_prior_c", "fixed_feature"] {
        let (a, b) = (num(&s[format!("{key}_init")]), num(&s[key]));
        assert!(b < 0.6 * a, "{key}: {a} -> {b}");
    }
    // The critic's estimate starts at about 0 and rises.
    let (w0, w) = (num(&s["wasserstein_init"]), num(&s["wasserstein"]));
    assert!(w0.abs() < 0.1 && w > w0 + 0.5, "Wasserstein {w0} -> {w}");
    // Mutual information: from about 0 (the c₂ part's constants make it
    // slightly negative) to at least half of ln 10, Q's c₁ accuracy from
    // chance to well above it.
    let ln10 = 10f64.ln();
    let (m0, m) = (num(&s["mi_lower_bound_init"]), num(&s["mi_lower_bound"]));
    assert!(m0 < 0.25 * ln10 && m >= 0.5 * ln10, "MI bound {m0} -> {m}");
    let (a0, a) = (num(&s["q_c1_accuracy_init"]), num(&s["q_c1_accuracy"]));
    assert!(a0 < 0.2 && a > 0.4, "Q's c1 accuracy {a0} -> {a}");
    // Reconstruction of 64 val faces, G(E(x)), improves.
    let (p0, p) = (
        num(&s["reconstruction_psnr_init"]),
        num(&s["reconstruction_psnr"]),
    );
    assert!(p >= p0 + PSNR_GAIN_DB, "PSNR {p0} -> {p}");
    let (q0, q) = (
        num(&s["reconstruction_ms_ssim_init"]),
        num(&s["reconstruction_ms_ssim"]),
    );
    assert!(q > q0, "MS-SSIM {q0} -> {q}");

    // The attribute map: one row per judge attribute, ten c₁ rows and one
    // c₂ row each in latent_map; Male is usable (the judge separates it).
    let out = sql_csv(
        d.path(),
        "SELECT count(*) AS n, count(DISTINCT unit) AS units FROM latent_map",
    );
    assert_eq!(out.trim(), "n,units\n55,11", "{out}");
    let out = sql_csv(
        d.path(),
        "SELECT usable, on_rate - off_rate >= 0.2 AS big FROM attribute_map WHERE attribute = 'Male'",
    );
    assert_eq!(out.trim(), "usable,big\ntrue,true", "{out}");

    // Synthesize: every generated row flips Male and nothing else, and is
    // a new image of the ingest size.
    let out = sql_csv(
        d.path(),
        "SELECT count(*) AS n, sum(CASE WHEN s.male <> f.male THEN 1 ELSE 0 END) AS flipped, \
         sum(CASE WHEN s.smiling <> f.smiling OR s.bald <> f.bald THEN 1 ELSE 0 END) AS other \
         FROM synth_synth s JOIN faces f ON s.source_image_id = f.image_id",
    );
    assert_eq!(out.trim(), "n,flipped,other\n1560,1560,0", "{out}");
    for file in [
        "stg/generator.safetensors",
        "stg/encoder.safetensors",
        "stg/critic.safetensors",
        "stg/traversal_c1.png",
        "stg/traversal_c2.png",
        "stg/prior_samples.png",
        "stg/samples/st_gan_0000900.png",
        "synth/grid.png",
    ] {
        assert!(run.join(file).is_file(), "{file} missing");
    }
    let model: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("stg/model.json")).unwrap())
            .unwrap();
    assert_eq!(model["model"], "st_gan");
    assert_eq!(model["variant"], "global");
    assert_eq!(model["st_gan"]["categorical"], 10);

    // Evaluate: FID of the synthesized rows and of prior samples G(z, c),
    // the editing metrics through the judge, the reconstructions of test
    // faces, and the Inception Score reported as unavailable.
    let out = sql_csv(
        d.path(),
        "SELECT stage, metric, n, value > 0 AS positive FROM eval_metrics WHERE attribute IS NULL \
         AND metric IN ('fid', 'editing_accuracy', 'reconstruction_psnr', 'reconstruction_ms_ssim') ORDER BY stage, metric",
    );
    assert_eq!(
        out.trim(),
        "stage,metric,n,positive\nstg,fid,24,true\nstg,reconstruction_ms_ssim,205,true\nstg,reconstruction_psnr,205,true\n\
         synth,editing_accuracy,200,true\nsynth,fid,24,true",
        "{out}"
    );
    let out = sql_csv(
        d.path(),
        "SELECT details FROM eval_metrics WHERE stage = 'stg' AND metric = 'reconstruction_psnr'",
    );
    assert!(
        out.contains("inception_score") && out.contains("unavailable"),
        "{out}"
    );

    // A plan that changes an attribute no latent controls: one clear line.
    let text = std::fs::read_to_string(d.path().join("p.toml")).unwrap();
    write(
        &d.path().join("bad.toml"),
        &text.replace("attributes = [\"Male\"]", "attributes = [\"Eyeglasses\"]"),
    );
    let (code, _, err) = augment(&["run", "bad.toml"], d.path());
    assert_ne!(code, 0);
    assert!(
        err.contains("changes Eyeglasses, which no ST-GAN latent controls (usable: "),
        "{err}"
    );
    // Without a judge there is no attribute map to edit with.
    write(
        &d.path().join("nojudge.toml"),
        &text.replace("inputs = [\"ingest\", \"judge\"]", "inputs = [\"ingest\"]"),
    );
    let (code, _, err) = augment(&["run", "nojudge.toml"], d.path());
    assert_ne!(code, 0);
    assert!(
        err.contains("st_gan needs an attribute map: add a train_classifier stage trained on real faces to stg's inputs"),
        "{err}"
    );
}

/// Set from the measured run (see the closing note of issue #17).
const PSNR_GAIN_DB: f64 = 1.0;

/// ST-GAN never reads labels: shuffling the label columns between faces
/// gives bit-identical weights.
#[test]
fn shuffled_labels_give_bit_identical_st_gan_weights() {
    let Some(celeba) = celeba_dir("shuffled_labels_give_bit_identical_st_gan_weights") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let mut weights = Vec::new();
    for shuffle in [false, true] {
        let root = d.path().join(format!("celeba_{shuffle}"));
        small_copy(&celeba, &root, 64);
        if shuffle {
            // Rotate the label part of every row by one row.
            let p = root.join("list_attr_celeba.txt");
            let text = std::fs::read_to_string(&p).unwrap();
            let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
            let rows = &lines[2..];
            let split = |l: &str| {
                let (id, rest) = l.split_once(' ').unwrap();
                (id.to_string(), rest.to_string())
            };
            let mut out = format!("{}\r\n{}\r\n", lines[0], lines[1]);
            for (k, r) in rows.iter().enumerate() {
                let (id, _) = split(r);
                let (_, labels) = split(rows[(k + 1) % rows.len()]);
                out.push_str(&format!("{id} {labels}\r\n"));
            }
            assert_ne!(out, text);
            write(&p, &out);
        }
        let dir = d.path().join(format!("run_{shuffle}"));
        std::fs::create_dir_all(&dir).unwrap();
        PipelineFile::celeba("shuffle", 3, &root)
            .stages(
                r#"
[stages.stg]
kind = "train_generator"
inputs = ["ingest"]
model = "st_gan"
preset = "tiny"
log_every = 5
sample_every = 0
st_gan.steps = 10
st_gan.batch_size = 8
"#,
            )
            .write(&dir);
        let (code, _, err) = augment(&["run", "p.toml"], &dir);
        assert_eq!(code, 0, "{err}");
        let out = dir.join("run/stg");
        weights.push(
            ["generator", "encoder", "critic"]
                .map(|n| std::fs::read(out.join(format!("{n}.safetensors"))).unwrap()),
        );
    }
    for (k, name) in ["generator", "encoder", "critic"].iter().enumerate() {
        assert!(
            weights[0][k] == weights[1][k],
            "{name} differs with shuffled labels"
        );
    }
}

/// Bad `st_gan` configs fail before anything runs, with one line each.
#[test]
fn bad_st_gan_configs_get_one_line_errors() {
    assert_one_line_config_errors(
        "[stages.stg]\nkind = \"train_generator\"\ninputs = [\"ingest\"]\nmodel = \"st_gan\"\npreset = \"tiny\"",
        &[
            (
                "st_gan.variant = \"x\"",
                "st_gan.variant = \"x\": must be \"global\" or \"local\"",
            ),
            (
                "st_gan.feature_layer = 7",
                "st_gan.feature_layer = 7: D has 3 conv blocks",
            ),
            (
                "st_gan.categorical = 0\nst_gan.continuous = 0",
                "st_gan needs a latent code: categorical ≥ 2 or continuous ≥ 1",
            ),
            ("st_gan.n_critic = 0", "st_gan.n_critic must be at least 1"),
            (
                "st_gan.lambda_mi = -1.0",
                "st_gan.lambda_mi = -1: must be 0 or positive",
            ),
            (
                "st_gan.variant = \"local\"",
                "st_gan.variant = \"local\" needs st_gan.mask (\"eyes\", \"mouth\" or [top, left, height, width] in (0, 1])",
            ),
            (
                "st_gan.variant = \"local\"\nst_gan.mask = [0.5, 0.2, 0.7, 0.3]",
                "st_gan.variant = \"local\" needs st_gan.mask",
            ),
            (
                "st_gan.blend = \"poisson\"",
                "st_gan.blend is for variant = \"local\"",
            ),
            (
                "translation.steps = 5",
                "`translation` is for model = \"sggan\" or \"stargan\", not st_gan; st_gan reads `st_gan`",
            ),
        ],
    );
}

/// LST-GAN end to end on demo faces: Q reads only the eye box, synthesize
/// decodes the edit and Poisson-blends the box back into the source face,
/// so every pixel outside the box is the source's, and the box changed.
#[test]
fn lst_gan_blends_its_edits_into_the_eye_region_only() {
    let d = tempfile::tempdir().unwrap();
    PipelineFile::demo("lst", 5, 160, 32)
        .stages(
            r#"
[stages.judge]
kind = "train_classifier"
inputs = ["ingest"]
size = "tiny"
epochs = 1
attributes = ["Male", "Eyeglasses"]

[stages.lst]
kind = "train_generator"
inputs = ["ingest", "judge"]
model = "st_gan"
preset = "tiny"
log_every = 5
sample_every = 0
st_gan.variant = "local"
st_gan.mask = "eyes"
st_gan.steps = 20
st_gan.map.samples = 32
# A 20-step run controls nothing reliably; 0 lets every attribute be edited.
st_gan.map.min_effect = 0.0

[stages.doubling]
kind = "balance"
inputs = ["ingest"]
strategy = "random_doubling"
attributes = ["Eyeglasses"]

[stages.synth]
kind = "synthesize"
inputs = ["ingest", "doubling", "lst"]
"#,
        )
        .write(d.path());
    let (code, _, err) = augment(&["run", "p.toml"], d.path());
    assert_eq!(code, 0, "{err}");
    let run = d.path().join("run");
    let model: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("lst/model.json")).unwrap())
            .unwrap();
    assert_eq!(model["variant"], "local");
    assert_eq!(model["blend"], "poisson");
    assert_eq!(model["st_gan"]["categorical"], 0);
    let mask: Vec<f64> = serde_json::from_value(model["mask"].clone()).unwrap();
    assert_eq!(mask, augment::train::st_gan::EYES.to_vec());
    // Only c₂ exists: latent_map has one unit.
    let out = sql_csv(d.path(), "SELECT DISTINCT unit FROM latent_map");
    assert_eq!(out.trim(), "unit\nc2", "{out}");

    let png_of = |batches: &[arrow::record_batch::RecordBatch], id_col: &str| {
        let mut out = std::collections::HashMap::new();
        for b in batches {
            let ids = b
                .column_by_name(id_col)
                .unwrap()
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .unwrap();
            let img = b
                .column_by_name("image")
                .unwrap()
                .as_any()
                .downcast_ref::<arrow::array::StructArray>()
                .unwrap()
                .column_by_name("bytes")
                .unwrap()
                .as_any()
                .downcast_ref::<arrow::array::BinaryArray>()
                .unwrap();
            for r in 0..b.num_rows() {
                let rgb = image::load_from_memory(img.value(r)).unwrap().to_rgb8();
                out.insert(ids.value(r).to_string(), rgb);
            }
        }
        out
    };
    let faces = png_of(&read_parquet(&run.join("ingest/faces.parquet")), "image_id");
    let synth_batches = read_parquet(&run.join("synth/synth.parquet"));
    let synth = png_of(&synth_batches, "source_image_id");
    assert!(!synth.is_empty());
    let region = augment::data::poisson::Region::from_fractions(augment::train::st_gan::EYES, 32);
    let mut changed = 0;
    for (src, img) in &synth {
        let face = &faces[src];
        for (x, y, p) in img.enumerate_pixels() {
            if !region.contains(x, y) {
                assert_eq!(p, face.get_pixel(x, y), "{src} ({x}, {y}) outside the box");
            } else if p != face.get_pixel(x, y) {
                changed += 1;
            }
        }
    }
    assert!(changed > 0, "no pixel inside the box changed");
}
