//! The screen on a GPU (`--device cuda` / `cuda-sim`): candidate blocks streamed to the device,
//! one cuBLAS GEMM (a chunk of queries × the block) and the `topk_rows` kernel per block, and on
//! the host a re-score of each query's short list with the CPU screen's own arithmetic, merged
//! into the running top-k with `topk::merge_topk`. The CSV is byte-identical to the CPU screen's.
//!
//! Why a re-score: cuBLAS sums the D products of a similarity in another order than the CPU GEMM
//! (`blocked`), so a GPU similarity may differ from the CPU's in the last bits, which would change
//! both the printed similarity and, for near-ties, the order. The CPU's bits are a function of the
//! two rows alone (see `blocked`), so the host recomputes them for the few candidates that can
//! still matter, and only the host's values are ranked and written.
//!
//! Which candidates can matter, exactly: let E bound |s_gpu − s_cpu| for any pair (both are f32
//! dot products of the same unit rows; for any summation order, FMA or not,
//! |fl(q·c) − q·c| ≤ γ_D Σ|q_i c_i| ≤ γ_D ‖q‖‖c‖ with γ_D = Du/(1 − Du), u = 2⁻²⁴; so
//! E = 2γ_D·‖q‖·max‖c‖·(1 + 10⁻⁴), norms taken per query and per block — unit rows give ~1, a
//! weighted two-modality screen other values). For one query and one block,
//! let τ be the CPU k-th best similarity over the blocks already merged (−∞ while fewer than k)
//! and t the device's k-th best score in this block (−∞ if the block has fewer than k columns or
//! the kernel selected fewer than k). The block holds k candidates with s_cpu ≥ t − E, so the
//! final k-th CPU similarity is ≥ max(τ, t − E), and every candidate of the final top-k has
//! s_gpu ≥ max(τ, t − E) − E =: cutoff. The kernel returns the block's kk best by device score
//! (kk = min(k + slack, 64, block)); if its kk-th score is below the cutoff (or it returned the
//! whole block) every candidate at or above the cutoff is in the list, and those are re-scored.
//! Otherwise — a group of near-ties wider than the list straddles the cutoff — the query falls
//! back to re-scoring the whole block on the host (counted in `ScreenStats::fallbacks`). Either
//! way the re-scored set contains every candidate of the final top-k, and the ranking (CPU bits,
//! `topk::rank_order`) and merge are the CPU screen's, so the output is the same.
//!
//! TF32 stays off for the screen (restored afterwards): TF32 rounds the operands to 10-bit
//! mantissas, so E would grow from ~1.5·10⁻⁵ (D = 128) to ~10⁻³, the short lists from k + a few
//! to thousands of near-ties per query among millions of candidates, and the host re-score would
//! cost more than the GEMM saved. The target is the f32 GEMM rate.
//!
//! Memory on the device: the queries, one candidate block with its id ranks, one score buffer of
//! (query chunk × block) floats (≤ 1 GiB) and the short lists.

use super::blocked::{stream_blocks, CandidateSource, EmbeddingMatrix, ScreenConfig, ScreenStats};
use super::topk::{merge_topk, Hit, TopK};
use crate::embeddings::{block_ranges, RowBlock};
use crate::engine::backend::{gpu, Gpu, GpuVec};
use crate::engine::gpu::matmul_row_major;
use crate::engine::gpu::topk::{topk_rows, TOPK_MAX};
use crate::engine::ops::matmul::sgemm;
use anyhow::{Context, Result};
use rayon::prelude::*;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Extra entries the kernel selects beyond k, so a few near-ties at the k-th place do not force
/// the fallback.
pub const SLACK: usize = 8;

/// Most floats of one score buffer (query chunk × candidate block): 1 GiB.
const SCORE_BUDGET: usize = 1 << 28;

/// E: a bound on |GPU similarity − CPU similarity| for rows of dimension `dim` whose norms
/// multiply to at most `norm_product` (1 for unit rows; a weighted two-modality screen
/// concatenates weighted unit parts, whose norms are not 1) — see the module docs.
pub fn score_error_bound(dim: usize, norm_product: f64) -> f64 {
    let du = dim as f64 * f64::powi(2.0, -24);
    2.0 * du / (1.0 - du) * norm_product * 1.0001
}

/// ‖row‖ in f64 (every f32 square is exact in f64).
pub fn row_norm(row: &[f32]) -> f64 {
    row.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>().sqrt()
}

