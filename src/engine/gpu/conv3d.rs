//! Host side of the 3-D convolution on a device: a layer's sizes become one
//! [`ConvDesc`] per call and each pass is one call of the backend's convolution primitive
//! (cuDNN on `cuda`, the CPU convolution executing the descriptor on `cuda-sim`). No kernel of
//! our own: what cuDNN does not fuse (batch norm, ReLU, the residual add, pooling) has its own
//! kernels elsewhere.

use super::checks::{compare, on, rand, Comparison, OpCheck};
use crate::engine::backend::{ConvDesc, ConvPass, Gpu, GpuVec};
use crate::engine::ops::conv3d::{conv3d, conv3d_grad, Conv3dDims, Window3d};
use crate::engine::tensor::Device;
use anyhow::{ensure, Result};
use std::sync::Arc;

/// The descriptor of `dims` with every operand's length checked against it.
fn desc(dims: &Conv3dDims, x: usize, w: usize, y: usize) -> Result<ConvDesc> {
    let d = ConvDesc::from_dims(dims);
    d.check()?;
    let [xl, wl, yl] = d.extents();
    ensure!(x >= xl && w >= wl && y >= yl, "conv3d: buffers ({x}, {w}, {y}) smaller than the descriptor's ({xl}, {wl}, {yl})");
    Ok(d)
}

/// out (N, OC, OD, OH, OW) = conv(x, w) (written).
pub fn forward(g: &Arc<Gpu>, out: &mut GpuVec<f32>, x: &GpuVec<f32>, w: &GpuVec<f32>, dims: &Conv3dDims) -> Result<()> {
    let d = desc(dims, x.len(), w.len(), out.len())?;
    g.conv(&d, ConvPass::Forward, x.ptr(), w.ptr(), out.ptr())
}

/// dinp (N, C, D, H, W) = convᵀ(dout, w) (written).
pub fn backward_data(g: &Arc<Gpu>, dinp: &mut GpuVec<f32>, dout: &GpuVec<f32>, w: &GpuVec<f32>, dims: &Conv3dDims) -> Result<()> {
    let d = desc(dims, dinp.len(), w.len(), dout.len())?;
    g.conv(&d, ConvPass::BackwardData, dinp.ptr(), w.ptr(), dout.ptr())
}

/// dw += corr(x, dout) (accumulated).
pub fn backward_filter(g: &Arc<Gpu>, dw: &mut GpuVec<f32>, dout: &GpuVec<f32>, x: &GpuVec<f32>, dims: &Conv3dDims) -> Result<()> {
    let d = desc(dims, x.len(), dw.len(), dout.len())?;
    g.conv(&d, ConvPass::BackwardFilter, x.ptr(), dw.ptr(), dout.ptr())
}

/// The ResNeXt's convolution shapes in small: a grouped, strided, anisotropically padded 3³-like
/// conv, the stem's 7³/2 from one channel, and a strided 1³ projection; forward, backward-data
/// and backward-filter (accumulating onto a non-zero dW). cuDNN and the CPU's im2col GEMM sum
/// ≤ 343 products of O(1) terms (dW: N·P ≤ 64) in different orders: 2e-5 absolute + 1e-5
/// relative in fp32 (TF32 off). On cuda-sim the descriptor runs the CPU code itself: exact.
fn check_conv3d(d: Device) -> Result<Comparison> {
    let cases = [
        Conv3dDims { n: 2, c: 4, in_dims: [5, 4, 6], oc: 6, groups: 2, window: Window3d::new([3, 3, 1], [2, 1, 2], [1, 0, 0]) },
        Conv3dDims { n: 2, c: 1, in_dims: [8, 8, 8], oc: 4, groups: 1, window: Window3d::cube(7, 2, 3) },
        Conv3dDims { n: 3, c: 8, in_dims: [4, 4, 4], oc: 6, groups: 1, window: Window3d::cube(1, 2, 0) },
    ];
    let mut worst: Option<Comparison> = None;
    for (i, dims) in cases.iter().enumerate() {
        let s = 90 + 10 * i as u64;
        let [od, oh, ow] = dims.out_dims();
        let w_shape = [dims.oc, dims.cg(), dims.window.kernel[0], dims.window.kernel[1], dims.window.kernel[2]];
        let (x, w) = (rand(&[dims.n, dims.c, dims.in_dims[0], dims.in_dims[1], dims.in_dims[2]], s), rand(&w_shape, s + 1));
        let dy = rand(&[dims.n, dims.oc, od, oh, ow], s + 2);
        let (gx, gw, gdy) = (on(&x, d)?, on(&w, d)?, on(&dy, d)?);
        let y = conv3d(&x, &w, None, dims);
        let gy = conv3d(&gx, &gw, None, dims);
        let mut dw = rand(&w_shape, s + 3);
        let mut gdw = on(&dw, d)?;
        let dx = conv3d_grad(&dy, &x, &w, &mut dw, None, true, dims).expect("dinp asked for");
        let gdx = conv3d_grad(&gdy, &gx, &gw, &mut gdw, None, true, dims).expect("dinp asked for");
        let c = compare(&[("y", &gy, &y), ("dx", &gdx, &dx), ("dW", &gdw, &dw)], 2e-5, 1e-5).map_err(|e| e.context(format!("{dims:?}")))?;
        worst = Some(worst.map_or(c, |w| w.worst_of(c)));
    }
    Ok(worst.expect("at least one case"))
}

pub fn checks() -> Vec<OpCheck> {
    vec![OpCheck { name: "conv3d (cuDNN descriptor: forward, backward-data, backward-filter; grouped, strided, padded)", kernels: &[], run: check_conv3d }]
}
