//! Per-channel bias and ×2 nearest upsampling as CPU ops whose backward
//! passes are single contiguous sweeps.
//!
//! candle differentiates `broadcast_add(bias)` and a broadcast-based upsample
//! with a strided `sum_keepdim` over non-trailing dimensions, an element-by-
//! element index walk that was 13% of a `paper_64` autoencoder step (perf;
//! every convolution has a bias). Here:
//! - `add_channel_bias(x, b)`: `y = x + b[c]`; `dx = g`, `db = channel_sum(g)`;
//!   `channel_sum`'s own derivative broadcasts back (candle ops).
//! - `upsample2x(x)` and `sum_pool2x(g)` (sum of each 2×2 block) are each
//!   other's adjoints, so each one's backward is the other.
//!
//! Other devices and dtypes use candle's formulas.
//!
//! `resize_bilinear(x, h, w)` is PyTorch's `interpolate(mode="bilinear",
//! align_corners=False)` without antialiasing, written as two matrix
//! products so that it has a gradient (candle's `upsample_bilinear2d` has
//! none); BridgeGAN's SPADE blocks resize the attribute map with it.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use super::{contiguous_slice as slice, dims4, own_kernels_for};

/// `x + b` with `b` [C] broadcast over [N, C, H, W].
pub fn add_channel_bias(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    if !own_kernels_for(x) || x.rank() != 4 || b.dtype() != x.dtype() {
        return x.broadcast_add(&b.reshape((1, b.dims1()?, 1, 1))?);
    }
    x.contiguous()?.apply_op2(&b.contiguous()?, ChannelBias)
}

/// Σ over batch and space of [N, C, H, W] → [C].
fn channel_sum(g: &Tensor) -> Result<Tensor> {
    g.contiguous()?.apply_op1(ChannelSum)
}

/// Nearest-neighbour ×2 upsampling of [B, C, H, W].
pub fn upsample2x(x: &Tensor) -> Result<Tensor> {
    if !own_kernels_for(x) {
        let (b, c, h, w) = x.dims4()?;
        return x
            .reshape((b, c, h, 1, w, 1))?
            .broadcast_as((b, c, h, 2, w, 2))?
            .reshape((b, c, 2 * h, 2 * w));
    }
    x.contiguous()?.apply_op1(Upsample2x)
}

/// Sum of each 2×2 block of [B, C, 2H, 2W] → [B, C, H, W].
fn sum_pool2x(g: &Tensor) -> Result<Tensor> {
    g.contiguous()?.apply_op1(SumPool2x)
}

/// The float types these ops run on.
trait Elem: candle_core::WithDType + std::ops::AddAssign + Default {}
impl Elem for f32 {}
impl Elem for f64 {}

/// Runs `$f::<T>(…)` on the storages' float type.
macro_rules! dispatch {
    ($name:expr, $s:expr, |$t:ident| $body:expr) => {
        match $s {
            CpuStorage::F32(_) => {
                type $t = f32;
                CpuStorage::F32($body)
            }
            CpuStorage::F64(_) => {
                type $t = f64;
                CpuStorage::F64($body)
            }
            other => bail!("{}: dtype {:?} is not supported", $name, other.dtype()),
        }
    };
}

struct ChannelBias;
struct ChannelSum;
struct Upsample2x;
struct SumPool2x;

impl CustomOp2 for ChannelBias {
    fn name(&self) -> &'static str {
        "augment-channel-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, c, h, w) = dims4(l1, self.name())?;
        if l2.dims() != [c] {
            bail!("{}: bias {:?} for {c} channels", self.name(), l2.dims());
        }
        fn run<T: Elem>(x: &[T], b: &[T], c: usize, plane: usize) -> Vec<T> {
            let mut y = x.to_vec();
            y.par_chunks_mut(plane).enumerate().for_each(|(i, p)| {
                let v = b[i % c];
                p.iter_mut().for_each(|e| *e += v);
            });
            y
        }
        let out = dispatch!(self.name(), s1, |T| run::<T>(
            slice(s1, l1)?,
            slice(s2, l2)?,
            c,
            h * w
        ));
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(g.clone()), Some(channel_sum(g)?)))
    }
}

