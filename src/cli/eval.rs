//! `multimat eval retrieval` and `multimat eval discovery`: the paper's Fig. 3A (cross-modal
//! retrieval on the held-out split) and Fig. 3B (material discovery by latent-space similarity,
//! Equation 5), from a pre-training checkpoint; JSON for `multimat plot` and a table on stdout.

use crate::eval::checkpoint_model::{LoadedModel, Split};
use crate::eval::discovery::{run_discovery, DiscoveryOptions, NmaeGrid};
use crate::eval::report::RetrievalReport;
use crate::loss::Modality;
use crate::train::dataset::{shard_paths, Dataset};
use anyhow::{bail, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: EvalCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum EvalCommand {
    /// Cross-modal retrieval (top-1/5/10/25, mean/median rank) for every ordered modality pair.
    Retrieval(RetrievalArgs),
    /// Held-out DOS targets vs training crystals: best-of-n Equation 5 nMAE, model vs random.
    Discovery(DiscoveryArgs),
}

#[derive(clap::Args, Debug)]
#[command(long_about = "For every ordered pair (A, B) of the checkpoint's modalities and every \
material of the split having both: rank all B embeddings by cosine similarity to its A embedding; \
report top-1/5/10/25 accuracy (fractions) and mean/median rank of the true partner (1-based; ties \
count against the query). The held-out split is recomputed from the checkpoint's seed and \
data.holdout_fraction, so it is exactly the set pre-training never saw.\n\n\
JSON: {\"split\", \"n_materials\", \"chance_top1\", \"pairs\": [{\"query\", \"target\", \"n\", \"top1\", \
\"top5\", \"top10\", \"top25\", \"mean_rank\", \"median_rank\"}]}")]
pub struct RetrievalArgs {
    /// A checkpoint's step-*.json, or a pre-training run directory (its newest checkpoint).
    #[arg(long, value_name = "CKPT")]
    pub checkpoint: PathBuf,
    /// Shard files or directories of shards.
    #[arg(long, value_name = "SHARD", num_args = 1.., required = true)]
    pub shards: Vec<PathBuf>,
    /// Records to evaluate on.
    #[arg(long, value_enum, default_value = "holdout")]
    pub split: Split,
    /// Output JSON, written atomically.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[command(flatten)]
    pub device: crate::cli::device::DeviceArgs,
}

#[derive(clap::Args, Debug)]
#[command(long_about = "The paper's material-discovery evaluation (Fig. 3B). Targets: held-out \
records with a DOS; candidates: training records with a crystal and a DOS. Each target's DOS \
embedding is compared with every candidate's crystal embedding (exact cosine top-k, as \
multimat-screen); for n = 1…n-max the best of the n nearest candidates is scored by Equation 5: \
∫|ρ_target − ρ_candidate| dE / ∫ρ_target dE over the window (default −5…+5 eV), both spectra \
linearly interpolated onto one equispaced grid. Reported: the mean over targets of best-of-n, and \
the same for n random candidates (exact expectation over a seeded per-target pool) as the chance \
level. Spectra not covering the window are excluded (never extrapolated) and counted.\n\n\
JSON: {\"n_max\", \"window_ev\", \"mean_best_nmae\", \"random_mean_best_nmae\", \"n_targets\", \
\"n_candidates\", \"targets\": [{\"target_id\", \"candidates\": [{\"id\", \"similarity\", \"nmae\"}]}]}")]
pub struct DiscoveryArgs {
    /// A checkpoint's step-*.json, or a pre-training run directory (its newest checkpoint).
    #[arg(long, value_name = "CKPT")]
    pub checkpoint: PathBuf,
    /// Shard files or directories of shards.
    #[arg(long, value_name = "SHARD", num_args = 1.., required = true)]
    pub shards: Vec<PathBuf>,
    /// Output JSON, written atomically.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Nearest candidates considered per target (n = 1…n-max).
    #[arg(long, default_value_t = 15)]
    pub n_max: usize,
    /// Energy window around the Fermi level, eV: LO,HI.
    #[arg(long, default_value = "-5,5", allow_hyphen_values = true, value_parser = parse_window)]
    pub window: (f64, f64),
    /// Points of the common equispaced grid over the window.
    #[arg(long, default_value_t = 1001)]
    pub grid_points: usize,
    /// Random baseline: candidates per target whose nMAE is computed (all when fewer); the
    /// expectation over random n-subsets of this pool is exact.
    #[arg(long, default_value_t = 256)]
    pub random_pool: usize,
    /// Seed of the random baseline.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub device: crate::cli::device::DeviceArgs,
}

fn parse_window(s: &str) -> Result<(f64, f64), String> {
    let (a, b) = s.split_once(',').ok_or_else(|| format!("expected LO,HI in eV (e.g. -5,5), got {s:?}"))?;
    let lo: f64 = a.trim().parse().map_err(|_| format!("window start {a:?} is not a number"))?;
    let hi: f64 = b.trim().parse().map_err(|_| format!("window end {b:?} is not a number"))?;
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return Err(format!("window ({lo}, {hi}) must be finite with LO < HI"));
    }
    Ok((lo, hi))
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        EvalCommand::Retrieval(a) => retrieval(a),
        EvalCommand::Discovery(a) => discovery(a),
    }
}

