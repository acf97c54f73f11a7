//! Row gather by index (node features → edges) and scatter-add over edges (edges → nodes), the
//! two halves of message passing in the crystal encoders.
//!
//! Each is the other's backward: the gradient of a gather is a scatter-add and vice versa.
//! Input gradients are *written* (`=`), as for every op; a caller that gathers the same node
//! tensor twice (h_src and h_dst) adds the two written gradients itself.
//!
//! Scatter-add is parallel and deterministic: the edges are bucketed by destination row with a
//! counting sort (stable, so edges keep their order inside a bucket), and each destination row is
//! summed by one thread in edge order. The result is bit-identical for any number of threads,
//! which bit-exact `--resume` relies on. Indices are `u32` as in `crystal::EdgeList`; an index
//! out of range is a programming error upstream (the shard reader validates edges against the
//! atom count, see `check_indices`), so the ops assert with a message rather than return errors.
//!
//! On a device the same buckets are an [`EdgeIndex`]: the index and its counting sort (row
//! starts, edges by row), built once per batch on the host, where the batch's integers are
//! validated anyway, and uploaded with it. The GPU scatter-add (`kernels/gather.cu`) then sums
//! each (row, column) over the row's edges in increasing edge order, starting from zero or from
//! the accumulator — the CPU's order, so every op here is bit-identical on the CPU and a GPU
//! (there are no float atomics, and a run repeated gives the same bits).
//!
//! Tensor-level ops (one device match each): [`gather_rows`], [`scatter_add_rows`],
//! [`scatter_add_rows_into`] and [`gather_pair_add`] (the factorised first layer of an edge
//! MLP). The gradient of `gather_rows` is `scatter_add_rows` with the same index and vice versa.

use crate::engine::gpu::{self, device_ok, gpu_of};
use crate::engine::tensor::{Device, Indices, Storage, Tensor};
use anyhow::{bail, ensure, Result};
use rayon::prelude::*;

/// Rows per rayon task; below this a row-parallel loop costs more than it saves.
const MIN_ROWS_PER_TASK: usize = 64;

/// Check that every index is < `n_rows`; the error names the first bad edge.
pub fn check_indices(index: &[u32], n_rows: usize, what: &str) -> Result<()> {
    if let Some((e, &i)) = index.iter().enumerate().find(|(_, &i)| i as usize >= n_rows) {
        bail!("{what}: edge {e} refers to row {i}, but there are only {n_rows} rows");
    }
    Ok(())
}

/// out (E, C): out[e] = inp[index[e]].
pub fn gather_rows_forward(
    out: &mut [f32],  // (E, C)
    inp: &[f32],      // (N, C)
    index: &[u32],    // (E)
    n: usize,
    c: usize,
) {
    let e = index.len();
    assert!(out.len() >= e * c && inp.len() >= n * c, "gather_rows_forward: buffer too small");
    if c == 0 {
        return;
    }
    out[..e * c]
        .par_chunks_mut(c)
        .with_min_len(MIN_ROWS_PER_TASK)
        .zip(index.par_iter())
        .for_each(|(row, &i)| {
            let i = i as usize;
            assert!(i < n, "gather_rows_forward: index {i} out of range for {n} rows");
            row.copy_from_slice(&inp[i * c..(i + 1) * c]);
        });
}

/// dinp (N, C) = Σ_{e: index[e] = n} dout[e] (written; rows nobody gathered are zero).
pub fn gather_rows_backward(
    dinp: &mut [f32],  // (N, C)
    dout: &[f32],      // (E, C)
    index: &[u32],     // (E)
    n: usize,
    c: usize,
) {
    index_add_rows(dinp, dout, index, n, c, false);
}

/// out (N, C) = Σ_{e: index[e] = n} inp[e] (written; nodes with no edge get zeros).
pub fn scatter_add_forward(
    out: &mut [f32],  // (N, C)
    inp: &[f32],      // (E, C)
    index: &[u32],    // (E)
    n: usize,
    c: usize,
) {
    index_add_rows(out, inp, index, n, c, false);
}

