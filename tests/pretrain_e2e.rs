//! End-to-end pre-training with the real `multimat` binary on shards ingested from the real
//! mp-multimodal set (85 materials, DFT DOS and charge densities): the loss falls, outputs are
//! complete, and a resumed run is bit-identical to an uninterrupted one.

mod common;

use common::{bin, checkpoint_bytes, losses, write_config};
use std::path::Path;
use std::process::Command;

fn run_pretrain(config: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(bin()).args(["pretrain", "--quiet", "--config"]).arg(config).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "pretrain failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn four_modalities_train_and_resume_is_bit_identical() {
    let root = tempfile::tempdir().unwrap();
    // Straight: 6 steps (3 per epoch × 2 epochs via max_steps).
    let straight = root.path().join("straight");
    let cfg = write_config(root.path(), &straight, "max_steps = 6");
    run_pretrain(&cfg, &[]);
    let l = losses(&straight);
    assert_eq!(l.len(), 6);
    assert!(l.iter().all(|v| v.is_finite()));
    assert!(straight.join("config.resolved.toml").exists());
    assert!(straight.join("retrieval.json").exists());

    // Interrupted: 3 steps, then resume to 6.
    let split = root.path().join("split");
    let cfg_a = write_config(&root.path().join("a"), &split, "max_steps = 3");
    run_pretrain(&cfg_a, &[]);
    let cfg_b = write_config(&root.path().join("b"), &split, "max_steps = 6");
    let refused = Command::new(bin()).args(["pretrain", "--quiet", "--config"]).arg(&cfg_b).output().unwrap();
    assert!(!refused.status.success(), "a fresh start over existing checkpoints must be refused");
    run_pretrain(&cfg_b, &["--resume", "auto"]);
    let a = checkpoint_bytes(&straight.join("checkpoints/step-00000006.safetensors"));
    let b = checkpoint_bytes(&split.join("checkpoints/step-00000006.safetensors"));
    assert!(a == b, "weights and optimiser state after 6 steps differ between straight and resumed runs");
    assert_eq!(losses(&split), l, "the resumed run must log the same losses");
}

#[test]
fn loss_falls_and_retrieval_beats_chance_on_the_training_set() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("run");
    // Two modalities with the cheap encoders, many steps: the model must learn the pairing.
    let cfg = write_config(root.path(), &out, "").to_string_lossy().into_owned();
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "modalities = [\"crystal\", \"dos\", \"charge_density\", \"text\"]",
        "modalities = [\"crystal\", \"text\"]",
    );
    std::fs::write(&cfg, text).unwrap();
    run_pretrain(Path::new(&cfg), &["--set", "optim.epochs=20", "--set", "optim.batch_size=32"]);
    let l = losses(&out);
    let head: f64 = l[..3].iter().sum::<f64>() / 3.0;
    let tail: f64 = l[l.len() - 3..].iter().sum::<f64>() / 3.0;
    assert!(tail < 0.85 * head, "loss did not fall: first {head:.3}, last {tail:.3}");
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("retrieval.json")).unwrap()).unwrap();
    let pair = &r["pairs"][0];
    let top5 = pair["top_k"][1][1].as_f64().unwrap();
    let chance5 = pair["chance"][1][1].as_f64().unwrap();
    assert!(top5 > 3.0 * chance5, "top-5 retrieval {top5} not well above chance {chance5}: {pair}");
}

#[test]
fn bad_config_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let cfg = write_config(root.path(), &root.path().join("o"), "");
    let out = Command::new(bin())
        .args(["pretrain", "--quiet", "--config"])
        .arg(&cfg)
        .args(["--set", "optim.batch_size=1000"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("fewer than one batch"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn sigusr1_checkpoints_exits_for_requeue_and_the_resumed_run_matches() {
    let root = tempfile::tempdir().unwrap();
    let straight = root.path().join("straight");
    let cfg = write_config(&root.path().join("s"), &straight, "max_steps = 12\ncheckpoint_every = 100");
    run_pretrain(&cfg, &[]);

    let pre = root.path().join("pre");
    let cfg = write_config(&root.path().join("p"), &pre, "max_steps = 12\ncheckpoint_every = 100");
    let mut child = Command::new(bin()).args(["pretrain", "--quiet", "--config"]).arg(&cfg).spawn().unwrap();
    // Signal once the first steps are logged, as Slurm would before the time limit.
    let log = pre.join("metrics.jsonl");
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(&log).map(|s| s.lines().count()).unwrap_or(0) < 2 {
        assert!(t0.elapsed().as_secs() < 120, "pre-training did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let kill = Command::new("kill").args(["-USR1", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(75), "a signalled run must exit with the requeue code");
    let done = std::fs::read_to_string(&log).unwrap().lines().count();
    assert!(done < 12, "the run stopped early ({done} steps)");
    assert!(pre.join(format!("checkpoints/step-{done:08}.json")).exists(), "checkpoint at the stop step");

    // The requeued job resumes and ends exactly where the uninterrupted one did.
    run_pretrain(&cfg, &["--resume", "auto"]);
    let a = checkpoint_bytes(&straight.join("checkpoints/step-00000012.safetensors"));
    let b = checkpoint_bytes(&pre.join("checkpoints/step-00000012.safetensors"));
    assert!(a == b, "preempted + resumed run differs from the uninterrupted one");
}
