//! Fine-tuning under preemption, as Slurm does it: SIGUSR1 mid-run makes `multimat finetune`
//! save its state in `RUN/resume/` and exit with the requeue code 75; a plain re-run refuses to
//! start over that state; `--resume auto` continues and ends bit-identical to an uninterrupted
//! run (same best checkpoint, predictions, result and per-epoch log), and removes the state.

#[path = "finetune_common/mod.rs"]
mod finetune_common;

use finetune_common::*;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn finetune(cfg: &Path, extra: &[&str]) -> Output {
    Command::new(bin()).args(["finetune", "--quiet", "--config"]).arg(cfg).args(extra).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `metrics.jsonl` without the wall-clock field, which differs between any two runs.
fn log_without_times(run: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("epoch_time_s");
            v
        })
        .collect()
}

/// `result.json` without the wall-clock time.
fn result_without_time(run: &Path) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("result.json")).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("wall_s");
    v
}

fn best_weights(run: &Path) -> Vec<u8> {
    let best = multimat::train::checkpoint::latest(&run.join("best")).unwrap().expect("a best checkpoint");
    std::fs::read(run.join("best").join(best.meta["tensors_file"].as_str().unwrap())).unwrap()
}

#[test]
fn sigusr1_saves_the_state_exits_for_requeue_and_the_resumed_run_matches() {
    let dir = tempfile::tempdir().unwrap();
    // 60 training rows in batches of 8: 7 steps per epoch, 6 epochs (42 steps) — long enough that
    // the signal lands mid-run, wherever in an epoch it lands.
    let optim = "epochs = 6\nbatch_size = 8\npatience = 0";
    let straight = dir.path().join("straight");
    let o = finetune(&write_ft_config(&dir.path().join("s.toml"), &straight, optim), &[]);
    assert!(o.status.success(), "{}", stderr(&o));

    let run = dir.path().join("pre");
    let cfg = write_ft_config(&dir.path().join("p.toml"), &run, optim);
    let mut child = Command::new(bin()).args(["finetune", "--quiet", "--config"]).arg(&cfg).spawn().unwrap();
    let t0 = Instant::now();
    while std::fs::read_to_string(run.join("metrics.jsonl")).map(|s| s.lines().count()).unwrap_or(0) < 1 {
        assert!(t0.elapsed() < Duration::from_secs(120), "fine-tuning did not log its first epoch");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(Command::new("kill").args(["-USR1", &child.id().to_string()]).status().unwrap().success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(75), "a signalled fine-tuning run must exit with the requeue code");
    assert!(!run.join("result.json").exists(), "a stopped run is not complete");
    let state = multimat::train::checkpoint::latest(&run.join("resume")).unwrap().expect("a saved state in resume/");
    assert!(state.meta["optimizer_file"].is_string(), "the state holds the AdamW moments in their own file");
    let stopped_at = state.step();
    assert!((1..42).contains(&stopped_at), "stopped after step {stopped_at}");

    // Without --resume auto the saved state is neither ignored nor overwritten.
    let refused = finetune(&cfg, &[]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("--resume auto") && stderr(&refused).contains("resume"), "{}", stderr(&refused));
    // Another learning rate is another run: refused, naming the key.
    let other = finetune(&cfg, &["--resume", "auto", "--set", "optim.lr=1e-3"]);
    assert!(!other.status.success());
    assert!(stderr(&other).contains("optim.lr"), "{}", stderr(&other));

    let resumed = finetune(&cfg, &["--resume", "auto"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(stderr(&resumed).contains(&format!("step {stopped_at}")), "{}", stderr(&resumed));
    assert!(!run.join("resume").exists(), "the saved state is removed once the run is complete");

    assert_eq!(result_without_time(&run), result_without_time(&straight), "result.json differs from the uninterrupted run");
    assert_eq!(log_without_times(&run), log_without_times(&straight), "metrics.jsonl differs from the uninterrupted run");
    assert!(best_weights(&run) == best_weights(&straight), "the best checkpoint's weights differ from the uninterrupted run");
    assert_eq!(
        std::fs::read(run.join("predictions.csv")).unwrap(),
        std::fs::read(straight.join("predictions.csv")).unwrap(),
        "test predictions differ from the uninterrupted run"
    );
}
