//! Launchers of `kernels/l2norm.cu`: row L2 normalisation, forward and backward (one block per
//! row), and their check against the CPU reference.

use crate::engine::backend::{arg, Gpu, GpuVec, Kernel, LaunchConfig};
use crate::engine::gpu::checks::{compare, Comparison, OpCheck};
use crate::engine::gradcheck::random_vec;
use crate::engine::ops;
use crate::engine::tensor::{Device, Tensor};
use anyhow::Result;

const fn k(name: &'static str) -> Kernel {
    Kernel { family: "l2norm", name }
}

/// One block per row; threads: the row width rounded up to a power of two, 32…256 (a power of
/// two for the kernel's reduction tree; 256 threads cover a 768-wide row in three strides).
fn cfg(n: usize, c: usize) -> LaunchConfig {
    let threads = c.next_power_of_two().clamp(32, 256) as u32;
    LaunchConfig::per_row(n, threads, 0)
}

/// out (N, C) = inp / max(‖row‖, eps); norms (N) = ‖row‖.
pub fn forward(g: &Gpu, out: &mut GpuVec<f32>, norms: &mut GpuVec<f32>, inp: &GpuVec<f32>, n: usize, c: usize, eps: f32) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let (po, pn, pi, cc) = (out.ptr(), norms.ptr(), inp.ptr(), c as i32);
    g.launch(k("l2norm_forward_f32"), cfg(n, c), &mut [arg(&po), arg(&pn), arg(&pi), arg(&cc), arg(&eps)])
}

/// dinp (N, C) (written) from dout (N, C), the forward output (N, C) and the norms (N).
#[allow(clippy::too_many_arguments)]
pub fn backward(g: &Gpu, dinp: &mut GpuVec<f32>, dout: &GpuVec<f32>, out: &GpuVec<f32>, norms: &GpuVec<f32>, n: usize, c: usize, eps: f32) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let (pd, pg, py, pn, cc) = (dinp.ptr(), dout.ptr(), out.ptr(), norms.ptr(), c as i32);
    g.launch(k("l2norm_backward_f32"), cfg(n, c), &mut [arg(&pd), arg(&pg), arg(&py), arg(&pn), arg(&cc), arg(&eps)])
}

fn check_l2norm(d: Device) -> Result<Comparison> {
    // 300 wide: more than one stride of 256 threads; row 2 is zero (the clamped branch, and no
    // NaN); row 5 is tiny (below eps = 1e-6: the clamped branch with a non-zero gradient).
    let (n, c, eps) = (7, 300, 1e-6f32);
    let mut xv = random_vec(n * c, 60, 2.0);
    xv[2 * c..3 * c].fill(0.0);
    xv[5 * c..6 * c].iter_mut().for_each(|v| *v *= 1e-9);
    let x = Tensor::from_vec(&[n, c], xv);
    let dy = Tensor::from_vec(&[n, c], random_vec(n * c, 61, 1.0));
    let (y, norms) = ops::l2norm(&x, eps);
    let dx = ops::l2norm_grad(&dy, &y, &norms, eps);
    let (gy, gnorms) = ops::l2norm(&x.to_device(d)?, eps);
    let gdx = ops::l2norm_grad(&dy.to_device(d)?, &gy, &gnorms, eps);
    // The f64 sum of squares is added in a tree instead of in sequence, which can move the
    // f32-rounded norm by one ulp (2⁻²³ relative), hence y by ≤ 2 ulp; the backward's
    // g − y·(y·g) cancels, so it is held to 1e-6 absolute on O(1) gradients.
    compare(&[("y", &gy, &y), ("norms", &gnorms, &norms), ("dx", &gdx, &dx)], 1e-6, 3e-7)
}

/// The checks of `kernels/l2norm.cu`.
pub fn checks() -> Vec<OpCheck> {
    vec![OpCheck { name: "l2norm (forward, backward)", kernels: &["l2norm_forward_f32", "l2norm_backward_f32"], run: check_l2norm }]
}
