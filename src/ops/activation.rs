//! ELU and leaky ReLU as fused CPU ops: one parallel pass forward and one
//! backward, where candle spends five to nine passes and as many temporary
//! tensors per activation (`candle_nn::ops::leaky_relu` is
//! `max(x, 0) + min(x, 0)·s`; candle's ELU backward builds two comparison
//! masks, converts both and multiplies them in). In the `paper_64`
//! autoencoder step every convolution is followed by an ELU over up to
//! 16×64×64×64 values.
//!
//! The gradient ops differentiate too, so the critics' gradient penalties
//! (second order, through leaky ReLU) stay exact:
//! - leaky ReLU: `dx = g ⊙ σ(x)` with `σ = 1` for `x > 0`, else `s`; its
//!   derivative in `g` is the same op, in `x` zero (almost everywhere).
//! - ELU: `dx = g ⊙ e'(x)` with `e'(x) = 1` for `x > 0`, else `y + α`
//!   (`y = e(x)`, kept from the forward pass); its derivative in `g` is the
//!   same op, in `x` it is `u ⊙ g ⊙ [x ≤ 0](y + α)`, built from candle ops.
//!
//! Other devices and dtypes use candle's formulas unchanged.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, bail,
};
use rayon::prelude::*;

use super::{contiguous_slice, own_kernels_for};

/// Elements per parallel task.
const CHUNK: usize = 1 << 15;

/// Leaky ReLU with slope `slope` below zero.
pub fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    if !own_kernels_for(x) {
        return candle_nn::ops::leaky_relu(x, slope);
    }
    x.contiguous()?.apply_op1(LeakyRelu(slope))
}

/// ELU: `x` for `x > 0`, else `α(eˣ − 1)`.
pub fn elu(x: &Tensor, alpha: f64) -> Result<Tensor> {
    if !own_kernels_for(x) {
        return x.elu(alpha);
    }
    x.contiguous()?.apply_op1(Elu(alpha))
}

/// `out[i] = f([a[i], b[i], …])` in parallel chunks.
fn map<T: Float, const N: usize>(inputs: [&[T]; N], f: impl Fn([T; N]) -> T + Sync) -> Vec<T> {
    let len = inputs[0].len();
    let mut out = vec![T::fzero(); len];
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, o)| {
        let start = c * CHUNK;
        for (i, o) in o.iter_mut().enumerate() {
            *o = f(std::array::from_fn(|k| inputs[k][start + i]));
        }
    });
    out
}

/// Runs the f32 or f64 body on the operands (same shape, contiguous).
fn apply<const N: usize>(
    name: &str,
    operands: [(&CpuStorage, &Layout); N],
    f32_body: impl Fn([f32; N]) -> f32 + Sync,
    f64_body: impl Fn([f64; N]) -> f64 + Sync,
) -> Result<(CpuStorage, Shape)> {
    let dims = operands[0].1.dims();
    if operands.iter().any(|(_, l)| l.dims() != dims) {
        bail!("{name}: operand shapes differ");
    }
    let storage = match operands[0].0 {
        CpuStorage::F32(_) => {
            let inputs = collect(operands.map(|(s, l)| contiguous_slice::<f32>(s, l)))?;
            CpuStorage::F32(map(inputs, f32_body))
        }
        CpuStorage::F64(_) => {
            let inputs = collect(operands.map(|(s, l)| contiguous_slice::<f64>(s, l)))?;
            CpuStorage::F64(map(inputs, f64_body))
        }
        other => bail!("{name}: dtype {:?} is not supported", other.dtype()),
    };
    Ok((storage, Shape::from(dims)))
}

fn collect<T, const N: usize>(items: [Result<T>; N]) -> Result<[T; N]> {
    let v = items.into_iter().collect::<Result<Vec<T>>>()?;
    Ok(v.try_into()
        .unwrap_or_else(|_| unreachable!("N items in, N out")))
}

