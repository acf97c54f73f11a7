//! Radial-basis expansions of scalar edge values into K features: Gaussian (PotNet local edges,
//! CGCNN distances) and multiquadric (PotNet infinite edges).
//!
//! Convention (the one CGCNN and the reference PotNet code both use): K centres evenly spaced
//! over [vmin, vmax] inclusive, c_k = vmin + k·Δ with Δ = (vmax − vmin)/(K − 1), and a length
//! scale ℓ equal to the spacing Δ unless given:
//!
//! - Gaussian:     φ_k(x) = exp(−((x − c_k)/ℓ)²)          (γ = 1/ℓ² in the exp(−γ(x−c)²) form)
//! - multiquadric: φ_k(x) = √(1 + ((x − c_k)/ℓ)²)
//!
//! CGCNN: `GaussianDistance(dmin=0, dmax=8, step=0.2)` has centres arange(0, 8.2, 0.2) (41 of
//! them, = `RbfGrid::new(0, 8, 41)`) and divides by var² with var = step = Δ. PotNet: centres
//! linspace(−4, 4, K) with K = 256 for the local edges (input −0.75/d) and K = 64 for the
//! infinite edges, length scale = mean spacing. (PotNet's code, when handed an explicit length
//! scale ℓ, scales by 1/ℓ² instead of 1/ℓ; it never does so in its model, and here `lengthscale`
//! is always the divisor ℓ.)
//!
//! Backward is with respect to the input values only (the centres are fixed); it writes (`=`).
//!
//! Tensor-level ops [`rbf`] and [`rbf_grad`] dispatch on the device; the GPU kernels
//! (`kernels/rbf.cu`) compute the centres and every product exactly as here, so the multiquadric
//! is bit-identical on a GPU and the Gaussian differs only by the GPU's `expf` (≤ 2 ulp).

use crate::engine::gpu::{self, device_ok, gpu_of};
use crate::engine::tensor::{Storage, Tensor};
use rayon::prelude::*;

/// Which radial basis function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RbfKind {
    /// exp(−((x − c)/ℓ)²)
    Gaussian,
    /// √(1 + ((x − c)/ℓ)²)
    Multiquadric,
}

/// out (N, K): the expansion of every value of x (N) on `grid`, on x's device.
pub fn rbf(x: &Tensor, grid: &RbfGrid, kind: RbfKind) -> Tensor {
    let n = x.numel();
    match &x.storage {
        Storage::Cpu(xd) => {
            let mut out = vec![0.0f32; n * grid.bins];
            match kind {
                RbfKind::Gaussian => gaussian_rbf_forward(&mut out, xd, grid),
                RbfKind::Multiquadric => multiquadric_rbf_forward(&mut out, xd, grid),
            }
            Tensor::from_vec(&[n, grid.bins], out)
        }
        Storage::Gpu(xd) => {
            let g = gpu_of(x).clone();
            let mut out = device_ok(Tensor::uninit_on(&[n, grid.bins], x.device()), "rbf");
            if let Storage::Gpu(o) = &mut out.storage {
                device_ok(gpu::rbf::forward(&g, o, xd, n, grid, kind), "rbf");
            }
            out
        }
    }
}

/// dx (N) = Σ_k dout[n, k]·∂φ_k/∂x at x (written), on x's device.
pub fn rbf_grad(dout: &Tensor, x: &Tensor, grid: &RbfGrid, kind: RbfKind) -> Tensor {
    let n = x.numel();
    assert_eq!(dout.numel(), n * grid.bins, "rbf_grad: dout {:?} for {n} values × {} bins", dout.shape, grid.bins);
    match (&dout.storage, &x.storage) {
        (Storage::Cpu(dd), Storage::Cpu(xd)) => {
            let mut dx = vec![0.0f32; n];
            match kind {
                RbfKind::Gaussian => gaussian_rbf_backward(&mut dx, dd, xd, grid),
                RbfKind::Multiquadric => multiquadric_rbf_backward(&mut dx, dd, xd, grid),
            }
            Tensor::from_vec(&x.shape, dx)
        }
        (Storage::Gpu(dd), Storage::Gpu(xd)) => {
            let g = gpu_of(x).clone();
            let mut dx = device_ok(Tensor::uninit_on(&x.shape, x.device()), "rbf_grad");
            if let Storage::Gpu(o) = &mut dx.storage {
                device_ok(gpu::rbf::backward(&g, o, dd, xd, n, grid, kind), "rbf_grad");
            }
            dx
        }
        _ => super::elementwise::mixed_devices("rbf_grad", dout, x),
    }
}

