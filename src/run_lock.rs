//! One run per output directory: a lock file (`<out_dir>/run.lock`) that a pre-training or
//! fine-tuning run takes before it writes anything there and removes when it ends.
//!
//! Without it, two runs on one `out_dir` interleave `metrics.jsonl` and overwrite each other's
//! checkpoints, and a later `--resume auto` picks up the other run's weights. The lock is a file
//! created with `O_EXCL` (atomic on local and NFSv3+ file systems), holding who owns it. A lock
//! left by a process that died (SIGKILL, node failure) is recognised as stale and taken over:
//! - same host, and no process with the recorded pid: the owner is gone;
//! - the same Slurm job id as ours: a requeued job (possibly on another node) whose previous
//!   incarnation was killed — Slurm never runs two incarnations of one job at once.
//! Anything else is refused, naming the owner, so a user can decide.

use anyhow::{bail, Context, Result};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The lock file's name inside the run directory.
pub const LOCK_FILE: &str = "run.lock";

/// Who holds a lock (the file's JSON content).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Owner {
    pid: u32,
    host: String,
    /// `SLURM_JOB_ID` of the owner, when it ran under Slurm.
    slurm_job_id: Option<String>,
    /// What took the lock (`pretrain`, `finetune`), for the message a second run prints.
    command: String,
    /// Seconds since the Unix epoch when the lock was taken.
    since_unix_s: u64,
}

impl Owner {
    fn me(command: &str) -> Owner {
        Owner {
            pid: std::process::id(),
            host: crate::dist::hostname(),
            slurm_job_id: std::env::var("SLURM_JOB_ID").ok().filter(|s| !s.is_empty()),
            command: command.to_string(),
            since_unix_s: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        }
    }

    /// Why this owner cannot be running any more, if we can tell.
    fn gone_because(&self, me: &Owner) -> Option<String> {
        if let (Some(a), Some(b)) = (&self.slurm_job_id, &me.slurm_job_id) {
            if a == b && (self.host != me.host || self.pid != me.pid) {
                return Some(format!("left by an earlier run of Slurm job {a} (requeued)"));
            }
        }
        if self.host == me.host && !Path::new(&format!("/proc/{}", self.pid)).exists() {
            return Some(format!("left by process {} on this host, which no longer exists", self.pid));
        }
        None
    }
}

/// Held while the run writes into its directory; dropping it removes the lock file.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
}

impl RunLock {
    /// Take the lock on `dir` (created if missing) for `command`, or fail naming the run that
    /// holds it. A stale lock is taken over with a note on stderr.
    pub fn acquire(dir: &Path, command: &str) -> Result<RunLock> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        let me = Owner::me(command);
        // Two attempts: the second after removing a stale lock (another process may win the
        // race for it; then we report that one).
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    let text = serde_json::to_string(&me)?;
                    f.write_all(text.as_bytes())
                        .and_then(|_| f.sync_all())
                        .with_context(|| format!("writing the run lock {}", path.display()))?;
                    return Ok(RunLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    let stale = match serde_json::from_str::<Owner>(&text) {
                        Ok(owner) => match owner.gone_because(&me) {
                            Some(why) => why,
                            None => bail!(
                                "{} is in use by another run: {} (pid {} on host {}{}, since {}); wait for it to end, \
                                 choose another run.out_dir, or delete {} if that run is gone",
                                dir.display(),
                                owner.command,
                                owner.pid,
                                owner.host,
                                owner.slurm_job_id.as_deref().map(|j| format!(", Slurm job {j}")).unwrap_or_default(),
                                describe_unix_time(owner.since_unix_s),
                                path.display()
                            ),
                        },
                        // A lock another process is writing this instant is empty for a moment;
                        // only an unreadable lock older than that is stale.
                        Err(_) if age_s(&path) > 5.0 => "unreadable (a run killed while taking it)".to_string(),
                        Err(_) => bail!("{} is being locked by another run right now ({}); try again", dir.display(), path.display()),
                    };
                    eprintln!("note: removing a stale run lock {} ({stale})", path.display());
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e).with_context(|| format!("removing the stale run lock {}", path.display())),
                    }
                }
                Err(e) => return Err(e).with_context(|| format!("creating the run lock {}", path.display())),
            }
        }
        bail!("{}: another run took the lock while a stale one was being removed", path.display())
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Remove only our own lock (a user may have deleted it and another run taken it since).
        let ours = std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|t| serde_json::from_str::<Owner>(&t).ok())
            .is_some_and(|o| o.pid == std::process::id() && o.host == crate::dist::hostname());
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn age_s(path: &Path) -> f64 {
    std::fs::metadata(path).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).map_or(0.0, |d| d.as_secs_f64())
}

fn describe_unix_time(s: u64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(s);
    format!("{} s ago", now.saturating_sub(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_owner(dir: &Path, o: &Owner) {
        std::fs::write(dir.join(LOCK_FILE), serde_json::to_string(o).unwrap()).unwrap();
    }

    #[test]
    fn a_held_lock_refuses_a_second_run_and_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let lock = RunLock::acquire(dir.path(), "pretrain").unwrap();
        // Our own live pid: a second acquire in this process is "another run".
        let e = RunLock::acquire(dir.path(), "pretrain").unwrap_err().to_string();
        assert!(e.contains("in use by another run") && e.contains(&std::process::id().to_string()), "{e}");
        drop(lock);
        assert!(!dir.path().join(LOCK_FILE).exists());
        RunLock::acquire(dir.path(), "finetune").unwrap();
    }

    #[test]
    fn stale_locks_are_taken_over_and_live_ones_on_other_hosts_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let me = Owner::me("pretrain");
        // A finished child process: its pid no longer exists on this host.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        write_owner(dir.path(), &Owner { pid: dead, slurm_job_id: None, ..me.clone() });
        drop(RunLock::acquire(dir.path(), "pretrain").unwrap());

        // Another host, no common Slurm job: we cannot tell, so refuse.
        write_owner(dir.path(), &Owner { host: "node-that-is-not-here".into(), slurm_job_id: Some("77".into()), ..me.clone() });
        let e = RunLock::acquire(dir.path(), "pretrain").unwrap_err().to_string();
        assert!(e.contains("node-that-is-not-here") && e.contains("Slurm job 77"), "{e}");

        // The same Slurm job on another node: a requeued job takes its own lock back.
        let owner = Owner { host: "node-that-is-not-here".into(), slurm_job_id: Some("77".into()), ..me.clone() };
        let here = Owner { slurm_job_id: Some("77".into()), ..me };
        assert!(owner.gone_because(&here).is_some());
    }
}
