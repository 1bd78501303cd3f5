//! Training of the translation generators, image = G(source, target labels),
//! with WGAN-GP (Gulrajani et al. 2017; λ_gp = 10) in one checkpointed phase.
//!
//! - SG-GAN (Zhang et al. Sec. 3.2 and 4, eq. 2–8; official TensorFlow code):
//!   G maps x to one image per value of each selected attribute. The critic
//!   D minimises Σ_o (E[D(G(x)^o)] − E[D(x)]) + λ_cls·ℓ_d_cls +
//!   λ_gp·Σ_o GP_o, where ℓ_d_cls, the softmax loss of each attribute's head,
//!   counts only (image, attribute) pairs that are *group-labelled*
//!   (sparsely grouped training: the rest are mixed data, adversarial term
//!   only, eq. 6). G minimises λ_cls·Σ_o ℓ_g_cls(o) − Σ_o E[D(G(x)^o)] +
//!   α·ℓ_rec with eq. 5's reconstruction: for attribute j, G(G(x)^{j,0})^{j,1}
//!   ≈ G(x)^{j,1} and G(G(x)^{j,1})^{j,0} ≈ G(x)^{j,0} (mean absolute error).
//!   Sums over outputs and the mean L1 follow the official code.
//! - StarGAN (Choi et al. 2018, official PyTorch code): targets are the
//!   batch's labels in a random order; D minimises −E[D(x)] + E[D(G(x, c'))] +
//!   λ_cls·BCE(D_cls(x), c) + λ_gp·GP; G minimises −E[D(G(x, c'))] +
//!   λ_cls·BCE(D_cls(G(x, c')), c') + λ_rec·|x − G(G(x, c'), c)|₁. BCE is
//!   summed over attributes and averaged over the batch, as the official code.
//!
//! Every step updates the critic; every `n_critic`-th step also updates G.
//! Both learning rates decay linearly to 0 from `decay_start` (default: half
//! of the steps) to the last step. The classification of a binary attribute
//! as a two-way softmax equals a logistic loss on the logit difference,
//! which is how it is computed here.
//!
//! - [`options`]: the phase's options, sparse-grouping masks, the lr schedule.
//! - [`sggan`] and [`stargan`]: each model's critic and G gradients.
//! - [`measure`]: validation measures before and after training.
//!
//! Shared by both (and by the translators to come): the phase loop
//! ([`super::run_phase`]), micro-batch accumulation ([`super::accumulate`]),
//! the gradient penalty ([`super::losses::gradient_penalty`]) and the
//! inference-side [`Editor`].

pub mod measure;
pub mod options;
pub mod sggan;
pub mod stargan;

use std::path::Path;

use anyhow::{Result, bail};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Optimizer, VarBuilder, VarMap};

use crate::train::adam::Adam;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::accumulate::apply;
use super::{LogRow, Phase, PhaseEnv, batch_indices, log_row as row, run_phase};
use super::{frozen, snapshot, vb_of};
use crate::data::celeba::Labels;
use crate::data::tensors::{FaceSet, grid, tensor_to_rgb};
use crate::models::critic::{self, Critic};
pub use crate::models::editor::Editor;
use crate::models::seeded_init;
use crate::models::translator::{self, Kind, Translator};
use measure::measure;
pub use options::{TranslationOptions, labelled_mask, lr_factor};

/// What to train: the translator kind, its network sizes (G, critic), the
/// CelebA indices of the edited attributes, the options, batch size and seed.
#[derive(Debug, Clone)]
pub struct Spec {
    pub kind: Kind,
    pub nets: (translator::Config, critic::Config),
    pub attrs: Vec<usize>,
    pub opts: TranslationOptions,
    pub batch: usize,
    pub seed: u64,
}

/// Training data (the same for every GAN phase).
pub use super::TrainSet;

/// What training produced.
pub struct Trained {
    pub log: Vec<LogRow>,
    pub summary: serde_json::Value,
    pub generator: std::collections::HashMap<String, Tensor>,
    pub critic: std::collections::HashMap<String, Tensor>,
    /// Per training row (in `data.train` order), the labelled-attribute bits.
    pub labelled: Vec<u64>,
}

