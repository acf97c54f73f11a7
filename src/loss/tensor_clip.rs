//! TensorCLIP for three modalities (A, B, C), streamed so the B³ logits tensor never exists.
//!
//! logits l_ijk = s·Σ_d a_id b_jd c_kd (s = 1/τ; rows L2-normalised so |l| ≤ s). Following the
//! paper's Supplemental Equations S1–S2, each axis is an InfoNCE with the positive (i,i,i) and
//! all B² entries of the other two axes in the denominator (the positive included, as in CLIP's
//! cross-entropy), averaged over the valid rows (the reference takes `.mean()` over rows), and
//! the three axes are averaged (S1's /3):
//!   L = (1/3n) Σ_i (lse1_i + lse2_i + lse3_i − 3 l_iii),
//! lse1_i = log Σ_{j,k} exp l_ijk,  lse2_j = log Σ_{i,k} exp l_ijk,  lse3_k = log Σ_{i,j} exp l_ijk.
//! (The reference's released `TensorCLIPLoss2` differs: it also rewards the entries where two
//! indices agree with weight ½, keeps only all-distinct triples in the denominator and sums the
//! axes; we implement the paper's definition.)
//!
//! Streaming: for a block of k slices we form W = b ⊙ c_k (kb·n, D) and one GEMM gives the
//! logits block L (n, kb·n) = s·a·Wᵀ. One exp per entry, e = exp(l − M_k) with M_k the slice
//! maximum, feeds all three log-sum-exps: the row sums (axis 1), column sums (axis 2) and the
//! slice total (axis 3), folded across slices with log-add-exp. The backward pass recomputes the
//! same blocks (nothing B³ is stored), forms dL/dl = (1/3n)·e·(e^{M_k−lse1_i} + e^{M_k−lse2_j} +
//! e^{M_k−lse3_k}) − δ_iii/n in place of the logits, and two GEMMs per block give
//! da += s·G·W and H = Gᵀ·a, from which db_j += s·H_kj ⊙ c_k and dc_k += s·Σ_j H_kj ⊙ b_j.
//! Exponentials: with |l| ≤ s the spread within a slice is ≤ 2s; for s ≤ 40 (τ ≥ 0.025, the
//! default is s = 5) they are taken in f32, which cannot underflow there (e^-80 > 1e-38); above,
//! in f64 (s ≤ 100 gives a spread ≤ 200, far inside f64's range). Sums are always f64.
//!
//! Workspace: two (kb·n, D) blocks and one (n, kb·n) block with kb·n² ≤ 2¹⁹ floats, plus O(n²)
//! f64 — about 5 MB measured at n = 360, D = 128, against 187 MB for the B³ tensor.
//! Cost: 4·n³·D multiply-adds and 2·n³ exponentials per call.
//!
//! Masking: only rows where all three modalities are present (n of them); n < 2 gives 0.
//! Distribution: the log-sum-exp statistics are global; the loss share is the terms of the owned
//! rows i, and the gradient share is the full gradient restricted to the owned k slices, so both
//! add up to the full values over a partition. `tensor_clip` computes the statistics over all
//! slices on every caller (n³D, then 3n²·|rows|·D for the backward); for full scaling a caller
//! computes `tensor_clip_partial_stats` over its own slices, all-reduces them (3 vectors of n
//! log-sum-exps + n maxima) and calls `tensor_clip_with_stats` — 4n²·|rows|·D per process.
//!
//! On a GPU device, [`tensor_clip_device`] runs the same streamed algorithm with the same
//! masking and shares: the valid rows are gathered on the device, the logits blocks and the two
//! backward GEMMs go through cuBLAS (`GemmDesc`), and the kernels of `kernels/tensor_clip.cu` do
//! the rest — W = b ⊙ c_k, the slice maxima, the row/column sums of the exponentials and their
//! log-add-exp fold across blocks, the logit gradient, and the db/dc reductions — each output
//! with one writer and every sum in a fixed order, so a run repeats bit for bit. Blocks are
//! larger than on the CPU (a 64 MiB logits block: one block up to n = 2048), and only the
//! per-row loss terms and d/d s partials (O(n) f64) come back to the host, which adds them in
//! row order. Like [`tensor_clip`] it computes the global statistics on every caller.

