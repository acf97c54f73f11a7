//! `multimat validate`: check shards against the schema and report every violation.

use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    anyhow::bail!("multimat validate is not implemented yet in this build")
}
