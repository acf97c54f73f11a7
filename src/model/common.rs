//! Pieces the encoders share: SyncBN calls bound to a `StepContext`, the edge-message input
//! [h_dst, h_src, e] of the graph convolutions and its backward, batched atom features, and
//! input validation of graph batches (errors, never panics, on malformed batches).

use super::{GraphBatch, ModalityBatch, StepContext};
use crate::crystal::features::{atom_features, ATOM_FEATURE_DIM};
use crate::engine::nn::BatchNorm;
use crate::engine::ops::gather::{check_indices, gather_rows_forward, index_add_rows};
use crate::engine::Tensor;
use anyhow::{bail, ensure, Context, Result};

/// BatchNorm forward with statistics summed over the job's ranks (SyncBN; a no-op reduction in a
/// single process).
pub fn bn_forward(bn: &mut BatchNorm, x: &Tensor, ctx: &StepContext) -> Result<Tensor> {
    bn.forward_synced(x, &mut |sums| ctx.dist.all_reduce_sum_f64(sums))
}

/// BatchNorm backward with the gradient sums all-reduced (must pair with `bn_forward`).
pub fn bn_backward(bn: &mut BatchNorm, dout: &Tensor, ctx: &StepContext) -> Tensor {
    bn.backward_synced(dout, &mut |sums| ctx.dist.all_reduce_sum_f64(sums))
}

/// z (E, 2C + F) = [h[dst], h[src], e] — PyG's cat(x_i, x_j, edge_attr), i the receiving atom.
pub fn edge_concat_forward(h: &Tensor, e: &Tensor, src: &[u32], dst: &[u32]) -> Tensor {
    let (n, c) = (h.shape[0], h.shape[1]);
    let ne = src.len();
    let f = e.shape[1];
    assert_eq!(e.shape[0], ne, "edge_concat: {} edge rows for {ne} edges", e.shape[0]);
    let (mut hd, mut hs) = (vec![0.0f32; ne * c], vec![0.0f32; ne * c]); // (E, C) each
    gather_rows_forward(&mut hd, h.data(), dst, n, c);
    gather_rows_forward(&mut hs, h.data(), src, n, c);
    let w = 2 * c + f;
    let mut z = vec![0.0f32; ne * w]; // (E, 2C + F)
    for r in 0..ne {
        let row = &mut z[r * w..(r + 1) * w];
        row[..c].copy_from_slice(&hd[r * c..(r + 1) * c]);
        row[c..2 * c].copy_from_slice(&hs[r * c..(r + 1) * c]);
        row[2 * c..].copy_from_slice(&e.data()[r * f..(r + 1) * f]);
    }
    Tensor::from_vec(&[ne, w], z)
}

/// Backward of `edge_concat_forward`: dh (N, C) += scatter of the h_dst and h_src column blocks,
/// and the edge block de (E, F) is returned.
pub fn edge_concat_backward(dh: &mut Tensor, dz: &Tensor, src: &[u32], dst: &[u32]) -> Tensor {
    let (n, c) = (dh.shape[0], dh.shape[1]);
    let ne = src.len();
    let w = dz.shape[1];
    let f = w - 2 * c;
    let (mut dd, mut ds, mut de) = (vec![0.0f32; ne * c], vec![0.0f32; ne * c], vec![0.0f32; ne * f]);
    for r in 0..ne {
        let row = &dz.data()[r * w..(r + 1) * w];
        dd[r * c..(r + 1) * c].copy_from_slice(&row[..c]);
        ds[r * c..(r + 1) * c].copy_from_slice(&row[c..2 * c]);
        de[r * f..(r + 1) * f].copy_from_slice(&row[2 * c..]);
    }
    index_add_rows(dh.data_mut(), &dd, dst, n, c, true);
    index_add_rows(dh.data_mut(), &ds, src, n, c, true);
    Tensor::from_vec(&[ne, f], de)
}

/// Elementwise product a ⊙ b of equal shapes.
pub fn mul(a: &Tensor, b: &Tensor) -> Tensor {
    assert_eq!(a.shape, b.shape, "mul: shapes differ");
    Tensor::from_vec(&a.shape, a.data().iter().zip(b.data()).map(|(x, y)| x * y).collect())
}

/// (N, 92) CGCNN-style atom features of every atom of the batch.
pub fn batch_atom_features(species: &[u8]) -> Result<Tensor> {
    let mut x = Vec::with_capacity(species.len() * ATOM_FEATURE_DIM); // (N, 92)
    for (i, &z) in species.iter().enumerate() {
        x.extend_from_slice(&atom_features(z).with_context(|| format!("crystal batch: atom {i}"))?);
    }
    Ok(Tensor::from_vec(&[species.len(), ATOM_FEATURE_DIM], x))
}

/// Checks the node bookkeeping of a graph batch: offsets (B + 1) from 0 to the atom count, every
/// crystal with at least one atom.
pub fn validate_nodes(g: &GraphBatch) -> Result<()> {
    let n = g.species.len();
    ensure!(g.node_offsets.len() == g.num_graphs + 1,
        "crystal batch: node_offsets has {} entries for {} graphs (expected B + 1)", g.node_offsets.len(), g.num_graphs);
    ensure!(g.node_offsets[0] == 0 && *g.node_offsets.last().unwrap() == n,
        "crystal batch: node_offsets must run from 0 to the atom count {n}, got {:?}..{:?}", g.node_offsets.first(), g.node_offsets.last());
    if let Some(k) = g.node_offsets.windows(2).position(|w| w[1] <= w[0]) {
        bail!("crystal batch: graph {k} has no atoms (offsets {} → {})", g.node_offsets[k], g.node_offsets[k + 1]);
    }
    Ok(())
}

/// Checks one edge list: equal lengths, indices in range, finite positive distances.
pub fn validate_edges(what: &str, src: &[u32], dst: &[u32], values: &[(&str, &[f32])], n: usize, positive: bool) -> Result<()> {
    ensure!(src.len() == dst.len(), "crystal batch: {what}: {} sources but {} destinations", src.len(), dst.len());
    check_indices(src, n, &format!("crystal batch: {what} src"))?;
    check_indices(dst, n, &format!("crystal batch: {what} dst"))?;
    for (name, v) in values {
        ensure!(v.len() == src.len(), "crystal batch: {what}: {} {name} values for {} edges", v.len(), src.len());
        if let Some((e, x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite() || (positive && **x <= 0.0)) {
            bail!("crystal batch: {what} edge {e}: {name} = {x} (must be finite{})", if positive { " and > 0" } else { "" });
        }
    }
    Ok(())
}

/// The modality name of a batch, for error messages.
pub fn batch_name(b: &ModalityBatch) -> &'static str {
    match b {
        ModalityBatch::Crystal(_) => "crystal",
        ModalityBatch::Dos(_) => "dos",
        ModalityBatch::ChargeDensity(_) => "charge_density",
        ModalityBatch::Text(_) => "text",
    }
}
