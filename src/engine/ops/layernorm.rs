//! Layer normalisation over the last dimension: y = (x − μ)·rstd·w + b with rstd = 1/√(σ² + eps),
//! σ² the biased variance of the row (PyTorch `nn.LayerNorm`). The forward saves μ and rstd per row
//! so the backward never recomputes them. Statistics accumulate in f64: rows of BERT width (768)
//! with large offsets lose digits in f32 sums.
//!
//! Backward writes (=) the input gradient and accumulates (+=) weight and bias gradients.
//!
//! [`layernorm`] and [`layernorm_grad`] are the tensor-level ops with their one device dispatch:
//! the CPU arm is the slice reference below, the GPU arm `kernels/layernorm.cu`
//! (engine::gpu::layernorm), which reproduces the parameter gradients' summation order exactly.

use crate::engine::gpu::{self, device_ok, gpu_of, gpu_vec_mut};
use crate::engine::tensor::{Storage, Tensor};
use rayon::prelude::*;

/// Rows per rayon task; the backward's parameter-gradient partials are per task and summed in
/// task order, so results do not depend on the thread count (the GPU backward uses the same
/// tasks, so its parameter gradients equal these bit for bit).
pub(crate) const ROWS_PER_TASK: usize = 32;

/// (y, mean (N), rstd (N)) = layernorm of x (…, C) with weight, bias (C), on x's device.
pub fn layernorm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f32) -> (Tensor, Tensor, Tensor) {
    let c = weight.numel();
    let n = x.numel() / c.max(1);
    let dev = x.device();
    let alloc = |shape: &[usize]| device_ok(Tensor::uninit_on(shape, dev), "layernorm");
    let (mut out, mut mean, mut rstd) = (alloc(&x.shape), alloc(&[n]), alloc(&[n]));
    match &x.storage {
        Storage::Cpu(xd) => {
            layernorm_forward(out.data_mut(), mean.data_mut(), rstd.data_mut(), xd, weight.data(), bias.data(), n, c, eps)
        }
        Storage::Gpu(xd) => {
            let g = gpu_of(x).clone();
            let (o, m) = (gpu_vec_mut(&mut out, "layernorm"), gpu_vec_mut(&mut mean, "layernorm"));
            let r = gpu_vec_mut(&mut rstd, "layernorm");
            device_ok(gpu::layernorm::forward(&g, o, m, r, xd, weight.gpu_vec(), bias.gpu_vec(), n, c, eps), "layernorm");
        }
    }
    (out, mean, rstd)
}

/// The backward of [`layernorm`]: returns dx (x's shape); dweight += Σ dy·x̂, dbias += Σ dy.
pub fn layernorm_grad(
    dy: &Tensor, x: &Tensor, weight: &Tensor, mean: &Tensor, rstd: &Tensor, dweight: &mut Tensor, dbias: &mut Tensor,
) -> Tensor {
    let c = weight.numel();
    let n = x.numel() / c.max(1);
    let mut dx = device_ok(Tensor::uninit_on(&x.shape, x.device()), "layernorm_grad");
    match &dy.storage {
        Storage::Cpu(dyd) => layernorm_backward(
            dx.data_mut(), dweight.data_mut(), dbias.data_mut(), dyd, x.data(), weight.data(), mean.data(), rstd.data(), n, c,
        ),
        Storage::Gpu(dyd) => {
            let g = gpu_of(dy).clone();
            let (dw, db) = (gpu_vec_mut(dweight, "layernorm_grad"), gpu_vec_mut(dbias, "layernorm_grad"));
            let r = gpu::layernorm::backward(
                &g, gpu_vec_mut(&mut dx, "layernorm_grad"), dw, db, dyd, x.gpu_vec(), weight.gpu_vec(), mean.gpu_vec(), rstd.gpu_vec(),
                n, c, ROWS_PER_TASK,
            );
            device_ok(r, "layernorm_grad");
        }
    }
    dx
}

/// out (N, C) = layernorm(inp) · weight + bias; saves mean (N) and rstd (N).
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward(
    out: &mut [f32],     // (N, C)
    mean: &mut [f32],    // (N)
    rstd: &mut [f32],    // (N)
    inp: &[f32],         // (N, C)
    weight: &[f32],      // (C)
    bias: &[f32],        // (C)
    n: usize,
    c: usize,
    eps: f32,
) {
    assert!(out.len() >= n * c && inp.len() >= n * c && mean.len() >= n && rstd.len() >= n);
    assert!(weight.len() == c && bias.len() == c, "layernorm: weight/bias must have C = {c} values");
    if c == 0 {
        return;
    }
    out[..n * c]
        .par_chunks_mut(c)
        .zip(inp[..n * c].par_chunks(c))
        .zip(mean[..n].par_iter_mut().zip(rstd[..n].par_iter_mut()))
        .with_min_len(ROWS_PER_TASK)
        .for_each(|((o, x), (mean, rstd))| {
            let m = x.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
            let var = x.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / c as f64;
            let (m32, s32) = (m as f32, (1.0 / (var + eps as f64).sqrt()) as f32);
            for (j, o) in o.iter_mut().enumerate() {
                *o = (x[j] - m32) * s32 * weight[j] + bias[j];
            }
            *mean = m32;
            *rstd = s32;
        });
}

