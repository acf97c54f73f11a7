//! L2 normalisation of rows, y = x / max(‖x‖₂, eps) — PyTorch's `F.normalize`, which the
//! reference applies to every embedding before the contrastive losses.
//!
//! The max form (rather than x/√(‖x‖² + eps)) matches the reference bit for bit in the normal
//! case, where ‖x‖ ≫ eps and the output has unit norm exactly; a zero row maps to zero, not NaN.
//! Forward saves the per-row norms for backward. Input gradients are written (`=`):
//! for ‖x‖ > eps, dx = (dy − y·(y·dy)) / ‖x‖; in the clamped branch y = x/eps and dx = dy/eps.
//!
//! [`l2norm`] / [`l2norm_grad`] are the tensor-level op (one device dispatch each): the CPU arm
//! is the slice reference below, the GPU arm `kernels/l2norm.cu` (engine::gpu::l2norm).

use crate::engine::gpu::{self, device_ok, gpu_of};
use crate::engine::tensor::{Storage, Tensor};
use rayon::prelude::*;

/// Rows (N, C) of `x` normalised, and the row norms (N) the backward needs, on x's device.
pub fn l2norm(x: &Tensor, eps: f32) -> (Tensor, Tensor) {
    let c = *x.shape.last().expect("l2norm: scalar input");
    let n = x.numel() / c.max(1);
    match &x.storage {
        Storage::Cpu(xd) => {
            let (mut y, mut norms) = (vec![0.0f32; n * c], vec![0.0f32; n]);
            l2norm_forward(&mut y, &mut norms, xd, n, c, eps);
            (Tensor::from_vec(&x.shape, y), Tensor::from_vec(&[n], norms))
        }
        Storage::Gpu(xd) => {
            let g = gpu_of(x).clone();
            let mut y = device_ok(Tensor::uninit_on(&x.shape, x.device()), "l2norm");
            let mut norms = device_ok(Tensor::uninit_on(&[n], x.device()), "l2norm");
            if let (Storage::Gpu(yv), Storage::Gpu(nv)) = (&mut y.storage, &mut norms.storage) {
                device_ok(gpu::l2norm::forward(&g, yv, nv, xd, n, c, eps), "l2norm");
            }
            (y, norms)
        }
    }
}

/// dx (written) of [`l2norm`] from dy, the forward output y and the saved norms.
pub fn l2norm_grad(dy: &Tensor, y: &Tensor, norms: &Tensor, eps: f32) -> Tensor {
    assert_eq!(dy.shape, y.shape, "l2norm_grad: dy and y shapes differ");
    let c = *y.shape.last().expect("l2norm_grad: scalar input");
    let n = y.numel() / c.max(1);
    match &dy.storage {
        Storage::Cpu(g) => {
            let mut dx = vec![0.0f32; n * c];
            l2norm_backward(&mut dx, g, y.data(), norms.data(), n, c, eps);
            Tensor::from_vec(&y.shape, dx)
        }
        Storage::Gpu(gv) => {
            let g = gpu_of(dy).clone();
            let mut dx = device_ok(Tensor::uninit_on(&y.shape, dy.device()), "l2norm_grad");
            if let Storage::Gpu(dv) = &mut dx.storage {
                device_ok(gpu::l2norm::backward(&g, dv, gv, y.gpu_vec(), norms.gpu_vec(), n, c, eps), "l2norm_grad");
            }
            dx
        }
    }
}

/// Rows per rayon task.
const MIN_ROWS_PER_TASK: usize = 32;

/// out (N, C) = inp / max(‖inp_row‖, eps); norms (N) = ‖inp_row‖ (saved for backward).
pub fn l2norm_forward(
    out: &mut [f32],    // (N, C)
    norms: &mut [f32],  // (N)
    inp: &[f32],        // (N, C)
    n: usize,
    c: usize,
    eps: f32,
) {
    assert!(out.len() >= n * c && inp.len() >= n * c && norms.len() >= n, "l2norm_forward: buffer too small");
    if c == 0 {
        norms[..n].fill(0.0);
        return;
    }
    out[..n * c]
        .par_chunks_mut(c)
        .with_min_len(MIN_ROWS_PER_TASK)
        .zip(norms[..n].par_iter_mut())
        .zip(inp[..n * c].par_chunks(c))
        .for_each(|((orow, norm), irow)| {
            // f64 sum of squares: 768-d rows of large values lose digits in f32.
            let ss: f64 = irow.iter().map(|&v| v as f64 * v as f64).sum();
            *norm = ss.sqrt() as f32;
            let inv = 1.0 / norm.max(eps);
            for (o, &v) in orow.iter_mut().zip(irow) {
                *o = v * inv;
            }
        });
}

