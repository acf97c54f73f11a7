//! `multimat bench`: benchmarks against peers measured in the same run, one subcommand each.

use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub what: Bench,
}

#[derive(clap::Subcommand, Debug)]
pub enum Bench {
    /// sgemm GFLOP/s vs this machine's peak, and Transformer-block forward+backward throughput.
    Engine(crate::engine::bench::EngineBenchArgs),
}

pub fn run(args: Args) -> Result<()> {
    match args.what {
        Bench::Engine(a) => crate::engine::bench::run(a),
    }
}
