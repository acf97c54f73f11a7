//! `multimat pretrain`: contrastive pre-training of the MultiMat encoders.

use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    anyhow::bail!("multimat pretrain is not implemented yet in this build")
}
