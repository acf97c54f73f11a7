#!/usr/bin/env bash
# multimat's encoders vs the same encoders in PyTorch, same batches, same machine, same run:
# one pre-training step (forward + backward + AdamW) per encoder, and the full four-modality
# model (PotNet + DOS Transformer + small 3-D ResNeXt + text MLP, AllPairsCLIP).
#
#   benches/encoders_vs_torch.sh [workload ...]     (default: potnet cgcnn dos text resnext_small full)
#
# Environment: THREADS (default: nproc; rayon, matrixmultiply and torch all get it), BATCH (360),
# DOS_BATCH and FULL_BATCH (default BATCH; the DOS Transformer at T = 601 dominates the time),
# RESNEXT50_BATCH (16, workload resnext50), GRID (charge-density grid edge; 32), REPEATS (timed steps after one warm-up; 3),
# PROFILE (release | dev; release), BIN (an already built multimat binary: skips the build),
# RESULTS (keep every JSON here; default: a temporary directory), TORCH_FROM (a RESULTS directory
# of an earlier run: reuse its PyTorch numbers, e.g. to time a new multimat build against them),
# SUMMARY_ONLY=1 (with RESULTS: print the table of the JSONs already there, run nothing), VENV (a virtualenv with torch and numpy; default
# .cache/bench-venv, built from PyPI on first use), PY (a Python that already has torch + numpy:
# skips the virtualenv, e.g. PY=python3 on a GPU node), DEVICE (cpu | cuda | cuda-sim: both sides run there, PyTorch on the CPU for cuda-sim;
# default cpu), TF32=1 (TF32 tensor-core GEMMs on both sides, GPU only), SKIP_TORCH=1 (no PyTorch:
# measure and tabulate multimat's side only, with PY or python3; the test suite's smoke run uses
# it, because PyPI's torch wheel pulls ≈ 4 GB of CUDA libraries), SGEMM (the sgemm size measured
# with the first workload; 2048).
#
# For every workload our binary writes its exact batch (`multimat bench encoders --dump-dir`) and
# benches/encoders_torch.py loads it, so graph sizes, edge lists, sequence lengths and grids are
# identical. Each side runs in its own process per workload, so each peak RSS is that workload's.
# PotNet and the full model are also timed with a factorised PyTorch PotNet (the formulation
# multimat uses) beside the reference formulation (per-edge concatenation).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.cache/bench-venv}
PROFILE=${PROFILE:-release}
THREADS=${THREADS:-$(nproc)}
BATCH=${BATCH:-360}
DOS_BATCH=${DOS_BATCH:-$BATCH}
FULL_BATCH=${FULL_BATCH:-$BATCH}
RESNEXT50_BATCH=${RESNEXT50_BATCH:-16}
GRID=${GRID:-32}
REPEATS=${REPEATS:-3}
WORKLOADS=("$@")
[ ${#WORKLOADS[@]} -eq 0 ] && WORKLOADS=(potnet cgcnn dos text resnext_small full)

DEVICE=${DEVICE:-cpu}
# Our binary is only told about a device when it is not the CPU (its default). cuda-sim (the CUDA
# kernels run on the CPU, for the smoke test) has no PyTorch counterpart: PyTorch runs on the CPU.
DEVICE_ARGS=()
TORCH_DEVICE_ARGS=(--device "$([ "$DEVICE" = cuda-sim ] && echo cpu || echo "$DEVICE")")
if [ "$DEVICE" != cpu ]; then
    DEVICE_ARGS=(--device "$DEVICE")
    if [ "${TF32:-0}" = 1 ]; then DEVICE_ARGS+=(--tf32 on); else DEVICE_ARGS+=(--tf32 off); fi
fi
if [ "${TF32:-0}" = 1 ]; then TORCH_DEVICE_ARGS+=(--tf32); fi
if [ -n "${SKIP_TORCH:-}" ]; then
    PY=${PY:-python3}
elif [ -z "${PY:-}" ]; then
    if ! "$VENV/bin/python" -c "import torch, numpy" 2>/dev/null; then
        echo "building $VENV (torch + numpy from PyPI) ..." >&2
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet torch numpy
    fi
    PY="$VENV/bin/python"
fi

if [ -n "${SUMMARY_ONLY:-}" ]; then
    BIN=true
elif [ -n "${BIN:-}" ]; then
    echo "using $BIN as built" >&2
elif [ "$PROFILE" = release ]; then
    cargo build --release --bin multimat
    BIN=target/release/multimat
else
    cargo build --bin multimat
    BIN=target/debug/multimat
fi

if [ -n "${RESULTS:-}" ]; then
    WORK=$RESULTS
    mkdir -p "$WORK"
    trap 'rm -rf "$WORK/batch"' EXIT
else
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
fi
export RAYON_NUM_THREADS=$THREADS MATMUL_NUM_THREADS=$THREADS

if [ -z "${SUMMARY_ONLY:-}" ]; then
echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "device $DEVICE (TF32 ${TF32:-0}); threads $THREADS; batch $BATCH (dos $DOS_BATCH, full $FULL_BATCH, resnext50 $RESNEXT50_BATCH); median of $REPEATS steps after 1 warm-up; profile $PROFILE"
if [ -n "${SKIP_TORCH:-}" ]; then
    echo "PyTorch peer skipped (SKIP_TORCH=1): multimat's side only"
elif [ -n "${TORCH_FROM:-}" ]; then
    echo "PyTorch numbers reused from $TORCH_FROM"
    [ "$(cd "$TORCH_FROM" && pwd)" = "$(cd "$WORK" && pwd)" ] || cp "$TORCH_FROM"/torch*_*.json "$WORK"/
else
    echo "PyTorch $("$PY" -c 'import torch; print(torch.__version__)')"
    "$PY" benches/encoders_torch.py --sgemm --threads "$THREADS" "${TORCH_DEVICE_ARGS[@]}" > "$WORK/torch_sgemm.json"
fi
SGEMM_ARG=(--sgemm "${SGEMM:-2048}")
for w in "${WORKLOADS[@]}"; do
    echo "== $w" >&2
    "$BIN" bench encoders --only "$w" --batch "$BATCH" --dos-batch "$DOS_BATCH" --full-batch "$FULL_BATCH" \
        --resnext-full-batch "$RESNEXT50_BATCH" --grid "$GRID" --repeats "$REPEATS" "${SGEMM_ARG[@]}" "${DEVICE_ARGS[@]}" \
        --dump-dir "$WORK/batch" --json-out "$WORK/ours_$w.json" >&2
    SGEMM_ARG=()
    if [ -z "${TORCH_FROM:-}" ] && [ -z "${SKIP_TORCH:-}" ]; then
        "$PY" benches/encoders_torch.py "$WORK/batch" "$w" --repeats "$REPEATS" --threads "$THREADS" "${TORCH_DEVICE_ARGS[@]}" > "$WORK/torch_$w.json"
        if [ "$w" = potnet ] || [ "$w" = full ]; then
            "$PY" benches/encoders_torch.py "$WORK/batch" "$w" --repeats "$REPEATS" --threads "$THREADS" "${TORCH_DEVICE_ARGS[@]}" --potnet-factorised > "$WORK/torchf_$w.json"
        fi
    fi
    rm -rf "$WORK/batch"
done
fi

"$PY" - "$WORK" "${WORKLOADS[@]}" <<'PY'
import json, os, sys
work, workloads = sys.argv[1], sys.argv[2:]
if not os.path.exists(f"{work}/torch_sgemm.json"):
    # multimat only: the same fields the comparison reads, so a changed JSON fails here too.
    sg = json.load(open(f"{work}/ours_{workloads[0]}.json")).get("sgemm") or {}
    print(f"\nsgemm, multimat/matrixmultiply: {sg.get('gflops_wall', float('nan')):.1f} GFLOP/s wall")
    print(f"{'workload':<16} {'B':>4} {'mat/s':>8} {'mat/CPU·s':>10} {'fwd s':>8} {'bwd s':>8} {'adamw s':>8} {'RSS MiB':>8}")
    for w in workloads:
        o = json.load(open(f"{work}/ours_{w}.json"))["results"][0]
        print(f"{w:<16} {o['batch']:>4} {o['materials_per_s']:>8.1f} {o.get('materials_per_cpu_s') or float('nan'):>10.1f} "
              f"{o['forward_s']:>8.3f} {o['backward_s']:>8.3f} {o['optimizer_s']:>8.3f} {o.get('peak_rss_mib') or float('nan'):>8.0f}")
    print("(PyTorch peer skipped: no ratios)")
    sys.exit(0)
tsg = json.load(open(f"{work}/torch_sgemm.json"))
ours_sgemm = json.load(open(f"{work}/ours_{workloads[0]}.json")).get("sgemm") or {}
peak = tsg["gflops_wall"]
print(f"\nsgemm 2048³, {tsg['threads']} threads: torch {tsg['gflops_wall']:.1f} GFLOP/s wall ({tsg['gflops_cpu_per_thread_x_threads']:.1f} by CPU time); "
      f"multimat/matrixmultiply {ours_sgemm.get('gflops_wall', float('nan')):.1f} wall ({ours_sgemm.get('gflops_cpu_per_thread_x_threads') or float('nan'):.1f} by CPU time)")
print("%pk = model FLOPs of the step (torch FlopCounterMode on that row's PyTorch formulation; multimat does the factorised PotNet FLOPs) / wall step time / torch's sgemm wall GFLOP/s;")
print("%pkCPU = the same per CPU-second × threads, over torch's sgemm GFLOP per CPU-second × threads\n")
hdr = (f"{'workload':<26} {'B':>4} {'ours mat/s':>10} {'torch mat/s':>11} {'ratio':>6} | {'ours mat/CPU·s':>14} {'torch':>9} {'ratio':>6} | "
       f"{'RSS ours':>8} {'RSS torch':>9} | {'GFLOP/step':>10} {'%pk ours':>8} {'%pk torch':>9} | {'%pkCPU ours':>11} {'torch':>6}")
print(hdr)
print("-" * len(hdr))
fmt = lambda v, spec: "-" if v is None else format(v, spec)
peak_cpu = tsg["gflops_cpu_per_thread_x_threads"]
# GFLOP per (CPU-second ÷ threads), as a share of sgemm's: the efficiency that survives other load.
pct_cpu = lambda gf, r: 100 * gf / (r["cpu_step_s"] / r["threads"]) / peak_cpu if r.get("cpu_step_s") else None
for w in workloads:
    ours = json.load(open(f"{work}/ours_{w}.json"))["results"][0]
    peers = [json.load(open(f"{work}/torch_{w}.json"))]
    if os.path.exists(f"{work}/torchf_{w}.json"):
        peers.append(json.load(open(f"{work}/torchf_{w}.json")))
    for t in peers:
        label = w if t is peers[0] else w + " (torch factorised)"
        gf = t["model_flops"] / 1e9
        cpu_ratio = ours["materials_per_cpu_s"] / t["materials_per_cpu_s"] if ours.get("materials_per_cpu_s") and t.get("materials_per_cpu_s") else None
        print(f"{label:<26} {ours['batch']:>4} {ours['materials_per_s']:>10.1f} {t['materials_per_s']:>11.1f} {ours['materials_per_s'] / t['materials_per_s']:>5.2f}x | "
              f"{fmt(ours.get('materials_per_cpu_s'), '14.1f')} {fmt(t.get('materials_per_cpu_s'), '9.1f')} {fmt(cpu_ratio, '5.2f')}x | "
              f"{fmt(ours.get('peak_rss_mib'), '5.0f')} MiB {t['peak_rss_mib']:>5.0f} MiB | {gf:>10.1f} "
              f"{100 * gf / ours['step_s'] / peak:>7.1f}% {100 * gf / t['step_s'] / peak:>8.1f}% | "
              f"{fmt(pct_cpu(gf, ours), '10.1f')}% {fmt(pct_cpu(gf, t), '5.1f')}%")
print("\nratio = multimat ÷ PyTorch (> 1: multimat faster). mat/CPU·s = batch ÷ (CPU seconds per step ÷ threads).")
print("step phases (s, ours / torch):")
for w in workloads:
    o = json.load(open(f"{work}/ours_{w}.json"))["results"][0]
    t = json.load(open(f"{work}/torch_{w}.json"))
    print(f"  {w:<14} fwd {o['forward_s']:.3f}/{t['forward_s']:.3f}  bwd {o['backward_s']:.3f}/{t['backward_s']:.3f}  "
          f"adamw {o['optimizer_s']:.3f}/{t['optimizer_s']:.3f}  CPU-s/step {fmt(o.get('cpu_step_s'), '.2f')}/{fmt(t.get('cpu_step_s'), '.2f')}")
PY
