//! The `multimat ingest` and `multimat validate` commands as a user runs them: exit codes,
//! output files, and violations printed with their location.

use std::path::Path;
use std::process::Command;

fn multimat(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_multimat")).args(args).output().unwrap()
}

const POSCAR: &str = "NaCl\n1.0\n0 2.8 2.8\n2.8 0 2.8\n2.8 2.8 0\nNa Cl\n1 1\nDirect\n0 0 0\n0.5 0.5 0.5\n";

#[test]
fn ingest_then_validate_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("vasp");
    for id in ["mp-22862", "mp-bad"] {
        std::fs::create_dir_all(src.join(id)).unwrap();
    }
    std::fs::write(src.join("mp-22862/POSCAR"), POSCAR).unwrap();
    std::fs::write(src.join("mp-bad/POSCAR"), POSCAR.replace("Na Cl", "Na Qq")).unwrap();
    let out = tmp.path().join("out");
    let s = |p: &Path| p.to_str().unwrap().to_owned();

    let run = multimat(&["ingest", "--vasp-dirs", &s(&src), "--out", &s(&out), "--no-graphs", "--quiet"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("2 inputs → 1 records") && stdout.contains("1 rejects"), "{stdout}");
    let rejects = std::fs::read_to_string(out.join("rejects.jsonl")).unwrap();
    assert!(rejects.contains("mp-bad/POSCAR") && rejects.contains("Qq"), "{rejects}");

    let shard = out.join("shard-r000-00000.h5");
    let ok = multimat(&["validate", &s(&shard), &s(&out.join("manifest.json"))]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stdout));

    // --strict fails the command.
    let strict = multimat(&["ingest", "--vasp-dirs", &s(&src), "--out", &s(&tmp.path().join("o2")), "--no-graphs", "--strict"]);
    assert!(!strict.status.success());
    assert!(String::from_utf8_lossy(&strict.stderr).contains("mp-bad"));

    // A damaged shard: non-zero exit, each violation printed with its location, manifest check fails too.
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let bad = multimat(&["validate", &s(&shard)]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stdout).contains("shard-r000-00000.h5: "));
    let bad_manifest = multimat(&["validate", &s(&out.join("manifest.json"))]);
    assert!(!bad_manifest.status.success());
    assert!(String::from_utf8_lossy(&bad_manifest.stdout).contains("sha256"));
}

#[test]
fn a_shard_that_crashes_hdf5_is_one_violation_and_the_other_files_are_still_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("vasp/mp-22862");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("POSCAR"), POSCAR).unwrap();
    let out = tmp.path().join("out");
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let run = multimat(&["ingest", "--vasp-dirs", &s(&tmp.path().join("vasp")), "--out", &s(&out), "--no-graphs", "--quiet"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let good = out.join("shard-r000-00000.h5");
    // The first object of the variable-length string heap (HDF5 "GCOL" collection: signature,
    // version, reserved, collection size; then object index, refcount, reserved, object size)
    // claims 2^64 - 1 bytes: libhdf5 1.10-1.14 reads past its buffer and dies with SIGSEGV.
    let mut bytes = std::fs::read(&good).unwrap();
    let gcol = bytes.windows(4).position(|w| w == b"GCOL").expect("the shard has a global heap (its id strings)");
    bytes[gcol + 24..gcol + 32].copy_from_slice(&u64::MAX.to_le_bytes());
    let bad = tmp.path().join("bad.h5");
    std::fs::write(&bad, &bytes).unwrap();

    let o = multimat(&["validate", &s(&bad), &s(&good)]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(o.status.signal(), None, "validate itself must not crash");
    assert_eq!(o.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("bad.h5: /: file is corrupt beyond what HDF5 can read"), "{stdout}");
    assert!(stdout.contains(&format!("{}: ok", good.display())), "the next file must still be checked: {stdout}");
}

/// A disk that fills while shards are written: run in a private mount namespace (`unshare -rm`,
/// no root needed) on a 400 KiB tmpfs, so only the first shards fit.
#[test]
fn a_full_disk_never_leaves_an_incomplete_shard_under_a_shard_name() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("disk");
    std::fs::create_dir_all(&mnt).unwrap();
    let bin = env!("CARGO_BIN_EXE_multimat");
    let script = format!(
        "set -u; mount -t tmpfs -o size=400k tmpfs '{m}' || exit 90
         '{bin}' synth --n 64 --records-per-shard 8 --out '{m}/s' --no-density --quiet --threads 1 2>'{m}/err'
         echo synth_rc=$?
         grep -c -E 'No space left on device|disk full' '{m}/err' | sed 's/^/enospc_lines=/'
         for f in '{m}'/s/*; do
           case \"$f\" in *.h5) if '{bin}' validate \"$f\" >/dev/null 2>&1; then echo \"ok $f\"; else echo \"BAD $f\"; fi;; esac
         done
         ls -a '{m}/s' | grep -c partial | sed 's/^/partials=/'",
        m = mnt.display()
    );
    let o = Command::new("unshare").args(["-rm", "sh", "-c", &script]).output().expect("unshare (util-linux) is installed");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "the namespace script failed: {out}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("synth_rc=1"), "a full disk must fail the command: {out}");
    assert!(!out.contains("enospc_lines=0"), "the error must say the disk is full: {out}");
    assert!(out.contains("ok "), "the shards written before the disk filled stay: {out}");
    assert!(!out.contains("BAD "), "a file under a shard name must be complete: {out}");
    assert!(out.contains("partials=0"), "no temporary files may be left: {out}");
}