/// Inputs per rayon task.
const MIN_ROWS_PER_TASK: usize = 256;

/// Evenly spaced RBF centres and their common length scale.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RbfGrid {
    pub vmin: f32,
    pub vmax: f32,
    pub bins: usize,
    /// ℓ in (x − c)/ℓ; defaults to the centre spacing.
    pub lengthscale: f32,
}

impl RbfGrid {
    /// `bins` centres over [vmin, vmax] with ℓ = spacing. Panics unless bins ≥ 2 and vmax > vmin
    /// (hyper-parameters, checked when the config is read).
    pub fn new(vmin: f32, vmax: f32, bins: usize) -> RbfGrid {
        assert!(bins >= 2 && vmax > vmin, "RbfGrid needs bins ≥ 2 and vmax > vmin, got {bins} over [{vmin}, {vmax}]");
        RbfGrid { vmin, vmax, bins, lengthscale: (vmax - vmin) / (bins - 1) as f32 }
    }

    pub fn with_lengthscale(self, lengthscale: f32) -> RbfGrid {
        assert!(lengthscale > 0.0, "RBF length scale must be positive, got {lengthscale}");
        RbfGrid { lengthscale, ..self }
    }

    /// c_k = vmin + k·(vmax − vmin)/(K − 1), computed in f64 so the last centre is exactly vmax.
    pub fn centres(&self) -> Vec<f32> {
        let step = (self.vmax as f64 - self.vmin as f64) / (self.bins - 1) as f64;
        (0..self.bins).map(|k| (self.vmin as f64 + k as f64 * step) as f32).collect()
    }
}

/// out (N, K): φ_k(x_n) = exp(−((x_n − c_k)/ℓ)²).
pub fn gaussian_rbf_forward(
    out: &mut [f32],  // (N, K)
    x: &[f32],        // (N)
    grid: &RbfGrid,
) {
    let (centres, k, inv_l) = (grid.centres(), grid.bins, 1.0 / grid.lengthscale);
    assert!(out.len() >= x.len() * k, "gaussian_rbf_forward: buffer too small");
    out[..x.len() * k]
        .par_chunks_mut(k)
        .with_min_len(MIN_ROWS_PER_TASK)
        .zip(x.par_iter())
        .for_each(|(row, &xv)| {
            for (o, c) in row.iter_mut().zip(&centres) {
                let u = (xv - c) * inv_l;
                *o = (-u * u).exp();
            }
        });
}

/// dx (N) = Σ_k dout[n,k] · (−2 (x_n − c_k)/ℓ²) · φ_k(x_n) (written).
pub fn gaussian_rbf_backward(
    dx: &mut [f32],   // (N)
    dout: &[f32],     // (N, K)
    x: &[f32],        // (N)
    grid: &RbfGrid,
) {
    let (centres, k, inv_l) = (grid.centres(), grid.bins, 1.0 / grid.lengthscale);
    assert!(dx.len() >= x.len() && dout.len() >= x.len() * k, "gaussian_rbf_backward: buffer too small");
    dx[..x.len()]
        .par_iter_mut()
        .with_min_len(MIN_ROWS_PER_TASK)
        .zip(x.par_iter().zip(dout[..x.len() * k].par_chunks(k)))
        .for_each(|(d, (&xv, grow))| {
            let mut acc = 0.0f32;
            for (g, c) in grow.iter().zip(&centres) {
                let u = (xv - c) * inv_l;
                acc += g * (-2.0 * u * inv_l) * (-u * u).exp();
            }
            *d = acc;
        });
}

/// out (N, K): φ_k(x_n) = √(1 + ((x_n − c_k)/ℓ)²).
pub fn multiquadric_rbf_forward(
    out: &mut [f32],  // (N, K)
    x: &[f32],        // (N)
    grid: &RbfGrid,
) {
    let (centres, k, inv_l) = (grid.centres(), grid.bins, 1.0 / grid.lengthscale);
    assert!(out.len() >= x.len() * k, "multiquadric_rbf_forward: buffer too small");
    out[..x.len() * k]
        .par_chunks_mut(k)
        .with_min_len(MIN_ROWS_PER_TASK)
        .zip(x.par_iter())
        .for_each(|(row, &xv)| {
            for (o, c) in row.iter_mut().zip(&centres) {
                let u = (xv - c) * inv_l;
                *o = (1.0 + u * u).sqrt();
            }
        });
}

