//! Launchers of `kernels/rbf.cu` (Gaussian and multiquadric expansions, forward and backward)
//! and their op check. Forward: one thread per (value, bin), the elementwise shape; backward: one
//! thread per value summing its K bins in order, as the CPU does.

use super::checks::{compare, Comparison, OpCheck};
use super::ELEMENTWISE_THREADS;
use crate::engine::backend::{arg, Gpu, GpuVec, Kernel, LaunchConfig};
use crate::engine::gradcheck::random_vec;
use crate::engine::ops::rbf::{rbf, rbf_grad, RbfGrid, RbfKind};
use crate::engine::tensor::{Device, Tensor};
use anyhow::Result;

const fn k(name: &'static str) -> Kernel {
    Kernel { family: "rbf", name }
}

/// out (N, K) = φ(x) on `grid`
pub fn forward(g: &Gpu, out: &mut GpuVec<f32>, x: &GpuVec<f32>, n: usize, grid: &RbfGrid, kind: RbfKind) -> Result<()> {
    let name = match kind {
        RbfKind::Gaussian => "gaussian_rbf_forward_f32",
        RbfKind::Multiquadric => "multiquadric_rbf_forward_f32",
    };
    let (po, px, nn, bins, inv_l) = (out.ptr(), x.ptr(), n as i64, grid.bins as i64, 1.0 / grid.lengthscale);
    let cfg = LaunchConfig::elementwise(n * grid.bins, ELEMENTWISE_THREADS);
    g.launch(k(name), cfg, &mut [arg(&po), arg(&px), arg(&nn), arg(&bins), arg(&grid.vmin), arg(&grid.vmax), arg(&inv_l)])
}

/// dx (N) = Σ_k dout[n, k]·φ'_k(x_n)
#[allow(clippy::too_many_arguments)]
pub fn backward(g: &Gpu, dx: &mut GpuVec<f32>, dout: &GpuVec<f32>, x: &GpuVec<f32>, n: usize, grid: &RbfGrid, kind: RbfKind) -> Result<()> {
    let name = match kind {
        RbfKind::Gaussian => "gaussian_rbf_backward_f32",
        RbfKind::Multiquadric => "multiquadric_rbf_backward_f32",
    };
    let (pd, pg, px, nn, bins, inv_l) = (dx.ptr(), dout.ptr(), x.ptr(), n as i64, grid.bins as i64, 1.0 / grid.lengthscale);
    let cfg = LaunchConfig::elementwise(n, ELEMENTWISE_THREADS);
    g.launch(k(name), cfg, &mut [arg(&pd), arg(&pg), arg(&px), arg(&nn), arg(&bins), arg(&grid.vmin), arg(&grid.vmax), arg(&inv_l)])
}

/// The expansion and its gradient on the CPU and on `d` for 53 values spread over the grid.
fn run(d: Device, kind: RbfKind, grid: &RbfGrid) -> Result<[Tensor; 4]> {
    let n = 53;
    let x = Tensor::from_vec(&[n], random_vec(n, 1, 4.5));
    let dy = Tensor::from_vec(&[n, grid.bins], random_vec(n * grid.bins, 2, 1.0));
    let (gx, gdy) = (x.to_device(d)?, dy.to_device(d)?);
    Ok([rbf(&x, grid, kind), rbf(&gx, grid, kind), rbf_grad(&dy, &x, grid, kind), rbf_grad(&gdy, &gx, grid, kind)])
}

fn cgcnn_grid() -> RbfGrid {
    RbfGrid::new(0.0, 8.0, 41)
}

fn check_gaussian_forward(d: Device) -> Result<Comparison> {
    let [y, gy, ..] = run(d, RbfKind::Gaussian, &cgcnn_grid())?;
    // The GPU's expf is within 2 ulp of libm's: 3 ulp (4e-7) relative per value.
    compare(&[("gaussian rbf", &gy, &y)], 1e-30, 4e-7)
}

fn check_gaussian_backward(d: Device) -> Result<Comparison> {
    let [.., dx, gdx] = run(d, RbfKind::Gaussian, &cgcnn_grid())?;
    // 41 terms of either sign whose magnitudes add up to ≲ 20 here, each off by ≤ 3 ulp of expf:
    // 1e-5 absolute where they cancel.
    compare(&[("gaussian rbf grad", &gdx, &dx)], 1e-5, 4e-7)
}

fn check_multiquadric(d: Device) -> Result<Comparison> {
    let [y, gy, dx, gdx] = run(d, RbfKind::Multiquadric, &RbfGrid::new(-4.0, 4.0, 64).with_lengthscale(0.3))?;
    // Exact: centres in f64 as on the CPU, sqrt and division correctly rounded, no contraction.
    compare(&[("multiquadric rbf", &gy, &y), ("multiquadric rbf grad", &gdx, &dx)], 0.0, 0.0)
}

/// The checks of this family, for `checks::all()`.
pub fn checks() -> Vec<OpCheck> {
    vec![
        OpCheck { name: "Gaussian RBF forward", kernels: &["gaussian_rbf_forward_f32"], run: check_gaussian_forward },
        OpCheck { name: "Gaussian RBF backward", kernels: &["gaussian_rbf_backward_f32"], run: check_gaussian_backward },
        OpCheck { name: "multiquadric RBF (forward, backward)", kernels: &["multiquadric_rbf_forward_f32", "multiquadric_rbf_backward_f32"], run: check_multiquadric },
    ]
}
