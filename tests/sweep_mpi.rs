//! `mpirun -n 2 multimat sweep`: ranks take runs dynamically, the grid completes, and the
//! aggregated table is byte-identical to the serial sweep's.

#[path = "finetune_common/mod.rs"]
mod finetune_common;

use finetune_common::*;
use std::process::Command;

#[test]
fn two_ranks_complete_the_grid_and_aggregate_like_one() {
    let dir = tempfile::tempdir().unwrap();
    let serial = write_sweep(&dir.path().join("serial"), &dir.path().join("serial/out"));
    let st = Command::new(bin()).args(["sweep", "--config"]).arg(&serial).output().unwrap();
    assert!(st.status.success(), "serial sweep: {}", String::from_utf8_lossy(&st.stderr));

    let parallel = write_sweep(&dir.path().join("mpi"), &dir.path().join("mpi/out"));
    let out = Command::new("mpirun").args(["-n", "2", bin(), "sweep", "--config"]).arg(&parallel).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mpirun sweep: {stderr}");
    assert!(stderr.contains("8 runs over 2 rank(s)"), "{stderr}");
    let done = stderr.lines().filter(|l| l.contains("] done ")).count();
    assert_eq!(done, 8, "each run exactly once: {stderr}");
    for f in ["table.csv", "table.md"] {
        let a = std::fs::read_to_string(dir.path().join("serial/out").join(f)).unwrap();
        let b = std::fs::read_to_string(dir.path().join("mpi/out").join(f)).unwrap();
        assert_eq!(a, b, "{f} differs between 1 and 2 ranks");
    }
}
