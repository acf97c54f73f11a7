//! `Embedding`: a (V, C) table looked up by u32 ids; PyTorch init N(0, 1). Backward scatter-adds
//! into the table gradient; ids have no gradient. Out-of-range ids are an error naming the id.
//! Runs on the table's device (`ops::embedding`); the ids, host batch data, are checked and
//! uploaded there by the forward.

use super::saved;
use crate::engine::ops;
use crate::engine::ops::embedding::TokenIds;
use crate::engine::tensor::{Module, Param, Tensor};
use anyhow::Result;
use rand::Rng;

pub struct Embedding {
    pub table: Param,  // (V, C)
    ids: Option<TokenIds>,
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
        let ids = TokenIds::new(ids, self.vocab(), self.table.value.device())
            .map_err(|e| e.context(format!("embedding table {}", self.table.name)))?;
        let mut out_shape = shape.to_vec();
        out_shape.push(self.dim());
        let out = ops::embedding(&self.table.value, &ids).reshape(&out_shape);
        self.ids = Some(ids);
        Ok(out)
    }

    /// table grad += scatter of dout (…, C).
    pub fn backward(&mut self, dout: &Tensor) -> Result<()> {
        let ids = saved(&mut self.ids, &self.table.name);
        ops::embedding_grad(&mut self.table.grad, dout, &ids);
        Ok(())
    }
}

impl Module for Embedding {
    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        f(&mut self.table);
    }
}
