//! `multimat config --example pretrain|finetune|sweep`: print a commented configuration file
//! with every key, its default and its meaning (`crate::config_example`).

use crate::config_example::{example_toml, ExampleKind};
use anyhow::Result;

#[derive(clap::Args, Debug)]
#[command(long_about = "Print a commented TOML configuration with every key, its default and its meaning, \
generated from the config types (so it is always current).\n\n\
Example (redirect it to a file to start a config):\n  multimat config --example finetune")]
pub struct Args {
    /// Which configuration: pretrain, finetune or sweep.
    #[arg(long, value_enum, value_name = "KIND")]
    pub example: ExampleKind,
}

pub fn run(args: Args) -> Result<()> {
    print!("{}", example_toml(args.example)?);
    Ok(())
}