/// dinp (E, C) = dout[index[e]] (written).
pub fn scatter_add_backward(
    dinp: &mut [f32],  // (E, C)
    dout: &[f32],      // (N, C)
    index: &[u32],     // (E)
    n: usize,
    c: usize,
) {
    gather_rows_forward(dinp, dout, index, n, c);
}

/// acc[index[e]] (+)= src[e] over all edges e. With `accumulate == false` acc is overwritten
/// (rows that receive nothing become zero); with `true` the sums are added to what is there.
/// Deterministic: each destination row sums its edges in increasing edge order.
pub fn index_add_rows(
    acc: &mut [f32],  // (N, C)
    src: &[f32],      // (E, C)
    index: &[u32],    // (E)
    n: usize,
    c: usize,
    accumulate: bool,
) {
    let e = index.len();
    assert!(acc.len() >= n * c && src.len() >= e * c, "index_add_rows: buffer too small");
    if c == 0 || n == 0 {
        assert!(e == 0 || c == 0, "index_add_rows: {e} edges into 0 rows");
        return;
    }
    let (row_start, edges_by_row) = group_by_row(index, n);
    index_add_rows_grouped(acc, src, &row_start, &edges_by_row, n, c, accumulate);
}

/// Counting sort of edges by row: row_start (N+1) and edges_by_row (E), where row r's edges are
/// edges_by_row[row_start[r]..row_start[r+1]] in increasing edge order (the sort is stable).
pub fn group_by_row(index: &[u32], n: usize) -> (Vec<u32>, Vec<u32>) {
    assert!(index.len() <= u32::MAX as usize, "group_by_row: {} edges exceed the u32 range", index.len());
    let mut row_start = vec![0u32; n + 1]; // (N+1)
    for &i in index {
        let i = i as usize;
        assert!(i < n, "index_add_rows: index {i} out of range for {n} rows");
        row_start[i + 1] += 1;
    }
    for r in 0..n {
        row_start[r + 1] += row_start[r];
    }
    let mut fill = row_start.clone();
    let mut edges_by_row = vec![0u32; index.len()]; // (E)
    for (edge, &i) in index.iter().enumerate() {
        let i = i as usize;
        edges_by_row[fill[i] as usize] = edge as u32;
        fill[i] += 1;
    }
    (row_start, edges_by_row)
}

/// [`index_add_rows`] with the buckets already built by [`group_by_row`].
pub fn index_add_rows_grouped(
    acc: &mut [f32],          // (N, C)
    src: &[f32],              // (E, C)
    row_start: &[u32],        // (N+1)
    edges_by_row: &[u32],     // (E)
    n: usize,
    c: usize,
    accumulate: bool,
) {
    assert!(acc.len() >= n * c && row_start.len() == n + 1, "index_add_rows_grouped: sizes");
    if c == 0 || n == 0 {
        return;
    }
    acc[..n * c]
        .par_chunks_mut(c)
        .with_min_len(MIN_ROWS_PER_TASK)
        .enumerate()
        .for_each(|(r, row)| {
            if !accumulate {
                row.fill(0.0);
            }
            for &edge in &edges_by_row[row_start[r] as usize..row_start[r + 1] as usize] {
                let edge = edge as usize;
                for (a, s) in row.iter_mut().zip(&src[edge * c..(edge + 1) * c]) {
                    *a += s;
                }
            }
        });
}

