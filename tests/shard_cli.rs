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
