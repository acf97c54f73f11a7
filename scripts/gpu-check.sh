#!/usr/bin/env bash
# The GPU check, one command on a machine with an NVIDIA GPU (budget: under 8 minutes):
#   1. `multimat doctor --device cuda`: GPU, driver, NVRTC and cuBLAS versions; every kernel
#      family compiled by NVRTC for this GPU; every GPU op run once against its CPU reference
#      (one line per op with its largest error and tolerance; non-zero exit on any failure);
#      each op runs twice and its device results must be bit-identical (determinism);
#   2. two pre-training steps (PotNet + DOS Transformer + text MLP, AllPairsCLIP, batch 48) on
#      cuda and on the CPU: losses agree within 1e-4 relative; the cuda run twice gives the same
#      checkpoint bytes (determinism);
#   3. `benches/encoders_vs_torch.sh` with DEVICE=cuda: materials/s per encoder vs PyTorch eager
#      on the same GPU, same batches, and the ratio; then the 3-D ResNeXt-50 (charge density,
#      32³ grid) at batch RESNEXT50_BATCH (16): one step (forward, backward through cuDNN's
#      deterministic algorithms and our pooling/batch-norm kernels, AdamW) vs PyTorch eager
#      (cuDNN, its default algorithm choice); and the four-modality AllPairsCLIP step (PotNet + DOS
#      Transformer + the bench's small 3-D ResNeXt + text MLP) at batch FULL_BATCH (360) vs PyTorch;
#   4. the screen: `multimat-screen --device cuda` and `--device cpu` on the same random files
#      (SCREEN_Q × SCREEN_N, D = 128, k = 10, 1 % exact duplicates) must write identical CSVs;
#      then `multimat-screen bench --device cuda` on SCREEN_BENCH_Q × SCREEN_BENCH_N in memory
#      (default 16000 × 2.2M, the issue's size) prints the time and the fraction of the device's
#      f32 cuBLAS GEMM rate on the same GEMM shape (printed, never asserted).
# Where there is no Rust toolchain (the lent GPU machines), run scripts/gpu-check-prepare.sh on a
# build machine first and bring .gpu-check/ along; with cargo at hand the binary is built here.
# CUDA 13 libraries are found in the Python environment's `nvidia` packages (PyPI nvidia-cublas,
# nvidia-cuda-nvrtc, …) when they are not on the loader's path already.
#
# GPU_CHECK_DEVICE=cuda-sim runs the same steps on the CPU executor of the kernels (the test suite
# does, on tiny sizes: STEP_BATCH, BATCH, REPEATS, WORKLOADS), so the script cannot rot.
set -euo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
DEV=${GPU_CHECK_DEVICE:-cuda}
STEP_BATCH=${STEP_BATCH:-48}
if [ -x .gpu-check/bin/multimat ]; then
    BIN=.gpu-check/bin/multimat
    SCREEN_BIN=.gpu-check/bin/multimat-screen
    export LD_LIBRARY_PATH="$(pwd)/.gpu-check/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
else
    BIN=${MULTIMAT_BIN:-target/release/multimat}
    [ -n "${MULTIMAT_BIN:-}" ] || cargo build --release --bin multimat
    SCREEN_BIN=${MULTIMAT_SCREEN_BIN:-target/release/multimat-screen}
    [ -n "${MULTIMAT_SCREEN_BIN:-}" ] || cargo build --release --bin multimat-screen
fi
PY=${PY:-python3}
NV=$("$PY" -c 'import nvidia, os; print(os.path.dirname(list(nvidia.__path__)[0]))' 2>/dev/null || true)
if [ -n "$NV" ]; then
    for d in "$NV"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:$LD_LIBRARY_PATH"; done
    export LD_LIBRARY_PATH
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

echo "== 1. doctor --device $DEV (versions, NVRTC compile, every op vs the CPU reference)"
"$BIN" doctor --device "$DEV"

echo "== 2. a pre-training step on $DEV vs cpu, and twice on $DEV ($(($(date +%s) - START)) s so far)"
# PotNet + DOS Transformer + text MLP, AllPairsCLIP, batch 48, on synthetic MP-like records.
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$BIN" synth --n $((2 * STEP_BATCH)) --all-modalities --no-density --out "$WORK/shards" > /dev/null
for run in cpu cuda cuda-again; do
    cat > "$WORK/$run.toml" <<EOF
[data]
shards = ["$WORK/shards"]
modalities = ["crystal", "dos", "text"]
holdout_fraction = 0.0
[model]
embed_dim = 128
[loss]
kind = "all_pairs_clip"
[optim]
batch_size = $STEP_BATCH
epochs = 1
[run]
out_dir = "$WORK/run-$run"
max_steps = 2
EOF
    dev=${run%-again}; [ "$dev" = cuda ] && dev=$DEV
    "$BIN" pretrain --quiet --device "$dev" --tf32 off --config "$WORK/$run.toml"
