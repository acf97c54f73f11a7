//! Multi-head scaled dot-product self-attention with a key padding mask, on a packed qkv buffer.
//!
//! qkv is (B, T, 3·H·hs): for every token the H query heads, then the H key heads, then the H value
//! heads, head `h` at offset h·hs inside each third (PyTorch's packed `in_proj` order). The head
//! size hs is independent of the model width, so both BERT (hs = C/H) and the DOS Transformer
//! (8 heads × 64 on a 128-wide model) use the same op.
//!
//! Memory: the (B, H, T, T) probability tensor is never stored. The forward keeps only each score
//! row's log-sum-exp (B, H, T); the backward recomputes P = exp(scale·QKᵀ − lse) one (batch, head)
//! at a time, in the FlashAttention manner. That costs one extra Q·Kᵀ GEMM per head in the backward
//! and saves 4·B·H·T² bytes (≈ 4 GB for the DOS encoder at B = 360, H = 8, T = 601).
//!
//! Masking: `key_valid[b, j] == false` gives key j zero weight for every query of sample b. A score
//! row with no valid key at all (a fully padded sample) yields a zero output row, lse = −∞, and zero
//! gradients, never NaN.
//!
//! Work is split over the batch with rayon; each (batch, head) does its GEMMs through
//! `matrixmultiply` with strided operands, so heads are read in place from the packed buffers.
//! The row work between the GEMMs (masked max, exp, sums, the softmax backward) is fused into one
//! pass per row where possible, uses `activation::fast_exp` instead of a libm call per score, and
//! keeps 16 independent accumulators so it vectorises; it is compiled twice (baseline and
//! AVX2 + FMA) and picked at run time. The forward leaves P unnormalised and scales the (T, hs)
//! output rows by 1/Σ instead of the (T, T) probabilities. (Profile of a DOS step before this:
//! ≈ 20 % of the time in expf and the scalar softmax loops.) Results do not depend on the
//! thread count. Backward writes (=) the qkv gradient (there are no parameters).
//!
//! [`attention`] and [`attention_grad`] are the tensor-level ops with their one device dispatch:
//! the CPU arm is the slice reference below, the GPU arm cuBLAS batched GEMMs around
//! `kernels/attention.cu` (engine::gpu::attention), with the same saved lse and recomputed P.

use super::activation::fast_exp;
use super::matmul::sgemm_strided;
use crate::engine::gpu::{self, device_ok, gpu_of, gpu_vec_mut, opt_indices_ptr};
use crate::engine::tensor::{Indices, Storage, Tensor};
use rayon::prelude::*;

/// A (B, T) padding mask as the CPU reference takes it (true = valid).
pub(crate) fn mask_bools(m: Option<&Indices>) -> Option<Vec<bool>> {
    m.map(|m| m.host().iter().map(|&v| v != 0).collect())
}

fn check_mask_len(key_valid: Option<&Indices>, d: AttnDims) {
    if let Some(m) = key_valid {
        assert_eq!(m.len(), d.b * d.t, "attention: key_valid must be (B, T) for {d:?}");
    }
}

/// (out (B, T, H·hs), lse (B, H, T)) = masked attention of the packed qkv (B, T, 3·H·hs), on
/// qkv's device; `key_valid` (B, T) (1 = real token) on the same device.
pub fn attention(qkv: &Tensor, key_valid: Option<&Indices>, d: AttnDims) -> (Tensor, Tensor) {
    check_mask_len(key_valid, d);
    let dev = qkv.device();
    let mut out = device_ok(Tensor::uninit_on(&[d.b, d.t, d.inner()], dev), "attention");
    let mut lse = device_ok(Tensor::uninit_on(&[d.b, d.h, d.t], dev), "attention");
    match &qkv.storage {
        Storage::Cpu(q) => attention_forward(out.data_mut(), lse.data_mut(), q, mask_bools(key_valid).as_deref(), d),
        Storage::Gpu(q) => {
            d.check(q.len(), None);
            let g = gpu_of(qkv).clone();
            let r = gpu::attention::forward(
                &g, gpu_vec_mut(&mut out, "attention"), gpu_vec_mut(&mut lse, "attention"), q, opt_indices_ptr(key_valid), d,
                gpu::attention::SCORE_BYTES_CAP,
            );
            device_ok(r, "attention");
        }
    }
    (out, lse)
}

