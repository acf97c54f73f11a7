//! `multimat config --example pretrain|finetune|sweep`: what a user copies into a file is a
//! working configuration — each printed example, saved as printed and given the data it names,
//! loads with the commands' own loader (path rule, checks) and holds the documented defaults.

use multimat::finetune::FinetuneConfig;
use multimat::sweep::SweepConfig;
use multimat::train::config::PretrainConfig;
use std::process::Command;

fn example(kind: &str) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_multimat")).args(["config", "--example", kind]).output().unwrap();
    assert!(o.status.success(), "config --example {kind}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn printed_examples_load_as_configs() {
    let dir = tempfile::tempdir().unwrap();
    let cfgs = dir.path().join("configs");
    std::fs::create_dir_all(&cfgs).unwrap();

    let text = example("pretrain");
    assert!(text.contains("# (required) Contrastive loss: clip"), "{text}");
    assert!(text.contains("batch_size = 360\n") && text.contains("temperature = 0.2\n"), "paper defaults, clean floats: {text}");
    let p = cfgs.join("pretrain.toml");
    std::fs::write(&p, &text).unwrap();
    let c = PretrainConfig::load(&p, &[]).unwrap();
    assert_eq!(c.data.shards, [cfgs.join("../runs/shards")], "the placeholder path follows the path rule (relative to the file)");
    assert_eq!(c.optim.batch_size, 360);

    let text = example("finetune");
    assert!(text.contains("# checkpoint = "), "an absent optional key is shown commented out: {text}");
    assert!(!text.contains("[model.encoders.resnext3d]"), "fine-tuning shows only crystal encoders: {text}");
    let f = cfgs.join("finetune.toml");
    std::fs::write(&f, &text).unwrap();
    let c = FinetuneConfig::load(&f, &[]).unwrap();
    assert_eq!((c.optim.batch_size, c.optim.patience, c.data.target.as_str()), (120, 50, "K_VRH"));
    assert_eq!(c.model.checkpoint, None);

    // The sweep's placeholder base is finetune.toml next to it: the file just written.
    let s = cfgs.join("sweep.toml");
    std::fs::write(&s, example("sweep")).unwrap();
    let c = SweepConfig::load(&s, &[]).unwrap();
    assert_eq!(c.base, f);
    assert_eq!(c.lrs, [1e-3, 1e-4, 1e-5]);
    let plan = multimat::sweep::plan(&c).unwrap();
    assert_eq!(plan.runs.len(), 9, "3 learning rates × 3 seeds × 1 variant");

    let bad = Command::new(env!("CARGO_BIN_EXE_multimat")).args(["config", "--example", "screen"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("pretrain"), "the error lists the kinds");
}

#[test]
fn output_piped_into_a_reader_that_stops_early_ends_quietly() {
    // `multimat config --example pretrain | head -1`: the reader goes away before the output ends.
    // The read end is closed right after the spawn, before the child has written anything.
    let mut child = Command::new(env!("CARGO_BIN_EXE_multimat"))
        .args(["config", "--example", "pretrain"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "a closed stdout made multimat panic:\n{stderr}");
}
