//! BridgeGAN (Huang et al., "Bridging the Gap between Label- and Reference-based Synthesis") end to end on real CelebA (tiny preset, CPU): both
//! paths train through the `augment` binary, C and G's losses move the
//! right way, the noise R and the reference change an edit, synthesize
//! edits plan rows, and bad configs get one clear line; on demo faces,
//! label- and reference-guided rows run end to end through balance,
//! synthesize and evaluate. The networks'
//! shapes (Fig. 2–5 at paper_128), the att_ak worked example and the
//! penalty's gradient check are unit tests and `tests/gradient_penalty.rs`.

use crate::common::*;
use augment::models::bridgegan::Config;
use augment::models::bridgegan::GuidedEditor;
use augment::train::bridgegan::noise;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// About 5 minutes on 2 cores (the 600-step stage: about 220 s).
#[test]
fn bridgegan_learns_both_paths_on_real_celeba_and_edits_plans() {
    let Some(root) = celeba_dir("bridgegan_learns_both_paths_on_real_celeba_and_edits_plans")
    else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    // lr 1e-3 instead of the appendix's 2e-4: 600 steps have to show the direction.
    let run = PipelineFile::celeba("bg", 0, &root)
        .stages(
            r#"
[stages.bg]
kind = "train_generator"
inputs = ["ingest"]
model = "bridgegan"
preset = "tiny"
log_every = 1
sample_every = 600
checkpoint_every = 600
bridgegan.steps = 600
bridgegan.lr = 1e-3
bridgegan.d_lr = 1e-3
bridgegan.attributes = ["Male", "Smiling", "Young"]

[stages.dynamic]
kind = "balance"
inputs = ["ingest"]
strategy = "dynamic_balancing"
size = 1.25
attributes = ["Male", "Smiling", "Young"]
top_k = 1
bottom_k = 1

[stages.synth]
kind = "synthesize"
inputs = ["ingest", "dynamic", "bg"]
"#,
        )
        .run(d.path());
    let s = &manifest(&run)["stages"]["bg"]["summary"];
    eprintln!("{}", serde_json::to_string_pretty(s).unwrap());
    // C learns the attributes of real faces, and G learns to keep a face
    // when att_diff is 0.
    let (c0, c) = (num(&s["critic_cls_init"]), num(&s["critic_cls"]));
    assert!(c < c0, "C's loss on real val faces {c0} -> {c}");
    let (r0, r) = (num(&s["rec_l1_init"]), num(&s["rec_l1"]));
    assert!(r < 0.8 * r0, "L1(G(x, M(R, 0)), x) {r0} -> {r}");
    // Under the final C, the trained G's one-attribute edits carry their
    // targets better than the initial G's (the issue's criterion), and
    // better than the trained G's own unedited reconstructions: G follows
    // att_diff (measured here: 1.128 -> 0.840 against 0.911 unedited; at
    // run seed 1, 1.955 -> 0.749 against 0.806).
    let (g0, g) = (num(&s["g_cls_init"]), num(&s["g_cls"]));
    assert!(
        g < g0,
        "G's classification loss under the final C {g0} -> {g}"
    );
    let kept = num(&s["g_cls_unedited"]);
    assert!(
        g < kept,
        "edits {g} do not carry their targets better than unedited faces {kept}"
    );
    // Reconstruction, cycle, style and attribute keeping each fall by more
    // than 30% (the issue's bound; measured 0.50, 0.48, 0.66, 0.39 of their
    // first 50 values, and 0.50, 0.47, 0.66, 0.53 at run seed 1).
    for loss in ["G/rec", "G/cyc", "G/sty", "G/ak"] {
        let (a, b) = first_last_50(d.path(), "train_log", loss);
        assert!(b < 0.7 * a, "{loss}: first 50 {a}, last 50 {b}");
    }
    // Synthesize: every generated row changes only BridgeGAN's attributes.
    let out = sql_csv(
        d.path(),
        "SELECT count(*) AS n, sum(CASE WHEN s.bald <> f.bald OR s.eyeglasses <> f.eyeglasses THEN 1 ELSE 0 END) AS other, \
         min(s.label_agreement) >= 0 AND max(s.label_agreement) <= 1 AS fraction \
         FROM synth_synth s JOIN faces f ON s.source_image_id = f.image_id",
    );
    assert_eq!(out.trim(), "n,other,fraction\n390,0,true", "{out}");
    for file in ["bg/samples/bridgegan_0000600.png", "synth/grid.png"] {
        assert!(run.join(file).is_file(), "{file} missing");
    }

    // Two noises, and two references, give two different edits.
    let dev = Device::Cpu;
    let cfg = Config::tiny(3);
    let w = candle_core::safetensors::load(run.join("bg/generator.safetensors"), &dev).unwrap();
    let ed = GuidedEditor::new(&cfg, VarBuilder::from_tensors(w, DType::F32, &dev)).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut image = || {
        let v: Vec<f32> = (0..3 * 32 * 32)
            .map(|k| ((k as f32 * 0.37).sin() + rand::Rng::random::<f32>(&mut rng)) * 0.5)
            .collect();
        Tensor::from_vec(v, (1, 3, 32, 32), &dev).unwrap()
    };
    let (x, ref_a, ref_b) = (image(), image(), image());
    let diff = Tensor::new(&[[1f32, 0., -1.]], &dev).unwrap();
    let gap = |a: &Tensor, b: &Tensor| -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    };
    let r1 = noise(1, 16, &mut ChaCha8Rng::seed_from_u64(1), &dev).unwrap();
    let r2 = noise(1, 16, &mut ChaCha8Rng::seed_from_u64(2), &dev).unwrap();
    let by_r = gap(
        &ed.by_labels(&x, &r1, &diff).unwrap(),
        &ed.by_labels(&x, &r2, &diff).unwrap(),
    );
    assert!(by_r > 1e-4, "two noises gave the same edit ({by_r})");
    let by_ref = gap(
        &ed.by_reference(&x, &ref_a, &diff).unwrap(),
        &ed.by_reference(&x, &ref_b, &diff).unwrap(),
    );
    assert!(
        by_ref > 1e-4,
        "two references gave the same edit ({by_ref})"
    );
}

