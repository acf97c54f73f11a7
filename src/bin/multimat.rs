//! The `multimat` command: ingest, validate, pre-train, fine-tune, embed, evaluate, plot, demo.

use clap::{Parser, Subcommand};
use multimat::cli;

#[derive(Parser)]
#[command(name = "multimat", version, about = "Multimodal foundation models for crystalline materials (MultiMat)",
    long_about = "multimat turns crystal structures, densities of states, charge densities and text \
descriptions into HDF5 shards, pre-trains the four MultiMat encoders contrastively into one 128-d \
latent space, fine-tunes the crystal encoder for properties, and screens databases by similarity.\n\n\
Typical flow:\n  multimat ingest --source mp-multimodal DIR --out shards/\n  multimat validate shards/*.h5\n  \
multimat pretrain --config configs/demo.toml\n\nRun `multimat <command> --help` for each step.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse raw files (VASP outputs, CIF/POSCAR/pymatgen JSON, matminer sets) into HDF5 shards.
    Ingest(cli::ingest::Args),
    /// Check shard files against the schema; reports every violation with its location.
    Validate(cli::validate::Args),
    /// Contrastive pre-training of the encoders from a TOML config.
    Pretrain(cli::pretrain::Args),
    /// Embed text descriptions with a frozen BERT model into the shards.
    EmbedText(cli::embed_text::Args),
    /// Generate synthetic records of realistic size for throughput and scale tests.
    Synth(cli::synth::Args),
    /// Check the launcher, ranks, MPI collectives and CUDA before a long job.
    Doctor(cli::doctor::Args),
    /// Benchmarks, printed with ratios against peers measured in the same run.
    Bench(cli::bench::Args),
    /// End-to-end demo on real MP crystals (approximate charge densities) → report.md.
    Demo(cli::demo::Args),
    /// Per-material embeddings of one modality from a checkpoint → embeddings HDF5 file.
    Embed(cli::embed::Args),
    /// Evaluate a checkpoint: cross-modal retrieval, material discovery (paper Fig. 3).
    Eval(cli::eval::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ingest(a) => cli::ingest::run(a),
        Command::Validate(a) => cli::validate::run(a),
        Command::Pretrain(a) => cli::pretrain::run(a),
        Command::EmbedText(a) => cli::embed_text::run(a),
        Command::Synth(a) => cli::synth::run(a),
        Command::Bench(a) => cli::bench::run(a),
        Command::Doctor(a) => cli::doctor::run(a),
        Command::Demo(a) => cli::demo::run(a),
        Command::Embed(a) => cli::embed::run(a),
        Command::Eval(a) => cli::eval::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
