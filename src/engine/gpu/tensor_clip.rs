//! Launchers of `kernels/tensor_clip.cu` (the streamed TensorCLIP's per-block kernels) and the
//! check of the whole device loss against the CPU reference. The loss-level orchestration
//! (which blocks, which GEMMs, how the terms add up) is `loss::tensor_clip::tensor_clip_device`.
//!
//! Launch shapes: reductions over a row or a slice run one block of `TREE_THREADS` per row or
//! slice (the kernels' fixed f64 tree needs exactly that many threads); everything else is a
//! grid-stride loop with one thread per output value (or per column, whose sum it owns), so no
//! value has two writers and no atomics are needed.
//!
//! f64 buffers (statistics, row sums, per-row terms) are u32 buffers of two words per value,
//! read by the kernels as `double*` (the convention of `batchnorm.rs`); [`f64_words`] and
//! [`download_f64`] are the two ends of it.

use std::sync::Arc;

use super::ELEMENTWISE_THREADS;
use crate::engine::backend::{arg, Gpu, GpuVec, Kernel, LaunchConfig};
use crate::engine::gpu::checks::{compare, Comparison, OpCheck};
use crate::engine::gradcheck::random_vec;
use crate::engine::tensor::{Device, Module, Tensor};
use anyhow::{bail, Result};

const fn k(name: &'static str) -> Kernel {
    Kernel { family: "tensor_clip", name }
}

/// Threads of the reduction kernels: `TCLIP_TREE` in `kernels/tensor_clip.cu`.
const TREE_THREADS: u32 = 128;

fn each(n: usize) -> LaunchConfig {
    LaunchConfig::elementwise(n, ELEMENTWISE_THREADS)
}

/// `n` f64 values of device memory (2n u32 words), contents left to the kernels.
pub fn f64_words(g: &Arc<Gpu>, n: usize, zeroed: bool) -> Result<GpuVec<u32>> {
    if zeroed {
        g.zeros::<u32>(2 * n.max(1))
    } else {
        g.uninit::<u32>(2 * n.max(1))
    }
}

/// The first `n` f64 values of a buffer from [`f64_words`].
pub fn download_f64(g: &Gpu, v: &GpuVec<u32>, n: usize) -> Result<Vec<f64>> {
    let words = g.download(v)?;
    Ok(words.chunks_exact(2).take(n).map(|w| f64::from_bits(w[0] as u64 | (w[1] as u64) << 32)).collect())
}

/// Sizes of one block of slices: n valid rows, width D, slices k0 … k0 + kb − 1.
#[derive(Clone, Copy, Debug)]
pub struct Block {
    pub n: usize,
    pub d: usize,
    pub k0: usize,
    pub kb: usize,
}

impl Block {
    fn ints(&self) -> (i32, i32, i32, i32) {
        (self.n as i32, self.d as i32, self.k0 as i32, self.kb as i32)
    }
}

/// w (kb·n, D) = b_j ⊙ c_k for the block's slices.
pub fn hadamard_block(g: &Gpu, w: u64, b: u64, c: u64, blk: Block) -> Result<()> {
    let (n, d, k0, kb) = blk.ints();
    g.launch(k("tclip_hadamard_block_f32"), each(blk.kb * blk.n * blk.d), &mut [arg(&w), arg(&b), arg(&c), arg(&n), arg(&d), arg(&k0), arg(&kb)])
}

/// The forward statistics' share of one block of logits l (n, kb·n): slice maxima into
/// `slice_max` (n floats), then the row and column sums of exp(l − M_k) into `rsum` (n·kb f64)
/// and `csum` (kb·n f64), folded into `lse` = [lse1, lse2, lse3] (n f64 each; the block with
/// k0 = 0 initialises them).
#[allow(clippy::too_many_arguments)]
pub fn fold_block_stats(g: &Gpu, l: u64, slice_max: u64, rsum: u64, csum: u64, lse: [u64; 3], blk: Block, narrow: bool) -> Result<()> {
    let (n, _, k0, kb) = blk.ints();
    let nw = narrow as i32;
    g.launch(k("tclip_slice_max_f32"), LaunchConfig::per_row(blk.kb, TREE_THREADS, 0), &mut [arg(&slice_max), arg(&l), arg(&n), arg(&k0), arg(&kb)])?;
    g.launch(
        k("tclip_row_sums_f32"),
        LaunchConfig::per_row(blk.n * blk.kb, TREE_THREADS, 0),
        &mut [arg(&rsum), arg(&l), arg(&slice_max), arg(&n), arg(&k0), arg(&kb), arg(&nw)],
    )?;
    g.launch(k("tclip_col_sums_f32"), each(blk.kb * blk.n), &mut [arg(&csum), arg(&l), arg(&slice_max), arg(&n), arg(&k0), arg(&kb), arg(&nw)])?;
    g.launch(
        k("tclip_fold_stats_f64"),
        each(blk.n),
        &mut [arg(&lse[0]), arg(&lse[1]), arg(&lse[2]), arg(&rsum), arg(&csum), arg(&slice_max), arg(&n), arg(&k0), arg(&kb)],
    )
}

