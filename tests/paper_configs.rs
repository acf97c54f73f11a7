//! The paper's recipes in `configs/paper/` parse and validate, and say what the paper says: one
//! pre-training per Table 1 row (loss and modalities matching the row) plus the Fig. 3 model, at
//! the paper's hyper-parameters with full-size encoders that fit an 80 GiB GPU; fine-tuning bases
//! at the paper's settings; sweeps whose variants are exactly Table 1's rows, each MultiMat row
//! fine-tuning the checkpoint of the pre-training config for that row. Also the default config of
//! `sbatch slurm/pretrain.sh` points at the demo's shards, not developer-only files.

use multimat::finetune::FinetuneConfig;
use multimat::loss::{LossKind, Modality};
use multimat::model::config::EncodersConfig;
use multimat::sweep::{self, table1::PAPER_ROWS, SweepConfig};
use multimat::engine::optim::WeightDecayGroups;
use multimat::train::config::{PretrainConfig, PRE_REFERENCE_FINETUNE_SETTINGS, PRE_REFERENCE_SETTINGS};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn files(prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join("configs/paper"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(prefix) && p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v
}

/// Table 1's row label for a pre-training: modalities, and the loss for three or more.
fn row_label(c: &PretrainConfig) -> String {
    let name = |m: &Modality| match m {
        Modality::Crystal => "Crystal",
        Modality::Dos => "DOS",
        Modality::ChargeDensity => "charge density",
        Modality::Text => "text",
    };
    let mods: Vec<&str> = c.data.modalities.iter().map(name).collect();
    let mods = mods.join(", ");
    match c.loss.kind {
        LossKind::Clip => mods,
        LossKind::AllPairsClip => format!("{mods} / AllPairsCLIP"),
        LossKind::AnchoredClip => format!("{mods} / AnchoredCLIP"),
        other => panic!("Table 1 has no {other:?} row"),
    }
}

#[test]
fn pretraining_configs_cover_table_1_and_fig_3_at_the_papers_settings() {
    let full = EncodersConfig::default();
    let mut rows: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut fig3 = None;
    for f in files("pretrain-") {
        let c = PretrainConfig::load_settings(&f, &[]).unwrap_or_else(|e| panic!("{}: {e:#}", f.display()));
        let what = f.display();
        assert_eq!(c.data.modalities[0], Modality::Crystal, "{what}: C is always chosen");
        assert_eq!((c.optim.lr, c.optim.weight_decay, c.optim.warmup_epochs, c.optim.epochs), (1e-4, 5e-4, 10.0, 500), "{what}");
        assert_eq!((c.model.embed_dim, c.loss.temperature, c.loss.learnable_temperature), (128, 0.2, false), "{what}");
        // The reference code's AdamW where the paper is silent: β = (0.9, 0.95), every parameter decayed.
        assert_eq!((c.optim.beta1, c.optim.beta2, c.optim.weight_decay_groups), (0.9, 0.95, WeightDecayGroups::All), "{what}");
        if c.loss.kind == LossKind::AnchoredClip {
            assert_eq!(c.loss.anchor, Modality::Crystal, "{what}");
        }
        // Full-size encoders: the mission's reference sizes, which are multimat's defaults.
        let e = &c.model.encoders;
        assert_eq!(e.potnet, full.potnet, "{what}");
        for m in &c.data.modalities {
            match m {
                Modality::Dos => assert_eq!(e.dos_transformer, full.dos_transformer, "{what}"),
                Modality::ChargeDensity => assert_eq!(e.resnext3d, full.resnext3d, "{what}"),
                Modality::Text => assert_eq!(e.text_mlp, full.text_mlp, "{what}"),
                Modality::Crystal => {}
            }
        }
        // One rank's share of the global batch (8 GPUs) fits an 80 GiB GPU by the estimate.
        multimat::model::memory_estimate::check_fits(&c.data.modalities, e, 128, c.optim.batch_size.div_ceil(8), Some(80.0 * (1u64 << 30) as f64))
            .unwrap_or_else(|err| panic!("{what}: {err:#}"));
        let out = c.run.out_dir.clone();
        assert!(out.starts_with(repo().join("configs/paper/../../runs/paper/pretrain")), "{what}: out_dir {}", out.display());
        if f.file_name().unwrap().to_str().unwrap().contains("fig3") {
            assert_eq!((c.optim.batch_size, c.data.holdout_fraction), (100, 0.2), "{what}: Fig. 3 uses batch 100 and an 80/20 split");
            assert_eq!(row_label(&c), "Crystal, DOS, charge density / AnchoredCLIP");
            fig3 = Some(f.clone());
            continue;
        }
        assert_eq!((c.optim.batch_size, c.data.holdout_fraction), (360, 0.0), "{what}");
        if let Some(prev) = rows.insert(row_label(&c), out) {
            panic!("{what}: a second config for row {:?} (also {})", row_label(&c), prev.display());
        }
    }
    assert!(fig3.is_some(), "no Fig. 3 config");
    let expected: Vec<&str> = PAPER_ROWS.iter().skip(2).map(|r| r.0).collect(); // all but CGCNN, PotNet
    let mut got: Vec<&str> = rows.keys().map(String::as_str).collect();
    got.sort_unstable();
    let mut want = expected.clone();
    want.sort_unstable();
    assert_eq!(got, want, "one pre-training config per MultiMat row of Table 1");
}

#[test]
fn sweeps_are_table_1_columns_with_its_rows_and_the_matching_checkpoints() {
    // Row label → pre-training run directory, from the pre-training configs.
    let mut pretrain_dirs: BTreeMap<String, PathBuf> = BTreeMap::new();
    for f in files("pretrain-").into_iter().filter(|f| !f.to_str().unwrap().contains("fig3")) {
        let c = PretrainConfig::load_settings(&f, &[]).unwrap();
        pretrain_dirs.insert(row_label(&c), c.run.out_dir);
    }
    let sweeps = files("sweep-");
    let mut targets = Vec::new();
    for f in &sweeps {
        let what = f.display();
        let cfg = SweepConfig::load(f, &[]).unwrap_or_else(|e| panic!("{what}: {e:#}"));
        assert_eq!((cfg.lrs.clone(), cfg.seeds.clone()), (vec![1e-3, 1e-4, 1e-5], vec![0, 1, 2]), "{what}");
        let names: Vec<&str> = cfg.variants.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, PAPER_ROWS.iter().map(|r| r.0).collect::<Vec<_>>(), "{what}: the variants are Table 1's rows");
        for v in &cfg.variants {
            match v.name.as_str() {
                "CGCNN" | "PotNet" => assert!(v.checkpoint.is_none(), "{what}: {} is trained from scratch", v.name),
                row => assert_eq!(v.checkpoint.as_ref(), Some(&pretrain_dirs[row]), "{what}: {row} must fine-tune its own pre-training"),
            }
        }
        let base = FinetuneConfig::load_settings(&cfg.base, &[]).unwrap();
        assert_eq!((base.optim.batch_size, base.optim.weight_decay, base.optim.warmup_epochs, base.data.split), (120, 0.0, 10.0, [0.6, 0.2, 0.2]), "{what}");
        assert_eq!(base.model.encoders.potnet, EncodersConfig::default().potnet, "{what}: the pre-trained PotNet must load");
        assert_eq!(base.model.embed_dim, 128, "{what}");
        // The reference's fine-tuning where the paper is silent: one split for all seeds, raw units.
        assert_eq!((base.data.split_per_seed, base.data.split_seed, base.data.standardize), (false, None, false), "{what}");
        assert_eq!((base.optim.beta2, base.optim.weight_decay_groups), (0.95, WeightDecayGroups::All), "{what}");
        targets.push(base.data.target.clone());
        // Every one of the 13 × 3 × 3 runs resolves to a valid configuration.
        let report = sweep::check(&cfg).unwrap_or_else(|e| panic!("{what}: {e:#}"));
        assert_eq!(report.runs, 13 * 9, "{what}");
    }
    targets.sort();
    assert_eq!(targets, ["G_VRH", "K_VRH", "band_gap_hse", "elastic_tensor"], "one sweep per Table 1 column");

    // The CLI's dry validation says the same and names the missing checkpoints.
    let o = Command::new(env!("CARGO_BIN_EXE_multimat")).args(["sweep", "--check", "--config"]).arg(&sweeps[0]).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("117 runs, every configuration valid"), "{stdout}");
}

