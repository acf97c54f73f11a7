//! 3-D max pooling (argmax saved for backward), 3-D average pooling and global average pooling
//! over (N, C, D, H, W) volumes, PyTorch semantics:
//!
//! - max pool: padding counts as −∞ (it never wins), a NaN in a window propagates to the output
//!   (as in PyTorch) instead of being silently skipped, and the first maximum in (d, h, w) scan
//!   order wins ties; the gradient goes to that one input element;
//! - average pool: `count_include_pad` as PyTorch (default true there): padded zeros count in the
//!   divisor when true, only the in-volume elements when false;
//! - global average pool: mean over D·H·W per (n, c), the ResNeXt head.
//!
//! Input gradients are written (`=`). Every op runs one (n, c) plane per rayon task.
//!
//! The tensor-level ops at the end ([`max_pool3d`], [`avg_pool3d`], [`global_avg_pool3d`] and
//! their `_grad`s) match the storage once: CPU arm = these references, GPU arm =
//! `kernels/pool3d.cu`, which reproduces each reference's order of operations (bit-identical).

use super::conv3d::Window3d;
use crate::engine::gpu::{self, device_ok, gpu_of, gpu_vec_mut};
use crate::engine::{Indices, Storage, Tensor};
use rayon::prelude::*;

/// out (N, C, OD, OH, OW) = max over each window; argmax (same shape) = flat index d·H·W + h·W + w
/// of the winning element inside its (n, c) input plane.
pub fn max_pool3d_forward(
    out: &mut [f32],     // (N, C, OD, OH, OW)
    argmax: &mut [u32],  // (N, C, OD, OH, OW)
    inp: &[f32],         // (N, C, D, H, W)
    n: usize,
    c: usize,
    in_dims: [usize; 3],
    window: &Window3d,
) {
    let [d, h, w] = in_dims;
    let [od, oh, ow] = window.out_dims(in_dims);
    let (plane, oplane) = (d * h * w, od * oh * ow);
    assert!(out.len() >= n * c * oplane && argmax.len() >= n * c * oplane && inp.len() >= n * c * plane,
        "max_pool3d_forward: buffer too small");
    assert!(plane <= u32::MAX as usize, "max_pool3d_forward: plane too large for u32 argmax");
    assert!(window.padding.iter().zip(&window.kernel).all(|(p, k)| 2 * p <= *k),
        "max_pool3d: padding must be at most half the kernel (as PyTorch), got {window:?}");
    if oplane == 0 {
        return;
    }
    out[..n * c * oplane]
        .par_chunks_mut(oplane)
        .zip(argmax[..n * c * oplane].par_chunks_mut(oplane))
        .zip(inp[..n * c * plane].par_chunks(plane))
        .for_each(|((oplane_buf, aplane), iplane)| {
            for z in 0..od {
                for y in 0..oh {
                    for x in 0..ow {
                        let mut best = f32::NEG_INFINITY;
                        let mut best_at = u32::MAX;
                        for (iz, iy, ix) in window.taps([z, y, x], in_dims) {
                            let at = iz * h * w + iy * w + ix;
                            let v = iplane[at];
                            // NaN wins and sticks; ties keep the first.
                            if best_at == u32::MAX || v > best || (v.is_nan() && !best.is_nan()) {
                                best = v;
                                best_at = at as u32;
                            }
                        }
                        let o = z * oh * ow + y * ow + x;
                        oplane_buf[o] = best;
                        aplane[o] = best_at;
                    }
                }
            }
        });
}

