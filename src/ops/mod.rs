//! Our own tensor kernels, where candle's CPU backend is measured to be the
//! bottleneck. Like `models` and `metrics`, this module knows candle only.
//!
//! - [`conv`]: 2-D convolution, its input gradient (= transposed convolution)
//!   and its weight gradient as three candle custom ops built on im2col /
//!   col2im and the `gemm` crate. Each op's backward pass is written with the
//!   other two, so the set is closed under differentiation: the critics'
//!   gradient penalties (second-order gradients) go through them too.
//! - [`activation`]: ELU and leaky ReLU, one fused pass each way instead
//!   of candle's five to nine.
//! - [`spatial`]: per-channel bias and ×2 nearest upsampling, with
//!   single-sweep backward passes instead of candle's strided reductions.
//! - [`layers`]: the `Conv2d` / `ConvTranspose2d` layers every model uses;
//!   they pick our ops on the CPU and candle's own kernels elsewhere (CUDA).
//!
//! Which kernels run on the CPU is one process-wide switch ([`Kernels`]),
//! read from `AUGMENT_CONV_KERNELS` (`own`, the default, or `candle`) so a
//! user can compare or fall back without rebuilding, and the benchmarks can
//! time both in one process.

pub mod activation;
pub mod conv;
pub mod layers;
pub mod spatial;

use std::sync::atomic::{AtomicU8, Ordering};

use candle_core::{CpuStorage, DType, Layout, Result, Tensor, WithDType, bail};

/// The CPU convolution kernels in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// im2col / col2im + GEMM ([`conv`]).
    Own,
    /// candle's built-in CPU kernels.
    Candle,
}

const UNSET: u8 = 0;
const OWN: u8 = 1;
const CANDLE: u8 = 2;
static KERNELS: AtomicU8 = AtomicU8::new(UNSET);

/// The kernels in use: set by [`set_kernels`], else `AUGMENT_CONV_KERNELS`,
/// else [`Kernels::Own`]. An unknown value of the variable falls back to
/// `Own` (a warning is printed once).
pub fn kernels() -> Kernels {
    match KERNELS.load(Ordering::Relaxed) {
        OWN => Kernels::Own,
        CANDLE => Kernels::Candle,
        _ => {
            configure_allocator();
            let k = match std::env::var("AUGMENT_CONV_KERNELS").as_deref() {
                Ok("candle") => Kernels::Candle,
                Ok("own") | Err(_) => Kernels::Own,
                Ok(other) => {
                    eprintln!(
                        "augment: AUGMENT_CONV_KERNELS={other:?} is not `own` or `candle`; using `own`"
                    );
                    Kernels::Own
                }
            };
            set_kernels(k);
            k
        }
    }
}

/// Whether our kernels handle `x`: on the CPU, f32 or f64, switch on.
fn own_kernels_for(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64) && kernels() == Kernels::Own
}

/// The contiguous slice of `s` that `l` covers (our ops make every operand
/// contiguous before they are applied).
fn contiguous_slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<T>()?[a..b]),
        None => bail!("augment op: operand is not contiguous"),
    }
}

/// The four dimensions of an [N, C, H, W] operand of op `name`.
fn dims4(l: &Layout, name: &str) -> Result<(usize, usize, usize, usize)> {
    match l.dims() {
        &[a, b, c, d] => Ok((a, b, c, d)),
        other => bail!("{name}: expected a 4-d [N, C, H, W] tensor, got shape {other:?}"),
    }
}

/// Selects the CPU convolution kernels for the whole process.
pub fn set_kernels(k: Kernels) {
    // Whichever runs first, kernels() or this, sets up the allocator.
    configure_allocator();
    let v = match k {
        Kernels::Own => OWN,
        Kernels::Candle => CANDLE,
    };
    KERNELS.store(v, Ordering::Relaxed);
}

/// Fixes candle's CPU thread count for the process: sets `RAYON_NUM_THREADS`
/// to the CPUs this process may use (`available_parallelism`, which honours
/// affinity masks and cgroup quotas) unless the user set it. candle 0.11.1
/// asks for its thread count on every matrix product and, when
/// `RAYON_NUM_THREADS` is unset, re-reads and parses `/proc/cpuinfo` each
/// time (`num_cpus::get_physical`): perf on a tiny BridgeGAN run put that
/// at about a fifth of the process's CPU time. A set variable is one
/// environment lookup. Returns the count in force.
///
/// # Safety
/// Modifies the process environment: call it while the process has one
/// thread (the `augment` binary calls it first thing, as it does
/// `enable_second_order_gradients`).
pub unsafe fn fix_thread_count() -> usize {
    let set = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0);
    if let Some(n) = set {
        return n;
    }
    let n = std::thread::available_parallelism().map_or(1, usize::from);
    // SAFETY: the caller guarantees no other thread reads the environment.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    n
}

/// Tells mimalloc never to hand freed pages back to the OS (`purge_delay` =
/// −1), so that the next training step reuses them: a `paper_64` autoencoder
/// step frees and re-allocates gigabytes, and with the default delay the
/// kernel zeroed fresh pages for a third of the step (7.2 s with this
/// setting, 11–12 s without; `examples`-style measurement with perf). The
/// process keeps its peak memory, as PyTorch's caching allocator does.
/// Called by `main` and on the first convolution; idempotent.
pub fn configure_allocator() {
    // `mi_option_purge_delay` in mimalloc's `mi_option_e` (v2 and v3 alike,
    // include/mimalloc.h); libmimalloc-sys 0.1.49 names no constant for it.
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: setting an option is thread-safe in mimalloc and takes effect
    // for later frees.
    ONCE.call_once(|| unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) });
}
