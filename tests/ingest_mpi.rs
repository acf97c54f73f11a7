//! `multimat ingest` under MPICH's `mpirun -n 2` and `-n 3` on the real 85-material
//! mp-multimodal set: slice k goes to rank k mod R, and every shard is byte-identical to the
//! single-process shard of the same slice (HDF5 files written by the same code from the same
//! records carry no timestamps or rank), so its records are equal too; the manifest differs only
//! in the shard file names (which carry the writing rank). A rank that fails stops every rank
//! with its message instead of leaving the others in a barrier.
//!
//! Needs MPICH's `mpirun` on PATH (CI installs it); without it the tests fail, not skip.

use multimat::shard::ShardData;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MULTIMAT: &str = env!("CARGO_BIN_EXE_multimat");

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data")
}

/// `multimat ingest` of mp-multimodal (8³ density grid, 20 records per shard → 5 shards) into
/// `out` with `ranks` processes (0: no launcher). Returns (success, stdout + stderr); fails the
/// test rather than hang.
fn ingest(ranks: usize, out: &Path) -> (bool, String) {
    let mut cmd = if ranks == 0 {
        Command::new(MULTIMAT)
    } else {
        let mut c = Command::new("mpirun");
        c.args(["-n", &ranks.to_string(), MULTIMAT]);
        c
    };
    cmd.args(["ingest", "--quiet", "--density-grid", "8", "--records-per-shard", "20", "--mp-multimodal"])
        .arg(data().join("mp-multimodal"))
        .arg("--texts")
        .arg(data().join("text/mp-multimodal-robocrys.jsonl"))
        .arg("--out")
        .arg(out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("starting mpirun (MPICH must be installed)");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(o) = rx.recv_timeout(Duration::from_millis(100)) {
            let o = o.unwrap();
            return (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)));
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("ingest with {ranks} ranks hung (killed after 120 s)");
        }
    }
}

/// Shard files by slice index (the `{slice}` of `shard-r{rank}-{slice}.h5`).
fn shards_by_slice(dir: &Path) -> BTreeMap<String, PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "h5"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_str().unwrap().to_string();
            (name.rsplit('-').next().unwrap().to_string(), p)
        })
        .collect()
}

/// The manifest with the writing rank removed from shard names.
fn manifest_without_ranks(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(i) = rest.find("shard-r") {
        out.push_str(&rest[..i + "shard-r".len()]);
        rest = &rest[i + "shard-r".len() + 3..]; // the three rank digits
    }
    out.push_str(rest);
    out
}

#[test]
fn two_and_three_ranks_write_the_single_process_shards() {
    let dir = tempfile::tempdir().unwrap();
    let serial = dir.path().join("serial");
    let (ok, log) = ingest(0, &serial);
    assert!(ok, "{log}");
    let reference = shards_by_slice(&serial);
    assert_eq!(reference.len(), 5, "85 records at 20 per shard");
    for ranks in [2usize, 3] {
        let out = dir.path().join(format!("r{ranks}"));
        let (ok, log) = ingest(ranks, &out);
        assert!(ok, "{ranks} ranks: {log}");
        assert!(log.contains("85 records in 5 shards (5 written, 0 resumed)"), "rank 0 sums every rank's shards: {log}");
        let got = shards_by_slice(&out);
        assert_eq!(got.keys().collect::<Vec<_>>(), reference.keys().collect::<Vec<_>>());
        for (slice, path) in &got {
            let k: usize = slice.parse().unwrap();
            let name = path.file_name().unwrap().to_str().unwrap();
            assert!(name.starts_with(&format!("shard-r{:03}-", k % ranks)), "slice {k} written by rank k mod {ranks}: {name}");
            // Record content first (so a failure says what differs), then the bytes.
            let mut a = ShardData::load(&reference[slice]).unwrap();
            let b = ShardData::load(path).unwrap();
            a.path = b.path.clone();
            assert!(a.ids.len() == 20 || k == 4);
            // Debug text compares NaN target cells as equal, which `==` would not.
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "slice {k} with {ranks} ranks: records differ");
            assert!(std::fs::read(path).unwrap() == std::fs::read(&reference[slice]).unwrap(), "slice {k} with {ranks} ranks: bytes differ");
        }
        assert_eq!(manifest_without_ranks(&out), manifest_without_ranks(&serial), "{ranks} ranks: manifest");
        assert_eq!(std::fs::read(out.join("rejects.jsonl")).unwrap(), std::fs::read(serial.join("rejects.jsonl")).unwrap());
    }
}

#[test]
fn a_rank_that_cannot_write_its_shard_stops_every_rank() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // Rank 1 writes slice 1; a directory in the way of its file makes the atomic rename fail.
    std::fs::create_dir_all(out.join("shard-r001-00001.h5").join("blocker")).unwrap();
    let (ok, log) = ingest(2, &out);
    assert!(!ok, "{log}");
    assert!(log.contains("ingest failed on 1 of 2 ranks") && log.contains("rank 1: ") && log.contains("shard-r001-00001.h5"), "{log}");
    assert!(!out.join("manifest.json").exists(), "no manifest after a failed rank");
}
