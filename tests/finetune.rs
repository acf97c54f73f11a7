//! `multimat finetune` on 100 real matminer crystals (bulk modulus K_VRH, GPa): the split is
//! deterministic, disjoint and independent of record order; training beats the train-mean
//! predictor on validation; targets come back in their units; and a pre-trained crystal encoder
//! is really transferred (its first forward equals the pre-training model's crystal path).

#[path = "finetune_common/mod.rs"]
mod finetune_common;

use finetune_common::*;
use multimat::dist::Dist;
use multimat::engine::optim::{AdamW, AdamWConfig};
use multimat::engine::Module;
use multimat::finetune::split::{assign, Part};
use multimat::finetune::{self, FinetuneConfig, FinetuneModel};
use multimat::model::{Modality, StepContext};
use multimat::train::config::PretrainConfig;
use multimat::train::dataset::Dataset;
use multimat::train::model::MultiMatModel;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn run_cli(cfg: &Path, extra: &[&str]) -> (String, String) {
    let out = Command::new(bin()).args(["finetune", "--quiet", "--config"]).arg(cfg).args(extra).output().unwrap();
    let (o, e) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "finetune failed:\n{o}\n{e}");
    (o, e)
}

fn read_split(dir: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(dir.join("split.csv")).unwrap();
    text.lines().skip(1).map(|l| {
        let (id, part) = l.split_once(',').unwrap();
        (id.to_string(), part.to_string())
    }).collect()
}

#[test]
fn split_is_deterministic_disjoint_and_independent_of_record_order() {
    let ids: Vec<String> = (0..500).map(|i| format!("mp-{}", 1000 + 7 * i)).collect();
    let refs: Vec<&str> = ids.iter().map(|s| s.as_str()).collect();
    let parts = assign(&refs, 11, [0.6, 0.2, 0.2]);
    // Reversed and rotated input: every id keeps its part.
    let mut shuffled: Vec<&str> = refs.iter().rev().cloned().collect();
    shuffled.rotate_left(123);
    let again = assign(&shuffled, 11, [0.6, 0.2, 0.2]);
    let of: BTreeMap<&str, Part> = refs.iter().cloned().zip(parts.iter().cloned()).collect();
    for (id, p) in shuffled.iter().zip(&again) {
        assert_eq!(of[id], *p, "{id} changed part when the records were reordered");
    }
    assert_eq!(parts.iter().filter(|&&p| p == Part::Train).count(), 300);
    assert_eq!(parts.iter().filter(|&&p| p == Part::Val).count(), 100);
    // Another seed draws another split.
    let other = assign(&refs, 12, [0.6, 0.2, 0.2]);
    assert!(parts.iter().zip(&other).filter(|(a, b)| a != b).count() > 100);

    // Through the command: the shards listed in the opposite order give the same split.csv,
    // each id in exactly one part.
    let dir = tempfile::tempdir().unwrap();
    let files = shard_files();
    assert_eq!(files.len(), 2);
    let mut maps = Vec::new();
    for (k, order) in [[0usize, 1], [1, 0]].iter().enumerate() {
        let out = dir.path().join(format!("run{k}"));
        let cfg = write_ft_config(&dir.path().join(format!("c{k}.toml")), &out, "epochs = 1");
        let list = format!("data.shards=[\"{}\", \"{}\"]", files[order[0]].display(), files[order[1]].display());
        run_cli(&cfg, &["--set", &list]);
        maps.push(read_split(&out));
    }
    assert_eq!(maps[0], maps[1], "the split depends on the shard order");
    assert_eq!(maps[0].len(), 100);
    let count = |p: &str| maps[0].values().filter(|v| *v == p).count();
    assert_eq!((count("train"), count("val"), count("test")), (60, 20, 20));
}

