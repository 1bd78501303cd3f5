//! Convolution speed on the CPU: our kernels (`augment::ops::conv`) against
//! candle's own, and both against PyTorch with the same shapes and threads.
//!
//! Times forward + backward (input and weight gradients) of every distinct
//! convolution in the attr2face `tiny` and `paper_64` presets (encoder,
//! decoder, BEGAN discriminator, classifier / D_conv) at batch 16, one SG-GAN
//! critic step at `tiny` (WGAN loss + gradient penalty, second-order), and
//! one whole step of the attr2face autoencoder phase at `paper_64`, batch
//! 16×3×64×64 (G and BEGAN D forward, both backward passes, both AdamW
//! updates). PyTorch's figures come from `benches/torch_reference.py`, run
//! on the same shapes when `python3 -c "import torch"` works; otherwise that
//! column says so.
//!
//! Run: `cargo bench --profile dev --bench conv` (about 5 minutes on 2
//! cores); `RAYON_NUM_THREADS` sets the threads of all three.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};
use augment::models::{began, classifier, critic};
use augment::ops::{self, Kernels, conv};
use augment::train::losses::{gradient_penalty, l1};
use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

const BATCH: usize = 16;

/// One convolution to time (forward + backward).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ConvShape {
    /// Where it is used.
    name: String,
    n: usize,
    ci: usize,
    co: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    padding: usize,
}

/// What the PyTorch script is asked to time.
#[derive(Serialize)]
struct Spec {
    threads: usize,
    batch: usize,
    convs: Vec<ConvShape>,
    critic: critic::Config,
    autoencoder: began::Config,
}

/// PyTorch's answer: seconds per call, in the order asked.
#[derive(Deserialize)]
struct TorchTimes {
    version: String,
    convs: Vec<f64>,
    critic: f64,
    autoencoder: f64,
}

fn began_convs(preset: &str, cfg: &began::Config) -> Vec<ConvShape> {
    let n = cfg.channels;
    let mut out = Vec::new();
    let mut add = |name: String, ci, co, side, stride| {
        out.push(ConvShape {
            name,
            n: BATCH,
            ci,
            co,
            h: side,
            w: side,
            k: 3,
            stride,
            padding: 1,
        })
    };
    let s = cfg.image_size;
    add(format!("{preset} enc stem"), 3, n, s, 1);
    for i in 0..cfg.scales() {
        let side = s >> i;
        add(
            format!("{preset} enc block{i}"),
            (i + 1) * n,
            (i + 1) * n,
            side,
            1,
        );
        if i + 1 < cfg.scales() {
            add(
                format!("{preset} enc down{i}"),
                (i + 1) * n,
                (i + 2) * n,
                side,
                2,
            );
        }
        add(format!("{preset} dec block@{}", 8 << i), n, n, 8 << i, 1);
    }
    add(format!("{preset} dec out"), n, 3, s, 1);
    out
}

fn classifier_convs(preset: &str, cfg: &classifier::Config) -> Vec<ConvShape> {
    (0..cfg.layers)
        .map(|i| ConvShape {
            name: format!("{preset} classifier conv{i}"),
            n: BATCH,
            ci: if i == 0 { 3 } else { cfg.channels << (i - 1) },
            co: cfg.channels << i,
            h: cfg.image_size >> i,
            w: cfg.image_size >> i,
            k: 4,
            stride: 2,
            padding: 1,
        })
        .collect()
}

/// Every distinct conv of the attr2face presets.
fn shapes() -> Vec<ConvShape> {
    let mut all = Vec::new();
    for (preset, ae, cls) in [
        ("tiny", began::Config::tiny(), classifier::Config::tiny()),
        (
            "paper_64",
            began::Config::paper_64(),
            classifier::Config::paper_64(),
        ),
    ] {
        all.extend(began_convs(preset, &ae));
        all.extend(classifier_convs(preset, &cls));
    }
    let mut distinct: Vec<ConvShape> = Vec::new();
    for s in all {
        let same = |d: &ConvShape| {
            (d.ci, d.co, d.h, d.k, d.stride, d.padding)
                == (s.ci, s.co, s.h, s.k, s.stride, s.padding)
        };
        if !distinct.iter().any(same) {
            distinct.push(s);
        }
    }
    distinct
}

