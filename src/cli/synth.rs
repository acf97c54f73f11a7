//! `multimat synth`: generate records of realistic size for scale tests.

use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    anyhow::bail!("multimat synth is not implemented yet in this build")
}