/// The backward of [`attention`]: dqkv (B, T, 3·H·hs) from dout (B, T, H·hs).
pub fn attention_grad(dout: &Tensor, qkv: &Tensor, lse: &Tensor, key_valid: Option<&Indices>, d: AttnDims) -> Tensor {
    check_mask_len(key_valid, d);
    let mut dqkv = device_ok(Tensor::uninit_on(&qkv.shape, qkv.device()), "attention_grad");
    match &dout.storage {
        Storage::Cpu(g) => attention_backward(dqkv.data_mut(), g, qkv.data(), lse.data(), mask_bools(key_valid).as_deref(), d),
        Storage::Gpu(g) => {
            d.check(qkv.numel(), None);
            let gpu = gpu_of(dout).clone();
            let r = gpu::attention::backward(
                &gpu, gpu_vec_mut(&mut dqkv, "attention_grad"), g, qkv.gpu_vec(), lse.gpu_vec(), opt_indices_ptr(key_valid), d,
                gpu::attention::SCORE_BYTES_CAP,
            );
            device_ok(r, "attention_grad");
        }
    }
    dqkv
}

/// Sizes of one attention call: batch, sequence length, heads, head size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnDims {
    pub b: usize,
    pub t: usize,
    pub h: usize,
    pub hs: usize,
}

impl AttnDims {
    /// H·hs, the width of the attention output and of each of q, k, v.
    pub fn inner(&self) -> usize {
        self.h * self.hs
    }
    fn check(&self, qkv: usize, key_valid: Option<&[bool]>) {
        assert_eq!(qkv, self.b * self.t * 3 * self.inner(), "attention: qkv must be (B, T, 3·H·hs) for {self:?}");
        if let Some(m) = key_valid {
            assert_eq!(m.len(), self.b * self.t, "attention: key_valid must be (B, T) for {self:?}");
        }
    }
}

/// Lanes of the row kernels' independent accumulators: 16 f32 = two AVX2 or one AVX-512
/// register, so reductions (max, sums) vectorise without reassociating one serial chain.
const LANES: usize = 16;

/// Max of a row over its valid entries (`keep` = 1) with LANES independent accumulators.
#[inline(always)]
fn masked_max(row: &[f32], keep: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let (rc, kc) = (row.chunks_exact(LANES), keep.chunks_exact(LANES));
    let (rr, kr) = (rc.remainder(), kc.remainder());
    for (r, k) in rc.zip(kc) {
        for l in 0..LANES {
            acc[l] = acc[l].max(if k[l] != 0.0 { r[l] } else { f32::NEG_INFINITY });
        }
    }
    let mut m = acc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for (r, k) in rr.iter().zip(kr) {
        if *k != 0.0 {
            m = m.max(*r);
        }
    }
    m
}

/// row ← keep ⊙ exp(row − shift) in place; returns Σ row (f32 lanes, summed in f64 at the end).
#[inline(always)]
fn exp_shifted_sum(row: &mut [f32], keep: &[f32], shift: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let n = row.len() / LANES * LANES;
    let (head, tail) = row.split_at_mut(n);
    for (r, k) in head.chunks_exact_mut(LANES).zip(keep.chunks_exact(LANES)) {
        for l in 0..LANES {
            r[l] = fast_exp(r[l] - shift) * k[l];
            acc[l] += r[l];
        }
    }
    let mut sum: f64 = acc.iter().map(|&a| a as f64).sum();
    for (r, k) in tail.iter_mut().zip(&keep[n..]) {
        *r = fast_exp(*r - shift) * k;
        sum += *r as f64;
    }
    sum as f32
}

