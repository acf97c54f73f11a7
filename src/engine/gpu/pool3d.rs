//! Launchers of `kernels/pool3d.cu` (3-D max / average / global average pooling, forward and
//! backward, grid-stride over output or input voxels), and their op checks.

use super::checks::{compare, on, rand, Comparison, OpCheck};
use super::ELEMENTWISE_THREADS;
use crate::engine::backend::{arg, Gpu, GpuVec, Kernel, LaunchConfig};
use crate::engine::ops::conv3d::Window3d;
use crate::engine::ops::pool3d::{avg_pool3d, avg_pool3d_grad, global_avg_pool3d, global_avg_pool3d_grad, max_pool3d, max_pool3d_grad};
use crate::engine::tensor::{Device, Indices, Tensor};
use anyhow::{ensure, Result};
use std::ffi::c_void;

const fn k(name: &'static str) -> Kernel {
    Kernel { family: "pool3d", name }
}

/// Planes (N·C) and the window geometry as the kernels take it: per axis (D, H, W) the input
/// extent, output extent, kernel, stride and padding.
pub struct Geometry {
    planes: i64,
    ints: [i32; 15],
    in_plane: usize,
    out_plane: usize,
}

impl Geometry {
    pub fn new(planes: usize, in_dims: [usize; 3], window: &Window3d) -> Geometry {
        let out = window.out_dims(in_dims);
        let mut ints = [0i32; 15];
        for (g, vals) in [in_dims, out, window.kernel, window.stride, window.padding].iter().enumerate() {
            for a in 0..3 {
                ints[3 * g + a] = i32::try_from(vals[a]).expect("pool3d: a volume extent exceeds the kernels' int32");
            }
        }
        Geometry { planes: planes as i64, ints, in_plane: in_dims.iter().product(), out_plane: out.iter().product() }
    }

    /// The kernel arguments after the buffers: planes, then the 15 ints.
    fn push_args(&self, args: &mut Vec<*mut c_void>) {
        args.push(arg(&self.planes));
        args.extend(self.ints.iter().map(arg));
    }
}

/// out, argmax (planes, OD·OH·OW) = max pooling of inp (planes, D·H·W).
pub fn max_forward(g: &Gpu, out: &mut GpuVec<f32>, argmax: &mut GpuVec<u32>, inp: &GpuVec<f32>, geo: &Geometry) -> Result<()> {
    let n = geo.planes as usize * geo.out_plane;
    ensure!(out.len() >= n && argmax.len() >= n && inp.len() >= geo.planes as usize * geo.in_plane, "max_pool3d: buffers too small");
    if n == 0 {
        return Ok(());
    }
    let (po, pa, pi) = (out.ptr(), argmax.ptr(), inp.ptr());
    let mut args = vec![arg(&po), arg(&pa), arg(&pi)];
    geo.push_args(&mut args);
    g.launch(k("max_pool3d_forward"), LaunchConfig::elementwise(n, ELEMENTWISE_THREADS), &mut args)
}

/// dinp (planes, D·H·W) = Σ of dout over the windows whose argmax is this voxel (written).
pub fn max_backward(g: &Gpu, dinp: &mut GpuVec<f32>, dout: &GpuVec<f32>, argmax: &GpuVec<u32>, geo: &Geometry) -> Result<()> {
    let n = geo.planes as usize * geo.in_plane;
    let m = geo.planes as usize * geo.out_plane;
    ensure!(dinp.len() >= n && dout.len() >= m && argmax.len() >= m, "max_pool3d backward: buffers too small");
    if n == 0 {
        return Ok(());
    }
    let (pd, pg, pa) = (dinp.ptr(), dout.ptr(), argmax.ptr());
    let mut args = vec![arg(&pd), arg(&pg), arg(&pa)];
    geo.push_args(&mut args);
    g.launch(k("max_pool3d_backward"), LaunchConfig::elementwise(n, ELEMENTWISE_THREADS), &mut args)
}

/// out (planes, OD·OH·OW) = average pooling of inp.
pub fn avg_forward(g: &Gpu, out: &mut GpuVec<f32>, inp: &GpuVec<f32>, geo: &Geometry, count_include_pad: bool) -> Result<()> {
    let n = geo.planes as usize * geo.out_plane;
    ensure!(out.len() >= n && inp.len() >= geo.planes as usize * geo.in_plane, "avg_pool3d: buffers too small");
    if n == 0 {
        return Ok(());
    }
    let (po, pi, cip) = (out.ptr(), inp.ptr(), count_include_pad as i32);
    let mut args = vec![arg(&po), arg(&pi)];
    geo.push_args(&mut args);
    args.push(arg(&cip));
    g.launch(k("avg_pool3d_forward"), LaunchConfig::elementwise(n, ELEMENTWISE_THREADS), &mut args)
}

/// dinp (planes, D·H·W) = Σ over the windows containing the voxel of dout / divisor (written).
pub fn avg_backward(g: &Gpu, dinp: &mut GpuVec<f32>, dout: &GpuVec<f32>, geo: &Geometry, count_include_pad: bool) -> Result<()> {
    let n = geo.planes as usize * geo.in_plane;
    ensure!(dinp.len() >= n && dout.len() >= geo.planes as usize * geo.out_plane, "avg_pool3d backward: buffers too small");
    if n == 0 {
        return Ok(());
    }
    let (pd, pg, cip) = (dinp.ptr(), dout.ptr(), count_include_pad as i32);
    let mut args = vec![arg(&pd), arg(&pg)];
    geo.push_args(&mut args);
    args.push(arg(&cip));
    g.launch(k("avg_pool3d_backward"), LaunchConfig::elementwise(n, ELEMENTWISE_THREADS), &mut args)
}

