//! Launchers of `kernels/masked_mean.cu`: one block per sample (it counts the sample's valid
//! positions once, then its threads cover the columns or the sample's T·C gradient values).

use super::checks::{compare, on, rand, Comparison, OpCheck};
use crate::engine::backend::{arg, Gpu, GpuVec, Kernel, LaunchConfig};
use crate::engine::ops;
use crate::engine::tensor::{Device, Indices};
use anyhow::Result;

const fn k(name: &'static str) -> Kernel {
    Kernel { family: "masked_mean", name }
}

/// Threads per block: the DOS width (128) in one pass of the forward; 256 for the backward's
/// T·C values per sample.
fn cfg(b: usize, threads: u32) -> LaunchConfig {
    LaunchConfig { grid: [b as u32, 1, 1], block: [threads, 1, 1], shared_bytes: 0 }
}

/// out (B, C) from inp (B, T, C) and the (B, T) mask at address `mask` (0 = all valid).
pub fn forward(g: &Gpu, out: &mut GpuVec<f32>, inp: &GpuVec<f32>, mask: u64, b: usize, t: usize, c: usize) -> Result<()> {
    if b * c == 0 {
        return Ok(());
    }
    let (po, pi, bb, tt, cc) = (out.ptr(), inp.ptr(), b as i64, t as i32, c as i32);
    g.launch(k("masked_mean_forward_f32"), cfg(b, 128), &mut [arg(&po), arg(&pi), arg(&mask), arg(&bb), arg(&tt), arg(&cc)])
}

/// dinp (B, T, C) (written) from dout (B, C).
pub fn backward(g: &Gpu, dinp: &mut GpuVec<f32>, dout: &GpuVec<f32>, mask: u64, b: usize, t: usize, c: usize) -> Result<()> {
    if b * t * c == 0 {
        return Ok(());
    }
    let (pd, pg, bb, tt, cc) = (dinp.ptr(), dout.ptr(), b as i64, t as i32, c as i32);
    g.launch(k("masked_mean_backward_f32"), cfg(b, 256), &mut [arg(&pd), arg(&pg), arg(&mask), arg(&bb), arg(&tt), arg(&cc)])
}

/// Four samples of 41 positions × 130 columns (more columns than the forward's threads): full,
/// ragged, one valid position, none valid; and the same without a mask. Exact: the kernels add
/// the same terms in the same order and scale by the same float 1/count as the CPU.
fn check_masked_mean(d: Device) -> Result<Comparison> {
    let (b, t, c) = (4, 41, 130);
    let valid: Vec<bool> = (0..b * t).map(|i| match i / t { 0 => true, 1 => i % t % 3 != 1, 2 => i % t == 7, _ => false }).collect();
    let mask = Indices::from_mask(&valid);
    let gmask = mask.to_device(d)?;
    let (x, dy) = (rand(&[b, t, c], 41), rand(&[b, c], 42));
    let (gx, gdy) = (on(&x, d)?, on(&dy, d)?);
    let pairs = [
        (ops::masked_mean(&gx, Some(&gmask)), ops::masked_mean(&x, Some(&mask))),
        (ops::masked_mean_grad(&gdy, Some(&gmask), t), ops::masked_mean_grad(&dy, Some(&mask), t)),
        (ops::masked_mean(&gx, None), ops::masked_mean(&x, None)),
        (ops::masked_mean_grad(&gdy, None, t), ops::masked_mean_grad(&dy, None, t)),
    ];
    let names = ["out", "dx", "out (no mask)", "dx (no mask)"];
    let refs: Vec<(&str, &_, &_)> = names.iter().zip(&pairs).map(|(n, (g, c))| (*n, g, c)).collect();
    compare(&refs, 0.0, 0.0)
}

pub fn checks() -> Vec<OpCheck> {
    vec![OpCheck { name: "masked mean (exact)", kernels: &["masked_mean_forward_f32", "masked_mean_backward_f32"], run: check_masked_mean }]
}