use std::ops::Range;

use anyhow::{bail, Result};
use rayon::prelude::*;

use super::ValidRows;
use crate::engine::gpu::tensor_clip::{self as kernels, download_f64, f64_words, Block};
use crate::engine::gpu::{self, gpu_of, gpu_vec_mut, matmul_row_major};
use crate::engine::ops::matmul::sgemm;
use crate::engine::{ops, Storage, Tensor};

/// Logits block budget in floats (2 MB: the block stays cache-friendly between the GEMM and the
/// exp pass; measured a little faster than 8 MB blocks at n = 360).
const BLOCK_FLOATS: usize = 1 << 19;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TripleLoss {
    pub loss: f64,
    /// d share / d logit scale (0 without gradients).
    pub dscale: f64,
    /// Rows present in all three modalities (n).
    pub valid_rows: usize,
}

/// Number of k slices per block for n valid rows.
pub fn slices_per_block(n: usize) -> usize {
    (BLOCK_FLOATS / (n * n).max(1)).clamp(1, n.max(1))
}

/// Bytes of the f32/f64 buffers the streamed algorithm allocates for n rows of width d (the
/// compacted inputs and gradients included), so callers can see the footprint is O(n²), not n³.
pub fn workspace_bytes(n: usize, d: usize) -> usize {
    let kb = slices_per_block(n);
    let f32s = 6 * n * d + 2 * kb * n * d + kb * n * n;
    let f64s = 8 * n + n * kb + kb * n + kb * n;
    4 * f32s + 8 * f64s
}

/// TensorCLIP share of the owned `rows`; with `grads`, writes the gradient share w.r.t. the
/// global (B, D) embeddings of A, B and C (zero on rows not present in all three). Computes the
/// global statistics itself (n³·D work on every caller); a distributed caller that wants the
/// stats pass sharded too uses `tensor_clip_partial_stats` + an all-reduce +
/// `tensor_clip_with_stats` instead.
#[allow(clippy::too_many_arguments)]
pub fn tensor_clip(
    da: Option<&mut [f32]>, // (B, D)
    db: Option<&mut [f32]>, // (B, D)
    dc: Option<&mut [f32]>, // (B, D)
    x: [&[f32]; 3],         // a, b, c: (B, D) each
    present: [&[bool]; 3],  // (B) each
    dim: usize,
    scale: f32,
    rows: Range<usize>,
) -> TripleLoss {
    let all = 0..present[0].len();
    let stats = tensor_clip_partial_stats(x, present, dim, scale, all);
    tensor_clip_with_stats(da, db, dc, x, present, dim, scale, rows, &stats)
}

/// Phase 1, shardable: log-sum-exp statistics of the k slices whose global rows lie in `rows`
/// (n²·|rows|·D work). Partial statistics of a partition of 0..B combine into the global ones
/// with `SliceStats::merge` — across processes: all-reduce-max each lse vector to m, all-reduce-sum
/// exp(lse − m) to s, lse = m + ln s (−∞ entries contribute 0), and all-reduce-max `slice_max`.
pub fn tensor_clip_partial_stats(
    x: [&[f32]; 3],        // (B, D) each
    present: [&[bool]; 3], // (B) each
    dim: usize,
    scale: f32,
    rows: Range<usize>,
) -> SliceStats {
    let valid = ValidRows::new(&present, &rows);
    let n = valid.len();
    if n < 2 {
        return SliceStats::empty(n);
    }
    Ctx::new(&valid, x, dim, scale).slice_stats(valid.own.clone())
}

