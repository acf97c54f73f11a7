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
# complete runs are skipped, so re-submitting the same array after a crash, a time-out or a
# preemption only redoes the unfinished runs (an interrupted run restarts from its first epoch).
#
# Aggregation (out_dir/table.md and table.csv): the task that completes the last run writes the
# table itself. Task 0 also submits a small dependent job (afterany on the whole array) that runs
# `multimat sweep --aggregate`, which writes the table — or, if runs failed, lists the incomplete ones.
#
# Environment: CONFIG (sweep TOML), MULTIMAT (binary), EXTRA_ARGS (e.g. "--set optim.epochs=20"),
# AGGREGATE_JOB=0 to skip the dependent aggregation job. Runs are single-process; give each task
# the CPU threads it may use with --cpus-per-task (rayon and the GEMMs use them all).
#
#SBATCH --job-name=multimat-sweep
#SBATCH --array=0-3
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1          # NOTE: site-specific — threads per fine-tuning run
#SBATCH --time=01:00:00            # NOTE: site-specific — your partition's limit
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=multimat-sweep-%A_%a.out
##SBATCH --partition=gpu           # NOTE: site-specific — your partition
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
# Limit the thread pools to the CPUs Slurm granted this task.
export RAYON_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
echo "[$(date -Is)] array job ${SLURM_ARRAY_JOB_ID} task ${SLURM_ARRAY_TASK_ID} of ${SLURM_ARRAY_TASK_COUNT} on ${SLURMD_NODENAME:-?}: $CONFIG"

if [ "$SLURM_ARRAY_TASK_ID" = "${SLURM_ARRAY_TASK_MIN:-0}" ] && [ "$AGGREGATE_JOB" = "1" ] && [ "${SLURM_RESTART_COUNT:-0}" = "0" ]; then
    # afterany: aggregate (or report what is missing) whether or not every task succeeded.
    sbatch --parsable --dependency="afterany:${SLURM_ARRAY_JOB_ID}" --job-name=multimat-sweep-aggregate \
        --ntasks=1 --time=00:10:00 --output="multimat-sweep-%j-aggregate.out" \
        --wrap="cd '$PWD' && '$MULTIMAT' sweep --aggregate --config '$CONFIG' $EXTRA_ARGS" \
        && echo "submitted the aggregation job (runs after every task of ${SLURM_ARRAY_JOB_ID})"
fi

# Not under srun: a sweep task is one process, and `multimat` must not mistake the allocation's
# task count for an MPI world (it does not: without a job step it runs as rank 0 of 1).
"$MULTIMAT" sweep --config "$CONFIG" --task-id "$SLURM_ARRAY_TASK_ID" --num-tasks "$SLURM_ARRAY_TASK_COUNT" $EXTRA_ARGS
rc=$?
echo "[$(date -Is)] task ${SLURM_ARRAY_TASK_ID} finished with exit code $rc"
exit "$rc"