#[test]
fn a_broken_sweep_is_refused_by_the_check_naming_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let src = repo().join("configs/paper/sweep-bulk.toml");
    let text = std::fs::read_to_string(&src).unwrap().replace("base = \"finetune-bulk.toml\"", &format!("base = \"{}\"", repo().join("configs/paper/finetune-bulk.toml").display()));
    let bad = text.replace("seeds = [0, 1, 2]", "seeds = [0, 1, 2]\nset = [\"optim.batch_size=1\"]");
    std::fs::write(dir.path().join("s.toml"), bad).unwrap();
    let cfg = SweepConfig::load(&dir.path().join("s.toml"), &[]).unwrap();
    let err = format!("{:#}", sweep::check(&cfg).unwrap_err());
    assert!(err.contains("variant \"CGCNN\"") && err.contains("batch_size"), "{err}");
}

#[test]
fn the_default_slurm_job_trains_on_the_demos_shards() {
    let script = std::fs::read_to_string(repo().join("slurm/pretrain.sh")).unwrap();
    assert!(script.contains("DEFAULT_CONFIG=configs/slurm-demo-pretrain.toml"), "slurm/pretrain.sh's default changed");
    let c = PretrainConfig::load(&repo().join("configs/slurm-demo-pretrain.toml"), &[]).unwrap();
    assert_eq!(c.data.shards, vec![multimat::train::config::absolute_from(&repo().join("configs"), Path::new("../demo-out/shards"))]);
    // The script's ingest writes where the config reads, with the demo's options.
    assert!(script.contains("--out demo-out/shards") && script.contains("--approx-charge-density --approx-dos"), "{script}");
    assert!(c.data.modalities.iter().all(|m| *m != Modality::Text), "text needs a model the bootstrap may not have");
}

/// Every config the project ships (configs/ and configs/paper/) uses the reference code's
/// defaults: none sets a pre-reference value, the signed-log density input, β2 = 0.999 or
/// standardised fine-tuning targets.
#[test]
fn shipped_configs_use_the_reference_defaults() {
    let old_values: Vec<(&str, toml::Value)> = PRE_REFERENCE_SETTINGS
        .iter()
        .chain(PRE_REFERENCE_FINETUNE_SETTINGS)
        .map(|(k, v)| (*k, serde_json::from_str::<toml::Value>(v).unwrap()))
        .chain([
            ("model.encoders.resnext3d.input_transform", toml::Value::String("signed_log1p".into())),
            ("optim.beta2", toml::Value::Float(0.999)),
            ("data.standardize", toml::Value::Boolean(true)),
        ])
        .collect();
    let mut checked = 0;
    for dir in ["configs", "configs/paper"] {
        for entry in std::fs::read_dir(repo().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let value: toml::Value = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            for (key, old) in &old_values {
                let got = key.split('.').try_fold(&value, |v, part| v.get(part));
                assert!(got != Some(old), "{}: {key} = {old} is the pre-reference setting", path.display());
            }
            checked += 1;
        }
    }
    assert!(checked >= 25, "only {checked} configs found");
}