/// Σ a ⊙ b with LANES accumulators.
#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s: f64 = acc.iter().map(|&v| v as f64).sum();
    for (x, y) in ar.iter().zip(br) {
        s += (*x * *y) as f64;
    }
    s as f32
}

/// Softmax of every (T) score row of `scores` (T, T) in place, unnormalised: each row becomes
/// keep ⊙ exp(s − max) and `inv_sum[i]` its 1/Σ (0 for a row with no valid key); `lse[i]` the
/// row's log-sum-exp (−∞ when no key is valid). The caller scales P·V by `inv_sum`, a (T, hs)
/// pass instead of a (T, T) one.
#[inline(always)]
fn softmax_rows_body(scores: &mut [f32], t: usize, keep: &[f32], lse: &mut [f32], inv_sum: &mut [f32]) {
    for (i, row) in scores.chunks_exact_mut(t).enumerate() {
        let max = masked_max(row, keep);
        if max == f32::NEG_INFINITY {
            row.fill(0.0);
            lse[i] = f32::NEG_INFINITY;
            inv_sum[i] = 0.0;
            continue;
        }
        let sum = exp_shifted_sum(row, keep, max);
        lse[i] = max + sum.ln();
        inv_sum[i] = 1.0 / sum;
    }
}

/// P (T, T) = keep ⊙ exp(S − lse_i) in place, zero rows where lse = −∞.
#[inline(always)]
fn recompute_probs_body(scores: &mut [f32], t: usize, keep: &[f32], lse: &[f32]) {
    for (i, row) in scores.chunks_exact_mut(t).enumerate() {
        if lse[i] == f32::NEG_INFINITY {
            row.fill(0.0);
        } else {
            exp_shifted_sum(row, keep, lse[i]);
        }
    }
}

/// dS = P ⊙ (dP − Σ_j P·dP) row by row (the softmax backward), in place on `dp`.
#[inline(always)]
fn softmax_grad_body(probs: &[f32], dp: &mut [f32], t: usize) {
    for (prow, drow) in probs.chunks_exact(t).zip(dp.chunks_exact_mut(t)) {
        let delta = dot_lanes(prow, drow);
        for (g, p) in drow.iter_mut().zip(prow) {
            *g = p * (*g - delta);
        }
    }
}

/// The row kernels, compiled once for the baseline target and once with AVX2 + FMA, picked at
/// run time (the build does not assume `target-cpu=native`; GEMMs already dispatch inside
/// matrixmultiply).
mod kernels {
    #[cfg(target_arch = "x86_64")]
    mod avx2 {
        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn softmax_rows(s: &mut [f32], t: usize, keep: &[f32], lse: &mut [f32], inv: &mut [f32]) {
            super::super::softmax_rows_body(s, t, keep, lse, inv)
        }
        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn recompute_probs(s: &mut [f32], t: usize, keep: &[f32], lse: &[f32]) {
            super::super::recompute_probs_body(s, t, keep, lse)
        }
        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn softmax_grad(p: &[f32], dp: &mut [f32], t: usize) {
            super::super::softmax_grad_body(p, dp, t)
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn has_avx2() -> bool {
        use std::sync::OnceLock;
        static AVX2: OnceLock<bool> = OnceLock::new();
        *AVX2.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }

    pub fn softmax_rows(s: &mut [f32], t: usize, keep: &[f32], lse: &mut [f32], inv: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: the CPU supports AVX2 and FMA (checked above).
            return unsafe { avx2::softmax_rows(s, t, keep, lse, inv) };
        }
        super::softmax_rows_body(s, t, keep, lse, inv)
    }

    pub fn recompute_probs(s: &mut [f32], t: usize, keep: &[f32], lse: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: as above.
            return unsafe { avx2::recompute_probs(s, t, keep, lse) };
        }
        super::recompute_probs_body(s, t, keep, lse)
    }

    pub fn softmax_grad(p: &[f32], dp: &mut [f32], t: usize) {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: as above.
            return unsafe { avx2::softmax_grad(p, dp, t) };
        }
        super::softmax_grad_body(p, dp, t)
    }
}

