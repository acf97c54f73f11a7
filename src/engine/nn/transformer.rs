//! `TransformerBlock`, pre-LN: h = x + Attn(LN₁(x)); y = h + W₂·act(W₁·LN₂(h)), with a key
//! padding mask for variable-length sequences (the DOS encoder: 128 wide, 8 heads × 64, FFN 512,
//! GELU). Children are named `<prefix>.ln1`, `.attn`, `.ln2`, `.fc1`, `.fc2`. Backward accumulates
//! every child's parameter grads and returns dx (residual branches summed).

use super::activation::{Act, Activation};
use super::attention::MultiHeadAttention;
use super::layernorm::LayerNorm;
use super::linear::Linear;
use super::{add, add_assign};
use crate::engine::ops::gelu::GeluKind;
use crate::engine::tensor::{Module, Param, Tensor};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Sizes and choices of one block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransformerConfig {
    pub dim: usize,
    pub heads: usize,
    pub head_size: usize,
    pub ffn_dim: usize,
    pub activation: Activation,
    pub ln_eps: f32,
    pub qkv_bias: bool,
}

impl TransformerConfig {
    /// The DOS encoder's block: 128 wide, 8 heads × 64, FFN 512, exact GELU.
    pub fn dos_reference() -> TransformerConfig {
        TransformerConfig {
            dim: 128,
            heads: 8,
            head_size: 64,
            ffn_dim: 512,
            activation: Activation::Gelu(GeluKind::Erf),
            ln_eps: 1e-5,
            qkv_bias: false,
        }
    }
}

pub struct TransformerBlock {
    pub ln1: LayerNorm,
    pub attn: MultiHeadAttention,
    pub ln2: LayerNorm,
    pub fc1: Linear,
    pub act: Act,
    pub fc2: Linear,
}

impl TransformerBlock {
    pub fn new(name: &str, cfg: &TransformerConfig, rng: &mut impl Rng) -> TransformerBlock {
        TransformerBlock {
            ln1: LayerNorm::new(&format!("{name}.ln1"), cfg.dim, cfg.ln_eps),
            attn: MultiHeadAttention::new(&format!("{name}.attn"), cfg.dim, cfg.heads, cfg.head_size, cfg.qkv_bias, rng),
            ln2: LayerNorm::new(&format!("{name}.ln2"), cfg.dim, cfg.ln_eps),
            fc1: Linear::new(&format!("{name}.fc1"), cfg.dim, cfg.ffn_dim, true, rng),
            act: Act::new(cfg.activation),
            fc2: Linear::new(&format!("{name}.fc2"), cfg.ffn_dim, cfg.dim, true, rng),
        }
    }

    /// y (B, T, C) from x (B, T, C); `key_valid` (B, T) marks real tokens.
    pub fn forward(&mut self, x: &Tensor, key_valid: Option<&[bool]>) -> Tensor {
        let a = self.ln1.forward(x);
        let a = self.attn.forward(&a, key_valid);
        let h = add(x, &a); // (B, T, C)
        let f = self.ln2.forward(&h);
        let f = self.fc1.forward(&f); // (B, T, F)
        let f = self.act.forward(&f);
        let f = self.fc2.forward(&f); // (B, T, C)
        add(&h, &f)
    }

    pub fn backward(&mut self, dout: &Tensor) -> Tensor {
        let g = self.fc2.backward(dout);
        let g = self.act.backward(&g);
        let g = self.fc1.backward(&g);
        let mut dh = self.ln2.backward(&g);
        add_assign(&mut dh, dout); // residual
        let g = self.attn.backward(&dh);
        let mut dx = self.ln1.backward(&g);
        add_assign(&mut dx, &dh); // residual
        dx
    }
}

impl Module for TransformerBlock {
    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        self.ln1.visit_params(f);
        self.attn.visit_params(f);
        self.ln2.visit_params(f);
        self.fc1.visit_params(f);
        self.fc2.visit_params(f);
    }
}
