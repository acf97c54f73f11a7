//! Per-process fixture directories for the integration tests, with clean-up of dead processes' ones.

use std::path::{Path, PathBuf};

/// A per-process fixture directory `<tmp>/<prefix>-<pid>`. Test binaries cannot clean up
/// after a `static` fixture, so directories left by processes that are no longer alive are
/// removed here instead, before this process makes its own.
pub fn fixture_dir(prefix: &str) -> PathBuf {
    let tmp = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix(&format!("{prefix}-")).and_then(|p| p.parse::<u32>().ok()) else { continue };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    tmp.join(format!("{prefix}-{}", std::process::id()))
}

