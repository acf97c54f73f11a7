#!/bin/bash
# A fine-tuning sweep (learning rates × seeds × variants) as a Slurm job array.
#
#   sbatch slurm/finetune-sweep.sh                                   # configs/sweep-matminer-kvrh.toml
#   CONFIG=my-sweep.toml sbatch slurm/finetune-sweep.sh
#   CONFIG=my-sweep.toml sbatch --array=0-7 slurm/finetune-sweep.sh  # more tasks
#
# Every array task runs `multimat sweep --task-id $SLURM_ARRAY_TASK_ID --num-tasks
# $SLURM_ARRAY_TASK_COUNT`: the runs of the plan (sorted by their stable id) are dealt round-robin
# over the tasks. A run writes into out_dir/runs/<id>/ and is complete when its result.json exists;
# complete runs are skipped, so re-submitting the same array after a crash or a time-out only
# redoes the unfinished runs.
#
# Preemption: Slurm sends SIGUSR1 to this script 120 s before the time limit (`--signal=B:USR1@120`:
# the sweep runs in the batch shell, not in a job step; by hand: `scancel --batch --signal=USR1
# JOBID_TASK`). The script passes it on to multimat, whose running fine-tuning run saves its state
# in runs/<id>/resume/ after the current step; the sweep starts no further run and exits with code
# 75, which this script turns into `scontrol requeue` of the task. The requeued task continues that
# run from its state (bit-identical to an uninterrupted run) and then runs the rest of its share.
#
# GPU nodes: one GPU per array task. Uncomment the --gpus line below (or pass it to sbatch:
# `sbatch --gpus=1 slurm/finetune-sweep.sh`). When the task has a GPU (SLURM_GPUS_ON_NODE, or a
# CUDA_VISIBLE_DEVICES the site sets), multimat runs with `--device cuda`: the first GPU the task
# sees, which is its own under Slurm's CUDA_VISIBLE_DEVICES. DEVICE overrides (`cuda-sim` on the
# local test cluster's fake GPUs, `cpu` to ignore the GPU); without a GPU it is `--device cpu`.
#
# Aggregation (out_dir/table.md and table.csv): the task that completes the last run writes the
# table itself. Task 0 also submits a small dependent job (afterany on the whole array) that runs
# `multimat sweep --aggregate`, which writes the table — or, if runs failed, lists the incomplete ones.
#
# Environment: CONFIG (sweep TOML), MULTIMAT (binary), EXTRA_ARGS (e.g. "--set optim.epochs=20"),
# DEVICE, AGGREGATE_JOB=0 to skip the dependent aggregation job. Runs are single-process; give each
# task the CPU threads it may use with --cpus-per-task (rayon and the GEMMs use them all).
# tests/slurm_jobs.rs submits this script to a local cluster (CPU, and fake GPUs with a preempted task).
#
#SBATCH --job-name=multimat-sweep
#SBATCH --array=0-3
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1          # NOTE: site-specific — threads per fine-tuning run
#SBATCH --time=01:00:00            # NOTE: site-specific — your partition's limit
#SBATCH --signal=B:USR1@120        # to this script (it runs the sweep), 120 s before the limit
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=multimat-sweep-%A_%a.out
##SBATCH --partition=gpu           # NOTE: site-specific — your partition (a GPU one for --gpus)
##SBATCH --gpus=1                  # NOTE: GPU nodes — one GPU per array task (or --gres=gpu:1)
##SBATCH --cpus-per-task=8         # NOTE: GPU nodes — the node's cores / GPUs (data loading)
##SBATCH --account=myproject       # NOTE: site-specific — your allocation
set -uo pipefail

if [ -z "${SLURM_ARRAY_TASK_ID:-}" ]; then
    echo "submit this script with sbatch as a job array (it relies on SLURM_ARRAY_TASK_ID/COUNT)" >&2
    exit 2
