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

use anyhow::{bail, Result};
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
    // Counting sort of edges by destination: bucket_start (N+1) and edges_by_row (E).
    let mut bucket_start = vec![0usize; n + 1]; // (N+1)
    for &i in index {
        let i = i as usize;
        assert!(i < n, "index_add_rows: index {i} out of range for {n} rows");
        bucket_start[i + 1] += 1;
    }
    for r in 0..n {
        bucket_start[r + 1] += bucket_start[r];
    }
    let mut fill = bucket_start.clone();
    let mut edges_by_row = vec![0u32; e]; // (E)
    for (edge, &i) in index.iter().enumerate() {
        let i = i as usize;
        edges_by_row[fill[i]] = edge as u32;
        fill[i] += 1;
    }
    acc[..n * c]
        .par_chunks_mut(c)
        .with_min_len(MIN_ROWS_PER_TASK)
        .enumerate()
        .for_each(|(r, row)| {
            if !accumulate {
                row.fill(0.0);
            }
            for &edge in &edges_by_row[bucket_start[r]..bucket_start[r + 1]] {
                let edge = edge as usize;
                for (a, s) in row.iter_mut().zip(&src[edge * c..(edge + 1) * c]) {
                    *a += s;
                }
            }
        });
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
    fn check_indices_names_the_bad_edge() {
        assert!(check_indices(&[0, 1, 2], 3, "local edges").is_ok());
        let err = check_indices(&[0, 5, 2], 3, "local edges").unwrap_err().to_string();
        assert!(err.contains("edge 1") && err.contains("row 5"), "{err}");
    }
}
