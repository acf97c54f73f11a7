//! Launchers of `kernels/segment.cu` (segment mean and its gradient) and their op check. One
//! thread per output value: the elementwise launch shape.

use super::checks::{compare, Comparison, OpCheck};
use super::ELEMENTWISE_THREADS;
use crate::engine::backend::{arg, Gpu, GpuVec, Kernel, LaunchConfig};
use crate::engine::gradcheck::random_vec;
use crate::engine::ops::segment::{segment_mean, segment_mean_grad};
use crate::engine::tensor::{Device, Indices, Tensor};
use anyhow::Result;

const fn k(name: &'static str) -> Kernel {
    Kernel { family: "segment", name }
}

/// out (G, C) = per-segment mean of inp (N, C)
pub fn mean_forward(gpu: &Gpu, out: &mut GpuVec<f32>, inp: &GpuVec<f32>, offsets: &GpuVec<u32>, g: usize, c: usize) -> Result<()> {
    let (po, pi, pf, gg, cc) = (out.ptr(), inp.ptr(), offsets.ptr(), g as i64, c as i64);
    let cfg = LaunchConfig::elementwise(g * c, ELEMENTWISE_THREADS);
    gpu.launch(k("segment_mean_forward_f32"), cfg, &mut [arg(&po), arg(&pi), arg(&pf), arg(&gg), arg(&cc)])
}

/// dinp (N, C) = dout[segment of the row] / its size
pub fn mean_backward(gpu: &Gpu, dinp: &mut GpuVec<f32>, dout: &GpuVec<f32>, offsets: &GpuVec<u32>, g: usize, n: usize, c: usize) -> Result<()> {
    let (pd, po, pf, gg, nn, cc) = (dinp.ptr(), dout.ptr(), offsets.ptr(), g as i64, n as i64, c as i64);
    let cfg = LaunchConfig::elementwise(n * c, ELEMENTWISE_THREADS);
    gpu.launch(k("segment_mean_backward_f32"), cfg, &mut [arg(&pd), arg(&po), arg(&pf), arg(&gg), arg(&nn), arg(&cc)])
}

fn check_segment_mean(d: Device) -> Result<Comparison> {
    // Segments of 3, 0 (empty), 1, 7 and 2 rows.
    let offsets = Indices::Cpu(vec![0, 3, 3, 4, 11, 13]);
    let goffsets = offsets.to_device(d)?;
    let x = Tensor::from_vec(&[13, 33], random_vec(13 * 33, 1, 1.0));
    let dy = Tensor::from_vec(&[5, 33], random_vec(5 * 33, 2, 1.0));
    let (gx, gdy) = (x.to_device(d)?, dy.to_device(d)?);
    let (y, gy) = (segment_mean(&x, &offsets), segment_mean(&gx, &goffsets));
    let (dx, gdx) = (segment_mean_grad(&dy, &offsets, 13), segment_mean_grad(&gdy, &goffsets, 13));
    // Exact: the same in-order sums and the same reciprocal.
    compare(&[("segment_mean", &gy, &y), ("segment_mean_grad", &gdx, &dx)], 0.0, 0.0)
}

/// The checks of this family, for `checks::all()`.
pub fn checks() -> Vec<OpCheck> {
    vec![OpCheck { name: "segment mean (forward, backward)", kernels: &["segment_mean_forward_f32", "segment_mean_backward_f32"], run: check_segment_mean }]
}