/// Overwrites the block's logits l (n, kb·n) with the logit gradient and adds each row's
/// Σ g·l to `ds_rows` (n f64, zeroed before the first block).
#[allow(clippy::too_many_arguments)]
pub fn grad_block(g: &Gpu, l: u64, ds_rows: u64, slice_max: u64, lse: [u64; 3], blk: Block, inv3n: f64, inv_n: f64, narrow: bool) -> Result<()> {
    let (n, _, k0, kb) = blk.ints();
    let nw = narrow as i32;
    g.launch(
        k("tclip_grad_block_f32"),
        LaunchConfig::per_row(blk.n, TREE_THREADS, 0),
        &mut [arg(&l), arg(&ds_rows), arg(&slice_max), arg(&lse[0]), arg(&lse[1]), arg(&lse[2]), arg(&n), arg(&k0), arg(&kb), arg(&inv3n), arg(&inv_n), arg(&nw)],
    )
}

/// db (n, D) += s·Σ_kk H_kk,j ⊙ c_k and dc_k (n, D) += s·Σ_j H_kk,j ⊙ b_j from H (kb·n, D).
#[allow(clippy::too_many_arguments)]
pub fn grad_b_c(g: &Gpu, db: u64, dc: u64, h: u64, b: u64, c: u64, blk: Block, s: f32) -> Result<()> {
    let (n, d, k0, kb) = blk.ints();
    g.launch(k("tclip_grad_b_f32"), each(blk.n * blk.d), &mut [arg(&db), arg(&h), arg(&c), arg(&n), arg(&d), arg(&k0), arg(&kb), arg(&s)])?;
    g.launch(k("tclip_grad_c_f32"), each(blk.kb * blk.d), &mut [arg(&dc), arg(&h), arg(&b), arg(&n), arg(&d), arg(&k0), arg(&kb), arg(&s)])
}

/// terms (own f64) = lse1 + lse2 + lse3 − 3·l_iii of the compact rows own0 … own0 + own − 1.
#[allow(clippy::too_many_arguments)]
pub fn row_terms(g: &Gpu, terms: u64, x: [u64; 3], lse: [u64; 3], d: usize, own0: usize, own: usize, s: f32) -> Result<()> {
    if own == 0 {
        return Ok(());
    }
    let (dd, o0, no) = (d as i32, own0 as i32, own as i32);
    g.launch(
        k("tclip_row_terms_f32"),
        each(own),
        &mut [arg(&terms), arg(&x[0]), arg(&x[1]), arg(&x[2]), arg(&lse[0]), arg(&lse[1]), arg(&lse[2]), arg(&dd), arg(&o0), arg(&no), arg(&s)],
    )
}

// ---------------------------------------------------------------------------------------------
// Check: the whole device TensorCLIP against the CPU reference.

fn unit_rows(b: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut x = random_vec(b * d, seed, 1.0);
    for row in x.chunks_exact_mut(d) {
        let n = row.iter().map(|v| (v * v) as f64).sum::<f64>().sqrt() as f32;
        row.iter_mut().for_each(|v| *v /= n);
    }
    x
}

/// Relative tolerance of the device loss (per-row f64 terms from logits that cuBLAS sums in
/// another order than the CPU GEMM: ~1e-7 relative per logit of magnitude ≤ s).
pub const LOSS_RTOL: f64 = 1e-5;
/// Gradient tolerance: values of O(1/n); the logits' GEMM order and the f32 gradient GEMMs.
pub const GRAD_ATOL: f64 = 1e-6;
pub const GRAD_RTOL: f64 = 1e-4;

