//! Preemption under MPI, as a cluster delivers it: Slurm may signal only some tasks (or they
//! receive it at different times). SIGTERM to ONE rank of `mpirun -n 2` must make both ranks stop
//! after the same step, write one checkpoint, and exit with the requeue code; the requeued run
//! ends with the same weights as an uninterrupted one. And a rank killed with SIGKILL in the
//! middle of checkpointing never leaves a checkpoint that `--resume auto` would trust.

mod common;

use common::{bin, write_config};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn mpirun(n: usize, cfg: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["-n", &n.to_string(), bin(), "pretrain", "--quiet", "--config"]).arg(cfg).args(extra);
    c
}

fn logged_steps(log: &Path) -> usize {
    std::fs::read_to_string(log).map(|s| s.lines().count()).unwrap_or(0)
}

/// PIDs of the `multimat pretrain` processes running `cfg`, with their MPI rank (from PMI_RANK in
/// /proc/PID/environ; MPICH's Hydra sets it for every rank).
fn rank_pids(cfg: &Path) -> Vec<(u32, usize)> {
    let needle = cfg.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if args.first().map(|a| a.as_str()) != Some(bin()) || !args.iter().any(|a| *a == needle) {
            continue;
        }
        let Ok(env) = std::fs::read(entry.path().join("environ")) else { continue };
        let rank = env
            .split(|&b| b == 0)
            .filter_map(|kv| std::str::from_utf8(kv).ok())
            .find_map(|kv| kv.strip_prefix("PMI_RANK="))
            .and_then(|r| r.parse().ok());
        if let Some(rank) = rank {
            out.push((pid, rank));
        }
    }
    out
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(180), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn finish(mut child: Child, what: &str) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t0.elapsed() > Duration::from_secs(240) {
            let _ = child.kill();
            panic!("{what} did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn checkpoint(dir: &Path, step: usize) -> PathBuf {
    dir.join(format!("checkpoints/step-{step:08}.safetensors"))
}

#[test]
fn sigterm_to_one_rank_stops_both_at_the_same_step_and_the_resumed_run_matches() {
    let root = tempfile::tempdir().unwrap();
    let steps = 12; // the fixture config trains 4 epochs of 3 batches
    let settings = format!("max_steps = {steps}\ncheckpoint_every = 100");

    let straight = root.path().join("straight");
    let cfg = write_config(&root.path().join("s"), &straight, &settings);
    let out = mpirun(2, &cfg, &[]).output().unwrap();
    assert!(out.status.success(), "uninterrupted run: {}", String::from_utf8_lossy(&out.stderr));

    let pre = root.path().join("pre");
    let cfg = write_config(&root.path().join("p"), &pre, &settings);
    let child = mpirun(2, &cfg, &[]).spawn().unwrap();
    let log = pre.join("metrics.jsonl");
    wait_for("the first logged steps", || logged_steps(&log) >= 2);
    let pids = rank_pids(&cfg);
    let rank1 = pids.iter().find(|p| p.1 == 1).unwrap_or_else(|| panic!("no rank-1 process among {pids:?}")).0;
    // Only rank 1 is told; rank 0 (which writes the checkpoint) must learn it through the vote.
    assert!(Command::new("kill").args(["-TERM", &rank1.to_string()]).status().unwrap().success());
    let status = finish(child, "the signalled mpirun");
    assert_eq!(status.code(), Some(75), "both ranks must exit with the requeue code");
    let done = logged_steps(&log);
    assert!(done < steps, "the run stopped early ({done} of {steps} steps)");
    assert!(checkpoint(&pre, done).exists(), "one checkpoint at the agreed stop step {done}");
    let written: Vec<_> = std::fs::read_dir(pre.join("checkpoints")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(
        written.iter().all(|n| !n.to_string_lossy().contains(".tmp")),
        "no temporary file may remain after a clean stop: {written:?}"
    );

    let out = mpirun(2, &cfg, &["--resume", "auto"]).output().unwrap();
    assert!(out.status.success(), "resumed run: {}", String::from_utf8_lossy(&out.stderr));
    let a = common::checkpoint_bytes(&checkpoint(&straight, steps));
    let b = common::checkpoint_bytes(&checkpoint(&pre, steps));
    assert!(a == b, "2 ranks preempted on one rank + resumed differ from the uninterrupted 2-rank run");
}

#[test]
fn sigkill_mid_run_never_leaves_a_checkpoint_resume_would_trust_wrongly() {
    let root = tempfile::tempdir().unwrap();
    let steps = 10;
    let settings = format!("max_steps = {steps}\ncheckpoint_every = 1");
    let straight = root.path().join("straight");
    let cfg = write_config(&root.path().join("s"), &straight, &settings);
    let out = Command::new(bin()).args(["pretrain", "--quiet", "--config"]).arg(&cfg).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let run = root.path().join("killed");
    let cfg = write_config(&root.path().join("k"), &run, &settings);
    let ckpts = run.join("checkpoints");
    // Kill at a few different moments: a checkpoint is written every step, so some kills land
    // inside a write. Every time, what is on disk must load (hash-checked) or be ignored.
    for (round, delay_ms) in [35u64, 90, 160].into_iter().enumerate() {
        let mut args = vec!["pretrain", "--quiet", "--config"];
        let cfg_s = cfg.to_string_lossy().into_owned();
        args.push(&cfg_s);
        if round > 0 {
            args.extend(["--resume", "auto"]);
        }
        let mut child = Command::new(bin()).args(&args).spawn().unwrap();
        let before = logged_steps(&run.join("metrics.jsonl"));
        // A step's metrics line is written before its checkpoint: wait for both, so that under a
        // loaded machine the first round does not kill before any checkpoint could exist.
        let checkpointed = || matches!(multimat::train::checkpoint::latest(&ckpts), Ok(Some(_)));
        wait_for("a step to be logged and checkpointed", || {
            (logged_steps(&run.join("metrics.jsonl")) > before && checkpointed()) || child.try_wait().unwrap().is_some()
        });
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let latest = multimat::train::checkpoint::latest(&ckpts).expect("listing checkpoints after SIGKILL");
        let latest = latest.expect("a complete checkpoint written before the kill is still there after it");
        assert!(latest.step() >= 1);
    }
    let out = Command::new(bin()).args(["pretrain", "--quiet", "--resume", "auto", "--config"]).arg(&cfg).output().unwrap();
    assert!(out.status.success(), "resume after SIGKILLs: {}", String::from_utf8_lossy(&out.stderr));
    let a = common::checkpoint_bytes(&checkpoint(&straight, steps));
    let b = common::checkpoint_bytes(&checkpoint(&run, steps));
    assert!(a == b, "a run killed three times and resumed differs from the uninterrupted one");
}