/// With x̂ = (x − μ)·rstd and g = dout·w:
/// dinp = rstd·(g − mean(g) − x̂·mean(g·x̂)) (written); dweight += Σ_n dout·x̂; dbias += Σ_n dout.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward(
    dinp: &mut [f32],     // (N, C)
    dweight: &mut [f32],  // (C)
    dbias: &mut [f32],    // (C)
    dout: &[f32],         // (N, C)
    inp: &[f32],          // (N, C)
    weight: &[f32],       // (C)
    mean: &[f32],         // (N)
    rstd: &[f32],         // (N)
    n: usize,
    c: usize,
) {
    assert!(dinp.len() >= n * c && dout.len() >= n * c && inp.len() >= n * c);
    assert!(dweight.len() == c && dbias.len() == c && weight.len() == c);
    if c == 0 {
        return;
    }
    let rows = ROWS_PER_TASK * c;
    // Per task of ROWS_PER_TASK rows: its dinp rows, and its partial [Σ dout·x̂ (C), Σ dout (C)].
    let partials: Vec<Vec<f32>> = dinp[..n * c]
        .par_chunks_mut(rows)
        .zip(dout[..n * c].par_chunks(rows))
        .zip(inp[..n * c].par_chunks(rows))
        .enumerate()
        .map(|(task, ((dinp, dout), inp))| {
            let mut acc = vec![0.0f32; 2 * c];
            for (r, ((d, dy), x)) in dinp.chunks_exact_mut(c).zip(dout.chunks_exact(c)).zip(inp.chunks_exact(c)).enumerate() {
                let i = task * ROWS_PER_TASK + r;
                let (m, s) = (mean[i], rstd[i]);
                let mut mean_g = 0.0f64;
                let mut mean_gx = 0.0f64;
                for j in 0..c {
                    let xhat = (x[j] - m) * s;
                    let g = dy[j] * weight[j];
                    mean_g += g as f64;
                    mean_gx += (g * xhat) as f64;
                    acc[j] += dy[j] * xhat;
                    acc[c + j] += dy[j];
                }
                let mean_g = (mean_g / c as f64) as f32;
                let mean_gx = (mean_gx / c as f64) as f32;
                for j in 0..c {
                    let xhat = (x[j] - m) * s;
                    d[j] = s * (dy[j] * weight[j] - mean_g - xhat * mean_gx);
                }
            }
            acc
        })
        .collect();
    for acc in &partials {
        dweight.iter_mut().zip(&acc[..c]).for_each(|(d, v)| *d += v);
        dbias.iter_mut().zip(&acc[c..]).for_each(|(d, v)| *d += v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::{check_gradient, dot, random_vec};

    #[test]
    fn layernorm_rows_have_zero_mean_unit_variance_before_affine() {
        let (n, c) = (3, 16);
        let x: Vec<f32> = random_vec(n * c, 1, 3.0).iter().map(|v| v + 100.0).collect();
        let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
        layernorm_forward(&mut out, &mut mean, &mut rstd, &x, &vec![1.0; c], &vec![0.0; c], n, c, 1e-5);
        for row in out.chunks(c) {
            let m: f32 = row.iter().sum::<f32>() / c as f32;
            let v: f32 = row.iter().map(|y| (y - m) * (y - m)).sum::<f32>() / c as f32;
            assert!(m.abs() < 1e-5 && (v - 1.0).abs() < 1e-3, "mean {m} var {v}");
        }
        assert!((mean[0] - 100.0).abs() < 3.0);
    }

    #[test]
    fn layernorm_gradients_match_finite_differences() {
        let (n, c) = (4, 9);
        let x = random_vec(n * c, 1, 2.0);
        let w = random_vec(c, 2, 1.5);
        let b = random_vec(c, 3, 1.0);
        let proj = random_vec(n * c, 4, 1.0);
        let fwd = |x: &[f32], w: &[f32], b: &[f32]| {
            let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
            layernorm_forward(&mut out, &mut mean, &mut rstd, x, w, b, n, c, 1e-5);
            dot(&proj, &out)
        };
        let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
        layernorm_forward(&mut out, &mut mean, &mut rstd, &x, &w, &b, n, c, 1e-5);
        let mut dx = vec![f32::NAN; n * c];
        // Parameter grads start non-zero to check that backward accumulates.
        let (mut dw, mut db) = (vec![1.0; c], vec![1.0; c]);
        layernorm_backward(&mut dx, &mut dw, &mut db, &proj, &x, &w, &mean, &rstd, n, c);
        dw.iter_mut().for_each(|v| *v -= 1.0);
        db.iter_mut().for_each(|v| *v -= 1.0);
        check_gradient("layernorm dx", &x, &dx, |x| fwd(x, &w, &b), 1e-2, 2e-3, 2e-3);
        check_gradient("layernorm dw", &w, &dw, |w| fwd(&x, w, &b), 1e-2, 2e-3, 2e-3);
        check_gradient("layernorm db", &b, &db, |b| fwd(&x, &w, b), 1e-2, 2e-3, 2e-3);
    }
}