fn leaky<T: Float>(slope: f64) -> impl Fn([T; 1]) -> T + Sync {
    let s = T::of(slope);
    move |[x]| if x > T::fzero() { x } else { x * s }
}

fn leaky_grad<T: Float>(slope: f64) -> impl Fn([T; 2]) -> T + Sync {
    let s = T::of(slope);
    move |[x, g]| if x > T::fzero() { g } else { g * s }
}

fn elu_fwd<T: Float>(alpha: f64) -> impl Fn([T; 1]) -> T + Sync {
    let a = T::of(alpha);
    move |[x]| {
        if x > T::fzero() {
            x
        } else {
            a * (x.fexp() - T::of(1.0))
        }
    }
}

fn elu_grad<T: Float>(alpha: f64) -> impl Fn([T; 3]) -> T + Sync {
    let a = T::of(alpha);
    move |[x, y, g]| if x > T::fzero() { g } else { g * (y + a) }
}

/// The little float arithmetic the element-wise bodies need, for f32/f64.
mod num_like {
    pub trait Float:
        Copy
        + Send
        + Sync
        + 'static
        + PartialOrd
        + std::ops::Mul<Output = Self>
        + std::ops::Add<Output = Self>
        + std::ops::Sub<Output = Self>
    {
        fn fzero() -> Self;
        fn of(v: f64) -> Self;
        fn fexp(self) -> Self;
    }
    impl Float for f32 {
        fn fzero() -> Self {
            0.0
        }
        fn of(v: f64) -> Self {
            v as f32
        }
        fn fexp(self) -> Self {
            f32::exp(self)
        }
    }
    impl Float for f64 {
        fn fzero() -> Self {
            0.0
        }
        fn of(v: f64) -> Self {
            v
        }
        fn fexp(self) -> Self {
            f64::exp(self)
        }
    }
}
use candle_core::backend::BackendStorage;
use num_like::Float;

#[derive(Debug, Clone, Copy)]
struct LeakyRelu(f64);
/// (x, g) → g ⊙ σ(x).
#[derive(Debug, Clone, Copy)]
struct LeakyReluGrad(f64);

impl CustomOp1 for LeakyRelu {
    fn name(&self) -> &'static str {
        "augment-leaky-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let slope = self.0;
        apply(self.name(), [(s, l)], leaky(slope), leaky(slope))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        // x enters the gradient op detached: σ is piecewise constant, so no
        // gradient flows back to x, and a tracked operand that never receives
        // one would break candle's backward pass.
        Ok(Some(
            x.detach()
                .apply_op2(&g.contiguous()?, LeakyReluGrad(self.0))?,
        ))
    }
}

impl CustomOp2 for LeakyReluGrad {
    fn name(&self) -> &'static str {
        "augment-leaky-relu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let slope = self.0;
        apply(
            self.name(),
            [(s1, l1), (s2, l2)],
            leaky_grad(slope),
            leaky_grad(slope),
        )
    }

    fn bwd(
        &self,
        x: &Tensor,
        _g: &Tensor,
        _dx: &Tensor,
        u: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // σ is piecewise constant: nothing flows to x.
        Ok((None, Some(x.apply_op2(&u.contiguous()?, *self)?)))
    }
}

#[derive(Debug, Clone, Copy)]
struct Elu(f64);
/// (x, y, g) → g ⊙ e'(x), with y = e(x).
#[derive(Debug, Clone, Copy)]
struct EluGrad(f64);

impl CustomOp1 for Elu {
    fn name(&self) -> &'static str {
        "augment-elu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let alpha = self.0;
        apply(self.name(), [(s, l)], elu_fwd(alpha), elu_fwd(alpha))
    }

    fn bwd(&self, x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        // y enters detached: it stands for e(x), whose x-dependence the
        // gradient op's own backward accounts for through x.
        Ok(Some(x.apply_op3(
            &y.detach(),
            &g.contiguous()?,
            EluGrad(self.0),
        )?))
    }
}

