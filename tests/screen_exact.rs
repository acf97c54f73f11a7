//! The screen against the plain f64 reference (`screen::reference`), through real embeddings
//! files: bit-identical on exact-arithmetic lattice data (where nearly every similarity is a tie
//! and the id tie-break decides the lists), equal up to f32 resolution on Gaussian data, and
//! identical — bit for bit — whatever the block sizes, the parallel mode, or the partition of the
//! candidates into ranges merged with `merge_topk` (what the MPI screen relies on).

use multimat::embeddings::{write_embeddings, EmbeddingsMeta, EmbeddingsReader};
use multimat::screen::random::{random_embeddings, RandomKind};
use multimat::screen::reference::{topk_reference, RawEmbeddings};
use multimat::screen::{
    merge_topk, prepare, rank_order, shard_range, topk_over_range, EmbeddingMatrix, Hit, Parallelism, ScreenConfig,
    ScreenInputs,
};
use std::path::{Path, PathBuf};

fn meta(modality: &str) -> EmbeddingsMeta {
    EmbeddingsMeta {
        modality: modality.into(),
        model_id: "test-model".into(),
        checkpoint_sha256: "0f".repeat(32),
        normalised: false,
        producer: "screen_exact test".into(),
    }
}

struct Set {
    ids: Vec<String>,
    rows: Vec<f32>,
    dim: usize,
    path: PathBuf,
}

impl Set {
    fn raw(&self) -> RawEmbeddings<'_> {
        RawEmbeddings { ids: &self.ids, rows: &self.rows, dim: self.dim }
    }
}

fn make(dir: &Path, name: &str, n: usize, dim: usize, seed: u64, dup: f64, kind: RandomKind, prefix: &str) -> Set {
    let (ids, rows) = random_embeddings(n, dim, seed, dup, kind, prefix).unwrap();
    let path = dir.join(name);
    write_embeddings(&path, &meta("crystal"), dim, &ids, &rows).unwrap();
    Set { ids, rows, dim, path }
}

fn configs() -> Vec<ScreenConfig> {
    let base = ScreenConfig::default();
    vec![
        base.clone(),
        ScreenConfig { block_queries: 1, block_candidates: 1, tile_candidates: 1, prefetch: false, ..base.clone() },
        ScreenConfig { block_queries: 7, block_candidates: 33, tile_candidates: 5, threads: Some(3), ..base.clone() },
        ScreenConfig { block_queries: 64, block_candidates: 100, tile_candidates: 64, parallelism: Parallelism::Gemm, ..base.clone() },
        ScreenConfig { block_queries: 1000, block_candidates: 257, tile_candidates: 17, threads: Some(1), ..base },
    ]
}

fn screen_files(q: &Path, c: &Path, k: usize, cfg: &ScreenConfig) -> (Vec<String>, Vec<Vec<Hit>>) {
    let inputs = ScreenInputs {
        queries: Some(q.to_path_buf()),
        candidates: Some(c.to_path_buf()),
        queries2: None,
        candidates2: None,
        weights: vec![0.5, 0.5],
        allow_model_mismatch: false,
    };
    let p = prepare(&inputs).unwrap();
    let n = p.candidates.len();
    let hits = topk_over_range(&p.queries, &*p.candidates, 0..n, k, cfg).unwrap();
    (p.queries.ids.clone(), hits)
}

/// Exact equality with the reference: same ids in the same order, same similarity values.
fn assert_exactly_reference(query_ids: &[String], hits: &[Vec<Hit>], reference: &[(String, Vec<(String, f64)>)], what: &str) {
    assert_eq!(query_ids.len(), reference.len(), "{what}: query count");
    for ((qid, got), (rid, want)) in query_ids.iter().zip(hits).zip(reference) {
        assert_eq!(qid, rid, "{what}: query order");
        let got: Vec<(String, f64)> = got.iter().map(|h| (h.candidate_id.clone(), h.similarity as f64)).collect();
        assert_eq!(&got, want, "{what}: query {qid}");
    }
}

#[test]
fn lattice_data_equals_f64_reference_bit_for_bit_including_ties_and_k_beyond_n() {
    let dir = tempfile::tempdir().unwrap();
    // dim 8 with 4 non-zeros of ±0.5 or ±1: cosines are multiples of 1/4, so almost every
    // candidate ties with many others and the id rule decides; 10% are exact duplicates.
    let q = make(dir.path(), "q.h5", 40, 8, 11, 0.1, RandomKind::Lattice, "q-");
    let c = make(dir.path(), "c.h5", 600, 8, 12, 0.1, RandomKind::Lattice, "mp-");
    for k in [1, 7, 64, 600, 1000] {
        let reference = topk_reference(&[(1.0, q.raw(), c.raw())], k);
        assert!(reference.iter().all(|(_, l)| l.len() == k.min(600)));
        for (i, cfg) in configs().iter().enumerate() {
            let (qids, hits) = screen_files(&q.path, &c.path, k, cfg);
            assert_exactly_reference(&qids, &hits, &reference, &format!("k={k} config {i}"));
        }
    }
}