/// The CPU screen's similarities of one query against `cols` of a block (rows (n, dim)), bit for
/// bit: the same GEMM (`sgemm` on Q_blkᵀ and C_tileᵀ storage) as `blocked`, whose per-pair result
/// does not depend on the number of rows or columns in the call.
pub fn cpu_similarities(query: &[f32], rows: &[f32], dim: usize, cols: &[usize]) -> Vec<f32> {
    let n = cols.len();
    let mut cand_t = vec![0.0f32; dim * n]; // (D, n)
    for (j, &c) in cols.iter().enumerate() {
        for (d, &v) in rows[c * dim..(c + 1) * dim].iter().enumerate() {
            cand_t[d * n + j] = v;
        }
    }
    let mut out = vec![0.0f32; n];
    if n > 0 {
        sgemm(&mut out, query, &cand_t, 1, n, dim, true, false, 1.0, 0.0);
    }
    out
}

/// One query's part of one block: the candidates that can still be in the final top-k,
/// re-scored with the CPU's bits, best first (at most k), and whether the fallback (re-score the
/// whole block) was needed. `dev_scores`/`dev_cols` are the device's kk best columns of the block
/// (best first by device score); `current` the query's merged CPU hits so far (sorted); `margin`
/// the bound E.
#[allow(clippy::too_many_arguments)]
pub fn reconcile_query(query: &[f32], block: &RowBlock, dev_scores: &[f32], dev_cols: &[i32], current: &[Hit], k: usize, margin: f64) -> (Vec<Hit>, bool, usize) {
    let (nc, kk) = (block.ids.len(), dev_scores.len());
    let tau = if current.len() >= k { current[k - 1].similarity as f64 } else { f64::NEG_INFINITY };
    let t = if k >= 1 && kk >= k { dev_scores[k - 1] as f64 } else { f64::NEG_INFINITY };
    let cutoff = tau.max(t - margin) - margin;
    let complete = kk >= nc || (dev_scores[kk - 1] as f64) < cutoff;
    let cols: Vec<usize> = if complete {
        dev_scores.iter().zip(dev_cols).filter(|(&s, _)| s as f64 >= cutoff).map(|(_, &c)| c as usize).collect()
    } else {
        (0..nc).collect()
    };
    let sims = cpu_similarities(query, &block.rows, block.dim, &cols);
    let mut heap = TopK::new(k);
    for (&c, &s) in cols.iter().zip(&sims) {
        heap.offer(s, &block.ids[c]);
    }
    (heap.into_sorted(), !complete, cols.len())
}

/// The block's id order as ranks: `rank[j]` = position of `ids[j]` among the block's ids sorted
/// bytewise (what the kernel breaks equal scores with, as the CPU breaks them by id).
pub fn id_ranks(ids: &[String]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..ids.len() as u32).collect();
    order.sort_by(|&a, &b| ids[a as usize].cmp(&ids[b as usize]).then(a.cmp(&b)));
    let mut rank = vec![0u32; ids.len()];
    for (r, &j) in order.iter().enumerate() {
        rank[j as usize] = r as u32;
    }
    rank
}

/// Restores the device's TF32 setting when the screen ends (also on an error).
struct Tf32Off<'a>(&'a Gpu, bool);
impl Drop for Tf32Off<'_> {
    fn drop(&mut self) {
        self.0.set_tf32(self.1);
    }
}

