//! Real Robocrystallographer descriptions for `ingest --text-generator robocrys`: the
//! `robocrys` Python package (PyPI; it works offline) run in one child Python per shard slice,
//! structures in and descriptions out as JSON lines, so its import (seconds) is paid once per
//! slice rather than once per record. The Python is `MULTIMAT_PYTHON`, else `python3`; nothing
//! is installed. A structure robocrys fails on gets no text (the ingest counts it as an absent
//! modality); a Python that cannot import robocrys stops the ingest before anything is written.

use crate::material::Structure;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The child's program: `--check` prints robocrys's version; otherwise one JSON request per
/// stdin line `{"id", "lattice", "species", "frac_coords"}` → one line `{"id", "description"}`
/// or `{"id", "error"}`. Exit status 3: robocrys or pymatgen cannot be imported.
const SCRIPT: &str = r#"
import sys, json
try:
    import robocrys
    from robocrys import StructureCondenser, StructureDescriber
    from pymatgen.core import Lattice, Structure
except Exception as e:
    sys.stderr.write("cannot import robocrys/pymatgen: %s: %s\n" % (type(e).__name__, e))
    sys.exit(3)
if sys.argv[1:] == ["--check"]:
    print(getattr(robocrys, "__version__", "unknown"))
    sys.exit(0)
condenser, describer = StructureCondenser(), StructureDescriber()
for line in sys.stdin:
    r = json.loads(line)
    try:
        s = Structure(Lattice(r["lattice"]), r["species"], r["frac_coords"])
        out = {"id": r["id"], "description": describer.describe(condenser.condense_structure(s))}
    except Exception as e:
        out = {"id": r["id"], "error": "%s: %s" % (type(e).__name__, e)}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
"#;

/// The Python that runs robocrys: `MULTIMAT_PYTHON`, else `python3` from `PATH`.
pub fn default_python() -> PathBuf {
    std::env::var_os("MULTIMAT_PYTHON").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("python3"))
}

/// robocrys's version as `python` imports it, or an error saying what to do instead.
pub fn check(python: &Path) -> Result<String> {
    let out = Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .arg("--check")
        .output()
        .with_context(|| format!("--text-generator robocrys: cannot run {} (set MULTIMAT_PYTHON to a Python with robocrys)", python.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message");
        bail!(
            "--text-generator robocrys: {} cannot import robocrys ({last}); install robocrys (PyPI) in that Python or point \
             MULTIMAT_PYTHON at one that has it, or use --text-generator approx (multimat's labelled approximation)",
            python.display()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Descriptions of `structures` (id → structure) from one robocrys run: id → text, or the
/// error robocrys gave for that structure. Fails when the child cannot run or its output is
/// not one answer per request.
pub fn describe_all(python: &Path, structures: &[(String, Structure)]) -> Result<BTreeMap<String, std::result::Result<String, String>>> {
    if structures.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut requests = String::new();
    for (id, s) in structures {
        let species: Vec<&str> = s.species.iter().map(|&z| crate::elements::symbol(z)).collect();
        requests.push_str(&json!({"id": id, "lattice": s.lattice, "species": species, "frac_coords": s.frac_coords}).to_string());
        requests.push('\n');
    }
    let mut child = Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("robocrys: cannot run {}", python.display()))?;
    // Written from a thread so that a child filling its stdout pipe cannot deadlock us.
    let mut stdin = child.stdin.take().context("robocrys: no stdin")?;
    let writer = std::thread::spawn(move || stdin.write_all(requests.as_bytes()));
    let out = child.wait_with_output().context("robocrys: waiting for the child Python")?;
    // A broken pipe here means the child died early; its status and stderr say why.
    let written = writer.join().map_err(|_| anyhow::anyhow!("robocrys: the writer thread panicked"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!("robocrys ({}) failed with {}: {}", python.display(), out.status, err.trim());
    }
    written.context("robocrys: writing the structures to the child Python")?;
    let mut answers = BTreeMap::new();
    for (n, line) in String::from_utf8_lossy(&out.stdout).lines().enumerate() {
        let v: Value = serde_json::from_str(line).with_context(|| format!("robocrys: output line {} is not JSON: {line}", n + 1))?;
        let id = v.get("id").and_then(Value::as_str).with_context(|| format!("robocrys: output line {} has no id", n + 1))?;
        let answer = match (v.get("description").and_then(Value::as_str), v.get("error").and_then(Value::as_str)) {
            (Some(d), _) => Ok(d.to_string()),
            (None, Some(e)) => Err(format!("robocrys could not describe the structure: {e}")),
            (None, None) => Err("robocrys gave neither a description nor an error".to_string()),
        };
        answers.insert(id.to_string(), answer);
    }
    anyhow::ensure!(
        answers.len() == structures.len(),
        "robocrys answered {} of {} structures",
        answers.len(),
        structures.len()
    );
    Ok(answers)
}