/// dinp (N, C, D, H, W): each output's gradient goes to its argmax input (written; others zero).
pub fn max_pool3d_backward(
    dinp: &mut [f32],  // (N, C, D, H, W)
    dout: &[f32],      // (N, C, OD, OH, OW)
    argmax: &[u32],    // (N, C, OD, OH, OW)
    n: usize,
    c: usize,
    in_dims: [usize; 3],
    window: &Window3d,
) {
    let plane = in_dims.iter().product::<usize>();
    let oplane = window.out_dims(in_dims).iter().product::<usize>();
    assert!(dinp.len() >= n * c * plane && dout.len() >= n * c * oplane && argmax.len() >= n * c * oplane,
        "max_pool3d_backward: buffer too small");
    if plane == 0 {
        return;
    }
    dinp[..n * c * plane]
        .par_chunks_mut(plane)
        .enumerate()
        .for_each(|(nc, dplane)| {
            dplane.fill(0.0);
            if oplane == 0 {
                return;
            }
            let grads = &dout[nc * oplane..(nc + 1) * oplane];
            let wins = &argmax[nc * oplane..(nc + 1) * oplane];
            for (&g, &at) in grads.iter().zip(wins) {
                dplane[at as usize] += g;
            }
        });
}

/// Divisor of an average-pool window: the full kernel volume, or only the in-volume taps.
fn avg_divisor(window: &Window3d, count_include_pad: bool, out_at: [usize; 3], in_dims: [usize; 3]) -> f32 {
    if count_include_pad {
        // PyTorch counts padded taps but not taps past the padded volume (only possible with
        // ceil_mode, which is not supported here), so this is the kernel volume.
        window.kernel.iter().product::<usize>() as f32
    } else {
        window.taps(out_at, in_dims).count() as f32
    }
}

/// out (N, C, OD, OH, OW) = mean over each window.
#[allow(clippy::too_many_arguments)]
pub fn avg_pool3d_forward(
    out: &mut [f32],  // (N, C, OD, OH, OW)
    inp: &[f32],      // (N, C, D, H, W)
    n: usize,
    c: usize,
    in_dims: [usize; 3],
    window: &Window3d,
    count_include_pad: bool,
) {
    let [_, h, w] = in_dims;
    let [od, oh, ow] = window.out_dims(in_dims);
    let (plane, oplane) = (in_dims.iter().product::<usize>(), od * oh * ow);
    assert!(out.len() >= n * c * oplane && inp.len() >= n * c * plane, "avg_pool3d_forward: buffer too small");
    if oplane == 0 {
        return;
    }
    out[..n * c * oplane]
        .par_chunks_mut(oplane)
        .zip(inp[..n * c * plane].par_chunks(plane.max(1)))
        .for_each(|(oplane_buf, iplane)| {
            for z in 0..od {
                for y in 0..oh {
                    for x in 0..ow {
                        let sum: f32 = window.taps([z, y, x], in_dims).map(|(iz, iy, ix)| iplane[iz * h * w + iy * w + ix]).sum();
                        oplane_buf[z * oh * ow + y * ow + x] = sum / avg_divisor(window, count_include_pad, [z, y, x], in_dims);
                    }
                }
            }
        });
}

/// dinp (N, C, D, H, W): each input gets Σ over the windows containing it of dout / divisor (written).
#[allow(clippy::too_many_arguments)]
pub fn avg_pool3d_backward(
    dinp: &mut [f32],  // (N, C, D, H, W)
    dout: &[f32],      // (N, C, OD, OH, OW)
    n: usize,
    c: usize,
    in_dims: [usize; 3],
    window: &Window3d,
    count_include_pad: bool,
) {
    let [_, h, w] = in_dims;
    let [od, oh, ow] = window.out_dims(in_dims);
    let (plane, oplane) = (in_dims.iter().product::<usize>(), od * oh * ow);
    assert!(dinp.len() >= n * c * plane && dout.len() >= n * c * oplane, "avg_pool3d_backward: buffer too small");
    if plane == 0 {
        return;
    }
    dinp[..n * c * plane]
        .par_chunks_mut(plane)
        .enumerate()
        .for_each(|(nc, dplane)| {
            dplane.fill(0.0);
            for z in 0..od {
                for y in 0..oh {
                    for x in 0..ow {
                        let g = dout[nc * oplane + z * oh * ow + y * ow + x]
                            / avg_divisor(window, count_include_pad, [z, y, x], in_dims);
                        for (iz, iy, ix) in window.taps([z, y, x], in_dims) {
                            dplane[iz * h * w + iy * w + ix] += g;
                        }
                    }
                }
            }
        });
}

