//! The screen on a GPU, run on `cuda-sim` (the device code executed on the CPU): the CSV of
//! `multimat-screen --device cuda-sim` is byte-identical to the CPU screen's — Gaussian and
//! tie-heavy lattice data, ties cut by k, k ≥ N, several candidate blocks, a two-modality screen
//! and two MPI ranks — and the host re-score that keeps it identical is tested on its own with
//! device scores that differ from the CPU's in the last bits (another summation order), including
//! the fallback for near-tie groups wider than the device's short list.

use multimat::embeddings::{block_ranges, write_embeddings, EmbeddingsMeta};
use multimat::engine::gpu::topk::topk_rows_reference;
use multimat::screen::gpu::{id_ranks, reconcile_query, row_norm, score_error_bound, SLACK};
use multimat::screen::random::{random_embeddings, RandomKind};
use multimat::screen::{merge_topk, topk_over_range, CandidateSource, EmbeddingMatrix, Hit, ScreenConfig};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_multimat-screen")).args(args).output().expect("running multimat-screen")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn file(dir: &Path, name: &str, n: usize, dim: usize, seed: u64, kind: RandomKind, prefix: &str, modality: &str) -> PathBuf {
    let (ids, rows) = random_embeddings(n, dim, seed, 0.1, kind, prefix).unwrap();
    let meta = EmbeddingsMeta { modality: modality.into(), model_id: "m".into(), checkpoint_sha256: String::new(), normalised: false, producer: "screen_gpu test".into() };
    let path = dir.join(name);
    write_embeddings(&path, &meta, dim, &ids, &rows).unwrap();
    path
}

/// The CSV of one screen on `device` (and its wall time).
fn screen_csv(dir: &Path, device: &str, tag: &str, args: &[&str]) -> (String, f64) {
    let out = dir.join(format!("{tag}-{device}.csv"));
    let t = Instant::now();
    let o = run(&[args, &["--device", device, "--out", p(&out), "-q"]].concat());
    let s = t.elapsed().as_secs_f64();
    assert!(o.status.success(), "{device} {tag}: {}", String::from_utf8_lossy(&o.stderr));
    (std::fs::read_to_string(&out).unwrap(), s)
}

#[test]
fn cuda_sim_writes_the_cpu_csv_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Gaussian D = 64 (10 % exact duplicate rows: ties), lattice D = 8 (nearly every similarity
    // is a tie, so the id rule decides every list, and groups of equal scores are far wider than
    // the device's short list: the fallback path).
    let gq = file(d, "gq.h5", 23, 64, 1, RandomKind::Gaussian, "q-", "dos");
    let gc = file(d, "gc.h5", 300, 64, 2, RandomKind::Gaussian, "mp-", "crystal");
    let lq = file(d, "lq.h5", 17, 8, 3, RandomKind::Lattice, "q,", "dos");
    let lc = file(d, "lc.h5", 250, 8, 4, RandomKind::Lattice, "mp-", "crystal");
    let (g, l) = ([p(&gq), p(&gc)], [p(&lq), p(&lc)]);
    let cases: Vec<(&str, Vec<&str>)> = vec![
        // one block, k with slack inside the block
        ("gauss-k10", vec!["--queries", g[0], "--candidates", g[1], "-k", "10"]),
        // several blocks (the last one partial), the running threshold across blocks
        ("gauss-blocks", vec!["--queries", g[0], "--candidates", g[1], "-k", "7", "--block-candidates", "64"]),
        // k larger than the kernel's list (64): device k-th unknown, threshold from merged hits
        ("gauss-k70", vec!["--queries", g[0], "--candidates", g[1], "-k", "70", "--block-candidates", "100"]),
        // ties cut by k everywhere
        ("lattice-k5", vec!["--queries", l[0], "--candidates", l[1], "-k", "5", "--block-candidates", "40"]),
        // k ≥ N: every candidate, in the CPU's order
        ("lattice-all", vec!["--queries", l[0], "--candidates", l[1], "-k", "400", "--block-candidates", "90"]),
    ];
    for (tag, args) in &cases {
        let (cpu, cpu_s) = screen_csv(d, "cpu", tag, args);
        let (sim, sim_s) = screen_csv(d, "cuda-sim", tag, args);
        let rows = cpu.lines().count() - 1;
        assert!(rows > 0);
        assert!(cpu == sim, "{tag}: cuda-sim CSV differs from the CPU's:\n{}", first_difference(&cpu, &sim));
        println!("{tag}: {rows} hit rows identical; cpu {cpu_s:.2} s, cuda-sim {sim_s:.2} s (sanity numbers, whole process)");
    }
    // k ≥ N lists every candidate once per query.
    let (all, _) = screen_csv(d, "cuda-sim", "lattice-all", &cases[4].1);
    assert_eq!(all.lines().count() - 1, 17 * 250);

    // Two modalities (weighted, joined by id) on the device, the same bytes as the CPU.
    let q2 = file(d, "q2.h5", 23, 16, 5, RandomKind::Gaussian, "q-", "charge_density");
    let c2 = file(d, "c2.h5", 300, 16, 6, RandomKind::Gaussian, "mp-", "charge_density");
    let mm = ["--queries", g[0], "--candidates", g[1], "--queries2", p(&q2), "--candidates2", p(&c2), "--weights", "0.7,0.3", "-k", "9", "--block-candidates", "128"];
    let (cpu, _) = screen_csv(d, "cpu", "mm", &mm);
    let (sim, _) = screen_csv(d, "cuda-sim", "mm", &mm);
    assert!(cpu == sim, "two-modality: {}", first_difference(&cpu, &sim));
}

