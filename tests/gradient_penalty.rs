//! The WGAN-GP penalty's gradient with respect to every critic parameter
//! against central finite differences (f64, a random direction per parameter
//! tensor), for the SG-GAN and StarGAN critics at their `tiny` sizes: exact
//! with `CANDLE_GRAD_DO_NOT_DETACH=1` (what the `augment` binary sets at
//! start-up), wrong without it. candle reads the variable once per thread, so
//! each case runs in a fresh thread.

use augment::models::critic::{Config, Critic};
use augment::models::seeded_init;
use augment::train::losses::gradient_penalty;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Worst relative error over parameter tensors between the directional
/// derivative from autograd and from central differences.
fn worst_error(cfg: &Config) -> (f64, String) {
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let critic = Critic::new(cfg, VarBuilder::from_varmap(&vm, DType::F64, &dev)).unwrap();
    seeded_init(&vm, 7).unwrap();
    let s = cfg.image_size;
    let real = Tensor::randn(0f64, 1.0, (2, 3, s, s), &dev).unwrap();
    let fake = Tensor::randn(0f64, 1.0, (2, 3, s, s), &dev).unwrap();
    let eps = Tensor::new(&[0.3f64, 0.8], &dev)
        .unwrap()
        .reshape((2, 1, 1, 1))
        .unwrap();
    let penalty =
        || -> Tensor { gradient_penalty(|x| critic.critic_value(x), &real, &fake, &eps).unwrap() };
    let p = penalty();
    let grads = p.backward().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let data = vm.data().lock().unwrap().clone();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut worst = (0.0f64, String::new());
    for name in names {
        let var = &data[name];
        let theta = var.as_tensor().copy().unwrap();
        let n = theta.elem_count();
        let dir: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let dir = Tensor::from_vec(dir, theta.shape(), &dev).unwrap();
        let analytic: f64 = grads
            .get(var.as_tensor())
            .map(|g| (g * &dir).unwrap().sum_all().unwrap().to_scalar().unwrap())
            .unwrap_or(0.0);
        let h = 1e-6;
        let at = |t: f64| -> f64 {
            var.set(&(&theta + (&dir * t).unwrap()).unwrap()).unwrap();
            penalty().to_scalar::<f64>().unwrap()
        };
        let numeric = (at(h) - at(-h)) / (2.0 * h);
        var.set(&theta).unwrap();
        let err = (analytic - numeric).abs() / numeric.abs().max(1e-8);
        if err > worst.0 {
            worst = (
                err,
                format!("{name}: autograd {analytic:.6e}, finite differences {numeric:.6e}"),
            );
        }
    }
    worst
}

fn critics() -> Vec<(&'static str, Config)> {
    vec![
        ("sggan tiny", Config::sggan_paper_128(6).tiny()),
        ("stargan tiny", Config::stargan_paper_128(5).tiny()),
    ]
}

/// Worst errors of every critic, computed in a fresh thread (which reads
/// `CANDLE_GRAD_DO_NOT_DETACH` anew).
fn in_fresh_thread() -> Vec<(&'static str, (f64, String))> {
    std::thread::spawn(|| {
        critics()
            .into_iter()
            .map(|(n, c)| (n, worst_error(&c)))
            .collect()
    })
    .join()
    .unwrap()
}

#[test]
fn penalty_gradients_match_finite_differences_only_without_detaching() {
    // Without the variable (a thread that never saw it): wrong gradients.
    // SAFETY: the test's other threads do not read the environment.
    unsafe { std::env::remove_var("CANDLE_GRAD_DO_NOT_DETACH") };
    let without = in_fresh_thread();
    for (name, (err, at)) in &without {
        eprintln!(
            "without CANDLE_GRAD_DO_NOT_DETACH, {name}: worst relative error {err:.3e} ({at})"
        );
        assert!(
            *err > 1e-2,
            "{name}: expected the detached penalty to be wrong, worst error {err}"
        );
    }
    // With it, as the binary runs: every parameter matches.
    // SAFETY: as above.
    unsafe { augment::train::enable_second_order_gradients() };
    let with = in_fresh_thread();
    for (name, (err, at)) in &with {
        eprintln!(
            "with CANDLE_GRAD_DO_NOT_DETACH=1, {name}: worst relative error {err:.3e} ({at})"
        );
        assert!(*err < 1e-5, "{name}: {at}");
    }
}