fn retrieval(args: RetrievalArgs) -> Result<()> {
    let mut loaded = LoadedModel::load(&args.checkpoint)?;
    loaded.place_on(args.device.resolve(0)?)?;
    let ds = Dataset::load(&shard_paths(&args.shards)?)?;
    let report = RetrievalReport::evaluate(&mut loaded, &ds, args.split)?;
    crate::atomic::write_bytes(&args.out, serde_json::to_string_pretty(&report)?.as_bytes())?;
    println!(
        "retrieval on the {} split ({} materials; chance top-1 {:.2}%), {} step {}",
        report.split,
        report.n_materials,
        100.0 * report.chance_top1,
        loaded.model_id(),
        loaded.step
    );
    println!("{:<16} {:<16} {:>5} {:>7} {:>7} {:>7} {:>7} {:>9} {:>9}", "query", "target", "n", "top1%", "top5%", "top10%", "top25%", "mean rk", "median rk");
    for p in &report.pairs {
        println!(
            "{:<16} {:<16} {:>5} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>9.2} {:>9.1}",
            p.query,
            p.target,
            p.n,
            100.0 * p.top1,
            100.0 * p.top5,
            100.0 * p.top10,
            100.0 * p.top25,
            p.mean_rank,
            p.median_rank
        );
    }
    println!("wrote {}", args.out.display());
    Ok(())
}

fn discovery(args: DiscoveryArgs) -> Result<()> {
    let mut loaded = LoadedModel::load(&args.checkpoint)?;
    loaded.place_on(args.device.resolve(0)?)?;
    loaded.require(Modality::Dos)?;
    loaded.require(Modality::Crystal)?;
    let ds = Dataset::load(&shard_paths(&args.shards)?)?;
    if ds.count(Modality::Dos) == 0 {
        bail!("no record in {:?} has a DOS; discovery needs DOS targets and candidates' DOS to score them", args.shards);
    }
    let targets = loaded.select(&ds, Split::Holdout);
    if targets.is_empty() {
        bail!(
            "the checkpoint holds out no record of these shards (data.holdout_fraction = {}, seed {}): discovery targets \
             must come from materials pre-training did not see; pre-train with data.holdout_fraction > 0",
            loaded.config.data.holdout_fraction,
            loaded.config.run.seed
        );
    }
    let candidates = loaded.select(&ds, Split::Train);
    let opts = DiscoveryOptions {
        n_max: args.n_max,
        grid: NmaeGrid::new(args.window.0, args.window.1, args.grid_points)?,
        random_pool: args.random_pool,
        seed: args.seed,
        progress: !args.quiet,
    };
    let run = run_discovery(&mut loaded.model, &ds, &targets, &candidates, &opts)?;
    crate::atomic::write_bytes(&args.out, serde_json::to_string_pretty(&run.report)?.as_bytes())?;
    let r = &run.report;
    let x = &run.excluded;
    println!(
        "discovery: {} held-out DOS targets vs {} training crystals, window [{}, {}] eV, {} step {}",
        r.n_targets,
        r.n_candidates,
        r.window_ev[0],
        r.window_ev[1],
        loaded.model_id(),
        loaded.step
    );
    let skipped = x.targets_without_dos + x.targets_bad_dos.len() + x.candidates_without_crystal_or_dos + x.candidates_bad_dos.len();
    if skipped > 0 {
        println!(
            "excluded: {} targets without a DOS, {} with an unusable DOS; {} candidates without a crystal or DOS, {} with an unusable DOS",
            x.targets_without_dos,
            x.targets_bad_dos.len(),
            x.candidates_without_crystal_or_dos,
            x.candidates_bad_dos.len()
        );
        for (id, why) in x.targets_bad_dos.iter().chain(&x.candidates_bad_dos).take(5) {
            println!("  {id}: {why}");
        }
    }
    println!("random baseline: exact expectation over a pool of {} candidates per target, seed {}", args.random_pool.max(args.n_max).min(r.n_candidates), args.seed);
    println!("{:>3} {:>12} {:>12} {:>8}", "n", "model nMAE", "random nMAE", "ratio");
    for n in 0..r.n_max {
        let (m, c) = (r.mean_best_nmae[n], r.random_mean_best_nmae[n]);
        println!("{:>3} {:>12.4} {:>12.4} {:>8.3}", n + 1, m, c, m / c);
    }
    println!("wrote {}", args.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_window;

    #[test]
    fn window_parsing() {
        assert_eq!(parse_window("-5,5"), Ok((-5.0, 5.0)));
        assert_eq!(parse_window(" -2.5 , 1 "), Ok((-2.5, 1.0)));
        assert!(parse_window("5,-5").is_err());
        assert!(parse_window("-5").is_err());
        assert!(parse_window("a,5").is_err());
    }
}
