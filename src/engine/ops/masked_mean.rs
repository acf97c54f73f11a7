//! Mean over the sequence dimension of the valid positions only: out[b] = Σ_t valid[b,t]·x[b,t] /
//! Σ_t valid[b,t] — the DOS encoder's pooling over energy points when lengths differ. A sample
//! with no valid position pools to zeros and receives zero gradient (never 0/0). Backward writes (=).
//!
//! Sums are float, position by position, then scaled by 1/count (the arithmetic the DOS encoder
//! was pinned with). [`masked_mean`] and [`masked_mean_grad`] are the tensor-level ops with their
//! one device dispatch; the GPU arm (`kernels/masked_mean.cu`) does the same arithmetic in the
//! same order and is bit-identical to the CPU.

use crate::engine::gpu::{self, device_ok, gpu_of, gpu_vec_mut, opt_indices_ptr};
use crate::engine::ops::attention::mask_bools;
use crate::engine::tensor::{Indices, Storage, Tensor};

/// out (B, C) = masked mean over T of x (B, T, C), on x's device; `valid` (B, T), 1 = valid.
pub fn masked_mean(x: &Tensor, valid: Option<&Indices>) -> Tensor {
    assert_eq!(x.shape.len(), 3, "masked_mean: input must be (B, T, C), got {:?}", x.shape);
    let (b, t, c) = (x.shape[0], x.shape[1], x.shape[2]);
    assert!(valid.is_none_or(|m| m.len() == b * t), "masked_mean: mask must be (B, T) = ({b}, {t})");
    let mut out = device_ok(Tensor::uninit_on(&[b, c], x.device()), "masked_mean");
    match &x.storage {
        Storage::Cpu(xd) => masked_mean_forward(out.data_mut(), xd, mask_bools(valid).as_deref(), b, t, c),
        Storage::Gpu(xd) => {
            let g = gpu_of(x).clone();
            let r = gpu::masked_mean::forward(&g, gpu_vec_mut(&mut out, "masked_mean"), xd, opt_indices_ptr(valid), b, t, c);
            device_ok(r, "masked_mean");
        }
    }
    out
}

/// The backward of [`masked_mean`]: dx (B, T, C) from dy (B, C).
pub fn masked_mean_grad(dy: &Tensor, valid: Option<&Indices>, t: usize) -> Tensor {
    assert_eq!(dy.shape.len(), 2, "masked_mean_grad: dy must be (B, C), got {:?}", dy.shape);
    let (b, c) = (dy.shape[0], dy.shape[1]);
    assert!(valid.is_none_or(|m| m.len() == b * t), "masked_mean_grad: mask must be (B, T) = ({b}, {t})");
    let mut dx = device_ok(Tensor::uninit_on(&[b, t, c], dy.device()), "masked_mean_grad");
    match &dy.storage {
        Storage::Cpu(g) => masked_mean_backward(dx.data_mut(), g, mask_bools(valid).as_deref(), b, t, c),
        Storage::Gpu(g) => {
            let gpu = gpu_of(dy).clone();
            let r = gpu::masked_mean::backward(&gpu, gpu_vec_mut(&mut dx, "masked_mean_grad"), g, opt_indices_ptr(valid), b, t, c);
            device_ok(r, "masked_mean_grad");
        }
    }
    dx
}

/// out (B, C) = masked mean over T of inp (B, T, C); `valid` (B, T), None = all valid.
pub fn masked_mean_forward(out: &mut [f32], inp: &[f32], valid: Option<&[bool]>, b: usize, t: usize, c: usize) {
    assert!(out.len() == b * c && inp.len() == b * t * c, "masked_mean_forward: sizes");
    assert!(valid.is_none_or(|m| m.len() == b * t), "masked_mean_forward: mask must be (B, T)");
    let keep = |bi: usize, ti: usize| valid.is_none_or(|m| m[bi * t + ti]);
    for bi in 0..b {
        let row = &mut out[bi * c..(bi + 1) * c];
        row.fill(0.0);
        let count = (0..t).filter(|&ti| keep(bi, ti)).count();
        if count == 0 {
            continue;
        }
        for ti in (0..t).filter(|&ti| keep(bi, ti)) {
            let xr = &inp[(bi * t + ti) * c..(bi * t + ti + 1) * c];
            row.iter_mut().zip(xr).for_each(|(o, v)| *o += v);
        }
        let inv = 1.0 / count as f32;
        row.iter_mut().for_each(|o| *o *= inv);
    }
}

/// dinp (B, T, C) = dout[b] / count_b at valid positions, 0 elsewhere.
pub fn masked_mean_backward(dinp: &mut [f32], dout: &[f32], valid: Option<&[bool]>, b: usize, t: usize, c: usize) {
    assert!(dout.len() == b * c && dinp.len() == b * t * c, "masked_mean_backward: sizes");
    for bi in 0..b {
        let count = (0..t).filter(|&ti| valid.is_none_or(|m| m[bi * t + ti])).count();
        let inv = if count > 0 { 1.0 / count as f32 } else { 0.0 };
        let g = &dout[bi * c..(bi + 1) * c];
        for ti in 0..t {
            let keep = valid.is_none_or(|m| m[bi * t + ti]);
            for (d, &gg) in dinp[(bi * t + ti) * c..(bi * t + ti + 1) * c].iter_mut().zip(g) {
                *d = if keep { gg * inv } else { 0.0 };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::{check_gradient, dot, random_vec};

    #[test]
    fn masked_mean_values_and_gradients() {
        // Sample 0: rows (1, 2) and (3, 4) valid, (100, 100) padded → (2, 3). Sample 1: nothing valid → 0.
        let x = [1.0, 2.0, 3.0, 4.0, 100.0, 100.0, 5.0, 5.0, 6.0, 6.0, 7.0, 7.0];
        let valid = [true, true, false, false, false, false];
        let mut out = [9.0f32; 4];
        masked_mean_forward(&mut out, &x, Some(&valid), 2, 3, 2);
        assert_eq!(out, [2.0, 3.0, 0.0, 0.0]);
        let (b, t, c) = (2, 4, 3);
        let valid = [true, false, true, true, false, true, false, false];
        let x = random_vec(b * t * c, 1, 1.0);
        let proj = random_vec(b * c, 2, 1.0);
        let mut dx = vec![f32::NAN; b * t * c];
        masked_mean_backward(&mut dx, &proj, Some(&valid), b, t, c);
        check_gradient("masked mean", &x, &dx, |x| {
            let mut out = vec![0.0; b * c];
            masked_mean_forward(&mut out, x, Some(&valid), b, t, c);
            dot(&proj, &out)
        }, 1e-2, 1e-4, 1e-4);
    }
}
