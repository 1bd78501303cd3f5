//! 2-D convolution on the CPU as im2col / col2im + GEMM, as three candle
//! custom ops that differentiate into each other.
//!
//! For one convolution geometry (input `x` [N, Ci, H, W], kernel `w`
//! [Co, Ci, kh, kw], output [N, Co, Ho, Wo]) the three bilinear maps are
//!
//! - `F(x, w)  = y`   the convolution: `y_n = W · im2col(x_n)`,
//! - `Bx(dy, w) = dx` its input gradient, i.e. the transposed convolution:
//!   `dx_n = col2im(Wᵀ · dy_n)`,
//! - `Bw(x, dy) = dw` its weight gradient: `dw = Σ_n dy_n · im2col(x_n)ᵀ`,
//!
//! with `W` the kernel seen as a [Co, Ci·kh·kw] matrix. They are adjoint to
//! one another (`⟨F(x,w), dy⟩ = ⟨x, Bx(dy,w)⟩ = ⟨w, Bw(x,dy)⟩`), so each
//! one's backward pass is made of the other two:
//!
//! | op | ∂/∂ first argument (upstream g) | ∂/∂ second argument |
//! |---|---|---|
//! | `F(x, w)`   | `Bx(g, w)`  | `Bw(x, g)` |
//! | `Bx(dy, w)` | `F(g, w)`   | `Bw(g, dy)` |
//! | `Bw(x, dy)` | `Bx(dy, g)` | `F(x, g)` |
//!
//! and second-order gradients (WGAN-GP, R1) are as exact as first-order ones.
//!
//! Why: candle 0.11's CPU `conv_transpose2d` is a direct loop without GEMM,
//! and it is both every decoder layer's forward pass and every convolution's
//! input gradient; its weight gradient is a conv2d whose kernel is the whole
//! output map. See `../../benches/conv.rs` for the measured difference.
//!
//! Threads: when the batch has at least as many images as rayon has threads,
//! images run in parallel, one single-threaded GEMM each; otherwise images
//! run one after another with a multi-threaded GEMM. `RAYON_NUM_THREADS` sets
//! the count, as for the rest of candle.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, WithDType, bail};
use gemm::Parallelism;
use rayon::prelude::*;

use super::{contiguous_slice as slice, dims4};

/// The spatial side of one convolution: everything but batch and channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    /// (kh, kw)
    pub kernel: (usize, usize),
    /// (H, W) of the convolution's input
    pub input: (usize, usize),
    /// (Ho, Wo) of its output
    pub output: (usize, usize),
}

impl Geometry {
    /// The geometry of a convolution of an `input`-sized map.
    pub fn of_conv(
        input: (usize, usize),
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<Self> {
        if stride.0 == 0 || stride.1 == 0 {
            bail!("conv2d: stride must be positive, got {stride:?}");
        }
        if input.0 + 2 * padding.0 < kernel.0 || input.1 + 2 * padding.1 < kernel.1 {
            bail!(
                "conv2d: kernel {kernel:?} is larger than the padded input {input:?} + 2×{padding:?}"
            );
        }
        let output = (
            (input.0 + 2 * padding.0 - kernel.0) / stride.0 + 1,
            (input.1 + 2 * padding.1 - kernel.1) / stride.1 + 1,
        );
        Ok(Geometry {
            stride,
            padding,
            kernel,
            input,
            output,
        })
    }

    /// A 1×1 convolution with stride 1 and no padding: im2col is the identity.
    fn is_pointwise(&self) -> bool {
        self.kernel == (1, 1) && self.stride == (1, 1) && self.padding == (0, 0)
    }
}

/// Whether our kernels handle these operands (CPU, f32/f64, switch on).
fn own_kernels_for(x: &Tensor, w: &Tensor) -> bool {
    super::own_kernels_for(x) && x.dtype() == w.dtype()
}

/// `conv2d` with one stride and padding for both axes, as candle's.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    conv2d_hw(x, w, (stride, stride), (padding, padding))
}

