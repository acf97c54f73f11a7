#!/bin/bash
# Distributed MultiMat pre-training, one MPI rank per GPU (or per CPU socket), preemptible.
#
#   sbatch slurm/pretrain.sh                       # uses configs/pretrain.toml
#   CONFIG=configs/demo.toml sbatch slurm/pretrain.sh
#
# How preemption works: Slurm sends SIGUSR1 to every task 120 s before the time limit (and
# `scancel --signal=USR1 JOBID` does the same by hand). multimat finishes the current step, all
# ranks agree on it, rank 0 writes one checkpoint atomically, and every rank exits with code 75.
# This script turns 75 into `scontrol requeue`; the requeued job starts again from the top with
# `--resume auto`, which continues exactly from the newest complete checkpoint.
#
#SBATCH --job-name=multimat-pretrain
#SBATCH --nodes=1                  # NOTE: change for your cluster
#SBATCH --ntasks-per-node=2        # NOTE: one rank per GPU on GPU nodes
#SBATCH --cpus-per-task=1          # NOTE: CPU threads per rank (data loading + CPU ops)
#SBATCH --time=00:30:00            # NOTE: your partition's limit
#SBATCH --signal=USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=multimat-pretrain-%j.out
##SBATCH --partition=gpu           # NOTE: your partition
##SBATCH --gres=gpu:2              # NOTE: GPUs per node, matching --ntasks-per-node
set -uo pipefail

if [ -z "${SLURM_JOB_ID:-}" ]; then
    echo "submit this script with sbatch (it relies on SLURM_JOB_ID and srun)" >&2
    exit 2
fi
cd "${SLURM_SUBMIT_DIR:-.}"
CONFIG=${CONFIG:-configs/pretrain.toml}
MULTIMAT=${MULTIMAT:-./target/release/multimat}
EXTRA_ARGS=${EXTRA_ARGS:-}
echo "[$(date -Is)] job $SLURM_JOB_ID restart ${SLURM_RESTART_COUNT:-0} on $SLURM_JOB_NODELIST: $CONFIG"

# --mpi=pmi2: MPICH needs a PMI from srun, else every task is a world of one.
# --kill-on-bad-exit: if one rank dies, stop the others instead of letting them hang in MPI.
srun --mpi=pmi2 --kill-on-bad-exit=1 "$MULTIMAT" pretrain --config "$CONFIG" --resume auto $EXTRA_ARGS
rc=$?
if [ "$rc" -eq 75 ]; then
    echo "[$(date -Is)] checkpointed after a signal; requeueing job $SLURM_JOB_ID"
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
fi
exit "$rc"