/// `blocked::topk_over_range_with_stats` on `cfg.device` (a GPU or `cuda-sim`): the same result.
/// The caller has checked dimensions and the range. `stats`: read = reading blocks, gemm = device
/// work (upload, GEMM, top-k kernel, download), scan = host re-score and merge, plus the
/// re-scored and fallback counts.
pub fn topk_over_range_gpu<S: CandidateSource + ?Sized>(
    queries: &EmbeddingMatrix,
    candidates: &S,
    cand_range: Range<usize>,
    k: usize,
    cfg: &ScreenConfig,
    stats: &ScreenStats,
) -> Result<Vec<Vec<Hit>>> {
    let mut acc: Vec<Vec<Hit>> = vec![Vec::new(); queries.len()];
    if k == 0 || queries.is_empty() || cand_range.is_empty() {
        return Ok(acc);
    }
    let g = gpu(cfg.device)?;
    let _tf32 = Tf32Off(&g, g.tf32());
    g.set_tf32(false);
    let dim = queries.dim;
    let gamma = score_error_bound(dim, 1.0);
    let qnorm: Vec<f64> = (0..queries.len()).map(|i| row_norm(queries.row(i))).collect();
    let (q_chunk, block_c) = gemm_shape(queries.len(), cand_range.len(), cfg.block_candidates);
    let dq = g.upload(&queries.rows).context("uploading the queries")?;
    let scores: GpuVec<f32> = g.uninit(q_chunk * block_c)?;
    let kk_max = k.saturating_add(SLACK).min(TOPK_MAX);
    let (mut out_s, mut out_c): (GpuVec<f32>, GpuVec<i32>) = (g.uninit(q_chunk * kk_max)?, g.uninit(q_chunk * kk_max)?);
    let pool = cfg.threads.map(|t| rayon::ThreadPoolBuilder::new().num_threads(t.max(1)).build()).transpose()?;
    let read = |r: Range<usize>| {
        let t = Instant::now();
        let b = candidates.read_block(r).map(|b| {
            let rank = id_ranks(&b.ids);
            let cmax = b.rows.chunks(b.dim.max(1)).map(row_norm).fold(0.0f64, f64::max);
            (b, rank, cmax)
        });
        stats.read_ns.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        b
    };
    let n_blocks = cand_range.len().div_ceil(cfg.block_candidates);
    stream_blocks(block_ranges(cand_range, cfg.block_candidates), cfg.prefetch && n_blocks > 1, read, |(block, rank, cmax)| {
        let nc = block.ids.len();
        if nc == 0 {
            return Ok(()); // a joined source may return no rows for a block
        }
        let t0 = Instant::now();
        let (dc, dr) = (g.upload(&block.rows)?, g.upload(&rank)?);
        let kk = kk_max.min(nc);
        let mut device_ns = t0.elapsed().as_nanos() as u64;
        for q0 in (0..queries.len()).step_by(q_chunk) {
            let nq = q_chunk.min(queries.len() - q0);
            let t1 = Instant::now();
            // scores (nq, nc) = Q[q0..q0+nq] (nq, D) · C_blockᵀ, C_block stored (nc, D).
            matmul_row_major(&g, false, true, nq, nc, dim, 1.0, dq.ptr() + (q0 * dim * 4) as u64, dc.ptr(), 0.0, scores.ptr())?;
            topk_rows(&g, &mut out_s, &mut out_c, &scores, &dr, nq, nc, kk)?;
            let (hs, hc) = (g.download(&out_s)?, g.download(&out_c)?);
            let t2 = Instant::now();
            device_ns += (t2 - t1).as_nanos() as u64;
            let parts: Vec<(Vec<Hit>, bool, usize)> = {
                let mut work = || {
                    (0..nq)
                        .into_par_iter()
                        .map(|i| {
                            let (s, c) = (&hs[i * kk..(i + 1) * kk], &hc[i * kk..(i + 1) * kk]);
                            reconcile_query(queries.row(q0 + i), &block, s, c, &acc[q0 + i], k, gamma * qnorm[q0 + i] * cmax)
                        })
                        .collect()
                };
                match &pool {
                    Some(p) => p.install(&mut work),
                    None => work(),
                }
            };
            let mut new = Vec::with_capacity(nq);
            for (hits, fell_back, rescored) in parts {
                stats.fallbacks.fetch_add(u64::from(fell_back), Ordering::Relaxed);
                stats.rescored.fetch_add(rescored as u64, Ordering::Relaxed);
                new.push(hits);
            }
            let old: Vec<Vec<Hit>> = acc[q0..q0 + nq].iter_mut().map(std::mem::take).collect();
            for (slot, merged) in acc[q0..q0 + nq].iter_mut().zip(merge_topk(vec![old, new], k)?) {
                *slot = merged;
            }
            stats.scan_ns.fetch_add(t2.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        stats.gemm_ns.fetch_add(device_ns, Ordering::Relaxed);
        Ok(())
    }, stats)?;
    Ok(acc)
}

/// The device's f32 GEMM rate (GFLOP/s, TF32 off) on the screen's own GEMM shape: `m` queries ×
/// `n` candidates × `dim`, the same cuBLAS descriptor as [`topk_over_range_gpu`], timed over
/// `reps` calls after a warm-up. What `multimat-screen bench --device …` divides by.
pub fn device_gemm_rate(device: crate::engine::Device, m: usize, n: usize, dim: usize, reps: usize) -> Result<f64> {
    let g = gpu(device)?;
    let _tf32 = Tf32Off(&g, g.tf32());
    g.set_tf32(false);
    let a = g.upload(&vec![0.01f32; m * dim])?;
    let b = g.upload(&vec![0.02f32; n * dim])?;
    let c: GpuVec<f32> = g.uninit(m * n)?;
    matmul_row_major(&g, false, true, m, n, dim, 1.0, a.ptr(), b.ptr(), 0.0, c.ptr())?;
    g.synchronize()?;
    let t = Instant::now();
    for _ in 0..reps.max(1) {
        matmul_row_major(&g, false, true, m, n, dim, 1.0, a.ptr(), b.ptr(), 0.0, c.ptr())?;
    }
    g.synchronize()?;
    Ok(2.0 * (m * n * dim * reps.max(1)) as f64 / t.elapsed().as_secs_f64() / 1e9)
}

/// The query chunk and block width [`topk_over_range_gpu`] uses for these sizes (for the bench).
pub fn gemm_shape(n_queries: usize, n_candidates: usize, block_candidates: usize) -> (usize, usize) {
    let block_c = block_candidates.min(n_candidates).max(1);
    ((SCORE_BUDGET / block_c).clamp(1, n_queries.max(1)), block_c)
}
