//! `multimat predict` and `multimat embed` with a fine-tuning run: a tiny K_VRH run on real
//! matminer crystals predicts new CIFs written by pymatgen (ids kept, a broken file listed with
//! its reason), reproduces the run's own test-set predictions from its shards, gives the same
//! bytes under `mpirun -n 2` as in one process, and refuses shards built with other graph
//! settings; `embed` gives the fine-tuned encoder's crystal embeddings tagged with its checkpoint.
//!
//! Needs MPICH's `mpirun` on PATH (CI installs it).

#[path = "finetune_common/mod.rs"]
mod common;
#[path = "common/fixture_dir.rs"]
mod fixture_dir_impl;

use common::{bin, shards, write_ft_config};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// A 3-epoch K_VRH run on the fixture shards, once per test binary.
fn run_dir() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = fixture_dir_impl::fixture_dir("multimat-predict-test");
        std::fs::create_dir_all(&dir).unwrap();
        let run = dir.join("kvrh");
        let cfg = write_ft_config(&dir.join("ft.toml"), &run, "");
        let o = Command::new(bin()).args(["finetune", "--quiet", "--force", "--config"]).arg(&cfg).output().unwrap();
        assert!(o.status.success(), "finetune failed: {}", String::from_utf8_lossy(&o.stderr));
        run
    })
}

fn multimat(args: &[&str], ranks: usize) -> Output {
    let mut c = if ranks > 0 {
        let mut c = Command::new("mpirun");
        c.args(["-n", &ranks.to_string(), bin()]);
        c
    } else {
        Command::new(bin())
    };
    c.args(args).output().expect("starting multimat (mpirun needs MPICH)")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// material id → predictions (in component order) of a predictions CSV.
fn read_preds(path: &Path) -> BTreeMap<String, Vec<f64>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("material_id,target,component,prediction,units"));
    let mut out: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        assert_eq!((f[1], f[4]), ("K_VRH", "GPa"), "target and units come from the run: {l}");
        out.entry(f[0].to_string()).or_default().push(f[3].parse().unwrap());
    }
    out
}

fn cifs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mp-multimodal/cif")
}

#[test]
fn new_cifs_are_predicted_with_ids_kept_rejects_listed_and_identical_under_mpi() {
    let tmp = tempfile::tempdir().unwrap();
    let new = tmp.path().join("new");
    std::fs::create_dir(&new).unwrap();
    let ids = ["mp-1000", "mp-10000", "mp-10003", "mp-10009", "mp-10010", "mp-10014"];
    for id in ids {
        std::fs::copy(cifs().join(format!("{id}.cif")), new.join(format!("{id}.cif"))).unwrap();
    }
    std::fs::write(new.join("broken.cif"), "data_broken\n_cell_length_a 3\n").unwrap();

    let out = tmp.path().join("preds.csv");
    let o = multimat(&["predict", "--quiet", "--model", s(run_dir()), "--structures", s(&new), "--out", s(&out), "--batch-size", "4"], 0);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let preds = read_preds(&out);
    assert_eq!(preds.keys().map(String::as_str).collect::<Vec<_>>(), ids, "one row per structure, ids = file stems");
    assert!(preds.values().all(|v| v.len() == 1 && v[0].is_finite()), "{preds:?}");
    let rejects = std::fs::read_to_string(tmp.path().join("preds.rejects.jsonl")).unwrap();
    assert_eq!(rejects.lines().count(), 1, "{rejects}");
    assert!(rejects.contains("broken.cif") && rejects.contains("no data block has atom sites"), "the broken file is named with its problem: {rejects}");
    assert!(!tmp.path().join("preds.csv.ingest").exists(), "the work folder is removed");

    // Two ranks share the batches (batch size 4: ranks 0 and 1 each get one) and write the same bytes.
    let out2 = tmp.path().join("preds-mpi.csv");
    let o = multimat(&["predict", "--quiet", "--model", s(run_dir()), "--structures", s(&new), "--out", s(&out2), "--batch-size", "4"], 2);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&out2).unwrap(), "mpirun -n 2 writes what one process writes");
}

#[test]
fn predictions_from_shards_reproduce_the_runs_test_predictions() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("p.csv");
    let o = multimat(&["predict", "--quiet", "--model", s(run_dir()), "--shards", s(shards()), "--out", s(&out)], 0);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let preds = read_preds(&out);
    // The run's own predictions.csv (test split, best epoch): material_id,component,target,prediction.
    let text = std::fs::read_to_string(run_dir().join("predictions.csv")).unwrap();
    let mut compared = 0;
    for l in text.lines().skip(1) {
        let f: Vec<&str> = l.split(',').collect();
        let theirs: f64 = f[3].parse().unwrap();
        let ours = preds[f[0]][0];
        // The same f32 model on the same graphs; batches differ, so allow f32 rounding.
        assert!((ours - theirs).abs() <= 1e-4 * theirs.abs().max(1.0), "{}: predict {ours} vs the run's {theirs}", f[0]);
        compared += 1;
    }
    assert!(compared >= 10, "only {compared} test materials compared");

    // Shards whose graphs were built otherwise are refused with the reason.
    let other = tmp.path().join("other");
    let o = multimat(&["ingest", "--quiet", "--structures", s(&cifs()), "--limit", "3", "--out", s(&other)], 0);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let shard = std::fs::read_dir(&other).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|e| e == "h5")).unwrap();
    let mut graph_params = multimat::shard::ShardReader::open(&shard).unwrap().graph_params().clone();
    graph_params.local_k += 1;
    let data = multimat::shard::ShardData::load(&shard).unwrap();
    let records: Vec<_> = (0..data.len()).map(|i| data.record(i)).collect();
    let meta = multimat::shard::ShardMeta { graph_params, ..data.meta.clone() };
    let odd = tmp.path().join("odd.h5");
    multimat::shard::ShardWriter::new(meta).write(&odd, &records).unwrap();
    let o = multimat(&["predict", "--model", s(run_dir()), "--shards", s(&odd), "--out", s(&tmp.path().join("x.csv"))], 0);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("built with other settings"), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn embed_accepts_a_finetuning_run() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("e.h5");
    let o = multimat(&["embed", "--quiet", "--checkpoint", s(run_dir()), "--shards", s(shards()), "--modality", "crystal", "--out", s(&out)], 0);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = multimat::embeddings::EmbeddingsReader::open(&out).unwrap();
    let best = multimat::train::checkpoint::latest(&run_dir().join("best")).unwrap().unwrap();
    assert_eq!(r.meta().checkpoint_sha256, best.meta["tensors_sha256"].as_str().unwrap(), "tagged with the fine-tuned weights");
    assert_eq!(r.len(), 100, "every fixture material has a crystal graph");
    let o = multimat(&["embed", "--checkpoint", s(run_dir()), "--shards", s(shards()), "--modality", "dos", "--out", s(&out)], 0);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("only a crystal encoder"));
}
