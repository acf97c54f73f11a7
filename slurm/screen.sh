#!/bin/bash
# Exact top-k similarity screen over MPI ranks: candidates are split into contiguous row ranges,
# one per rank; rank 0 merges the ranks' top-k lists and alone writes the CSV. The CSV is
# byte-identical to a single-process `multimat-screen` run, whatever the number of tasks.
#
#   QUERIES=dos_test.h5 CANDIDATES=crystals.h5 sbatch slurm/screen.sh
#   QUERIES=q.h5 CANDIDATES=c.h5 K=25 OUT=results/hits.csv sbatch --ntasks=8 slurm/screen.sh
#   # two-modality screen (score = w1·cos1 + w2·cos2 over candidates present in both files):
#   QUERIES=dos.h5 CANDIDATES=dos_c.h5 EXTRA_ARGS="--queries2 chg.h5 --candidates2 chg_c.h5 --weights 0.5,0.5" \
#       sbatch slurm/screen.sh
#
# Output: $OUT, by default hits-<jobid>.csv beside the candidate file (written atomically, so an
# existing file is either the old or the complete new result, never half of one).
# A screen is short and restartable from scratch, so it is not requeued: a failure on any rank
# (bad file, NaN row) makes every rank exit non-zero with the error printed by rank 0, and the
# job fails with that code.
#
# Each rank holds all queries in memory (Q × D × 4 bytes) and streams its candidate range in
# blocks; give each task the cores it should use for its GEMMs with --cpus-per-task.
#
# GPU nodes: one rank per GPU (uncomment --gpus-per-node below, equal to the tasks per node, or
# pass both to sbatch). With GPUs in the job the screen runs with `--device cuda`, each rank on
# GPU <node-local rank> (srun --gpu-bind=none: every rank sees the node's GPUs); DEVICE overrides
# (`cuda-sim` on a test cluster's fake GPUs), and without GPUs it is `--device cpu`.
#
#SBATCH --job-name=multimat-screen
#SBATCH --nodes=1                  # NOTE: change for your cluster (ranks spread over nodes work too)
#SBATCH --ntasks=2                 # NOTE: number of ranks (candidate shards)
#SBATCH --cpus-per-task=1          # NOTE: GEMM threads per rank
#SBATCH --time=00:30:00            # NOTE: your partition's limit
#SBATCH --output=multimat-screen-%j.out
##SBATCH --partition=cpu           # NOTE: your partition
##SBATCH --mem-per-cpu=4G          # NOTE: queries + 4 candidate blocks per rank, see above
##SBATCH --gpus-per-node=2         # NOTE: GPU nodes: GPUs per node = tasks per node
set -uo pipefail

if [ -z "${SLURM_JOB_ID:-}" ]; then
    echo "submit this script with sbatch (it relies on SLURM_JOB_ID and srun)" >&2
    exit 2
fi
cd "${SLURM_SUBMIT_DIR:-.}"
: "${QUERIES:?set QUERIES=<query embeddings .h5>}"
: "${CANDIDATES:?set CANDIDATES=<candidate embeddings .h5>}"
K=${K:-10}
OUT=${OUT:-$(dirname "$CANDIDATES")/hits-$SLURM_JOB_ID.csv}
SCREEN=${SCREEN:-./target/release/multimat-screen}   # NOTE: path of your build
EXTRA_ARGS=${EXTRA_ARGS:-}
THREADS=${SLURM_CPUS_PER_TASK:-1}
GPUS_HERE=${SLURM_GPUS_ON_NODE:-0}
if [ "$GPUS_HERE" -gt 0 ]; then DEVICE=${DEVICE:-cuda}; else DEVICE=${DEVICE:-cpu}; fi
SRUN_GPU_ARGS=()
# NOTE: with a site-enforced GPU per task, pass DEVICE=cuda:0 (each task sees its GPU as device 0).
if [ "$GPUS_HERE" -gt 0 ]; then SRUN_GPU_ARGS=(--gpu-bind=none); fi
echo "[$(date -Is)] job $SLURM_JOB_ID: $SLURM_NTASKS ranks on $SLURM_JOB_NODELIST, device $DEVICE: $QUERIES vs $CANDIDATES, k=$K -> $OUT"

# --mpi=pmi2: MPICH (Debian's libmpich) gets its rank and size from srun's PMI-2 server; without
#   it every task is an independent world of one, all screening everything (multimat's launcher
#   check stops that with a message instead).
# --kill-on-bad-exit: if a rank dies outright (signal, OOM), stop the others rather than leave
#   them waiting in a collective. Ordinary errors are already handled: every rank exits non-zero.
# --threads: one rayon worker per allocated CPU, so ranks do not oversubscribe a node.
srun --mpi=pmi2 --kill-on-bad-exit=1 "${SRUN_GPU_ARGS[@]}" "$SCREEN" --queries "$QUERIES" --candidates "$CANDIDATES" \
    -k "$K" --out "$OUT" --threads "$THREADS" --device "$DEVICE" --quiet $EXTRA_ARGS
rc=$?
echo "[$(date -Is)] job $SLURM_JOB_ID finished with exit code $rc"
exit "$rc"
