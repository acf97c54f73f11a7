//! `multimat bench`: benchmarks against peers measured in the same run, one subcommand each.

use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub which: Which,
}

#[derive(clap::Subcommand, Debug)]
pub enum Which {
    /// Frozen BERT text encoder: texts/s and GFLOP/s vs the sgemm peak, peak memory.
    Text(crate::text::bench::Args),
}

pub fn run(args: Args) -> Result<()> {
    match args.which {
        Which::Text(a) => crate::text::bench::run(a),
    }
}