impl CustomOp3 for EluGrad {
    fn name(&self) -> &'static str {
        "augment-elu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let alpha = self.0;
        let operands = [(s1, l1), (s2, l2), (s3, l3)];
        apply(self.name(), operands, elu_grad(alpha), elu_grad(alpha))
    }

    fn bwd(
        &self,
        x: &Tensor,
        y: &Tensor,
        g: &Tensor,
        _dx: &Tensor,
        u: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // y is e(x) kept from the forward pass, not a separate input: the
        // whole x-dependence of e'(x) is e''(x) = [x ≤ 0](y + α).
        let below = x.le(0.0)?.to_dtype(x.dtype())?;
        let d_x = ((u * g)? * (below * (y + self.0)?)?)?;
        let d_g = x.apply_op3(y, &u.contiguous()?, *self)?;
        Ok((Some(d_x), None, Some(d_g)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn data() -> Result<Tensor> {
        // Values on both sides of the kink, none at it.
        Tensor::arange(0f64, 64., &Device::Cpu)?
            .affine(0.173, -5.3)?
            .reshape((2, 4, 8))
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
        (a - b)?.abs()?.max_all()?.to_scalar::<f64>()
    }

    /// Forward values and first derivatives equal candle's formulas.
    #[test]
    fn fused_activations_match_candle() -> Result<()> {
        let x = Var::from_tensor(&data()?)?;
        let r = data()?.sin()?;
        for (name, ours, theirs) in [
            (
                "leaky",
                leaky_relu(x.as_tensor(), 0.2)?,
                candle_nn::ops::leaky_relu(x.as_tensor(), 0.2)?,
            ),
            ("elu", elu(x.as_tensor(), 1.0)?, x.as_tensor().elu(1.0)?),
            (
                "elu α=0.5",
                elu(x.as_tensor(), 0.5)?,
                x.as_tensor().elu(0.5)?,
            ),
        ] {
            assert!(max_diff(&ours, &theirs)? < 1e-12, "{name} forward");
            let ga = (ours * &r)?.sum_all()?.backward()?;
            let gb = (theirs * &r)?.sum_all()?.backward()?;
            let (ga, gb) = (
                ga.get(x.as_tensor()).unwrap(),
                gb.get(x.as_tensor()).unwrap(),
            );
            assert!(max_diff(ga, gb)? < 1e-12, "{name} gradient");
        }
        Ok(())
    }

    /// Second derivatives (a penalty on the input gradient) equal those of
    /// candle's formulas, which differentiate twice.
    #[test]
    fn fused_activations_differentiate_twice_like_candle() {
        // SAFETY: candle reads this once per thread; the check runs in a
        // fresh one, and every backward pass gives the same values either way.
        unsafe { std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1") };
        std::thread::spawn(|| -> Result<()> {
            let x = Var::from_tensor(&data()?)?;
            let r = data()?.sin()?;
            type Activation<'a> = &'a dyn Fn(&Tensor) -> Result<Tensor>;
            let penalty = |f: Activation| -> Result<Tensor> {
                let l = (f(x.as_tensor())?.sqr()? * &r)?.sum_all()?;
                let g = l.backward()?.get(x.as_tensor()).unwrap().clone();
                let p = g.sqr()?.sum_all()?;
                Ok(p.backward()?.get(x.as_tensor()).unwrap().clone())
            };
            let pairs: [(&str, Activation, Activation); 2] = [
                ("leaky", &|t| leaky_relu(t, 0.2), &|t| {
                    candle_nn::ops::leaky_relu(t, 0.2)
                }),
                ("elu", &|t| elu(t, 0.7), &|t| t.elu(0.7)),
            ];
            for (name, ours, theirs) in pairs {
                let d = max_diff(&penalty(ours)?, &penalty(theirs)?)?;
                assert!(d < 1e-10, "{name}: second-order gradients differ by {d}");
            }
            Ok(())
        })
        .join()
        .unwrap()
        .unwrap();
    }
}
