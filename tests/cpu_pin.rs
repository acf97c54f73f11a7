//! Pins the CPU engine's results bit for bit: a short four-modality pre-training run's checkpoint
//! (weights and AdamW state) and a short fine-tuning run's metrics must equal the values main gave
//! before the device boundary was introduced. Any change to an op's summation order, an
//! initialisation or the data order shows here first.
//!
//! The pinned runs set, explicitly, the settings that were the defaults when the pins were taken
//! ([`PRE_REFERENCE_PRETRAIN`], [`PRE_REFERENCE_FINETUNE`]); the reference code's behaviour has been
//! the default since, and `tests/reference_defaults.rs` checks what those defaults do. So the pins
//! keep proving that the engine computes what it computed.
//!
//! The pre-training pin depends on the GEMM kernel matrixmultiply picks by CPU feature (each kernel
//! sums in its own order): one pin for x86-64 CPUs with AVX-512F, one for AVX2 + FMA without it,
//! both taken with main before the change. On other CPUs the test checks that two identical runs
//! give identical bytes, which is the property resume relies on.

mod common;
#[path = "finetune_common/mod.rs"]
mod finetune_common;

use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::Command;

/// SHA-256 over (name, shape, little-endian f32 bytes) of every tensor in the checkpoint — the
/// weights file and, beside it, the optimiser-state file (`.optim.safetensors`) — in name order.
fn checkpoint_hash(st_file: &Path) -> String {
    let optim_file = st_file.with_extension("optim.safetensors");
    let files: Vec<Vec<u8>> = [st_file, optim_file.as_path()].iter().filter(|p| p.exists()).map(|p| std::fs::read(p).unwrap()).collect();
    let parsed: Vec<safetensors::SafeTensors> = files.iter().map(|b| safetensors::SafeTensors::deserialize(b).unwrap()).collect();
    let mut tensors: Vec<(String, safetensors::tensor::TensorView)> =
        parsed.iter().flat_map(|st| st.tensors()).collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = Sha256::new();
    for (n, t) in &tensors {
        h.update(n.as_bytes());
        h.update(format!("{:?}", t.shape()).as_bytes());
        h.update(t.data());
    }
    hex::encode(h.finalize())
}

/// The pre-training pin for this CPU's GEMM kernel, if one was taken (see the module doc).
fn pretrain_pin() -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Some(PRETRAIN_PIN_AVX512);
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return Some(PRETRAIN_PIN_AVX2_FMA);
        }
    }
    None
}

/// The encoder and optimiser settings of the pinned runs: multimat's defaults before the reference
/// code's became the defaults (directed k-NN graph, legacy atom features, a DOS head, the signed-log
/// density input, AdamW β2 = 0.999 with decay on weights only).
const PRE_REFERENCE_MODEL: &[&str] = &[
    "model.encoders.potnet.undirected_local_edges=false",
    "model.encoders.potnet.atom_features=legacy",
    "optim.beta2=0.999",
    "optim.weight_decay_groups=weights_only",
];
const PRE_REFERENCE_PRETRAIN: &[&str] = &[
    "model.encoders.dos_transformer.head=true",
    "model.encoders.resnext3d.input_transform=signed_log1p",
];
/// Fine-tuning also drew its split from the run seed and standardised the targets.
const PRE_REFERENCE_FINETUNE: &[&str] = &["data.split_per_seed=true", "data.standardize=true"];

/// `--set KEY=VALUE` for every setting.
fn set_args(settings: &[&[&str]]) -> Vec<String> {
    settings.iter().flat_map(|s| s.iter()).flat_map(|kv| ["--set".to_string(), kv.to_string()]).collect()
}

fn pretrain_hash(root: &Path) -> String {
    let out = root.join("run");
    let cfg = common::write_config(root, &out, "max_steps = 4");
    let o = Command::new(common::bin())
        .args(["pretrain", "--quiet", "--config"])
        .arg(&cfg)
        .args(set_args(&[PRE_REFERENCE_MODEL, PRE_REFERENCE_PRETRAIN]))
        .output()
        .unwrap();
    assert!(o.status.success(), "pretrain failed: {}", String::from_utf8_lossy(&o.stderr));
    checkpoint_hash(&out.join("checkpoints/step-00000004.safetensors"))
}

/// Weights + optimiser state after 4 AllPairsCLIP steps of all four encoders (PotNet, DOS
/// Transformer, ResNeXt-3D, text MLP) on the real 85-material set, taken on main before the change
/// (466533e): on an Intel CPU with AVX2 + FMA, and on an AMD EPYC with AVX-512F.
const PRETRAIN_PIN_AVX2_FMA: &str = "071a5cef5eeeb0e48ff747225e06a7067f7194d83acda8817bbcd18bbac670d1";
const PRETRAIN_PIN_AVX512: &str = "1870a85a20390b066816339e2a550cc11e6fa2dbb62883767c30e1c81bc2129d";

#[test]
fn pretraining_weights_are_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let got = pretrain_hash(&dir.path().join("a"));
    if let Some(pin) = pretrain_pin() {
        assert_eq!(got, pin, "the CPU pre-training result changed");
    } else {
        assert_eq!(got, pretrain_hash(&dir.path().join("b")), "two identical runs differ");
    }
}

fn finetune_metrics(root: &Path) -> [f64; 4] {
    let out = root.join("run");
    std::fs::create_dir_all(root).unwrap();
    let cfg = finetune_common::write_ft_config(&root.join("c.toml"), &out, "epochs = 3\npatience = 0");
    let o = Command::new(finetune_common::bin())
        .args(["finetune", "--quiet", "--config"])
        .arg(&cfg)
        .args(set_args(&[PRE_REFERENCE_MODEL, PRE_REFERENCE_FINETUNE]))
        .output()
        .unwrap();
    assert!(o.status.success(), "finetune failed: {}", String::from_utf8_lossy(&o.stderr));
    let r = multimat::finetune::read_result(&out).unwrap();
    [r.val_mae, r.test_mae, r.test_rmse, r.test_r2.unwrap_or(f64::NAN)]
}

/// (val MAE, test MAE, test RMSE, test R²) in GPa of a 3-epoch PotNet K_VRH fine-tuning run on
/// 100 real matminer crystals, taken on main before the change (the same on both pinned CPUs).
const FINETUNE_PIN: [f64; 4] = [53.27948277659484, 70.58711451077231, 79.99767404920553, -0.009566366549308203];

#[test]
fn finetuning_metrics_are_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let got = finetune_metrics(&dir.path().join("a"));
    if pretrain_pin().is_some() {
        assert_eq!(got, FINETUNE_PIN, "the CPU fine-tuning result changed");
    } else {
        assert_eq!(got, finetune_metrics(&dir.path().join("b")), "two identical runs differ");
    }
}
