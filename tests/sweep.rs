//! `multimat sweep`: stable run ids, skipping complete runs, array-task partitions that cover the
//! grid exactly once (real tiny runs on 60 matminer crystals), aggregation that equals a
//! hand computation on fabricated result.json files, and a sweep task on `--device cuda-sim`
//! stopped by SIGUSR1 (state saved, exit 75, no further run) that continues when run again.

#[path = "finetune_common/mod.rs"]
mod finetune_common;

use finetune_common::*;
use multimat::finetune::{Excluded, FinetuneResult};
use multimat::sweep::{self, SweepConfig};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn sweep_cli(cfg: &Path, extra: &[&str]) -> (String, String) {
    let out = Command::new(bin()).args(["sweep", "--config"]).arg(cfg).args(extra).output().unwrap();
    let (o, e) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "sweep {extra:?} failed:\n{o}\n{e}");
    (o, e)
}

fn fake_result(val: f64, test: f64) -> FinetuneResult {
    FinetuneResult {
        target: "K_VRH".into(), units: "GPa".into(), target_width: 1, standardized: true, crystal_encoder: "potnet".into(),
        checkpoint: None, checkpoint_sha256: None, seed: 0, split_seed: 0, lr: 0.0, records_total: 100,
        excluded: Excluded::default(), n_train: 60, n_val: 20, n_test: 20, epochs_run: 5, best_epoch: 3,
        val_mae: val, val_rmse: val * 1.5, test_mae: test, test_rmse: test * 2.0, test_r2: Some(0.5),
        val_mae_train_mean: 50.0, test_mae_train_mean: 50.0, stopped_early: false, parameters: 10, wall_s: 1.0, external: None,
    }
}

#[test]
fn ids_are_stable_and_aggregation_matches_a_hand_computation() {
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = write_sweep(&dir.path().join("a"), &dir.path().join("out"));
    let cfg = SweepConfig::load(&cfg_path, &[]).unwrap();
    let plan = sweep::plan(&cfg).unwrap();
    assert_eq!(plan.runs.len(), 8);
    let ids: BTreeSet<String> = plan.runs.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), 8, "ids are distinct");
    // Same settings, other sweep directory and config location → same ids.
    let moved = write_sweep(&dir.path().join("b"), &dir.path().join("elsewhere"));
    let plan2 = sweep::plan(&SweepConfig::load(&moved, &[]).unwrap()).unwrap();
    assert_eq!(ids, plan2.runs.iter().map(|r| r.id.clone()).collect());
    // A changed setting changes every id; an extra learning rate keeps the existing ones.
    let plan3 = sweep::plan(&SweepConfig::load(&cfg_path, &["optim.epochs=3".into()]).unwrap()).unwrap();
    assert!(plan3.runs.iter().all(|r| !ids.contains(&r.id)));
    let mut wider = cfg.clone();
    wider.lrs.push(1e-5);
    let plan4 = sweep::plan(&wider).unwrap();
    assert_eq!(plan4.runs.len(), 12);
    assert!(ids.iter().all(|id| plan4.runs.iter().any(|r| &r.id == id)));

    // Fabricated results: val/test MAE chosen per (variant, lr, seed).
    let val = |v: usize, lr: f64, s: u64| if (v == 0) == (lr > 1e-3) { 10.0 + s as f64 } else { 20.0 + s as f64 };
    let test = |v: usize, lr: f64, s: u64| 5.0 + v as f64 + [0.5, 2.0][s as usize] + if lr > 1e-3 { 100.0 } else { 0.0 };
    for r in &plan.runs {
        std::fs::create_dir_all(&r.dir).unwrap();
        let res = fake_result(val(r.variant, r.lr, r.seed), test(r.variant, r.lr, r.seed));
        std::fs::write(r.dir.join("result.json"), serde_json::to_string(&res).unwrap()).unwrap();
    }
    // Everything is complete: a sweep run skips all 8 and aggregates.
    let (_, stderr) = sweep_cli(&cfg_path, &[]);
    assert!(stderr.contains("ran 0, skipped 8"), "{stderr}");
    let csv = std::fs::read_to_string(dir.path().join("out/table.csv")).unwrap();
    let rows: Vec<Vec<String>> = csv.lines().skip(1).map(|l| l.split(',').map(String::from).collect()).collect();
    assert_eq!(rows.len(), 4, "{csv}");
    // PotNet (variant 0): val is lower at lr 3e-3 → chosen; test MAE over seeds {105.5, 107.0}.
    // CGCNN (variant 1): val is lower at lr 1e-4 → chosen; test MAE {6.5, 8.0}.
    // mean ± sample std of {a, a + 1.5}: a + 0.75 ± 1.5/√2.
    let sd = 1.5 / 2f64.sqrt();
    for (variant, lr, mean) in [("PotNet scratch", "3e-3", 106.25), ("CGCNN scratch", "1e-4", 7.25)] {
        let row = rows.iter().find(|r| r[0] == variant && r[2] == "true").unwrap_or_else(|| panic!("no chosen row for {variant}: {csv}"));
        assert_eq!(row[1], lr, "{variant}: chosen lr");
        let (m, s): (f64, f64) = (row[6].parse().unwrap(), row[7].parse().unwrap());
        assert!((m - mean).abs() < 1e-12 && (s - sd).abs() < 1e-12, "{variant}: {m} ± {s}, expected {mean} ± {sd}");
        let (vm, vs): (f64, f64) = (row[4].parse().unwrap(), row[5].parse().unwrap());
        assert!((vm - 10.5).abs() < 1e-12 && (vs - 0.5f64.sqrt()).abs() < 1e-12, "{variant}: val {vm} ± {vs}");
    }
    let md = std::fs::read_to_string(dir.path().join("out/table.md")).unwrap();
    assert!(md.contains("| PotNet scratch | 3e-3 | 106.250 ± 1.061 |"), "{md}");
    assert!(md.contains("| CGCNN scratch | 1e-4 | 7.250 ± 1.061 |"), "{md}");

    // An incomplete sweep is not aggregated.
    std::fs::remove_file(plan.runs[3].dir.join("result.json")).unwrap();
    let out = Command::new(bin()).args(["sweep", "--aggregate", "--config"]).arg(&cfg_path).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("1 of 8 runs are not complete"));
}