/// Phase 2: the loss share of the owned rows and (with all three gradient buffers) the
/// gradient share of the owned k slices, given the *global* statistics.
#[allow(clippy::too_many_arguments)]
pub fn tensor_clip_with_stats(
    da: Option<&mut [f32]>, // (B, D)
    db: Option<&mut [f32]>, // (B, D)
    dc: Option<&mut [f32]>, // (B, D)
    x: [&[f32]; 3],         // (B, D) each
    present: [&[bool]; 3],  // (B) each
    dim: usize,
    scale: f32,
    rows: Range<usize>,
    stats: &SliceStats,
) -> TripleLoss {
    let valid = ValidRows::new(&present, &rows);
    let n = valid.len();
    let mut outs = [da, db, dc];
    for g in outs.iter_mut().flatten() {
        g.fill(0.0);
    }
    if n < 2 || valid.own.is_empty() {
        return TripleLoss {
            loss: 0.0,
            dscale: 0.0,
            valid_rows: n,
        };
    }
    assert_eq!(
        stats.lse1.len(),
        n,
        "tensor_clip_with_stats: statistics for {} rows, batch has {n} valid",
        stats.lse1.len()
    );
    let ctx = Ctx::new(&valid, x, dim, scale);
    // Loss share: the three axis terms of the owned rows.
    let inv3n = 1.0 / (3.0 * n as f64);
    let mut loss = 0.0;
    for i in valid.own.clone() {
        let pos: f64 = (0..dim)
            .map(|k| ctx.a[i * dim + k] as f64 * ctx.b[i * dim + k] as f64 * ctx.c[i * dim + k] as f64)
            .sum::<f64>()
            * scale as f64;
        loss += inv3n * (stats.lse1[i] + stats.lse2[i] + stats.lse3[i] - 3.0 * pos);
    }
    let mut dscale = 0.0;
    if let [Some(da), Some(db), Some(dc)] = outs {
        let mut dac = vec![0.0f32; n * dim]; // (n, D)
        let mut dbc = vec![0.0f32; n * dim]; // (n, D)
        let mut dcc = vec![0.0f32; n * dim]; // (n, D)
        dscale = ctx.backward(&mut dac, &mut dbc, &mut dcc, stats, valid.own.clone());
        valid.scatter_add(da, &dac, dim);
        valid.scatter_add(db, &dbc, dim);
        valid.scatter_add(dc, &dcc, dim);
    }
    TripleLoss {
        loss,
        dscale,
        valid_rows: n,
    }
}

/// Most logits one device block holds (64 MiB of f32): the paper's batch (n = 360) is 3 blocks
/// of 129 slices; the W and H blocks are kb·n·D floats each beside it.
const DEVICE_BLOCK_FLOATS: usize = 1 << 24;

/// Number of k slices per device block for n valid rows.
pub fn device_slices_per_block(n: usize) -> usize {
    (DEVICE_BLOCK_FLOATS / (n * n).max(1)).clamp(1, n.max(1))
}

/// The device form of [`tensor_clip`]: embeddings (B, D) on one GPU device; with `grads`, WRITES
/// the gradient share of the owned k slices into them (zero on rows not valid for the term).
/// The logit scale comes from the host (the caller reads the temperature). Waits once for the
/// O(n) per-row terms at the end.
pub fn tensor_clip_device(grads: Option<[&mut Tensor; 3]>, x: [&Tensor; 3], present: [&[bool]; 3], scale: f32, rows: Range<usize>) -> Result<TripleLoss> {
    let n = ValidRows::new(&present, &rows).len();
    tensor_clip_device_blocked(grads, x, present, scale, rows, device_slices_per_block(n))
}

