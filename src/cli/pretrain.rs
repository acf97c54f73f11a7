//! `multimat pretrain`: contrastive pre-training of the MultiMat encoders from a TOML config.

use crate::dist::Dist;
use crate::cli::device::{parse_on_off, DeviceArgs};
use crate::train::config::PretrainConfig;
use crate::train::preempt::{StopSignal, REQUEUE_EXIT_CODE};
use crate::train::pretrain::{pretrain, Outcome, Resume, RunOptions};
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(long_about = "Pre-train the encoders of the configured modalities into one latent space.\n\n\
The config (TOML) names the shards, the modalities (2–4 of crystal, dos, charge_density, text), the \
loss (clip, all_pairs_clip, anchored_clip, tensor_clip, barlow_twins3d) and optionally the encoder, \
optimiser and run settings; everything else has the paper's defaults. See configs/*.toml.\n\n\
Outputs in run.out_dir: checkpoints/step-*.safetensors + .json (weights, AdamW moments, metadata), \
metrics.jsonl (one line per step), config.resolved.toml, retrieval.json (held-out cross-modal \
retrieval at the end).\n\n\
Under srun/mpirun every rank computes its share of each global batch; the result does not depend \
on the number of ranks. SIGUSR1/SIGTERM: checkpoint and exit with code 75 (requeue).")]
pub struct Args {
    /// The TOML configuration.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Override a config value, e.g. `--set optim.lr=3e-4 --set run.out_dir=runs/x` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// `auto`: continue from the newest complete checkpoint in run.out_dir if there is one;
    /// `no`: start fresh (refuses to overwrite); or the path of a checkpoint's .json.
    #[arg(long, default_value = "no")]
    pub resume: String,
    /// No progress bar (logs still go to metrics.jsonl).
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// TF32 tensor-core GEMMs on a CUDA GPU (`on`, the default: ~1e-3 relative agreement with
    /// f32) or `off` (plain f32 GEMMs).
    #[arg(long, default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub tf32: bool,
}

pub fn run(args: Args) -> Result<()> {
    let cfg = PretrainConfig::load(&args.config, &args.overrides)?;
    let resume = match args.resume.as_str() {
        "auto" => Resume::Auto,
        "no" | "none" => Resume::No,
        p => Resume::From(PathBuf::from(p)),
    };
    let dist = Dist::init()?;
    let device = args.device.resolve(dist.topology.local_rank)?;
    let stop = StopSignal::install()?;
    let summary = pretrain(&cfg, &RunOptions { resume, progress: !args.quiet, device, tf32: args.tf32 }, &dist, &stop)?;
    if dist.is_root() {
        if let (Some(a), Some(b)) = (summary.first_loss, summary.last_loss) {
            eprintln!("{} steps; loss {a:.4} → {b:.4}", summary.steps_done);
        }
        for m in &summary.retrieval {
            let top = m.top_k.iter().map(|(k, v)| format!("top-{k} {:.1}%", 100.0 * v)).collect::<Vec<_>>().join(", ");
            let chance = m.chance.first().map(|c| 100.0 * c.1).unwrap_or(0.0);
            eprintln!("retrieval {} → {} (n={}): {top}; chance top-1 {chance:.1}%", m.query, m.target, m.n);
        }
        eprintln!("outputs in {}", summary.out_dir.display());
    }
    if let Outcome::Preempted { step } = summary.outcome {
        if dist.is_root() {
            eprintln!("stopped by signal after step {step}; checkpoint written; exit code {REQUEUE_EXIT_CODE} asks for a requeue");
        }
        drop(dist);
        std::process::exit(REQUEUE_EXIT_CODE);
    }
    Ok(())
}
