#!/usr/bin/env bash
# The CUDA path, checked in one command on a lent GPU machine (CUDA and
# PyTorch's Python there, no Rust, no network), from the bundle that
# scripts/cuda-bundle.sh builds on a CPU machine. It
#
#   1. prints the GPU and the bundle's build line;
#   2. runs the quickstart on the GPU at CI's reduced sizes, end to end;
#   3. checks CPU/GPU agreement: the same tiny attr2face run (autoencoder,
#      classifier and mapping phases) and StarGAN run (WGAN-GP critic steps:
#      the gradient penalty's second-order gradients) from the same seed on
#      the CPU and on the GPU; every logged loss and every saved weight
#      compared (scripts/compare_runs.py);
#   4. times training steps of attr2face `paper_64` (autoencoder phase) and
#      StarGAN `paper_128` on the GPU at batch 16: images/s from the
#      difference of the training times of two runs of 10 and 60 steps
#      (start-up cancels), and the peak GPU memory that nvidia-smi saw
#      during the longer run.
#
# Figures go to $OUT (summary.txt, agreement.json, timing.json, the quickstart
# `show`), else to a temporary folder that it names. As a CPU dry run on 2
# cores (below) it took 151 s: quickstart 22 s, agreement 6 s, the timings
# (batch 4, 2 and 6 steps) the rest. On a GPU expect 2-4 min: the same
# quickstart and agreement, and 140 steps at batch 16 that a GPU runs far
# faster than 2 CPU cores run 16 at batch 4; well inside one 10-min command.
#
# Usage (on the GPU machine, from the repository root, the bundle carried):
#   scripts/cuda-device-check.sh [BUNDLE]     # default target/cuda-bundle/augment-cuda.tar.xz
# A dry run on a CPU machine: AUGMENT_CHECK_DEVICE=cpu AUGMENT_CUDA_LIBS=<folder
# with libcublas.so.13 ...> scripts/cuda-device-check.sh (the "GPU" is the CPU).
#   scripts/cuda-device-check.sh --reduced-quickstart-flags   # CI's reduced sizes, one per line
set -euo pipefail
cd "$(dirname "$0")/.."

# The quickstart at the reduced sizes .ci/run uses (17 s on 2 CPU cores).
reduced=(
  --set stages.ingest.n=400
  --set stages.generator.autoencoder.steps=20
  --set stages.generator.classifier.steps=20
  --set stages.generator.mapping.steps=20
  --set stages.judge.epochs=1
  --set stages.classifier_real.steps=5
  --set stages.classifier_real_resnet.epochs=1
  --set stages.classifier_dynamic.steps=5
  --set stages.classifier_doubling.steps=5
  --set stages.classifier_flip.steps=5
  --set stages.classifier_erase.steps=5
  --set "stages.dynamic.sizes=[1.5]"
  --set stages.sggan.translation.steps=20
  --set stages.sggan.translation.labelled_per_value=50
  --set stages.stargan.translation.steps=20
)
if [ "${1:-}" = "--reduced-quickstart-flags" ]; then
  printf '%s\n' "${reduced[@]}"
  exit 0
fi

bundle=${1:-target/cuda-bundle/augment-cuda.tar.xz}
dev=${AUGMENT_CHECK_DEVICE:-cuda:0}
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$SECONDS
log() { echo "$*" | tee -a "$out/summary.txt"; }

# Python's tarfile, not tar: the GPU image may lack xz.
python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$bundle" "$work"
chmod +x "$work/augment"
aug=$work/augment
# cuBLAS, cuRAND, NVRTC, the CUDA runtime: from Python's nvidia packages
# (PyTorch's), unless AUGMENT_CUDA_LIBS names a folder; the driver's
# libcuda.so.1 from the system; fontconfig and a font from the bundle.
libs=${AUGMENT_CUDA_LIBS:-$(python3 -c "import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], 'cu13', 'lib'))")}
# shellcheck source=scripts/cuda-env.sh
source scripts/cuda-env.sh "$work" "$libs"
if [ "$dev" = "cpu" ]; then
  # No driver here: the bundle's stub lets the binary start.
  export LD_LIBRARY_PATH="$work/stub:$LD_LIBRARY_PATH"
fi
log "== $(head -1 "$work/BUNDLE.txt")"
log "== device $dev; libraries from $libs"
if command -v nvidia-smi >/dev/null; then
  log "== GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)"
fi

# Runs "$@" while sampling the GPU's used memory every 0.1 s; the peak (MiB)
# goes to $work/peak_mib (0 without nvidia-smi).
with_peak_memory() {
  local samples=$work/mem_samples
  : >"$samples"
  (while command -v nvidia-smi >/dev/null; do
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits >>"$samples" 2>/dev/null || true
    sleep 0.1
  done) &
  local sampler=$!
  local rc=0
  "$@" || rc=$?
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  (sort -n "$samples" | tail -1; echo 0) | head -1 >"$work/peak_mib"
  return $rc
}

