//! `TransformerBlock` with a key padding mask for variable-length sequences, in either layout
//! (PyTorch's `norm_first`):
//! - pre-LN (`norm_first = true`, the DOS encoder: 128 wide, 8 heads × 64, FFN 512, GELU):
//!   h = x + Attn(LN₁(x)); y = h + FFN(LN₂(h));
//! - post-LN (`norm_first = false`, BERT): h = LN₁(x + Attn(x)); y = LN₂(h + FFN(h));
//!
//! with FFN(z) = W₂·act(W₁·z). Children are named `<prefix>.ln1`, `.attn`, `.ln2`, `.fc1`, `.fc2`.
//! Backward accumulates every child's parameter grads and returns dx (residual branches summed).
//! Every step is a tensor-level op (through the child layers), so the block runs on the device its
//! input and parameters live on.

use super::activation::{Act, Activation};
use super::attention::MultiHeadAttention;
use super::layernorm::LayerNorm;
use super::linear::Linear;
use super::{add, add_assign};
use crate::engine::ops::gelu::GeluKind;
use crate::engine::tensor::{Indices, Module, Param, Tensor};
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
    /// Pre-LN (true) or post-LN (false, BERT).
    pub norm_first: bool,
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
            norm_first: true,
        }
    }
}

pub struct TransformerBlock {
    pub norm_first: bool,
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
            norm_first: cfg.norm_first,
            ln1: LayerNorm::new(&format!("{name}.ln1"), cfg.dim, cfg.ln_eps),
            attn: MultiHeadAttention::new(&format!("{name}.attn"), cfg.dim, cfg.heads, cfg.head_size, cfg.qkv_bias, rng),
            ln2: LayerNorm::new(&format!("{name}.ln2"), cfg.dim, cfg.ln_eps),
            fc1: Linear::new(&format!("{name}.fc1"), cfg.dim, cfg.ffn_dim, true, rng),
            act: Act::new(cfg.activation),
            fc2: Linear::new(&format!("{name}.fc2"), cfg.ffn_dim, cfg.dim, true, rng),
        }
    }

    /// y (B, T, C) from x (B, T, C); `key_valid` (B, T) marks real tokens (1), on x's device.
    pub fn forward(&mut self, x: &Tensor, key_valid: Option<&Indices>) -> Tensor {
        if self.norm_first {
            let a = self.ln1.forward(x);
            let a = self.attn.forward(&a, key_valid);
            let h = add(x, &a); // (B, T, C)
            let f = self.ln2.forward(&h);
            let f = self.ffn_forward(&f);
            add(&h, &f)
        } else {
            let a = self.attn.forward(x, key_valid);
            let h = self.ln1.forward(&add(x, &a)); // (B, T, C)
            let f = self.ffn_forward(&h);
            self.ln2.forward(&add(&h, &f))
        }
    }

    pub fn backward(&mut self, dout: &Tensor) -> Tensor {
        if self.norm_first {
            let g = self.ffn_backward(dout);
            let mut dh = self.ln2.backward(&g);
            add_assign(&mut dh, dout); // residual
            let mut dx = self.ln1.backward(&self.attn.backward(&dh));
            add_assign(&mut dx, &dh); // residual
            dx
        } else {
            let dsum2 = self.ln2.backward(dout); // d(h + FFN(h))
            let mut dh = self.ffn_backward(&dsum2);
            add_assign(&mut dh, &dsum2);
            let dsum1 = self.ln1.backward(&dh); // d(x + Attn(x))
            let mut dx = self.attn.backward(&dsum1);
            add_assign(&mut dx, &dsum1);
            dx
        }
    }

    /// (B, T, C) → (B, T, F) → act → (B, T, C)
    fn ffn_forward(&mut self, z: &Tensor) -> Tensor {
        let f = self.fc1.forward(z);
        let f = self.act.forward(&f);
        self.fc2.forward(&f)
    }

    fn ffn_backward(&mut self, dout: &Tensor) -> Tensor {
        let g = self.fc2.backward(dout);
        let g = self.act.backward(&g);
        self.fc1.backward(&g)
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
