//! Launchers of `kernels/attention.cu` and the cuBLAS batched GEMMs of masked multi-head
//! attention, plus the plain row softmax.
//!
//! Attention (llm.c's form): split the packed qkv (B, T, 3·H·hs) into per-head contiguous q, k,
//! v (B·H, T, hs), then for each chunk of (batch, head) pairs: S = scale·Q·Kᵀ (one strided batched
//! GEMM), masked softmax in place with each row's log-sum-exp saved, O = P·V (batched GEMM); merge
//! the heads back into (B, T, H·hs). Only one chunk's (pairs, T, T) scores exist at a time, at
//! most [`SCORE_BYTES_CAP`] bytes (the DOS encoder at B = 360, H = 8, T = 601 would need 4.2 GB
//! for all pairs; the CPU keeps one (T, T) per worker thread). The backward recomputes P from lse
//! chunk by chunk, exactly as the CPU reference does.

use super::checks::{compare, on, rand, Comparison, OpCheck};
use super::ELEMENTWISE_THREADS;
use crate::engine::backend::{arg, Gpu, GemmDesc, GpuVec, Kernel, LaunchConfig};
use crate::engine::ops;
use crate::engine::ops::attention::AttnDims;
use crate::engine::tensor::{Device, Indices, Module, Tensor};
use anyhow::Result;

const fn k(name: &'static str) -> Kernel {
    Kernel { family: "attention", name }
}

/// Most bytes of scores (and, in the backward, of dP besides) materialised at once: 256 MiB, a
/// small share of a GPU's memory that still batches ~190 (batch, head) pairs at T = 601 per GEMM.
pub const SCORE_BYTES_CAP: usize = 256 << 20;

/// Warps (rows) per block of the row kernels.
const ROW_WARPS: u32 = 4;

fn rows_cfg(rows: usize) -> LaunchConfig {
    LaunchConfig { grid: [rows.div_ceil(ROW_WARPS as usize).max(1) as u32, 1, 1], block: [32 * ROW_WARPS, 1, 1], shared_bytes: 0 }
}

/// Byte address of element `i` of a float buffer.
fn at(v: &GpuVec<f32>, i: usize) -> u64 {
    v.ptr() + 4 * i as u64
}

/// Row-major C = α·op(A)·op(B) + β·C for `batch` problems with the given element strides.
#[allow(clippy::too_many_arguments)]
fn batched_matmul(
    g: &Gpu, trans_a: bool, trans_b: bool, m: usize, n: usize, kk: usize, alpha: f32, a: u64, stride_a: usize, b: u64,
    stride_b: usize, c: u64, stride_c: usize, batch: usize,
) -> Result<()> {
    let d = GemmDesc::row_major(trans_a, trans_b, m, n, kk, alpha, 0.0).batched(batch, stride_a, stride_b, stride_c);
    // Column-major roles are swapped (see GemmDesc::row_major): B comes first.
    g.gemm(&d, b, a, c)
}

/// dst (B·H, T, hs) ← the heads of src at column `src_off` of rows `src_ld` wide.
fn split_heads(g: &Gpu, dst: &mut GpuVec<f32>, src: &GpuVec<f32>, src_ld: usize, src_off: usize, d: AttnDims) -> Result<()> {
    let (pd, ps, ld, off, b) = (dst.ptr(), src.ptr(), src_ld as i64, src_off as i64, d.b as i64);
    let (t, h, hs) = (d.t as i32, d.h as i32, d.hs as i32);
    let cfg = LaunchConfig::elementwise(d.b * d.t * d.inner(), ELEMENTWISE_THREADS);
    g.launch(k("attention_split_heads_f32"), cfg, &mut [arg(&pd), arg(&ps), arg(&ld), arg(&off), arg(&b), arg(&t), arg(&h), arg(&hs)])
}

/// The heads of src (B·H, T, hs) → dst at column `dst_off` of rows `dst_ld` wide.
fn merge_heads(g: &Gpu, dst: &mut GpuVec<f32>, dst_ld: usize, dst_off: usize, src: &GpuVec<f32>, d: AttnDims) -> Result<()> {
    let (pd, ps, ld, off, b) = (dst.ptr(), src.ptr(), dst_ld as i64, dst_off as i64, d.b as i64);
    let (t, h, hs) = (d.t as i32, d.h as i32, d.hs as i32);
    let cfg = LaunchConfig::elementwise(d.b * d.t * d.inner(), ELEMENTWISE_THREADS);
    g.launch(k("attention_merge_heads_f32"), cfg, &mut [arg(&pd), arg(&ld), arg(&off), arg(&ps), arg(&b), arg(&t), arg(&h), arg(&hs)])
}

