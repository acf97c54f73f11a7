//! Launchers of `kernels/gather.cu` (row gather, grouped scatter-add, the factorised edge-MLP
//! first layer) and the op checks of that family.
//!
//! All three kernels are grid-stride loops over the outputs with one thread per value, so they
//! use the elementwise launch shape (256 threads, grid capped by `MAX_ELEMENTWISE_BLOCKS`).

use super::checks::{compare, Comparison, OpCheck};
use super::ELEMENTWISE_THREADS;
use crate::engine::backend::{arg, Gpu, GpuVec, Kernel, LaunchConfig};
use crate::engine::gradcheck::random_vec;
use crate::engine::ops::gather::{self as op, EdgeIndex};
use crate::engine::tensor::{Device, Tensor};
use anyhow::Result;

const fn k(name: &'static str) -> Kernel {
    Kernel { family: "gather", name }
}

fn cfg(n: usize) -> LaunchConfig {
    LaunchConfig::elementwise(n, ELEMENTWISE_THREADS)
}

/// out (E, C) = inp (N, C)[index]
pub fn gather_rows(g: &Gpu, out: &mut GpuVec<f32>, inp: &GpuVec<f32>, index: &GpuVec<u32>, e: usize, c: usize) -> Result<()> {
    let (po, pi, px, ee, cc) = (out.ptr(), inp.ptr(), index.ptr(), e as i64, c as i64);
    g.launch(k("gather_rows_f32"), cfg(e * c), &mut [arg(&po), arg(&pi), arg(&px), arg(&ee), arg(&cc)])
}

/// acc (N, C) (+)= Σ over each row's edges of src (E, C), in edge order.
#[allow(clippy::too_many_arguments)]
pub fn scatter_add_rows(
    g: &Gpu, acc: &mut GpuVec<f32>, src: &GpuVec<f32>, row_start: &GpuVec<u32>, edges_by_row: &GpuVec<u32>, n: usize, c: usize, accumulate: bool,
) -> Result<()> {
    let (pa, ps, pr, pe, nn, cc, acc_flag) = (acc.ptr(), src.ptr(), row_start.ptr(), edges_by_row.ptr(), n as i64, c as i64, accumulate as i32);
    g.launch(
        k("scatter_add_rows_f32"),
        cfg(n * c),
        &mut [arg(&pa), arg(&ps), arg(&pr), arg(&pe), arg(&nn), arg(&cc), arg(&acc_flag)],
    )
}

/// Where the three summands of [`gather_pair_add`] sit: row strides and first columns.
#[derive(Clone, Copy, Debug)]
pub struct PairColumns {
    pub nodes_ld: usize,
    pub dst_col: usize,
    pub src_col: usize,
    pub edges_ld: usize,
    pub edge_col: usize,
    pub width: usize,
}

/// out (E, W) = nodes[dst, dst_col..] + nodes[src, src_col..] + edges[:, edge_col..] + bias
#[allow(clippy::too_many_arguments)]
pub fn gather_pair_add(
    g: &Gpu, out: &mut GpuVec<f32>, nodes: &GpuVec<f32>, dst: &GpuVec<u32>, src: &GpuVec<u32>, edges: &GpuVec<f32>, bias: &GpuVec<f32>, e: usize, cols: PairColumns,
) -> Result<()> {
    let (po, pn, pd, ps, pe, pb) = (out.ptr(), nodes.ptr(), dst.ptr(), src.ptr(), edges.ptr(), bias.ptr());
    let v = [cols.nodes_ld, cols.dst_col, cols.src_col, cols.edges_ld, cols.edge_col, e, cols.width].map(|x| x as i64);
    g.launch(
        k("gather_pair_add_f32"),
        cfg(e * cols.width),
        &mut [arg(&po), arg(&pn), arg(&v[0]), arg(&pd), arg(&v[1]), arg(&ps), arg(&v[2]), arg(&pe), arg(&v[3]), arg(&v[4]), arg(&pb), arg(&v[5]), arg(&v[6])],
    )
}

/// 9 rows, 40 edges with repeated and missing destinations (rows 4 and 7 receive nothing).
fn check_graph(device: Device) -> Result<(EdgeIndex, EdgeIndex, EdgeIndex, EdgeIndex)> {
    let n = 9;
    let dst: Vec<u32> = (0..40u32).map(|e| [0, 2, 2, 8, 1, 3, 5, 6, 0, 2][e as usize % 10]).collect();
    let src: Vec<u32> = (0..40u32).map(|e| (e * 7 + 3) % n as u32).collect();
    let cpu = (EdgeIndex::new(&dst, n, "check dst", Device::Cpu)?, EdgeIndex::new(&src, n, "check src", Device::Cpu)?);
    let dev = (EdgeIndex::new(&dst, n, "check dst", device)?, EdgeIndex::new(&src, n, "check src", device)?);
    Ok((cpu.0, cpu.1, dev.0, dev.1))
}

fn rand(shape: &[usize], seed: u64) -> Tensor {
    Tensor::from_vec(shape, random_vec(shape.iter().product(), seed, 1.0))
}

fn check_gather_scatter(d: Device) -> Result<Comparison> {
    let (dst, src, gdst, gsrc) = check_graph(d)?;
    let (x, m) = (rand(&[9, 37], 1), rand(&[40, 37], 2));
    let (gx, gm) = (x.to_device(d)?, m.to_device(d)?);
    let (y, gy) = (op::gather_rows(&x, &src), op::gather_rows(&gx, &gsrc));
    let (s, gs) = (op::scatter_add_rows(&m, &dst), op::scatter_add_rows(&gm, &gdst));
    // Accumulating into a non-zero tensor, as a gathered tensor's gradient does.
    let (mut acc, mut gacc) = (x.clone(), gx.clone());
    op::scatter_add_rows_into(&mut acc, &m, &src);
    op::scatter_add_rows_into(&mut gacc, &gm, &gsrc);
    // Exact: copies, and per-row sums in the CPU's edge order.
    compare(&[("gather_rows", &gy, &y), ("scatter_add_rows", &gs, &s), ("scatter_add_rows_into", &gacc, &acc)], 0.0, 0.0)
}

fn check_gather_pair_add(d: Device) -> Result<Comparison> {
    let (dst, src, gdst, gsrc) = check_graph(d)?;
    let (nodes, edges, bias) = (rand(&[9, 4 * 6], 3), rand(&[40, 2 * 6], 4), rand(&[6], 5));
    let (gn, ge, gb) = (nodes.to_device(d)?, edges.to_device(d)?, bias.to_device(d)?);
    let a = op::gather_pair_add(&nodes, &dst, 0, &src, 6, &edges, 0, &bias);
    let ga = op::gather_pair_add(&gn, &gdst, 0, &gsrc, 6, &ge, 0, &gb);
    let b = op::gather_pair_add(&nodes, &dst, 12, &src, 18, &edges, 6, &bias);
    let gb2 = op::gather_pair_add(&gn, &gdst, 12, &gsrc, 18, &ge, 6, &gb);
    // Exact: three additions in the CPU's order.
    compare(&[("gather_pair_add a", &ga, &a), ("gather_pair_add b", &gb2, &b)], 0.0, 0.0)
}

/// The checks of this family, for `checks::all()`.
pub fn checks() -> Vec<OpCheck> {
    vec![
        OpCheck { name: "gather rows / grouped scatter-add", kernels: &["gather_rows_f32", "scatter_add_rows_f32"], run: check_gather_scatter },
        OpCheck { name: "gather_pair_add (factorised edge-MLP layer)", kernels: &["gather_pair_add_f32"], run: check_gather_pair_add },
    ]
}
