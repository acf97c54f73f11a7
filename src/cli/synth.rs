//! `multimat synth`: synthetic records of realistic size (atoms per cell, edges, DOS length,
//! 32³ densities, texts, 768-d embeddings) for throughput and scale tests, written as valid
//! shards with a manifest. The generator and its size model live in `approx::synth`.

use crate::approx::synth::{self, SizeModel, SynthOptions, MP_RECORDS};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Number of records to generate (Materials Project size: 154718).
    #[arg(long)]
    pub n: usize,
    /// Output directory (created; must not already hold shards or a manifest).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Random seed: the same seed gives byte-identical shards at any thread count.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 1024)]
    pub records_per_shard: usize,
    /// No charge densities (they are ≈ 95 % of the bytes).
    #[arg(long)]
    pub no_density: bool,
    /// Every record gets a DOS and (unless --no-density) a charge density, instead of the shares
    /// of Materials Project that have them (58 % and 79 %).
    #[arg(long)]
    pub all_modalities: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Points per DOS (the shards' `dos_points`).
    #[arg(long, default_value_t = 601)]
    pub dos_points: usize,
    /// Largest cell, in atoms (the tail of the log-normal is clamped here).
    #[arg(long, default_value_t = 256)]
    pub max_atoms: usize,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: Args) -> Result<()> {
    let mut opts = SynthOptions::new(args.n, args.out.clone());
    opts.seed = args.seed;
    opts.records_per_shard = args.records_per_shard;
    opts.density = !args.no_density;
    opts.all_modalities = args.all_modalities;
    opts.preprocess.dos_points = args.dos_points;
    opts.sizes = SizeModel { max_atoms: args.max_atoms, ..SizeModel::default() };
    opts.progress = !args.quiet;
    if args.threads == Some(0) {
        anyhow::bail!("--threads must be at least 1");
    }
    let (start, cpu_start) = (Instant::now(), crate::bench::process_cpu_seconds());
    let summary = match args.threads {
        Some(t) => rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .context("starting the worker threads")?
            .install(|| synth::run(&opts))?,
        None => synth::run(&opts)?,
    };
    let secs = start.elapsed().as_secs_f64();
    let cpu_per_record = crate::bench::process_cpu_seconds().zip(cpu_start).map(|(b, a)| (b - a) / summary.records as f64);
    let per_record = summary.bytes as f64 / summary.records as f64;
    let rate = summary.records as f64 / secs;
    println!(
        "synth: {} records ({} atoms, {} with DOS, {} with charge density) in {} shards under {}",
        summary.records,
        summary.atoms,
        summary.with_dos,
        summary.with_density,
        summary.shards.len(),
        args.out.display()
    );
    println!(
        "synth: {secs:.1} s, {rate:.1} records/s, {:.1} MB, {:.1} kB/record; at Materials Project size ({MP_RECORDS} records): {:.2} GB, {:.1} min at this rate",
        summary.bytes as f64 / 1e6,
        per_record / 1e3,
        per_record * MP_RECORDS as f64 / 1e9,
        MP_RECORDS as f64 / rate / 60.0
    );
    if let Some(c) = cpu_per_record {
        // On a shared machine wall time counts the neighbours' load too; CPU time does not.
        println!(
            "synth: {:.1} ms CPU/record (all threads); at Materials Project size: {:.1} CPU-hours",
            c * 1e3,
            c * MP_RECORDS as f64 / 3600.0
        );
    }
    println!("synth: manifest {}", summary.manifest.display());
    Ok(())
}

