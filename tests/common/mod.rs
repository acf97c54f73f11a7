//! Shared fixtures of the pre-training tests: real shards made once, tiny configurations.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_multimat")
}

pub mod checkpoints;

#[path = "fixture_dir.rs"]
mod fixture_dir_impl;
pub use fixture_dir_impl::fixture_dir;

pub fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data")
}

/// Shards of the 85 real materials with an 8³ density grid (small encoders, fast test), made once.
pub fn shards() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = fixture_dir("multimat-pretrain-test");
        let out = dir.join("shards");
        let st = Command::new(bin())
            .args(["ingest", "--quiet", "--density-grid", "8", "--mp-multimodal"])
            .arg(data().join("mp-multimodal"))
            .arg("--texts")
            .arg(data().join("text/mp-multimodal-robocrys.jsonl"))
            .arg("--out")
            .arg(&out)
            .status()
            .unwrap();
        assert!(st.success(), "ingest failed");
        out
    })
}

/// A tiny configuration: all four modalities, small encoders, AllPairsCLIP.
pub fn write_config(dir: &Path, out_dir: &Path, extra: &str) -> PathBuf {
    write_config_with_modalities(dir, out_dir, r#""crystal", "dos", "charge_density", "text""#, extra)
}

/// [`write_config`] with the given `data.modalities` (TOML array items, quoted).
pub fn write_config_with_modalities(dir: &Path, out_dir: &Path, modalities: &str, extra: &str) -> PathBuf {
    let cfg = format!(
        r#"
[data]
shards = ["{shards}"]
modalities = [{modalities}]
holdout_fraction = 0.0

[model]
embed_dim = 16

[model.encoders.potnet]
hidden = 16
conv_layers = 1

[model.encoders.dos_transformer]
dim = 16
layers = 1
heads = 2
head_size = 8
ffn_dim = 32

[model.encoders.resnext3d]
stages = [1]
planes = [32]
strides = [1]
cardinality = 4
stem_channels = 8

[model.encoders.text_mlp]
hidden = [32]

[loss]
kind = "all_pairs_clip"
temperature = 0.2

[optim]
lr = 3e-3
warmup_epochs = 1
epochs = 4
batch_size = 24

[run]
out_dir = "{out}"
seed = 3
keep_last = 0
{extra}
"#,
        shards = shards().display(),
        out = out_dir.display()
    );
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join("config.toml");
    std::fs::write(&p, cfg).unwrap();
    p
}


/// Every step's loss in a run's `metrics.jsonl`, in logged order.
pub fn losses(out_dir: &Path) -> Vec<f64> {
    std::fs::read_to_string(out_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap())
        .collect()
}

/// The bytes of a checkpoint's weights file followed by those of its optimiser-state file (when
/// there is one): equal exactly when the weights and the AdamW state are both bit-identical.
#[allow(dead_code)]
pub fn checkpoint_bytes(weights_file: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(weights_file).unwrap_or_else(|e| panic!("reading {}: {e}", weights_file.display()));
    let optim = weights_file.with_extension("optim.safetensors");
    if optim.exists() {
        bytes.extend(std::fs::read(&optim).unwrap());
    }
    bytes
}
