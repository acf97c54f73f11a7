//! `multimat ingest`: raw files → HDF5 shards + manifest.

use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    anyhow::bail!("multimat ingest is not implemented yet in this build")
}
