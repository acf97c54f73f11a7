//! `multimat validate`: check shards (and manifests) against the schema and report every violation.
//!
//! Each file is checked in a child process (this binary with the hidden `--in-process` flag):
//! libhdf5 can crash (SIGSEGV) on a file whose internal heaps are corrupt, before any check of
//! ours can run. Contained in a child, such a file becomes one more violation — "corrupt beyond
//! what HDF5 can read" — and the remaining files are still checked.

use crate::shard::Violation;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Shard files (`*.h5`) and/or manifests (`manifest.json`: checks every listed shard's sha256
    /// and every record's row, id and checksum).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print violations as JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
    /// Check in this process instead of one child process per file (what the child runs).
    #[arg(long, hide = true)]
    pub in_process: bool,
}

pub fn run(args: Args) -> Result<()> {
    let mut total = 0usize;
    for path in &args.files {
        let violations = if args.in_process { check(path) } else { check_in_child(path)? };
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

fn check(path: &Path) -> Vec<Violation> {
    if path.extension().is_some_and(|e| e == "json") {
        crate::shard::manifest::check_manifest(path)
    } else {
        crate::shard::validate(path)
    }
}

/// [`check`] in a child process; a child killed by a signal is reported as a violation of the file.
fn check_in_child(path: &Path) -> Result<Vec<Violation>> {
    let exe = std::env::current_exe().context("locating the multimat binary")?;
    let out = std::process::Command::new(&exe)
        .args(["validate", "--in-process", "--json", "--"])
        .arg(path)
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("starting {} to check {}", exe.display(), path.display()))?;
    let mut violations = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // A crash can cut the last line short: what parses is kept, the crash is reported below.
        if let Ok(v) = serde_json::from_str::<Violation>(line) {
            violations.push(v);
        }
    }
    use std::os::unix::process::ExitStatusExt;
    if let Some(signal) = out.status.signal() {
        violations.push(Violation {
            file: path.to_path_buf(),
            location: "/".into(),
            record: None,
            message: format!(
                "file is corrupt beyond what HDF5 can read: the HDF5 library crashed reading it (signal {signal}){}; \
                 do not use this file — re-create it from its inputs",
                if violations.is_empty() { String::new() } else { ", after the violations above".into() }
            ),
        });
    } else if !matches!(out.status.code(), Some(0) | Some(1)) || (out.status.code() == Some(1) && violations.is_empty()) {
        anyhow::bail!("checking {} failed: {}", path.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(violations)
}