/// `conv2d` with (height, width) stride and padding.
pub fn conv2d_hw(
    x: &Tensor,
    w: &Tensor,
    stride: (usize, usize),
    padding: (usize, usize),
) -> Result<Tensor> {
    if !own_kernels_for(x, w) {
        if stride.0 != stride.1 {
            bail!("conv2d: candle's kernels take one stride for both axes, got {stride:?}");
        }
        let (ph, pw) = padding;
        if ph == pw {
            return x.conv2d(w, ph, stride.0, 1, 1);
        }
        let x = x.pad_with_zeros(2, ph, ph)?.pad_with_zeros(3, pw, pw)?;
        return x.conv2d(w, 0, stride.0, 1, 1);
    }
    let (_, _, h, wd) = x.dims4()?;
    let (_, _, kh, kw) = w.dims4()?;
    let g = Geometry::of_conv((h, wd), (kh, kw), stride, padding)?;
    forward(g, x, w)
}

/// `conv_transpose2d` as candle's and PyTorch's: `x` [N, Cin, H, W], `w`
/// [Cin, Cout, k, k]; output side `(H−1)·stride − 2·padding + k + output_padding`.
pub fn conv_transpose2d(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    output_padding: usize,
) -> Result<Tensor> {
    if !own_kernels_for(x, w) {
        return x.conv_transpose2d(w, padding, output_padding, stride, 1);
    }
    if stride == 0 || output_padding >= stride {
        bail!(
            "conv_transpose2d: output_padding {output_padding} must be smaller than stride {stride}"
        );
    }
    let (_, _, hi, wi) = x.dims4()?;
    let (_, _, kh, kw) = w.dims4()?;
    let side = |i: usize, k: usize| -> Result<usize> {
        let full = (i.max(1) - 1) * stride + k + output_padding;
        if i == 0 || full < 2 * padding + 1 {
            bail!(
                "conv_transpose2d: input side {i} with kernel {k}, stride {stride}, padding {padding} gives no output"
            );
        }
        Ok(full - 2 * padding)
    };
    let out = (side(hi, kh)?, side(wi, kw)?);
    let g = Geometry::of_conv(out, (kh, kw), (stride, stride), (padding, padding))?;
    if g.output != (hi, wi) {
        bail!("conv_transpose2d: inconsistent geometry {g:?} for input {hi}×{wi}");
    }
    input_grad(g, x, w)
}

/// `F(x, w)` through the custom op (CPU only).
fn forward(g: Geometry, x: &Tensor, w: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op2(&w.contiguous()?, Forward(g))
}

/// `Bx(dy, w)` through the custom op (CPU only).
fn input_grad(g: Geometry, dy: &Tensor, w: &Tensor) -> Result<Tensor> {
    dy.contiguous()?.apply_op2(&w.contiguous()?, InputGrad(g))
}

/// `Bw(x, dy)` through the custom op (CPU only).
fn weight_grad(g: Geometry, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op2(&dy.contiguous()?, WeightGrad(g))
}

/// `F`: (x [N, Ci, H, W], w [Co, Ci, kh, kw]) → y [N, Co, Ho, Wo].
#[derive(Debug, Clone, Copy)]
struct Forward(Geometry);
/// `Bx`: (dy [N, Co, Ho, Wo], w [Co, Ci, kh, kw]) → dx [N, Ci, H, W].
#[derive(Debug, Clone, Copy)]
struct InputGrad(Geometry);
/// `Bw`: (x [N, Ci, H, W], dy [N, Co, Ho, Wo]) → dw [Co, Ci, kh, kw].
#[derive(Debug, Clone, Copy)]
struct WeightGrad(Geometry);

/// Batch and channel counts with the geometry.
#[derive(Debug, Clone, Copy)]
struct Dims {
    n: usize,
    ci: usize,
    co: usize,
    g: Geometry,
}

impl Dims {
    /// Rows of the im2col matrix: Ci·kh·kw.
    fn k(&self) -> usize {
        self.ci * self.g.kernel.0 * self.g.kernel.1
    }
    /// Output pixels per channel.
    fn p(&self) -> usize {
        self.g.output.0 * self.g.output.1
    }
    /// Input pixels per channel.
    fn q(&self) -> usize {
        self.g.input.0 * self.g.input.1
    }
}

fn check(cond: bool, what: &str, g: &Geometry, a: &Layout, b: &Layout) -> Result<()> {
    if !cond {
        bail!(
            "{what}: operand shapes {:?} and {:?} do not fit {g:?}",
            a.dims(),
            b.dims()
        );
    }
    Ok(())
}

