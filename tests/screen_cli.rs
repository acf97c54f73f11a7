//! The `multimat-screen` binary end to end: `gen-random` files, a screen whose CSV equals the f64
//! reference exactly (lattice data, ties everywhere), the same bytes whatever the block sizes
//! and parallel mode, and clear errors — naming the file, row and id — for bad input:
//! dimension mismatch, different models, empty files, missing datasets, NaN and zero rows.

use multimat::embeddings::{write_embeddings, EmbeddingsMeta, EmbeddingsReader};
use multimat::screen::reference::{topk_reference, RawEmbeddings};
use std::path::Path;
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_multimat-screen"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("running multimat-screen")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn meta(model: &str) -> EmbeddingsMeta {
    EmbeddingsMeta {
        modality: "dos".into(),
        model_id: model.into(),
        checkpoint_sha256: String::new(),
        normalised: false,
        producer: "screen_cli test".into(),
    }
}

fn gen(dir: &Path, name: &str, n: usize, dim: usize, seed: u64, prefix: &str) -> std::path::PathBuf {
    let out = dir.join(name);
    let o = run(&[
        "gen-random", "--out", p(&out), "-n", &n.to_string(), "--dim", &dim.to_string(), "--seed", &seed.to_string(),
        "--kind", "lattice", "--duplicates", "0.1", "--id-prefix", prefix,
    ]);
    assert!(o.status.success(), "gen-random failed: {}", stderr(&o));
    out
}