/// Median seconds of `f` over at least 3 runs and 1 s, after two warm-up
/// runs (a `paper_64` step touches gigabytes of fresh memory in its first
/// two runs; after that the allocator reuses it).
fn time(mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    f()?;
    let mut runs = Vec::new();
    let start = Instant::now();
    while runs.len() < 3 || (start.elapsed().as_secs_f64() < 1.0 && runs.len() < 50) {
        let t = Instant::now();
        f()?;
        runs.push(t.elapsed().as_secs_f64());
    }
    runs.sort_by(f64::total_cmp);
    Ok(runs[runs.len() / 2])
}

fn randn(shape: &[usize], dev: &Device) -> Result<Tensor> {
    Ok(Tensor::randn(0f32, 1.0, shape, dev)?)
}

fn conv_step(s: &ConvShape, dev: &Device) -> Result<f64> {
    let x = Var::from_tensor(&randn(&[s.n, s.ci, s.h, s.w], dev)?)?;
    let w = Var::from_tensor(&(randn(&[s.co, s.ci, s.k, s.k], dev)? * 0.1)?)?;
    let y = conv::conv2d(x.as_tensor(), w.as_tensor(), s.stride, s.padding)?;
    let r = randn(y.dims(), dev)?;
    time(|| {
        let y = conv::conv2d(x.as_tensor(), w.as_tensor(), s.stride, s.padding)?;
        let g = (y * &r)?.sum_all()?.backward()?;
        anyhow::ensure!(g.get(w.as_tensor()).is_some());
        Ok(())
    })
}

fn critic_step(cfg: &critic::Config, dev: &Device) -> Result<f64> {
    let vm = VarMap::new();
    let net = critic::Critic::new(cfg, VarBuilder::from_varmap(&vm, DType::F32, dev))?;
    let s = cfg.image_size;
    let real = randn(&[BATCH, 3, s, s], dev)?;
    let fake = randn(&[BATCH, 3, s, s], dev)?;
    let eps = Tensor::rand(0f32, 1.0, (BATCH, 1, 1, 1), dev)?;
    time(|| {
        let value = |x: &Tensor| net.critic_value(x);
        let wgan = (value(&fake)?.mean_all()? - value(&real)?.mean_all()?)?;
        let gp = gradient_penalty(value, &real, &fake, &eps)?;
        let loss = (wgan + (gp * 10.0)?)?;
        loss.backward()?;
        Ok(())
    })
}

/// One step of the attr2face autoencoder phase (`train/attr2face.rs`), with
/// k_t fixed at 0.1 so the generator's adversarial term is included.
fn autoencoder_step(cfg: &began::Config, dev: &Device) -> Result<f64> {
    let gen_vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&gen_vm, DType::F32, dev);
    let enc = began::Encoder::new(cfg, vb.pp("encoder"))?;
    let dec = began::Decoder::new(cfg, vb.pp("decoder"))?;
    let disc_vm = VarMap::new();
    let disc = began::Autoencoder::new(cfg, VarBuilder::from_varmap(&disc_vm, DType::F32, dev))?;
    let params = ParamsAdamW {
        lr: 1e-4,
        ..Default::default()
    };
    let mut opt_g = AdamW::new(gen_vm.all_vars(), params.clone())?;
    let mut opt_d = AdamW::new(disc_vm.all_vars(), params)?;
    let s = cfg.image_size;
    let x = Tensor::rand(-1f32, 1.0, (BATCH, 3, s, s), dev)?;
    let k = 0.1;
    time(|| {
        let xh = dec.forward(&enc.forward(&x)?)?;
        let rec = l1(&xh, &x)?;
        let both = Tensor::cat(&[&x, &xh.detach()], 0)?;
        let d_out = disc.forward(&both)?;
        let d_real = l1(&d_out.narrow(0, 0, BATCH)?, &x)?;
        let d_fake = l1(
            &d_out.narrow(0, BATCH, BATCH)?,
            &both.narrow(0, BATCH, BATCH)?,
        )?;
        let loss_d = (&d_real - (&d_fake * k)?)?;
        let loss_g = (&rec + (l1(&disc.forward(&xh)?, &xh)? * k)?)?;
        let grads_d = loss_d.backward()?;
        let grads_g = loss_g.backward()?;
        opt_d.step(&grads_d)?;
        opt_g.step(&grads_g)?;
        Ok(())
    })
}