/// Runs `$f::<T>(a, b)` for the two storages' common float type.
macro_rules! dispatch {
    ($name:expr, $s1:expr, $l1:expr, $s2:expr, $l2:expr, $f:ident, $d:expr) => {
        match ($s1, $s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                f32::to_cpu_storage_owned($f::<f32>(&$d, slice($s1, $l1)?, slice($s2, $l2)?))
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                f64::to_cpu_storage_owned($f::<f64>(&$d, slice($s1, $l1)?, slice($s2, $l2)?))
            }
            (a, b) => bail!(
                "{}: dtypes {:?} and {:?} are not supported (f32 or f64)",
                $name,
                a.dtype(),
                b.dtype()
            ),
        }
    };
}

impl CustomOp2 for Forward {
    fn name(&self) -> &'static str {
        "augment-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let (n, ci, h, w) = dims4(l1, self.name())?;
        let (co, ci2, kh, kw) = dims4(l2, self.name())?;
        check(
            ci == ci2 && (h, w) == g.input && (kh, kw) == g.kernel,
            self.name(),
            &g,
            l1,
            l2,
        )?;
        let d = Dims { n, ci, co, g };
        let out = dispatch!(self.name(), s1, l1, s2, l2, forward_cpu, d);
        Ok((out, Shape::from((n, co, g.output.0, g.output.1))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((
            Some(input_grad(self.0, dy, w)?),
            Some(weight_grad(self.0, x, dy)?),
        ))
    }
}

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "augment-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let (n, co, ho, wo) = dims4(l1, self.name())?;
        let (co2, ci, kh, kw) = dims4(l2, self.name())?;
        check(
            co == co2 && (ho, wo) == g.output && (kh, kw) == g.kernel,
            self.name(),
            &g,
            l1,
            l2,
        )?;
        let d = Dims { n, ci, co, g };
        let out = dispatch!(self.name(), s1, l1, s2, l2, input_grad_cpu, d);
        Ok((out, Shape::from((n, ci, g.input.0, g.input.1))))
    }

    fn bwd(
        &self,
        dy: &Tensor,
        w: &Tensor,
        _dx: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((
            Some(forward(self.0, g, w)?),
            Some(weight_grad(self.0, g, dy)?),
        ))
    }
}

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "augment-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let (n, ci, h, w) = dims4(l1, self.name())?;
        let (n2, co, ho, wo) = dims4(l2, self.name())?;
        check(
            n == n2 && (h, w) == g.input && (ho, wo) == g.output,
            self.name(),
            &g,
            l1,
            l2,
        )?;
        let d = Dims { n, ci, co, g };
        let out = dispatch!(self.name(), s1, l1, s2, l2, weight_grad_cpu, d);
        Ok((out, Shape::from((co, ci, g.kernel.0, g.kernel.1))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        dy: &Tensor,
        _dw: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((
            Some(input_grad(self.0, dy, g)?),
            Some(forward(self.0, x, g)?),
        ))
    }
}

/// The float types the kernels run on.
trait Elem: WithDType + std::ops::AddAssign + Default {}
impl Elem for f32 {}
impl Elem for f64 {}

/// How a batch is cut into groups of images that share one GEMM, and
/// where the threads go.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Images per group: enough that a GEMM has ≥ [`MIN_COLUMNS`] columns
    /// (one image's output map alone, when it is that large).
    per_group: usize,
    groups: usize,
    /// Groups in parallel, one single-threaded GEMM each; else groups in
    /// turn, each GEMM on all threads.
    parallel_groups: bool,
    gemm: Parallelism,
}

/// Below this many output pixels per GEMM, images are batched together:
/// a 4×4 map of 512 → 1024 channels per image would stream the whole
/// weight matrix once per image for 4 columns of work.
const MIN_COLUMNS: usize = 1024;

impl Plan {
    fn of(d: &Dims) -> Plan {
        let per_group = MIN_COLUMNS.div_ceil(d.p().max(1)).clamp(1, d.n.max(1));
        let groups = d.n.div_ceil(per_group);
        let threads = rayon::current_num_threads();
        let parallel_groups = threads <= 1 || groups >= threads;
        let gemm = if parallel_groups {
            Parallelism::None
        } else {
            Parallelism::Rayon(threads)
        };
        Plan {
            per_group,
            groups,
            parallel_groups,
            gemm,
        }
    }

    /// Images of group `g`.
    fn images(&self, g: usize, n: usize) -> std::ops::Range<usize> {
        g * self.per_group..((g + 1) * self.per_group).min(n)
    }
}

