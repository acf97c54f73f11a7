//! Launchers of `kernels/mse.cu`: the mean squared error's per-block partial sums and its
//! gradient, and their check against the CPU reference.

use super::ELEMENTWISE_THREADS;
use crate::engine::backend::{arg, Gpu, GpuVec, Kernel, LaunchConfig};
use crate::engine::gpu::checks::{compare, Comparison, OpCheck};
use crate::engine::gradcheck::random_vec;
use crate::engine::ops;
use crate::engine::tensor::{Device, Tensor};
use anyhow::{bail, Result};
use std::sync::Arc;

const fn k(name: &'static str) -> Kernel {
    Kernel { family: "mse", name }
}

/// Blocks of the partial-sum launch: at most 128 (a regression batch is B × width ≤ ~10⁵ values;
/// 128 partials keep the download and the host's final sum negligible). A function of N only, so
/// the summation order — and the result — is the same on every run.
const MSE_MAX_BLOCKS: usize = 128;

/// Σ (pred − target)² over N values, in f64: per-block partials on the device, added in block
/// order on the host.
pub fn sum_sq_diff(g: &Arc<Gpu>, pred: &GpuVec<f32>, target: &GpuVec<f32>) -> Result<f64> {
    let n = pred.len();
    if n == 0 {
        return Ok(0.0);
    }
    let blocks = n.div_ceil(ELEMENTWISE_THREADS as usize).clamp(1, MSE_MAX_BLOCKS);
    let cfg = LaunchConfig { grid: [blocks as u32, 1, 1], block: [ELEMENTWISE_THREADS, 1, 1], shared_bytes: 0 };
    let partials = g.uninit::<u32>(2 * blocks)?;
    let (pp, pd, pt, nn) = (partials.ptr(), pred.ptr(), target.ptr(), n as i64);
    g.launch(k("mse_partials_f32"), cfg, &mut [arg(&pp), arg(&pd), arg(&pt), arg(&nn)])?;
    let words = g.download(&partials)?;
    let mut s = 0.0f64;
    for w in words.chunks_exact(2) {
        s += f64::from_bits(w[0] as u64 | (w[1] as u64) << 32);
    }
    Ok(s)
}

/// dpred (N) = k·(pred − target), written.
pub fn backward(g: &Gpu, dpred: &mut GpuVec<f32>, pred: &GpuVec<f32>, target: &GpuVec<f32>, k_scale: f32) -> Result<()> {
    let n = pred.len();
    if n == 0 {
        return Ok(());
    }
    let (pdp, pp, pt, nn) = (dpred.ptr(), pred.ptr(), target.ptr(), n as i64);
    g.launch(
        k("mse_backward_f32"),
        LaunchConfig::elementwise(n, ELEMENTWISE_THREADS),
        &mut [arg(&pdp), arg(&pp), arg(&pt), arg(&k_scale), arg(&nn)],
    )
}

fn check_mse(d: Device) -> Result<Comparison> {
    // 70 000 values: more than the 128 blocks × 256 threads of one grid-stride pass.
    let n = 70_000;
    let (p, t) = (Tensor::from_vec(&[n], random_vec(n, 70, 3.0)), Tensor::from_vec(&[n], random_vec(n, 71, 3.0)));
    let (gp, gt) = (p.to_device(d)?, t.to_device(d)?);
    let (l, gl) = (ops::mse(&p, &t), ops::mse(&gp, &gt));
    // The f64 partial sums are added in another order; the f32-rounded mean may move by 1 ulp.
    if (l - gl).abs() > 2.4e-7 * l.abs() {
        bail!("MSE {gl} on {d}, {l} on the CPU");
    }
    let (dp, gdp) = (ops::mse_grad(&p, &t, 1.5), ops::mse_grad(&gp, &gt, 1.5));
    // Exact: the gradient is a per-element map computed as the reference computes it.
    let mut c = compare(&[("dpred", &gdp, &dp)], 0.0, 0.0)?;
    c.max_abs_err = c.max_abs_err.max((l - gl).abs() as f64);
    Ok(c)
}

/// The checks of `kernels/mse.cu`.
pub fn checks() -> Vec<OpCheck> {
    vec![OpCheck { name: "mse (loss, gradient)", kernels: &["mse_partials_f32", "mse_backward_f32"], run: check_mse }]
}