/// Bad `bridgegan` configs fail before anything runs, with one line each.
#[test]
fn bad_bridgegan_configs_get_one_line_errors() {
    assert_one_line_config_errors(
        "[stages.bg]\nkind = \"train_generator\"\ninputs = [\"ingest\"]\nmodel = \"bridgegan\"\npreset = \"tiny\"",
        &[
            ("bridgegan.adversarial = \"x\"", "wgan_gp"),
            (
                "bridgegan.lambda_ak = -1.0",
                "bridgegan.lambda_ak = -1: must be 0 or positive",
            ),
            (
                "bridgegan.lr = nan",
                "bridgegan.lr = NaN: must be a positive number",
            ),
            (
                "bridgegan.attributes = [\"Male\", \"Wings\"]",
                "bridgegan.attributes: unknown attribute `Wings`",
            ),
            (
                "bridgegan.attributes = [\"Male\", \"Male\"]",
                "bridgegan.attributes: `Male` is listed twice",
            ),
            (
                "bridgegan.attributes = []",
                "bridgegan.attributes: give 1 to 20 attributes, not 0",
            ),
            (
                "translation.steps = 5",
                "`translation` is for model = \"sggan\" or \"stargan\", not bridgegan; bridgegan reads `bridgegan`",
            ),
        ],
    );
}

