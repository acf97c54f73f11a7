//! Launchers of `kernels/elementwise.cu`: fill, add, mul, axpy, scale, column-block copies.

use super::ELEMENTWISE_THREADS;
use crate::engine::backend::{arg, Gpu, GpuVec, Kernel, LaunchConfig};
use anyhow::Result;

const fn k(name: &'static str) -> Kernel {
    Kernel { family: "elementwise", name }
}

fn cfg(n: usize) -> LaunchConfig {
    LaunchConfig::elementwise(n, ELEMENTWISE_THREADS)
}

/// x[..] = v
pub fn fill(g: &Gpu, x: &mut GpuVec<f32>, v: f32) -> Result<()> {
    let (p, n) = (x.ptr(), x.len() as i64);
    g.launch(k("fill_f32"), cfg(x.len()), &mut [arg(&p), arg(&v), arg(&n)])
}

/// out = a + b (all the same length)
pub fn add(g: &Gpu, out: &mut GpuVec<f32>, a: &GpuVec<f32>, b: &GpuVec<f32>) -> Result<()> {
    let (o, pa, pb, n) = (out.ptr(), a.ptr(), b.ptr(), out.len() as i64);
    g.launch(k("add_f32"), cfg(out.len()), &mut [arg(&o), arg(&pa), arg(&pb), arg(&n)])
}

/// out = a ⊙ b (all the same length)
pub fn mul(g: &Gpu, out: &mut GpuVec<f32>, a: &GpuVec<f32>, b: &GpuVec<f32>) -> Result<()> {
    let (o, pa, pb, n) = (out.ptr(), a.ptr(), b.ptr(), out.len() as i64);
    g.launch(k("mul_f32"), cfg(out.len()), &mut [arg(&o), arg(&pa), arg(&pb), arg(&n)])
}

/// y += α·x
pub fn axpy(g: &Gpu, y: &mut GpuVec<f32>, x: &GpuVec<f32>, alpha: f32) -> Result<()> {
    let (py, px, n) = (y.ptr(), x.ptr(), y.len() as i64);
    g.launch(k("axpy_f32"), cfg(y.len()), &mut [arg(&py), arg(&px), arg(&alpha), arg(&n)])
}

/// Columns [src_col, src_col + cols) of the row-major (rows, src_ld) `src` into columns
/// [dst_col, dst_col + cols) of the row-major (rows, dst_ld) `dst`.
#[allow(clippy::too_many_arguments)]
pub fn copy_columns(g: &Gpu, dst: &mut GpuVec<f32>, dst_ld: usize, dst_col: usize, src: &GpuVec<f32>, src_ld: usize, src_col: usize, rows: usize, cols: usize) -> Result<()> {
    let (pd, ps) = (dst.ptr(), src.ptr());
    let v = [dst_ld, dst_col, src_ld, src_col, rows, cols].map(|x| x as i64);
    g.launch(
        k("copy_columns_f32"),
        cfg(rows * cols),
        &mut [arg(&pd), arg(&v[0]), arg(&v[1]), arg(&ps), arg(&v[2]), arg(&v[3]), arg(&v[4]), arg(&v[5])],
    )
}
