//! Activation functions as a value (`Activation`, chosen in configs) and as a layer (`Act`, which
//! saves its input for the backward). No parameters.

use super::{no_cuda_kernel, saved};
use crate::engine::ops::activation::*;
use crate::engine::ops::gelu::{gelu_backward, gelu_forward, GeluKind};
use crate::engine::tensor::{Device, Module, Param, Tensor};
use serde::{Deserialize, Serialize};

/// A pointwise nonlinearity.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Identity,
    Relu,
    Sigmoid,
    Silu,
    Gelu(GeluKind),
    /// PyTorch `Softplus(beta, threshold)`; defaults 1 and 20.
    Softplus { beta: f32, threshold: f32 },
}

impl Activation {
    /// PyTorch's default softplus.
    pub const SOFTPLUS: Activation = Activation::Softplus { beta: 1.0, threshold: 20.0 };

    /// out = act(inp), same length.
    pub fn forward(self, out: &mut [f32], inp: &[f32]) {
        match self {
            Activation::Identity => out.copy_from_slice(inp),
            Activation::Relu => relu_forward(out, inp),
            Activation::Sigmoid => sigmoid_forward(out, inp),
            Activation::Silu => silu_forward(out, inp),
            Activation::Gelu(k) => gelu_forward(out, inp, k),
            Activation::Softplus { beta, threshold } => softplus_forward(out, inp, beta, threshold),
        }
    }

    /// dinp = act'(inp) · dout (written).
    pub fn backward(self, dinp: &mut [f32], dout: &[f32], inp: &[f32]) {
        match self {
            Activation::Identity => dinp.copy_from_slice(dout),
            Activation::Relu => relu_backward(dinp, dout, inp),
            Activation::Sigmoid => sigmoid_backward(dinp, dout, inp),
            Activation::Silu => silu_backward(dinp, dout, inp),
            Activation::Gelu(k) => gelu_backward(dinp, dout, inp, k),
            Activation::Softplus { beta, threshold } => softplus_backward(dinp, dout, inp, beta, threshold),
        }
    }
}

/// An activation layer: saves its input.
pub struct Act {
    pub kind: Activation,
    input: Option<Tensor>,
}

impl Act {
    pub fn new(kind: Activation) -> Act {
        Act { kind, input: None }
    }

    pub fn forward(&mut self, x: &Tensor) -> Tensor {
        let mut out = Tensor::zeros(&x.shape);
        match x.device() {
            Device::Cpu => self.kind.forward(out.data_mut(), x.data()),
            Device::Cuda(_) | Device::CudaSim => no_cuda_kernel("Act"),
        }
        self.input = Some(x.clone());
        out
    }

    pub fn backward(&mut self, dout: &Tensor) -> Tensor {
        let x = saved(&mut self.input, "Act");
        assert_eq!(dout.shape, x.shape, "Act: dout shape differs from the input's");
        let mut dx = Tensor::zeros(&x.shape);
        match dout.device() {
            Device::Cpu => self.kind.backward(dx.data_mut(), dout.data(), x.data()),
            Device::Cuda(_) | Device::CudaSim => no_cuda_kernel("Act"),
        }
        dx
    }
}

impl Module for Act {
    fn visit_params(&mut self, _f: &mut dyn FnMut(&mut Param)) {}
}
