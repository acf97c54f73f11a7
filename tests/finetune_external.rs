//! Fine-tuning with an external test set (`data.test_shards`): training, validation and the
//! internal test set are exactly those of the same run without it; the external records are
//! predicted by the best-validation model into `predictions-external.csv`, whose MAE is the one
//! in `result.json`; ids shared with the training or validation part are counted; a sweep's
//! table carries the external metrics; bad external sets fail with a message naming them.

#[path = "finetune_common/mod.rs"]
mod finetune_common;

use finetune_common::*;
use multimat::finetune::read_result;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A K_VRH config training on the first fixture shard, with `test_shards` if given.
fn config(dir: &Path, out: &Path, test_shards: Option<&[PathBuf]>) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = write_ft_config(&dir.join("c.toml"), out, "epochs = 3\npatience = 0");
    let files = shard_files();
    let mut text = std::fs::read_to_string(&p).unwrap().replace(
        &format!("shards = [\"{}\"]", shards().display()),
        &format!("shards = [\"{}\"]", files[0].display()),
    );
    assert!(text.contains(&files[0].display().to_string()), "the fixture config changed: {text}");
    if let Some(t) = test_shards {
        let list: Vec<String> = t.iter().map(|p| format!("\"{}\"", p.display())).collect();
        text = text.replace("target = \"K_VRH\"", &format!("target = \"K_VRH\"\ntest_shards = [{}]", list.join(", ")));
    }
    std::fs::write(&p, text).unwrap();
    p
}

fn finetune(cfg: &Path) -> std::process::Output {
    Command::new(bin()).args(["finetune", "--quiet", "--config"]).arg(cfg).output().unwrap()
}

fn predictions(path: &Path) -> Vec<(String, f64, f64)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_string(), f[2].parse().unwrap(), f[3].parse().unwrap())
        })
        .collect()
}

#[test]
fn external_test_set_is_reported_beside_the_internal_one_and_changes_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let files = shard_files();
    let plain_out = dir.path().join("plain");
    let ext_out = dir.path().join("ext");
    let o = finetune(&config(&dir.path().join("a"), &plain_out, None));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = finetune(&config(&dir.path().join("b"), &ext_out, Some(&files[1..2])));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("external test set (") && stdout.contains("of 50 records; 0 also in train/val)"), "{stdout}");

    let plain = read_result(&plain_out).unwrap();
    let ext = read_result(&ext_out).unwrap();
    // Without test_shards: no field, no file.
    assert!(plain.external.is_none());
    assert!(!std::fs::read_to_string(plain_out.join("result.json")).unwrap().contains("external"));
    assert!(!plain_out.join("predictions-external.csv").exists());
    // The internal split, training and test metrics are untouched by the external set.
    assert_eq!((ext.n_train, ext.n_val, ext.n_test, ext.best_epoch), (plain.n_train, plain.n_val, plain.n_test, plain.best_epoch));
    assert_eq!((ext.val_mae, ext.test_mae, ext.test_rmse), (plain.val_mae, plain.test_mae, plain.test_rmse));
    assert_eq!(std::fs::read(ext_out.join("predictions.csv")).unwrap(), std::fs::read(plain_out.join("predictions.csv")).unwrap());

    let e = ext.external.as_ref().expect("external metrics in result.json");
    let rows = predictions(&ext_out.join("predictions-external.csv"));
    assert_eq!(e.n, rows.len());
    assert_eq!(e.records_total, 50, "the second fixture shard holds 50 materials");
    assert_eq!(e.n + e.excluded.missing_target + e.excluded.missing_crystal, e.records_total);
    assert!(e.n >= 40, "most fixture materials have K_VRH: {e:?}");
    assert_eq!(e.overlap_train_val, 0, "the two shards hold different materials");
    let mae = rows.iter().map(|(_, t, p)| (t - p).abs()).sum::<f64>() / rows.len() as f64;
    assert!((mae - e.mae).abs() <= 1e-6 * e.mae.max(1.0), "MAE from predictions-external.csv {mae} vs result.json {}", e.mae);
    let internal: Vec<String> = predictions(&ext_out.join("predictions.csv")).into_iter().map(|r| r.0).collect();
    assert!(rows.iter().all(|r| !internal.contains(&r.0)), "external ids are not the internal test ids");
    assert!(e.mae.is_finite() && e.mae_train_mean.is_finite() && e.shards == vec![files[1].display().to_string()]);

    // The training shard itself as the "external" set: its training and validation ids overlap.
    let same_out = dir.path().join("same");
    let o = finetune(&config(&dir.path().join("c"), &same_out, Some(&files[0..1])));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let same = read_result(&same_out).unwrap();
    let s = same.external.unwrap();
    assert_eq!(s.n, same.n_train + same.n_val + same.n_test);
    assert_eq!(s.overlap_train_val, same.n_train + same.n_val);
}

#[test]
fn a_bad_external_set_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-shards");
    let o = finetune(&config(&dir.path().join("a"), &dir.path().join("out"), Some(&[missing.clone()])));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("no-such-shards"), "{err}");
    let o = finetune(&config(&dir.path().join("b"), &dir.path().join("out2"), Some(&[])));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("data.test_shards is empty"), "{err}");
}

#[test]
fn a_sweep_table_carries_the_external_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let files = shard_files();
    let sweep = write_sweep(&dir.path().join("s"), &dir.path().join("out"));
    let ext = format!("data.test_shards=[\"{}\"]", files[1].display());
    let o = Command::new(bin()).args(["sweep", "--config"]).arg(&sweep).args(["--set", &ext]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv = std::fs::read_to_string(dir.path().join("out/table.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = |n: &str| header.iter().position(|h| *h == n).unwrap_or_else(|| panic!("no {n} in {csv}"));
    let plan = multimat::sweep::plan(&multimat::sweep::SweepConfig::load(&sweep, &["data.test_shards=[\"".to_string() + &files[1].display().to_string() + "\"]"]).unwrap()).unwrap();
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f[col("target")], "K_VRH");
        // The mean over seeds of the runs' external MAE at this (variant, lr).
        let runs: Vec<f64> = plan
            .runs
            .iter()
            .filter(|r| r.variant_name == f[0] && format!("{:e}", r.lr) == f[1])
            .map(|r| read_result(&r.dir).unwrap().external.unwrap().mae)
            .collect();
        assert_eq!(runs.len(), 2, "{line}");
        let mean: f64 = f[col("external_mae_mean")].parse().unwrap();
        assert!((mean - runs.iter().sum::<f64>() / 2.0).abs() < 1e-9, "{line}: {runs:?}");
        assert!(f[col("external_n")].parse::<usize>().unwrap() > 0);
    }
    let md = std::fs::read_to_string(dir.path().join("out/table.md")).unwrap();
    assert!(md.contains("External MAE"), "{md}");
}
