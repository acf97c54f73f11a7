//! Faults around a run directory, with the real binary on the real 85-material shards: a second
//! run on a busy `out_dir` is refused, a killed run's lock is taken over, resuming under another
//! config is refused naming the keys, the log holds each step once after a resume from an older
//! checkpoint, and a directory whose checkpoints are all damaged is never silently restarted.

mod common;

use common::{bin, write_config};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn pretrain(config: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .args(["pretrain", "--quiet", "--config"])
        .arg(config)
        .args(args)
        .env_remove("SLURM_JOB_ID")
        .output()
        .unwrap()
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "pretrain failed: {}", String::from_utf8_lossy(&o.stderr));
    o
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// (step, loss) of every line of metrics.jsonl.
fn logged(out_dir: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(out_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap())
        })
        .collect()
}

#[test]
fn a_busy_out_dir_is_refused_and_a_killed_runs_lock_is_taken_over() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("run");
    let cfg = write_config(root.path(), &out, "max_steps = 400");
    let mut first = Command::new(bin())
        .args(["pretrain", "--quiet", "--config"])
        .arg(&cfg)
        .env_remove("SLURM_JOB_ID")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lock = out.join("run.lock");
    let t = Instant::now();
    while !lock.exists() {
        assert!(t.elapsed() < Duration::from_secs(60), "the first run never took its lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = pretrain(&cfg, &["--resume", "auto"]);
    let msg = stderr(&second);
    assert!(!second.status.success(), "a second run on a busy out_dir must be refused");
    assert!(msg.contains("in use by another run") && msg.contains(&first.id().to_string()), "{msg}");

    // SIGKILL leaves the lock behind; the next run sees its owner is gone and takes it over.
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(lock.exists());
    // Whether or not the killed run got to a checkpoint, `--resume auto` with one step to go
    // either continues it (nothing left to do) or trains that step.
    let third = ok(pretrain(&write_config(&root.path().join("short"), &out, "max_steps = 1"), &["--resume", "auto"]));
    assert!(stderr(&third).contains("removing a stale run lock"), "{}", stderr(&third));
    assert!(!lock.exists(), "a finished run must release its lock");
}

#[test]
fn resume_refuses_another_config_and_the_log_holds_each_step_once() {
    let root = tempfile::tempdir().unwrap();
    let straight = root.path().join("straight");
    ok(pretrain(&write_config(&root.path().join("s"), &straight, "max_steps = 4\ncheckpoint_every = 2"), &[]));
    let reference = logged(&straight);
    assert_eq!(reference.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2, 3, 4]);

    // A run killed after step 4 whose last checkpoint is lost: it resumes from step 2.
    let run = root.path().join("run");
    ok(pretrain(&write_config(&root.path().join("a"), &run, "max_steps = 4\ncheckpoint_every = 2"), &[]));
    for ext in ["json", "safetensors"] {
        std::fs::remove_file(run.join(format!("checkpoints/step-00000004.{ext}"))).unwrap();
    }
    // Another learning rate is another run: refused, naming the key and both values.
    let cfg_lr = write_config(&root.path().join("b"), &run, "max_steps = 4\ncheckpoint_every = 2");
    let text = std::fs::read_to_string(&cfg_lr).unwrap().replace("lr = 3e-3", "lr = 1e-3");
    std::fs::write(&cfg_lr, text).unwrap();
    let refused = pretrain(&cfg_lr, &["--resume", "auto"]);
    let msg = stderr(&refused);
    assert!(!refused.status.success(), "resuming under another learning rate must be refused");
    assert!(msg.contains("optim.lr") && msg.contains("0.003") && msg.contains("0.001"), "{msg}");

    // The run length may change: resumed from step 2 to 4, the log holds steps 1..4 once each,
    // with the straight run's losses.
    let resumed = ok(pretrain(&write_config(&root.path().join("c"), &run, "max_steps = 4\ncheckpoint_every = 3"), &["--resume", "auto"]));
    assert!(stderr(&resumed).contains("removed 2 line(s) logged after step 2"), "{}", stderr(&resumed));
    assert_eq!(logged(&run), reference, "the log after a resume from an older checkpoint");
}

#[test]
fn all_checkpoints_damaged_is_an_error_not_a_fresh_start() {
    let root = tempfile::tempdir().unwrap();
    let run = root.path().join("run");
    let cfg = write_config(root.path(), &run, "max_steps = 2\ncheckpoint_every = 1");
    ok(pretrain(&cfg, &[]));
    for step in [1, 2] {
        let p = run.join(format!("checkpoints/step-{step:08}.safetensors"));
        let mut b = std::fs::read(&p).unwrap();
        let n = b.len();
        b[n - 1] ^= 0xff;
        std::fs::write(&p, b).unwrap();
    }
    let cfg_more = write_config(&root.path().join("more"), &run, "max_steps = 3");
    let auto = pretrain(&cfg_more, &["--resume", "auto"]);
    let msg = stderr(&auto);
    assert!(!auto.status.success(), "every checkpoint damaged: the run must stop, not start over");
    assert!(msg.contains("none is usable") && msg.contains("step-00000001") && msg.contains("step-00000002"), "{msg}");
    let fresh = pretrain(&cfg_more, &["--resume", "no"]);
    assert!(!fresh.status.success() && stderr(&fresh).contains("already holds checkpoints"), "{}", stderr(&fresh));
    assert_eq!(logged(&run).len(), 2, "the refused runs must not touch the log");
}