#[test]
fn finetuning_beats_the_train_mean_and_reports_in_target_units() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let cfg_path = write_ft_config(&dir.path().join("c.toml"), &out, "epochs = 12\nwarmup_epochs = 2\npatience = 0");
    // Standardised targets: 36 steps cannot move a raw-unit head to K_VRH's ~100 GPa (the
    // default trains on raw units, as the reference does, over 200 epochs).
    let (stdout, stderr) = run_cli(&cfg_path, &["--set", "data.standardize=true"]);
    assert!(stderr.contains("0 missing the target"), "{stderr}");
    assert!(stdout.contains("test MAE"), "{stdout}");
    let r = finetune::read_result(&out).unwrap();
    assert_eq!((r.n_train, r.n_val, r.n_test), (60, 20, 20));
    assert_eq!((r.target.as_str(), r.units.as_str(), r.standardized), ("K_VRH", "GPa", true));
    assert_eq!(r.epochs_run, 12);
    assert!(r.val_mae < r.val_mae_train_mean, "val MAE {} is not below the train-mean predictor's {}", r.val_mae, r.val_mae_train_mean);
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 12, "one metrics line per epoch");
    let best_line: serde_json::Value = serde_json::from_str(log.lines().nth(r.best_epoch as usize - 1).unwrap()).unwrap();
    assert!(best_line["best"].as_bool().unwrap());
    assert!(best_line["val_mae"].as_f64().unwrap() - r.val_mae < 1e-9, "result is the best-validation epoch");
    assert!(out.join("best").read_dir().unwrap().count() == 2, "one best checkpoint (json + safetensors)");

    // Targets round-trip to their units: predictions.csv holds the shards' raw K_VRH values,
    // and the test MAE recomputed from it matches result.json.
    let ds = Dataset::load(&shard_files()).unwrap();
    let truth: BTreeMap<String, f64> = (0..ds.len()).map(|i| (ds.id(i).to_string(), ds.target("K_VRH", i).unwrap()[0])).collect();
    let pred = std::fs::read_to_string(out.join("predictions.csv")).unwrap();
    let mut abs = Vec::new();
    for line in pred.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let (t, p): (f64, f64) = (f[2].parse().unwrap(), f[3].parse().unwrap());
        assert_eq!(t, truth[f[0]], "{}: target not in GPa as stored", f[0]);
        abs.push((t - p).abs());
    }
    assert_eq!(abs.len(), 20);
    let mae = abs.iter().sum::<f64>() / abs.len() as f64;
    assert!((mae - r.test_mae).abs() < 1e-6 * r.test_mae.max(1.0), "{mae} vs {}", r.test_mae);

    // Raw units: metrics still in GPa; the train-mean baseline does not depend on the option.
    let raw_out = dir.path().join("raw");
    run_cli(&cfg_path, &["--set", "data.standardize=false", "--set", &format!("run.out_dir=\"{}\"", raw_out.display()), "--set", "optim.epochs=1"]);
    let raw = finetune::read_result(&raw_out).unwrap();
    assert!(!raw.standardized);
    assert_eq!(raw.val_mae_train_mean, r.val_mae_train_mean);
    // A complete run is not overwritten silently.
    let again = Command::new(bin()).args(["finetune", "--quiet", "--config"]).arg(&cfg_path).output().unwrap();
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("--force"));
}

