//! `multimat bench`: benchmarks against peers measured in the same run.

use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    anyhow::bail!("multimat bench is not implemented yet in this build")
}
