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
    /// Forward+backward time and GFLOP/s of the 3-D ResNeXt convolutions vs the sgemm peak.
    Conv3d(crate::engine::bench_conv3d::Conv3dBenchArgs),
}

pub fn run(args: Args) -> Result<()> {
    match args.what {
        Bench::Engine(a) => crate::engine::bench::run(a),
        Bench::Conv3d(a) => crate::engine::bench_conv3d::run(a),
    }
}
