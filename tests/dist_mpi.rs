//! The real `multimat` binary under MPICH's `mpirun -n 2` and `-n 3`: every rank must see the
//! right world size (a binary linked to another MPI would see N copies of rank 0 of 1) and the
//! collectives must return the values every rank can predict.

use std::process::Command;

fn mpirun() -> Option<String> {
    for c in ["mpirun.mpich", "mpiexec.mpich", "mpirun"] {
        if Command::new("which").arg(c).output().map(|o| o.status.success()).unwrap_or(false) {
            return Some(c.to_string());
        }
    }
    None
}

#[test]
fn doctor_under_mpirun_sees_the_whole_world() {
    let Some(mpirun) = mpirun() else {
        panic!("mpirun (MPICH) not found: run ./scripts/bootstrap.sh");
    };
    for n in [2usize, 3] {
        let out = Command::new(&mpirun)
            .args(["-n", &n.to_string(), env!("CARGO_BIN_EXE_multimat"), "doctor", "--json"])
            .output()
            .expect("running mpirun");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "mpirun -n {n} failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        let mut ranks: Vec<usize> = Vec::new();
        for line in stdout.lines().filter(|l| l.starts_with('{')) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["world_size"], n, "rank reports the wrong world size: {line}");
            assert_eq!(v["collectives_ok"], true, "{line}");
            assert_eq!(v["launcher"], "pmi", "{line}");
            ranks.push(v["rank"].as_u64().unwrap() as usize);
        }
        ranks.sort();
        assert_eq!(ranks, (0..n).collect::<Vec<_>>());
    }
}

#[test]
fn doctor_without_launcher_is_rank_zero_of_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_multimat")).args(["doctor", "--json"]).output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(v["world_size"], 1);
    assert_eq!(v["rank"], 0);
}

#[test]
fn doctor_says_nccl_is_not_used_on_cpu_and_cuda_sim_and_passes_there() {
    // NCCL serves only real GPUs; elsewhere the collectives go through MPI, and doctor says so
    // (under mpirun too, where a user checks a multi-rank job) without failing.
    let Some(mpirun) = mpirun() else {
        panic!("mpirun (MPICH) not found: run ./scripts/bootstrap.sh");
    };
    for device in ["cpu", "cuda-sim"] {
        let out = Command::new(&mpirun)
            .args(["-n", "2", env!("CARGO_BIN_EXE_multimat"), "doctor", "--device", device])
            .output()
            .expect("running mpirun");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "doctor --device {device} failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        let note = format!("NCCL: not used on {device}: collectives between ranks go through MPI");
        assert_eq!(stdout.lines().filter(|l| *l == note).count(), 2, "every rank prints the NCCL note: {stdout}");
        assert!(!stdout.contains("FAIL"), "{stdout}");
    }
}