/// (T) 1.0 for a valid key, 0.0 for a padded one (all ones without a mask).
fn keep_vector(valid: Option<&[bool]>, t: usize) -> Vec<f32> {
    match valid {
        Some(v) => v.iter().map(|&ok| if ok { 1.0 } else { 0.0 }).collect(),
        None => vec![1.0; t],
    }
}

/// out (B, T, H·hs) = softmax(QKᵀ/√hs, masked) · V per head; saves lse (B, H, T).
pub fn attention_forward(
    out: &mut [f32],             // (B, T, H·hs)
    lse: &mut [f32],             // (B, H, T)
    qkv: &[f32],                 // (B, T, 3·H·hs)
    key_valid: Option<&[bool]>,  // (B, T), true = real token
    d: AttnDims,
) {
    d.check(qkv.len(), key_valid);
    let AttnDims { b, t, h, hs } = d;
    let inner = d.inner();
    let row3 = 3 * inner;
    assert!(out.len() == b * t * inner && lse.len() == b * h * t, "attention_forward: out/lse sizes");
    if b * t == 0 {
        return;
    }
    let scale = 1.0 / (hs as f32).sqrt();
    out.par_chunks_mut(t * inner).zip(lse.par_chunks_mut(h * t)).enumerate().for_each(|(bi, (out_b, lse_b))| {
        let qkv_b = &qkv[bi * t * row3..(bi + 1) * t * row3]; // (T, 3·H·hs)
        let keep = keep_vector(key_valid.map(|m| &m[bi * t..(bi + 1) * t]), t); // (T)
        let mut probs = vec![0.0f32; t * t]; // (T, T) scores, then unnormalised probabilities
        let mut inv_sum = vec![0.0f32; t]; // (T)
        for hi in 0..h {
            let q = &qkv_b[hi * hs..]; // (T, hs), row stride 3·H·hs
            let k = &qkv_b[inner + hi * hs..]; // (T, hs)
            let v = &qkv_b[2 * inner + hi * hs..]; // (T, hs)
            // S (T, T) = scale · Q (T, hs) · Kᵀ (hs, T)
            sgemm_strided(&mut probs, t, q, row3, 1, k, 1, row3, t, t, hs, scale, 0.0);
            kernels::softmax_rows(&mut probs, t, &keep, &mut lse_b[hi * t..(hi + 1) * t], &mut inv_sum);
            // O (T, hs) = P (T, T) · V (T, hs), written into this head's columns of out, then
            // each row scaled by its 1/Σ.
            sgemm_strided(&mut out_b[hi * hs..], inner, &probs, t, 1, v, row3, 1, t, hs, t, 1.0, 0.0);
            for (i, &s) in inv_sum.iter().enumerate() {
                out_b[i * inner + hi * hs..i * inner + (hi + 1) * hs].iter_mut().for_each(|o| *o *= s);
            }
        }
    });
}