fn first_difference(a: &str, b: &str) -> String {
    for (i, (x, y)) in a.lines().zip(b.lines()).enumerate() {
        if x != y {
            return format!("line {}: cpu {x:?} vs device {y:?}", i + 1);
        }
    }
    format!("{} vs {} lines", a.lines().count(), b.lines().count())
}

#[test]
fn a_bad_device_is_refused_when_the_flags_are_parsed() {
    let o = run(&["--queries", "q.h5", "--candidates", "c.h5", "--out", "x.csv", "--device", "gpu0"]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("gpu0") && e.contains("cuda-sim"), "{e}");
}

/// The GPU screen's host loop with a fake device whose similarities differ from the CPU's in
/// the last bits: per block, scores summed in reverse order (another rounding sequence, within
/// the bound E), the kernel's selection (its CPU reference) of kk = min(k + SLACK, 64, block),
/// then `reconcile_query` and `merge_topk`, exactly as `screen::gpu` does.
fn fake_device_screen(q: &EmbeddingMatrix, c: &EmbeddingMatrix, k: usize, block: usize) -> (Vec<Vec<Hit>>, u64, f32) {
    let mut acc: Vec<Vec<Hit>> = vec![Vec::new(); q.len()];
    let (mut fallbacks, mut max_diff) = (0u64, 0.0f32);
    for r in block_ranges(0..c.len(), block) {
        let b = c.read_block(r).unwrap();
        let nc = b.ids.len();
        let rank = id_ranks(&b.ids);
        let cmax = b.rows.chunks(q.dim).map(row_norm).fold(0.0f64, f64::max);
        let kk = (k + SLACK).min(64).min(nc);
        let mut scores = vec![0.0f32; q.len() * nc];
        for i in 0..q.len() {
            for j in 0..nc {
                let (x, y) = (q.row(i), &b.rows[j * q.dim..(j + 1) * q.dim]);
                scores[i * nc + j] = (0..q.dim).rev().fold(0.0f32, |s, d| s + x[d] * y[d]);
            }
        }
        let (hs, hc) = topk_rows_reference(&scores, &rank, q.len(), nc, kk);
        let mut new = Vec::new();
        for i in 0..q.len() {
            let (hits, fell_back, _) = reconcile_query(q.row(i), &b, &hs[i * kk..(i + 1) * kk], &hc[i * kk..(i + 1) * kk], &acc[i], k, score_error_bound(q.dim, row_norm(q.row(i)) * cmax));
            fallbacks += u64::from(fell_back);
            for h in &hits {
                let j = b.ids.iter().position(|id| *id == h.candidate_id).unwrap();
                max_diff = max_diff.max((h.similarity - scores[i * nc + j]).abs());
            }
            new.push(hits);
        }
        let old = std::mem::take(&mut acc);
        acc = merge_topk(vec![old, new], k).unwrap();
    }
    (acc, fallbacks, max_diff)
}

