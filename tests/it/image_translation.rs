//! The translation generators end to end on real CelebA (tiny preset, CPU):
//! SG-GAN with sparse grouping and StarGAN train through the `augment`
//! binary (which enables second-order gradients for the penalty itself),
//! their measured quality moves the right way, synthesize edits source
//! faces for restricted balance plans, evaluate reports the translation
//! metrics, and a plan that changes an attribute the generator does not
//! edit fails with one clear line.

use crate::common::*;

/// About 8 minutes on 2 cores.
#[test]
fn sggan_and_stargan_learn_on_real_celeba_and_translate_plans() {
    let Some(root) = celeba_dir("sggan_and_stargan_learn_on_real_celeba_and_translate_plans")
    else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    // A larger learning rate than the papers' 1e-4, a larger λ_cls than their
    // 1 (and far fewer steps): a short CPU run has to show the direction of
    // training, and at λ_cls 1 the tiny critic's class head barely learns
    // Male or Smiling in 1,000 steps.
    PipelineFile::celeba("tr", 0, &root)
        .stages(
            r#"
[stages.sg]
kind = "train_generator"
inputs = ["ingest"]
model = "sggan"
preset = "tiny"
batch_size = 8
log_every = 10
sample_every = 500
checkpoint_every = 500
translation.steps = 1000
translation.lr = 5e-4
translation.d_lr = 5e-4
translation.lambda_cls = 25.0
translation.attributes = ["Male", "Smiling"]
translation.labelled_per_value = 300

[stages.star]
kind = "train_generator"
inputs = ["ingest"]
model = "stargan"
preset = "tiny"
batch_size = 8
# One short run in five stalls: at seed 0 on one thread G's reconstruction
# L1 stayed at 0.526 (→ 0.525) while its classification loss fell; seeds 1
# and 2 on one thread and seeds 0 and 1 on two learn (L1 ratios 0.68, 0.61,
# 0.67, 0.65). Making such runs reliable is issue #36's; here seed 1.
seed = 1
log_every = 10
sample_every = 0
checkpoint_every = 500
translation.steps = 1000
translation.lr = 5e-4
translation.d_lr = 5e-4
translation.lambda_cls = 5.0
translation.attributes = ["Male", "Smiling", "Young"]

[stages.doubling]
kind = "balance"
inputs = ["ingest"]
strategy = "random_doubling"
attributes = ["Male", "Smiling"]

[stages.dynamic]
kind = "balance"
inputs = ["ingest"]
strategy = "dynamic_balancing"
size = 1.25
attributes = ["Male", "Smiling", "Young"]
top_k = 1
bottom_k = 1

[stages.sg_synth]
kind = "synthesize"
inputs = ["ingest", "doubling", "sg"]

[stages.star_synth]
kind = "synthesize"
inputs = ["ingest", "dynamic", "star"]

[stages.judge]
kind = "train_classifier"
inputs = ["ingest"]
size = "tiny"
epochs = 3
lr = 1e-3
attributes = ["Male", "Smiling", "Young", "Eyeglasses"]

[stages.eval]
kind = "evaluate"
inputs = ["ingest", "judge", "sg_synth", "star_synth"]
fid = false
translation_samples = 200
"#,
        )
        .write(d.path());
    let (code, _, err) = augment(&["run", "p.toml"], d.path());
    assert_eq!(code, 0, "{err}");
    let run = d.path().join("run");
    let m = manifest(&run);
    for g in ["sg", "star"] {
        let s = &m["stages"][g]["summary"];
        eprintln!("{g}: {}", serde_json::to_string_pretty(s).unwrap());
        // The critic learned to tell G's translations from real faces (its
        // estimate at initialisation is about 0; early in WGAN training it
        // rises) and learned the attributes of real faces ...
        let (w0, w) = (num(&s["wasserstein_init"]), num(&s["wasserstein"]));
        assert!(w0.abs() < 0.1, "{g}: initial estimate {w0}");
        assert!(w > w0 + 1.0, "{g}: critic's estimate {w0} -> {w}");
        let (c0, c) = (num(&s["critic_cls_init"]), num(&s["critic_cls"]));
        assert!(
            c < c0,
            "{g}: critic's classification loss on real faces {c0} -> {c}"
        );
        // ... and under the final critic the trained G's edits carry their
        // target labels better than the initial G's.
        let (g0, g1) = (num(&s["g_cls_init"]), num(&s["g_cls"]));
        assert!(g1 < 0.9 * g0, "{g}: G's classification loss {g0} -> {g1}");
        // λ_rec: G(x, source labels) reconstructs x far better than at init.
        let (r0, r) = (num(&s["rec_l1_init"]), num(&s["rec_l1"]));
        assert!(r < 0.8 * r0, "{g}: L1(G(x, c_src), x) {r0} -> {r}");
    }
    // Sparse grouping: 300 images per value of each attribute kept labels.
    let out = sql_csv(
        d.path(),
        "SELECT attribute, value, count(*) AS n FROM labelled GROUP BY attribute, value \
         ORDER BY attribute, value",
    );
    assert_eq!(
        out.trim(),
        "attribute,value,n\nMale,false,300\nMale,true,300\nSmiling,false,300\nSmiling,true,300",
        "{out}"
    );
    // Translation: every generated row differs from its source only in the
    // generator's attributes, and is a new image of the ingest size.
    let out = sql_csv(
        d.path(),
        "SELECT s.strategy, count(*) AS n, \
         sum(CASE WHEN s.male <> f.male OR s.smiling <> f.smiling OR s.young <> f.young THEN 1 ELSE 0 END) AS edited, \
         sum(CASE WHEN s.bald <> f.bald OR s.eyeglasses <> f.eyeglasses THEN 1 ELSE 0 END) AS other \
         FROM sg_synth_synth s JOIN faces f ON s.source_image_id = f.image_id GROUP BY s.strategy",
    );
    assert_eq!(
        out.trim(),
        "strategy,n,edited,other\nrandom_doubling,1560,1560,0",
        "{out}"
    );
    let out = sql_csv(
        d.path(),
        "SELECT count(*) AS n, sum(CASE WHEN s.bald <> f.bald THEN 1 ELSE 0 END) AS other \
         FROM star_synth_synth s JOIN faces f ON s.source_image_id = f.image_id",
    );
    assert_eq!(out.trim(), "n,other\n390,0", "{out}");
    for file in [
        "sg/samples/sggan_0001000.png",
        "sg_synth/grid.png",
        "star_synth/grid.png",
    ] {
        assert!(run.join(file).is_file(), "{file} missing");
    }
    // Evaluate: the translation metrics, as fractions, for both generators.
    let out = sql_csv(
        d.path(),
        "SELECT stage, metric, n > 0 AS has_n, value >= 0 AND value <= 1 AS fraction FROM eval_metrics \
         WHERE metric IN ('editing_accuracy', 'untouched_accuracy', 'background_ms_ssim') \
         AND attribute IS NULL ORDER BY stage, metric",
    );
    assert_eq!(
        out.trim(),
        "stage,metric,has_n,fraction\n\
         sg_synth,background_ms_ssim,true,true\nsg_synth,editing_accuracy,true,true\nsg_synth,untouched_accuracy,true,true\n\
         star_synth,background_ms_ssim,true,true\nstar_synth,editing_accuracy,true,true\nstar_synth,untouched_accuracy,true,true",
        "{out}"
    );

    // A plan that flips any of the 40 attributes cannot be translated by a
    // generator of two: one clear line.
    write(
        &d.path().join("bad.toml"),
        &std::fs::read_to_string(d.path().join("p.toml"))
            .unwrap()
            .replace(
                "attributes = [\"Male\", \"Smiling\"]\n\n[stages.dynamic]",
                "\n[stages.dynamic]",
            ),
    );
    let (code, _, err) = augment(&["run", "bad.toml"], d.path());
    assert_ne!(code, 0);
    assert!(
        err.contains("which translation generator `sg` does not edit"),
        "{err}"
    );
}
