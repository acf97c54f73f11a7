//! `Tensor`: an f32 buffer with a shape, living on a device. Model code is written against this
//! type once; ops dispatch on where the storage lives. Only the CPU storage exists today; the CUDA
//! variant (cudarc `CudaSlice<f32>`) slots into `Storage` behind the `cuda` feature.

use serde::{Deserialize, Serialize};

/// Where a tensor's storage lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Device {
    Cpu,
    /// CUDA device ordinal (requires the `cuda` feature and a driver at run time).
    Cuda(usize),
}

/// Backing storage. Ops match on this to pick the CPU reference or a device kernel.
#[derive(Clone, Debug)]
pub enum Storage {
    Cpu(Vec<f32>),
}

/// A dense, row-major (C order) f32 tensor.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub storage: Storage,
}

impl Tensor {
    pub fn zeros(shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        Tensor { shape: shape.to_vec(), storage: Storage::Cpu(vec![0.0; n]) }
    }

    pub fn from_vec(shape: &[usize], data: Vec<f32>) -> Tensor {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "Tensor::from_vec: shape {:?} needs {} values, got {}",
            shape,
            shape.iter().product::<usize>(),
            data.len()
        );
        Tensor { shape: shape.to_vec(), storage: Storage::Cpu(data) }
    }

    pub fn device(&self) -> Device {
        match self.storage {
            Storage::Cpu(_) => Device::Cpu,
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Size of dimension `d`; negative-style access via `dim(self.shape.len() - 1)`.
    pub fn dim(&self, d: usize) -> usize {
        self.shape[d]
    }

    /// Host view of the data. CPU storage only; device tensors must be copied first.
    pub fn data(&self) -> &[f32] {
        match &self.storage {
            Storage::Cpu(v) => v,
        }
    }

    pub fn data_mut(&mut self) -> &mut [f32] {
        match &mut self.storage {
            Storage::Cpu(v) => v,
        }
    }

    pub fn into_vec(self) -> Vec<f32> {
        match self.storage {
            Storage::Cpu(v) => v,
        }
    }

    /// Same data, new shape (element count must match).
    pub fn reshape(mut self, shape: &[usize]) -> Tensor {
        assert_eq!(shape.iter().product::<usize>(), self.numel(), "reshape {:?} -> {:?}", self.shape, shape);
        self.shape = shape.to_vec();
        self
    }

    pub fn fill(&mut self, v: f32) {
        self.data_mut().iter_mut().for_each(|x| *x = v);
    }
}

/// A trainable parameter: value, accumulated gradient, and whether AdamW applies weight decay to
/// it (the reference excludes biases and normalisation parameters).
#[derive(Clone, Debug)]
pub struct Param {
    /// Hierarchical name, e.g. "crystal.conv.0.mlp_a.0.weight" — the key in checkpoints.
    pub name: String,
    pub value: Tensor,
    pub grad: Tensor,
    pub decay: bool,
}

impl Param {
    pub fn new(name: impl Into<String>, value: Tensor, decay: bool) -> Param {
        let grad = Tensor::zeros(&value.shape);
        Param { name: name.into(), value, grad, decay }
    }

    pub fn zero_grad(&mut self) {
        self.grad.fill(0.0);
    }
}

/// Anything that owns parameters. Layers and whole encoders implement it so that optimisers,
/// checkpoints and gradient all-reduce can walk every parameter in a fixed order.
pub trait Module {
    /// Visit every parameter in a deterministic order.
    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param));

    /// Visit every non-trainable state tensor that a checkpoint must carry (batch-norm running
    /// statistics), with its hierarchical name, in a deterministic order. Default: none.
    fn visit_buffers(&mut self, _f: &mut dyn FnMut(&str, &mut Tensor)) {}

    /// Switch training behaviour (batch statistics, dropout) on or off. Default: no behaviour to
    /// switch. Composite modules forward the call to every child.
    fn set_training(&mut self, _training: bool) {}

    /// Names of all parameters in visiting order.
    fn param_names(&mut self) -> Vec<String> {
        let mut names = Vec::new();
        self.visit_params(&mut |p| names.push(p.name.clone()));
        names
    }

    fn zero_grad(&mut self) {
        self.visit_params(&mut |p| p.zero_grad());
    }

    fn num_params(&mut self) -> usize {
        let mut n = 0;
        self.visit_params(&mut |p| n += p.value.numel());
        n
    }
}