/// Scratch buffers one group's work reuses.
#[derive(Default)]
struct Scratch<T> {
    col: Vec<T>,
    mat: Vec<T>,
}

fn resized<T: Elem>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    v.resize(len, T::from_f64(0.0));
    &mut v[..len]
}

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]` on row-major operands, each given
/// with its (row, column) strides (a transposed operand is a swap of its
/// strides).
fn matmul<T: Elem>(
    (m, n, k): (usize, usize, usize),
    dst: &mut [T],
    accumulate: bool,
    (lhs, (lhs_rs, lhs_cs)): (&[T], (usize, usize)),
    (rhs, (rhs_rs, rhs_cs)): (&[T], (usize, usize)),
    par: Parallelism,
) {
    debug_assert!(dst.len() >= m * n);
    debug_assert!(m == 0 || k == 0 || lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs);
    debug_assert!(k == 0 || n == 0 || rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs);
    // SAFETY: the three slices cover every element the strides address
    // (checked above in debug builds, and by the callers' shape checks), `dst`
    // does not alias the operands, and `T` is f32 or f64 (gemm's own types).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            T::from_f64(1.0),
            T::from_f64(1.0),
            false,
            false,
            false,
            par,
        )
    }
}

/// Output positions `o` in `0..out` whose input index `o·s + k − p` lies in
/// `0..len`, as a half-open range.
fn valid(out: usize, s: usize, k: usize, p: usize, len: usize) -> (usize, usize) {
    let lo = if p > k { (p - k).div_ceil(s) } else { 0 };
    let hi = if len + p > k {
        ((len - 1 + p - k) / s + 1).min(out)
    } else {
        0
    };
    (lo.min(hi), hi)
}

/// im2col of one image into columns `offset..offset + Ho·Wo` of `col`, a
/// [Ci·kh·kw, ld] matrix; zeros where the kernel reads padding.
fn im2col<T: Elem>(x: &[T], col: &mut [T], ld: usize, offset: usize, ci: usize, g: &Geometry) {
    let (h, w) = g.input;
    let (kh, kw) = g.kernel;
    let (sh, sw) = g.stride;
    let (ph, pw) = g.padding;
    let (ho, wo) = g.output;
    let zero = T::from_f64(0.0);
    let mut r = 0;
    for c in 0..ci {
        let plane = &x[c * h * w..][..h * w];
        for i in 0..kh {
            let (oh_lo, oh_hi) = valid(ho, sh, i, ph, h);
            for j in 0..kw {
                let (ow_lo, ow_hi) = valid(wo, sw, j, pw, w);
                let row = &mut col[r * ld + offset..][..ho * wo];
                r += 1;
                row[..oh_lo * wo].fill(zero);
                row[oh_hi * wo..].fill(zero);
                for oh in oh_lo..oh_hi {
                    let out = &mut row[oh * wo..][..wo];
                    out[..ow_lo].fill(zero);
                    out[ow_hi..].fill(zero);
                    if ow_lo == ow_hi {
                        continue;
                    }
                    let src = &plane[(oh * sh + i - ph) * w..][..w];
                    if sw == 1 {
                        let start = ow_lo + j - pw;
                        out[ow_lo..ow_hi].copy_from_slice(&src[start..start + ow_hi - ow_lo]);
                    } else {
                        for (ow, o) in (ow_lo..ow_hi).zip(&mut out[ow_lo..ow_hi]) {
                            *o = src[ow * sw + j - pw];
                        }
                    }
                }
            }
        }
    }
}

/// col2im of one image: adds columns `offset..offset + Ho·Wo` of `col`, a
/// [Ci·kh·kw, ld] matrix, into `dx` [Ci, H, W].
fn col2im<T: Elem>(col: &[T], ld: usize, offset: usize, dx: &mut [T], ci: usize, g: &Geometry) {
    let (h, w) = g.input;
    let (kh, kw) = g.kernel;
    let (sh, sw) = g.stride;
    let (ph, pw) = g.padding;
    let (ho, wo) = g.output;
    let mut r = 0;
    for c in 0..ci {
        let plane = &mut dx[c * h * w..][..h * w];
        for i in 0..kh {
            let (oh_lo, oh_hi) = valid(ho, sh, i, ph, h);
            for j in 0..kw {
                let (ow_lo, ow_hi) = valid(wo, sw, j, pw, w);
                let row = &col[r * ld + offset..][..ho * wo];
                r += 1;
                if ow_lo == ow_hi {
                    continue;
                }
                for oh in oh_lo..oh_hi {
                    let src = &row[oh * wo..][..wo];
                    let dst = &mut plane[(oh * sh + i - ph) * w..][..w];
                    if sw == 1 {
                        let start = ow_lo + j - pw;
                        let dst = &mut dst[start..start + ow_hi - ow_lo];
                        for (d, s) in dst.iter_mut().zip(&src[ow_lo..ow_hi]) {
                            *d += *s;
                        }
                    } else {
                        for ow in ow_lo..ow_hi {
                            dst[ow * sw + j - pw] += src[ow];
                        }
                    }
                }
            }
        }
    }
}

/// The im2col matrix [K, m·P] of the group's `m` images (`x_group` holds
/// them back to back); a pointwise convolution of one image needs no copy.
fn group_columns<'a, T: Elem>(
    d: &Dims,
    x_group: &'a [T],
    m: usize,
    col: &'a mut Vec<T>,
) -> &'a [T] {
    let (k, p, q) = (d.k(), d.p(), d.q());
    if m == 1 && d.g.is_pointwise() {
        return x_group;
    }
    let col = resized(col, k * m * p);
    for i in 0..m {
        im2col(
            &x_group[i * d.ci * q..][..d.ci * q],
            col,
            m * p,
            i * p,
            d.ci,
            &d.g,
        );
    }
    col
}

/// [C, m·P] from the group's `m` maps [m, C, P] (no copy for one image).
fn gather<'a, T: Elem>(
    maps: &'a [T],
    c: usize,
    p: usize,
    m: usize,
    buf: &'a mut Vec<T>,
) -> &'a [T] {
    if m == 1 {
        return maps;
    }
    let out = resized(buf, c * m * p);
    for i in 0..m {
        for ch in 0..c {
            out[ch * m * p + i * p..][..p].copy_from_slice(&maps[(i * c + ch) * p..][..p]);
        }
    }
    out
}

/// Runs `one(group, its output chunk, scratch, gemm threads)` over the groups
/// as the plan says; `chunk` is one image's share of `out`.
fn for_groups<T: Elem>(
    plan: &Plan,
    out: &mut [T],
    chunk: usize,
    one: impl Fn(usize, &mut [T], &mut Scratch<T>, Parallelism) + Sync,
) {
    let size = plan.per_group * chunk;
    if plan.parallel_groups {
        out.par_chunks_mut(size)
            .enumerate()
            .for_each_init(Scratch::default, |s, (g, o)| one(g, o, s, plan.gemm));
    } else {
        let mut s = Scratch::default();
        for (g, o) in out.chunks_mut(size).enumerate() {
            one(g, o, &mut s, plan.gemm);
        }
    }
}

/// `y = W · im2col(x)`, per group of images.
fn forward_cpu<T: Elem>(d: &Dims, x: &[T], w: &[T]) -> Vec<T> {
    let (k, p, q) = (d.k(), d.p(), d.q());
    let mut y = vec![T::from_f64(0.0); d.n * d.co * p];
    if y.is_empty() {
        return y;
    }
    let plan = Plan::of(d);
    for_groups(&plan, &mut y, d.co * p, |g, y_group, s, par| {
        let images = plan.images(g, d.n);
        let m = images.len();
        let cols = group_columns(
            d,
            &x[images.start * d.ci * q..][..m * d.ci * q],
            m,
            &mut s.col,
        );
        if m == 1 {
            matmul(
                (d.co, p, k),
                y_group,
                false,
                (w, (k, 1)),
                (cols, (p, 1)),
                par,
            );
            return;
        }
        // [Co, m·P] then scattered to [m, Co, P].
        let out = resized(&mut s.mat, d.co * m * p);
        matmul(
            (d.co, m * p, k),
            out,
            false,
            (w, (k, 1)),
            (cols, (m * p, 1)),
            par,
        );
        for i in 0..m {
            for c in 0..d.co {
                y_group[(i * d.co + c) * p..][..p].copy_from_slice(&out[c * m * p + i * p..][..p]);
            }
        }
    });
    y
}

/// `dx = col2im(Wᵀ · dy)`, per group of images.
fn input_grad_cpu<T: Elem>(d: &Dims, dy: &[T], w: &[T]) -> Vec<T> {
    let (k, p, q) = (d.k(), d.p(), d.q());
    let mut dx = vec![T::from_f64(0.0); d.n * d.ci * q];
    if dx.is_empty() {
        return dx;
    }
    let plan = Plan::of(d);
    for_groups(&plan, &mut dx, d.ci * q, |g, dx_group, s, par| {
        let images = plan.images(g, d.n);
        let m = images.len();
        let dys = gather(
            &dy[images.start * d.co * p..][..m * d.co * p],
            d.co,
            p,
            m,
            &mut s.mat,
        );
        // Wᵀ: element (r, c) of the [K, Co] matrix is w[c·K + r].
        if m == 1 && d.g.is_pointwise() {
            matmul(
                (d.ci, p, d.co),
                dx_group,
                false,
                (w, (1, k)),
                (dys, (p, 1)),
                par,
            );
            return;
        }
        let col = resized(&mut s.col, k * m * p);
        matmul(
            (k, m * p, d.co),
            col,
            false,
            (w, (1, k)),
            (dys, (m * p, 1)),
            par,
        );
        for i in 0..m {
            col2im(
                col,
                m * p,
                i * p,
                &mut dx_group[i * d.ci * q..][..d.ci * q],
                d.ci,
                &d.g,
            );
        }
    });
    dx
}

/// `dw = Σ_groups dy_group · im2col(x_group)ᵀ`, the groups split into one
/// part a thread whose sums are added at the end.
fn weight_grad_cpu<T: Elem>(d: &Dims, x: &[T], dy: &[T]) -> Vec<T> {
    let (k, p, q) = (d.k(), d.p(), d.q());
    let zero = T::from_f64(0.0);
    let plan = Plan::of(d);
    let parts = if plan.parallel_groups {
        rayon::current_num_threads().min(plan.groups).max(1)
    } else {
        1
    };
    let groups_per_part = plan.groups.div_ceil(parts).max(1);
    let part = |t: usize| {
        let mut dw = vec![zero; d.co * k];
        let mut s = Scratch::default();
        for g in t * groups_per_part..((t + 1) * groups_per_part).min(plan.groups) {
            let images = plan.images(g, d.n);
            let m = images.len();
            let cols = group_columns(
                d,
                &x[images.start * d.ci * q..][..m * d.ci * q],
                m,
                &mut s.col,
            );
            let dys = gather(
                &dy[images.start * d.co * p..][..m * d.co * p],
                d.co,
                p,
                m,
                &mut s.mat,
            );
            // im2colᵀ: element (pixel, r) is cols[r·m·P + pixel].
            matmul(
                (d.co, k, m * p),
                &mut dw,
                true,
                (dys, (m * p, 1)),
                (cols, (1, m * p)),
                plan.gemm,
            );
        }
        dw
    };
    let mut partials: Vec<Vec<T>> = (0..parts).into_par_iter().map(part).collect();
    let mut dw = partials.swap_remove(0);
    for other in partials {
        for (a, b) in dw.iter_mut().zip(other) {
            *a += b;
        }
    }
    dw
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn valid_range_keeps_exactly_the_in_bounds_positions() {
        for (out, s, k, p, len) in [
            (5, 1, 0, 1, 5),
            (5, 1, 2, 1, 5),
            (3, 2, 0, 1, 6),
            (3, 2, 3, 1, 6),
            (4, 3, 6, 3, 8),
            (1, 1, 0, 3, 1),
        ] {
            let (lo, hi) = valid(out, s, k, p, len);
            for o in 0..out {
                let i = (o * s + k) as isize - p as isize;
                let inside = i >= 0 && (i as usize) < len;
                assert_eq!(inside, (lo..hi).contains(&o), "o={o} s={s} k={k} p={p}");
            }
        }
    }

    #[test]
    fn forward_matches_candle_on_a_small_case() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f64, 2. * 3. * 5. * 4., &dev)?.reshape((2, 3, 5, 4))?;
        let w = (Tensor::arange(0f64, 4. * 3. * 3. * 3., &dev)?.reshape((4, 3, 3, 3))? * 0.01)?;
        for (s, p) in [(1, 0), (1, 1), (2, 1), (2, 0)] {
            let a = conv2d(&x, &w, s, p)?;
            let b = x.conv2d(&w, p, s, 1, 1)?;
            let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f64>()?;
            assert!(diff < 1e-9, "stride {s} padding {p}: {diff}");
        }
        Ok(())
    }
}