/// out (E, W): out[e, j] = ((nodes[dst[e], dst_col + j] + nodes[src[e], src_col + j])
/// + edges[e, edge_col + j]) + bias[j], summed in that order. The first layer of an MLP on
/// z = [h_dst, h_src, e], factorised as W·z = W_dst·h[dst] + W_src·h[src] + W_e·e, with the node
/// products computed once per node into column blocks of `nodes` and the edge product in `edges`.
#[allow(clippy::too_many_arguments)]
pub fn gather_pair_add_forward(
    out: &mut [f32],    // (E, W)
    nodes: &[f32],      // (N, nodes_ld)
    nodes_ld: usize,
    dst: &[u32],        // (E)
    dst_col: usize,
    src: &[u32],        // (E)
    src_col: usize,
    edges: &[f32],      // (E, edges_ld)
    edges_ld: usize,
    edge_col: usize,
    bias: &[f32],       // (W)
) {
    let (e, w) = (dst.len(), bias.len());
    assert!(src.len() == e && out.len() >= e * w && edges.len() >= e * edges_ld, "gather_pair_add_forward: sizes");
    assert!(dst_col + w <= nodes_ld && src_col + w <= nodes_ld && edge_col + w <= edges_ld, "gather_pair_add_forward: column blocks");
    if w == 0 {
        return;
    }
    out[..e * w].par_chunks_mut(w).enumerate().with_min_len(MIN_ROWS_PER_TASK).for_each(|(k, row)| {
        let (d, s) = (dst[k] as usize * nodes_ld + dst_col, src[k] as usize * nodes_ld + src_col);
        let ek = &edges[k * edges_ld + edge_col..k * edges_ld + edge_col + w];
        for j in 0..w {
            row[j] = nodes[d + j] + nodes[s + j] + ek[j] + bias[j];
        }
    });
}

/// An index (E) into `rows` rows together with its counting sort by row, on one device: what
/// [`gather_rows`] and the deterministic [`scatter_add_rows`] need. Built on the host from
/// validated indices ([`EdgeIndex::new`]), then uploaded with the batch.
#[derive(Clone, Debug)]
pub struct EdgeIndex {
    /// N, the rows the index points into.
    pub rows: usize,
    pub index: Indices,     // (E) row of every edge
    pub row_start: Indices, // (N+1) row r's edges are edges_by_row[row_start[r]..row_start[r+1]]
    pub edges_by_row: Indices, // (E) edges grouped by row, increasing edge id within a row
}

impl EdgeIndex {
    /// Checks that every index is < `rows` (the error names `what` and the first bad edge),
    /// groups the edges by row, and puts all three on `device`.
    pub fn new(index: &[u32], rows: usize, what: &str, device: Device) -> Result<EdgeIndex> {
        check_indices(index, rows, what)?;
        ensure!(rows < u32::MAX as usize && index.len() < u32::MAX as usize, "{what}: {} edges over {rows} rows exceed the u32 index range", index.len());
        let (row_start, edges_by_row) = group_by_row(index, rows);
        // A batch's index, built once per step: uploaded through the staging pool.
        let on = |v: Vec<u32>| match device {
            Device::Cpu => Ok(Indices::Cpu(v)),
            d => Indices::Cpu(v).to_device_staged(d),
        };
        Ok(EdgeIndex { rows, index: on(index.to_vec())?, row_start: on(row_start)?, edges_by_row: on(edges_by_row)? })
    }

    /// E, the number of edges.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn device(&self) -> Device {
        self.index.device()
    }
}

fn same_device(op: &str, t: &Tensor, idx: &EdgeIndex) {
    assert!(t.device() == idx.device(), "{op}: tensor on {}, index on {}", t.device(), idx.device());
}

/// out (E, C) = x[index[e]] — rows of x (N, C) picked by the index. Its gradient w.r.t. x is
/// [`scatter_add_rows`] of dout with the same index.
pub fn gather_rows(x: &Tensor, idx: &EdgeIndex) -> Tensor {
    let (n, c) = (x.shape[0], x.numel() / x.shape[0].max(1));
    assert_eq!(n, idx.rows, "gather_rows: x has {n} rows, the index points into {}", idx.rows);
    same_device("gather_rows", x, idx);
    let e = idx.len();
    let mut shape = x.shape.clone();
    shape[0] = e;
    match &x.storage {
        Storage::Cpu(xd) => {
            let mut out = vec![0.0f32; e * c];
            gather_rows_forward(&mut out, xd, idx.index.host(), n, c);
            Tensor::from_vec(&shape, out)
        }
        Storage::Gpu(xd) => {
            let g = gpu_of(x).clone();
            let mut out = device_ok(Tensor::uninit_on(&shape, x.device()), "gather_rows");
            if let Storage::Gpu(o) = &mut out.storage {
                device_ok(gpu::gather::gather_rows(&g, o, xd, idx.index.gpu_vec(), e, c), "gather_rows");
            }
            out
        }
    }
}

