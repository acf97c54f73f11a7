//! `MultiHeadAttention`: packed qkv projection C → 3·H·hs, masked scaled dot-product attention
//! per head (`ops::attention`), output projection H·hs → C. The head size is free (BERT: C/H; the
//! DOS Transformer: 8 × 64 on a 128-wide model). Saves the packed qkv and each score row's
//! log-sum-exp, not the (B, H, T, T) probabilities. Backward accumulates the projections' grads
//! and returns dx.

use super::linear::Linear;
use super::{no_cuda_kernel, saved};
use crate::engine::ops::attention::{attention_backward, attention_forward, AttnDims};
use crate::engine::tensor::{Device, Module, Param, Tensor};
use rand::Rng;

struct Saved {
    qkv: Tensor,                   // (B, T, 3·H·hs)
    lse: Vec<f32>,                 // (B, H, T)
    key_valid: Option<Vec<bool>>,  // (B, T)
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
    pub fn forward(&mut self, x: &Tensor, key_valid: Option<&[bool]>) -> Tensor {
        assert_eq!(x.shape.len(), 3, "{}: input must be (B, T, C), got {:?}", self.qkv.weight.name, x.shape);
        let dims = AttnDims { b: x.shape[0], t: x.shape[1], h: self.heads, hs: self.head_size };
        let qkv = self.qkv.forward(x); // (B, T, 3·H·hs)
        let mut att = Tensor::zeros(&[dims.b, dims.t, dims.inner()]);
        let mut lse = vec![0.0f32; dims.b * dims.h * dims.t];
        match x.device() {
            Device::Cpu => attention_forward(att.data_mut(), &mut lse, qkv.data(), key_valid, dims),
            Device::Cuda(_) | Device::CudaSim => no_cuda_kernel("MultiHeadAttention"),
        }
        self.saved = Some(Saved { qkv, lse, key_valid: key_valid.map(|m| m.to_vec()), dims });
        self.proj.forward(&att)
    }

    pub fn backward(&mut self, dout: &Tensor) -> Tensor {
        let datt = self.proj.backward(dout); // (B, T, H·hs)
        let sv = saved(&mut self.saved, &self.qkv.weight.name);
        let mut dqkv = Tensor::zeros(&sv.qkv.shape);
        match dout.device() {
            Device::Cpu => attention_backward(dqkv.data_mut(), datt.data(), sv.qkv.data(), &sv.lse, sv.key_valid.as_deref(), sv.dims),
            Device::Cuda(_) | Device::CudaSim => no_cuda_kernel("MultiHeadAttention"),
        }
        self.qkv.backward(&dqkv)
    }
}

impl Module for MultiHeadAttention {
    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        self.qkv.visit_params(f);
        self.proj.visit_params(f);
    }
}