const D_LOSSES: [&str; 4] = ["D/loss", "D/wasserstein", "D/cls", "D/gp"];
const G_LOSSES: [&str; 4] = ["G/loss", "G/adv", "G/cls", "G/rec"];

struct TranslationPhase<'a> {
    data: &'a TrainSet<'a>,
    dev: Device,
    kind: Kind,
    attrs: Vec<usize>,
    opts: TranslationOptions,
    steps: usize,
    batch: usize,
    seed: u64,
    /// Labelled bits per row of `data.faces` (0 for rows outside train).
    labelled: Vec<u64>,
    g_cfg: translator::Config,
    /// The variables of `g_vm` and `d_vm`, in the optimisers' order.
    g_vars: Vec<Var>,
    d_vars: Vec<Var>,
    g_vm: VarMap,
    g: Translator,
    d_vm: VarMap,
    d: Critic,
    opt_g: Adam,
    opt_d: Adam,
    sample_rows: Vec<usize>,
}

impl<'a> TranslationPhase<'a> {
    /// Freshly initialised networks (seeded from `spec.seed`) and optimisers.
    fn new(spec: &Spec, data: &'a TrainSet<'a>, dev: &Device, labelled: Vec<u64>) -> Result<Self> {
        let Spec {
            kind,
            nets,
            attrs,
            opts,
            batch,
            seed,
        } = spec;
        let (kind, batch, seed) = (*kind, *batch, *seed);
        let g_vm = VarMap::new();
        let g = Translator::new(&nets.0, VarBuilder::from_varmap(&g_vm, DType::F32, dev))?;
        seeded_init(&g_vm, seed + 21)?;
        let d_vm = VarMap::new();
        let d = Critic::new(&nets.1, VarBuilder::from_varmap(&d_vm, DType::F32, dev))?;
        seeded_init(&d_vm, seed + 22)?;
        let sample_rows: Vec<usize> = if data.val.is_empty() {
            data.train.iter().copied().take(6).collect()
        } else {
            data.val.iter().copied().take(6).collect()
        };
        Ok(TranslationPhase {
            data,
            dev: dev.clone(),
            kind,
            attrs: attrs.to_vec(),
            opts: opts.clone(),
            steps: opts.steps(kind),
            batch,
            seed: seed + 23,
            labelled,
            opt_g: Adam::with_betas(&g_vm, opts.lr, (opts.beta1, opts.beta2))?,
            opt_d: Adam::with_betas(&d_vm, opts.d_lr, (opts.beta1, opts.beta2))?,
            g_cfg: nets.0.clone(),
            g_vars: g_vm.all_vars(),
            d_vars: d_vm.all_vars(),
            g_vm,
            g,
            d_vm,
            d,
            sample_rows,
        })
    }

    fn n(&self) -> usize {
        self.attrs.len()
    }

    fn editor<'b>(&'b self, g: &'b Translator) -> Editor<'b> {
        Editor {
            g,
            kind: self.kind,
            attrs: &self.attrs,
        }
    }

    fn labels_of(&self, idx: &[usize]) -> Vec<Labels> {
        idx.iter().map(|&i| self.data.faces.labels[i]).collect()
    }

    fn mask_tensor(&self, idx: &[usize]) -> Result<Tensor> {
        let n = self.n();
        let v: Vec<f32> = idx
            .iter()
            .flat_map(|&i| (0..n).map(move |j| ((self.labelled[i] >> j) & 1) as f32))
            .collect();
        Ok(Tensor::from_vec(v, (idx.len(), n), &self.dev)?)
    }

    fn eps(&self, rng: &mut ChaCha8Rng, rows: usize) -> Result<Tensor> {
        let v: Vec<f32> = (0..rows).map(|_| rng.random::<f32>()).collect();
        Ok(Tensor::from_vec(v, (rows, 1, 1, 1), &self.dev)?)
    }
}