/// out (N, C) = Σ_{e: index[e] = n} src[e] for src (E, C) (rows no edge points to are zero). Its
/// gradient w.r.t. src is [`gather_rows`] of dout with the same index.
pub fn scatter_add_rows(src: &Tensor, idx: &EdgeIndex) -> Tensor {
    let c = src.numel() / src.shape[0].max(1);
    let mut shape = src.shape.clone();
    shape[0] = idx.rows;
    let mut out = device_ok(Tensor::uninit_on(&shape, src.device()), "scatter_add_rows");
    scatter_add(&mut out, src, idx, c, false);
    out
}

/// acc (N, C) += Σ_{e: index[e] = n} src[e]: each row adds its edges to what it holds, in edge
/// order (gradient accumulation of a gathered tensor).
pub fn scatter_add_rows_into(acc: &mut Tensor, src: &Tensor, idx: &EdgeIndex) {
    let c = src.numel() / src.shape[0].max(1);
    assert_eq!(acc.numel(), idx.rows * c, "scatter_add_rows_into: accumulator {:?} for {} rows of {c}", acc.shape, idx.rows);
    scatter_add(acc, src, idx, c, true);
}

fn scatter_add(acc: &mut Tensor, src: &Tensor, idx: &EdgeIndex, c: usize, accumulate: bool) {
    assert_eq!(src.shape[0], idx.len(), "scatter_add_rows: {} source rows for {} edges", src.shape[0], idx.len());
    same_device("scatter_add_rows", src, idx);
    let n = idx.rows;
    match (&mut acc.storage, &src.storage) {
        (Storage::Cpu(a), Storage::Cpu(s)) => {
            index_add_rows_grouped(a, s, idx.row_start.host(), idx.edges_by_row.host(), n, c, accumulate)
        }
        (Storage::Gpu(a), Storage::Gpu(s)) => {
            let g = a.gpu().clone();
            let r = gpu::gather::scatter_add_rows(&g, a, s, idx.row_start.gpu_vec(), idx.edges_by_row.gpu_vec(), n, c, accumulate);
            device_ok(r, "scatter_add_rows")
        }
        _ => panic!("scatter_add_rows: accumulator and source on different devices"),
    }
}

