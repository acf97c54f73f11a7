//! `multimat-screen` under MPICH's `mpirun -n 1/2/3`: candidates sharded over ranks, merged on
//! rank 0, and a CSV byte-identical to the single-process run — with exact ties that straddle
//! the rank boundaries, k cutting through a tie group, k ≥ N, and the two-modality screen. A
//! failure on one rank (NaN row in its range, unreadable file, unwritable output) makes every
//! rank exit non-zero with the message on rank 0, and never hangs.
//!
//! These tests need MPICH's `mpirun` on PATH (CI installs it); they fail, not skip, without it.

use multimat::embeddings::{write_embeddings, EmbeddingsMeta, EmbeddingsReader};
use multimat::screen::reference::{topk_reference, RawEmbeddings};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SCREEN: &str = env!("CARGO_BIN_EXE_multimat-screen");

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

struct Outcome {
    ok: bool,
    stderr: String,
}

/// Run the screen with `ranks` processes (0: no launcher at all). Fails the test instead of
/// hanging if the job does not finish within a minute.
fn screen(ranks: usize, args: &[&str]) -> Outcome {
    let mut cmd = if ranks == 0 {
        Command::new(SCREEN)
    } else {
        let mut c = Command::new("mpirun");
        c.args(["-n", &ranks.to_string(), SCREEN]);
        c
    };
    let mut child = cmd
        .args(args)
        .arg("-q")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting mpirun (MPICH must be installed)");
    let mut err_pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut err_pipe, &mut s).unwrap();
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            let _ = child.wait();
            panic!("multimat-screen with {ranks} ranks hung (killed after 60 s): {}", reader.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Outcome { ok: status.success(), stderr: reader.join().unwrap() }
}

fn meta(modality: &str) -> EmbeddingsMeta {
    EmbeddingsMeta {
        modality: modality.into(),
        model_id: "screen-mpi-test".into(),
        checkpoint_sha256: String::new(),
        normalised: false,
        producer: "screen_mpi test".into(),
    }
}

/// Candidates made of a few distinct directions, each repeated under many ids, so almost every
/// similarity is an exact tie. Ids run *against* row order (row i gets id `c{N-1-i}`, zero
/// padded), so within a tie group the winners by id sit in the last rank's rows: a merge that
/// preferred rank order over ids would be caught.
fn tied_candidates(path: &Path, n: usize, dim: usize, modality: &str, shift: usize) -> (Vec<String>, Vec<f32>) {
    let ids: Vec<String> = (0..n).map(|i| format!("c{:04}", n - 1 - i)).collect();
    let mut rows = Vec::with_capacity(n * dim); // (n, dim)
    for i in 0..n {
        let group = (i + shift) % 4; // 4 directions, interleaved over the rows
        rows.extend((0..dim).map(|d| if d == group || d == group + 1 { 1.0 } else { 0.25 * (d % 3) as f32 }));
    }
    write_embeddings(path, &meta(modality), dim, &ids, &rows).unwrap();
    (ids, rows)
}

fn queries(path: &Path, n: usize, dim: usize, modality: &str) -> (Vec<String>, Vec<f32>) {
    let ids: Vec<String> = (0..n).map(|i| format!("q{i}")).collect();
    let rows: Vec<f32> = (0..n * dim).map(|j| ((j * 7 + 3) % 5) as f32 - 1.0).collect(); // (n, dim)
    write_embeddings(path, &meta(modality), dim, &ids, &rows).unwrap();
    (ids, rows)
}

/// The screen of `args` without a launcher and under mpirun -n 1, 2, 3: every CSV byte-identical.
fn same_csv_for_every_rank_count(dir: &Path, args: &[&str]) -> String {
    let mut first: Option<String> = None;
    for ranks in [0usize, 1, 2, 3] {
        let out: PathBuf = dir.join(format!("hits-{ranks}.csv"));
        let mut a = args.to_vec();
        a.extend_from_slice(&["--out", p(&out)]);
        let o = screen(ranks, &a);
        assert!(o.ok, "{ranks} ranks failed: {}", o.stderr);
        let csv = std::fs::read_to_string(&out).unwrap();
        match &first {
            None => first = Some(csv),
            Some(f) => assert!(f == &csv, "CSV with {ranks} ranks differs from the single-process one"),
        }
    }
    first.unwrap()
}

fn parse(csv: &str) -> Vec<(String, usize, String, f32)> {
    csv.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_string(), f[1].parse().unwrap(), f[2].to_string(), f[3].parse().unwrap())
        })
        .collect()
}