/// Softmax of `rows` rows of `cols` at `inp` into `out` (may be equal), optional lse and mask;
/// rows are grouped t per (batch, head) pair from `pair0`, h pairs per sample (see the kernel).
#[allow(clippy::too_many_arguments)]
fn softmax_rows(g: &Gpu, out: u64, lse: u64, inp: u64, mask: u64, rows: usize, cols: usize, pair0: usize, t: usize, h: usize) -> Result<()> {
    let (r, c, p0, tt, hh) = (rows as i64, cols as i32, pair0 as i64, t as i32, h as i32);
    g.launch(
        k("softmax_rows_f32"),
        rows_cfg(rows),
        &mut [arg(&out), arg(&lse), arg(&inp), arg(&mask), arg(&r), arg(&c), arg(&p0), arg(&tt), arg(&hh)],
    )
}

/// dinp = y ⊙ (dout − Σ y·dout) per row (dinp may equal dout).
fn softmax_rows_backward(g: &Gpu, dinp: u64, dout: u64, y: u64, rows: usize, cols: usize) -> Result<()> {
    let (r, c) = (rows as i64, cols as i32);
    g.launch(k("softmax_rows_backward_f32"), rows_cfg(rows), &mut [arg(&dinp), arg(&dout), arg(&y), arg(&r), arg(&c)])
}

/// (batch, head) pairs per chunk so that one chunk's (pairs, T, T) scores fit `cap` bytes.
fn pairs_per_chunk(d: AttnDims, cap: usize) -> usize {
    (cap / (d.t * d.t * 4).max(1)).clamp(1, (d.b * d.h).max(1))
}

/// out (B, T, H·hs) and lse (B, H, T) from qkv (B, T, 3·H·hs); `mask` = device address of the
/// (B, T) key mask or 0; scores materialised at most `score_bytes_cap` bytes at a time.
pub fn forward(g: &std::sync::Arc<Gpu>, out: &mut GpuVec<f32>, lse: &mut GpuVec<f32>, qkv: &GpuVec<f32>, mask: u64, d: AttnDims, score_bytes_cap: usize) -> Result<()> {
    let (pairs, t, hs, inner) = (d.b * d.h, d.t, d.hs, d.inner());
    if pairs * t == 0 {
        return Ok(());
    }
    let per_pair = t * hs;
    let (mut q, mut kk, mut v) = (g.uninit::<f32>(pairs * per_pair)?, g.uninit::<f32>(pairs * per_pair)?, g.uninit::<f32>(pairs * per_pair)?);
    split_heads(g, &mut q, qkv, 3 * inner, 0, d)?;
    split_heads(g, &mut kk, qkv, 3 * inner, inner, d)?;
    split_heads(g, &mut v, qkv, 3 * inner, 2 * inner, d)?;
    let o = g.uninit::<f32>(pairs * per_pair)?; // (B·H, T, hs), written by the GEMMs
    let chunk = pairs_per_chunk(d, score_bytes_cap);
    let scores = g.uninit::<f32>(chunk * t * t)?; // (chunk, T, T)
    let scale = 1.0 / (hs as f32).sqrt();
    for p0 in (0..pairs).step_by(chunk) {
        let np = chunk.min(pairs - p0);
        batched_matmul(g, false, true, t, t, hs, scale, at(&q, p0 * per_pair), per_pair, at(&kk, p0 * per_pair), per_pair, scores.ptr(), t * t, np)?;
        softmax_rows(g, scores.ptr(), at(lse, p0 * t), scores.ptr(), mask, np * t, t, p0, t, d.h)?;
        batched_matmul(g, false, false, t, hs, t, 1.0, scores.ptr(), t * t, at(&v, p0 * per_pair), per_pair, at(&o, p0 * per_pair), per_pair, np)?;
    }
    merge_heads(g, out, inner, 0, &o, d)
}