# --- 2. the quickstart on the device, end to end ---
t=$SECONDS
"$aug" run pipelines/quickstart.toml --quiet --set run.device="$dev" --set run.dir="$work/quickstart" "${reduced[@]}"
"$aug" show "$work/quickstart" >"$out/quickstart_show.txt"
log "== quickstart (reduced sizes) on $dev: $((SECONDS - t)) s, $(grep -c ': fresh' "$out/quickstart_show.txt") stages fresh"
"$aug" sql "$work/quickstart" "SELECT stage, metric, round(value, 4) AS value FROM metrics WHERE attribute IS NULL AND metric IN ('accuracy', 'balanced_accuracy') ORDER BY stage, metric" --format csv >"$out/quickstart_metrics.csv"

# --- 3. CPU/device agreement from the same seed ---
cat >"$work/agree.toml" <<'EOF'
[run]
name = "agree"
seed = 0

[stages.ingest]
kind = "ingest"
source = "demo"
n = 200
image_size = 32

[stages.attr2face]
kind = "train_generator"
inputs = ["ingest"]
preset = "tiny"
batch_size = 8
log_every = 1
sample_every = 0
checkpoint_every = 1000
autoencoder.steps = 10
classifier.steps = 5
mapping.steps = 5

[stages.stargan]
kind = "train_generator"
inputs = ["ingest"]
model = "stargan"
preset = "tiny"
batch_size = 8
log_every = 1
sample_every = 0
checkpoint_every = 1000
translation.steps = 10
translation.attributes = ["Male", "Smiling", "Young"]
EOF
t=$SECONDS
"$aug" run "$work/agree.toml" --quiet --set run.device=cpu --set run.dir="$work/agree_cpu"
"$aug" run "$work/agree.toml" --quiet --set run.device="$dev" --set run.dir="$work/agree_dev"
agree_rc=0
python3 scripts/compare_runs.py "$aug" "$work/agree_cpu" "$work/agree_dev" attr2face stargan \
  --json "$out/agreement.json" | tee -a "$out/summary.txt" || agree_rc=$?
log "== agreement runs and comparison: $((SECONDS - t)) s"

# --- 4. training-step timings on the device ---
# timing NAME IMAGE_SIZE STEP_KEY TIME_KEY "STAGE KEYS": two runs of $short
# and $long steps at batch $batch; the difference of the phase's training
# time (TIME_KEY in the stage's summary) is (long - short) steps: start-up
# (kernel loading, the first steps' allocations) cancels.
# On the CPU (a dry run) fewer, smaller steps: StarGAN paper_128 at batch 16
# needs more than 24 GB of host memory.
if [ "$dev" = "cpu" ]; then batch=4 short=2 long=6; else batch=16 short=10 long=60; fi
timing() {
  local name=$1 size=$2 step_key=$3 time_key=$4 keys=$5
  local walls=()
  for steps in $short $long; do
    local dir=$work/time_${name}_$steps
    printf '%s\n' "[run]" 'name = "timing"' "seed = 0" "[stages.ingest]" 'kind = "ingest"' \
      'source = "demo"' "n = 256" "image_size = $size" "[stages.gen]" 'kind = "train_generator"' \
      'inputs = ["ingest"]' "batch_size = $batch" "log_every = 1000" "sample_every = 0" \
      "checkpoint_every = 100000" "$keys" "$step_key = $steps" >"$work/$name.toml"
    with_peak_memory "$aug" run "$work/$name.toml" --quiet --set run.device="$dev" --set run.dir="$dir"
    walls+=("$(python3 -c "import json, sys; v = json.load(open(sys.argv[1]))['stages']['gen']['summary']
for k in sys.argv[2].split('.'): v = v[k]
print(v)" "$dir/manifest.json" "$time_key")")
  done
  python3 scripts/compare_runs.py --timing "$name" "$batch" "$short" "$long" "${walls[0]}" "${walls[1]}" \
    "$(cat "$work/peak_mib")" "$work/$name.timing.json" | tee -a "$out/summary.txt"
}
log "== training steps on $dev"
timing attr2face_paper_64 64 autoencoder.steps autoencoder.wall_time_s 'preset = "paper_64"
classifier.steps = 1
mapping.steps = 1'
timing stargan_paper_128 128 translation.steps wall_time_s 'model = "stargan"
preset = "paper_128"
translation.attributes = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"]'
python3 -c "import json, sys; json.dump([json.load(open(f)) for f in sys.argv[2:]], open(sys.argv[1], 'w'), indent=1)" \
  "$out/timing.json" "$work"/*.timing.json
log "== done in $((SECONDS - start)) s; figures in $out"
exit $agree_rc