#[test]
fn ties_across_rank_boundaries_and_k_at_least_n_give_the_serial_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (qp, cp) = (dir.path().join("q.h5"), dir.path().join("c.h5"));
    let (n, dim) = (41, 6); // 41 rows: uneven shards (14/14/13) for 3 ranks
    let (qi, qr) = queries(&qp, 5, dim, "dos");
    let (ci, cr) = tied_candidates(&cp, n, dim, "dos", 0);
    let reference = topk_reference(&[(1.0, RawEmbeddings { ids: &qi, rows: &qr, dim }, RawEmbeddings { ids: &ci, rows: &cr, dim })], n);

    // Each direction has 10 or 11 copies; k = 13 takes a whole group and cuts the next one.
    let csv = same_csv_for_every_rank_count(dir.path(), &["--queries", p(&qp), "--candidates", p(&cp), "-k", "13", "--block-candidates", "4"]);
    let rows = parse(&csv);
    assert_eq!(rows.len(), 5 * 13);
    for (qid, list) in &reference {
        let got: Vec<&(String, usize, String, f32)> = rows.iter().filter(|r| &r.0 == qid).collect();
        for (r, (cid, sim)) in list.iter().take(13).enumerate() {
            assert_eq!(&got[r].2, cid, "query {qid} rank {}: tie order by id", r + 1);
            assert!((got[r].3 as f64 - sim).abs() < 1e-6, "query {qid} rank {}: {} vs {sim}", r + 1, got[r].3);
        }
        // The cut runs through a tie group: the 13th and 14th reference hits tie.
        assert!((list[12].1 - list[13].1).abs() < 1e-12, "fixture must cut a tie group for {qid}");
    }

    // k ≥ N lists every candidate exactly once per query, in the reference order.
    let csv = same_csv_for_every_rank_count(dir.path(), &["--queries", p(&qp), "--candidates", p(&cp), "-k", "100"]);
    let rows = parse(&csv);
    assert_eq!(rows.len(), 5 * n);
    for (qid, list) in &reference {
        let got: Vec<&str> = rows.iter().filter(|r| &r.0 == qid).map(|r| r.2.as_str()).collect();
        let want: Vec<&str> = list.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(got, want, "query {qid}");
    }
}

#[test]
fn multi_modal_screen_is_rank_independent() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (q1, c1, q2, c2) = (d.join("q1.h5"), d.join("c1.h5"), d.join("q2.h5"), d.join("c2.h5"));
    queries(&q1, 4, 6, "dos");
    queries(&q2, 4, 5, "charge_density");
    tied_candidates(&c1, 37, 6, "dos", 0);
    // The second modality's file has the same ids in another row order and one id fewer, so
    // the join and the ranges over the first file's rows are exercised.
    let (ids, rows) = tied_candidates(&d.join("tmp.h5"), 37, 5, "charge_density", 1);
    let keep: Vec<usize> = (0..37).rev().filter(|&i| i != 5).collect();
    let ids2: Vec<&String> = keep.iter().map(|&i| &ids[i]).collect();
    let rows2: Vec<f32> = keep.iter().flat_map(|&i| rows[i * 5..(i + 1) * 5].iter().copied()).collect();
    write_embeddings(&c2, &meta("charge_density"), 5, &ids2, &rows2).unwrap();
    let csv = same_csv_for_every_rank_count(
        d,
        &["--queries", p(&q1), "--candidates", p(&c1), "--queries2", p(&q2), "--candidates2", p(&c2), "--weights", "0.7,0.3", "-k", "9"],
    );
    let rows = parse(&csv);
    assert_eq!(rows.len(), 4 * 9);
    assert!(!rows.iter().any(|r| r.2 == ids[5]), "a candidate missing from the second modality is never a hit");
}

#[test]
fn a_failure_on_any_rank_stops_every_rank_with_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (qp, cp) = (d.join("q.h5"), d.join("c.h5"));
    queries(&qp, 3, 6, "dos");
    tied_candidates(&cp, 30, 6, "dos", 0);
    let out = d.join("hits.csv");

    // A NaN in row 27: only the last rank's range (20..30 of 3 ranks) reads it.
    let nan = d.join("nan.h5");
    std::fs::copy(&cp, &nan).unwrap();
    {
        let f = hdf5::File::open_rw(&nan).unwrap();
        let ds = f.dataset("embeddings").unwrap();
        ds.write_slice(&ndarray::arr2(&[[1.0f32, f32::NAN, 0.0, 0.0, 0.0, 0.0]]), ndarray::s![27..28, ..]).unwrap();
    }
    let bad_id = EmbeddingsReader::open(&nan).unwrap().read_ids(27..28).unwrap().remove(0);
    for ranks in [2usize, 3] {
        let o = screen(ranks, &["--queries", p(&qp), "--candidates", p(&nan), "-k", "3", "--out", p(&out)]);
        assert!(!o.ok, "{ranks} ranks: a NaN row must fail the job");
        let last = ranks - 1;
        assert!(
            o.stderr.contains(&format!("rank {last}: ")) && o.stderr.contains("nan.h5") && o.stderr.contains(&format!("row 27 (id '{bad_id}')"))
                && o.stderr.contains("NaN"),
            "{ranks} ranks: rank 0 must report rank {last}'s error: {}",
            o.stderr
        );
        // The ranks that did their part stop with an error too (not killed, not exit 0).
        for r in 1..last {
            assert!(o.stderr.contains(&format!("rank {r}: stopping because rank(s) {last} failed")), "{}", o.stderr);
        }
        assert!(!out.exists(), "no output after a failure");
    }

    // An unreadable candidate file fails on every rank; rank 0 lists them all.
    let missing = d.join("missing.h5");
    let o = screen(3, &["--queries", p(&qp), "--candidates", p(&missing), "-k", "3", "--out", p(&out)]);
    assert!(!o.ok);
    for r in 0..3 {
        assert!(o.stderr.contains(&format!("rank {r}: ")) && o.stderr.contains("missing.h5"), "{}", o.stderr);
    }

    // Rank 0 cannot write the output: the other ranks must not report success either.
    // (Its parent is a regular file, so no directory can be created there.)
    let unwritable = qp.join("hits.csv");
    let o = screen(2, &["--queries", p(&qp), "--candidates", p(&cp), "-k", "3", "--out", p(&unwritable)]);
    assert!(!o.ok);
    assert!(o.stderr.contains("rank 1: rank 0 failed to merge or write") && o.stderr.contains("q.h5/hits.csv"), "{}", o.stderr);
}