fn check_tensor_clip(d: Device) -> Result<Comparison> {
    use crate::loss::{LossConfig, LossKind, Modality, ModalityTensor, MultimodalLoss};
    // 29 rows, 3 of them missing a modality (one missing everywhere); a learnable temperature;
    // first the whole batch through the loss API (one block of slices), then a rank's rows with
    // blocks of 4 slices (block boundaries, a partial last block) called directly.
    let (b, dim) = (29, 12);
    let mods = [Modality::Crystal, Modality::Dos, Modality::Text];
    let data: Vec<Tensor> = (0..3).map(|m| Tensor::from_vec(&[b, dim], unit_rows(b, dim, 90 + m as u64))).collect();
    let present: Vec<Vec<bool>> = (0..3).map(|m| (0..b).map(|r| r % (7 + 2 * m) != 3 && r != 11).collect()).collect();
    let mut cfg = LossConfig::new(LossKind::TensorClip);
    cfg.learnable_temperature = true;
    cfg.temperature = 0.1;
    let mut cpu = MultimodalLoss::new(cfg, &mods)?;
    let mut dev = cpu.clone();
    dev.to_device(d)?;
    let ddev: Vec<Tensor> = data.iter().map(|t| t.to_device(d)).collect::<Result<_>>()?;
    let on_cpu: Vec<ModalityTensor> = (0..3).map(|m| ModalityTensor { modality: mods[m], data: &data[m], present: &present[m] }).collect();
    let on_dev: Vec<ModalityTensor> = (0..3).map(|m| ModalityTensor { modality: mods[m], data: &ddev[m], present: &present[m] }).collect();
    let oc = cpu.forward_backward_tensors(&on_cpu, 0..b, true)?;
    let od = dev.forward_backward_tensors(&on_dev, 0..b, true)?;
    if (oc.loss - od.loss).abs() > LOSS_RTOL * oc.loss.abs().max(1.0) {
        bail!("TensorCLIP loss {} on {d}, {} on the CPU", od.loss, oc.loss);
    }
    let (mut tc, mut td) = (Vec::new(), Vec::new());
    cpu.visit_params(&mut |p| tc.push(p.grad.clone()));
    dev.visit_params(&mut |p| td.push(p.grad.clone()));
    let mut pairs: Vec<(String, &Tensor, &Tensor)> = Vec::new();
    for (m, (gd, gc)) in od.grads.iter().zip(&oc.grads).enumerate() {
        pairs.push((format!("d{}", mods[m]), gd, gc));
    }
    pairs.push(("temperature gradient".into(), &td[0], &tc[0]));

    // A rank's share with small blocks, against the CPU share of the same rows.
    let rows = 5..20;
    let x: Vec<&[f32]> = data.iter().map(|t| t.data()).collect();
    let p: Vec<&[bool]> = present.iter().map(|v| v.as_slice()).collect();
    let mut gc: Vec<Vec<f32>> = vec![vec![0.0; b * dim]; 3];
    let [g0, g1, g2] = &mut gc[..] else { unreachable!() };
    let want = crate::loss::tensor_clip::tensor_clip(Some(g0), Some(g1), Some(g2), [x[0], x[1], x[2]], [p[0], p[1], p[2]], dim, 7.0, rows.clone());
    let mut gd: Vec<Tensor> = (0..3).map(|_| Tensor::zeros_on(&[b, dim], d)).collect::<Result<_>>()?;
    let [h0, h1, h2] = &mut gd[..] else { unreachable!() };
    let got = crate::loss::tensor_clip::tensor_clip_device_blocked(
        Some([h0, h1, h2]),
        [&ddev[0], &ddev[1], &ddev[2]],
        [p[0], p[1], p[2]],
        7.0,
        rows,
        4,
    )?;
    if (want.loss - got.loss).abs() > LOSS_RTOL * want.loss.abs().max(1.0) || (want.dscale - got.dscale).abs() > 1e-5 * want.dscale.abs().max(1.0) {
        bail!("TensorCLIP share (blocks of 4): loss {} / dscale {} on {d}, {} / {} on the CPU", got.loss, got.dscale, want.loss, want.dscale);
    }
    let gc_t: Vec<Tensor> = gc.into_iter().map(|v| Tensor::from_vec(&[b, dim], v)).collect();
    for (m, (gdev, gcpu)) in gd.iter().zip(&gc_t).enumerate() {
        pairs.push((format!("share d{}", mods[m]), gdev, gcpu));
    }
    let refs: Vec<(&str, &Tensor, &Tensor)> = pairs.iter().map(|(n, a, c)| (n.as_str(), *a, *c)).collect();
    compare(&refs, GRAD_ATOL, GRAD_RTOL)
}

/// The checks of `kernels/tensor_clip.cu`.
pub fn checks() -> Vec<OpCheck> {
    vec![OpCheck {
        name: "TensorCLIP, streamed (masks, learnable temperature, a rank's slices in blocks)",
        kernels: &[
            "tclip_hadamard_block_f32",
            "tclip_slice_max_f32",
            "tclip_row_sums_f32",
            "tclip_col_sums_f32",
            "tclip_fold_stats_f64",
            "tclip_grad_block_f32",
            "tclip_grad_b_f32",
            "tclip_grad_c_f32",
            "tclip_row_terms_f32",
        ],
        run: check_tensor_clip,
    }]
}
