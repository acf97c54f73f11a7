//! Embedding lookup: out[i] = table[ids[i]]. Backward scatter-adds rows of dout into the table
//! gradient (+=); ids have no gradient. An out-of-range id is an error naming its position, not
//! a panic: ids come from tokenisers and data files.
//!
//! [`embedding`] and [`embedding_grad`] are the tensor-level ops with their one device dispatch.
//! Their ids are a [`TokenIds`]: checked against the vocabulary once, when the batch's ids are
//! uploaded, together with the positions sorted by id that the GPU backward
//! (`kernels/embedding.cu`) walks to add each table row's gradient in position order — the CPU's
//! order, so both are bit-identical and no float atomics are needed.

use crate::engine::gpu::{self, device_ok, gpu_of, gpu_vec_mut};
use crate::engine::tensor::{Device, Indices, Storage, Tensor};
use anyhow::{bail, Result};

/// A batch's token ids on a device, checked against a vocabulary of `vocab` rows.
#[derive(Clone, Debug)]
pub struct TokenIds {
    /// (N) the ids in position order.
    pub ids: Indices,
    pub vocab: usize,
    /// (N) positions sorted by id, stable (ascending positions within an id); GPU only.
    order: Indices,
    /// (S) the distinct ids, ascending; GPU only.
    segment_ids: Indices,
    /// (S + 1) id s owns order[offsets[s]..offsets[s + 1]]; GPU only.
    segment_offsets: Indices,
}

