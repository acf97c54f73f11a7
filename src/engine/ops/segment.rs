//! Segment mean pooling: the rows of a batch of graphs (atoms, or DOS tokens) are stored
//! back to back, graph g owning rows offsets[g]..offsets[g+1]; pooling averages each graph's rows.
//!
//! An empty segment (a graph with no rows) pools to zeros and passes no gradient, rather than
//! producing 0/0 = NaN. Input gradients are written (`=`).
//!
//! Tensor-level ops [`segment_mean`] and [`segment_mean_grad`] take the offsets as [`Indices`]
//! on the tensor's device. The GPU kernels (`kernels/segment.cu`) sum each segment's rows in
//! order and scale by the same f32 reciprocal, so they are bit-identical to the CPU.

use crate::engine::gpu::{self, device_ok, gpu_of};
use crate::engine::tensor::{Indices, Storage, Tensor};
use rayon::prelude::*;

fn host_offsets(offsets: &Indices) -> Vec<usize> {
    offsets.host().iter().map(|&o| o as usize).collect()
}

/// out (G, C): the mean of each segment's rows of x (N, C); offsets (G+1) on x's device.
pub fn segment_mean(x: &Tensor, offsets: &Indices) -> Tensor {
    let g = offsets.len().checked_sub(1).expect("segment_mean: offsets must have G+1 ≥ 1 entries");
    let c = x.numel() / x.shape[0].max(1);
    assert!(x.device() == offsets.device(), "segment_mean: x on {}, offsets on {}", x.device(), offsets.device());
    match &x.storage {
        Storage::Cpu(xd) => {
            let mut out = vec![0.0f32; g * c];
            segment_mean_forward(&mut out, xd, &host_offsets(offsets), c);
            Tensor::from_vec(&[g, c], out)
        }
        Storage::Gpu(xd) => {
            let dev = gpu_of(x).clone();
            let mut out = device_ok(Tensor::uninit_on(&[g, c], x.device()), "segment_mean");
            if let Storage::Gpu(o) = &mut out.storage {
                device_ok(gpu::segment::mean_forward(&dev, o, xd, offsets.gpu_vec(), g, c), "segment_mean");
            }
            out
        }
    }
}

/// dx (N, C): every row of segment g gets dout[g] / |g|; `n` = offsets[G] rows.
pub fn segment_mean_grad(dout: &Tensor, offsets: &Indices, n: usize) -> Tensor {
    let g = offsets.len().checked_sub(1).expect("segment_mean_grad: offsets must have G+1 ≥ 1 entries");
    let c = dout.numel() / g.max(1);
    assert_eq!(dout.shape[0], g, "segment_mean_grad: dout {:?} for {g} segments", dout.shape);
    assert!(dout.device() == offsets.device(), "segment_mean_grad: dout on {}, offsets on {}", dout.device(), offsets.device());
    match &dout.storage {
        Storage::Cpu(dd) => {
            let mut dx = vec![0.0f32; n * c];
            segment_mean_backward(&mut dx, dd, &host_offsets(offsets), c);
            Tensor::from_vec(&[n, c], dx)
        }
        Storage::Gpu(dd) => {
            let dev = gpu_of(dout).clone();
            let mut dx = device_ok(Tensor::uninit_on(&[n, c], dout.device()), "segment_mean_grad");
            if let Storage::Gpu(o) = &mut dx.storage {
                device_ok(gpu::segment::mean_backward(&dev, o, dd, offsets.gpu_vec(), g, n, c), "segment_mean_grad");
            }
            dx
        }
    }
}

/// Checks that offsets (G+1) start at 0, never decrease, and end at `n_rows`.
fn assert_offsets(offsets: &[usize], n_rows: usize, op: &str) {
    assert!(!offsets.is_empty(), "{op}: offsets must have G+1 ≥ 1 entries");
    assert_eq!(offsets[0], 0, "{op}: offsets must start at 0");
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{op}: offsets must not decrease: {offsets:?}");
    assert_eq!(*offsets.last().unwrap(), n_rows, "{op}: offsets must end at the row count {n_rows}");
}

