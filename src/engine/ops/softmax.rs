//! Row-wise softmax over the last dimension, max-subtracted so large logits cannot overflow.
//!
//! Backward writes (=) the input gradient: dx = y ⊙ (dy − Σ_j dy_j·y_j), which needs only the
//! saved output y.
//!
//! [`softmax`] and [`softmax_grad`] are the tensor-level ops (one device dispatch; the GPU arm is
//! the row softmax of `kernels/attention.cu`, engine::gpu::attention).

use crate::engine::gpu::{self, device_ok, gpu_of, gpu_vec_mut};
use crate::engine::tensor::{Storage, Tensor};

/// Softmax over the last dimension of x, on x's device.
pub fn softmax(x: &Tensor) -> Tensor {
    let c = *x.shape.last().expect("softmax: scalar input");
    let n = x.numel() / c.max(1);
    let mut out = device_ok(Tensor::uninit_on(&x.shape, x.device()), "softmax");
    match &x.storage {
        Storage::Cpu(xd) => softmax_forward(out.data_mut(), xd, n, c),
        Storage::Gpu(xd) => {
            let g = gpu_of(x).clone();
            device_ok(gpu::attention::softmax_forward(&g, gpu_vec_mut(&mut out, "softmax"), xd, n, c), "softmax");
        }
    }
    out
}

/// The backward of [`softmax`] from its output y: dx = y ⊙ (dy − Σ dy·y) per row.
pub fn softmax_grad(dy: &Tensor, y: &Tensor) -> Tensor {
    assert_eq!(dy.shape, y.shape, "softmax_grad: dy and y shapes differ");
    let c = *y.shape.last().expect("softmax_grad: scalar input");
    let n = y.numel() / c.max(1);
    let mut dx = device_ok(Tensor::uninit_on(&y.shape, y.device()), "softmax_grad");
    match &dy.storage {
        Storage::Cpu(g) => softmax_backward(dx.data_mut(), g, y.data(), n, c),
        Storage::Gpu(g) => {
            let gpu = gpu_of(dy).clone();
            device_ok(gpu::attention::softmax_backward(&gpu, gpu_vec_mut(&mut dx, "softmax_grad"), g, y.gpu_vec(), n, c), "softmax_grad");
        }
    }
    dx
}

/// out (N, C) = softmax(inp (N, C)) per row.
pub fn softmax_forward(out: &mut [f32], inp: &[f32], n: usize, c: usize) {
    assert!(out.len() >= n * c && inp.len() >= n * c, "softmax_forward: buffers shorter than N·C");
    for (o, x) in out[..n * c].chunks_exact_mut(c).zip(inp[..n * c].chunks_exact(c)) {
        softmax_row(o, x);
    }
}

/// One row: y = exp(x − max x) / Σ exp(x − max x). Returns ln Σ exp(x) (the log-partition).
pub fn softmax_row(out: &mut [f32], inp: &[f32]) -> f32 {
    let max = inp.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for (o, &x) in out.iter_mut().zip(inp) {
        let e = (x - max).exp();
        *o = e;
        sum += e as f64;
    }
    let inv = (1.0 / sum) as f32;
    out.iter_mut().for_each(|o| *o *= inv);
    max + (sum as f32).ln()
}

/// dinp (N, C) = out ⊙ (dout − rowsum(dout ⊙ out)) (written).
pub fn softmax_backward(dinp: &mut [f32], dout: &[f32], out: &[f32], n: usize, c: usize) {
    assert!(dinp.len() >= n * c && dout.len() >= n * c && out.len() >= n * c, "softmax_backward: short buffers");
    for i in 0..n {
        let (y, dy) = (&out[i * c..(i + 1) * c], &dout[i * c..(i + 1) * c]);
        let dot: f64 = y.iter().zip(dy).map(|(a, b)| *a as f64 * *b as f64).sum();
        let dot = dot as f32;
        for (j, d) in dinp[i * c..(i + 1) * c].iter_mut().enumerate() {
            *d = y[j] * (dy[j] - dot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::{check_gradient, dot, random_vec};

    #[test]
    fn softmax_is_stable_for_huge_logits_and_sums_to_one() {
        let x = [1000.0f32, 1001.0, 999.0, -1e30];
        let mut y = [0.0f32; 4];
        softmax_forward(&mut y, &x, 1, 4);
        // e^0, e^1, e^-1 normalised by hand.
        let z = 1.0 + std::f32::consts::E + (-1.0f32).exp();
        assert!((y[1] - std::f32::consts::E / z).abs() < 1e-6 && y[3] == 0.0);
        assert!((y.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn softmax_gradients_match_finite_differences() {
        let (n, c) = (3, 7);
        let x = random_vec(n * c, 1, 3.0);
        let proj = random_vec(n * c, 2, 1.0);
        let mut y = vec![0.0; n * c];
        softmax_forward(&mut y, &x, n, c);
        let mut dx = vec![0.0; n * c];
        softmax_backward(&mut dx, &proj, &y, n, c);
        check_gradient("softmax", &x, &dx, |x| {
            let mut y = vec![0.0; n * c];
            softmax_forward(&mut y, x, n, c);
            dot(&proj, &y)
        }, 1e-2, 1e-3, 1e-3);
    }
}
