//! `multimat sweep`: a fine-tuning grid (learning rates × seeds × variants) run serially, over
//! MPI ranks (dynamic hand-out) or over Slurm array tasks, then aggregated into table.md/.csv.

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
See configs/sweep-*.toml and slurm/finetune-sweep.sh.")]
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
    let (summary, root) = match (args.task_id, args.num_tasks) {
        (Some(i), Some(n)) => {
            if n == 0 || i >= n {
                bail!("--task-id {i} is not below --num-tasks {n}");
            }
            let share = sweep::task_share(plan.runs.len(), i, n);
            eprintln!("[sweep] task {i} of {n}: {} of {} runs", share.len(), plan.runs.len());
            (sweep::execute_static(&plan, &share, args.verbose), true)
        }
        _ => {
            let dist = Dist::init()?;
            if dist.is_root() {
                eprintln!("[sweep] {} runs over {} rank(s)", plan.runs.len(), dist.world_size());
            }
            let s = sweep::execute_dynamic(&plan, &dist, args.verbose)?;
            let mut failed = [s.failed.len() as f64];
            dist.all_reduce_sum_f64(&mut failed);
            dist.barrier();
            let root = dist.is_root();
            if root && failed[0] > 0.0 && s.failed.is_empty() {
                eprintln!("[sweep] {} run(s) failed on other ranks (see runs/<id>/error.txt)", failed[0]);
            }
            (s, root)
        }
    };
    eprintln!("[sweep] ran {}, skipped {} (complete), failed {}", summary.ran, summary.skipped, summary.failed.len());
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