impl CustomOp1 for ChannelSum {
    fn name(&self) -> &'static str {
        "augment-channel-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = dims4(l, self.name())?;
        fn run<T: Elem>(g: &[T], n: usize, c: usize, plane: usize) -> Vec<T> {
            (0..c)
                .into_par_iter()
                .map(|ch| {
                    let mut acc = T::default();
                    for i in 0..n {
                        for &v in &g[(i * c + ch) * plane..][..plane] {
                            acc += v;
                        }
                    }
                    acc
                })
                .collect()
        }
        let out = dispatch!(self.name(), s, |T| run::<T>(slice(s, l)?, n, c, h * w));
        Ok((out, Shape::from(c)))
    }

    fn bwd(&self, g: &Tensor, _s: &Tensor, u: &Tensor) -> Result<Option<Tensor>> {
        let c = u.dims1()?;
        Ok(Some(
            u.reshape((1, c, 1, 1))?
                .broadcast_as(g.shape())?
                .contiguous()?,
        ))
    }
}

impl CustomOp1 for Upsample2x {
    fn name(&self) -> &'static str {
        "augment-upsample2x"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = dims4(l, self.name())?;
        fn run<T: Elem>(x: &[T], planes: usize, h: usize, w: usize) -> Vec<T> {
            let mut y = vec![T::default(); planes * 4 * h * w];
            y.par_chunks_mut(4 * h * w)
                .enumerate()
                .for_each(|(p, out)| {
                    let src = &x[p * h * w..][..h * w];
                    for i in 0..h {
                        let row = &src[i * w..][..w];
                        let (top, bottom) = out[2 * i * 2 * w..][..4 * w].split_at_mut(2 * w);
                        for (j, &v) in row.iter().enumerate() {
                            top[2 * j] = v;
                            top[2 * j + 1] = v;
                        }
                        bottom.copy_from_slice(top);
                    }
                });
            y
        }
        let out = dispatch!(self.name(), s, |T| run::<T>(slice(s, l)?, b * c, h, w));
        Ok((out, Shape::from((b, c, 2 * h, 2 * w))))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(sum_pool2x(g)?))
    }
}

impl CustomOp1 for SumPool2x {
    fn name(&self) -> &'static str {
        "augment-sum-pool2x"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, h2, w2) = dims4(l, self.name())?;
        if h2 % 2 != 0 || w2 % 2 != 0 {
            bail!("{}: odd size {h2}×{w2}", self.name());
        }
        let (h, w) = (h2 / 2, w2 / 2);
        fn run<T: Elem>(g: &[T], planes: usize, h: usize, w: usize) -> Vec<T> {
            let mut y = vec![T::default(); planes * h * w];
            y.par_chunks_mut(h * w).enumerate().for_each(|(p, out)| {
                let src = &g[p * 4 * h * w..][..4 * h * w];
                for i in 0..h {
                    let top = &src[2 * i * 2 * w..][..2 * w];
                    let bottom = &src[(2 * i + 1) * 2 * w..][..2 * w];
                    for (j, o) in out[i * w..][..w].iter_mut().enumerate() {
                        let mut v = top[2 * j];
                        v += top[2 * j + 1];
                        v += bottom[2 * j];
                        v += bottom[2 * j + 1];
                        *o = v;
                    }
                }
            });
            y
        }
        let out = dispatch!(self.name(), s, |T| run::<T>(slice(s, l)?, b * c, h, w));
        Ok((out, Shape::from((b, c, h, w))))
    }

    fn bwd(&self, _g: &Tensor, _y: &Tensor, u: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(upsample2x(u)?))
    }
}

