//! Pieces the encoders share: SyncBN calls bound to a `StepContext`, the edge-message input
//! [h_dst, h_src, e] of the graph convolutions and its backward, batched atom features, the
//! batch upload to the model's device (staged), and input validation of graph batches (errors, never
//! panics, on malformed batches).

use super::{GraphBatch, ModalityBatch, StepContext};
use crate::crystal::features::{atom_features_encoded, AtomFeatureEncoding, ATOM_FEATURE_DIM};
use crate::engine::nn::BatchNorm;
use crate::engine::ops::batchnorm::ChannelSums;
use crate::engine::ops::gather::{check_indices, gather_rows, scatter_add_rows_into, EdgeIndex};
use crate::engine::ops::{concat_last, split_last};
use crate::engine::{Device, Indices, Tensor};
use anyhow::{bail, ensure, Context, Result};
use std::borrow::Cow;

/// SyncBN's all-reduce in this step: through the step's device communicator when it has one
/// (NCCL on the device's memory on `cuda`), else through the host with `Dist` (MPI).
pub fn sync_sums(ctx: &StepContext, sums: &mut ChannelSums, count: Option<&mut usize>) -> Result<()> {
    match ctx.comm {
        Some(comm) => comm.all_reduce_channel_sums(sums, count),
        None => sums.reduce_through_host(count, |v| ctx.dist.all_reduce_sum_f64(v)),
    }
}

/// BatchNorm forward with statistics summed over the job's ranks (SyncBN); in a single process
/// no reduction, so the statistics never leave the device.
pub fn bn_forward(bn: &mut BatchNorm, x: &Tensor, ctx: &StepContext) -> Result<Tensor> {
    if ctx.dist.world_size() == 1 {
        return bn.forward(x);
    }
    bn.forward_synced(x, &mut |sums, count| sync_sums(ctx, sums, count))
}

/// BatchNorm backward with the gradient sums all-reduced (must pair with `bn_forward`).
pub fn bn_backward(bn: &mut BatchNorm, dout: &Tensor, ctx: &StepContext) -> Result<Tensor> {
    if ctx.dist.world_size() == 1 {
        return Ok(bn.backward(dout));
    }
    bn.backward_synced(dout, &mut |sums, count| sync_sums(ctx, sums, count))
}

/// z (E, 2C + F) = [h[dst], h[src], e] — PyG's cat(x_i, x_j, edge_attr), i the receiving atom.
pub fn edge_concat_forward(h: &Tensor, e: &Tensor, src: &EdgeIndex, dst: &EdgeIndex) -> Tensor {
    assert_eq!(e.shape[0], src.len(), "edge_concat: {} edge rows for {} edges", e.shape[0], src.len());
    concat_last(&[&gather_rows(h, dst), &gather_rows(h, src), e])
}

/// Backward of `edge_concat_forward`: dh (N, C) += scatter of the h_dst and h_src column blocks,
/// and the edge block de (E, F) is returned.
pub fn edge_concat_backward(dh: &mut Tensor, dz: &Tensor, src: &EdgeIndex, dst: &EdgeIndex) -> Tensor {
    let c = dh.shape[1];
    let f = dz.shape[1] - 2 * c;
    let mut parts = split_last(dz, &[c, c, f]);
    scatter_add_rows_into(dh, &parts[0], dst);
    scatter_add_rows_into(dh, &parts[1], src);
    parts.pop().expect("three blocks")
}

/// Host values of a batch as a tensor on `device` (the batch upload, through the device's
/// pinned staging pool; no copy on the CPU).
pub fn upload(shape: &[usize], values: Vec<f32>, device: Device) -> Result<Tensor> {
    let t = Tensor::from_vec(shape, values);
    if device.is_gpu() {
        t.to_device_staged(device).with_context(|| format!("uploading a batch tensor {shape:?} to {device}"))
    } else {
        Ok(t)
    }
}

/// Prepared inputs must be on the device the parameters are on (an encoder moved after its
/// preparer was taken would otherwise fail deep inside an op).
pub fn check_prepared_device(encoder: &str, inputs: Device, params: Device) -> Result<()> {
    ensure!(inputs == params, "{encoder}: inputs were prepared for {inputs}, the parameters are on {params} (take the input preparer again after moving the encoder)");
    Ok(())
}

/// A batch's integer data on the host: borrowed when it is there, copied back from a device
/// otherwise (validation and edge grouping read it once per batch).
pub fn host_indices(ix: &Indices) -> Result<Cow<'_, [u32]>> {
    match ix {
        Indices::Cpu(v) => Ok(Cow::Borrowed(v)),
        Indices::Gpu(_) => match ix.to_device(Device::Cpu)? {
            Indices::Cpu(v) => Ok(Cow::Owned(v)),
            Indices::Gpu(_) => unreachable!("indices copied to the CPU"),
        },
    }
}

/// (N, 92) CGCNN-style atom features of every atom of the batch, in `encoding`.
pub fn batch_atom_features(species: &[u8], encoding: AtomFeatureEncoding) -> Result<Tensor> {
    let mut x = Vec::with_capacity(species.len() * ATOM_FEATURE_DIM); // (N, 92)
    for (i, &z) in species.iter().enumerate() {
        x.extend_from_slice(&atom_features_encoded(z, encoding).with_context(|| format!("crystal batch: atom {i}"))?);
    }
    Ok(Tensor::from_vec(&[species.len(), ATOM_FEATURE_DIM], x))
}

/// Checks the node bookkeeping of a graph batch: offsets (B + 1) from 0 to the atom count, every
/// crystal with at least one atom.
pub fn validate_nodes(g: &GraphBatch) -> Result<()> {
    let n = g.species.len();
    let offsets = host_indices(&g.node_offsets)?;
    ensure!(offsets.len() == g.num_graphs + 1,
        "crystal batch: node_offsets has {} entries for {} graphs (expected B + 1)", offsets.len(), g.num_graphs);
    ensure!(offsets[0] == 0 && *offsets.last().unwrap() as usize == n,
        "crystal batch: node_offsets must run from 0 to the atom count {n}, got {:?}..{:?}", offsets.first(), offsets.last());
    if let Some(k) = offsets.windows(2).position(|w| w[1] <= w[0]) {
        bail!("crystal batch: graph {k} has no atoms (offsets {} → {})", offsets[k], offsets[k + 1]);
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