/// out (N, C) = mean over the D·H·W voxels of each (n, c) plane.
pub fn global_avg_pool3d_forward(
    out: &mut [f32],  // (N, C)
    inp: &[f32],      // (N, C, D·H·W)
    n: usize,
    c: usize,
    spatial: usize,
) {
    assert!(out.len() >= n * c && inp.len() >= n * c * spatial, "global_avg_pool3d_forward: buffer too small");
    assert!(spatial > 0, "global_avg_pool3d: empty volume");
    out[..n * c]
        .par_iter_mut()
        .zip(inp[..n * c * spatial].par_chunks(spatial))
        .for_each(|(o, iplane)| {
            // f64 accumulation: 32³ = 32768 terms.
            *o = (iplane.iter().map(|&v| v as f64).sum::<f64>() / spatial as f64) as f32;
        });
}

/// dinp (N, C, D·H·W) = dout / (D·H·W) broadcast over each plane (written).
pub fn global_avg_pool3d_backward(
    dinp: &mut [f32],  // (N, C, D·H·W)
    dout: &[f32],      // (N, C)
    n: usize,
    c: usize,
    spatial: usize,
) {
    assert!(dinp.len() >= n * c * spatial && dout.len() >= n * c, "global_avg_pool3d_backward: buffer too small");
    assert!(spatial > 0, "global_avg_pool3d: empty volume");
    let inv = 1.0 / spatial as f32;
    dinp[..n * c * spatial]
        .par_chunks_mut(spatial)
        .zip(dout[..n * c].par_iter())
        .for_each(|(dplane, &g)| dplane.fill(g * inv));
}

/// (N, C, [D, H, W]) of a 5-D tensor.
fn ncdhw(shape: &[usize], op: &str) -> (usize, usize, [usize; 3]) {
    assert!(shape.len() == 5, "{op}: input {shape:?} must be (N, C, D, H, W)");
    (shape[0], shape[1], [shape[2], shape[3], shape[4]])
}

/// A device tensor of `shape` on `like`'s device, for a launcher to fill completely.
fn device_out(like: &Tensor, shape: &[usize], op: &str) -> Tensor {
    device_ok(Tensor::uninit_on(shape, like.device()), op)
}

/// PyTorch's rule for max pooling: padding at most half the kernel, so every window holds an
/// in-volume element.
fn check_max_window(window: &Window3d) {
    assert!(window.padding.iter().zip(&window.kernel).all(|(p, k)| 2 * p <= *k),
        "max_pool3d: padding must be at most half the kernel (as PyTorch), got {window:?}");
}

/// Max pooling of x (N, C, D, H, W): (out (N, C, OD, OH, OW), argmax of the same shape, the
/// winner's flat index inside its (n, c) plane) on x's device.
pub fn max_pool3d(x: &Tensor, window: &Window3d) -> (Tensor, Indices) {
    let (n, c, in_dims) = ncdhw(&x.shape, "max_pool3d");
    check_max_window(window);
    let [od, oh, ow] = window.out_dims(in_dims);
    let shape = [n, c, od, oh, ow];
    let len = n * c * od * oh * ow;
    match &x.storage {
        Storage::Cpu(xd) => {
            let (mut out, mut argmax) = (vec![0.0f32; len], vec![0u32; len]);
            max_pool3d_forward(&mut out, &mut argmax, xd, n, c, in_dims, window);
            (Tensor::from_vec(&shape, out), Indices::Cpu(argmax))
        }
        Storage::Gpu(xd) => {
            let g = gpu_of(x).clone();
            let mut out = device_out(x, &shape, "max_pool3d");
            let mut argmax = device_ok(g.uninit::<u32>(len), "max_pool3d");
            let geo = gpu::pool3d::Geometry::new(n * c, in_dims, window);
            device_ok(gpu::pool3d::max_forward(&g, gpu_vec_mut(&mut out, "max_pool3d"), &mut argmax, xd, &geo), "max_pool3d");
            (out, Indices::Gpu(argmax))
        }
    }
}

