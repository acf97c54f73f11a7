//! `Embedding`: a (V, C) table looked up by u32 ids; PyTorch init N(0, 1). Backward scatter-adds
//! into the table gradient; ids have no gradient. Out-of-range ids are an error naming the id.

use super::{no_cuda_kernel, saved};
use crate::engine::ops::embedding::{embedding_backward, embedding_forward};
use crate::engine::tensor::{Device, Module, Param, Tensor};
use anyhow::Result;
use rand::Rng;

pub struct Embedding {
    pub table: Param,  // (V, C)
    ids: Option<Vec<u32>>,
}

impl Embedding {
    /// Table `name.weight` of `vocab` rows × `dim`, N(0, 1) via Box–Muller from `rng`.
    pub fn new(name: &str, vocab: usize, dim: usize, rng: &mut impl Rng) -> Embedding {
        let data = (0..vocab * dim)
            .map(|_| {
                let (u1, u2): (f64, f64) = (1.0 - rng.random::<f64>(), rng.random());
                ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
            })
            .collect();
        Embedding { table: Param::new(format!("{name}.weight"), Tensor::from_vec(&[vocab, dim], data), true), ids: None }
    }

    pub fn vocab(&self) -> usize {
        self.table.value.shape[0]
    }
    pub fn dim(&self) -> usize {
        self.table.value.shape[1]
    }

    /// out (…, C) for ids of shape `shape` (…).
    pub fn forward(&mut self, ids: &[u32], shape: &[usize]) -> Result<Tensor> {
        assert_eq!(shape.iter().product::<usize>(), ids.len(), "Embedding: ids do not fill shape {shape:?}");
        let mut out_shape = shape.to_vec();
        out_shape.push(self.dim());
        let mut out = Tensor::zeros(&out_shape);
        match self.table.value.device() {
            Device::Cpu => embedding_forward(out.data_mut(), ids, self.table.value.data(), self.dim(), self.vocab())
                .map_err(|e| e.context(format!("embedding table {}", self.table.name)))?,
            Device::Cuda(_) | Device::CudaSim => no_cuda_kernel("Embedding"),
        }
        self.ids = Some(ids.to_vec());
        Ok(out)
    }

    /// table grad += scatter of dout (…, C).
    pub fn backward(&mut self, dout: &Tensor) -> Result<()> {
        let ids = saved(&mut self.ids, &self.table.name);
        let (c, v) = (self.dim(), self.vocab());
        match dout.device() {
            Device::Cpu => embedding_backward(self.table.grad.data_mut(), dout.data(), &ids, c, v),
            Device::Cuda(_) | Device::CudaSim => no_cuda_kernel("Embedding"),
        }
    }
}

impl Module for Embedding {
    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        f(&mut self.table);
    }
}