/// [`tensor_clip_device`] with a chosen number of k slices per block (the result does not
/// depend on it beyond rounding; tests use small blocks to cross block boundaries).
pub fn tensor_clip_device_blocked(
    mut grads: Option<[&mut Tensor; 3]>, // (B, D) each, written
    x: [&Tensor; 3],                     // a, b, c: (B, D) each
    present: [&[bool]; 3],               // (B) each
    scale: f32,
    rows: Range<usize>,
    slices_per_block: usize,
) -> Result<TripleLoss> {
    let dim = match x[0].shape.as_slice() {
        [_, d] => *d,
        s => bail!("tensor_clip: embeddings of shape {s:?}, expected (B, D)"),
    };
    let valid = ValidRows::new(&present, &rows);
    let n = valid.len();
    if let Some(gs) = grads.as_mut() {
        for g in gs.iter_mut() {
            ops::fill(g, 0.0);
        }
    }
    if n < 2 || valid.own.is_empty() {
        return Ok(TripleLoss { loss: 0.0, dscale: 0.0, valid_rows: n });
    }
    let device = x[0].device();
    let g = gpu_of(x[0]).clone();
    // The term's valid rows (batch metadata from the host, like a batch upload).
    let index_host: Vec<u32> = valid.index.iter().map(|&r| r as u32).collect();
    let index = g.upload(&index_host)?;
    let mut compact: Vec<Tensor> = Vec::with_capacity(3);
    for src in x {
        let mut t = Tensor::uninit_on(&[n, dim], device)?; // (n, D)
        gpu::infonce::gather_rows(&g, gpu_vec_mut(&mut t, "tensor_clip"), src.gpu_vec(), &index, dim)?;
        compact.push(t);
    }
    let ptr = |t: &Tensor| t.gpu_vec().ptr();
    let (pa, pb, pc) = (ptr(&compact[0]), ptr(&compact[1]), ptr(&compact[2]));
    let kb_max = slices_per_block.clamp(1, n);
    let narrow = scale <= NARROW_EXP_MAX_SCALE;
    let w = g.uninit::<f32>(kb_max * n * dim)?; // (kb·n, D)
    let l = g.uninit::<f32>(n * kb_max * n)?; // (n, kb·n)
    let slice_max = g.uninit::<f32>(n)?; // (n)
    let lse_bufs = [f64_words(&g, n, false)?, f64_words(&g, n, false)?, f64_words(&g, n, false)?]; // (n) f64 each
    let lse = [lse_bufs[0].ptr(), lse_bufs[1].ptr(), lse_bufs[2].ptr()];
    // W = b ⊙ c_k, L = s·a·Wᵀ for the block's slices.
    let logits_block = |blk: Block| -> Result<()> {
        kernels::hadamard_block(&g, w.ptr(), pb, pc, blk)?;
        matmul_row_major(&g, false, true, n, blk.kb * n, dim, scale, pa, w.ptr(), 0.0, l.ptr())
    };

    // Phase 1: the global statistics over every slice.
    {
        let rsum = f64_words(&g, n * kb_max, false)?; // (n, kb) f64
        let csum = f64_words(&g, kb_max * n, false)?; // (kb, n) f64
        let mut k0 = 0;
        while k0 < n {
            let blk = Block { n, d: dim, k0, kb: kb_max.min(n - k0) };
            logits_block(blk)?;
            kernels::fold_block_stats(&g, l.ptr(), slice_max.ptr(), rsum.ptr(), csum.ptr(), lse, blk, narrow)?;
            k0 += blk.kb;
        }
    }
    // Loss share: the owned rows' terms.
    let own = valid.own.clone();
    let terms = f64_words(&g, own.len(), false)?;
    kernels::row_terms(&g, terms.ptr(), [pa, pb, pc], lse, dim, own.start, own.len(), scale)?;

    // Phase 2: the gradient share of the owned slices.
    let inv3n = 1.0 / (3.0 * n as f64);
    let mut dscale = 0.0;
    if let Some(out) = grads {
        let dcompact: Vec<Tensor> = (0..3).map(|_| Tensor::zeros_on(&[n, dim], device)).collect::<Result<_>>()?; // (n, D) each
        let (da, db, dc) = (ptr(&dcompact[0]), ptr(&dcompact[1]), ptr(&dcompact[2]));
        let h = g.uninit::<f32>(kb_max * n * dim)?; // (kb·n, D)
        let ds_rows = f64_words(&g, n, true)?; // (n) f64, accumulated over blocks
        let mut k0 = own.start;
        while k0 < own.end {
            let blk = Block { n, d: dim, k0, kb: kb_max.min(own.end - k0) };
            let width = blk.kb * n;
            logits_block(blk)?;
            kernels::grad_block(&g, l.ptr(), ds_rows.ptr(), slice_max.ptr(), lse, blk, inv3n, 1.0 / n as f64, narrow)?;
            // da += s·G·W ;  H = Gᵀ·a
            matmul_row_major(&g, false, false, n, dim, width, scale, l.ptr(), w.ptr(), 1.0, da)?;
            matmul_row_major(&g, true, false, width, dim, n, 1.0, l.ptr(), pa, 0.0, h.ptr())?;
            kernels::grad_b_c(&g, db, dc, h.ptr(), pb, pc, blk, scale)?;
            k0 += blk.kb;
        }
        for (dst, src) in out.into_iter().zip(&dcompact) {
            match &mut dst.storage {
                Storage::Gpu(d) => gpu::infonce::scatter_rows_add(&g, d, src.gpu_vec(), &index, dim)?,
                Storage::Cpu(_) => bail!("tensor_clip: embedding gradient on the CPU, embeddings on {device}"),
            }
        }
        dscale = download_f64(&g, &ds_rows, n)?.iter().sum::<f64>() / scale as f64;
    }
    let loss = download_f64(&g, &terms, own.len())?.iter().map(|t| inv3n * t).sum();
    Ok(TripleLoss { loss, dscale, valid_rows: n })
}