/// out (G, C): out[g] = mean of inp rows offsets[g]..offsets[g+1]; zeros for an empty segment.
pub fn segment_mean_forward(
    out: &mut [f32],     // (G, C)
    inp: &[f32],         // (N, C), N = offsets[G]
    offsets: &[usize],   // (G+1)
    c: usize,
) {
    let g = offsets.len().saturating_sub(1);
    let n = *offsets.last().unwrap_or(&0);
    assert_offsets(offsets, n, "segment_mean_forward");
    assert!(out.len() >= g * c && inp.len() >= n * c, "segment_mean_forward: buffer too small");
    if c == 0 {
        return;
    }
    out[..g * c].par_chunks_mut(c).enumerate().for_each(|(seg, row)| {
        let (start, end) = (offsets[seg], offsets[seg + 1]);
        row.fill(0.0);
        if end == start {
            return;
        }
        for r in start..end {
            for (o, x) in row.iter_mut().zip(&inp[r * c..(r + 1) * c]) {
                *o += x;
            }
        }
        let inv = 1.0 / (end - start) as f32;
        row.iter_mut().for_each(|o| *o *= inv);
    });
}

/// dinp (N, C): every row of segment g gets dout[g] / |g| (written).
pub fn segment_mean_backward(
    dinp: &mut [f32],    // (N, C)
    dout: &[f32],        // (G, C)
    offsets: &[usize],   // (G+1)
    c: usize,
) {
    let g = offsets.len().saturating_sub(1);
    let n = *offsets.last().unwrap_or(&0);
    assert_offsets(offsets, n, "segment_mean_backward");
    assert!(dinp.len() >= n * c && dout.len() >= g * c, "segment_mean_backward: buffer too small");
    if c == 0 {
        return;
    }
    // Split dinp at the segment boundaries so each segment is written by one task.
    let mut pieces: Vec<&mut [f32]> = Vec::with_capacity(g);
    let mut rest = &mut dinp[..n * c];
    for seg in 0..g {
        let (head, tail) = rest.split_at_mut((offsets[seg + 1] - offsets[seg]) * c);
        pieces.push(head);
        rest = tail;
    }
    pieces.into_par_iter().enumerate().for_each(|(seg, block)| {
        let count = offsets[seg + 1] - offsets[seg];
        if count == 0 {
            return;
        }
        let inv = 1.0 / count as f32;
        let grad = &dout[seg * c..(seg + 1) * c];
        for row in block.chunks_exact_mut(c) {
            for (d, g) in row.iter_mut().zip(grad) {
                *d = g * inv;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::{check_gradient, dot, random_vec};

    #[test]
    fn segment_mean_averages_each_graph_and_gives_zeros_for_empty_graphs() {
        // Graph 0: rows 0..2, graph 1: empty, graph 2: row 2.
        let offsets = [0, 2, 2, 3];
        let inp = [1.0, 10.0, 3.0, 20.0, 5.0, -7.0]; // (3, 2)
        let mut out = [f32::NAN; 6];
        segment_mean_forward(&mut out, &inp, &offsets, 2);
        assert_eq!(out, [2.0, 15.0, 0.0, 0.0, 5.0, -7.0]);
        let mut dinp = [f32::NAN; 6];
        segment_mean_backward(&mut dinp, &[1.0, 2.0, 100.0, 100.0, 3.0, 4.0], &offsets, 2);
        assert_eq!(dinp, [0.5, 1.0, 0.5, 1.0, 3.0, 4.0]);
        assert!(dinp.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn segment_mean_gradient_matches_finite_differences() {
        let offsets = [0, 3, 3, 4, 9];
        let c = 5;
        let (g, n) = (offsets.len() - 1, offsets[offsets.len() - 1]);
        let x = random_vec(n * c, 1, 1.0);
        let w = random_vec(g * c, 2, 1.0);
        let mut dx = vec![f32::NAN; n * c];
        segment_mean_backward(&mut dx, &w, &offsets, c);
        check_gradient("segment mean dinp", &x, &dx, |x| {
            let mut out = vec![0.0; g * c];
            segment_mean_forward(&mut out, x, &offsets, c);
            dot(&w, &out)
        }, 1e-2, 1e-3, 1e-3);
    }
}
