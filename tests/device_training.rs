//! Whole training steps on the `cuda-sim` device (the CUDA kernels and the cuBLAS descriptors
//! executed on the CPU) against the CPU device, through the commands a user runs:
//! - pre-training, PotNet + DOS Transformer + text MLP with AllPairsCLIP: the losses of every
//!   step and the final weights agree within the stated tolerances;
//! - the simulator run is deterministic, and an interrupted run resumed from its checkpoint
//!   ends bit-identical to the uninterrupted one on the same device;
//! - fine-tuning (PotNet + linear head, MSE): the validation and test metrics agree.
//! (The four-modality step with the charge-density ResNeXt is in tests/device_resnext.rs.)
//!
//! Tolerances (why they are not zero): the device kernels sum in other orders than the CPU
//! reference (block reductions in layer norm, attention, segment sums, the fused InfoNCE), so
//! single ops differ by a few ulp and the losses by ~1e-8 relative. AdamW divides by √v, so a
//! parameter whose gradient is mathematically zero — a bias right before a batch norm, which
//! removes it — moves by ±lr in the direction of its rounding noise, on either device. Weights
//! are therefore compared entry by entry where the gradient is real (AdamW's √v above 1e-7 on
//! the CPU), and the noise-driven entries are counted, not compared.

mod common;
use common::checkpoints::{ckpt, tensors, weight_difference};
use common::losses;
#[path = "finetune_common/mod.rs"]
mod finetune_common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Relative tolerance on each step's loss.
const LOSS_RTOL: f64 = 1e-4;
/// Largest |w_sim − w_cpu| after two steps (lr 3e-3) over entries with a real gradient
/// (measured: 1.5e-6).
const WEIGHT_ATOL: f32 = 2e-5;
/// Relative tolerance on fine-tuning metrics (MAE, RMSE in GPa).
const METRIC_RTOL: f64 = 1e-3;

fn pretrain_config(dir: &Path, out: &Path, extra: &str, modalities: &str) -> PathBuf {
    common::write_config_with_modalities(dir, out, modalities, &format!("checkpoint_every = 1\n{extra}"))
}

const THREE: &str = r#""crystal", "dos", "text""#;

/// Runs at AdamW β2 = 0.999: `weight_difference` tells real gradients from rounding noise by
/// the (not bias-corrected) second moment against `NOISE_RMS`, calibrated at that β2. At the
/// default 0.95 the moment after two steps is ~7× larger, so the pure-noise gradient of a bias
/// before a BatchNorm (`mlp_a.1.bias`) counts as real, and Adam turns its noise into ±lr steps.
fn pretrain(config: &Path, args: &[&str]) -> std::process::Output {
    let o = Command::new(common::bin())
        .args(["pretrain", "--quiet", "--config"])
        .arg(config)
        .args(["--set", "optim.beta2=0.999"])
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "pretrain {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    o
}

#[test]
fn a_pretraining_run_on_cuda_sim_matches_the_cpu_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (cpu, sim, sim_a) = (dir.path().join("cpu"), dir.path().join("sim"), dir.path().join("sim-a"));
    pretrain(&pretrain_config(&dir.path().join("c-cpu"), &cpu, "max_steps = 2", THREE), &["--device", "cpu"]);
    let o = pretrain(&pretrain_config(&dir.path().join("c-sim"), &sim, "max_steps = 2", THREE), &["--device", "cuda-sim"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("device cuda-sim"), "the run names its device");

    let (lc, ls) = (losses(&cpu), losses(&sim));
    assert_eq!(lc.len(), 2);
    assert_eq!(ls.len(), 2);
    for (step, (a, b)) in lc.iter().zip(&ls).enumerate() {
        assert!((a - b).abs() <= LOSS_RTOL * a.abs(), "step {}: loss {b} on cuda-sim vs {a} on the CPU", step + 1);
    }
    // The weights after two steps, device vs CPU, where the gradients are real.
    let (worst, compared, noise) = weight_difference(&ckpt(&cpu, 2), &ckpt(&sim, 2));
    assert!(noise * 5 < compared, "{noise} of {} weights have noise-level gradients: the comparison would say little", compared + noise);
    assert!(worst <= WEIGHT_ATOL, "cuda-sim weights differ from the CPU's by up to {worst:.3e} after two steps (tolerance {WEIGHT_ATOL:.0e})");
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(sim.join("checkpoints/step-00000002.json")).unwrap()).unwrap();
    assert_eq!(meta["device"], "cuda-sim", "the checkpoint records its device");

    // One step, then a resumed second step: the same bytes as the uninterrupted device run.
    let cfg_a = pretrain_config(&dir.path().join("c-sim-a"), &sim_a, "max_steps = 1", THREE);
    pretrain(&cfg_a, &["--device", "cuda-sim"]);
    let cfg_b = pretrain_config(&dir.path().join("c-sim-b"), &sim_a, "max_steps = 2", THREE);
    pretrain(&cfg_b, &["--device", "cuda-sim", "--resume", "auto"]);
    assert_eq!(tensors(&ckpt(&sim_a, 1)), tensors(&ckpt(&sim, 1)), "the same step on the device twice gives the same bytes");
    assert_eq!(tensors(&ckpt(&sim_a, 2)), tensors(&ckpt(&sim, 2)), "the resumed device run differs from the uninterrupted one");
}

#[test]
fn an_unknown_device_is_refused_when_the_flags_are_read() {
    let o = Command::new(common::bin()).args(["pretrain", "--config", "x.toml", "--device", "tpu"]).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("unknown device") && err.contains("cuda-sim"), "{err}");
}

fn finetune(root: &Path, device: &str) -> multimat::finetune::FinetuneResult {
    let out = root.join("run");
    std::fs::create_dir_all(root).unwrap();
    let cfg = finetune_common::write_ft_config(&root.join("c.toml"), &out, "epochs = 2\npatience = 0");
    let o = Command::new(finetune_common::bin()).args(["finetune", "--quiet", "--device", device, "--config"]).arg(&cfg).output().unwrap();
    assert!(o.status.success(), "finetune on {device} failed: {}", String::from_utf8_lossy(&o.stderr));
    multimat::finetune::read_result(&out).unwrap()
}

#[test]
fn fine_tuning_on_cuda_sim_matches_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let cpu = finetune(&dir.path().join("cpu"), "cpu");
    let sim = finetune(&dir.path().join("sim"), "cuda-sim");
    assert_eq!((cpu.n_train, cpu.n_val, cpu.n_test), (sim.n_train, sim.n_val, sim.n_test));
    for (name, a, b) in [("val MAE", cpu.val_mae, sim.val_mae), ("test MAE", cpu.test_mae, sim.test_mae), ("test RMSE", cpu.test_rmse, sim.test_rmse)] {
        assert!((a - b).abs() <= METRIC_RTOL * a.abs(), "{name}: {b} on cuda-sim vs {a} on the CPU");
    }
}
