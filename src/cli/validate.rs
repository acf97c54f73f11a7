//! `multimat validate`: check shards (and manifests) against the schema and report every violation.

use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Shard files (`*.h5`) and/or manifests (`manifest.json`: checks every listed shard's sha256
    /// and every record's row, id and checksum).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print violations as JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let mut total = 0usize;
    for path in &args.files {
        let is_manifest = path.extension().is_some_and(|e| e == "json");
        let violations = if is_manifest {
            crate::shard::manifest::check_manifest(path)
        } else {
            crate::shard::validate(path)
        };
        for v in &violations {
            if args.json {
                println!("{}", serde_json::to_string(v)?);
            } else {
                println!("{v}");
            }
        }
        if violations.is_empty() && !args.json {
            println!("{}: ok", path.display());
        }
        total += violations.len();
    }
    if total > 0 {
        anyhow::bail!("{total} violation(s) in {} file(s) checked", args.files.len());
    }
    Ok(())
}
