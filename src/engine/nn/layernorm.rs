//! `LayerNorm` over the last dimension (PyTorch `nn.LayerNorm`, elementwise affine): weight 1,
//! bias 0 at init, neither decays under AdamW. Saves the input, mean and rstd per row.
//! Backward accumulates dweight, dbias and returns dx.

use super::{no_cuda_kernel, rows_and_features, saved};
use crate::engine::ops::layernorm::{layernorm_backward, layernorm_forward};
use crate::engine::tensor::{Device, Module, Param, Tensor};

pub struct LayerNorm {
    pub weight: Param,  // (C)
    pub bias: Param,    // (C)
    pub eps: f32,
    saved: Option<(Tensor, Vec<f32>, Vec<f32>)>,  // input (N, C), mean (N), rstd (N)
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
        let c = self.features();
        let n = rows_and_features(x, &self.weight.name, c);
        let mut out = Tensor::zeros(&x.shape);
        let (mut mean, mut rstd) = (vec![0.0; n], vec![0.0; n]);
        match x.device() {
            Device::Cpu => layernorm_forward(
                out.data_mut(), &mut mean, &mut rstd, x.data(), self.weight.value.data(), self.bias.value.data(), n, c, self.eps,
            ),
            Device::Cuda(_) | Device::CudaSim => no_cuda_kernel("LayerNorm"),
        }
        self.saved = Some((x.clone(), mean, rstd));
        out
    }

    pub fn backward(&mut self, dout: &Tensor) -> Tensor {
        let (x, mean, rstd) = saved(&mut self.saved, &self.weight.name);
        let c = self.features();
        let n = rows_and_features(dout, &self.weight.name, c);
        let mut dx = Tensor::zeros(&x.shape);
        match dout.device() {
            Device::Cpu => layernorm_backward(
                dx.data_mut(), self.weight.grad.data_mut(), self.bias.grad.data_mut(), dout.data(), x.data(),
                self.weight.value.data(), &mean, &rstd, n, c,
            ),
            Device::Cuda(_) | Device::CudaSim => no_cuda_kernel("LayerNorm"),
        }
        dx
    }
}

impl Module for LayerNorm {
    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        f(&mut self.weight);
        f(&mut self.bias);
    }
}