#[test]
fn array_tasks_cover_the_grid_exactly_once_and_the_last_aggregates() {
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = write_sweep(dir.path(), &dir.path().join("out"));
    let plan = sweep::plan(&SweepConfig::load(&cfg_path, &[]).unwrap()).unwrap();
    let mut ran = Vec::new();
    for task in 0..3 {
        let (_, stderr) = sweep_cli(&cfg_path, &["--task-id", &task.to_string(), "--num-tasks", "3"]);
        ran.extend(stderr.lines().filter_map(|l| l.strip_prefix("[sweep] run ")).map(|l| l.split(' ').next().unwrap().to_string()));
        let table = dir.path().join("out/table.md").exists();
        assert_eq!(table, task == 2, "the table appears when the last task completes the grid (task {task})");
    }
    ran.sort();
    let mut all: Vec<String> = plan.runs.iter().map(|r| r.id.clone()).collect();
    all.sort();
    assert_eq!(ran, all, "every run exactly once over the three tasks");
    for r in &plan.runs {
        let res = multimat::finetune::read_result(&r.dir).unwrap();
        assert_eq!((res.lr, res.seed, res.n_train + res.n_val + res.n_test), (r.lr, r.seed, 60));
    }
    // Re-submitting a task runs nothing.
    let (_, stderr) = sweep_cli(&cfg_path, &["--task-id", "1", "--num-tasks", "3"]);
    assert!(stderr.contains("ran 0, skipped"), "{stderr}");
}

