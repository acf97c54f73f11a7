//! `LayerNorm` over the last dimension (PyTorch `nn.LayerNorm`, elementwise affine): weight 1,
//! bias 0 at init, neither decays under AdamW. Saves the input, mean and rstd per row.
//! Backward accumulates dweight, dbias and returns dx. Runs on the input's device
//! (`ops::layernorm`).

use super::{rows_and_features, saved};
use crate::engine::ops;
use crate::engine::tensor::{Module, Param, Tensor};

pub struct LayerNorm {
    pub weight: Param,  // (C)
    pub bias: Param,    // (C)
    pub eps: f32,
    saved: Option<(Tensor, Tensor, Tensor)>,  // input (N, C), mean (N), rstd (N)
}

impl LayerNorm {
    pub fn new(name: &str, features: usize, eps: f32) -> LayerNorm {
        LayerNorm {
            weight: Param::new(format!("{name}.weight"), Tensor::from_vec(&[features], vec![1.0; features]), false),
            bias: Param::new(format!("{name}.bias"), Tensor::zeros(&[features]), false),
            eps,
            saved: None,
        }
    }

    pub fn features(&self) -> usize {
        self.weight.value.numel()
    }

    /// y (…, C) = layernorm(x (…, C)).
    pub fn forward(&mut self, x: &Tensor) -> Tensor {
        rows_and_features(x, &self.weight.name, self.features());
        let (out, mean, rstd) = ops::layernorm(x, &self.weight.value, &self.bias.value, self.eps);
        self.saved = Some((x.clone(), mean, rstd));
        out
    }

    pub fn backward(&mut self, dout: &Tensor) -> Tensor {
        let (x, mean, rstd) = saved(&mut self.saved, &self.weight.name);
        rows_and_features(dout, &self.weight.name, self.features());
        ops::layernorm_grad(dout, &x, &self.weight.value, &mean, &rstd, &mut self.weight.grad, &mut self.bias.grad)
    }
}

impl Module for LayerNorm {
    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        f(&mut self.weight);
        f(&mut self.bias);
    }
}