impl TokenIds {
    /// Checks `ids` against `vocab` (an error names the first bad position) and puts them on
    /// `device`, with the sorted segments a GPU backward needs.
    pub fn new(ids: &[u32], vocab: usize, device: Device) -> Result<TokenIds> {
        check_ids(ids, vocab)?;
        let empty = || Indices::Cpu(Vec::new());
        if !device.is_gpu() {
            return Ok(TokenIds { ids: Indices::Cpu(ids.to_vec()), vocab, order: empty(), segment_ids: empty(), segment_offsets: empty() });
        }
        let mut order: Vec<u32> = (0..ids.len() as u32).collect();
        order.sort_by_key(|&i| ids[i as usize]); // stable
        let (mut seg_ids, mut offsets) = (Vec::new(), Vec::new());
        for (k, &pos) in order.iter().enumerate() {
            let id = ids[pos as usize];
            if seg_ids.last() != Some(&id) {
                seg_ids.push(id);
                offsets.push(k as u32);
            }
        }
        offsets.push(ids.len() as u32);
        let up = |v: Vec<u32>| Indices::Cpu(v).to_device(device);
        Ok(TokenIds { ids: up(ids.to_vec())?, vocab, order: up(order)?, segment_ids: up(seg_ids)?, segment_offsets: up(offsets)? })
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// out (N, C) = table (V, C) [ids], on the table's device.
pub fn embedding(table: &Tensor, ids: &TokenIds) -> Tensor {
    let (v, c) = (table.shape[0], table.shape[1]);
    assert_eq!(v, ids.vocab, "embedding: a table of {v} rows for ids checked against {}", ids.vocab);
    let n = ids.len();
    let mut out = device_ok(Tensor::uninit_on(&[n, c], table.device()), "embedding");
    match &table.storage {
        Storage::Cpu(td) => embedding_forward(out.data_mut(), ids.ids.host(), td, c, v).expect("ids were checked by TokenIds::new"),
        Storage::Gpu(td) => {
            let g = gpu_of(table).clone();
            device_ok(gpu::embedding::forward(&g, gpu_vec_mut(&mut out, "embedding"), ids.ids.gpu_vec(), td, n, c), "embedding");
        }
    }
    out
}

/// The backward of [`embedding`]: dtable (V, C) [ids[i]] += dout (N, C) [i].
pub fn embedding_grad(dtable: &mut Tensor, dout: &Tensor, ids: &TokenIds) {
    let (v, c) = (dtable.shape[0], dtable.shape[1]);
    assert_eq!(v, ids.vocab, "embedding_grad: a table of {v} rows for ids checked against {}", ids.vocab);
    assert_eq!(dout.numel(), ids.len() * c, "embedding_grad: dout {:?} for {} ids of width {c}", dout.shape, ids.len());
    match &dout.storage {
        Storage::Cpu(g) => embedding_backward(dtable.data_mut(), g, ids.ids.host(), c, v).expect("ids were checked by TokenIds::new"),
        Storage::Gpu(g) => {
            let gpu = gpu_of(dout).clone();
            let r = gpu::embedding::backward(
                &gpu, gpu_vec_mut(dtable, "embedding_grad"), g, ids.order.gpu_vec(), ids.segment_ids.gpu_vec(), ids.segment_offsets.gpu_vec(), c,
            );
            device_ok(r, "embedding_grad");
        }
    }
}

/// Checks every id against the vocabulary size.
fn check_ids(ids: &[u32], vocab: usize) -> Result<()> {
    if let Some((pos, &id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
        bail!("embedding: id {id} at position {pos} is outside the table of {vocab} rows");
    }
    Ok(())
}

/// out (N, C) = table (V, C) [ids (N)].
pub fn embedding_forward(out: &mut [f32], ids: &[u32], table: &[f32], c: usize, vocab: usize) -> Result<()> {
    let n = ids.len();
    assert!(out.len() >= n * c && table.len() >= vocab * c, "embedding_forward: short buffers");
    check_ids(ids, vocab)?;
    for (row, &id) in out[..n * c].chunks_exact_mut(c).zip(ids) {
        let id = id as usize;
        row.copy_from_slice(&table[id * c..(id + 1) * c]);
    }
    Ok(())
}

/// dtable (V, C) [ids[i]] += dout (N, C) [i] (accumulated; repeated ids add up).
pub fn embedding_backward(dtable: &mut [f32], dout: &[f32], ids: &[u32], c: usize, vocab: usize) -> Result<()> {
    let n = ids.len();
    assert!(dout.len() >= n * c && dtable.len() >= vocab * c, "embedding_backward: short buffers");
    check_ids(ids, vocab)?;
    for (g, &id) in dout[..n * c].chunks_exact(c).zip(ids) {
        let id = id as usize;
        for (d, v) in dtable[id * c..(id + 1) * c].iter_mut().zip(g) {
            *d += v;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::{check_gradient, dot, random_vec};

    #[test]
    fn embedding_gathers_rows_and_rejects_bad_ids() {
        let table: Vec<f32> = (0..12).map(|v| v as f32).collect(); // (4, 3)
        let mut out = vec![0.0; 6];
        embedding_forward(&mut out, &[3, 0], &table, 3, 4).unwrap();
        assert_eq!(out, vec![9.0, 10.0, 11.0, 0.0, 1.0, 2.0]);
        let err = embedding_forward(&mut out, &[1, 4], &table, 3, 4).unwrap_err().to_string();
        assert!(err.contains("id 4 at position 1"), "{err}");
    }

    #[test]
    fn embedding_gradient_scatter_adds_repeated_ids() {
        let (v, c) = (5, 4);
        let ids = [2u32, 0, 2, 4, 2];
        let table = random_vec(v * c, 1, 1.0);
        let proj = random_vec(ids.len() * c, 2, 1.0);
        let mut dtable = vec![0.0; v * c];
        embedding_backward(&mut dtable, &proj, &ids, c, v).unwrap();
        assert!(dtable[c..2 * c].iter().all(|&g| g == 0.0), "unused row 1 gets no gradient");
        check_gradient("embedding dtable", &table, &dtable, |t| {
            let mut out = vec![0.0; ids.len() * c];
            embedding_forward(&mut out, &ids, t, c, v).unwrap();
            dot(&proj, &out)
        }, 1e-2, 1e-4, 1e-4);
    }
}