/// dqkv (B, T, 3·H·hs) (written) from dout (B, T, H·hs), recomputing P from qkv and lse.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    g: &std::sync::Arc<Gpu>, dqkv: &mut GpuVec<f32>, dout: &GpuVec<f32>, qkv: &GpuVec<f32>, lse: &GpuVec<f32>, mask: u64, d: AttnDims,
    score_bytes_cap: usize,
) -> Result<()> {
    let (pairs, t, hs, inner) = (d.b * d.h, d.t, d.hs, d.inner());
    if pairs * t == 0 {
        return Ok(());
    }
    let per_pair = t * hs;
    let heads = || g.uninit::<f32>(pairs * per_pair);
    let (mut q, mut kk, mut v, mut dout_h) = (heads()?, heads()?, heads()?, heads()?);
    split_heads(g, &mut q, qkv, 3 * inner, 0, d)?;
    split_heads(g, &mut kk, qkv, 3 * inner, inner, d)?;
    split_heads(g, &mut v, qkv, 3 * inner, 2 * inner, d)?;
    split_heads(g, &mut dout_h, dout, inner, 0, d)?;
    let (dq, dk, dv) = (heads()?, heads()?, heads()?);
    // Each of P and dP gets half the cap, so the backward's scratch is the forward's.
    let chunk = pairs_per_chunk(d, score_bytes_cap / 2);
    let (probs, dprobs) = (g.uninit::<f32>(chunk * t * t)?, g.uninit::<f32>(chunk * t * t)?); // (chunk, T, T) each
    let scale = 1.0 / (hs as f32).sqrt();
    let tt = t * t;
    for p0 in (0..pairs).step_by(chunk) {
        let np = chunk.min(pairs - p0);
        let off = p0 * per_pair;
        // P = exp(scale·Q·Kᵀ − lse) on valid keys.
        batched_matmul(g, false, true, t, t, hs, scale, at(&q, off), per_pair, at(&kk, off), per_pair, probs.ptr(), tt, np)?;
        let (pp, pl, rows, cols, pz, th, hh) = (probs.ptr(), at(lse, p0 * t), (np * t) as i64, t as i32, p0 as i64, t as i32, d.h as i32);
        g.launch(
            k("attention_probs_f32"),
            LaunchConfig::elementwise(np * tt, ELEMENTWISE_THREADS),
            &mut [arg(&pp), arg(&pp), arg(&pl), arg(&mask), arg(&rows), arg(&cols), arg(&pz), arg(&th), arg(&hh)],
        )?;
        // dV = Pᵀ·dO; dP = dO·Vᵀ; dS = P ⊙ (dP − Σ P·dP); dQ = scale·dS·K; dK = scale·dSᵀ·Q.
        batched_matmul(g, true, false, t, hs, t, 1.0, probs.ptr(), tt, at(&dout_h, off), per_pair, at(&dv, off), per_pair, np)?;
        batched_matmul(g, false, true, t, t, hs, 1.0, at(&dout_h, off), per_pair, at(&v, off), per_pair, dprobs.ptr(), tt, np)?;
        softmax_rows_backward(g, dprobs.ptr(), dprobs.ptr(), probs.ptr(), np * t, t)?;
        batched_matmul(g, false, false, t, hs, t, scale, dprobs.ptr(), tt, at(&kk, off), per_pair, at(&dq, off), per_pair, np)?;
        batched_matmul(g, true, false, t, hs, t, scale, dprobs.ptr(), tt, at(&q, off), per_pair, at(&dk, off), per_pair, np)?;
    }
    merge_heads(g, dqkv, 3 * inner, 0, &dq, d)?;
    merge_heads(g, dqkv, 3 * inner, inner, &dk, d)?;
    merge_heads(g, dqkv, 3 * inner, 2 * inner, &dv, d)
}

/// out (N, C) = softmax of each row of inp (N, C).
pub fn softmax_forward(g: &Gpu, out: &mut GpuVec<f32>, inp: &GpuVec<f32>, n: usize, c: usize) -> Result<()> {
    if n * c == 0 {
        return Ok(());
    }
    softmax_rows(g, out.ptr(), 0, inp.ptr(), 0, n, c, 0, 1, 1)
}

/// dinp (N, C) = y ⊙ (dout − Σ y·dout) per row.
pub fn softmax_backward(g: &Gpu, dinp: &mut GpuVec<f32>, dout: &GpuVec<f32>, y: &GpuVec<f32>, n: usize, c: usize) -> Result<()> {
    if n * c == 0 {
        return Ok(());
    }
    softmax_rows_backward(g, dinp.ptr(), dout.ptr(), y.ptr(), n, c)
}