/// dx (N) = Σ_k dout[n,k] · ((x_n − c_k)/ℓ²) / φ_k(x_n) (written). φ ≥ 1, so no division by 0.
pub fn multiquadric_rbf_backward(
    dx: &mut [f32],   // (N)
    dout: &[f32],     // (N, K)
    x: &[f32],        // (N)
    grid: &RbfGrid,
) {
    let (centres, k, inv_l) = (grid.centres(), grid.bins, 1.0 / grid.lengthscale);
    assert!(dx.len() >= x.len() && dout.len() >= x.len() * k, "multiquadric_rbf_backward: buffer too small");
    dx[..x.len()]
        .par_iter_mut()
        .with_min_len(MIN_ROWS_PER_TASK)
        .zip(x.par_iter().zip(dout[..x.len() * k].par_chunks(k)))
        .for_each(|(d, (&xv, grow))| {
            let mut acc = 0.0f32;
            for (g, c) in grow.iter().zip(&centres) {
                let u = (xv - c) * inv_l;
                acc += g * (u * inv_l) / (1.0 + u * u).sqrt();
            }
            *d = acc;
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::{check_gradient, dot, random_vec};

    #[test]
    fn cgcnn_grid_has_41_centres_every_0_2_angstrom() {
        let grid = RbfGrid::new(0.0, 8.0, 41);
        let c = grid.centres();
        assert_eq!(c.len(), 41);
        assert_eq!((c[0], c[40]), (0.0, 8.0));
        assert!((c[1] - 0.2).abs() < 1e-6 && (grid.lengthscale - 0.2).abs() < 1e-6);
    }

    #[test]
    fn gaussian_rbf_matches_closed_form() {
        // x on a centre gives 1 there and e^{-1} one spacing away, e^{-4} two away.
        let grid = RbfGrid::new(-4.0, 4.0, 9); // spacing 1
        let mut out = vec![0.0; 9];
        gaussian_rbf_forward(&mut out, &[0.0], &grid);
        assert!((out[4] - 1.0).abs() < 1e-7);
        assert!((out[3] - (-1.0f32).exp()).abs() < 1e-7 && (out[5] - (-1.0f32).exp()).abs() < 1e-7);
        assert!((out[2] - (-4.0f32).exp()).abs() < 1e-7);
    }

    #[test]
    fn multiquadric_rbf_matches_closed_form() {
        let grid = RbfGrid::new(-4.0, 4.0, 9).with_lengthscale(2.0);
        let mut out = vec![0.0; 9];
        multiquadric_rbf_forward(&mut out, &[1.0], &grid);
        // centre 5 is at 1.0 → 1; centre 7 is at 3.0 → √(1 + 1) ; centre 0 at −4 → √(1 + 6.25).
        assert!((out[5] - 1.0).abs() < 1e-7);
        assert!((out[7] - 2.0f32.sqrt()).abs() < 1e-6);
        assert!((out[0] - 7.25f32.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn rbf_gradients_match_finite_differences() {
        let grid = RbfGrid::new(-4.0, 4.0, 16);
        let n = 11;
        let x = random_vec(n, 1, 4.5);
        let w = random_vec(n * grid.bins, 2, 1.0);
        let mut dx = vec![f32::NAN; n];
        gaussian_rbf_backward(&mut dx, &w, &x, &grid);
        check_gradient("gaussian rbf dx", &x, &dx, |x| {
            let mut out = vec![0.0; n * grid.bins];
            gaussian_rbf_forward(&mut out, x, &grid);
            dot(&w, &out)
        }, 1e-3, 2e-3, 2e-3);
        multiquadric_rbf_backward(&mut dx, &w, &x, &grid);
        check_gradient("multiquadric rbf dx", &x, &dx, |x| {
            let mut out = vec![0.0; n * grid.bins];
            multiquadric_rbf_forward(&mut out, x, &grid);
            dot(&w, &out)
        }, 1e-3, 2e-3, 2e-3);
    }
}
