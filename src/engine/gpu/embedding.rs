//! Launchers of `kernels/embedding.cu`: a grid-stride gather, and the backward with one thread
//! per (distinct id, column) over the host-sorted segments of `ops::embedding::TokenIds`.

use super::checks::{compare, on, rand, Comparison, OpCheck};
use super::ELEMENTWISE_THREADS;
use crate::engine::backend::{arg, Gpu, GpuVec, Kernel, LaunchConfig};
use crate::engine::ops;
use crate::engine::ops::embedding::TokenIds;
use crate::engine::tensor::Device;
use anyhow::Result;

const fn k(name: &'static str) -> Kernel {
    Kernel { family: "embedding", name }
}

/// out (N, C) = table[ids].
pub fn forward(g: &Gpu, out: &mut GpuVec<f32>, ids: &GpuVec<u32>, table: &GpuVec<f32>, n: usize, c: usize) -> Result<()> {
    if n * c == 0 {
        return Ok(());
    }
    let (po, pi, pt, nn, cc) = (out.ptr(), ids.ptr(), table.ptr(), n as i64, c as i32);
    g.launch(k("embedding_forward_f32"), LaunchConfig::elementwise(n * c, ELEMENTWISE_THREADS), &mut [arg(&po), arg(&pi), arg(&pt), arg(&nn), arg(&cc)])
}

/// dtable (V, C) += dout rows by id, each id's rows in position order.
pub fn backward(
    g: &Gpu, dtable: &mut GpuVec<f32>, dout: &GpuVec<f32>, order: &GpuVec<u32>, segment_ids: &GpuVec<u32>, segment_offsets: &GpuVec<u32>, c: usize,
) -> Result<()> {
    let segments = segment_ids.len();
    if segments * c == 0 {
        return Ok(());
    }
    let (pd, pg, po, ps, pf, ns, cc) = (dtable.ptr(), dout.ptr(), order.ptr(), segment_ids.ptr(), segment_offsets.ptr(), segments as i64, c as i32);
    g.launch(
        k("embedding_backward_f32"),
        LaunchConfig::elementwise(segments * c, ELEMENTWISE_THREADS),
        &mut [arg(&pd), arg(&pg), arg(&po), arg(&ps), arg(&pf), arg(&ns), arg(&cc)],
    )
}

/// 300 ids over a vocabulary of 50 with heavy repeats (and unused rows), width 33, gradients
/// accumulated onto a non-zero table gradient: exact (a copy forward; the backward adds the
/// same terms in the same order as the CPU).
fn check_embedding(d: Device) -> Result<Comparison> {
    let (v, c) = (50, 33);
    let raw: Vec<u32> = (0..300u32).map(|i| (i * 7 + i / 13) % 37 + if i % 5 == 0 { 0 } else { 3 }).collect();
    let (table, dout) = (rand(&[v, c], 61), rand(&[raw.len(), c], 62));
    let (ids, gids) = (TokenIds::new(&raw, v, Device::Cpu)?, TokenIds::new(&raw, v, d)?);
    let (gtable, gdout) = (on(&table, d)?, on(&dout, d)?);
    let (y, gy) = (ops::embedding(&table, &ids), ops::embedding(&gtable, &gids));
    let mut dt = rand(&[v, c], 63);
    let mut gdt = on(&dt, d)?;
    ops::embedding_grad(&mut dt, &dout, &ids);
    ops::embedding_grad(&mut gdt, &gdout, &gids);
    compare(&[("out", &gy, &y), ("dtable", &gdt, &dt)], 0.0, 0.0)
}

pub fn checks() -> Vec<OpCheck> {
    vec![OpCheck { name: "embedding (gather; sorted-segment backward, exact)", kernels: &["embedding_forward_f32", "embedding_backward_f32"], run: check_embedding }]
}