/// PyTorch's `interpolate(mode="bilinear", align_corners=False)` source
/// positions for one axis: output i samples input coordinate
/// (i + 0.5)·in/out − 0.5, clamped at 0, as (lower index, upper index,
/// weight of the upper).
pub fn bilinear_axis(n_in: usize, n_out: usize) -> Vec<(usize, usize, f32)> {
    let scale = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|i| {
            let src = ((i as f64 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(n_in - 1);
            let i1 = (i0 + 1).min(n_in - 1);
            (i0, i1, (src - i0 as f64) as f32)
        })
        .collect()
}

/// [`bilinear_axis`] as an (out × in) matrix.
fn interpolation_matrix(out: usize, inp: usize) -> Vec<f32> {
    let mut m = vec![0f32; out * inp];
    for (i, (lo, hi, t)) in bilinear_axis(inp, out).into_iter().enumerate() {
        m[i * inp + lo] += 1.0 - t;
        m[i * inp + hi] += t;
    }
    m
}

/// Bilinear resize of [B, C, H, W] to [B, C, h, w], differentiable.
pub fn resize_bilinear(x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (b, c, ih, iw) = x.dims4()?;
    if (ih, iw) == (h, w) {
        return Ok(x.clone());
    }
    let dev = x.device();
    let ah = Tensor::from_vec(interpolation_matrix(h, ih), (h, ih), dev)?.to_dtype(x.dtype())?;
    let awt = Tensor::from_vec(interpolation_matrix(w, iw), (w, iw), dev)?
        .to_dtype(x.dtype())?
        .t()?;
    let flat = x.reshape((b * c, ih, iw))?;
    let rows = ah.broadcast_left(b * c)?.matmul(&flat.contiguous()?)?;
    let out = rows.matmul(&awt.broadcast_left(b * c)?.contiguous()?)?;
    out.reshape((b, c, h, w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_resize_matches_candles_forward_and_has_a_gradient() {
        // candle's upsample_bilinear2d (align_corners = false) follows
        // PyTorch's interpolate; it has no backward, ours is two matmuls.
        let dev = candle_core::Device::Cpu;
        let x = Tensor::arange(0f32, 2.0 * 3.0 * 8.0 * 8.0, &dev)
            .unwrap()
            .reshape((2, 3, 8, 8))
            .unwrap()
            .sin()
            .unwrap();
        for (h, w) in [(16, 16), (4, 4), (2, 2), (8, 8), (32, 32)] {
            let want = x.upsample_bilinear2d(h, w, false).unwrap();
            let got = resize_bilinear(&x, h, w).unwrap();
            let gap: f32 = (want - &got)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert!(gap < 1e-5, "{h}x{w}: {gap}");
        }
        let v = candle_core::Var::from_tensor(&x).unwrap();
        let g = resize_bilinear(v.as_tensor(), 4, 4)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        // Each output sums to 1 over its inputs: the gradient sums to 2·3·4·4.
        let total: f32 = g
            .get(v.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!((total - 96.0).abs() < 1e-3, "{total}");
    }
    use candle_core::{Device, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
        (a - b)?.abs()?.max_all()?.to_scalar::<f64>()
    }

    /// Values and first and second derivatives equal candle's broadcast
    /// formulas (a penalty on the input gradient for the second order).
    #[test]
    fn bias_and_upsampling_match_candle_to_second_order() {
        // SAFETY: read once per thread by candle; the check runs in a fresh one.
        unsafe { std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1") };
        std::thread::spawn(|| -> Result<()> {
            let dev = Device::Cpu;
            let x = Var::from_tensor(
                &Tensor::arange(0f64, 2. * 3. * 4. * 6., &dev)?
                    .reshape((2, 3, 4, 6))?
                    .sin()?,
            )?;
            let b = Var::from_tensor(&Tensor::new(&[0.3f64, -1.2, 0.7], &dev)?)?;
            type Net = dyn Fn(&Tensor, &Tensor) -> Result<Tensor>;
            let ours: &Net = &|x, b| upsample2x(&add_channel_bias(x, b)?)?.sqr();
            let theirs: &Net = &|x, b| {
                let (n, c, h, w) = x.dims4()?;
                x.broadcast_add(&b.reshape((1, 3, 1, 1))?)?
                    .reshape((n, c, h, 1, w, 1))?
                    .broadcast_as((n, c, h, 2, w, 2))?
                    .reshape((n, c, 2 * h, 2 * w))?
                    .sqr()
            };
            let r = Tensor::arange(0f64, 2. * 3. * 8. * 12., &dev)?
                .reshape((2, 3, 8, 12))?
                .cos()?;
            let run = |f: &Net| -> Result<Vec<Tensor>> {
                let y = f(x.as_tensor(), b.as_tensor())?;
                let g = (&y * &r)?.sum_all()?.backward()?;
                let gx = g.get(x.as_tensor()).unwrap().clone();
                let gb = g.get(b.as_tensor()).unwrap().clone();
                let p = (gx.sqr()?.sum_all()? + gb.sqr()?.sum_all()?)?;
                let g2 = p.backward()?;
                Ok(vec![
                    y,
                    gx,
                    gb,
                    g2.get(x.as_tensor()).unwrap().clone(),
                    g2.get(b.as_tensor()).unwrap().clone(),
                ])
            };
            for (i, (a, b)) in run(ours)?.iter().zip(run(theirs)?.iter()).enumerate() {
                let d = max_diff(a, b)?;
                assert!(d < 1e-10, "output {i} differs by {d}");
            }
            Ok(())
        })
        .join()
        .unwrap()
        .unwrap();
    }
}
