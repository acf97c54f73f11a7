//! Atomic file output: every file multimat writes goes to a temporary sibling first and is
//! renamed into place only when complete, so a crash or a killed rank never leaves a
//! half-written file under the final name.

use anyhow::{Context, Result};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The temporary path used while `path` is being written: same directory (so the rename is
/// atomic on POSIX file systems), a name that marks it as incomplete, unique per process and
/// host (`.NAME.partial.HOST.PID`: a later run can tell a dead writer's leftover from a live one).
pub fn temp_path_for(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = format!(".{}.partial.{}.{}", name, crate::dist::hostname(), std::process::id());
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(tmp),
        _ => PathBuf::from(tmp),
    }
}

/// Removes the temporary files that writers of `path` on this host left when they were killed
/// (their process no longer exists) and returns how many. Leftovers of live processes and of
/// other hosts (whose processes we cannot see) are kept.
pub fn remove_stale_partials(path: &Path) -> usize {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else { return 0 };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Ok(entries) = fs::read_dir(&dir) else { return 0 };
    let prefix = format!(".{name}.partial.{}.", crate::dist::hostname());
    let mut removed = 0;
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = file.strip_prefix(&prefix).and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() && fs::remove_file(e.path()).is_ok() {
            eprintln!("note: removed {}, left by a killed writer (process {pid})", e.path().display());
            removed += 1;
        }
    }
    removed
}

/// Write a whole file atomically from bytes.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, |tmp| {
        let mut f = fs::File::create(tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        Ok(())
    })
}

/// Run `write` against a temporary path, fsync it, then rename it over `path`. If `write` or the
/// fsync fails, the temporary file is removed and `path` is untouched: a file under its final
/// name is complete on disk (a full disk often shows only at fsync, with delayed allocation).
/// Leftovers of killed writers of the same file are removed first.
pub fn write_with<F>(path: &Path, write: F) -> Result<()>
where
    F: FnOnce(&Path) -> Result<()>,
{
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            fs::create_dir_all(dir).with_context(|| format!("creating directory {}", dir.display()))?;
        }
    }
    remove_stale_partials(path);
    let tmp = temp_path_for(path);
    let written = write(&tmp).and_then(|()| {
        fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("flushing {} to disk", tmp.display()))
    });
    match written {
        Ok(()) => fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display())),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e.context(format!("writing {}", path.display())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_leaves_no_file_and_keeps_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.json");
        write_bytes(&p, b"old").unwrap();
        let r = write_with(&p, |tmp| {
            fs::write(tmp, b"half")?;
            anyhow::bail!("disk full")
        });
        assert!(r.is_err());
        assert_eq!(fs::read(&p).unwrap(), b"old");
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temporary file must be cleaned up");
    }

    #[test]
    fn leftovers_of_killed_writers_are_removed_and_live_or_foreign_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("shard-0000.h5");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let mut sleeper = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let host = crate::dist::hostname();
        let stale = dir.path().join(format!(".shard-0000.h5.partial.{host}.{dead}"));
        let live = dir.path().join(format!(".shard-0000.h5.partial.{host}.{}", sleeper.id()));
        let foreign = dir.path().join(format!(".shard-0000.h5.partial.other-node.{dead}"));
        let other_file = dir.path().join(format!(".shard-0001.h5.partial.{host}.{dead}"));
        for f in [&stale, &live, &foreign, &other_file] {
            fs::write(f, b"half").unwrap();
        }
        write_bytes(&p, b"complete").unwrap();
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        assert_eq!(fs::read(&p).unwrap(), b"complete");
        assert!(!stale.exists(), "a dead writer's leftover of this file must go");
        assert!(live.exists() && foreign.exists() && other_file.exists(), "live, foreign and other files' leftovers stay");
    }
}
