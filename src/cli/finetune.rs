//! `multimat finetune`: one fine-tuning run from a TOML config (see `finetune` for the method).

use crate::finetune::{self, FinetuneConfig, RunOptions};
use anyhow::Result;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(long_about = "Fine-tune a crystal encoder with a randomly initialised linear head on one property \
(scalar or vector, e.g. K_VRH, G_VRH, elastic_tensor, band_gap) with MSE.\n\n\
The encoder (potnet or cgcnn) starts from a `multimat pretrain` checkpoint (--checkpoint or \
model.checkpoint; only the crystal encoder's weights are loaded, and its kind and shape must match \
model.encoders) or from scratch. Defaults are the paper's where it gives them, else the reference \
code's: AdamW β = (0.9, 0.95), 10 warm-up epochs then cosine decay, batch 120, no weight decay, \
60/20/20 split by a hash of (split seed, material id), one split for every run.seed \
(data.split_per_seed = true draws it from run.seed), raw target units (data.standardize = true \
standardises), early stopping on validation MAE.\n\n\
Outputs in run.out_dir: config.resolved.toml, split.csv, metrics.jsonl (one line per epoch), \
best/ (best-validation checkpoint), predictions.csv (test set), result.json (split sizes, seed, lr, \
best epoch, validation MAE, test MAE/RMSE/R² in the target's units; written last). See \
configs/finetune-*.toml.\n\n\
Preemption: SIGUSR1/SIGTERM save the run's state after the current step in run.out_dir/resume and \
exit with code 75 (requeue); `--resume auto` continues it and ends bit-identical to an uninterrupted run.")]
pub struct Args {
    /// The TOML configuration.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Override a config value, e.g. `--set optim.lr=1e-3 --set data.target=G_VRH` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Pre-training checkpoint (a step-*.json, or a run directory: its newest checkpoint) to take
    /// the crystal encoder from (overrides model.checkpoint).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Train from scratch even if the config names a checkpoint.
    #[arg(long, conflicts_with = "checkpoint")]
    pub scratch: bool,
    /// Run again even if run.out_dir already holds a result.json (or the saved state of a run
    /// stopped by a signal).
    #[arg(long)]
    pub force: bool,
    /// `auto`: continue from the state a run stopped by SIGUSR1/SIGTERM saved in run.out_dir/resume
    /// (if there is one); `no`: refuse to start over such a state (the default).
    #[arg(long, default_value = "no", value_parser = ["auto", "no"])]
    pub resume: String,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub device: crate::cli::device::DeviceArgs,
    /// TF32 tensor-core GEMMs on a CUDA GPU (`on` or `off`, the default for fine-tuning: the
    /// regression metrics are then plain f32).
    #[arg(long, default_value = "off", value_parser = crate::cli::device::parse_on_off, action = clap::ArgAction::Set)]
    pub tf32: bool,
}

pub fn run(args: Args) -> Result<()> {
    let mut cfg = FinetuneConfig::load(&args.config, &args.overrides)?;
    if let Some(c) = &args.checkpoint {
        cfg.model.checkpoint = Some(crate::train::config::absolute_from(std::path::Path::new(""), c));
    }
    if args.scratch {
        cfg.model.checkpoint = None;
    }
    let progress = !args.quiet && std::io::stderr().is_terminal();
    let device = args.device.resolve(0)?;
    crate::cli::device::set_tf32(device, args.tf32)?;
    let stop = crate::train::preempt::StopSignal::install()?;
    let opts = RunOptions { progress, force: args.force, verbose: !args.quiet && !progress, device, resume: args.resume == "auto", stop };
    let r = match finetune::run(&cfg, &opts) {
        Ok(r) => r,
        Err(e) => match e.downcast_ref::<finetune::Preempted>() {
            Some(p) => {
                eprintln!("{p}; exit code {} asks for a requeue", crate::train::preempt::REQUEUE_EXIT_CODE);
                std::process::exit(crate::train::preempt::REQUEUE_EXIT_CODE);
            }
            None => return Err(e),
        },
    };
    let ex = &r.excluded;
    eprintln!(
        "{} ({}{}): {} records, {} used (train {}, val {}, test {}); excluded: {} missing the target, {} without a crystal graph, {} over data.max_records",
        r.target, r.units, if r.standardized { ", standardised" } else { ", raw units" }, r.records_total,
        r.n_train + r.n_val + r.n_test, r.n_train, r.n_val, r.n_test, ex.missing_target, ex.missing_crystal, ex.over_limit
    );
    if !ex.missing_target_examples.is_empty() {
        eprintln!("  missing the target, e.g.: {}", ex.missing_target_examples.join(", "));
    }
    let r2 = r.test_r2.map(|v| format!("{v:.4}")).unwrap_or_else(|| "n/a".into());
    println!(
        "best epoch {} of {}: val MAE {:.4} {u}; test MAE {:.4} {u}, RMSE {:.4} {u}, R² {r2} (train-mean predictor: test MAE {:.4} {u})",
        r.best_epoch, r.epochs_run, r.val_mae, r.test_mae, r.test_rmse, r.test_mae_train_mean, u = r.units
    );
    if let Some(e) = &r.external {
        let r2 = e.r2.map(|v| format!("{v:.4}")).unwrap_or_else(|| "n/a".into());
        println!(
            "external test set ({} of {} records; {} also in train/val): MAE {:.4} {u}, RMSE {:.4} {u}, R² {r2} (train-mean predictor: MAE {:.4} {u})",
            e.n, e.records_total, e.overlap_train_val, e.mae, e.rmse, e.mae_train_mean, u = r.units
        );
    }
    println!("outputs in {}", cfg.run.out_dir.display());
    Ok(())
}