done
"$PY" - "$WORK" <<'EOF'
import json, sys, hashlib, pathlib
w = pathlib.Path(sys.argv[1])
loss = {r: [json.loads(l)["loss"] for l in open(w / f"run-{r}" / "metrics.jsonl")] for r in ("cpu", "cuda", "cuda-again")}
for step, (a, b) in enumerate(zip(loss["cpu"], loss["cuda"]), 1):
    print(f"step {step}: loss cpu {a:.7f}  cuda {b:.7f}  relative difference {abs(a - b) / abs(a):.2e} (tolerance 1e-4)")
h = {r: hashlib.sha256((w / f"run-{r}" / "checkpoints" / "step-00000002.safetensors").read_bytes()).hexdigest()[:16] for r in ("cuda", "cuda-again")}
print(f"cuda run twice: checkpoint sha256 {h['cuda']} / {h['cuda-again']} -> {'identical' if h['cuda'] == h['cuda-again'] else 'DIFFERENT'}")
ok = all(abs(a - b) <= 1e-4 * abs(a) for a, b in zip(loss["cpu"], loss["cuda"])) and h["cuda"] == h["cuda-again"]
sys.exit(0 if ok else 1)
EOF

echo "== 3. encoders vs PyTorch on $DEV ($(($(date +%s) - START)) s so far)"
BIN=$BIN PY=$PY DEVICE=$DEV TF32=${TF32:-1} REPEATS=${REPEATS:-5} BATCH=${BATCH:-360} DOS_BATCH=${DOS_BATCH:-360} \
    FULL_BATCH=0 THREADS=${THREADS:-$(nproc)} \
    benches/encoders_vs_torch.sh ${WORKLOADS:-potnet cgcnn dos text}
echo "== 3a. the four-modality step (PotNet + DOS + ResNeXt + text, AllPairsCLIP) at batch ${FULL_BATCH:-360} on $DEV vs PyTorch ($(($(date +%s) - START)) s so far)"
BIN=$BIN PY=$PY DEVICE=$DEV TF32=${TF32:-1} REPEATS=${REPEATS:-5} FULL_BATCH=${FULL_BATCH:-360} GRID=${GRID:-32} \
    THREADS=${THREADS:-$(nproc)} benches/encoders_vs_torch.sh full
echo "== 3b. ResNeXt-50 at batch ${RESNEXT50_BATCH:-16} on $DEV vs PyTorch ($(($(date +%s) - START)) s so far)"
BIN=$BIN PY=$PY DEVICE=$DEV TF32=${TF32:-1} REPEATS=${REPEATS:-5} RESNEXT50_BATCH=${RESNEXT50_BATCH:-16} GRID=${GRID:-32} \
    THREADS=${THREADS:-$(nproc)} benches/encoders_vs_torch.sh resnext50

echo "== 4. the screen on $DEV vs cpu ($(($(date +%s) - START)) s so far)"
SCREEN_Q=${SCREEN_Q:-16000}
SCREEN_N=${SCREEN_N:-200000}
"$SCREEN_BIN" gen-random --out "$WORK/screen-q.h5" -n "$SCREEN_Q" --seed 1 --modality dos
"$SCREEN_BIN" gen-random --out "$WORK/screen-c.h5" -n "$SCREEN_N" --seed 2
for sdev in cpu "$DEV"; do
    t0=$(date +%s%N)
    "$SCREEN_BIN" --queries "$WORK/screen-q.h5" --candidates "$WORK/screen-c.h5" -k 10 -q \
        --device "$sdev" --out "$WORK/hits-$sdev.csv"
    echo "screen on $sdev: $(( ($(date +%s%N) - t0) / 1000000 )) ms wall (whole process: reading, screening, writing)"
done
if cmp -s "$WORK/hits-cpu.csv" "$WORK/hits-$DEV.csv"; then
    echo "screen CSV, $SCREEN_Q queries x $SCREEN_N candidates, k = 10: $DEV and cpu -> identical ($(($(wc -l < "$WORK/hits-cpu.csv") - 1)) hit rows)"
else
    echo "screen CSV: $DEV and cpu -> DIFFERENT (first differing line below)"
    cmp "$WORK/hits-cpu.csv" "$WORK/hits-$DEV.csv" || true
    exit 1
fi
"$SCREEN_BIN" bench --device "$DEV" --n-queries "${SCREEN_BENCH_Q:-16000}" --n-candidates "${SCREEN_BENCH_N:-2200000}" \
    --dim 128 -k 10 --block-candidates "${SCREEN_BLOCK:-16384}" --repeat "${SCREEN_REPEAT:-2}"
echo "gpu-check finished in $(($(date +%s) - START)) s"
