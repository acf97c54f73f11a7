//! `MultiHeadAttention`: packed qkv projection C → 3·H·hs, masked scaled dot-product attention
//! per head (`ops::attention`), output projection H·hs → C. The head size is free (BERT: C/H; the
//! DOS Transformer: 8 × 64 on a 128-wide model). Saves the packed qkv and each score row's
//! log-sum-exp, not the (B, H, T, T) probabilities. Backward accumulates the projections' grads
//! and returns dx. Runs on the input's device; the key mask is on the same device.

use super::linear::Linear;
use super::saved;
use crate::engine::ops;
use crate::engine::ops::attention::AttnDims;
use crate::engine::tensor::{Indices, Module, Param, Tensor};
use rand::Rng;

struct Saved {
    qkv: Tensor,                  // (B, T, 3·H·hs)
    lse: Tensor,                  // (B, H, T)
    key_valid: Option<Indices>,   // (B, T), 1 = real token
    dims: AttnDims,
}

pub struct MultiHeadAttention {
    pub qkv: Linear,   // (3·H·hs, C)
    pub proj: Linear,  // (C, H·hs)
    pub heads: usize,
    pub head_size: usize,
    saved: Option<Saved>,
}

impl MultiHeadAttention {
    /// Params `name.qkv.{weight,bias}` and `name.proj.{weight,bias}`; `qkv_bias` as the reference.
    pub fn new(name: &str, dim: usize, heads: usize, head_size: usize, qkv_bias: bool, rng: &mut impl Rng) -> MultiHeadAttention {
        let inner = heads * head_size;
        MultiHeadAttention {
            qkv: Linear::new(&format!("{name}.qkv"), dim, 3 * inner, qkv_bias, rng),
            proj: Linear::new(&format!("{name}.proj"), inner, dim, true, rng),
            heads,
            head_size,
            saved: None,
        }
    }

    /// y (B, T, C) = attention(x (B, T, C)) with `key_valid` (B, T) marking real tokens.
    pub fn forward(&mut self, x: &Tensor, key_valid: Option<&Indices>) -> Tensor {
        assert_eq!(x.shape.len(), 3, "{}: input must be (B, T, C), got {:?}", self.qkv.weight.name, x.shape);
        let dims = AttnDims { b: x.shape[0], t: x.shape[1], h: self.heads, hs: self.head_size };
        let qkv = self.qkv.forward(x); // (B, T, 3·H·hs)
        let (att, lse) = ops::attention(&qkv, key_valid, dims);
        self.saved = Some(Saved { qkv, lse, key_valid: key_valid.cloned(), dims });
        self.proj.forward(&att)
    }

    pub fn backward(&mut self, dout: &Tensor) -> Tensor {
        let datt = self.proj.backward(dout); // (B, T, H·hs)
        let sv = saved(&mut self.saved, &self.qkv.weight.name);
        let dqkv = ops::attention_grad(&datt, &sv.qkv, &sv.lse, sv.key_valid.as_ref(), sv.dims);
        self.qkv.backward(&dqkv)
    }
}

impl Module for MultiHeadAttention {
    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        self.qkv.visit_params(f);
        self.proj.visit_params(f);
    }
}
