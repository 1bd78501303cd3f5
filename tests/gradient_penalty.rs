//! The WGAN-GP penalty's gradient with respect to every critic parameter
//! against central finite differences (f64, a random direction per parameter
//! tensor), for the SG-GAN, StarGAN, ST-GAN and BridgeGAN critics and SeCGAN's
//! D_seg (12 segment channels: one-hot reals, softmax fakes) at their `tiny` sizes: exact
//! with `CANDLE_GRAD_DO_NOT_DETACH=1` (what the `augment` binary sets at
//! start-up), wrong without it. candle reads the variable once per thread, so
//! each case runs in a fresh thread. Inputs and directions come from seeded
//! generators, so every machine checks the same points.

use augment::models::bridgegan;
use augment::models::critic::{Config, Critic};
use augment::models::seeded_init;
use augment::models::st_gan;
use augment::train::losses::gradient_penalty;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Relative difference, with a floor of 1e-4 (critic gradients here are
/// about 1e-3) so that a tensor with a nearly zero derivative in the drawn
/// direction compares on absolute terms and not on rounding noise.
fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-4)
}

/// Worst relative error over parameter tensors between the directional
/// derivative from autograd and from central differences; `kinks` counts the
/// directions drawn again because they crossed a kink.
fn worst_error(case: &Case, kinks: &mut usize) -> (f64, String) {
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F64, &dev);
    let mut channels = 3;
    let (critic, s, data_seed): (CriticFn, _, _) = match case {
        Case::Translation(cfg) => {
            channels = cfg.in_channels;
            let c = Critic::new(cfg, vb).unwrap();
            (
                Box::new(move |x| c.critic_value(x)),
                cfg.image_size,
                cfg.classes as u64,
            )
        }
        Case::StGan(cfg) => {
            let c = st_gan::Critic::new(cfg, vb).unwrap();
            (Box::new(move |x| c.critic_value(x)), cfg.image_size, 3)
        }
        Case::BridgeGan(cfg) => {
            let c = bridgegan::Critic::new(cfg, vb).unwrap();
            (Box::new(move |x| c.critic_value(x)), cfg.image_size, 4)
        }
    };
    seeded_init(&vm, 7).unwrap();
    // Inputs from a seeded generator (candle's `Tensor::randn` on the CPU is
    // not seeded, so every run would check a different point).
    let mut rng = ChaCha8Rng::seed_from_u64(data_seed);
    let mut image = || {
        let v: Vec<f64> = (0..2 * channels * s * s)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        Tensor::from_vec(v, (2, channels, s, s), &dev).unwrap()
    };
    let (real, fake) = if channels == 3 {
        (image(), image())
    } else {
        // D_seg: a one-hot class map against G_seg's soft output.
        let real = image().argmax_keepdim(1).unwrap();
        let classes = Tensor::arange(0u32, channels as u32, &dev)
            .unwrap()
            .reshape((1, channels, 1, 1))
            .unwrap();
        let real = real
            .broadcast_eq(&classes)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        let fake = candle_nn::ops::softmax(&(image() * 3.0).unwrap(), 1).unwrap();
        (real, fake)
    };
    let eps = Tensor::new(&[0.3f64, 0.8], &dev)
        .unwrap()
        .reshape((2, 1, 1, 1))
        .unwrap();
    let penalty = || -> Tensor { gradient_penalty(|x| critic(x), &real, &fake, &eps).unwrap() };
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
        // The penalty holds ∂D/∂x, which jumps where a leaky-ReLU input crosses
        // zero: a central difference whose interval holds such a kink reads
        // the jump as a huge slope. Such a direction shows itself by giving
        // different slopes at h and h/2; it is drawn again (at most 8 times).
        let h = 1e-6;
        let mut measured = None;
        for _ in 0..8 {
            let dir: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let dir = Tensor::from_vec(dir, theta.shape(), &dev).unwrap();
            let at = |t: f64| -> f64 {
                var.set(&(&theta + (&dir * t).unwrap()).unwrap()).unwrap();
                penalty().to_scalar::<f64>().unwrap()
            };
            let slope = |h: f64| (at(h) - at(-h)) / (2.0 * h);
            let (wide, narrow) = (slope(h), slope(h / 2.0));
            var.set(&theta).unwrap();
            if relative(wide, narrow) > 1e-4 {
                *kinks += 1;
                continue;
            }
            let analytic: f64 = grads
                .get(var.as_tensor())
                .map(|g| (g * &dir).unwrap().sum_all().unwrap().to_scalar().unwrap())
                .unwrap_or(0.0);
            measured = Some((analytic, narrow));
            break;
        }
        let (analytic, numeric) =
            measured.unwrap_or_else(|| panic!("{name}: every direction crossed a kink"));
        let err = relative(analytic, numeric);
        if err > worst.0 {
            worst = (
                err,
                format!("{name}: autograd {analytic:.6e}, finite differences {numeric:.6e}"),
            );
        }
    }
    worst
}

/// A critic's value per image.
type CriticFn = Box<dyn Fn(&Tensor) -> candle_core::Result<Tensor>>;

/// A critic under test.
enum Case {
    /// SG-GAN's or StarGAN's ([`Critic`]).
    Translation(Config),
    /// ST-GAN's D (without Q, which the penalty does not reach).
    StGan(st_gan::Config),
    /// BridgeGAN's D (residual trunk with average pooling, shared with C).
    BridgeGan(bridgegan::Config),
}

fn critics() -> Vec<(&'static str, Case)> {
    vec![
        (
            "sggan tiny",
            Case::Translation(Config::sggan_paper_128(6).tiny()),
        ),
        (
            "stargan tiny",
            Case::Translation(Config::stargan_paper_128(5).tiny()),
        ),
        (
            "secgan D_seg tiny",
            Case::Translation(Config {
                in_channels: 12,
                ..Config::stargan_paper_128(3).tiny()
            }),
        ),
        ("st_gan tiny", Case::StGan(st_gan::Config::tiny())),
        (
            "bridgegan tiny",
            Case::BridgeGan(bridgegan::Config::tiny(3)),
        ),
    ]
}

/// Worst errors of every critic, computed in a fresh thread (which reads
/// `CANDLE_GRAD_DO_NOT_DETACH` anew).
fn in_fresh_thread() -> Vec<(&'static str, (f64, String), usize)> {
    std::thread::spawn(|| {
        critics()
            .into_iter()
            .map(|(n, c)| {
                let mut kinks = 0;
                let worst = worst_error(&c, &mut kinks);
                (n, worst, kinks)
            })
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
    for (name, (err, at), kinks) in &without {
        eprintln!(
            "without CANDLE_GRAD_DO_NOT_DETACH, {name}: worst relative error {err:.3e} ({at}; \
             {kinks} directions drawn again at a kink)"
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
    for (name, (err, at), kinks) in &with {
        eprintln!(
            "with CANDLE_GRAD_DO_NOT_DETACH=1, {name}: worst relative error {err:.3e} ({at}; \
             {kinks} directions drawn again at a kink)"
        );
        assert!(*err < 1e-4, "{name}: {at}");
    }
}