/// dinp (N, C) from dout (N, C), using the forward output and saved norms (written).
#[allow(clippy::too_many_arguments)]
pub fn l2norm_backward(
    dinp: &mut [f32],   // (N, C)
    dout: &[f32],       // (N, C)
    out: &[f32],        // (N, C) forward output y
    norms: &[f32],      // (N)
    n: usize,
    c: usize,
    eps: f32,
) {
    assert!(dinp.len() >= n * c && dout.len() >= n * c && out.len() >= n * c && norms.len() >= n,
        "l2norm_backward: buffer too small");
    if c == 0 {
        return;
    }
    dinp[..n * c]
        .par_chunks_mut(c)
        .with_min_len(MIN_ROWS_PER_TASK)
        .zip(dout[..n * c].par_chunks(c))
        .zip(out[..n * c].par_chunks(c).zip(norms[..n].par_iter()))
        .for_each(|((drow, grow), (yrow, &norm))| {
            if norm > eps {
                let y_dot_g: f64 = yrow.iter().zip(grow).map(|(&y, &g)| y as f64 * g as f64).sum();
                let y_dot_g = y_dot_g as f32;
                let inv = 1.0 / norm;
                for ((d, &g), &y) in drow.iter_mut().zip(grow).zip(yrow) {
                    *d = (g - y * y_dot_g) * inv;
                }
            } else {
                let inv = 1.0 / eps;
                for (d, &g) in drow.iter_mut().zip(grow) {
                    *d = g * inv;
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::{check_gradient, dot, random_vec};

    #[test]
    fn rows_get_unit_norm_and_zero_rows_stay_zero() {
        let (n, c) = (3, 4);
        let mut x = random_vec(n * c, 1, 3.0);
        x[4..8].fill(0.0); // row 1 is zero
        let (mut y, mut norms) = (vec![0.0; n * c], vec![0.0; n]);
        l2norm_forward(&mut y, &mut norms, &x, n, c, 1e-12);
        for r in [0, 2] {
            let norm: f32 = y[r * c..(r + 1) * c].iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-6, "row {r} norm {norm}");
        }
        assert_eq!(&y[4..8], &[0.0; 4]);
        assert_eq!(norms[1], 0.0);
        let mut dx = vec![f32::NAN; n * c];
        l2norm_backward(&mut dx, &random_vec(n * c, 2, 1.0), &y, &norms, n, c, 1e-12);
        assert!(dx.iter().all(|v| v.is_finite()), "zero rows must not give NaN/inf gradients: {dx:?}");
    }

    #[test]
    fn l2norm_gradient_matches_finite_differences() {
        let (n, c) = (4, 6);
        let x = random_vec(n * c, 3, 1.0);
        let w = random_vec(n * c, 4, 1.0);
        let eps = 1e-12;
        let (mut y, mut norms) = (vec![0.0; n * c], vec![0.0; n]);
        l2norm_forward(&mut y, &mut norms, &x, n, c, eps);
        let mut dx = vec![f32::NAN; n * c];
        l2norm_backward(&mut dx, &w, &y, &norms, n, c, eps);
        check_gradient("l2norm dinp", &x, &dx, |x| {
            let (mut y, mut norms) = (vec![0.0; n * c], vec![0.0; n]);
            l2norm_forward(&mut y, &mut norms, x, n, c, eps);
            dot(&w, &y)
        }, 1e-3, 2e-3, 2e-3);
    }

    #[test]
    fn l2norm_gradient_in_the_clamped_branch_matches_finite_differences() {
        // Rows with ‖x‖ < eps: y = x/eps is linear.
        let (n, c, eps) = (2, 3, 10.0);
        let x = random_vec(n * c, 5, 1.0);
        let w = random_vec(n * c, 6, 1.0);
        let (mut y, mut norms) = (vec![0.0; n * c], vec![0.0; n]);
        l2norm_forward(&mut y, &mut norms, &x, n, c, eps);
        assert!(norms.iter().all(|&v| v < eps));
        let mut dx = vec![f32::NAN; n * c];
        l2norm_backward(&mut dx, &w, &y, &norms, n, c, eps);
        check_gradient("l2norm clamped dinp", &x, &dx, |x| {
            let (mut y, mut norms) = (vec![0.0; n * c], vec![0.0; n]);
            l2norm_forward(&mut y, &mut norms, x, n, c, eps);
            dot(&w, &y)
        }, 1e-2, 1e-4, 1e-3);
    }
}