#[test]
fn a_pretraining_run_directory_as_checkpoint_means_its_newest_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let pre_out = dir.path().join("pretrain");
    let pre_cfg = dir.path().join("pretrain.toml");
    std::fs::write(
        &pre_cfg,
        format!(
            "[data]\nshards = [\"{}\"]\nmodalities = [\"crystal\", \"charge_density\"]\nholdout_fraction = 0.0\n{TINY_POTNET}\n\
[model.encoders.resnext3d]\nstages = [1]\nplanes = [32]\nstrides = [1]\ncardinality = 4\nstem_channels = 8\n\
[loss]\nkind = \"clip\"\n[optim]\nlr = 3e-3\nwarmup_epochs = 1\nbatch_size = 25\n[run]\nout_dir = \"{}\"\nmax_steps = 2\n",
            shards().display(),
            pre_out.display()
        ),
    )
    .unwrap();
    let st = Command::new(bin()).args(["pretrain", "--quiet", "--config"]).arg(&pre_cfg).output().unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let newest = pre_out.join("checkpoints/step-00000002.json");
    assert!(newest.is_file());

    let with = |ckpt: &Path, sub: &str| {
        let cfg_path = write_sweep(&dir.path().join(sub), &dir.path().join("out"));
        let text = std::fs::read_to_string(&cfg_path).unwrap()
            + &format!("\n[[variants]]\nname = \"PotNet MultiMat\"\ncrystal_encoder = \"potnet\"\ncheckpoint = \"{}\"\n", ckpt.display());
        std::fs::write(&cfg_path, text).unwrap();
        sweep::plan(&SweepConfig::load(&cfg_path, &[]).unwrap()).unwrap()
    };
    let by_dir = with(&pre_out, "a");
    let by_file = with(&newest, "b");
    let multimat_runs = |p: &sweep::Plan| -> Vec<(String, Option<std::path::PathBuf>)> {
        p.runs.iter().filter(|r| r.variant_name == "PotNet MultiMat").map(|r| (r.id.clone(), r.config.model.checkpoint.clone())).collect()
    };
    let (d, f) = (multimat_runs(&by_dir), multimat_runs(&by_file));
    assert_eq!(d.len(), 4);
    assert!(d.iter().all(|(_, c)| c.as_deref() == Some(newest.as_path())), "{d:?}");
    assert_eq!(d, f, "the directory and its newest checkpoint give the same runs");
    // The dry check lists a checkpoint that is not there yet, without failing.
    let cfg_path = dir.path().join("a/sweep.toml");
    let text = std::fs::read_to_string(&cfg_path).unwrap().replace(&pre_out.display().to_string(), &dir.path().join("not-yet").display().to_string());
    std::fs::write(&cfg_path, text).unwrap();
    let report = sweep::check(&SweepConfig::load(&cfg_path, &[]).unwrap()).unwrap();
    assert_eq!((report.runs, report.missing_checkpoints.len()), (12, 1));
}

/// An array task's share of two runs on `cuda-sim`, signalled as Slurm does once its first run has
/// started: that run saves its state (on the device it trained on), the sweep starts no further
/// run and exits with the requeue code; the same command again continues the run from its state
/// and then runs the other one.
#[test]
fn a_sweep_on_cuda_sim_stopped_by_sigusr1_exits_for_requeue_and_continues() {
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = write_sweep(dir.path(), &dir.path().join("out"));
    let plan = sweep::plan(&SweepConfig::load(&cfg_path, &[]).unwrap()).unwrap();
    // Task 0 of 4 runs plan.runs[0] and plan.runs[4].
    let (first, second) = (&plan.runs[0], &plan.runs[4]);
    let task = ["--task-id", "0", "--num-tasks", "4", "--device", "cuda-sim"];
    let child = Command::new(bin())
        .args(["sweep", "--config"])
        .arg(&cfg_path)
        .args(task)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The handler is installed before the first run writes run.json; the run polls it after every
    // step, so it stops after its first step at the latest.
    let t0 = std::time::Instant::now();
    while !first.dir.join("run.json").exists() {
        assert!(t0.elapsed() < std::time::Duration::from_secs(120), "the sweep did not start its first run");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(Command::new("kill").args(["-USR1", &child.id().to_string()]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "a signalled sweep must exit with the requeue code\n{stderr}");
    assert!(stderr.contains(&format!("stopped {}", first.id)) && stderr.contains("exit code 75"), "{stderr}");
    assert!(!first.dir.join("result.json").exists() && !first.dir.join("error.txt").exists(), "a stopped run is neither complete nor failed");
    let state = multimat::train::checkpoint::latest(&first.dir.join("resume")).unwrap().expect("the stopped run saved its state in resume/");
    assert_eq!(state.meta["device"], "cuda-sim", "the run trained on the sweep's device");
    assert!(!second.dir.exists(), "no run may start after the signal\n{stderr}");

    let (_, stderr) = sweep_cli(&cfg_path, &task);
    assert!(stderr.contains(&format!("run {} ", first.id)) && stderr.contains("resuming from"), "the re-run must continue the stopped run\n{stderr}");
    assert!(stderr.contains("ran 2, skipped 0"), "{stderr}");
    for r in [first, second] {
        let res = multimat::finetune::read_result(&r.dir).unwrap();
        assert_eq!((res.lr, res.seed, res.n_train + res.n_val + res.n_test), (r.lr, r.seed, 60));
        let info: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(r.dir.join("run.json")).unwrap()).unwrap();
        assert_eq!(info["device"], "cuda-sim", "run.json records the device");
    }
    assert!(!first.dir.join("resume").exists(), "the saved state is removed once the run is complete");
}