/// out (E, W) = nodes[dst, dst_col..] + nodes[src, src_col..] + edges[:, edge_col..] + bias, see
/// [`gather_pair_add_forward`]. Its gradients are scatter-adds of dout (nodes), dout itself
/// (edges) and the column sum of dout (bias); the encoder composes them from the other ops.
pub fn gather_pair_add(nodes: &Tensor, dst: &EdgeIndex, dst_col: usize, src: &EdgeIndex, src_col: usize, edges: &Tensor, edge_col: usize, bias: &Tensor) -> Tensor {
    let (n, nodes_ld) = (nodes.shape[0], nodes.shape[1]);
    let (e, edges_ld, w) = (edges.shape[0], edges.shape[1], bias.numel());
    assert!(dst.rows == n && src.rows == n && dst.len() == e && src.len() == e, "gather_pair_add: index sizes");
    same_device("gather_pair_add", nodes, dst);
    same_device("gather_pair_add", edges, src);
    match &nodes.storage {
        Storage::Cpu(nd) => {
            let mut out = vec![0.0f32; e * w];
            gather_pair_add_forward(&mut out, nd, nodes_ld, dst.index.host(), dst_col, src.index.host(), src_col, edges.data(), edges_ld, edge_col, bias.data());
            Tensor::from_vec(&[e, w], out)
        }
        Storage::Gpu(nd) => {
            assert!(dst_col + w <= nodes_ld && src_col + w <= nodes_ld && edge_col + w <= edges_ld, "gather_pair_add: column blocks");
            let g = gpu_of(nodes).clone();
            let mut out = device_ok(Tensor::uninit_on(&[e, w], nodes.device()), "gather_pair_add");
            if let Storage::Gpu(o) = &mut out.storage {
                let cols = gpu::gather::PairColumns { nodes_ld, dst_col, src_col, edges_ld, edge_col, width: w };
                let r = gpu::gather::gather_pair_add(&g, o, nd, dst.index.gpu_vec(), src.index.gpu_vec(), edges.gpu_vec(), bias.gpu_vec(), e, cols);
                device_ok(r, "gather_pair_add");
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::{check_gradient, dot, random_vec};

    /// A small graph with a node that has no edges (row 3) and repeated destinations.
    fn tiny_graph() -> (usize, usize, Vec<u32>) {
        (5, 3, vec![0, 2, 2, 4, 1, 0, 2, 4])
    }

    #[test]
    fn scatter_add_sums_edges_per_node_and_zeroes_isolated_nodes() {
        let (n, c, index) = tiny_graph();
        let e = index.len();
        let src: Vec<f32> = (0..e * c).map(|v| v as f32).collect();
        let mut out = vec![f32::NAN; n * c];
        scatter_add_forward(&mut out, &src, &index, n, c);
        // Hand-computed: node 2 receives edges 1, 2, 6; node 3 nothing.
        let row = |edge: usize| -> Vec<f32> { (0..c).map(|j| (edge * c + j) as f32).collect() };
        let expected_node2: Vec<f32> = (0..c).map(|j| row(1)[j] + row(2)[j] + row(6)[j]).collect();
        assert_eq!(&out[2 * c..3 * c], &expected_node2[..]);
        assert_eq!(&out[3 * c..4 * c], &[0.0, 0.0, 0.0]);
        // Accumulate mode adds on top.
        index_add_rows(&mut out, &src, &index, n, c, true);
        let doubled: Vec<f32> = expected_node2.iter().map(|v| 2.0 * v).collect();
        assert_eq!(&out[2 * c..3 * c], &doubled[..]);
    }

    #[test]
    fn gather_copies_rows() {
        let (n, c, index) = tiny_graph();
        let inp = random_vec(n * c, 1, 1.0);
        let mut out = vec![0.0; index.len() * c];
        gather_rows_forward(&mut out, &inp, &index, n, c);
        for (e, &i) in index.iter().enumerate() {
            assert_eq!(&out[e * c..(e + 1) * c], &inp[i as usize * c..(i as usize + 1) * c]);
        }
    }

    #[test]
    fn scatter_add_is_identical_on_large_inputs_split_across_threads() {
        // Enough rows that rayon splits the work; compare against a serial loop in edge order.
        let (n, c, e) = (3000, 7, 20000);
        let index: Vec<u32> = random_vec(e, 5, 1.0).iter().map(|v| ((v + 1.0) * 0.5 * n as f32) as u32 % n as u32).collect();
        let src = random_vec(e * c, 6, 1.0);
        let mut serial = vec![0.0f32; n * c];
        for (edge, &i) in index.iter().enumerate() {
            for j in 0..c {
                serial[i as usize * c + j] += src[edge * c + j];
            }
        }
        let mut out = vec![0.0; n * c];
        scatter_add_forward(&mut out, &src, &index, n, c);
        assert_eq!(out, serial, "scatter-add must sum in edge order, bit for bit");
    }

    #[test]
    fn gather_and_scatter_gradients_match_finite_differences() {
        let (n, c, index) = tiny_graph();
        let e = index.len();
        let nodes = random_vec(n * c, 1, 1.0);
        let edges = random_vec(e * c, 2, 1.0);
        let w_edges = random_vec(e * c, 3, 1.0);
        let w_nodes = random_vec(n * c, 4, 1.0);

        let mut dnodes = vec![f32::NAN; n * c];
        gather_rows_backward(&mut dnodes, &w_edges, &index, n, c);
        check_gradient("gather dinp", &nodes, &dnodes, |x| {
            let mut out = vec![0.0; e * c];
            gather_rows_forward(&mut out, x, &index, n, c);
            dot(&w_edges, &out)
        }, 1e-2, 1e-3, 1e-3);

        let mut dedges = vec![f32::NAN; e * c];
        scatter_add_backward(&mut dedges, &w_nodes, &index, n, c);
        check_gradient("scatter dinp", &edges, &dedges, |x| {
            let mut out = vec![0.0; n * c];
            scatter_add_forward(&mut out, x, &index, n, c);
            dot(&w_nodes, &out)
        }, 1e-2, 1e-3, 1e-3);
    }

    #[test]
    fn tensor_ops_on_an_edge_index_equal_the_slice_references() {
        let (n, c, index) = tiny_graph();
        let idx = EdgeIndex::new(&index, n, "edges", Device::Cpu).unwrap();
        assert_eq!(idx.row_start.host(), &[0, 2, 3, 6, 6, 8], "stable counting sort: row starts");
        assert_eq!(idx.edges_by_row.host(), &[0, 5, 4, 1, 2, 6, 3, 7], "edges by row in edge order");
        let (x, m) = (random_vec(n * c, 1, 1.0), random_vec(index.len() * c, 2, 1.0));
        let (xt, mt) = (Tensor::from_vec(&[n, c], x.clone()), Tensor::from_vec(&[index.len(), c], m.clone()));
        let mut want = vec![0.0; index.len() * c];
        gather_rows_forward(&mut want, &x, &index, n, c);
        assert_eq!(gather_rows(&xt, &idx).data(), &want[..]);
        let mut want = vec![0.0; n * c];
        index_add_rows(&mut want, &m, &index, n, c, false);
        assert_eq!(scatter_add_rows(&mt, &idx).data(), &want[..]);
        let mut acc = xt.clone();
        scatter_add_rows_into(&mut acc, &mt, &idx);
        let mut want = x.clone();
        index_add_rows(&mut want, &m, &index, n, c, true);
        assert_eq!(acc.data(), &want[..]);
        let err = EdgeIndex::new(&[0, 7], n, "local edges src", Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("local edges src") && err.contains("edge 1"), "{err}");
    }

    #[test]
    fn gather_pair_add_is_the_factorised_first_layer() {
        // W·[h_dst, h_src, e] + b with W = [W_d | W_s | W_e], against the unfactorised product.
        let (n, c, index) = tiny_graph();
        let e = index.len();
        let src: Vec<u32> = index.iter().map(|&i| (i + 2) % n as u32).collect();
        let (h, ev) = (random_vec(n * c, 1, 1.0), random_vec(e * c, 2, 1.0));
        let (w, b) = (random_vec(c * 3 * c, 3, 1.0), random_vec(c, 4, 1.0)); // (C, 3C), (C)
        let block = |k: usize| -> Vec<f32> { (0..c).flat_map(|r| w[r * 3 * c + k * c..r * 3 * c + (k + 1) * c].to_vec()).collect() };
        let (wd, ws, we) = (block(0), block(1), block(2));
        let mut nodes = vec![0.0; n * 2 * c]; // (N, 2C) = h·[W_d; W_s]ᵀ
        crate::engine::ops::linear::linear_forward(&mut nodes, &h, &[wd, ws].concat(), None, n, c, 2 * c);
        let mut edges = vec![0.0; e * c];
        crate::engine::ops::linear::linear_forward(&mut edges, &ev, &we, None, e, c, c);
        let mut out = vec![0.0; e * c];
        gather_pair_add_forward(&mut out, &nodes, 2 * c, &index, 0, &src, c, &edges, c, 0, &b);
        for k in 0..e {
            let (d, s) = (index[k] as usize, src[k] as usize);
            let z: Vec<f32> = [&h[d * c..(d + 1) * c], &h[s * c..(s + 1) * c], &ev[k * c..(k + 1) * c]].concat();
            for j in 0..c {
                let want: f32 = b[j] + (0..3 * c).map(|i| w[j * 3 * c + i] * z[i]).sum::<f32>();
                assert!((out[k * c + j] - want).abs() < 1e-5, "edge {k} column {j}: {} vs {want}", out[k * c + j]);
            }
        }
    }

    #[test]
    fn check_indices_names_the_bad_edge() {
        assert!(check_indices(&[0, 1, 2], 3, "local edges").is_ok());
        let err = check_indices(&[0, 5, 2], 3, "local edges").unwrap_err().to_string();
        assert!(err.contains("edge 1") && err.contains("row 5"), "{err}");
    }
}
