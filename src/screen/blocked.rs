//! The exact top-k engine: a query block × candidate tile GEMM fused with per-query bounded
//! heaps, streaming candidate blocks from a source (file or memory) so memory is bounded by the
//! block sizes, never by the candidate count.
//!
//! Data flow for one candidate block (rows `r`, read and L2-normalised by the source, optionally
//! on a prefetch thread while the previous block is being scored):
//! ```text
//!   for every query block (rayon, one task per block; GEMM single-threaded inside):
//!     for every tile of `TILE` candidates of the block:
//!       scores (bq, tile) = Q_blk (bq, D) · C_tileᵀ (D, tile)      -- crate::engine sgemm
//!       (both operands stored transposed so matrixmultiply packs them with memcpy)
//!       for every query row: skip 16 scores at a time unless one reaches the row's
//!       current k-th similarity; offer the rest to the row's TopK heap
//! ```
//! The tile keeps the score buffer (bq × tile × 4 B = 2 MiB at the defaults) in L2/L3 between the
//! GEMM that writes it and the scan that reads it.
//!
//! Determinism: every similarity is one dot product of the same two normalised rows with the
//! same summation order (the GEMM splits neither D nor, with D ≤ 256, its k loop), so a pair
//! gets the same f32 bits whatever the block sizes or partition; the heaps apply the total
//! order of `topk::rank_order`, so the result is a function of the candidate set alone.
//!
//! For MPI (issue 7): [`topk_over_range`] screens one contiguous range of candidate rows;
//! [`shard_range`] gives a rank its range; `topk::merge_topk` combines the ranks' lists.

use super::topk::{Hit, TopK};
use crate::embeddings::{block_ranges, EmbeddingsReader, RowBlock};
use crate::engine::ops::matmul::sgemm;
use anyhow::{ensure, Result};
use rayon::prelude::*;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Candidate columns per GEMM call inside a block (see the module docs).
pub const DEFAULT_TILE_CANDIDATES: usize = 1024;

/// In-memory, L2-normalised embeddings with ids (queries, or candidates in tests).
#[derive(Clone, Debug, PartialEq)]
pub struct EmbeddingMatrix {
    pub ids: Vec<String>,
    pub rows: Vec<f32>, // (n, dim), unit rows
    pub dim: usize,
}

impl EmbeddingMatrix {
    /// Normalise raw rows; `source` names the origin in errors.
    pub fn from_raw(ids: Vec<String>, rows: Vec<f32>, dim: usize, source: &Path) -> Result<Self> {
        ensure!(dim > 0 && rows.len() == ids.len() * dim, "{}: {} ids but {} values for dim {dim}", source.display(), ids.len(), rows.len());
        let mut block = RowBlock { start: 0, ids, rows, dim };
        block.normalise(source)?;
        Ok(EmbeddingMatrix { ids: block.ids, rows: block.rows, dim })
    }

