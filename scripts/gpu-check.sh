#!/usr/bin/env bash
# The GPU check, one command on a machine with an NVIDIA GPU (budget: under 8 minutes):
#   1. `multimat doctor --device cuda`: GPU, driver, NVRTC and cuBLAS versions; every kernel
#      family compiled by NVRTC for this GPU; every GPU op run once against its CPU reference
#      (one line per op with its largest error and tolerance; non-zero exit on any failure);
#      each op runs twice and its device results must be bit-identical (determinism);
#   2. `benches/encoders_vs_torch.sh` with DEVICE=cuda: materials/s per encoder vs PyTorch eager
#      on the same GPU, same batches, and the ratio.
# Where there is no Rust toolchain (the lent GPU machines), run scripts/gpu-check-prepare.sh on a
# build machine first and bring .gpu-check/ along; with cargo at hand the binary is built here.
# CUDA 13 libraries are found in the Python environment's `nvidia` packages (PyPI nvidia-cublas,
# nvidia-cuda-nvrtc, …) when they are not on the loader's path already.
set -euo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
if [ -x .gpu-check/bin/multimat ]; then
    BIN=.gpu-check/bin/multimat
    export LD_LIBRARY_PATH="$(pwd)/.gpu-check/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
else
    cargo build --release --bin multimat
    BIN=target/release/multimat
fi
PY=${PY:-python3}
NV=$("$PY" -c 'import nvidia, os; print(os.path.dirname(list(nvidia.__path__)[0]))' 2>/dev/null || true)
if [ -n "$NV" ]; then
    for d in "$NV"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:$LD_LIBRARY_PATH"; done
    export LD_LIBRARY_PATH
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

echo "== 1. doctor --device cuda (versions, NVRTC compile, every op vs the CPU reference)"
"$BIN" doctor --device cuda

echo "== 2. encoders vs PyTorch on this GPU ($(($(date +%s) - START)) s so far)"
if ! "$BIN" bench encoders --help | grep -q -- '--device'; then
    # The encoders' ops all run on the device (step 1), but the pre-training step and
    # `bench encoders` are not wired to a device yet in this build: say so instead of timing
    # the CPU.
    echo "this build's bench encoders has no --device: the encoder-level GPU comparison is skipped"
    echo "gpu-check finished in $(($(date +%s) - START)) s"
    exit 0
fi
BIN=$BIN PY=$PY DEVICE=cuda TF32=${TF32:-1} REPEATS=${REPEATS:-5} BATCH=${BATCH:-360} DOS_BATCH=${DOS_BATCH:-360} \
    FULL_BATCH=${FULL_BATCH:-0} THREADS=${THREADS:-$(nproc)} \
    benches/encoders_vs_torch.sh ${WORKLOADS:-potnet cgcnn dos text}
echo "gpu-check finished in $(($(date +%s) - START)) s"