/// dinp (`in_shape` = (N, C, D, H, W)) of [`max_pool3d`] from dout and its argmax (written).
pub fn max_pool3d_grad(dout: &Tensor, argmax: &Indices, in_shape: &[usize], window: &Window3d) -> Tensor {
    let (n, c, in_dims) = ncdhw(in_shape, "max_pool3d_grad");
    let [od, oh, ow] = window.out_dims(in_dims);
    assert_eq!(dout.shape, [n, c, od, oh, ow], "max_pool3d_grad: dout shape for input {in_shape:?}");
    assert_eq!(argmax.len(), dout.numel(), "max_pool3d_grad: argmax length");
    match &dout.storage {
        Storage::Cpu(dd) => {
            let mut dinp = vec![0.0f32; in_shape.iter().product()];
            max_pool3d_backward(&mut dinp, dd, argmax.host(), n, c, in_dims, window);
            Tensor::from_vec(in_shape, dinp)
        }
        Storage::Gpu(dd) => {
            let g = gpu_of(dout).clone();
            let mut dinp = device_out(dout, in_shape, "max_pool3d_grad");
            let geo = gpu::pool3d::Geometry::new(n * c, in_dims, window);
            device_ok(gpu::pool3d::max_backward(&g, gpu_vec_mut(&mut dinp, "max_pool3d_grad"), dd, argmax.gpu_vec(), &geo), "max_pool3d_grad");
            dinp
        }
    }
}

/// Average pooling of x (N, C, D, H, W) on x's device.
pub fn avg_pool3d(x: &Tensor, window: &Window3d, count_include_pad: bool) -> Tensor {
    let (n, c, in_dims) = ncdhw(&x.shape, "avg_pool3d");
    let [od, oh, ow] = window.out_dims(in_dims);
    let shape = [n, c, od, oh, ow];
    match &x.storage {
        Storage::Cpu(xd) => {
            let mut out = vec![0.0f32; shape.iter().product()];
            avg_pool3d_forward(&mut out, xd, n, c, in_dims, window, count_include_pad);
            Tensor::from_vec(&shape, out)
        }
        Storage::Gpu(xd) => {
            let g = gpu_of(x).clone();
            let mut out = device_out(x, &shape, "avg_pool3d");
            let geo = gpu::pool3d::Geometry::new(n * c, in_dims, window);
            device_ok(gpu::pool3d::avg_forward(&g, gpu_vec_mut(&mut out, "avg_pool3d"), xd, &geo, count_include_pad), "avg_pool3d");
            out
        }
    }
}

/// dinp (`in_shape`) of [`avg_pool3d`] (written).
pub fn avg_pool3d_grad(dout: &Tensor, in_shape: &[usize], window: &Window3d, count_include_pad: bool) -> Tensor {
    let (n, c, in_dims) = ncdhw(in_shape, "avg_pool3d_grad");
    let [od, oh, ow] = window.out_dims(in_dims);
    assert_eq!(dout.shape, [n, c, od, oh, ow], "avg_pool3d_grad: dout shape for input {in_shape:?}");
    match &dout.storage {
        Storage::Cpu(dd) => {
            let mut dinp = vec![0.0f32; in_shape.iter().product()];
            avg_pool3d_backward(&mut dinp, dd, n, c, in_dims, window, count_include_pad);
            Tensor::from_vec(in_shape, dinp)
        }
        Storage::Gpu(dd) => {
            let g = gpu_of(dout).clone();
            let mut dinp = device_out(dout, in_shape, "avg_pool3d_grad");
            let geo = gpu::pool3d::Geometry::new(n * c, in_dims, window);
            device_ok(gpu::pool3d::avg_backward(&g, gpu_vec_mut(&mut dinp, "avg_pool3d_grad"), dd, &geo, count_include_pad), "avg_pool3d_grad");
            dinp
        }
    }
}

