//! `multimat sweep`: a fine-tuning grid (learning rates × seeds × variants) run serially, over
//! MPI ranks (dynamic hand-out) or over Slurm array tasks, then aggregated into table.md/.csv.
//! Every run trains on `--device`; SIGUSR1/SIGTERM stop the sweep for a requeue (exit code 75)
//! after the running run saved its state.

use crate::dist::Dist;
use crate::sweep::{self, aggregate, SweepConfig};
use anyhow::{bail, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(long_about = "Run a grid of fine-tuning runs and aggregate them into a Table-1-style table.\n\n\
The sweep file (TOML) names a base fine-tuning config, out_dir, lrs (default 1e-3, 1e-4, 1e-5), \
seeds (default 0, 1, 2), overrides for every run (set) and [[variants]] (name, crystal_encoder, \
optional checkpoint and set). Each run gets a stable id from its settings and the directory \
out_dir/runs/<id>/; a run with a result.json is skipped, so a sweep can simply be re-submitted.\n\n\
Spreading the work: `mpirun -n R multimat sweep …` hands runs to ranks dynamically; \
`--task-id I --num-tasks N` (Slurm job arrays) runs every N-th run of the sorted plan. When every \
run is complete, out_dir/table.md and table.csv are written (per variant the lr with the lowest \
mean validation MAE, then test MAE mean ± std over seeds); `--aggregate` only aggregates.\n\n\
GPUs: `--device cuda` trains every run on a GPU (one run at a time per process: a Slurm array \
task with one GPU, or under mpirun one rank per GPU, each on its node-local rank's GPU); \
`--device cuda-sim` runs the same kernels on the CPU, for testing. The device is not part of a \
run's settings: run ids do not depend on it, and each run's run.json records it.\n\n\
Preemption: SIGUSR1/SIGTERM make the running fine-tuning run save its state in \
out_dir/runs/<id>/resume/ (as `multimat finetune` does), no further run starts, and the sweep \
exits with code 75 (requeue); the same command run again continues that run from its state, then \
runs the remaining ones.\n\n\
See configs/sweep-*.toml and slurm/finetune-sweep.sh.")]
#[command(after_help = "Example (check a GPU sweep on a login node, without running anything):\n  \
multimat sweep --config configs/sweep-matminer-kvrh.toml --device cuda --check")]
pub struct Args {
    /// The sweep TOML.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Override applied to every run's fine-tuning config (repeatable), e.g. `--set optim.epochs=20`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// This array task's index (0-based; Slurm: $SLURM_ARRAY_TASK_ID).
    #[arg(long, requires = "num_tasks")]
    pub task_id: Option<usize>,
    /// Number of array tasks (Slurm: $SLURM_ARRAY_TASK_COUNT).
    #[arg(long, requires = "task_id")]
    pub num_tasks: Option<usize>,
    /// Only aggregate the completed runs into table.md and table.csv.
    #[arg(long)]
    pub aggregate: bool,
    /// Validate every run's configuration (no checkpoints or memory needed) and list the
    /// checkpoints that do not exist yet; runs nothing.
    #[arg(long)]
    pub check: bool,
    /// Print the plan (id, variant, lr, seed, state) and exit.
    #[arg(long)]
    pub list: bool,
    /// One line per epoch of every run on stderr.
    #[arg(long)]
    pub verbose: bool,
    #[command(flatten)]
    pub device: crate::cli::device::DeviceArgs,
    /// TF32 tensor-core GEMMs on a CUDA GPU (`on` or `off`, the default, as `multimat finetune`).
    #[arg(long, default_value = "off", value_parser = crate::cli::device::parse_on_off, action = clap::ArgAction::Set)]
    pub tf32: bool,
}