fn matrix(n: usize, dim: usize, seed: u64, dup: f64, kind: RandomKind, prefix: &str) -> EmbeddingMatrix {
    let (ids, rows) = random_embeddings(n, dim, seed, dup, kind, prefix).unwrap();
    EmbeddingMatrix::from_raw(ids, rows, dim, Path::new("<test>")).unwrap()
}

#[test]
fn host_rescore_gives_the_cpu_hits_when_device_scores_differ_in_the_last_bits() {
    let q = matrix(12, 96, 7, 0.0, RandomKind::Gaussian, "q-");
    let mut c = matrix(400, 96, 8, 0.05, RandomKind::Gaussian, "mp-");
    // A near-tie group wider than the short list: 80 copies of one row, each nudged by ±1 ulp in
    // one component (similarities equal up to rounding), plus copies of query 0 itself so the
    // group is query 0's best.
    let dim = c.dim;
    for j in 0..80 {
        let src: Vec<f32> = q.row(0).to_vec();
        let dst = &mut c.rows[(100 + j) * dim..(101 + j) * dim];
        dst.copy_from_slice(&src);
        let bits = dst[j % dim].to_bits();
        dst[j % dim] = f32::from_bits(if j % 3 == 0 { bits } else if j % 3 == 1 { bits + 1 } else { bits - 1 });
    }
    let cpu_cfg = ScreenConfig::default();
    for (k, block) in [(5, 400), (10, 64), (3, 17), (70, 150), (500, 128)] {
        let want = topk_over_range(&q, &c, 0..c.len(), k, &cpu_cfg).unwrap();
        let (got, fallbacks, max_diff) = fake_device_screen(&q, &c, k, block);
        assert_eq!(got, want, "k = {k}, block = {block}: re-scored hits differ from the CPU screen");
        for (a, b) in got.iter().flatten().zip(want.iter().flatten()) {
            assert_eq!(a.similarity.to_bits(), b.similarity.to_bits());
        }
        // The fake device did differ from the CPU (so the re-score mattered), within E.
        assert!(max_diff > 0.0 && (max_diff as f64) <= score_error_bound(dim, 1.0), "k = {k}: max |device − cpu| = {max_diff:e}");
        // Query 0's 80 near-equal copies fill the short list whenever kk < block: fallback.
        if k + SLACK < 64 && block > 64 {
            assert!(fallbacks > 0, "k = {k}, block = {block}: the near-tie group must take the fallback");
        }
        println!("k = {k}, block = {block}: identical; {fallbacks} (query, block) fallbacks; max |device − cpu| {max_diff:e}, E (unit rows) = {:e}", score_error_bound(dim, 1.0));
    }
}

#[test]
fn two_mpi_ranks_on_cuda_sim_write_the_serial_cpu_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let q = file(d, "q.h5", 9, 8, 11, RandomKind::Lattice, "q-", "dos");
    let c = file(d, "c.h5", 120, 8, 12, RandomKind::Lattice, "mp-", "crystal");
    let args = ["--queries", p(&q), "--candidates", p(&c), "-k", "6", "--block-candidates", "25"];
    let (cpu, _) = screen_csv(d, "cpu", "serial", &args);
    let out = d.join("mpi.csv");
    let o = Command::new("mpirun")
        .args(["-n", "2", env!("CARGO_BIN_EXE_multimat-screen")])
        .args(args)
        .args(["--device", "cuda-sim", "--out", p(&out), "-q"])
        .output()
        .expect("starting mpirun (MPICH must be installed)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(cpu == std::fs::read_to_string(&out).unwrap(), "2 ranks on cuda-sim differ from the serial CPU screen");
}