#[test]
fn pretrained_crystal_encoder_is_transferred() {
    let dir = tempfile::tempdir().unwrap();
    let pre_out = dir.path().join("pretrain");
    let pre_cfg = dir.path().join("pretrain.toml");
    std::fs::write(
        &pre_cfg,
        format!(
            r#"
[data]
shards = ["{}"]
modalities = ["crystal", "charge_density"]
holdout_fraction = 0.0
{TINY_POTNET}
[model.encoders.resnext3d]
stages = [1]
planes = [32]
strides = [1]
cardinality = 4
stem_channels = 8

[loss]
kind = "clip"
temperature = 0.2

[optim]
lr = 3e-3
warmup_epochs = 1
batch_size = 25

[run]
out_dir = "{}"
max_steps = 2
"#,
            shards().display(),
            pre_out.display()
        ),
    )
    .unwrap();
    let st = Command::new(bin()).args(["pretrain", "--quiet", "--config"]).arg(&pre_cfg).output().unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let ckpt = pre_out.join("checkpoints/step-00000002.json");

    // The pre-training model as trained, restored from its checkpoint.
    let c = multimat::train::checkpoint::load(&ckpt).unwrap();
    let pcfg: PretrainConfig = serde_json::from_value(c.meta["config"].clone()).unwrap();
    let mut pre = MultiMatModel::new(&pcfg.data.modalities, &pcfg.model.encoders, &pcfg.loss, pcfg.model.embed_dim, 99).unwrap();
    let mut adam = AdamW::new(AdamWConfig::default());
    adam.init_state(&mut pre).unwrap();
    multimat::train::pretrain::restore(&mut pre, &mut adam, &c).unwrap();

    let ft_cfg_path = write_ft_config(&dir.path().join("ft.toml"), &dir.path().join("ft"), "");
    let mut ft_cfg = FinetuneConfig::load(&ft_cfg_path, &[]).unwrap();
    let ds = Dataset::load(&shard_files()).unwrap();
    let records: Vec<usize> = (0..12).collect();
    let batch = ds.assemble(Modality::Crystal, &records).unwrap();
    let single = Dist::single();
    let ctx = StepContext { train: false, dist: &single, comm: None, dropout_seed: 0 };

    pre.set_training(false);
    let reference = pre.encoder(Modality::Crystal).unwrap().forward(&batch, &ctx).unwrap();

    let mut scratch = FinetuneModel::new(&ft_cfg, 1, 5).unwrap();
    scratch.set_training(false);
    let fresh = scratch.encoder.forward(&batch, &ctx).unwrap();

    let mut model = FinetuneModel::new(&ft_cfg, 1, 5).unwrap();
    let info = finetune::load_pretrained_crystal(model.encoder.as_mut(), &ft_cfg, &ckpt).unwrap();
    assert!(info.tensors_loaded > 5);
    assert_eq!(info.step, 2);
    model.set_training(false);
    let transferred = model.encoder.forward(&batch, &ctx).unwrap();
    assert_eq!(transferred.shape, reference.shape);
    assert_eq!(transferred.data(), reference.data(), "transferred encoder differs from the pre-trained crystal path");
    let moved = fresh.data().iter().zip(reference.data()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(moved > 1e-3, "the scratch encoder already matched the checkpoint ({moved}); the test would prove nothing");

    // A different crystal encoder or shape is refused with a message saying what differs.
    ft_cfg.model.encoders.crystal_encoder = multimat::model::CrystalEncoderKind::Cgcnn;
    let mut cg = FinetuneModel::new(&ft_cfg, 1, 5).unwrap();
    let e = format!("{:#}", finetune::load_pretrained_crystal(cg.encoder.as_mut(), &ft_cfg, &ckpt).err().unwrap());
    assert!(e.contains("Potnet") && e.contains("Cgcnn"), "{e}");
    ft_cfg.model.encoders.crystal_encoder = multimat::model::CrystalEncoderKind::Potnet;
    ft_cfg.model.encoders.potnet.hidden = 12;
    let mut wide = FinetuneModel::new(&ft_cfg, 1, 5).unwrap();
    let e = format!("{:#}", finetune::load_pretrained_crystal(wide.encoder.as_mut(), &ft_cfg, &ckpt).err().unwrap());
    assert!(e.contains("hidden: 12") && e.contains("hidden: 8"), "{e}");

    // A checkpoint written before the reference defaults (no undirected_local_edges or
    // atom_features in its config) was trained with the directed graph and legacy features: it
    // is refused for the new defaults, naming them, and loads when the config asks for those.
    ft_cfg.model.encoders.potnet.hidden = 8;
    let old_dir = dir.path().join("old-checkpoint");
    std::fs::create_dir_all(&old_dir).unwrap();
    let mut meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&ckpt).unwrap()).unwrap();
    for key in ["undirected_local_edges", "atom_features"] {
        meta["config"]["model"]["encoders"]["potnet"].as_object_mut().unwrap().remove(key).unwrap();
    }
    let old_ckpt = old_dir.join("step-00000002.json");
    std::fs::write(&old_ckpt, serde_json::to_string(&meta).unwrap()).unwrap();
    std::fs::copy(ckpt.with_extension("safetensors"), old_ckpt.with_extension("safetensors")).unwrap();
    std::fs::copy(ckpt.with_extension("optim.safetensors"), old_ckpt.with_extension("optim.safetensors")).unwrap();
    let mut fresh_model = FinetuneModel::new(&ft_cfg, 1, 5).unwrap();
    let e = format!("{:#}", finetune::load_pretrained_crystal(fresh_model.encoder.as_mut(), &ft_cfg, &old_ckpt).err().unwrap());
    assert!(e.contains("undirected_local_edges: false") && e.contains("atom_features: Legacy"), "{e}");
    ft_cfg.model.encoders.potnet.undirected_local_edges = false;
    ft_cfg.model.encoders.potnet.atom_features = multimat::crystal::features::AtomFeatureEncoding::Legacy;
    let mut legacy_model = FinetuneModel::new(&ft_cfg, 1, 5).unwrap();
    finetune::load_pretrained_crystal(legacy_model.encoder.as_mut(), &ft_cfg, &old_ckpt).unwrap();

    // And the command fine-tunes from it, recording the checkpoint.
    let out = dir.path().join("ft");
    run_cli(&ft_cfg_path, &["--checkpoint", ckpt.to_str().unwrap(), "--set", "optim.epochs=1"]);
    let r = finetune::read_result(&out).unwrap();
    assert_eq!(r.checkpoint_sha256.as_deref(), c.meta["tensors_sha256"].as_str());
}
