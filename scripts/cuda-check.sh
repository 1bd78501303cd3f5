#!/usr/bin/env bash
# The CUDA path end to end, on a machine with an NVIDIA GPU and its driver:
# builds with `--features cuda`, runs the quickstart on `cuda:0` at the
# reduced sizes CI uses, then the training benchmarks on the GPU, and prints
# the figures. On the CPU our own conv kernels run (src/ops); on CUDA every
# layer uses candle's CUDA kernels, so this is the check that they still do.
#
# Usage: scripts/cuda-check.sh [RUN_DIR]
# Needs nvcc (CUDA 13.4; `pip install nvidia-cuda-nvcc==13.4.92 ...` as in
# .ci/run, with CUDA_HOME pointing at it) and CUDA_COMPUTE_CAP for the GPU
# (90 for H100/H200). Not yet run on a GPU: none has been lent to this
# project so far. Expect the build to dominate (nvcc compiling candle's
# kernels takes ~10 min of CI's `cargo check --features cuda`). For a GPU
# machine without Rust, build scripts/cuda-bundle.sh's bundle elsewhere and
# run scripts/cuda-device-check.sh there instead (docs/cuda.md).
set -euo pipefail
cd "$(dirname "$0")/.."
run_dir=${1:-$(mktemp -d)/cuda-quickstart}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || {
  echo "cuda-check: nvidia-smi failed: no GPU or no driver here" >&2
  exit 1
}

t=$SECONDS
cargo build --features cuda --quiet
echo "== build --features cuda: $((SECONDS - t)) s"

t=$SECONDS
mapfile -t reduced < <(scripts/cuda-device-check.sh --reduced-quickstart-flags)
target/debug/augment run pipelines/quickstart.toml --quiet \
  --set run.device=cuda:0 \
  --set run.dir="$run_dir" "${reduced[@]}"
echo "== quickstart on cuda:0 (reduced sizes): $((SECONDS - t)) s"
target/debug/augment show "$run_dir"

echo "== training benchmarks on cuda:0"
AUGMENT_BENCH_DEVICE=cuda:0 cargo bench --profile dev --features cuda --bench train
AUGMENT_BENCH_DEVICE=cuda:0 cargo bench --profile dev --features cuda --bench translation