/// Log-sum-exp statistics over a range of k slices. Partial statistics of disjoint slice
/// ranges combine with `merge` (log-add-exp), so the stats pass itself can be sharded.
#[derive(Clone, Debug)]
pub struct SliceStats {
    /// (n) per i: log Σ_{j, k∈range} exp l_ijk
    pub lse1: Vec<f64>,
    /// (n) per j: log Σ_{i, k∈range} exp l_ijk
    pub lse2: Vec<f64>,
    /// (n) per k: log Σ_{i,j} exp l_ijk for k in range (−∞ elsewhere)
    pub lse3: Vec<f64>,
    /// (n) per k: max_{i,j} l_ijk for k in range (−∞ elsewhere)
    pub slice_max: Vec<f32>,
}

impl SliceStats {
    /// Statistics of no slices (every entry −∞).
    pub fn empty(n: usize) -> SliceStats {
        SliceStats {
            lse1: vec![f64::NEG_INFINITY; n],
            lse2: vec![f64::NEG_INFINITY; n],
            lse3: vec![f64::NEG_INFINITY; n],
            slice_max: vec![f32::NEG_INFINITY; n],
        }
    }

    /// Combine the statistics of two disjoint slice ranges.
    pub fn merge(&mut self, other: &SliceStats) {
        for (x, y) in self.lse1.iter_mut().zip(&other.lse1) {
            *x = log_add_exp(*x, *y);
        }
        for (x, y) in self.lse2.iter_mut().zip(&other.lse2) {
            *x = log_add_exp(*x, *y);
        }
        for (x, y) in self.lse3.iter_mut().zip(&other.lse3) {
            *x = log_add_exp(*x, *y);
        }
        for (x, y) in self.slice_max.iter_mut().zip(&other.slice_max) {
            *x = x.max(*y);
        }
    }
}

fn log_add_exp(x: f64, y: f64) -> f64 {
    if x == f64::NEG_INFINITY {
        return y;
    }
    if y == f64::NEG_INFINITY {
        return x;
    }
    let m = x.max(y);
    m + ((x - m).exp() + (y - m).exp()).ln()
}

/// Compacted inputs and sizes.
struct Ctx {
    a: Vec<f32>, // (n, D)
    b: Vec<f32>, // (n, D)
    c: Vec<f32>, // (n, D)
    n: usize,
    d: usize,
    s: f32,
    kb: usize,
    /// Take the per-entry exponentials in f32 (faster): safe while the spread within a slice,
    /// ≤ 2s for unit rows, stays above f32's underflow at e^-87 — i.e. s ≤ 40 (τ ≥ 0.025).
    narrow_exp: bool,
}

/// Largest logit scale for which f32 exponentials of l − M_k cannot underflow (2s ≤ 80).
const NARROW_EXP_MAX_SCALE: f32 = 40.0;

/// exp(x − m) for x ≤ m, in f32 or f64 arithmetic, returned as f64 for accumulation.
#[inline(always)]
fn exp_shifted(x: f32, m: f32, narrow: bool) -> f64 {
    if narrow {
        (x - m).exp() as f64
    } else {
        ((x - m) as f64).exp()
    }
}

impl Ctx {
    fn new(valid: &ValidRows, x: [&[f32]; 3], dim: usize, scale: f32) -> Ctx {
        let n = valid.len();
        Ctx {
            a: valid.gather(x[0], dim),
            b: valid.gather(x[1], dim),
            c: valid.gather(x[2], dim),
            n,
            d: dim,
            s: scale,
            kb: slices_per_block(n),
            narrow_exp: scale <= NARROW_EXP_MAX_SCALE,
        }
    }

