//! Launchers of `kernels/infonce.cu`: row gathers and scatters of the valid rows of a pair, the
//! fused InfoNCE row kernel, and the temperature's gradient and clamp. The loss-level
//! orchestration (which rows, which GEMMs, how terms add up) is `loss::clip::clip_pair_device`;
//! the check of the whole device loss against the CPU loss is here with the other op checks.

use super::ELEMENTWISE_THREADS;
use crate::engine::backend::{arg, Gpu, GpuVec, Kernel, LaunchConfig};
use crate::engine::gpu::checks::{compare, Comparison, OpCheck};
use crate::engine::gradcheck::random_vec;
use crate::engine::tensor::{Device, Module, Tensor};
use anyhow::{bail, Result};

const fn k(name: &'static str) -> Kernel {
    Kernel { family: "infonce", name }
}

const ONE_THREAD: LaunchConfig = LaunchConfig { grid: [1, 1, 1], block: [1, 1, 1], shared_bytes: 0 };

/// out (rows, dim) = the rows `index` (rows) of `inp` (·, dim).
pub fn gather_rows(g: &Gpu, out: &mut GpuVec<f32>, inp: &GpuVec<f32>, index: &GpuVec<u32>, dim: usize) -> Result<()> {
    let rows = index.len();
    if rows == 0 || dim == 0 {
        return Ok(());
    }
    // The row gather of the graph ops (kernels/gather.cu): one kernel for one job.
    super::gather::gather_rows(g, out, inp, index, rows, dim)
}

/// dst rows `index` += src (rows, dim); `index` holds distinct rows.
pub fn scatter_rows_add(g: &Gpu, dst: &mut GpuVec<f32>, src: &GpuVec<f32>, index: &GpuVec<u32>, dim: usize) -> Result<()> {
    let rows = index.len();
    if rows == 0 || dim == 0 {
        return Ok(());
    }
    let (pd, ps, px, r, d) = (dst.ptr(), src.ptr(), index.ptr(), rows as i64, dim as i32);
    g.launch(k("scatter_rows_add_f32"), LaunchConfig::elementwise(rows * dim, ELEMENTWISE_THREADS), &mut [arg(&pd), arg(&ps), arg(&px), arg(&r), arg(&d)])
}

/// The fused InfoNCE kernel over `rows` query rows whose dot products with the `n` candidates
/// are at address `dots` (rows, n) (overwritten with d loss/d dot when `want_grad`), writing
/// (rows, 2) terms at address `row_terms`. `row0`: compact index of the first query row.
#[allow(clippy::too_many_arguments)]
pub fn infonce_rows(
    g: &Gpu, dots: u64, row_terms: u64, raw_scale: &GpuVec<f32>, min_raw: f32, max_raw: f32, rows: usize, n: usize, row0: usize,
    grad_weight: f64, want_grad: bool,
) -> Result<()> {
    if rows == 0 {
        return Ok(());
    }
    // One block per row; threads: n rounded up to a power of two (the f64 reduction tree),
    // 32…256 — 256 threads give each a row of 360 (the paper's batch) in two strides.
    let threads = n.next_power_of_two().clamp(32, 256) as u32;
    let (pr, nn, r0, wg) = (raw_scale.ptr(), n as i32, row0 as i32, want_grad as i32);
    g.launch(
        k("infonce_rows_f32"),
        LaunchConfig::per_row(rows, threads, 0),
        &mut [arg(&dots), arg(&row_terms), arg(&pr), arg(&min_raw), arg(&max_raw), arg(&nn), arg(&r0), arg(&grad_weight), arg(&wg)],
    )
}

/// grad += dscale·exp(raw) when raw lies in [min_raw, max_raw].
pub fn temperature_grad(g: &Gpu, grad: &mut GpuVec<f32>, raw_scale: &GpuVec<f32>, dscale: f64, min_raw: f32, max_raw: f32) -> Result<()> {
    let (pg, pr) = (grad.ptr(), raw_scale.ptr());
    g.launch(k("temperature_grad_f32"), ONE_THREAD, &mut [arg(&pg), arg(&pr), arg(&dscale), arg(&min_raw), arg(&max_raw)])
}

/// raw = clamp(raw, min_raw, max_raw).
pub fn clamp_log_scale(g: &Gpu, raw_scale: &mut GpuVec<f32>, min_raw: f32, max_raw: f32) -> Result<()> {
    let pr = raw_scale.ptr();
    g.launch(k("clamp_log_scale_f32"), ONE_THREAD, &mut [arg(&pr), arg(&min_raw), arg(&max_raw)])
}

// ---------------------------------------------------------------------------------------------
// Check: the whole CLIP-family loss on a device against the CPU loss.

