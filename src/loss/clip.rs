//! CLIP for one pair of modalities (A, B): L = ½[CE(s·a·bᵀ) + CE(s·b·aᵀ)], the symmetric
//! InfoNCE of paper Equation 1b with the mean over rows (reference `infoNCE`), s = 1/τ.
//!
//! Fused like llm.c's classifier: for a block of query rows we compute the logits block
//! (`sgemm`), its row log-sum-exp, the loss, and — while the block is still in cache — the
//! logit gradient (softmax − one-hot) and its two GEMMs into the embedding gradients. So the
//! B×B probability matrix never exists; the workspace is one (ROW_BLOCK, n) block. Each of the
//! two directions runs this over its own query rows.
//!
//! Masking: only rows where both modalities are present take part (n of them); the softmax of
//! a row runs over the n present rows of the other modality. Each direction's mean is over
//! those n rows, so a pair term is ½·(1/n)·Σ over rows and directions.
//!
//! Distribution: a process owning global rows R computes the A→B terms of its query rows in R
//! and the B→A terms of its rows in R, each still against all n candidates; the gradient of
//! that share reaches every row (candidates too). Shares over a partition of 0..B add up to the
//! full loss and gradient.
//!
//! On a GPU device, [`clip_pair_device`] runs the same algorithm with the same masking and the
//! same per-row terms: cuBLAS for the three GEMMs of a row block and the fused row kernel of
//! `kernels/infonce.cu` in between (see there); the per-row terms come back to the host, which
//! adds them in row order as [`infonce_direction`] does ([`DevicePairTerms::finish`]).

use std::ops::Range;

use anyhow::{bail, Result};

use super::ValidRows;
use crate::engine::gpu::{self, gpu_of, matmul_row_major};
use crate::engine::ops::matmul::sgemm;
use crate::engine::{Storage, Tensor};

/// Rows of queries per fused block: (64, n) logits ≈ 92 KB at n = 360.
const ROW_BLOCK: usize = 64;

/// One pair term's result.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PairLoss {
    /// This process's share of L(A, B).
    pub loss: f64,
    /// d share / d logit scale (0 when gradients were not requested).
    pub dscale: f64,
    /// Rows where both modalities are present (n).
    pub valid_rows: usize,
}

/// CLIP loss share of the owned `rows` for the pair (A, B); when `grads` is given, writes
/// d share/d a and d share/d b (global (B, D) buffers; zero on rows absent from the pair).
#[allow(clippy::too_many_arguments)]
pub fn clip_pair(
    grads: Option<(&mut [f32], &mut [f32])>, // (B, D), (B, D)
    a: &[f32],                               // (B, D)
    b: &[f32],                               // (B, D)
    present_a: &[bool],                      // (B)
    present_b: &[bool],                      // (B)
    dim: usize,
    scale: f32,
    rows: Range<usize>,
) -> PairLoss {
    let valid = ValidRows::new(&[present_a, present_b], &rows);
    let n = valid.len();
    let mut grads = grads;
    if let Some((da, db)) = grads.as_mut() {
        da.fill(0.0);
        db.fill(0.0);
    }
    if n < 2 || valid.own.is_empty() {
        return PairLoss {
            loss: 0.0,
            dscale: 0.0,
            valid_rows: n,
        };
    }
    let ac = valid.gather(a, dim); // (n, D)
    let bc = valid.gather(b, dim); // (n, D)
    let weight = 0.5 / n as f64;
    let want = grads.is_some();
    let mut dac = if want { vec![0.0f32; n * dim] } else { Vec::new() }; // (n, D)
    let mut dbc = if want { vec![0.0f32; n * dim] } else { Vec::new() }; // (n, D)
    let (l_ab, s_ab) = infonce_direction(
        want.then_some((&mut dac[..], &mut dbc[..])),
        &ac,
        &bc,
        n,
        dim,
        valid.own.clone(),
        scale,
        weight,
    );
    let (l_ba, s_ba) = infonce_direction(
        want.then_some((&mut dbc[..], &mut dac[..])),
        &bc,
        &ac,
        n,
        dim,
        valid.own.clone(),
        scale,
        weight,
    );
    if let Some((da, db)) = grads {
        valid.scatter_add(da, &dac, dim);
        valid.scatter_add(db, &dbc, dim);
    }
    PairLoss {
        loss: l_ab + l_ba,
        dscale: s_ab + s_ba,
        valid_rows: n,
    }
}