impl Phase for TranslationPhase<'_> {
    fn step(&mut self, step: usize) -> Result<Vec<(&'static str, f64)>> {
        let f = lr_factor(self.steps, self.opts.decay_start, step);
        self.opt_g.set_learning_rate(self.opts.lr * f);
        self.opt_d.set_learning_rate(self.opts.d_lr * f);
        let idx: Vec<usize> = batch_indices(self.data.train.len(), self.batch, self.seed, step)
            .into_iter()
            .map(|i| self.data.train[i])
            .collect();
        let mut rng =
            ChaCha8Rng::seed_from_u64(self.seed ^ (step as u64).wrapping_mul(0x9E37_79B9));
        let g_step = step.is_multiple_of(self.opts.n_critic);
        let mut out = match self.kind {
            Kind::Sggan => {
                let d = self.critic_grads_sggan(&idx, &mut rng)?;
                let mut out = apply(&mut self.opt_d, D_LOSSES, d)?;
                if g_step {
                    let g = self.g_grads_sggan(&idx)?;
                    out.extend(apply(&mut self.opt_g, G_LOSSES, g)?);
                }
                out
            }
            Kind::Stargan => {
                let trg = self.stargan_targets(&idx, &mut rng);
                let d = self.critic_grads_stargan(&idx, &trg, &mut rng)?;
                let mut out = apply(&mut self.opt_d, D_LOSSES, d)?;
                if g_step {
                    let g = self.g_grads_stargan(&idx, &trg)?;
                    out.extend(apply(&mut self.opt_g, G_LOSSES, g)?);
                }
                out
            }
        };
        out.push(("lr", self.opts.lr * f));
        Ok(out)
    }

    fn sample(&mut self, path: &Path) -> Result<()> {
        // An untracked copy of G: no autograd graph is built for the grid.
        let g = Translator::new(&self.g_cfg, vb_of(&frozen(&self.g_vm), &self.dev))?;
        sample_grid(
            &self.editor(&g),
            self.data.faces,
            &self.sample_rows,
            &self.dev,
        )?
        .save(path)?;
        Ok(())
    }

    fn nets(&self) -> Vec<(&'static str, &VarMap)> {
        vec![("generator", &self.g_vm), ("critic", &self.d_vm)]
    }

    fn optimizers(&mut self) -> Vec<(&'static str, &mut Adam)> {
        vec![("generator", &mut self.opt_g), ("critic", &mut self.opt_d)]
    }
}

/// Rows `rows` of `faces` through [`value_grid`].
pub fn sample_grid(
    ed: &Editor,
    faces: &FaceSet,
    rows: &[usize],
    dev: &Device,
) -> Result<image::RgbImage> {
    let x = faces.images(rows, dev)?;
    let src: Vec<Labels> = rows.iter().map(|&i| faces.labels[i]).collect();
    value_grid(ed, &x, &src)
}

/// Each source (a row) followed by its translation to every value of every
/// edited attribute (columns 2j + v).
pub fn value_grid(ed: &Editor, x: &Tensor, src: &[Labels]) -> Result<image::RgbImage> {
    let y = ed.all_values(x, src)?;
    let m = y.dim(1)?;
    let mut cells = Vec::new();
    let srcs = tensor_to_rgb(x)?;
    for (r, s) in srcs.into_iter().enumerate() {
        cells.push(s);
        cells.extend(tensor_to_rgb(&y.get(r)?)?);
    }
    Ok(grid(&cells, m + 1))
}

