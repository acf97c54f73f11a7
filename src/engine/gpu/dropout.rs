//! Launcher of `kernels/dropout.cu`: one thread per ChaCha8 block of 16 elements, grid-stride.
//! The key is expanded on the host exactly as the CPU's generator is (`ops::dropout::mask_rng`),
//! so both devices draw the same mask.

use super::checks::{compare, on, rand, Comparison, OpCheck};
use super::ELEMENTWISE_THREADS;
use crate::engine::backend::{arg, Gpu, GpuVec, Kernel, LaunchConfig};
use crate::engine::ops;
use crate::engine::tensor::Device;
use anyhow::Result;

const fn k(name: &'static str) -> Kernel {
    Kernel { family: "dropout", name }
}

/// out (N) = mask ⊙ inp · scale with the mask of (`seed`, `stream`) (forward: inp = x;
/// backward: inp = dout).
pub fn apply(g: &Gpu, out: &mut GpuVec<f32>, inp: &GpuVec<f32>, p: f32, scale: f32, seed: u64, stream: u64) -> Result<()> {
    let n = inp.len();
    if n == 0 {
        return Ok(());
    }
    let seed_bytes = ops::dropout::mask_rng(seed, 0).get_seed();
    // The kernel's `DropoutKey` by value: eight little-endian words, 32 bytes.
    let key: [u32; 8] = std::array::from_fn(|i| u32::from_le_bytes([seed_bytes[4 * i], seed_bytes[4 * i + 1], seed_bytes[4 * i + 2], seed_bytes[4 * i + 3]]));
    let (po, pi, nn) = (out.ptr(), inp.ptr(), n as i64);
    let cfg = LaunchConfig::elementwise(n.div_ceil(16), ELEMENTWISE_THREADS);
    g.launch(k("dropout_apply_f32"), cfg, &mut [arg(&po), arg(&pi), arg(&nn), arg(&p), arg(&scale), arg(&key), arg(&stream)])
}

/// 70 001 elements (a partial last ChaCha block, several grid-stride rounds) at p = 0.3 on stream
/// 5, and at the edges p = 0 and p = 1: forward and backward are exact (the same mask, the same
/// single multiply per element).
fn check_dropout(d: Device) -> Result<Comparison> {
    let n = 70_001;
    let (x, dy) = (rand(&[n], 51), rand(&[n], 52));
    let (gx, gdy) = (on(&x, d)?, on(&dy, d)?);
    let mut pairs = Vec::new();
    for p in [0.3f32, 0.0, 1.0] {
        pairs.push((ops::dropout(&gx, p, 1234, 5), ops::dropout(&x, p, 1234, 5)));
        pairs.push((ops::dropout_grad(&gdy, p, 1234, 5), ops::dropout_grad(&dy, p, 1234, 5)));
    }
    let names = ["y p=0.3", "dx p=0.3", "y p=0", "dx p=0", "y p=1", "dx p=1"];
    let refs: Vec<(&str, &_, &_)> = names.iter().zip(&pairs).map(|(n, (g, c))| (*n, g, c)).collect();
    compare(&refs, 0.0, 0.0)
}

pub fn checks() -> Vec<OpCheck> {
    vec![OpCheck { name: "dropout (ChaCha8 mask, exact)", kernels: &["dropout_apply_f32"], run: check_dropout }]
}