#[test]
fn csv_equals_reference_and_is_independent_of_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let q = gen(dir.path(), "q.h5", 30, 8, 1, "q,");
    let c = gen(dir.path(), "c.h5", 400, 8, 2, "mp-");
    let out_a = dir.path().join("a.csv");
    let out_b = dir.path().join("b.csv");
    let o = run(&["--queries", p(&q), "--candidates", p(&c), "-k", "12", "--out", p(&out_a), "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&[
        "--queries", p(&q), "--candidates", p(&c), "-k", "12", "--out", p(&out_b), "-q", "--block-queries", "3",
        "--block-candidates", "50", "--tile-candidates", "7", "--parallelism", "gemm", "--threads", "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let a = std::fs::read_to_string(&out_a).unwrap();
    assert_eq!(a, std::fs::read_to_string(&out_b).unwrap(), "CSV depends on block sizes");

    // Parse the CSV (query ids contain a comma, so they are quoted) and compare with the reference.
    let read = |path: &Path| {
        let r = EmbeddingsReader::open(path).unwrap();
        let b = r.read_block(0..r.len()).unwrap();
        (b.ids, b.rows)
    };
    let (qi, qr) = read(&q);
    let (ci, cr) = read(&c);
    let reference = topk_reference(
        &[(1.0, RawEmbeddings { ids: &qi, rows: &qr, dim: 8 }, RawEmbeddings { ids: &ci, rows: &cr, dim: 8 })],
        12,
    );
    let mut lines = a.lines();
    assert_eq!(lines.next(), Some("query_id,rank,candidate_id,similarity"));
    let mut expected = Vec::new();
    for (qid, list) in &reference {
        for (r, (cid, sim)) in list.iter().enumerate() {
            expected.push(format!("\"{qid}\",{},{cid},{}", r + 1, *sim as f32));
        }
    }
    assert_eq!(lines.map(str::to_owned).collect::<Vec<_>>(), expected);
}

#[test]
fn bad_inputs_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("hits.csv");
    let ids: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
    let rows8: Vec<f32> = (0..40).map(|i| (i % 7) as f32 + 1.0).collect();
    let rows4: Vec<f32> = (0..20).map(|i| (i % 5) as f32 + 1.0).collect();
    let good = d.join("good.h5");
    write_embeddings(&good, &meta("model-A"), 8, &ids, &rows8).unwrap();
    let screen = |q: &Path, c: &Path, extra: &[&str]| {
        let mut args = vec!["--queries", p(q), "--candidates", p(c), "-k", "3", "--out", p(&out), "-q"];
        args.extend_from_slice(extra);
        let o = run(&args);
        (o.status.success(), stderr(&o))
    };

    // Dimension mismatch.
    let dim4 = d.join("dim4.h5");
    write_embeddings(&dim4, &meta("model-A"), 4, &ids, &rows4).unwrap();
    let (ok, err) = screen(&good, &dim4, &[]);
    assert!(!ok && err.contains("dimension mismatch") && err.contains("8-d") && err.contains("4-d") && err.contains("dim4.h5"), "{err}");

    // Different model: an error unless allowed.
    let other = d.join("other.h5");
    write_embeddings(&other, &meta("model-B"), 8, &ids, &rows8).unwrap();
    let (ok, err) = screen(&good, &other, &[]);
    assert!(!ok && err.contains("model mismatch") && err.contains("model-B") && err.contains("--allow-model-mismatch"), "{err}");
    let (ok, err) = screen(&good, &other, &["--allow-model-mismatch"]);
    assert!(ok, "{err}");
    assert!(std::fs::read_to_string(&out).unwrap().lines().count() == 1 + 5 * 3);

    // Empty (0-byte) file.
    let empty = d.join("empty.h5");
    std::fs::write(&empty, b"").unwrap();
    let (ok, err) = screen(&good, &empty, &[]);
    assert!(!ok && err.contains("empty.h5") && err.contains("empty (0 bytes)"), "{err}");

    // Not HDF5 at all.
    let text = d.join("notes.h5");
    std::fs::write(&text, b"hello").unwrap();
    let (ok, err) = screen(&text, &good, &[]);
    assert!(!ok && err.contains("notes.h5") && err.contains("not a readable HDF5 file"), "{err}");

    // A valid embeddings file with zero rows (built by hand: the writer refuses to make one).
    let zero_rows = d.join("zero_rows.h5");
    std::fs::copy(&good, &zero_rows).unwrap();
    {
        let f = hdf5::File::open_rw(&zero_rows).unwrap();
        f.dataset("embeddings").unwrap().resize((0, 8)).unwrap();
        f.dataset("ids").unwrap().resize(0).unwrap();
    }
    let (ok, err) = screen(&good, &zero_rows, &[]);
    assert!(!ok && err.contains("zero_rows.h5") && err.contains("no embeddings (0 rows)"), "{err}");

    // Missing dataset.
    let no_ids = d.join("no_ids.h5");
    std::fs::copy(&good, &no_ids).unwrap();
    hdf5::File::open_rw(&no_ids).unwrap().unlink("ids").unwrap();
    let (ok, err) = screen(&no_ids, &good, &[]);
    assert!(!ok && err.contains("no_ids.h5") && err.contains("missing dataset 'ids'"), "{err}");

    // NaN and all-zero rows, written behind the writer's back.
    let nan = d.join("nan.h5");
    std::fs::copy(&good, &nan).unwrap();
    {
        let f = hdf5::File::open_rw(&nan).unwrap();
        let ds = f.dataset("embeddings").unwrap();
        ds.write_slice(&ndarray::arr2(&[[1.0f32, 2.0, f32::NAN, 4.0, 5.0, 6.0, 7.0, 8.0]]), ndarray::s![3..4, ..]).unwrap();
    }
    let (ok, err) = screen(&good, &nan, &[]);
    assert!(!ok && err.contains("nan.h5") && err.contains("row 3 (id 'm3')") && err.contains("non-finite value (NaN) in column 2"), "{err}");
    let zero = d.join("zero.h5");
    std::fs::copy(&good, &zero).unwrap();
    {
        let f = hdf5::File::open_rw(&zero).unwrap();
        f.dataset("embeddings").unwrap().write_slice(&ndarray::Array2::<f32>::zeros((1, 8)), ndarray::s![1..2, ..]).unwrap();
    }
    let (ok, err) = screen(&zero, &good, &[]);
    assert!(!ok && err.contains("zero.h5") && err.contains("row 1 (id 'm1') has zero norm"), "{err}");

    // -k 0 and a multi-modal call without its partner file.
    let o = run(&["--queries", p(&good), "--candidates", p(&good), "-k", "0", "--out", p(&out)]);
    assert!(!o.status.success() && stderr(&o).contains("-k must be at least 1"), "{}", stderr(&o));
    let (ok, err) = screen(&good, &good, &["--queries2", p(&good)]);
    assert!(!ok && err.contains("candidates2"), "{err}");
    assert!(!d.join(".hits.csv.partial").exists());
}

#[test]
fn an_input_that_crashes_hdf5_is_an_error_naming_it_not_a_crash() {
    let d = tempfile::tempdir().unwrap();
    let (q, c, bad) = (d.path().join("q.h5"), d.path().join("c.h5"), d.path().join("bad.h5"));
    assert!(run(&["gen-random", "--out", p(&q), "-n", "20", "--dim", "8"]).status.success());
    assert!(run(&["gen-random", "--out", p(&c), "-n", "200", "--dim", "8", "--seed", "1"]).status.success());
    // The first object of the id strings' heap ("GCOL" collection) claims 2^64 - 1 bytes:
    // libhdf5 reads past its buffer and dies with SIGSEGV.
    let mut bytes = std::fs::read(&c).unwrap();
    let gcol = bytes.windows(4).position(|w| w == b"GCOL").expect("ids are variable-length strings in a global heap");
    bytes[gcol + 24..gcol + 32].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&bad, &bytes).unwrap();
    let o = run(&["--queries", p(&q), "--candidates", p(&bad), "--out", p(&d.path().join("hits.csv"))]);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(o.status.signal(), None, "the screen itself must not crash");
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("bad.h5: file is corrupt beyond what HDF5 can read"), "{e}");
    assert!(!d.path().join("hits.csv").exists());
}
