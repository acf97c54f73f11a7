//! `multimat embed-text`: embed descriptions with a frozen BERT into the shards.

use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    anyhow::bail!("multimat embed-text is not implemented yet in this build")
}