fi
cd "${SLURM_SUBMIT_DIR:-.}"
CONFIG=${CONFIG:-configs/sweep-matminer-kvrh.toml}
MULTIMAT=${MULTIMAT:-./target/release/multimat}    # NOTE: site-specific — where the binary lives
EXTRA_ARGS=${EXTRA_ARGS:-}
AGGREGATE_JOB=${AGGREGATE_JOB:-1}
# GPUs this task has: Slurm sets SLURM_GPUS_ON_NODE for a job with GPUs; some sites only set
# CUDA_VISIBLE_DEVICES (a comma-separated list; "NoDevFiles" or empty means none).
GPUS_HERE=${SLURM_GPUS_ON_NODE:-0}
if [ "$GPUS_HERE" -eq 0 ] && [ -n "${CUDA_VISIBLE_DEVICES:-}" ] && [ "$CUDA_VISIBLE_DEVICES" != NoDevFiles ]; then
    GPUS_HERE=$(echo "$CUDA_VISIBLE_DEVICES" | tr ',' '\n' | grep -c .)
fi
# NOTE: with several GPUs per task only the first is used (one run at a time per task): ask for
#       one GPU per array task, or pass DEVICE=cuda:N.
if [ "$GPUS_HERE" -gt 0 ]; then DEVICE=${DEVICE:-cuda}; else DEVICE=${DEVICE:-cpu}; fi
# Limit the thread pools to the CPUs Slurm granted this task.
export RAYON_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
echo "[$(date -Is)] array job ${SLURM_ARRAY_JOB_ID} task ${SLURM_ARRAY_TASK_ID} of ${SLURM_ARRAY_TASK_COUNT}" \
    "restart ${SLURM_RESTART_COUNT:-0} on ${SLURMD_NODENAME:-?}: device $DEVICE ($GPUS_HERE GPUs), $CONFIG"

if [ "$SLURM_ARRAY_TASK_ID" = "${SLURM_ARRAY_TASK_MIN:-0}" ] && [ "$AGGREGATE_JOB" = "1" ] && [ "${SLURM_RESTART_COUNT:-0}" = "0" ]; then
    # afterany: aggregate (or report what is missing) whether or not every task succeeded.
    agg=$(sbatch --parsable --dependency="afterany:${SLURM_ARRAY_JOB_ID}" --job-name=multimat-sweep-aggregate \
        --ntasks=1 --time=00:10:00 --output="multimat-sweep-%j-aggregate.out" \
        --wrap="cd '$PWD' && '$MULTIMAT' sweep --aggregate --config '$CONFIG' $EXTRA_ARGS") \
        && echo "submitted aggregation job $agg (runs after every task of ${SLURM_ARRAY_JOB_ID})"
fi

# Not under srun: a sweep task is one process, and `multimat` must not mistake the allocation's
# task count for an MPI world (it does not: without a job step it runs as rank 0 of 1). It runs in
# the background so that this shell can pass USR1/TERM on to it (bash runs a trap only between
# commands, but `wait` returns at once when a trapped signal arrives).
# $EXTRA_ARGS is split into words on purpose (several --set options).
# shellcheck disable=SC2086
"$MULTIMAT" sweep --config "$CONFIG" --task-id "$SLURM_ARRAY_TASK_ID" --num-tasks "$SLURM_ARRAY_TASK_COUNT" \
    --device "$DEVICE" $EXTRA_ARGS &
sweep_pid=$!
trap 'echo "[$(date -Is)] signal received: the running fine-tuning run saves its state"; kill -USR1 "$sweep_pid" 2>/dev/null' USR1 TERM
wait "$sweep_pid"
rc=$?
# A trapped signal ends `wait` early (code > 128) while multimat is still saving: wait again.
while kill -0 "$sweep_pid" 2>/dev/null; do
    wait "$sweep_pid"
    rc=$?
done
if [ "$rc" -eq 75 ]; then
    echo "[$(date -Is)] task ${SLURM_ARRAY_TASK_ID} stopped after a signal (state saved); requeueing job $SLURM_JOB_ID"
    if ! scontrol requeue "$SLURM_JOB_ID"; then
        echo "requeue refused; the state is saved: resubmit the array to continue" >&2
        exit 75
    fi
    exit 0
fi
echo "[$(date -Is)] task ${SLURM_ARRAY_TASK_ID} finished with exit code $rc"
exit "$rc"