fn unit_rows(b: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut x = random_vec(b * d, seed, 1.0);
    for row in x.chunks_exact_mut(d) {
        let n = row.iter().map(|v| (v * v) as f64).sum::<f64>().sqrt() as f32;
        row.iter_mut().for_each(|v| *v /= n);
    }
    x
}

fn check_clip_family(d: Device) -> Result<Comparison> {
    use crate::loss::{LossConfig, LossKind, Modality, ModalityTensor, MultimodalLoss};
    // Three modalities with different missing rows (one row absent everywhere), learnable
    // temperatures (one past the clamp's upper bound: scale 100, gradient 0, clamped after), the
    // owned rows a strict sub-range (a rank's share), 300 rows → the kernel's 256 threads stride.
    let (b, dim) = (300, 24);
    let mods = [Modality::Crystal, Modality::Dos, Modality::Text];
    let data: Vec<Tensor> = (0..3).map(|m| Tensor::from_vec(&[b, dim], unit_rows(b, dim, 80 + m as u64))).collect();
    let present: Vec<Vec<bool>> = (0..3).map(|m| (0..b).map(|r| r % (5 + 2 * m) != 1 && r != 7).collect()).collect();
    let mut cfg = LossConfig::new(LossKind::AllPairsClip);
    cfg.learnable_temperature = true;
    cfg.temperature = 0.07;
    let mut worst: Option<Comparison> = None;
    for (kind, rows) in [(LossKind::AllPairsClip, 40..250), (LossKind::AnchoredClip, 0..b)] {
        cfg.kind = kind;
        cfg.anchor = Modality::Dos;
        let mut cpu = MultimodalLoss::new(cfg.clone(), &mods)?;
        cpu.temperatures[1].param.value.data_mut()[0] = 100f32.ln() + 0.5; // past the clamp
        let mut dev = cpu.clone();
        dev.to_device(d)?;
        let ddev: Vec<Tensor> = data.iter().map(|t| t.to_device(d)).collect::<Result<_>>()?;
        let on_cpu: Vec<ModalityTensor> = (0..3).map(|m| ModalityTensor { modality: mods[m], data: &data[m], present: &present[m] }).collect();
        let on_dev: Vec<ModalityTensor> = (0..3).map(|m| ModalityTensor { modality: mods[m], data: &ddev[m], present: &present[m] }).collect();
        let oc = cpu.forward_backward_tensors(&on_cpu, rows.clone(), true)?;
        let od = dev.forward_backward_tensors(&on_dev, rows.clone(), true)?;
        // Loss: per-row terms in f32 from dot products summed in another order (cuBLAS):
        // ~1e-6 relative on a loss of O(1).
        if (oc.loss - od.loss).abs() > 2e-6 * oc.loss.abs().max(1.0) {
            bail!("{kind:?} loss {} on {d}, {} on the CPU", od.loss, oc.loss);
        }
        cpu.clamp_temperatures();
        dev.clamp_temperatures();
        let (mut tc, mut td) = (Vec::new(), Vec::new());
        cpu.visit_params(&mut |p| tc.extend([p.grad.clone(), p.value.clone()]));
        dev.visit_params(&mut |p| td.extend([p.grad.clone(), p.value.clone()]));
        let mut pairs: Vec<(String, &Tensor, &Tensor)> = Vec::new();
        for (m, (gd, gc)) in od.grads.iter().zip(&oc.grads).enumerate() {
            pairs.push((format!("{kind:?} d{}", mods[m]), gd, gc));
        }
        for (p, (gd, gc)) in td.iter().zip(&tc).enumerate() {
            pairs.push((format!("{kind:?} temperature[{}] {}", p / 2, ["gradient", "clamped value"][p % 2]), gd, gc));
        }
        let refs: Vec<(&str, &Tensor, &Tensor)> = pairs.iter().map(|(n, a, c)| (n.as_str(), *a, *c)).collect();
        // Gradients of O(1/n) per value: the GEMMs' order and the scale folded into the logit
        // gradient before (not after) the GEMM: 1e-7 absolute, 1e-5 relative.
        let c = compare(&refs, 1e-7, 1e-5)?;
        if worst.is_none_or(|w| c.worst_ratio > w.worst_ratio) {
            worst = Some(c);
        }
    }
    Ok(worst.expect("two loss kinds checked"))
}

/// The checks of `kernels/infonce.cu`.
pub fn checks() -> Vec<OpCheck> {
    vec![OpCheck {
        name: "fused InfoNCE (AllPairsCLIP, AnchoredCLIP; masks, learnable temperatures, a rank's rows)",
        kernels: &["scatter_rows_add_f32", "infonce_rows_f32", "temperature_grad_f32", "clamp_log_scale_f32"],
        run: check_clip_family,
    }]
}