/// One InfoNCE direction over compacted rows: for each query row i in `own`,
/// loss_i = logsumexp_j(s·q_i·k_j) − s·q_i·k_i. Returns (weight·Σ loss_i, its d/d s) and,
/// with `grads`, *accumulates* weight·d/dq into dq and weight·d/dk into dk.
#[allow(clippy::too_many_arguments)]
pub fn infonce_direction(
    grads: Option<(&mut [f32], &mut [f32])>, // dq (n, D), dk (n, D), accumulated
    q: &[f32],                               // (n, D)
    k: &[f32],                               // (n, D)
    n: usize,
    dim: usize,
    own: Range<usize>,
    scale: f32,
    weight: f64,
) -> (f64, f64) {
    let mut grads = grads;
    let mut logits = vec![0.0f32; ROW_BLOCK.min(own.len()) * n]; // (ROW_BLOCK, n), reused as dlogits
    let mut loss = 0.0f64;
    let mut dscale = 0.0f64;
    let mut r0 = own.start;
    while r0 < own.end {
        let r1 = (r0 + ROW_BLOCK).min(own.end);
        let rb = r1 - r0;
        let blk = &mut logits[..rb * n]; // (rb, n)
                                         // logits = s · q[r0..r1] · kᵀ
        sgemm(blk, &q[r0 * dim..r1 * dim], k, rb, n, dim, false, true, scale, 0.0);
        for (t, row) in blk.chunks_exact_mut(n).enumerate() {
            let i = r0 + t; // query row; its positive is column i
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            let pos = row[i] as f64;
            // One exp per entry, in f32: the shift is the row's own max, so an entry that
            // underflows weighs < e^-87 against the max's 1 and cannot matter.
            let (mut sum, mut sum_el) = (0.0f64, 0.0f64);
            for x in row.iter_mut() {
                let e = (*x - max).exp();
                sum += e as f64;
                sum_el += e as f64 * *x as f64;
                *x = e;
            }
            let lse = max as f64 + sum.ln();
            loss += weight * (lse - pos);
            if grads.is_some() {
                // dlogit_ij = weight·(softmax_ij − δ_ij); d/ds = Σ_j dlogit_ij·logit_ij/s
                // = weight·(E_softmax[logit] − logit_ii)/s.
                dscale += weight * (sum_el / sum - pos) / scale as f64;
                let inv = 1.0 / sum;
                for (j, x) in row.iter_mut().enumerate() {
                    let p = *x as f64 * inv;
                    *x = (weight * (p - if j == i { 1.0 } else { 0.0 })) as f32;
                }
            }
        }
        if let Some((dq, dk)) = grads.as_mut() {
            // dq[r0..r1] += s · dlogits · k ;  dk += s · dlogitsᵀ · q[r0..r1]
            sgemm(
                &mut dq[r0 * dim..r1 * dim],
                blk,
                k,
                rb,
                dim,
                n,
                false,
                false,
                scale,
                1.0,
            );
            sgemm(dk, blk, &q[r0 * dim..r1 * dim], n, dim, rb, true, false, scale, 1.0);
        }
        r0 = r1;
    }
    (loss, dscale)
}

/// Most dot products one device row block holds (64 MiB of f32): the batch sizes of the paper
/// (B = 360) and far beyond are one block per direction.
const DEVICE_BLOCK_VALUES: usize = 1 << 24;

/// What a device pair term leaves for the host: its per-row terms on the device, summed by
/// [`DevicePairTerms::finish`] after every pair has been queued (one wait for all of them).
pub struct DevicePairTerms {
    /// Rows where both modalities are present (n).
    pub valid_rows: usize,
    /// (2 directions, owned rows, 2) = [lse − l_ii, (E[l] − l_ii)/s] per row; None: no term.
    terms: Option<Tensor>,
    /// ½·1/n: each row's weight in the pair term.
    weight: f64,
    want_grads: bool,
}

impl DevicePairTerms {
    /// (this process's share of the pair loss, its d/d logit scale), added up in the order of
    /// the host loss: rows in order, direction A→B, then B→A.
    pub fn finish(&self) -> Result<(f64, f64)> {
        let Some(t) = &self.terms else { return Ok((0.0, 0.0)) };
        let v = t.to_host()?;
        let own = t.shape[1];
        let mut out = [(0.0f64, 0.0f64); 2];
        for (dir, acc) in out.iter_mut().enumerate() {
            for r in 0..own {
                let at = 2 * (dir * own + r);
                acc.0 += self.weight * v[at] as f64;
                if self.want_grads {
                    acc.1 += self.weight * v[at + 1] as f64;
                }
            }
        }
        Ok((out[0].0 + out[1].0, out[0].1 + out[1].1))
    }
}

