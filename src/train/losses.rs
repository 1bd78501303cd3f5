//! Loss functions, written for numerical stability (candle's
//! `binary_cross_entropy_with_logit` takes `log(sigmoid(x))`, which is −inf
//! for large negative logits).

use candle_core::{Result, Tensor};

/// Mean binary cross-entropy of logits `x` against 0/1 targets `t`:
/// `max(x, 0) − x·t + log(1 + exp(−|x|))`, the form PyTorch's
/// `BCEWithLogitsLoss` uses.
pub fn bce_with_logits(x: &Tensor, t: &Tensor) -> Result<Tensor> {
    bce_elements(x, t)?.mean_all()
}

/// The same loss per element (no reduction).
pub fn bce_elements(x: &Tensor, t: &Tensor) -> Result<Tensor> {
    let softplus = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    (x.relu()? - (x * t)?)?.add(&softplus)
}

/// BCE against a constant target (1 = real, 0 = fake).
pub fn bce_const(x: &Tensor, target: f64) -> Result<Tensor> {
    let t = x.ones_like()?.affine(target, 0.0)?;
    bce_with_logits(x, &t)
}

/// Mean absolute error.
pub fn l1(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    (a - b)?.abs()?.mean_all()
}

/// Squared L2 norm of `a − b` per row (summed over the other dimensions),
/// averaged over rows: E‖a − b‖²₂.
pub fn squared_l2(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let n = a.dim(0)? as f64;
    (a - b)?.sqr()?.sum_all()? / n
}

pub fn scalar(t: &Tensor) -> Result<f64> {
    t.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()
}

/// WGAN-GP's penalty (Gulrajani et al. 2017, eq. 3; SG-GAN eq. 3, StarGAN
/// eq. 1 without λ): E[(‖∇_x̂ D(x̂)‖₂ − 1)²] at x̂ = ε·x + (1 − ε)·x̃, with
/// `eps` of shape (B, 1, 1, 1). The gradient ∇_x̂ D is itself differentiated
/// when the penalty is minimised, which candle does only with
/// `CANDLE_GRAD_DO_NOT_DETACH=1` set before the first backward pass of the
/// thread ([`super::enable_second_order_gradients`]; the `augment` binary
/// sets it at start-up).
pub fn gradient_penalty(
    critic: impl Fn(&Tensor) -> Result<Tensor>,
    real: &Tensor,
    fake: &Tensor,
    eps: &Tensor,
) -> Result<Tensor> {
    let x_hat = (real.broadcast_mul(eps)? + fake.broadcast_mul(&eps.affine(-1.0, 1.0)?)?)?.detach();
    let x_var = candle_core::Var::from_tensor(&x_hat)?;
    let out = critic(x_var.as_tensor())?.sum_all()?;
    let grads = out.backward()?;
    let g = grads.get(x_var.as_tensor()).ok_or_else(|| {
        candle_core::Error::Msg("critic output does not depend on its input".into())
    })?;
    // A tiny ridge keeps sqrt differentiable where a gradient vanishes.
    let norm = (g.sqr()?.flatten_from(1)?.sum(1)? + 1e-12)?.sqrt()?;
    (norm - 1.0)?.sqr()?.mean_all()
}

/// R1 (Mescheder et al. 2018; StarGAN-v2's γ = 1 enters as `gamma`):
/// γ/2 · E[‖∇_x D(x)‖²] at the real images, differentiated again when
/// minimised (second-order gradients, as [`gradient_penalty`]).
pub fn r1_penalty(
    critic: impl Fn(&Tensor) -> Result<Tensor>,
    real: &Tensor,
    gamma: f64,
) -> Result<Tensor> {
    let x_var = candle_core::Var::from_tensor(&real.detach())?;
    let out = critic(x_var.as_tensor())?.sum_all()?;
    let grads = out.backward()?;
    let g = grads.get(x_var.as_tensor()).ok_or_else(|| {
        candle_core::Error::Msg("critic output does not depend on its input".into())
    })?;
    g.sqr()?.flatten_from(1)?.sum(1)?.mean_all()? * (0.5 * gamma)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn bce_matches_pytorch_and_stays_finite() {
        // By hand, per element: 200, ln(1+e^-1) = 0.313262, ln 2 = 0.693147,
        // ln(1+e^-2) = 0.126928, 200; mean 80.226667 (what PyTorch's
        // binary_cross_entropy_with_logits gives for these inputs).
        let dev = Device::Cpu;
        let x = Tensor::new(&[-200f32, -1., 0., 2., 200.], &dev).unwrap();
        let t = Tensor::new(&[1f32, 0., 1., 1., 0.], &dev).unwrap();
        let v = scalar(&bce_with_logits(&x, &t).unwrap()).unwrap();
        assert!((v - 80.226667).abs() < 1e-4, "{v}");
    }
}