/// B = 3, T = 37 (a row longer than a warp, not a multiple of it), H = 2, hs = 5; sample 1 has
/// its last 12 keys padded, sample 2 is fully padded. Run once with the op's chunking and once
/// with chunks of 2 pairs (several GEMM batches, a partial last one). Against the CPU: the CPU
/// exponentiates with a polynomial exp, sums in 16 float lanes and normalises P·V rows after the
/// GEMM, the GPU uses expf, warp sums and normalises P; outputs are averages of O(1) values, so
/// 2e-5 absolute + 2e-5 relative. The gradients pass through three more GEMMs and the softmax
/// backward's cancellation: 1e-4 + 1e-4 relative. Fully padded rows: lse = −∞ and exact zeros.
fn check_attention(dev: Device) -> Result<Comparison> {
    let d = AttnDims { b: 3, t: 37, h: 2, hs: 5 };
    let valid: Vec<bool> = (0..d.b * d.t).map(|i| i < d.t || (i < 2 * d.t && i % d.t < 25)).collect();
    let mask = Indices::from_mask(&valid);
    let gmask = mask.to_device(dev)?;
    let qkv = ops::add(&rand(&[d.b, d.t, 3 * d.inner()], 31), &rand(&[d.b, d.t, 3 * d.inner()], 32));
    let dy = rand(&[d.b, d.t, d.inner()], 33);
    let (gqkv, gdy) = (on(&qkv, dev)?, on(&dy, dev)?);
    let (y, lse) = ops::attention(&qkv, Some(&mask), d);
    let dqkv = ops::attention_grad(&dy, &qkv, &lse, Some(&mask), d);
    let (gy, glse) = ops::attention(&gqkv, Some(&gmask), d);
    let gdqkv = ops::attention_grad(&gdy, &gqkv, &glse, Some(&gmask), d);
    // The same through chunks of two (batch, head) pairs.
    let g = super::gpu_of(&gqkv).clone();
    let cap = 2 * d.t * d.t * 4;
    let (mut cy, mut clse) = (Tensor::uninit_on(&y.shape, dev)?, Tensor::uninit_on(&lse.shape, dev)?);
    let mptr = super::opt_indices_ptr(Some(&gmask));
    forward(&g, super::gpu_vec_mut(&mut cy, "attention"), super::gpu_vec_mut(&mut clse, "attention"), gqkv.gpu_vec(), mptr, d, cap)?;
    let mut cdqkv = Tensor::uninit_on(&qkv.shape, dev)?;
    backward(&g, super::gpu_vec_mut(&mut cdqkv, "attention"), gdy.gpu_vec(), gqkv.gpu_vec(), clse.gpu_vec(), mptr, d, 2 * cap)?;
    let fwd = compare(&[("out", &gy, &y), ("lse", &glse, &lse), ("out (chunked)", &cy, &y), ("lse (chunked)", &clse, &lse)], 2e-5, 2e-5)?;
    let bwd = compare(&[("dqkv", &gdqkv, &dqkv), ("dqkv (chunked)", &cdqkv, &dqkv)], 1e-4, 1e-4)?;
    // The fully padded sample: exact zeros (no NaN) in its outputs and gradients.
    let padded_out = Tensor::from_vec(&[d.t * d.inner()], gy.to_host()?[2 * d.t * d.inner()..].to_vec());
    let padded_grad = Tensor::from_vec(&[d.t * 3 * d.inner()], gdqkv.to_host()?[2 * d.t * 3 * d.inner()..].to_vec());
    let zeros = |n| Tensor::zeros(&[n]);
    let exact = compare(&[("padded out", &padded_out, &zeros(d.t * d.inner())), ("padded dqkv", &padded_grad, &zeros(d.t * 3 * d.inner()))], 0.0, 0.0)?;
    Ok(fwd.worst_of(bwd).worst_of(exact))
}

/// Row softmax of 19 rows of 45 logits (spread ±6): expf vs the CPU's expf, a warp's float sum vs
/// a sequential double sum; probabilities ≤ 1, so 1e-6 absolute + 1e-5 relative. The backward's
/// dot product is float on the GPU and double on the CPU: 1e-6 + 1e-5 relative.
fn check_softmax(dev: Device) -> Result<Comparison> {
    let x = ops::add(&rand(&[19, 45], 34), &ops::add(&rand(&[19, 45], 35), &rand(&[19, 45], 36)));
    let x = Tensor::from_vec(&x.shape, x.data().iter().map(|v| 2.0 * v).collect());
    let dy = rand(&[19, 45], 37);
    let y = ops::softmax(&x);
    let dx = ops::softmax_grad(&dy, &y);
    let gy = ops::softmax(&on(&x, dev)?);
    let gdx = ops::softmax_grad(&on(&dy, dev)?, &gy);
    compare(&[("y", &gy, &y), ("dx", &gdx, &dx)], 1e-6, 1e-5)
}

