//! `multimat-screen` on embeddings files other tools write (h5py/numpy defaults): float64
//! vectors, fixed-length and byte-string ids, only the defining attributes (no producer,
//! normalised, dim, model id); files from one checkpoint under two run names are one model (by
//! the checkpoint's SHA-256), two checkpoints are not; empty and duplicate ids are refused with
//! the row named.

use multimat::embeddings::{write_embeddings, EmbeddingsMeta, EmbeddingsReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn python() -> PathBuf {
    std::env::var_os("MULTIMAT_PYTHON").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/venv/bin/python"))
}

/// Write `name` with h5py: `ids_expr` and `emb_expr` are numpy expressions, `attrs` Python
/// statements on the open file `f`.
fn h5py(dir: &Path, name: &str, ids_expr: &str, emb_expr: &str, attrs: &str) -> PathBuf {
    let out = dir.join(name);
    let script = format!(
        "import h5py, numpy as np\nwith h5py.File({out:?}, 'w') as f:\n    f['ids'] = {ids_expr}\n    f['embeddings'] = {emb_expr}\n    f.attrs['schema'] = 'multimat-embeddings'\n    f.attrs['schema_version'] = 1\n    f.attrs['modality'] = 'crystal'\n{}",
        attrs.lines().map(|l| format!("    {l}\n")).collect::<String>(),
        out = out.to_str().unwrap()
    );
    let o = Command::new(python()).arg("-c").arg(&script).output().unwrap_or_else(|e| panic!("running {}: {e}", python().display()));
    assert!(o.status.success(), "h5py failed: {}\n{script}", String::from_utf8_lossy(&o.stderr));
    out
}

fn screen(q: &Path, c: &Path, out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_multimat-screen"))
        .args(["--queries", q.to_str().unwrap(), "--candidates", c.to_str().unwrap(), "-k", "2", "-q", "--out", out.to_str().unwrap()])
        .output()
        .unwrap()
}

fn meta(model: &str, sha: &str) -> EmbeddingsMeta {
    EmbeddingsMeta { modality: "crystal".into(), model_id: model.into(), checkpoint_sha256: sha.into(), normalised: true, producer: "test".into() }
}

/// Rows of a 3-d lattice whose nearest neighbours are known: row i points along axis i mod 3.
const EMB: &str = "np.array([[1,0,0],[0,1,0],[0,0,1],[1,0.1,0]], dtype=np.float64)";

#[test]
fn files_from_other_tools_are_screened() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sha = "ab".repeat(32);
    // float64 vectors, fixed-length ASCII ids (numpy `S`), no informational attributes.
    let fixed = h5py(d, "fixed.h5", "np.array([b'mp-1', b'mp-2', b'mp-3', b'mp-44'], dtype='S8')", EMB, &format!("f.attrs['checkpoint_sha256'] = {sha:?}"));
    // Byte-string ids (h5py's variable-length ASCII) and fixed-length string attributes.
    let bytes = h5py(
        d,
        "bytes.h5",
        "np.array([b'mp-1', b'mp-2', b'mp-3', b'mp-44'], dtype=h5py.special_dtype(vlen=bytes))",
        "np.array([[1,0,0],[0,1,0],[0,0,1],[1,0.1,0]], dtype=np.float32)",
        &format!("f.attrs['checkpoint_sha256'] = np.bytes_({sha:?})\nf.attrs['model_id'] = np.bytes_('other-run-name')"),
    );
    let r = EmbeddingsReader::open(&fixed).unwrap();
    assert_eq!((r.len(), r.dim(), r.meta().producer.as_str(), r.meta().normalised), (4, 3, "", false));
    let block = r.read_block(0..4).unwrap();
    assert_eq!(block.ids, ["mp-1", "mp-2", "mp-3", "mp-44"]);
    assert_eq!(block.rows[9..12], [1.0, 0.1, 0.0], "float64 converted");
    let r2 = EmbeddingsReader::open(&bytes).unwrap();
    assert_eq!(r2.read_block(0..4).unwrap().ids, block.ids);
    assert_eq!((r2.meta().checkpoint_sha256.as_str(), r2.meta().model_id.as_str()), (sha.as_str(), "other-run-name"));

    // Same checkpoint hash, different run names: one model, screened.
    let hits = d.join("hits.csv");
    let o = screen(&fixed, &bytes, &hits);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv = std::fs::read_to_string(&hits).unwrap();
    assert!(csv.lines().any(|l| l.starts_with("mp-44,1,mp-44,")), "mp-44's first hit is itself: {csv}");

    // Our own writer, same checkpoint under another model id: accepted; another checkpoint: refused.
    let rows = [1.0f32, 0., 0., 0., 1., 0.];
    let same = d.join("same.h5");
    write_embeddings(&same, &meta("run-in-folder-b", &sha), 3, &["x", "y"], &rows).unwrap();
    assert!(screen(&same, &fixed, &d.join("h2.csv")).status.success(), "the same checkpoint in two folders is one model");
    let other = d.join("other.h5");
    write_embeddings(&other, &meta("run-in-folder-b", &"cd".repeat(32)), 3, &["x", "y"], &rows).unwrap();
    let o = screen(&other, &fixed, &d.join("h3.csv"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("model mismatch") && err.contains("cdcdcdcdcdcd"), "{err}");

    // Empty and duplicate ids: refused with the row named.
    let dup = h5py(d, "dup.h5", "np.array([b'a', b'b', b'a', b'c'], dtype='S4')", EMB, "");
    let o = screen(&dup, &fixed, &d.join("h4.csv"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("dup.h5") && err.contains("id 'a' appears twice (rows 0 and 2)"), "{err}");
    let empty = h5py(d, "empty.h5", "np.array(['a', '', 'b', 'c'], dtype=h5py.string_dtype())", EMB, "");
    let o = screen(&empty, &fixed, &d.join("h5.csv"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("empty.h5") && err.contains("row 1 has an empty id"), "{err}");

    // Not strings, not floats: named.
    let ints = h5py(d, "ints.h5", "np.arange(4)", EMB, "");
    let err = format!("{:#}", EmbeddingsReader::open(&ints).err().unwrap());
    assert!(err.contains("ints.h5") && err.contains("'ids'") && err.contains("expected strings"), "{err}");
    let int_emb = h5py(d, "intemb.h5", "np.array([b'a', b'b'], dtype='S4')", "np.ones((2, 3), dtype=np.int32)", "");
    let err = format!("{:#}", EmbeddingsReader::open(&int_emb).err().unwrap());
    assert!(err.contains("intemb.h5") && err.contains("expected float32"), "{err}");
}

/// `PREFIX.npy` + `PREFIX.ids.txt` (numpy pipelines): float64 converted, screened against each
/// other (no model identity on either side) and, with --allow-model-mismatch, against an HDF5 file.
#[test]
fn npy_with_ids_txt_is_screened() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let prefix = d.join("cands");
    let script = format!(
        "import numpy as np\nnp.save({:?}, np.array([[1,0,0],[0,1,0],[0,0,1],[1,0.1,0]], dtype=np.float64))\nopen({:?}, 'w').write('mp-1\\nmp-2\\nmp-3\\nmp-44\\n')",
        format!("{}.npy", prefix.display()),
        format!("{}.ids.txt", prefix.display())
    );
    let o = Command::new(python()).arg("-c").arg(&script).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let npy = d.join("cands.npy");
    let r = EmbeddingsReader::open(&npy).unwrap();
    assert_eq!((r.len(), r.dim(), r.meta().modality.as_str()), (4, 3, "unspecified"));
    let b = r.read_block(1..4).unwrap();
    assert_eq!(b.ids, ["mp-2", "mp-3", "mp-44"]);
    assert_eq!(b.rows[6..9], [1.0, 0.1, 0.0]);

    let (q, _) = multimat::text::npy::write_embeddings(&d.join("q"), &["a".to_string(), "b".to_string()], &[vec![0.9, 0.2, 0.0], vec![0.0, 0.0, 2.0]]).unwrap();
    let hits = d.join("hits.csv");
    let o = screen(&q, &npy, &hits);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv = std::fs::read_to_string(&hits).unwrap();
    assert!(csv.contains("a,1,mp-44,") && csv.contains("b,1,mp-3,"), "{csv}");

    let h5 = d.join("h5.h5");
    write_embeddings(&h5, &meta("run", &"ab".repeat(32)), 3, &["x", "y"], &[1.0f32, 0., 0., 0., 1., 0.]).unwrap();
    let o = screen(&q, &h5, &d.join("h2.csv"));
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("model mismatch"));

    // The ids file must exist and match the rows.
    std::fs::remove_file(d.join("cands.ids.txt")).unwrap();
    let err = format!("{:#}", EmbeddingsReader::open(&npy).err().unwrap());
    assert!(err.contains("cands.npy") && err.contains("cands.ids.txt"), "{err}");
}