pub fn run(args: Args) -> Result<()> {
    let cfg = SweepConfig::load(&args.config, &args.overrides)?;
    if args.check {
        let r = sweep::check(&cfg)?;
        println!("{}: {} runs, every configuration valid", args.config.display(), r.runs);
        for (name, p) in &r.missing_checkpoints {
            println!("checkpoint of variant {name:?} not there yet: {}", p.display());
        }
        return Ok(());
    }
    let plan = sweep::plan(&cfg)?;
    if args.list {
        for (k, r) in plan.runs.iter().enumerate() {
            println!("{k}\t{}\t{}\t{:e}\t{}\t{}", r.id, r.variant_name, r.lr, r.seed, if r.is_complete() { "complete" } else { "pending" });
        }
        return Ok(());
    }
    if args.aggregate {
        let (t, md, _) = aggregate::write(&plan)?;
        print!("{}", t.markdown());
        eprintln!("wrote {}", md.display());
        return Ok(());
    }
    let stop = crate::train::preempt::StopSignal::install()?;
    let (summary, root, stopped) = match (args.task_id, args.num_tasks) {
        (Some(i), Some(n)) => {
            if n == 0 || i >= n {
                bail!("--task-id {i} is not below --num-tasks {n}");
            }
            // One process per array task: a bare `cuda` is the first GPU it sees (Slurm's
            // CUDA_VISIBLE_DEVICES makes the task's own GPU device 0).
            let device = args.device.resolve(0)?;
            crate::cli::device::set_tf32(device, args.tf32)?;
            let share = sweep::task_share(plan.runs.len(), i, n);
            eprintln!("[sweep] task {i} of {n}: {} of {} runs on {device}", share.len(), plan.runs.len());
            let s = sweep::execute_static(&plan, &share, &sweep::ExecOptions { verbose: args.verbose, device, stop });
            let stopped = s.stopped;
            (s, true, stopped)
        }
        _ => {
            let dist = Dist::init()?;
            let device = args.device.resolve(dist.topology.local_rank)?;
            crate::cli::device::set_tf32(device, args.tf32)?;
            if dist.is_root() {
                eprintln!("[sweep] {} runs over {} rank(s) on {}", plan.runs.len(), dist.world_size(), args.device.device);
            }
            let s = sweep::execute_dynamic(&plan, &dist, &sweep::ExecOptions { verbose: args.verbose, device, stop })?;
            let mut counts = [s.failed.len() as f64, f64::from(u8::from(s.stopped))];
            dist.all_reduce_sum_f64(&mut counts);
            dist.barrier();
            let root = dist.is_root();
            if root && counts[0] > 0.0 && s.failed.is_empty() {
                eprintln!("[sweep] {} run(s) failed on other ranks (see runs/<id>/error.txt)", counts[0]);
            }
            (s, root, counts[1] > 0.0)
        }
    };
    eprintln!("[sweep] ran {}, skipped {} (complete), failed {}", summary.ran, summary.skipped, summary.failed.len());
    if stopped {
        // Before the failures' error (their FAILED lines are above): the requeued sweep continues
        // the stopped run and the remaining ones, tries the failed ones again and reports them.
        eprintln!(
            "[sweep] stopped by a signal: no further run started; exit code {} asks for a requeue (run the same command again to continue)",
            crate::train::preempt::REQUEUE_EXIT_CODE
        );
        std::process::exit(crate::train::preempt::REQUEUE_EXIT_CODE);
    }
    if !summary.failed.is_empty() {
        bail!("{} run(s) failed: {}", summary.failed.len(), summary.failed.iter().map(|(id, e)| format!("{id}: {e}")).collect::<Vec<_>>().join("; "));
    }
    if root {
        if sweep::all_complete(&plan) {
            let (t, md, _) = aggregate::write(&plan)?;
            print!("{}", t.markdown());
            eprintln!("[sweep] all {} runs complete; wrote {}", plan.runs.len(), md.display());
        } else {
            eprintln!("[sweep] not all runs are complete yet; aggregate later with --aggregate");
        }
    }
    Ok(())
}