/// out (planes) = mean of each (spatial) row of inp.
pub fn global_forward(g: &Gpu, out: &mut GpuVec<f32>, inp: &GpuVec<f32>, planes: usize, spatial: usize) -> Result<()> {
    ensure!(out.len() >= planes && inp.len() >= planes * spatial, "global_avg_pool3d: buffers too small");
    if planes == 0 {
        return Ok(());
    }
    let (po, pi, p, s) = (out.ptr(), inp.ptr(), planes as i64, spatial as i64);
    // A thread per plane: fewer threads per block keeps more blocks (SMs) busy for small N·C.
    g.launch(k("global_avg_pool3d_forward"), LaunchConfig::elementwise(planes, 64), &mut [arg(&po), arg(&pi), arg(&p), arg(&s)])
}

/// dinp (planes, spatial) = dout / spatial broadcast (written).
pub fn global_backward(g: &Gpu, dinp: &mut GpuVec<f32>, dout: &GpuVec<f32>, planes: usize, spatial: usize) -> Result<()> {
    let n = planes * spatial;
    ensure!(dinp.len() >= n && dout.len() >= planes, "global_avg_pool3d backward: buffers too small");
    if n == 0 {
        return Ok(());
    }
    // Rounded to f32 exactly as the CPU reference rounds it.
    let inv = 1.0 / spatial as f32;
    let (pd, pg, p, s) = (dinp.ptr(), dout.ptr(), planes as i64, spatial as i64);
    g.launch(k("global_avg_pool3d_backward"), LaunchConfig::elementwise(n, ELEMENTWISE_THREADS), &mut [arg(&pd), arg(&pg), arg(&p), arg(&s), arg(&inv)])
}

/// Input values on a 0.25 grid, so windows hold exact ties (the first-maximum rule is tested).
fn tied(shape: &[usize], seed: u64) -> Tensor {
    let t = rand(shape, seed);
    Tensor::from_vec(shape, t.data().iter().map(|v| (v * 8.0).round() / 4.0).collect())
}

fn indices_as_tensor(ix: &Indices, shape: &[usize]) -> Result<Tensor> {
    let host = ix.to_device(Device::Cpu)?;
    // Plane indices < 2^24 are exact in f32.
    Ok(Tensor::from_vec(shape, host.host().iter().map(|&v| v as f32).collect()))
}

/// Max pooling with an anisotropic, padded, strided window (the stem's 3³/2 pad 1 among them),
/// average pooling with and without padded taps in the divisor, and global average pooling; the
/// kernels repeat the references' operations in the same order: exact (tolerance 0).
fn check_pooling(d: Device) -> Result<Comparison> {
    let shape = [2, 3, 5, 6, 4];
    let (x, dy_seed) = (tied(&shape, 81), 82);
    let gx = on(&x, d)?;
    let mut worst: Option<Comparison> = None;
    let mut fold = |c: Comparison| worst = Some(worst.map_or(c, |w: Comparison| w.worst_of(c)));
    for window in [Window3d::cube(3, 2, 1), Window3d::new([3, 2, 1], [1, 2, 1], [1, 1, 0])] {
        let (y, am) = max_pool3d(&x, &window);
        let (gy, gam) = max_pool3d(&gx, &window);
        let dy = rand(&y.shape, dy_seed);
        let dx = max_pool3d_grad(&dy, &am, &shape, &window);
        let gdx = max_pool3d_grad(&on(&dy, d)?, &gam, &shape, &window);
        let (a, ga) = (indices_as_tensor(&am, &y.shape)?, indices_as_tensor(&gam, &y.shape)?);
        fold(compare(&[("max y", &gy, &y), ("argmax", &ga, &a), ("max dx", &gdx, &dx)], 0.0, 0.0)?);
        for cip in [true, false] {
            let y = avg_pool3d(&x, &window, cip);
            let gy = avg_pool3d(&gx, &window, cip);
            let dy = rand(&y.shape, dy_seed + 1);
            let dx = avg_pool3d_grad(&dy, &shape, &window, cip);
            let gdx = avg_pool3d_grad(&on(&dy, d)?, &shape, &window, cip);
            fold(compare(&[("avg y", &gy, &y), ("avg dx", &gdx, &dx)], 0.0, 0.0)?);
        }
    }
    let y = global_avg_pool3d(&x);
    let gy = global_avg_pool3d(&gx);
    let dy = rand(&y.shape, dy_seed + 2);
    let dx = global_avg_pool3d_grad(&dy, &shape);
    let gdx = global_avg_pool3d_grad(&on(&dy, d)?, &shape);
    fold(compare(&[("global y", &gy, &y), ("global dx", &gdx, &dx)], 0.0, 0.0)?);
    Ok(worst.expect("at least one comparison"))
}

pub fn checks() -> Vec<OpCheck> {
    vec![OpCheck {
        name: "pool3d (max with argmax, average, global average; forward and backward)",
        kernels: &["max_pool3d_forward", "max_pool3d_backward", "avg_pool3d_forward", "avg_pool3d_backward", "global_avg_pool3d_forward", "global_avg_pool3d_backward"],
        run: check_pooling,
    }]
}