/// dqkv (B, T, 3·H·hs) (written) from dout (B, T, H·hs), recomputing P from qkv and lse.
pub fn attention_backward(
    dqkv: &mut [f32],            // (B, T, 3·H·hs)
    dout: &[f32],                // (B, T, H·hs)
    qkv: &[f32],                 // (B, T, 3·H·hs)
    lse: &[f32],                 // (B, H, T)
    key_valid: Option<&[bool]>,  // (B, T)
    d: AttnDims,
) {
    d.check(qkv.len(), key_valid);
    let AttnDims { b, t, h, hs } = d;
    let inner = d.inner();
    let row3 = 3 * inner;
    assert!(dqkv.len() == qkv.len() && dout.len() == b * t * inner && lse.len() == b * h * t, "attention_backward: sizes");
    if b * t == 0 {
        return;
    }
    let scale = 1.0 / (hs as f32).sqrt();
    dqkv.par_chunks_mut(t * row3).enumerate().for_each(|(bi, dqkv_b)| {
        let qkv_b = &qkv[bi * t * row3..(bi + 1) * t * row3]; // (T, 3·H·hs)
        let dout_b = &dout[bi * t * inner..(bi + 1) * t * inner]; // (T, H·hs)
        let keep = keep_vector(key_valid.map(|m| &m[bi * t..(bi + 1) * t]), t); // (T)
        let mut probs = vec![0.0f32; t * t]; // (T, T)
        let mut dscores = vec![0.0f32; t * t]; // (T, T) dP, then dS
        for hi in 0..h {
            let q = &qkv_b[hi * hs..];
            let k = &qkv_b[inner + hi * hs..];
            let v = &qkv_b[2 * inner + hi * hs..];
            let dout_h = &dout_b[hi * hs..]; // (T, hs), row stride H·hs
            // Recompute P (T, T) = exp(scale · Q·Kᵀ − lse), zero on masked keys and empty rows.
            sgemm_strided(&mut probs, t, q, row3, 1, k, 1, row3, t, t, hs, scale, 0.0);
            kernels::recompute_probs(&mut probs, t, &keep, &lse[(bi * h + hi) * t..(bi * h + hi + 1) * t]);
            // dV (T, hs) = Pᵀ (T, T) · dO (T, hs)
            sgemm_strided(&mut dqkv_b[2 * inner + hi * hs..], row3, &probs, 1, t, dout_h, inner, 1, t, hs, t, 1.0, 0.0);
            // dP (T, T) = dO (T, hs) · Vᵀ (hs, T)
            sgemm_strided(&mut dscores, t, dout_h, inner, 1, v, 1, row3, t, t, hs, 1.0, 0.0);
            kernels::softmax_grad(&probs, &mut dscores, t);
            // dQ (T, hs) = scale · dS (T, T) · K (T, hs)
            sgemm_strided(&mut dqkv_b[hi * hs..], row3, &dscores, t, 1, k, row3, 1, t, hs, t, scale, 0.0);
            // dK (T, hs) = scale · dSᵀ (T, T) · Q (T, hs)
            sgemm_strided(&mut dqkv_b[inner + hi * hs..], row3, &dscores, 1, t, q, row3, 1, t, hs, t, scale, 0.0);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::{check_gradient, dot, random_vec};

    /// The textbook loops, f64, with the same masking rule.
    fn attention_reference(qkv: &[f32], valid: &[bool], d: AttnDims) -> Vec<f32> {
        let AttnDims { b, t, h, hs } = d;
        let inner = h * hs;
        let at = |bi: usize, ti: usize, part: usize, hi: usize, e: usize| qkv[(bi * t + ti) * 3 * inner + part * inner + hi * hs + e] as f64;
        let mut out = vec![0.0f32; b * t * inner];
        for bi in 0..b {
            for hi in 0..h {
                for i in 0..t {
                    let scores: Vec<f64> = (0..t)
                        .map(|j| (0..hs).map(|e| at(bi, i, 0, hi, e) * at(bi, j, 1, hi, e)).sum::<f64>() / (hs as f64).sqrt())
                        .collect();
                    let keys: Vec<usize> = (0..t).filter(|&j| valid[bi * t + j]).collect();
                    if keys.is_empty() {
                        continue;
                    }
                    let max = keys.iter().map(|&j| scores[j]).fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = keys.iter().map(|&j| (scores[j] - max).exp()).sum();
                    for e in 0..hs {
                        let o: f64 = keys.iter().map(|&j| (scores[j] - max).exp() / z * at(bi, j, 2, hi, e)).sum();
                        out[(bi * t + i) * inner + hi * hs + e] = o as f32;
                    }
                }
            }
        }
        out
    }

    fn dims() -> (AttnDims, Vec<bool>) {
        let d = AttnDims { b: 3, t: 5, h: 2, hs: 3 };
        // sample 0: all valid; sample 1: last two keys padded; sample 2: fully padded.
        let valid = [[true; 5], [true, true, true, false, false], [false; 5]].concat();
        (d, valid)
    }

    #[test]
    fn attention_matches_reference_loops_with_padding() {
        let (d, valid) = dims();
        let qkv = random_vec(d.b * d.t * 3 * d.inner(), 1, 2.0);
        let mut out = vec![f32::NAN; d.b * d.t * d.inner()];
        let mut lse = vec![0.0; d.b * d.h * d.t];
        attention_forward(&mut out, &mut lse, &qkv, Some(&valid), d);
        let want = attention_reference(&qkv, &valid, d);
        for (i, (a, b)) in out.iter().zip(&want).enumerate() {
            assert!((a - b).abs() < 1e-5, "out[{i}] = {a}, want {b}");
        }
        // Fully padded sample: zero output and −∞ lse, no NaN.
        let per_b = d.t * d.inner();
        assert!(out[2 * per_b..].iter().all(|&v| v == 0.0));
        assert!(lse[2 * d.h * d.t..].iter().all(|&v| v == f32::NEG_INFINITY));
    }

    #[test]
    fn attention_rows_longer_than_the_lane_width_match_reference() {
        // T = 37 exercises the LANES-chunked loops and their remainders, with a ragged mask.
        let d = AttnDims { b: 2, t: 37, h: 2, hs: 4 };
        let valid: Vec<bool> = (0..d.b * d.t).map(|i| i < d.t || i % d.t < 20).collect();
        let qkv = random_vec(d.b * d.t * 3 * d.inner(), 9, 2.0);
        let mut out = vec![f32::NAN; d.b * d.t * d.inner()];
        let mut lse = vec![0.0; d.b * d.h * d.t];
        attention_forward(&mut out, &mut lse, &qkv, Some(&valid), d);
        let want = attention_reference(&qkv, &valid, d);
        for (i, (a, b)) in out.iter().zip(&want).enumerate() {
            assert!((a - b).abs() < 1e-5, "out[{i}] = {a}, want {b}");
        }
    }

    #[test]
    fn attention_without_mask_equals_all_valid_mask() {
        let d = AttnDims { b: 2, t: 4, h: 2, hs: 2 };
        let qkv = random_vec(d.b * d.t * 3 * d.inner(), 5, 1.0);
        let run = |m: Option<&[bool]>| {
            let mut out = vec![0.0; d.b * d.t * d.inner()];
            let mut lse = vec![0.0; d.b * d.h * d.t];
            attention_forward(&mut out, &mut lse, &qkv, m, d);
            out
        };
        assert_eq!(run(None), run(Some(&[true; 8])));
    }

    #[test]
    fn attention_gradients_match_finite_differences_and_vanish_on_padding() {
        let (d, valid) = dims();
        let n_qkv = d.b * d.t * 3 * d.inner();
        let qkv = random_vec(n_qkv, 2, 1.5);
        let proj = random_vec(d.b * d.t * d.inner(), 3, 1.0);
        let fwd = |x: &[f32]| {
            let mut out = vec![0.0; d.b * d.t * d.inner()];
            let mut lse = vec![0.0; d.b * d.h * d.t];
            attention_forward(&mut out, &mut lse, x, Some(&valid), d);
            dot(&proj, &out)
        };
        let mut out = vec![0.0; d.b * d.t * d.inner()];
        let mut lse = vec![0.0; d.b * d.h * d.t];
        attention_forward(&mut out, &mut lse, &qkv, Some(&valid), d);
        let mut dqkv = vec![f32::NAN; n_qkv];
        attention_backward(&mut dqkv, &proj, &qkv, &lse, Some(&valid), d);
        assert!(dqkv.iter().all(|g| g.is_finite()));
        check_gradient("attention dqkv", &qkv, &dqkv, fwd, 1e-2, 2e-3, 2e-3);
        // Every coordinate of the fully padded sample and the padded keys/values of sample 1.
        let row3 = 3 * d.inner();
        let per_b = d.t * row3;
        assert!(dqkv[2 * per_b..].iter().all(|&g| g == 0.0), "fully padded sample has zero grads");
        for ti in 3..5 {
            let tok = &dqkv[per_b + ti * row3..per_b + (ti + 1) * row3];
            assert!(tok[d.inner()..].iter().all(|&g| g == 0.0), "padded key/value {ti} has zero grads");
        }
    }
}
