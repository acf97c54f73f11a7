//! Mean squared error, L = (1/N) Σ (pred − target)², the fine-tuning regression loss
//! (PyTorch `MSELoss(reduction="mean")`). Accumulates in f64. Backward writes (=)
//! dpred = dloss · 2(pred − target)/N.
//!
//! [`mse`] / [`mse_grad`] are the tensor-level op (one device dispatch each); the GPU arm is
//! `kernels/mse.cu` (engine::gpu::mse). The loss value comes back to the host (a metric).

use crate::engine::gpu::{self, device_ok, gpu_of};
use crate::engine::ops::elementwise::mixed_devices;
use crate::engine::tensor::{Storage, Tensor};

/// The mean of (pred − target)² over all values, on the tensors' device.
pub fn mse(pred: &Tensor, target: &Tensor) -> f32 {
    assert_eq!(pred.shape, target.shape, "mse: pred/target shapes differ");
    match (&pred.storage, &target.storage) {
        (Storage::Cpu(p), Storage::Cpu(t)) => mse_forward(p, t),
        (Storage::Gpu(p), Storage::Gpu(t)) => {
            if p.is_empty() {
                return 0.0;
            }
            let s = device_ok(gpu::mse::sum_sq_diff(gpu_of(pred), p, t), "mse");
            (s / p.len() as f64) as f32
        }
        _ => mixed_devices("mse", pred, target),
    }
}

/// d(dloss·mse)/d pred (written), on the tensors' device.
pub fn mse_grad(pred: &Tensor, target: &Tensor, dloss: f32) -> Tensor {
    assert_eq!(pred.shape, target.shape, "mse_grad: pred/target shapes differ");
    match (&pred.storage, &target.storage) {
        (Storage::Cpu(p), Storage::Cpu(t)) => {
            let mut d = vec![0.0f32; p.len()];
            mse_backward(&mut d, p, t, dloss);
            Tensor::from_vec(&pred.shape, d)
        }
        (Storage::Gpu(p), Storage::Gpu(t)) => {
            let g = gpu_of(pred).clone();
            let mut d = device_ok(Tensor::uninit_on(&pred.shape, pred.device()), "mse_grad");
            let k = 2.0 * dloss / p.len().max(1) as f32;
            if let Storage::Gpu(dv) = &mut d.storage {
                device_ok(gpu::mse::backward(&g, dv, p, t, k), "mse_grad");
            }
            d
        }
        _ => mixed_devices("mse_grad", pred, target),
    }
}

/// Returns the mean of (pred (N) − target (N))².
pub fn mse_forward(pred: &[f32], target: &[f32]) -> f32 {
    assert_eq!(pred.len(), target.len(), "mse_forward: pred/target lengths differ");
    if pred.is_empty() {
        return 0.0;
    }
    let s: f64 = pred.iter().zip(target).map(|(&p, &t)| (p as f64 - t as f64).powi(2)).sum();
    (s / pred.len() as f64) as f32
}

/// dpred (N) = dloss · 2(pred − target)/N
pub fn mse_backward(dpred: &mut [f32], pred: &[f32], target: &[f32], dloss: f32) {
    assert!(dpred.len() == pred.len() && target.len() == pred.len(), "mse_backward: lengths differ");
    let k = 2.0 * dloss / pred.len().max(1) as f32;
    for ((d, &p), &t) in dpred.iter_mut().zip(pred).zip(target) {
        *d = k * (p - t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::{check_gradient, random_vec};

    #[test]
    fn mse_value_and_gradient() {
        // ((1−0)² + (−2−1)²)/2 = 5
        assert_eq!(mse_forward(&[1.0, -2.0], &[0.0, 1.0]), 5.0);
        let p = random_vec(10, 1, 2.0);
        let t = random_vec(10, 2, 2.0);
        let mut d = vec![0.0; 10];
        mse_backward(&mut d, &p, &t, 1.5);
        check_gradient("mse", &p, &d, |p| 1.5 * mse_forward(p, &t) as f64, 1e-2, 1e-4, 1e-3);
    }
}