    /// W (kb·n, D) = b ⊙ c_k for k in k0..k0+kb; L (n, kb·n) = s·a·Wᵀ, so
    /// L[i, kk·n + j] = l_{i, j, k0+kk}.
    fn logits_block(&self, w: &mut [f32], l: &mut [f32], k0: usize, kb: usize) {
        let (n, d) = (self.n, self.d);
        for kk in 0..kb {
            let ck = &self.c[(k0 + kk) * d..(k0 + kk + 1) * d];
            for j in 0..n {
                let dst = &mut w[(kk * n + j) * d..(kk * n + j + 1) * d];
                for ((o, bv), cv) in dst.iter_mut().zip(&self.b[j * d..(j + 1) * d]).zip(ck) {
                    *o = bv * cv;
                }
            }
        }
        sgemm(
            &mut l[..n * kb * n],
            &self.a,
            &w[..kb * n * d],
            n,
            kb * n,
            d,
            false,
            true,
            self.s,
            0.0,
        );
    }

    /// Forward statistics over the k slices in `range`.
    fn slice_stats(&self, range: Range<usize>) -> SliceStats {
        let (n, d, kb_max) = (self.n, self.d, self.kb);
        let mut st = SliceStats::empty(n);
        let mut w = vec![0.0f32; kb_max * n * d]; // (kb·n, D)
        let mut l = vec![0.0f32; n * kb_max * n]; // (n, kb·n)
        let mut rsum = vec![0.0f64; n * kb_max]; // (n, kb): Σ_j e
        let mut k0 = range.start;
        while k0 < range.end {
            let kb = kb_max.min(range.end - k0);
            let width = kb * n;
            self.logits_block(&mut w, &mut l, k0, kb);
            let lb = &l[..n * width];
            // Slice maxima M_k over (i, j).
            let slice_max: Vec<f32> = lb
                .par_chunks(width)
                .map(|row| {
                    row.chunks_exact(n)
                        .map(|s| s.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)))
                        .collect::<Vec<f32>>()
                })
                .reduce(
                    || vec![f32::NEG_INFINITY; kb],
                    |mut x, y| {
                        x.iter_mut().zip(&y).for_each(|(p, q)| *p = p.max(*q));
                        x
                    },
                );
            // One exp per entry: row sums (axis 1) and column sums (axis 2) of e = exp(l − M_k).
            let colsum: Vec<f64> = lb
                .par_chunks(width)
                .zip(rsum[..n * kb].par_chunks_mut(kb))
                .fold(
                    || vec![0.0f64; width],
                    |mut col, (row, rs)| {
                        for kk in 0..kb {
                            let m = slice_max[kk];
                            let mut r = 0.0f64;
                            for (cj, &x) in col[kk * n..(kk + 1) * n].iter_mut().zip(&row[kk * n..(kk + 1) * n]) {
                                let e = exp_shifted(x, m, self.narrow_exp);
                                r += e;
                                *cj += e;
                            }
                            rs[kk] = r;
                        }
                        col
                    },
                )
                .reduce(
                    || vec![0.0f64; width],
                    |mut x, y| {
                        x.iter_mut().zip(&y).for_each(|(p, q)| *p += q);
                        x
                    },
                );
            for kk in 0..kb {
                let k = k0 + kk;
                let m = slice_max[kk] as f64;
                st.slice_max[k] = slice_max[kk];
                let mut total = 0.0;
                for j in 0..n {
                    let cs = colsum[kk * n + j];
                    total += cs;
                    st.lse2[j] = log_add_exp(st.lse2[j], cs.ln() + m);
                }
                st.lse3[k] = total.ln() + m;
                for i in 0..n {
                    st.lse1[i] = log_add_exp(st.lse1[i], rsum[i * kb + kk].ln() + m);
                }
            }
            k0 += kb;
        }
        st
    }

    /// Accumulate the gradient of the full loss restricted to the k slices in `own` into
    /// da, db, dc (n, D); returns the matching share of d loss / d s.
    fn backward(&self, da: &mut [f32], db: &mut [f32], dc: &mut [f32], st: &SliceStats, own: Range<usize>) -> f64 {
        let (n, d, kb_max, s) = (self.n, self.d, self.kb, self.s);
        let inv3n = 1.0 / (3.0 * n as f64);
        let inv_n = 1.0 / n as f64;
        let mut w = vec![0.0f32; kb_max * n * d]; // (kb·n, D)
        let mut l = vec![0.0f32; n * kb_max * n]; // (n, kb·n), overwritten by dL/dl
        let mut h = vec![0.0f32; kb_max * n * d]; // (kb·n, D)
        let mut v = vec![0.0f64; kb_max * n]; // (kb, n): e^{M_k − lse2_j} + e^{M_k − lse3_k}
        let mut dscale = 0.0;
        let mut k0 = own.start;
        while k0 < own.end {
            let kb = kb_max.min(own.end - k0);
            let width = kb * n;
            self.logits_block(&mut w, &mut l, k0, kb);
            for kk in 0..kb {
                let k = k0 + kk;
                let m = st.slice_max[k] as f64;
                let w3 = (m - st.lse3[k]).exp();
                for j in 0..n {
                    v[kk * n + j] = (m - st.lse2[j]).exp() + w3;
                }
            }
            let (vb, mk) = (&v[..width], &st.slice_max[k0..k0 + kb]);
            dscale += l[..n * width]
                .par_chunks_mut(width)
                .enumerate()
                .map(|(i, row)| {
                    let mut ds = 0.0f64;
                    for kk in 0..kb {
                        let m = mk[kk] as f64;
                        let u = (m - st.lse1[i]).exp();
                        for (j, x) in row[kk * n..(kk + 1) * n].iter_mut().enumerate() {
                            let lv = *x as f64;
                            let e = exp_shifted(*x, mk[kk], self.narrow_exp);
                            let mut g = inv3n * e * (u + vb[kk * n + j]);
                            if i == j && j == k0 + kk {
                                g -= inv_n;
                            }
                            ds += g * lv;
                            *x = g as f32;
                        }
                    }
                    ds
                })
                .sum::<f64>()
                / s as f64;
            let g = &l[..n * width]; // (n, kb·n)
                                     // da += s·G·W
            sgemm(da, g, &w[..width * d], n, d, width, false, false, s, 1.0);
            // H = Gᵀ·a  (kb·n, D): H[kk·n + j] = Σ_i G_ijk a_i
            sgemm(&mut h[..width * d], g, &self.a, width, d, n, true, false, 1.0, 0.0);
            for kk in 0..kb {
                let k = k0 + kk;
                let ck = &self.c[k * d..(k + 1) * d];
                let mut dck = vec![0.0f32; d];
                for j in 0..n {
                    let hj = &h[(kk * n + j) * d..(kk * n + j + 1) * d];
                    let bj = &self.b[j * d..(j + 1) * d];
                    let dbj = &mut db[j * d..(j + 1) * d];
                    for t in 0..d {
                        dbj[t] += s * hj[t] * ck[t];
                        dck[t] += hj[t] * bj[t];
                    }
                }
                for (o, x) in dc[k * d..(k + 1) * d].iter_mut().zip(&dck) {
                    *o += s * x;
                }
            }
            k0 += kb;
        }
        dscale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_partial_stats_equal_full_stats() {
        let (n, d) = (7, 5);
        let mk = |seed| {
            let mut x = crate::engine::gradcheck::random_vec(n * d, seed, 1.0);
            for r in x.chunks_exact_mut(d) {
                let s = r.iter().map(|v| v * v).sum::<f32>().sqrt();
                r.iter_mut().for_each(|v| *v /= s);
            }
            x
        };
        let ctx = Ctx {
            a: mk(1),
            b: mk(2),
            c: mk(3),
            n,
            d,
            s: 5.0,
            kb: 2,
            narrow_exp: true,
        };
        let full = ctx.slice_stats(0..n);
        let mut part = ctx.slice_stats(0..3);
        part.merge(&ctx.slice_stats(3..n));
        for (x, y) in full
            .lse1
            .iter()
            .chain(&full.lse2)
            .chain(&full.lse3)
            .zip(part.lse1.iter().chain(&part.lse2).chain(&part.lse3))
        {
            assert!((x - y).abs() < 1e-9, "{x} vs {y}");
        }
    }
}