    /// Read a whole file (queries are held in memory; candidates stream).
    pub fn from_reader(reader: &EmbeddingsReader) -> Result<Self> {
        let block = reader.read_all_normalised()?;
        Ok(EmbeddingMatrix { ids: block.ids, rows: block.rows, dim: block.dim })
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    pub fn row(&self, i: usize) -> &[f32] {
        &self.rows[i * self.dim..(i + 1) * self.dim]
    }
}

/// Where candidate rows come from. `read_block` returns L2-normalised rows (a joined
/// multi-modal source may return fewer rows than asked: those present in both files).
pub trait CandidateSource: Sync {
    /// Rows addressable by ranges.
    fn len(&self) -> usize;
    fn dim(&self) -> usize;
    fn read_block(&self, rows: Range<usize>) -> Result<RowBlock>;
}

impl CandidateSource for EmbeddingsReader {
    fn len(&self) -> usize {
        EmbeddingsReader::len(self)
    }
    fn dim(&self) -> usize {
        EmbeddingsReader::dim(self)
    }
    fn read_block(&self, rows: Range<usize>) -> Result<RowBlock> {
        self.read_block_normalised(rows)
    }
}

impl CandidateSource for EmbeddingMatrix {
    fn len(&self) -> usize {
        self.ids.len()
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn read_block(&self, rows: Range<usize>) -> Result<RowBlock> {
        ensure!(rows.end <= self.len(), "rows {rows:?} out of range (N = {})", self.len());
        Ok(RowBlock {
            start: rows.start,
            ids: self.ids[rows.clone()].to_vec(),
            rows: self.rows[rows.start * self.dim..rows.end * self.dim].to_vec(),
            dim: self.dim,
        })
    }
}

/// Which level runs in parallel. Measured on 2 cores (see ARCHITECTURE.md): one level only,
/// because matrixmultiply's own threads and rayon's would otherwise oversubscribe the cores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Parallelism {
    /// rayon over query blocks; each GEMM single-threaded (needs MATMUL_NUM_THREADS=1, which
    /// the CLI sets). GEMM and scan of a tile stay on one core.
    QueryBlocks,
    /// query blocks in sequence; matrixmultiply threads each GEMM, rayon threads the scan.
    Gemm,
}

/// Tuning knobs; none of them changes the result.
#[derive(Clone, Debug)]
pub struct ScreenConfig {
    /// Queries per GEMM (rows of the score tile).
    pub block_queries: usize,
    /// Candidate rows read from the source at a time (memory: about 4 × block × D × 4 B with
    /// prefetch — the block being read, its transposed copy, one queued, one being scored).
    pub block_candidates: usize,
    /// Candidate columns per GEMM call within a block.
    pub tile_candidates: usize,
    /// Rayon threads (None: rayon's default pool).
    pub threads: Option<usize>,
    pub parallelism: Parallelism,
    /// Read the next candidate block on a helper thread while scoring the current one.
    pub prefetch: bool,
    /// Show a progress bar over candidate blocks on stderr.
    pub progress: bool,
    /// Where the similarities are computed: the CPU (this module), or a GPU / `cuda-sim`
    /// (`screen::gpu`, the same result).
    pub device: crate::engine::Device,
}

impl Default for ScreenConfig {
    fn default() -> Self {
        ScreenConfig {
            block_queries: 512,
            block_candidates: 16384,
            tile_candidates: DEFAULT_TILE_CANDIDATES,
            threads: None,
            parallelism: Parallelism::QueryBlocks,
            prefetch: true,
            progress: false,
            device: crate::engine::Device::Cpu,
        }
    }
}

/// Time spent per phase (nanoseconds, summed over threads), for `multimat-screen bench`.
#[derive(Debug, Default)]
pub struct ScreenStats {
    pub read_ns: AtomicU64,
    pub gemm_ns: AtomicU64,
    pub scan_ns: AtomicU64,
    pub wait_ns: AtomicU64,
    /// GPU screen only: (query, block) pairs re-scored in full on the host because near-ties
    /// filled the device's short list (see `screen::gpu`).
    pub fallbacks: AtomicU64,
    /// GPU screen only: candidates re-scored on the host (short lists and fallbacks).
    pub rescored: AtomicU64,
}

impl ScreenStats {
    pub fn secs(v: &AtomicU64) -> f64 {
        v.load(Ordering::Relaxed) as f64 * 1e-9
    }
}

/// The contiguous range of `n` rows that rank `rank` of `world` screens (sizes differ by ≤ 1).
pub fn shard_range(n: usize, rank: usize, world: usize) -> Range<usize> {
    assert!(world > 0 && rank < world, "rank {rank} of {world}");
    let (base, extra) = (n / world, n % world);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// A block of queries and their heaps.
struct QueryBlock {
    len: usize,
    /// The block's query rows transposed, (D, bq): matrixmultiply packs an operand with
    /// contiguous copies only when its packing direction is unit-stride, which for A = Q_blk
    /// means (k × m) storage (`trans_a`). Row-major (bq, D) took ~15 % of GEMM time in packing.
    queries_t: Vec<f32>, // (D, bq)
    heaps: Vec<TopK>,
}

/// A candidate block ready for the GEMMs: ids and, per tile, the tile's rows transposed to
/// (D, nc) — B in (k × n) storage, the layout matrixmultiply packs with contiguous copies.
/// Built once per block (on the prefetch thread) and shared by every query block.
struct PreparedBlock {
    ids: Vec<String>,
    tiles: Vec<(Range<usize>, Vec<f32>)>, // (tile rows, (D, nc))
}

/// Column-major copy of rows `r` of a (n, dim) row-major matrix: (dim, r.len()). Done in
/// panels of 16 rows so each write fills whole cache lines and the strided reads stay in L1.
fn transpose_rows(rows: &[f32], dim: usize, r: Range<usize>) -> Vec<f32> {
    const PANEL: usize = 16;
    let nc = r.len();
    let src = &rows[r.start * dim..r.end * dim]; // (nc, D)
    let mut t = vec![0.0f32; dim * nc]; // (D, nc)
    for j0 in (0..nc).step_by(PANEL) {
        let j1 = (j0 + PANEL).min(nc);
        for d in 0..dim {
            let out = &mut t[d * nc + j0..d * nc + j1];
            for (o, j) in out.iter_mut().zip(j0..j1) {
                *o = src[j * dim + d];
            }
        }
    }
    t
}

fn prepare_block(block: RowBlock, tile: usize) -> PreparedBlock {
    let tiles = block_ranges(0..block.len(), tile).map(|r| (r.clone(), transpose_rows(&block.rows, block.dim, r))).collect();
    PreparedBlock { ids: block.ids, tiles }
}

/// Top-k candidates of every query among candidate rows `cand_range`, best first.
pub fn topk_over_range<S: CandidateSource + ?Sized>(
    queries: &EmbeddingMatrix,
    candidates: &S,
    cand_range: Range<usize>,
    k: usize,
    cfg: &ScreenConfig,
) -> Result<Vec<Vec<Hit>>> {
    topk_over_range_with_stats(queries, candidates, cand_range, k, cfg, &ScreenStats::default())
}

/// [`topk_over_range`], recording phase times in `stats`.
pub fn topk_over_range_with_stats<S: CandidateSource + ?Sized>(
    queries: &EmbeddingMatrix,
    candidates: &S,
    cand_range: Range<usize>,
    k: usize,
    cfg: &ScreenConfig,
    stats: &ScreenStats,
) -> Result<Vec<Vec<Hit>>> {
    ensure!(
        queries.dim == candidates.dim(),
        "dimension mismatch: queries are {}-d, candidates {}-d",
        queries.dim,
        candidates.dim()
    );
    ensure!(
        cand_range.start <= cand_range.end && cand_range.end <= candidates.len(),
        "candidate range {cand_range:?} out of bounds (N = {})",
        candidates.len()
    );
    ensure!(cfg.block_queries > 0 && cfg.block_candidates > 0 && cfg.tile_candidates > 0, "block sizes must be positive");
    if cfg.device.is_gpu() {
        return super::gpu::topk_over_range_gpu(queries, candidates, cand_range, k, cfg, stats);
    }
    let mut qblocks: Vec<QueryBlock> = block_ranges(0..queries.len(), cfg.block_queries)
        .map(|r| QueryBlock {
            len: r.len(),
            queries_t: transpose_rows(&queries.rows, queries.dim, r.clone()),
            heaps: (0..r.len()).map(|_| TopK::new(k)).collect(),
        })
        .collect();
    if k == 0 || queries.is_empty() || cand_range.is_empty() {
        return Ok(qblocks.into_iter().flat_map(|b| b.heaps.into_iter().map(TopK::into_sorted)).collect());
    }
    let pool = match cfg.threads {
        Some(t) => Some(rayon::ThreadPoolBuilder::new().num_threads(t.max(1)).build()?),
        None => None,
    };
    let n_blocks = cand_range.len().div_ceil(cfg.block_candidates);
    let bar = if cfg.progress {
        let bar = indicatif::ProgressBar::new(n_blocks as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} candidate blocks, {elapsed} elapsed, eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_prefix("screen");
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut score_block = |block: PreparedBlock| {
        let mut work = || score_candidate_block(&mut qblocks, queries, &block, cfg, stats);
        match &pool {
            Some(p) => p.install(work),
            None => work(),
        }
        bar.inc(1);
    };
    let read = |r: Range<usize>| {
        let t = Instant::now();
        let b = candidates.read_block(r).map(|b| prepare_block(b, cfg.tile_candidates));
        stats.read_ns.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        b
    };
    stream_blocks(block_ranges(cand_range.clone(), cfg.block_candidates), cfg.prefetch && n_blocks > 1, read, |b| {
        score_block(b);
        Ok(())
    }, stats)?;
    bar.finish_and_clear();
    Ok(qblocks.into_iter().flat_map(|b| b.heaps.into_iter().map(TopK::into_sorted)).collect())
}

/// Reads the blocks `ranges` with `read` and hands each to `consume`, in order. With `prefetch`
/// the next block is read on a helper thread while `consume` works on the current one (time
/// spent waiting for a read goes to `stats.wait_ns`). Stops at the first error of either side.
/// Shared by the CPU engine and the GPU screen (`screen::gpu`).
pub(crate) fn stream_blocks<T: Send>(
    ranges: impl Iterator<Item = Range<usize>> + Send,
    prefetch: bool,
    read: impl Fn(Range<usize>) -> Result<T> + Sync,
    mut consume: impl FnMut(T) -> Result<()>,
    stats: &ScreenStats,
) -> Result<()> {
    if !prefetch {
        for r in ranges {
            consume(read(r)?)?;
        }
        return Ok(());
    }
    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<T>>(1);
        let read = &read;
        scope.spawn(move || {
            for r in ranges {
                let b = read(r);
                let failed = b.is_err();
                // A closed channel means the consumer stopped (an error): stop reading.
                if tx.send(b).is_err() || failed {
                    break;
                }
            }
        });
        loop {
            let t = Instant::now();
            let Ok(b) = rx.recv() else { break };
            stats.wait_ns.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
            consume(b?)?;
        }
        Ok(())
    })
}

/// Score one candidate block against every query block, updating the heaps.
fn score_candidate_block(
    qblocks: &mut [QueryBlock],
    queries: &EmbeddingMatrix,
    block: &PreparedBlock,
    cfg: &ScreenConfig,
    stats: &ScreenStats,
) {
    let dim = queries.dim;
    match cfg.parallelism {
        Parallelism::QueryBlocks => {
            qblocks.par_iter_mut().for_each_init(Vec::<f32>::new, |scores, qb| {
                let (mut gemm_ns, mut scan_ns) = (0u64, 0u64);
                for (tile, cand_t) in &block.tiles {
                    let nc = tile.len();
                    scores.resize(qb.len * nc, 0.0); // (bq, nc)
                    let t = Instant::now();
                    // scores = Q_blk · C_tileᵀ from Q_blkᵀ (D, bq) and C_tileᵀ (D, nc).
                    sgemm(scores, &qb.queries_t, cand_t, qb.len, nc, dim, true, false, 1.0, 0.0);
                    let t2 = Instant::now();
                    let ids = &block.ids[tile.clone()];
                    for (i, heap) in qb.heaps.iter_mut().enumerate() {
                        scan_row(&scores[i * nc..(i + 1) * nc], ids, heap);
                    }
                    gemm_ns += (t2 - t).as_nanos() as u64;
                    scan_ns += t2.elapsed().as_nanos() as u64;
                }
                stats.gemm_ns.fetch_add(gemm_ns, Ordering::Relaxed);
                stats.scan_ns.fetch_add(scan_ns, Ordering::Relaxed);
            });
        }
        Parallelism::Gemm => {
            let mut scores = Vec::<f32>::new();
            for qb in qblocks.iter_mut() {
                for (tile, cand_t) in &block.tiles {
                    let nc = tile.len();
                    scores.resize(qb.len * nc, 0.0); // (bq, nc)
                    let t = Instant::now();
                    sgemm(&mut scores, &qb.queries_t, cand_t, qb.len, nc, dim, true, false, 1.0, 0.0);
                    let t2 = Instant::now();
                    let ids = &block.ids[tile.clone()];
                    let scores = &scores;
                    qb.heaps.par_iter_mut().enumerate().with_min_len(16).for_each(|(i, heap)| {
                        scan_row(&scores[i * nc..(i + 1) * nc], ids, heap);
                    });
                    stats.gemm_ns.fetch_add((t2 - t).as_nanos() as u64, Ordering::Relaxed);
                    stats.scan_ns.fetch_add(t2.elapsed().as_nanos() as u64, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Offer one query's scores against a tile to its heap. Most scores are below the current k-th
/// similarity, so lanes of 16 are tested with a branch-free OR (vectorises) before any heap work.
#[inline]
fn scan_row(scores: &[f32], ids: &[String], heap: &mut TopK) {
    const LANES: usize = 16;
    let mut threshold = heap.threshold();
    let mut chunks = scores.chunks_exact(LANES);
    let mut base = 0;
    for chunk in &mut chunks {
        let lanes: &[f32; LANES] = chunk.try_into().expect("chunks_exact");
        let mut any = false;
        for &s in lanes {
            any |= s >= threshold;
        }
        if any {
            for (j, &s) in lanes.iter().enumerate() {
                if s >= threshold && heap.offer(s, &ids[base + j]) {
                    threshold = heap.threshold();
                }
            }
        }
        base += LANES;
    }
    for (j, &s) in chunks.remainder().iter().enumerate() {
        if s >= threshold && heap.offer(s, &ids[base + j]) {
            threshold = heap.threshold();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_ranges_cover_rows_exactly_once() {
        for n in [0, 1, 7, 10, 11] {
            for world in 1..5 {
                let mut next = 0;
                for rank in 0..world {
                    let r = shard_range(n, rank, world);
                    assert_eq!(r.start, next);
                    assert!(r.len() <= n / world + 1);
                    next = r.end;
                }
                assert_eq!(next, n);
            }
        }
    }

    #[test]
    fn scan_row_offers_ties_at_threshold() {
        let ids: Vec<String> = (0..40).map(|i| format!("c{i:02}")).collect();
        let mut scores = vec![0.0f32; 40];
        scores[3] = 0.5;
        scores[37] = 0.5; // in the remainder
        scores[20] = 0.5;
        let mut heap = TopK::new(2);
        scan_row(&scores, &ids, &mut heap);
        let got: Vec<_> = heap.into_sorted().into_iter().map(|h| h.candidate_id).collect();
        assert_eq!(got, vec!["c03", "c20"]);
    }
}