/// Label-guided and reference-guided rows end to end on demo faces: the
/// `reference` plan, both synthesize stages, `reference_grid.png`, and
/// evaluate's metrics for each kind of row (editing and untouched accuracy,
/// background MS-SSIM, FID per changed attribute). Few steps: this checks
/// the plumbing, not the quality.
#[test]
fn bridgegan_label_and_reference_rows_end_to_end_on_demo_faces() {
    let name = "bridgegan_label_and_reference_rows_end_to_end_on_demo_faces";
    let Some(weights) = fid_weights(name) else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let attrs = r#"["Male", "Smiling"]"#;
    let run = PipelineFile::demo("bgdemo", 3, 120, 32)
        .stages(&format!(
            r#"
[stages.judge]
kind = "train_classifier"
inputs = ["ingest"]
size = "tiny"
epochs = 1
attributes = {attrs}

[stages.bg]
kind = "train_generator"
inputs = ["ingest"]
model = "bridgegan"
preset = "tiny"
sample_every = 4
checkpoint_every = 4
bridgegan.steps = 4
bridgegan.n_critic = 2
bridgegan.attributes = {attrs}

[stages.doubling]
kind = "balance"
inputs = ["ingest"]
strategy = "random_doubling"
attributes = {attrs}

[stages.reference]
kind = "balance"
inputs = ["ingest"]
strategy = "reference"
attributes = {attrs}

[stages.synth_label]
kind = "synthesize"
inputs = ["ingest", "doubling", "bg"]

[stages.synth_reference]
kind = "synthesize"
inputs = ["ingest", "reference", "bg"]
grid_rows = 3

[stages.eval]
kind = "evaluate"
inputs = ["ingest", "judge", "synth_label", "synth_reference"]
fid = true
weights = {:?}
fid_samples = 60
kid = false
bootstrap = 0
"#,
            weights.display().to_string()
        ))
        .run(d.path());

    // Every reference row flips one of the two attributes towards a train
    // face, not its source, that has the target value; label rows have no
    // reference.
    let out = sql_csv(
        d.path(),
        "SELECT count(*) AS n, \
         sum(CASE WHEN r.partition = 'train' THEN 1 ELSE 0 END) AS train, \
         sum(CASE WHEN p.reference_image_id <> p.source_image_id THEN 1 ELSE 0 END) AS other_face, \
         sum(CASE WHEN (p.male <> s.male AND r.male = p.male AND p.smiling = s.smiling) \
                    OR (p.smiling <> s.smiling AND r.smiling = p.smiling AND p.male = s.male) \
             THEN 1 ELSE 0 END) AS target_value \
         FROM reference_plan p JOIN faces s ON p.source_image_id = s.image_id \
         JOIN faces r ON p.reference_image_id = r.image_id WHERE p.strategy = 'reference'",
    );
    let n: usize = sql_value(
        d.path(),
        "SELECT count(*) AS n FROM faces WHERE partition = 'train'",
    );
    assert_eq!(
        out.trim(),
        format!("n,train,other_face,target_value\n{n},{n},{n},{n}")
    );
    let out = sql_csv(
        d.path(),
        "SELECT count(reference_image_id) AS refs FROM doubling_plan",
    );
    assert_eq!(out.trim(), "refs\n0", "{out}");

    // Both synthesize stages drew every row; the reference stage drew its grid.
    for stage in ["synth_label", "synth_reference"] {
        let out = sql_csv(
            d.path(),
            &format!("SELECT count(*) AS n FROM {stage}_synth WHERE origin = 'generated'"),
        );
        assert_eq!(out.trim(), format!("n\n{n}"), "{stage}");
        assert!(run.join(stage).join("grid.png").is_file(), "{stage} grid");
    }
    assert!(run.join("synth_reference/reference_grid.png").is_file());
    let grid = image::open(run.join("synth_reference/reference_grid.png")).unwrap();
    // 3 sources along the top plus the reference column, 3 reference rows
    // under the header row: 4 × 4 cells of 32 px (with the grid's gaps).
    let (w, h) = (grid.width(), grid.height());
    assert!(w == h && (4 * 32..5 * 32).contains(&w), "{w}x{h}");

    // Evaluate: each kind of row gets the editing metrics and FID, overall
    // and per changed attribute.
    let out = sql_csv(
        d.path(),
        "SELECT stage, metric, count(*) AS rows, sum(CASE WHEN attribute IS NULL THEN 1 ELSE 0 END) AS overall \
         FROM eval_metrics WHERE stage LIKE 'synth%' \
         AND metric IN ('editing_accuracy', 'untouched_accuracy', 'background_ms_ssim', 'fid') \
         GROUP BY stage, metric ORDER BY stage, metric",
    );
    let expected = "stage,metric,rows,overall\n\
        synth_label,background_ms_ssim,1,1\nsynth_label,editing_accuracy,3,1\nsynth_label,fid,3,1\nsynth_label,untouched_accuracy,1,1\n\
        synth_reference,background_ms_ssim,1,1\nsynth_reference,editing_accuracy,3,1\nsynth_reference,fid,3,1\nsynth_reference,untouched_accuracy,1,1";
    assert_eq!(out.trim(), expected, "{out}");
    let out = sql_csv(
        d.path(),
        "SELECT DISTINCT attribute FROM eval_metrics WHERE metric = 'fid' AND attribute IS NOT NULL ORDER BY attribute",
    );
    assert_eq!(out.trim(), "attribute\nmale\nsmiling", "{out}");

    // The pipeline with `from` replaced by `to` fails with `expected`.
    let text = std::fs::read_to_string(d.path().join("p.toml")).unwrap();
    let fails_with = |file: &str, from: &str, to: &str, expected: &str| {
        let changed = text.replace(from, to);
        assert_ne!(changed, text, "{file}: nothing replaced");
        write(&d.path().join(file), &changed);
        let (code, _, err) = augment(&["run", file], d.path());
        assert_ne!(code, 0, "{file}");
        assert!(err.contains(expected), "{file}: {err}");
    };
    // No train demo face is gray-haired: all 40 attributes cannot be
    // referenced, and the balance stage says which one is missing.
    fails_with(
        "all.toml",
        "strategy = \"reference\"\nattributes = [\"Male\", \"Smiling\"]",
        "strategy = \"reference\"",
        "strategy reference: no train face has Gray_Hair = 1 to serve as a reference",
    );
    // A reference plan with a generator that cannot use references.
    fails_with(
        "stargan.toml",
        "model = \"bridgegan\"\npreset = \"tiny\"\nsample_every = 4\ncheckpoint_every = 4\nbridgegan.steps = 4\nbridgegan.n_critic = 2\nbridgegan.attributes",
        "model = \"stargan\"\npreset = \"tiny\"\nsample_every = 2\ncheckpoint_every = 2\ntranslation.steps = 2\ntranslation.attributes",
        "has a reference image; only model = \"bridgegan\" uses references",
    );
}