#[test]
fn gaussian_data_equals_f64_reference_up_to_f32_resolution() {
    let dir = tempfile::tempdir().unwrap();
    let q = make(dir.path(), "q.h5", 60, 32, 21, 0.0, RandomKind::Gaussian, "q-");
    let c = make(dir.path(), "c.h5", 1500, 32, 22, 0.05, RandomKind::Gaussian, "mp-");
    let reference_sim: Vec<std::collections::HashMap<String, f64>> = topk_reference(&[(1.0, q.raw(), c.raw())], usize::MAX)
        .into_iter()
        .map(|(_, l)| l.into_iter().collect())
        .collect();
    for k in [10, 1600] {
        let reference = topk_reference(&[(1.0, q.raw(), c.raw())], k);
        let (_, hits) = screen_files(&q.path, &c.path, k, &ScreenConfig::default());
        let mut near_tie_swaps = 0;
        for (qi, (got, (_, want))) in hits.iter().zip(&reference).enumerate() {
            assert_eq!(got.len(), want.len());
            for (r, (h, (wid, wsim))) in got.iter().zip(want).enumerate() {
                // f32 GEMM vs f64 loops: |error| ≤ D·ε_f32 ≈ 4e-6 for unit vectors, in practice ≲1e-6.
                assert!((h.similarity as f64 - wsim).abs() < 2e-6, "query {qi} rank {r}: {} vs {wsim}", h.similarity);
                if &h.candidate_id != wid {
                    // Only a near-tie (closer than f32 can resolve) may swap places.
                    let own = reference_sim[qi][&h.candidate_id];
                    assert!((own - wsim).abs() < 2e-6, "query {qi} rank {r}: {} (ref {own}) instead of {wid} (ref {wsim})", h.candidate_id);
                    near_tie_swaps += 1;
                }
            }
            // Exact duplicates (bitwise-equal similarities) must come in id order.
            for w in got.windows(2) {
                assert_ne!(
                    rank_order(w[1].similarity, &w[1].candidate_id, w[0].similarity, &w[0].candidate_id),
                    std::cmp::Ordering::Less,
                    "query {qi}: list not in ranking order"
                );
            }
        }
        // Exact ties are resolved identically; near-ties in the full sort are rare.
        assert!(near_tie_swaps <= hits.len() * k.min(1500) / 200, "{near_tie_swaps} near-tie swaps for k={k}");
        // The duplicated rows really produce exact ties in the output.
        if k > 1500 {
            let ties = hits[0].windows(2).filter(|w| w[0].similarity == w[1].similarity).count();
            assert!(ties >= 40, "expected exact ties from ~5% duplicates, found {ties}");
        }
    }
}

#[test]
fn identical_across_block_sizes_modes_and_candidate_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let q = make(dir.path(), "q.h5", 40, 24, 31, 0.0, RandomKind::Gaussian, "q-");
    let c = make(dir.path(), "c.h5", 1200, 24, 32, 0.2, RandomKind::Gaussian, "mp-");
    let queries = EmbeddingMatrix::from_reader(&EmbeddingsReader::open(&q.path).unwrap()).unwrap();
    let cands = EmbeddingsReader::open(&c.path).unwrap();
    for k in [1, 10, 1205] {
        let base = topk_over_range(&queries, &cands, 0..1200, k, &ScreenConfig::default()).unwrap();
        for (i, cfg) in configs().iter().enumerate() {
            let got = topk_over_range(&queries, &cands, 0..1200, k, cfg).unwrap();
            assert_eq!(got, base, "k={k}: config {i} differs from the default");
        }
        let mut partitions: Vec<Vec<std::ops::Range<usize>>> =
            [2, 3].iter().map(|&w| (0..w).map(|r| shard_range(1200, r, w)).collect()).collect();
        partitions.push(vec![0..1, 1..1199, 1199..1200]);
        partitions.push(vec![0..0, 0..700, 700..1200]);
        for ranges in partitions {
            let small = ScreenConfig { block_candidates: 97, tile_candidates: 31, ..ScreenConfig::default() };
            let parts = ranges.iter().map(|r| topk_over_range(&queries, &cands, r.clone(), k, &small).unwrap()).collect();
            assert_eq!(merge_topk(parts, k).unwrap(), base, "k={k}: merged partition {ranges:?} differs");
        }
    }
}

#[test]
fn multimodal_weighted_screen_equals_reference_over_ids_in_both() {
    let dir = tempfile::tempdir().unwrap();
    // Two modalities with partially overlapping, differently ordered ids: 30 of the 40 queries
    // and 450 of the 500 first-modality candidates have the second modality.
    let q1 = make(dir.path(), "q1.h5", 40, 8, 41, 0.1, RandomKind::Lattice, "q-");
    let q2 = make(dir.path(), "q2.h5", 30, 12, 42, 0.1, RandomKind::Lattice, "q-");
    let c1 = make(dir.path(), "c1.h5", 500, 8, 43, 0.1, RandomKind::Lattice, "mp-");
    let c2 = make(dir.path(), "c2.h5", 450, 12, 44, 0.1, RandomKind::Lattice, "mp-");
    for (w1, w2) in [(0.5f32, 0.5f32), (0.75, 0.25)] {
        for k in [5, 450] {
            let reference = topk_reference(&[(w1 as f64, q1.raw(), c1.raw()), (w2 as f64, q2.raw(), c2.raw())], k);
            assert_eq!(reference.len(), 30);
            let inputs = ScreenInputs {
                queries: Some(q1.path.clone()),
                candidates: Some(c1.path.clone()),
                queries2: Some(q2.path.clone()),
                candidates2: Some(c2.path.clone()),
                weights: vec![w1, w2],
                allow_model_mismatch: false,
            };
            let p = prepare(&inputs).unwrap();
            for cfg in configs() {
                let hits = topk_over_range(&p.queries, &*p.candidates, 0..p.candidates.len(), k, &cfg).unwrap();
                assert_exactly_reference(&p.queries.ids, &hits, &reference, &format!("weights {w1},{w2} k={k}"));
            }
        }
    }
}
