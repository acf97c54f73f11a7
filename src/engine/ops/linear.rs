//! Linear layer y = x·Wᵀ + b (PyTorch weight layout (OC, C), so checkpoints map one to one).

use super::matmul::sgemm;
use crate::engine::gpu::{self, device_ok, gpu_of};
use crate::engine::tensor::{Storage, Tensor};

/// y (N, OC) = x (N, C)·Wᵀ + b on x's device (x may have any leading shape; rows are flattened).
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Tensor {
    let (oc, c) = (w.shape[0], w.shape[1]);
    let n = x.numel() / c.max(1);
    let mut shape = x.shape.clone();
    *shape.last_mut().expect("linear: scalar input") = oc;
    match &x.storage {
        Storage::Cpu(xd) => {
            let mut out = vec![0.0f32; n * oc];
            linear_forward(&mut out, xd, w.data(), b.map(Tensor::data), n, c, oc);
            Tensor::from_vec(&shape, out)
        }
        Storage::Gpu(xd) => {
            let g = gpu_of(x).clone();
            let mut out = device_ok(Tensor::uninit_on(&shape, x.device()), "linear");
            if let Storage::Gpu(o) = &mut out.storage {
                device_ok(gpu::linear::forward(&g, o, xd, w.gpu_vec(), b.map(Tensor::gpu_vec), n, c, oc), "linear");
            }
            out
        }
    }
}

/// The backward of [`linear`]: returns dx (x's shape) when `want_dx`; dW += dyᵀx, db += Σdy.
pub fn linear_grad(dy: &Tensor, x: &Tensor, w: &Tensor, dw: &mut Tensor, db: Option<&mut Tensor>, want_dx: bool) -> Option<Tensor> {
    let (oc, c) = (w.shape[0], w.shape[1]);
    let n = x.numel() / c.max(1);
    let mut dx = want_dx.then(|| device_ok(Tensor::uninit_on(&x.shape, x.device()), "linear_grad"));
    match &dy.storage {
        Storage::Cpu(dyd) => linear_backward(
            dx.as_mut().map(Tensor::data_mut), dw.data_mut(), db.map(Tensor::data_mut), dyd, x.data(), w.data(), n, c, oc,
        ),
        Storage::Gpu(dyd) => {
            let g = gpu_of(dy).clone();
            let dxv = dx.as_mut().map(|t| match &mut t.storage {
                Storage::Gpu(v) => v,
                Storage::Cpu(_) => unreachable!("dx is allocated on dy's device"),
            });
            let dwv = match &mut dw.storage {
                Storage::Gpu(v) => v,
                Storage::Cpu(_) => panic!("linear_grad: weight gradient on the CPU, dy on {}", g.device),
            };
            let dbv = db.map(|t| match &mut t.storage {
                Storage::Gpu(v) => v,
                Storage::Cpu(_) => panic!("linear_grad: bias gradient on the CPU, dy on {}", g.device),
            });
            device_ok(gpu::linear::backward(&g, dxv, dwv, dbv, dyd, x.gpu_vec(), w.gpu_vec(), n, c, oc), "linear_grad");
        }
    }
    dx
}

/// out (N, OC) = inp (N, C) · weight (OC, C)ᵀ + bias (OC)
pub fn linear_forward(
    out: &mut [f32],          // (N, OC)
    inp: &[f32],              // (N, C)
    weight: &[f32],           // (OC, C)
    bias: Option<&[f32]>,     // (OC)
    n: usize,
    c: usize,
    oc: usize,
) {
    sgemm(out, inp, weight, n, oc, c, false, true, 1.0, 0.0);
    if let Some(b) = bias {
        for row in out[..n * oc].chunks_exact_mut(oc) {
            for (o, bb) in row.iter_mut().zip(b) {
                *o += bb;
            }
        }
    }
}

/// dinp (N, C) = dout · W (written); dweight (OC, C) += doutᵀ · inp; dbias (OC) += Σ_n dout.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    dinp: Option<&mut [f32]>,   // (N, C)
    dweight: &mut [f32],        // (OC, C)
    dbias: Option<&mut [f32]>,  // (OC)
    dout: &[f32],               // (N, OC)
    inp: &[f32],                // (N, C)
    weight: &[f32],             // (OC, C)
    n: usize,
    c: usize,
    oc: usize,
) {
    if let Some(dinp) = dinp {
        sgemm(dinp, dout, weight, n, c, oc, false, false, 1.0, 0.0);
    }
    sgemm(dweight, dout, inp, oc, c, n, true, false, 1.0, 1.0);
    if let Some(db) = dbias {
        for row in dout[..n * oc].chunks_exact(oc) {
            for (d, g) in db.iter_mut().zip(row) {
                *d += g;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::{check_gradient, dot, random_vec};

    #[test]
    fn linear_gradients_match_finite_differences() {
        let (n, c, oc) = (5, 7, 3);
        let x = random_vec(n * c, 1, 1.0);
        let w = random_vec(oc * c, 2, 1.0);
        let b = random_vec(oc, 3, 1.0);
        let proj = random_vec(n * oc, 4, 1.0);
        let fwd = |x: &[f32], w: &[f32], b: &[f32]| {
            let mut out = vec![0.0; n * oc];
            linear_forward(&mut out, x, w, Some(b), n, c, oc);
            dot(&proj, &out)
        };
        let (mut dx, mut dw, mut db) = (vec![0.0; n * c], vec![0.0; oc * c], vec![0.0; oc]);
        linear_backward(Some(&mut dx), &mut dw, Some(&mut db), &proj, &x, &w, n, c, oc);
        check_gradient("linear dx", &x, &dx, |x| fwd(x, &w, &b), 1e-2, 1e-3, 1e-3);
        check_gradient("linear dw", &w, &dw, |w| fwd(&x, w, &b), 1e-2, 1e-3, 1e-3);
        check_gradient("linear db", &b, &db, |b| fwd(&x, &w, b), 1e-2, 1e-3, 1e-3);
    }
}