/// out (N, C) = mean over D·H·W of x (N, C, D, H, W), on x's device.
pub fn global_avg_pool3d(x: &Tensor) -> Tensor {
    let (n, c, in_dims) = ncdhw(&x.shape, "global_avg_pool3d");
    let spatial = in_dims.iter().product::<usize>();
    assert!(spatial > 0, "global_avg_pool3d: empty volume");
    match &x.storage {
        Storage::Cpu(xd) => {
            let mut out = vec![0.0f32; n * c];
            global_avg_pool3d_forward(&mut out, xd, n, c, spatial);
            Tensor::from_vec(&[n, c], out)
        }
        Storage::Gpu(xd) => {
            let g = gpu_of(x).clone();
            let mut out = device_out(x, &[n, c], "global_avg_pool3d");
            device_ok(gpu::pool3d::global_forward(&g, gpu_vec_mut(&mut out, "global_avg_pool3d"), xd, n * c, spatial), "global_avg_pool3d");
            out
        }
    }
}

/// dinp (`in_shape` = (N, C, D, H, W)) of [`global_avg_pool3d`] from dout (N, C) (written).
pub fn global_avg_pool3d_grad(dout: &Tensor, in_shape: &[usize]) -> Tensor {
    let (n, c, in_dims) = ncdhw(in_shape, "global_avg_pool3d_grad");
    let spatial = in_dims.iter().product::<usize>();
    assert!(spatial > 0, "global_avg_pool3d: empty volume");
    assert_eq!(dout.shape, [n, c], "global_avg_pool3d_grad: dout shape for input {in_shape:?}");
    match &dout.storage {
        Storage::Cpu(dd) => {
            let mut dinp = vec![0.0f32; n * c * spatial];
            global_avg_pool3d_backward(&mut dinp, dd, n, c, spatial);
            Tensor::from_vec(in_shape, dinp)
        }
        Storage::Gpu(dd) => {
            let g = gpu_of(dout).clone();
            let mut dinp = device_out(dout, in_shape, "global_avg_pool3d_grad");
            device_ok(gpu::pool3d::global_backward(&g, gpu_vec_mut(&mut dinp, "global_avg_pool3d_grad"), dd, n * c, spatial), "global_avg_pool3d_grad");
            dinp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::{check_gradient, dot, random_vec};
    use rand::seq::SliceRandom;
    use rand::SeedableRng;

    /// Distinct values 0.05 apart in random order, so no window has a near-tie that a finite
    /// difference step could flip.
    fn separated_values(len: usize, seed: u64) -> Vec<f32> {
        let mut v: Vec<f32> = (0..len).map(|i| i as f32 * 0.05 - len as f32 * 0.025).collect();
        v.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        v
    }

    #[test]
    fn max_pool_picks_window_maxima_with_padding_ignored() {
        // A 1×4×4 volume, kernel (1,3,3), stride (1,2,2), pad (0,1,1); values fall with the flat
        // index, so each window's maximum is its top-left in-volume element.
        let inp: Vec<f32> = (0..16).map(|v| -(v as f32)).collect();
        let window = Window3d::new([1, 3, 3], [1, 2, 2], [0, 1, 1]);
        assert_eq!(window.out_dims([1, 4, 4]), [1, 2, 2]);
        let (mut out, mut arg) = (vec![0.0; 4], vec![0u32; 4]);
        max_pool3d_forward(&mut out, &mut arg, &inp, 1, 1, [1, 4, 4], &window);
        // Windows start at rows/cols −1 and 1, so their top-left in-volume elements are
        // (0,0), (0,1), (1,0), (1,1): flat 0, 1, 4, 5.
        assert_eq!(arg, vec![0, 1, 4, 5]);
        assert_eq!(out, vec![0.0, -1.0, -4.0, -5.0]);
    }

    #[test]
    fn max_pool_propagates_nan() {
        let mut inp = vec![1.0f32; 8];
        inp[3] = f32::NAN;
        let window = Window3d::cube(2, 2, 0);
        let (mut out, mut arg) = (vec![0.0; 1], vec![0u32; 1]);
        max_pool3d_forward(&mut out, &mut arg, &inp, 1, 1, [2, 2, 2], &window);
        assert!(out[0].is_nan());
    }

    #[test]
    fn max_pool_gradient_matches_finite_differences() {
        let (n, c, dims) = (2, 2, [5, 4, 5]);
        let window = Window3d::cube(3, 2, 1); // ResNeXt stem pool: 3³, stride 2, pad 1
        let out_len = n * c * window.out_dims(dims).iter().product::<usize>();
        let x = separated_values(n * c * 100, 7);
        let w = random_vec(out_len, 8, 1.0);
        let (mut out, mut arg) = (vec![0.0; out_len], vec![0u32; out_len]);
        max_pool3d_forward(&mut out, &mut arg, &x, n, c, dims, &window);
        let mut dx = vec![f32::NAN; x.len()];
        max_pool3d_backward(&mut dx, &w, &arg, n, c, dims, &window);
        check_gradient("max pool dinp", &x, &dx, |x| {
            let (mut out, mut arg) = (vec![0.0; out_len], vec![0u32; out_len]);
            max_pool3d_forward(&mut out, &mut arg, x, n, c, dims, &window);
            dot(&w, &out)
        }, 1e-2, 1e-3, 1e-3);
    }

    #[test]
    fn avg_pool_divisor_follows_count_include_pad() {
        // 2×2×2 volume of ones, kernel 3 stride 1 pad 1: the corner window holds 8 real voxels of 27.
        let inp = vec![1.0f32; 8];
        let window = Window3d::cube(3, 1, 1);
        let mut out = vec![0.0; 8];
        avg_pool3d_forward(&mut out, &inp, 1, 1, [2, 2, 2], &window, true);
        assert!((out[0] - 8.0 / 27.0).abs() < 1e-6);
        avg_pool3d_forward(&mut out, &inp, 1, 1, [2, 2, 2], &window, false);
        assert!((out[0] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn avg_pool_gradients_match_finite_differences() {
        let (n, c, dims) = (1, 3, [4, 5, 3]);
        let window = Window3d::new([2, 3, 2], [2, 1, 2], [1, 1, 0]);
        let out_len = n * c * window.out_dims(dims).iter().product::<usize>();
        let x = random_vec(n * c * 60, 9, 1.0);
        let w = random_vec(out_len, 10, 1.0);
        for include_pad in [true, false] {
            let mut dx = vec![f32::NAN; x.len()];
            avg_pool3d_backward(&mut dx, &w, n, c, dims, &window, include_pad);
            check_gradient(&format!("avg pool dinp (count_include_pad={include_pad})"), &x, &dx, |x| {
                let mut out = vec![0.0; out_len];
                avg_pool3d_forward(&mut out, x, n, c, dims, &window, include_pad);
                dot(&w, &out)
            }, 1e-2, 1e-3, 1e-3);
        }
    }

    #[test]
    fn global_avg_pool_is_the_plane_mean_and_its_gradient_checks() {
        let (n, c, s) = (2, 3, 27);
        let x = random_vec(n * c * s, 11, 1.0);
        let mut out = vec![0.0; n * c];
        global_avg_pool3d_forward(&mut out, &x, n, c, s);
        let mean0: f32 = x[..s].iter().sum::<f32>() / s as f32;
        assert!((out[0] - mean0).abs() < 1e-6);
        let w = random_vec(n * c, 12, 1.0);
        let mut dx = vec![f32::NAN; x.len()];
        global_avg_pool3d_backward(&mut dx, &w, n, c, s);
        check_gradient("global avg pool dinp", &x, &dx, |x| {
            let mut out = vec![0.0; n * c];
            global_avg_pool3d_forward(&mut out, x, n, c, s);
            dot(&w, &out)
        }, 1e-2, 1e-4, 1e-3);
    }
}
