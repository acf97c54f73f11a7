//! Atomic file output: every file multimat writes goes to a temporary sibling first and is
//! renamed into place only when complete, so a crash or a killed rank never leaves a
//! half-written file under the final name.

use anyhow::{Context, Result};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The temporary path used while `path` is being written: same directory (so the rename is
/// atomic on POSIX file systems), a name that marks it as incomplete, unique per process.
pub fn temp_path_for(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = format!(".{}.partial.{}", name, std::process::id());
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(tmp),
        _ => PathBuf::from(tmp),
    }
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

/// Run `write` against a temporary path, then fsync-free rename it over `path`. If `write`
/// fails, the temporary file is removed and `path` is untouched.
pub fn write_with<F>(path: &Path, write: F) -> Result<()>
where
    F: FnOnce(&Path) -> Result<()>,
{
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            fs::create_dir_all(dir).with_context(|| format!("creating directory {}", dir.display()))?;
        }
    }
    let tmp = temp_path_for(path);
    match write(&tmp) {
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
}
