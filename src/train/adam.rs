//! Adam with decoupled weight decay (Loshchilov & Hutter 2019), the update
//! candle's `AdamW` makes, with its moment estimates and step count saved
//! into the phase checkpoint: a run resumed after a kill takes exactly the
//! steps an uninterrupted run takes (candle's `AdamW` keeps its moments
//! private, so a resume used to restart them from zero).
//!
//! The arithmetic is candle-nn 0.11's `AdamW::step`, operation for
//! operation, so results are bit-identical to it (`tests::same_steps_as_candle`).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::{Optimizer, ParamsAdamW, VarMap};

struct Slot {
    name: String,
    var: Var,
    m: Var,
    v: Var,
}

pub struct Adam {
    slots: Vec<Slot>,
    step_t: usize,
    params: ParamsAdamW,
}

impl Adam {
    /// An optimiser over every float variable of `vm`, by name.
    pub fn of(vm: &VarMap, params: ParamsAdamW) -> Result<Adam> {
        let data = vm.data().lock().expect("varmap lock");
        let mut named: Vec<(&String, &Var)> = data.iter().collect();
        named.sort_by(|a, b| a.0.cmp(b.0));
        let slots = named
            .into_iter()
            .filter(|(_, v)| v.dtype().is_float())
            .map(|(name, var)| {
                Ok(Slot {
                    name: name.clone(),
                    var: var.clone(),
                    m: Var::zeros(var.shape(), var.dtype(), var.device())?,
                    v: Var::zeros(var.shape(), var.dtype(), var.device())?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Adam {
            slots,
            step_t: 0,
            params,
        })
    }

    /// Plain Adam (no weight decay, ε 1e-8) at `lr` with β = `betas`.
    pub fn with_betas(vm: &VarMap, lr: f64, betas: (f64, f64)) -> Result<Adam> {
        Adam::of(
            vm,
            ParamsAdamW {
                lr,
                beta1: betas.0,
                beta2: betas.1,
                eps: 1e-8,
                weight_decay: 0.0,
            },
        )
    }

    /// Steps taken so far (the bias correction's t).
    pub fn steps(&self) -> usize {
        self.step_t
    }

    /// Writes the moment estimates (`m.<var>`, `v.<var>`) as safetensors.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut t: HashMap<String, Tensor> = HashMap::new();
        for s in &self.slots {
            t.insert(format!("m.{}", s.name), s.m.as_tensor().clone());
            t.insert(format!("v.{}", s.name), s.v.as_tensor().clone());
        }
        candle_core::safetensors::save(&t, path)
            .with_context(|| format!("saving optimiser state {}", path.display()))
    }

    /// Restores what [`Adam::save`] wrote, at step count `steps`.
    pub fn load(&mut self, path: &Path, steps: usize) -> Result<()> {
        let dev = self
            .slots
            .first()
            .map(|s| s.var.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        let t = candle_core::safetensors::load(path, &dev)
            .with_context(|| format!("loading optimiser state {}", path.display()))?;
        for s in &self.slots {
            for (key, var) in [
                (format!("m.{}", s.name), &s.m),
                (format!("v.{}", s.name), &s.v),
            ] {
                let Some(x) = t.get(&key) else {
                    bail!("{}: no tensor {key}", path.display());
                };
                var.set(x)
                    .with_context(|| format!("{}: tensor {key}", path.display()))?;
            }
        }
        self.step_t = steps;
        Ok(())
    }
}

impl Optimizer for Adam {
    type Config = ParamsAdamW;

    /// Unnamed variables (their moments are saved under their index).
    fn new(vars: Vec<Var>, params: ParamsAdamW) -> candle_core::Result<Self> {
        let slots = vars
            .into_iter()
            .filter(|v| v.dtype().is_float())
            .enumerate()
            .map(|(i, var)| {
                Ok(Slot {
                    name: i.to_string(),
                    m: Var::zeros(var.shape(), var.dtype(), var.device())?,
                    v: Var::zeros(var.shape(), var.dtype(), var.device())?,
                    var,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Adam {
            slots,
            step_t: 0,
            params,
        })
    }

    fn learning_rate(&self) -> f64 {
        self.params.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        self.step_t += 1;
        let p = &self.params;
        let lr = p.lr;
        let lr_lambda = lr * p.weight_decay;
        let (beta1, beta2) = (p.beta1, p.beta2);
        let scale_m = 1f64 / (1f64 - beta1.powi(self.step_t as i32));
        let scale_v = 1f64 / (1f64 - beta2.powi(self.step_t as i32));
        for s in &self.slots {
            let Some(g) = grads.get(&s.var) else {
                continue;
            };
            let next_m = ((s.m.as_tensor() * beta1)? + (g * (1.0 - beta1))?)?;
            let next_v = ((s.v.as_tensor() * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
            let m_hat = (&next_m * scale_m)?;
            let v_hat = (&next_v * scale_v)?;
            let decayed = (s.var.as_tensor() * (1f64 - lr_lambda))?;
            let adjusted = (m_hat / (v_hat.sqrt()? + p.eps)?)?;
            let next_theta = (decayed - (adjusted * lr)?)?;
            s.m.set(&next_m)?;
            s.v.set(&next_v)?;
            s.var.set(&next_theta)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::{AdamW, Module};

    fn model(seed: u64) -> (VarMap, candle_nn::Linear) {
        let vm = VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let lin = candle_nn::linear(4, 3, vb.pp("lin")).unwrap();
        // Same starting weights in every copy.
        for (k, v) in vm.data().lock().unwrap().iter() {
            let n = v.elem_count();
            let vals: Vec<f32> = (0..n)
                .map(|i| ((i as u64 * 31 + seed + k.len() as u64) % 17) as f32 / 17.0 - 0.5)
                .collect();
            v.set(&Tensor::from_vec(vals, v.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
        (vm, lin)
    }

    fn loss(lin: &candle_nn::Linear, step: usize) -> Tensor {
        let x = Tensor::arange(0f32, 8.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 4))
            .unwrap()
            .affine(0.1 * step as f64, 0.3)
            .unwrap();
        lin.forward(&x).unwrap().sqr().unwrap().mean_all().unwrap()
    }

    fn params() -> ParamsAdamW {
        ParamsAdamW {
            lr: 0.01,
            beta1: 0.5,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }

    fn weights(vm: &VarMap) -> Vec<Vec<f32>> {
        let data = vm.data().lock().unwrap();
        let mut keys: Vec<&String> = data.keys().collect();
        keys.sort();
        keys.iter()
            .map(|k| {
                data[*k]
                    .as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn same_steps_as_candle() {
        let (vm_a, lin_a) = model(1);
        let (vm_b, lin_b) = model(1);
        let mut ours = Adam::of(&vm_a, params()).unwrap();
        let mut theirs = AdamW::new(vm_b.all_vars(), params()).unwrap();
        for step in 1..=6 {
            ours.backward_step(&loss(&lin_a, step)).unwrap();
            theirs.backward_step(&loss(&lin_b, step)).unwrap();
        }
        assert_eq!(
            weights(&vm_a),
            weights(&vm_b),
            "bit-identical to candle's AdamW"
        );
    }

    #[test]
    fn a_saved_and_reloaded_optimiser_continues_exactly() {
        let dir = tempfile::tempdir().unwrap();
        // Uninterrupted: 6 steps.
        let (vm_a, lin_a) = model(2);
        let mut a = Adam::of(&vm_a, params()).unwrap();
        for step in 1..=6 {
            a.backward_step(&loss(&lin_a, step)).unwrap();
        }
        // 3 steps, save weights and moments, a fresh process's objects, 3 more.
        let (vm_b, lin_b) = model(2);
        let mut b = Adam::of(&vm_b, params()).unwrap();
        for step in 1..=3 {
            b.backward_step(&loss(&lin_b, step)).unwrap();
        }
        vm_b.save(dir.path().join("w.safetensors")).unwrap();
        b.save(&dir.path().join("adam.safetensors")).unwrap();
        let (mut vm_c, lin_c) = model(99);
        vm_c.load(dir.path().join("w.safetensors")).unwrap();
        let mut c = Adam::of(&vm_c, params()).unwrap();
        c.load(&dir.path().join("adam.safetensors"), b.steps())
            .unwrap();
        for step in 4..=6 {
            c.backward_step(&loss(&lin_c, step)).unwrap();
        }
        assert_eq!(weights(&vm_a), weights(&vm_c));
    }
}