/// Runs the translation phase (resuming where `env.dir` has checkpoints).
pub fn train(spec: &Spec, data: &TrainSet, dev: &Device, env: &PhaseEnv) -> Result<Trained> {
    let (kind, nets, attrs, opts, seed) = (
        spec.kind,
        &spec.nets,
        &spec.attrs[..],
        &spec.opts,
        spec.seed,
    );
    if data.train.is_empty() {
        bail!("no training rows");
    }
    crate::train::require_second_order_gradients()?;
    let steps = opts.steps(kind);
    let train_labels: Vec<Labels> = data.train.iter().map(|&i| data.faces.labels[i]).collect();
    let mask_train = labelled_mask(&train_labels, attrs, opts, seed ^ 0x5EED);
    let mut labelled = vec![0u64; data.faces.len()];
    for (k, &i) in data.train.iter().enumerate() {
        labelled[i] = mask_train[k];
    }
    let mut p = TranslationPhase::new(spec, data, dev, labelled)?;
    let g_init = snapshot(&p.g_vm)?;
    let d_init = snapshot(&p.d_vm)?;
    let phase = match kind {
        Kind::Sggan => "sggan",
        Kind::Stargan => "stargan",
    };
    let r = run_phase(env, phase, steps, &mut p)?;
    let mut log = r.log;
    let mut summary = serde_json::json!({"steps": steps, "wall_time_s": r.wall_time_s});
    let val: Vec<usize> = if data.val.is_empty() {
        data.train.iter().copied().take(64).collect()
    } else {
        data.val.iter().copied().take(64).collect()
    };
    // The initial networks under the same measures: the critic's estimate
    // and its classification loss on real faces then and now, G's
    // classification loss and reconstruction then and now (both G judged by
    // the final critic: the initial critic's class head is untrained).
    let g0 = Translator::new(&nets.0, vb_of(&g_init, dev))?;
    let d0 = Critic::new(&nets.1, vb_of(&d_init, dev))?;
    let seed_m = seed + 24;
    // The final networks untracked: measuring through the variables would
    // keep every forward's autograd graph alive (24 GB at paper_128).
    let g1 = Translator::new(&nets.0, vb_of(&frozen(&p.g_vm), dev))?;
    let d1 = Critic::new(&nets.1, vb_of(&frozen(&p.d_vm), dev))?;
    let editor = |g| Editor { g, kind, attrs };
    let [init_d, init_g] = measure(&editor(&g0), [&d0, &d1], data.faces, &val, seed_m, dev)?;
    let [fin] = measure(&editor(&g1), [&d1], data.faces, &val, seed_m, dev)?;
    for (name, init, end) in [
        ("val/wasserstein", init_d.wasserstein, fin.wasserstein),
        ("val/critic_cls", init_d.critic_cls, fin.critic_cls),
        ("val/g_cls", init_g.g_cls, fin.g_cls),
        ("val/rec_l1", init_g.rec_l1, fin.rec_l1),
    ] {
        log.push(row(phase, 0, name, init));
        log.push(row(phase, steps, name, end));
        summary[format!("{}_init", &name[4..])] = init.into();
        summary[&name[4..]] = end.into();
    }
    summary["val_rows"] = val.len().into();
    let labelled_pairs: u32 = mask_train.iter().map(|m| m.count_ones()).sum();
    summary["labelled_pairs"] = labelled_pairs.into();
    summary["labelled_images"] = mask_train.iter().filter(|&&m| m != 0).count().into();
    Ok(Trained {
        log,
        summary,
        generator: frozen(&p.g_vm),
        critic: frozen(&p.d_vm),
        labelled: mask_train,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::critic::value_logit;
    use crate::train::accumulate::Accumulated;
    use crate::train::losses::{bce_elements, scalar};

    #[test]
    fn two_way_softmax_is_a_logistic_loss_on_the_difference() {
        // −log softmax([0.3, 1.5])[1] = ln(1 + e^{−1.2}) = 0.263282 (Python: -log(softmax))
        let dev = Device::Cpu;
        let cls = Tensor::new(&[[0.3f32, 1.5]], &dev).unwrap();
        let d = value_logit(&cls, 1).unwrap();
        let t = Tensor::new(&[[1f32]], &dev).unwrap();
        let v = scalar(&bce_elements(&d, &t).unwrap().sum_all().unwrap()).unwrap();
        assert!((v - 0.263282).abs() < 1e-5, "{v}");
    }

    /// The largest difference between two phases' gradients of the same
    /// variables, relative to the largest gradient.
    fn grad_gap(vm_a: &VarMap, a: &Accumulated, vm_b: &VarMap, b: &Accumulated) -> f64 {
        let (va, vb) = (vm_a.data().lock().unwrap(), vm_b.data().lock().unwrap());
        let (mut gap, mut top) = (0f64, 0f64);
        for (name, var) in va.iter() {
            let ga = a.grads.get(var.as_tensor()).expect("gradient");
            let gb = b.grads.get(vb[name].as_tensor()).expect("gradient");
            let d = (ga - gb).unwrap().abs().unwrap().max_all().unwrap();
            gap = gap.max(d.to_scalar::<f32>().unwrap() as f64);
            let t = ga.abs().unwrap().max_all().unwrap();
            top = top.max(t.to_scalar::<f32>().unwrap() as f64);
        }
        assert!(top > 0.0);
        gap / top
    }

    #[test]
    fn micro_batches_give_the_whole_batch_gradients() {
        // Without CANDLE_GRAD_DO_NOT_DETACH (unit tests run on many threads,
        // so it cannot be set here) the penalty's parameter gradient is
        // first-order only, the same function on both sides of the check;
        // tests/gradient_penalty.rs checks the penalty itself.
        let dev = Device::Cpu;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let n = 6;
        let labels: Vec<Labels> = (0..n).map(|_| rng.random::<u64>() & 0b111).collect();
        let pixels: Vec<u8> = (0..n * 32 * 32 * 3).map(|_| rng.random()).collect();
        let faces = FaceSet::from_pixels(labels, 32, pixels);
        let data = TrainSet {
            faces: &faces,
            train: (0..n).collect(),
            val: vec![],
        };
        let idx: Vec<usize> = (0..5).collect();
        for kind in [Kind::Sggan, Kind::Stargan] {
            let nets = translator::presets(kind, true, 3);
            let phase = |micro| {
                let opts = TranslationOptions {
                    micro_batch: micro,
                    ..Default::default()
                };
                // Attribute 0 labelled on some rows only: the critic's
                // class loss is normalised by the batch's labelled count.
                let labelled = vec![0b110, 0b111, 0b110, 0b111, 0b111, 0b111];
                let spec = Spec {
                    kind,
                    nets: nets.clone(),
                    attrs: vec![0, 1, 2],
                    opts,
                    batch: 5,
                    seed: 7,
                };
                TranslationPhase::new(&spec, &data, &dev, labelled).unwrap()
            };
            let whole = phase(None);
            let parts = phase(Some(2));
            let grads = |p: &TranslationPhase| {
                let mut r = ChaCha8Rng::seed_from_u64(11);
                match kind {
                    Kind::Sggan => (
                        p.critic_grads_sggan(&idx, &mut r).unwrap(),
                        p.g_grads_sggan(&idx).unwrap(),
                    ),
                    Kind::Stargan => {
                        let trg = p.stargan_targets(&idx, &mut r);
                        (
                            p.critic_grads_stargan(&idx, &trg, &mut r).unwrap(),
                            p.g_grads_stargan(&idx, &trg).unwrap(),
                        )
                    }
                }
            };
            let (dw, gw) = grads(&whole);
            let (dp, gp) = grads(&parts);
            for (a, b) in [(&dw, &dp), (&gw, &gp)] {
                for (x, y) in a.values.iter().zip(&b.values) {
                    assert!(
                        (x - y).abs() <= 1e-5 * x.abs().max(1.0),
                        "{kind:?}: {x} vs {y}"
                    );
                }
            }
            let d_gap = grad_gap(&whole.d_vm, &dw, &parts.d_vm, &dp);
            let g_gap = grad_gap(&whole.g_vm, &gw, &parts.g_vm, &gp);
            assert!(
                d_gap < 1e-4 && g_gap < 1e-4,
                "{kind:?}: critic {d_gap:e}, G {g_gap:e}"
            );
        }
    }
}
