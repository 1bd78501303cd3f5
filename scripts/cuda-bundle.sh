#!/usr/bin/env bash
# Builds a carryable CUDA build of `augment` on a machine WITHOUT a GPU or a
# CUDA driver, for scripts/cuda-device-check.sh to run on a lent GPU machine
# (which has CUDA's libraries in its PyTorch environment but no Rust and no
# network). docs/cuda.md explains the choices; in short:
#
# - CUDA 13.0 from PyPI (nvcc, headers, cuBLAS, cuRAND, NVRTC): candle's
#   kernels are compiled to PTX, which the GPU's driver compiles on load; a
#   driver only loads PTX of its own CUDA version or older, and the lent
#   machines run driver 580 (CUDA 13.0). cudarc takes its bindings from the
#   same nvcc, so the binary asks the driver for no newer entry point.
# - candle links cudarc with `dynamic-linking`: the linker needs libcuda.so,
#   which only a driver installs. We link against a stub with the driver's
#   soname (libcuda.so.1) that defines every entry point cudarc declares and
#   returns CUDA_ERROR_UNKNOWN from each; at run time the real driver's
#   libcuda.so.1 is found instead. The stub travels in the bundle only so
#   that the binary can start on a machine without a driver (the CPU check).
#
# Output: target/cuda-bundle/augment-cuda.tar.xz (the stripped binary, the
# stub, fontconfig/FreeType and a font for charts, BUNDLE.txt with versions
# and sha256), then a CPU check: the bundled binary runs the reduced
# quickstart on the CPU here, in the environment the device script sets.
#
# Usage: scripts/cuda-bundle.sh [--no-check]
# Takes ~30 min from cold on 2 cores (most of it nvcc on candle's kernels and
# the dependency tree in its own target folder), a few seconds when warm.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
out=$PWD/target/cuda-bundle
py=$out/py
mkdir -p "$out"

# --- CUDA 13.0 from PyPI, into a folder of its own ---
wheels=(
  nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-runtime==13.0.96
  nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88
  nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35
)
if [ ! -f "$py/.installed" ] || [ "$(cat "$py/.installed")" != "${wheels[*]}" ]; then
  rm -rf "$py"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps --target "$py" "${wheels[@]}"
  echo "${wheels[*]}" >"$py/.installed"
fi
CU=$py/nvidia/cu13
echo "== CUDA from PyPI in $CU ($(PATH=$CU/bin:$PATH nvcc --version | tail -1)) after $((SECONDS - start)) s"

# --- link-time libraries: unversioned names, and the driver stub ---
for lib in cublas cublasLt curand nvrtc cudart; do
  so=$(cd "$CU/lib" && ls "lib$lib.so."* | sort | head -1)
  ln -sf "$so" "$CU/lib/lib$lib.so"
done
cudarc=$(cargo metadata --format-version 1 --features cuda 2>/dev/null |
  python3 -c "import json,sys; print(next(p['manifest_path'] for p in json.load(sys.stdin)['packages'] if p['name'] == 'cudarc').rsplit('/', 1)[0])")
stub=$CU/lib/stubs
mkdir -p "$stub"
grep -ohE "pub (unsafe )?fn cu[A-Za-z0-9_]+" "$cudarc/src/driver/sys/mod.rs" |
  awk '{print $NF}' | sort -u |
  awk '{printf "int %s(void) { return 999; }\n", $1}' >"$stub/libcuda_stub.c"
cc -shared -fPIC -O1 -Wl,-soname,libcuda.so.1 -o "$stub/libcuda.so.1" "$stub/libcuda_stub.c"
ln -sf libcuda.so.1 "$stub/libcuda.so"
echo "== driver stub: $(grep -c . "$stub/libcuda_stub.c") entry points from $cudarc"

# --- the build (dev profile: our crate and the numeric crates at opt-level 3) ---
t=$SECONDS
PATH="$CU/bin:$PATH" CUDA_HOME="$CU" CUDA_COMPUTE_CAP=90 CUDAFORGE_THREADS="$(nproc)" \
  CARGO_TARGET_DIR="$out/target" cargo build --quiet --features cuda --bin augment
echo "== cargo build --features cuda: $((SECONDS - t)) s"

# --- the bundle ---
stage=$out/stage
rm -rf "$stage" && mkdir -p "$stage/stub"
cp "$out/target/debug/augment" "$stage/augment"
strip "$stage/augment"
cp "$stub/libcuda.so.1" "$stage/stub/"
# Charts need fontconfig, FreeType and a font; a slim GPU image may have
# none of them: this machine's copies travel (glibc 2.36 here, the GPU
# image's is newer) with DejaVu Sans, which the device script's fonts.conf
# names as every generic family.
mkdir -p "$stage/lib" "$stage/fonts"
for so in libfontconfig.so.1 libfreetype.so.6 libexpat.so.1 libpng16.so.16 libbrotlidec.so.1 libbrotlicommon.so.1; do
  cp -L "$(ldconfig -p | awk -v n="$so" '$1 == n {print $NF; exit}')" "$stage/lib/"
done
cp -L /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf "$stage/fonts/"
{
  echo "augment $(git describe --always --dirty) built $(date -u +%FT%TZ) with --features cuda (dev profile)"
  echo "CUDA from PyPI: ${wheels[*]}; CUDA_COMPUTE_CAP=90 (PTX, loaded by the driver)"
  echo "needs at run time: libcuda.so.1 (the driver), libcublas.so.13, libcublasLt.so.13, libcurand.so.10, libnvrtc.so.13, libcudart.so.13 (candle's MoE kernels link the runtime)"
  echo "lib/: fontconfig, FreeType and their libraries from the build machine; fonts/: DejaVu Sans (for charts)"
  (cd "$stage" && sha256sum augment stub/* lib/* fonts/*)
} >"$stage/BUNDLE.txt"
tar -C "$stage" -cJf "$out/augment-cuda.tar.xz" augment stub lib fonts BUNDLE.txt
size=$(stat -c %s "$out/augment-cuda.tar.xz")
echo "== bundle: $out/augment-cuda.tar.xz, $((size / 1048576)) MiB ($(stat -c %s "$stage/augment") bytes unpacked binary), after $((SECONDS - start)) s"
[ "$size" -lt $((48 << 20)) ] || { echo "== the bundle is over 48 MiB: it would not travel with the tree" >&2; exit 1; }

[ "${1:-}" = "--no-check" ] && exit 0

# --- CPU check: the bundled binary, unpacked, runs the reduced quickstart ---
check=$(mktemp -d)
trap 'rm -rf "$check"' EXIT
tar -C "$check" -xJf "$out/augment-cuda.tar.xz"
# The environment the device script sets, with the driver stub first.
# shellcheck source=scripts/cuda-env.sh
source scripts/cuda-env.sh "$check" "$CU/lib"
export LD_LIBRARY_PATH="$check/stub:$LD_LIBRARY_PATH"
mapfile -t reduced < <(scripts/cuda-device-check.sh --reduced-quickstart-flags)
t=$SECONDS
"$check/augment" run pipelines/quickstart.toml --quiet --set run.dir="$check/quickstart" "${reduced[@]}"
"$check/augment" show "$check/quickstart" | head -20
ls "$check/quickstart"/*/label_counts.png >/dev/null
echo "== the bundled binary ran the reduced quickstart on the CPU in $((SECONDS - t)) s"