/// Runs the PyTorch script; `Err` says why there are no PyTorch figures.
fn torch_times(spec: &Spec) -> std::result::Result<TorchTimes, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/torch_reference.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("python3 not runnable: {e}"))?;
    let json = serde_json::to_vec(spec).map_err(|e| e.to_string())?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(&json)
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "{script} exited with {} (is PyTorch installed? `pip install torch`)",
            out.status
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("reading PyTorch's figures: {e}"))
}

fn ms(s: f64) -> String {
    if s.is_finite() {
        format!("{:.1}", s * 1e3)
    } else {
        "-".into()
    }
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

fn main() -> Result<()> {
    // SAFETY: first thing in main, before any thread exists (candle stops
    // re-reading /proc/cpuinfo on every matrix product).
    unsafe { augment::ops::fix_thread_count() };
    // Second-order gradients (the critic's penalty), as the binary sets it.
    // SAFETY: set before any thread is started.
    unsafe { std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1") };
    let dev = Device::Cpu;
    let threads = rayon::current_num_threads();
    let convs = shapes();
    let critic_cfg = critic::Config::sggan_paper_128(8).tiny();
    let ae_cfg = began::Config::paper_64();
    let spec = Spec {
        threads,
        batch: BATCH,
        convs: convs.clone(),
        critic: critic_cfg.clone(),
        autoencoder: ae_cfg.clone(),
    };

    let torch = match torch_times(&spec) {
        Ok(t) => Some(t),
        Err(why) => {
            eprintln!("no PyTorch figures: {why}");
            None
        }
    };

    let mut rows: Vec<(String, f64, f64, f64)> = Vec::new();
    // `AUGMENT_BENCH_ONLY=autoencoder` (any part of a row's name) times
    // only the matching rows.
    let only = std::env::var("AUGMENT_BENCH_ONLY").unwrap_or_default();
    let mut measure = |name: String, f: &dyn Fn() -> Result<f64>, torch: f64| -> Result<()> {
        if !name.contains(only.as_str()) {
            return Ok(());
        }
        // Ours first: the process then holds the memory of whichever ran
        // before, and a training run has only ours.
        ops::set_kernels(Kernels::Own);
        let ours = f().with_context(|| format!("{name} with ours"))?;
        ops::set_kernels(Kernels::Candle);
        let candle = f().with_context(|| format!("{name} with candle's kernels"))?;
        eprintln!("  {name}: candle {} ms, ours {} ms", ms(candle), ms(ours));
        rows.push((name, candle, ours, torch));
        Ok(())
    };
    let torch_conv = |i: usize| torch.as_ref().map_or(f64::NAN, |t| t.convs[i]);
    for (i, s) in convs.iter().enumerate() {
        let label = format!(
            "{} {}→{} {}×{} k{} s{}",
            s.name, s.ci, s.co, s.h, s.w, s.k, s.stride
        );
        measure(label, &|| conv_step(s, &dev), torch_conv(i))?;
    }
    measure(
        "SG-GAN critic step, tiny (WGAN-GP)".into(),
        &|| critic_step(&critic_cfg, &dev),
        torch.as_ref().map_or(f64::NAN, |t| t.critic),
    )?;
    measure(
        "attr2face autoencoder step, paper_64".into(),
        &|| autoencoder_step(&ae_cfg, &dev),
        torch.as_ref().map_or(f64::NAN, |t| t.autoencoder),
    )?;

    println!(
        "\nconv benchmark: CPU, {threads} threads, batch {BATCH}, forward + backward, median ms; PyTorch {}",
        torch
            .as_ref()
            .map_or("not run".into(), |t| t.version.clone())
    );
    println!(
        "| {:<52} | {:>9} | {:>9} | {:>9} | {:>10} | {:>12} |",
        "what", "candle", "ours", "PyTorch", "ours/torch", "candle/torch"
    );
    println!(
        "|{}|{}|{}|{}|{}|{}|",
        "-".repeat(54),
        "-".repeat(11),
        "-".repeat(11),
        "-".repeat(11),
        "-".repeat(12),
        "-".repeat(14)
    );
    for (name, candle, ours, torch) in &rows {
        println!(
            "| {:<52} | {:>9} | {:>9} | {:>9} | {:>10} | {:>12} |",
            name,
            ms(*candle),
            ms(*ours),
            ms(*torch),
            ratio(*ours, *torch),
            ratio(*candle, *torch)
        );
    }
    Ok(())
}