/// Parameter gradients of a module, in visiting order (moved to the host).
fn grads_of(m: &mut dyn Module) -> Result<Vec<Tensor>> {
    let mut v = Vec::new();
    m.visit_params(&mut |p| v.push(p.grad.clone()));
    v.iter().map(|g| Ok(Tensor::from_vec(&g.shape, g.to_host()?))).collect()
}

/// A whole pre-LN Transformer block (the DOS encoder's: LN, packed qkv, masked attention with
/// hs ≠ C/H, GELU FFN, residuals) then the masked mean pool, and a post-LN block, all on the
/// device vs the same layers on the CPU: forward, input gradient and every parameter gradient
/// (accumulated on top of a first backward). Composition of the ops above through ~8 GEMMs with
/// K ≤ 37 and two layer norms, values O(1): 2e-4 absolute + 2e-4 relative.
fn check_transformer_block(dev: Device) -> Result<Comparison> {
    use crate::engine::nn::transformer::{TransformerBlock, TransformerConfig};
    use crate::engine::ops::activation::Activation;
    use crate::engine::ops::gelu::GeluKind;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    let (b, t) = (3, 37);
    let valid: Vec<bool> = (0..b * t).map(|i| i < t || (i < 2 * t && i % t < 30)).collect();
    let mask = Indices::from_mask(&valid);
    let gmask = mask.to_device(dev)?;
    let mut worst: Option<Comparison> = None;
    for norm_first in [true, false] {
        let cfg = TransformerConfig {
            dim: 16, heads: 2, head_size: 5, ffn_dim: 24, activation: Activation::Gelu(GeluKind::Erf), ln_eps: 1e-5, qkv_bias: true, norm_first,
        };
        let build = || TransformerBlock::new("blk", &cfg, &mut ChaCha8Rng::seed_from_u64(7));
        let (mut cpu, mut gpu) = (build(), build());
        gpu.to_device(dev)?;
        let (x, dpool) = (rand(&[b, t, 16], 81), rand(&[b, 16], 82));
        let (gx, gdpool) = (on(&x, dev)?, on(&dpool, dev)?);
        let run = |blk: &mut TransformerBlock, x: &Tensor, m: &Indices, dpool: &Tensor| {
            let mut last = None;
            for _ in 0..2 {
                let y = blk.forward(x, Some(m));
                let pooled = ops::masked_mean(&y, Some(m));
                let dx = blk.backward(&ops::masked_mean_grad(dpool, Some(m), t));
                last = Some((y, pooled, dx));
            }
            last.expect("two steps")
        };
        let (y, pooled, dx) = run(&mut cpu, &x, &mask, &dpool);
        let (gy, gpooled, gdx) = run(&mut gpu, &gx, &gmask, &gdpool);
        let (cg, gg) = (grads_of(&mut cpu)?, grads_of(&mut gpu)?);
        let mut pairs: Vec<(&str, &Tensor, &Tensor)> = vec![("y", &gy, &y), ("pooled", &gpooled, &pooled), ("dx", &gdx, &dx)];
        pairs.extend(gg.iter().zip(&cg).map(|(g, c)| ("param grad", g, c)));
        let c = compare(&pairs, 2e-4, 2e-4)?;
        worst = Some(worst.map_or(c, |w| w.worst_of(c)));
    }
    Ok(worst.expect("two layouts"))
}

pub fn checks() -> Vec<OpCheck> {
    vec![
        OpCheck {
            name: "transformer block, pre- and post-LN, + masked mean (layer level)",
            kernels: &["layernorm_forward_f32", "softmax_rows_f32", "attention_probs_f32", "gelu_erf_forward", "masked_mean_forward_f32"],
            run: check_transformer_block,
        },
        OpCheck {
            name: "attention (masked, lse saved, P recomputed; chunked batched GEMMs)",
            kernels: &["attention_split_heads_f32", "attention_merge_heads_f32", "softmax_rows_f32", "attention_probs_f32", "softmax_rows_backward_f32"],
            run: check_attention,
        },
        OpCheck { name: "softmax (rows)", kernels: &["softmax_rows_f32", "softmax_rows_backward_f32"], run: check_softmax },
    ]
}