/// The device form of [`clip_pair`] for embeddings a, b (B, D) on one GPU device: queues the
/// pair's kernels and GEMMs and, with `grads`, ACCUMULATES `grad_weight`·d share/d a and
/// d share/d b into them (so the mean over pairs needs no extra pass). The temperature is read
/// on the device from `raw_scale` ([1]) clamped to [min_raw, max_raw].
#[allow(clippy::too_many_arguments)]
pub fn clip_pair_device(
    grads: Option<(&mut Tensor, &mut Tensor)>, // (B, D), (B, D), accumulated
    a: &Tensor,                                // (B, D)
    b: &Tensor,                                // (B, D)
    present_a: &[bool],                        // (B)
    present_b: &[bool],                        // (B)
    raw_scale: &Tensor,                        // (1)
    min_raw: f32,
    max_raw: f32,
    rows: Range<usize>,
    grad_weight: f64,
) -> Result<DevicePairTerms> {
    let dim = *a.shape.last().unwrap_or(&0);
    let valid = ValidRows::new(&[present_a, present_b], &rows);
    let n = valid.len();
    let weight = 0.5 / n.max(1) as f64;
    let want = grads.is_some();
    if n < 2 || valid.own.is_empty() {
        return Ok(DevicePairTerms { valid_rows: n, terms: None, weight, want_grads: want });
    }
    let device = a.device();
    let g = gpu_of(a).clone();
    // The batch metadata of the pair: its valid rows (a real boundary, like a batch upload).
    let index_host: Vec<u32> = valid.index.iter().map(|&r| r as u32).collect();
    let index = g.upload(&index_host)?;
    let mut ac = Tensor::uninit_on(&[n, dim], device)?; // (n, D)
    let mut bc = Tensor::uninit_on(&[n, dim], device)?; // (n, D)
    for (dst, src) in [(&mut ac, a), (&mut bc, b)] {
        if let Storage::Gpu(d) = &mut dst.storage {
            gpu::infonce::gather_rows(&g, d, src.gpu_vec(), &index, dim)?;
        }
    }
    let (dac, dbc) = if want {
        (Some(Tensor::zeros_on(&[n, dim], device)?), Some(Tensor::zeros_on(&[n, dim], device)?))
    } else {
        (None, None)
    };
    let own = valid.own.clone();
    let terms = Tensor::uninit_on(&[2, own.len(), 2], device)?;
    let block_rows = (DEVICE_BLOCK_VALUES / n).clamp(1, own.len());
    let dots = Tensor::uninit_on(&[block_rows, n], device)?; // (rows, n), reused by every block
    let raw = raw_scale.gpu_vec();
    for (dir, (q, kk)) in [(&ac, &bc), (&bc, &ac)].into_iter().enumerate() {
        let (pq, pk, pd) = (q.gpu_vec().ptr(), kk.gpu_vec().ptr(), dots.gpu_vec().ptr());
        let (dq, dk) = if dir == 0 { (&dac, &dbc) } else { (&dbc, &dac) };
        let mut r0 = own.start;
        while r0 < own.end {
            let r1 = (r0 + block_rows).min(own.end);
            let rb = r1 - r0;
            let q_block = pq + (4 * r0 * dim) as u64;
            // dots (rb, n) = q[r0..r1] · kᵀ
            matmul_row_major(&g, false, true, rb, n, dim, 1.0, q_block, pk, 0.0, pd)?;
            let row_terms = terms.gpu_vec().ptr() + (4 * 2 * (dir * own.len() + (r0 - own.start))) as u64;
            gpu::infonce::infonce_rows(&g, pd, row_terms, raw, min_raw, max_raw, rb, n, r0, weight * grad_weight, want)?;
            if let (Some(dq), Some(dk)) = (dq, dk) {
                // dq[r0..r1] += ddots · k ;  dk += ddotsᵀ · q[r0..r1]
                let dq_block = dq.gpu_vec().ptr() + (4 * r0 * dim) as u64;
                matmul_row_major(&g, false, false, rb, dim, n, 1.0, pd, pk, 1.0, dq_block)?;
                matmul_row_major(&g, true, false, n, dim, rb, 1.0, pd, q_block, 1.0, dk.gpu_vec().ptr())?;
            }
            r0 = r1;
        }
    }
    if let (Some((da, db)), Some(dac), Some(dbc)) = (grads, &dac, &dbc) {
        for (dst, src) in [(da, dac), (db, dbc)] {
            match &mut dst.storage {
                Storage::Gpu(d) => gpu::infonce::scatter_rows_add(&g, d, src.gpu_vec(), &index, dim)?,
                Storage::Cpu(_) => bail!("clip: embedding gradient on the CPU, embeddings on {device}"),
            }
        }
    }
    Ok(DevicePairTerms { valid_rows: n, terms: Some(terms), weight, want_grads: want })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::{check_gradient, random_vec};

    fn normalised(b: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut x = random_vec(b * d, seed, 1.0);
        for row in x.chunks_exact_mut(d) {
            let n = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            row.iter_mut().for_each(|v| *v /= n);
        }
        x
    }

    /// Textbook symmetric InfoNCE on the valid rows, plain f64 loops.
    fn reference(a: &[f32], b: &[f32], pa: &[bool], pb: &[bool], d: usize, s: f64) -> f64 {
        let idx: Vec<usize> = (0..pa.len()).filter(|&r| pa[r] && pb[r]).collect();
        let n = idx.len();
        if n < 2 {
            return 0.0;
        }
        let sim = |i: usize, j: usize| {
            (0..d)
                .map(|k| a[idx[i] * d + k] as f64 * b[idx[j] * d + k] as f64)
                .sum::<f64>()
                * s
        };
        let mut l = 0.0;
        for i in 0..n {
            let row: f64 = (0..n).map(|j| sim(i, j).exp()).sum();
            let col: f64 = (0..n).map(|j| sim(j, i).exp()).sum();
            l += (row.ln() - sim(i, i)) + (col.ln() - sim(i, i));
        }
        l / (2.0 * n as f64)
    }

    #[test]
    fn fused_blocks_match_reference_across_block_boundaries() {
        // 150 rows → three row blocks, with a few rows absent from one side.
        let (bsz, d) = (150, 9);
        let a = normalised(bsz, d, 1);
        let b = normalised(bsz, d, 2);
        let pa: Vec<bool> = (0..bsz).map(|r| r % 7 != 3).collect();
        let pb: Vec<bool> = (0..bsz).map(|r| r % 11 != 5).collect();
        let got = clip_pair(None, &a, &b, &pa, &pb, d, 5.0, 0..bsz);
        let want = reference(&a, &b, &pa, &pb, d, 5.0);
        assert!(
            (got.loss - want).abs() < 1e-5 * want.abs().max(1.0),
            "{} vs {want}",
            got.loss
        );
    }

    #[test]
    fn clip_gradients_match_finite_differences_with_masked_rows() {
        let (bsz, d) = (6, 4);
        let a = normalised(bsz, d, 3);
        let b = normalised(bsz, d, 4);
        let pa = [true, true, false, true, true, true];
        let pb = [true, true, true, true, false, true];
        let (mut da, mut db) = (vec![0.0; bsz * d], vec![0.0; bsz * d]);
        let r = clip_pair(Some((&mut da, &mut db)), &a, &b, &pa, &pb, d, 3.0, 0..bsz);
        // Absent rows get exactly zero gradient.
        assert!(da[2 * d..3 * d].iter().chain(&db[4 * d..5 * d]).all(|&g| g == 0.0));
        assert!(
            da[4 * d..5 * d].iter().all(|&g| g == 0.0),
            "row absent in b is excluded for a too"
        );
        check_gradient(
            "clip da",
            &a,
            &da,
            |x| clip_pair(None, x, &b, &pa, &pb, d, 3.0, 0..bsz).loss,
            1e-2,
            1e-4,
            2e-3,
        );
        check_gradient(
            "clip db",
            &b,
            &db,
            |x| clip_pair(None, &a, x, &pa, &pb, d, 3.0, 0..bsz).loss,
            1e-2,
            1e-4,
            2e-3,
        );
        let h = 1e-3f32;
        let num = (clip_pair(None, &a, &b, &pa, &pb, d, 3.0 + h, 0..bsz).loss
            - clip_pair(None, &a, &b, &pa, &pb, d, 3.0 - h, 0..bsz).loss)
            / (2.0 * h as f64);
        assert!(
            (r.dscale - num).abs() < 1e-4 + 1e-3 * num.abs(),
            "dscale {} vs {num}",
            r.dscale
        );
    }
}
