//! `Tensor`: an f32 buffer with a shape, living on a device. Model code is written against this
//! type once; ops dispatch on where the storage lives (`engine::ops`, one match per op). CPU
//! storage is a host `Vec<f32>`; GPU storage (CUDA or `cuda-sim`) is a `GpuVec<f32>` with no host
//! view: `data()` on it panics naming the device, so host access in device code fails in tests.

use super::backend::{gpu, GpuVec};
pub use super::backend::Device;
use anyhow::Result;

/// Backing storage. Ops match on this to pick the CPU reference or the GPU launcher.
#[derive(Clone, Debug)]
pub enum Storage {
    Cpu(Vec<f32>),
    Gpu(GpuVec<f32>),
}

/// A dense, row-major (C order) f32 tensor.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub storage: Storage,
}

impl Tensor {
    /// Zeros on the CPU.
    pub fn zeros(shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        Tensor { shape: shape.to_vec(), storage: Storage::Cpu(vec![0.0; n]) }
    }

    /// Zeros on `device`.
    pub fn zeros_on(shape: &[usize], device: Device) -> Result<Tensor> {
        match device {
            Device::Cpu => Ok(Tensor::zeros(shape)),
            d => Ok(Tensor { shape: shape.to_vec(), storage: Storage::Gpu(gpu(d)?.zeros(shape.iter().product())?) }),
        }
    }

    /// A tensor on `device` whose values the caller overwrites completely (no clearing pass on
    /// a GPU; zeros on the CPU).
    pub fn uninit_on(shape: &[usize], device: Device) -> Result<Tensor> {
        match device {
            Device::Cpu => Ok(Tensor::zeros(shape)),
            d => Ok(Tensor { shape: shape.to_vec(), storage: Storage::Gpu(gpu(d)?.uninit(shape.iter().product())?) }),
        }
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
        match &self.storage {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Gpu(v) => v.gpu().device,
        }
    }

    /// The same values on `device` (a copy; the same tensor cloned when it is already there).
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        let storage = match (&self.storage, device) {
            (Storage::Cpu(v), Device::Cpu) => Storage::Cpu(v.clone()),
            (Storage::Cpu(v), d) => Storage::Gpu(gpu(d)?.upload(v)?),
            (Storage::Gpu(v), Device::Cpu) => Storage::Cpu(v.gpu().download(v)?),
            (Storage::Gpu(v), d) if v.gpu().device == d => Storage::Gpu(v.try_clone()?),
            (Storage::Gpu(v), d) => Storage::Gpu(gpu(d)?.upload(&v.gpu().download(v)?)?),
        };
        Ok(Tensor { shape: self.shape.clone(), storage })
    }

    /// Like [`Tensor::to_device`], but a host → GPU copy goes through the device's staging pool
    /// (pinned buffers, asynchronous on `cuda`): the batch upload, which the pre-training prefetch
    /// thread runs while the previous step computes. Same values as `to_device`.
    pub fn to_device_staged(&self, device: Device) -> Result<Tensor> {
        match (&self.storage, device) {
            (Storage::Cpu(v), d) if d.is_gpu() => Ok(Tensor { shape: self.shape.clone(), storage: Storage::Gpu(gpu(d)?.upload_staged(v)?) }),
            _ => self.to_device(device),
        }
    }

    /// The values on the host (a real boundary: metrics, checkpoints, tests).
    pub fn to_host(&self) -> Result<Vec<f32>> {
        match &self.storage {
            Storage::Cpu(v) => Ok(v.clone()),
            Storage::Gpu(v) => v.gpu().download(v),
        }
    }

    /// The device buffer of a GPU tensor (launchers pass its address to kernels).
    pub fn gpu_vec(&self) -> &GpuVec<f32> {
        match &self.storage {
            Storage::Gpu(v) => v,
            Storage::Cpu(_) => panic!("gpu_vec() on a CPU tensor {:?}", self.shape),
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Size of dimension `d`; negative-style access via `dim(self.shape.len() - 1)`.
    pub fn dim(&self, d: usize) -> usize {
        self.shape[d]
    }

    /// Host view of the data. CPU storage only: a device tensor must be copied with `to_host`
    /// first, and asking for its host view is a bug that panics here, naming the device.
    pub fn data(&self) -> &[f32] {
        match &self.storage {
            Storage::Cpu(v) => v,
            Storage::Gpu(v) => host_access_panic(v),
        }
    }

    pub fn data_mut(&mut self) -> &mut [f32] {
        match &mut self.storage {
            Storage::Cpu(v) => v,
            Storage::Gpu(v) => host_access_panic(v),
        }
    }

    pub fn into_vec(self) -> Vec<f32> {
        match self.storage {
            Storage::Cpu(v) => v,
            Storage::Gpu(v) => host_access_panic(&v),
        }
    }

    /// Same data, new shape (element count must match).
    pub fn reshape(mut self, shape: &[usize]) -> Tensor {
        assert_eq!(shape.iter().product::<usize>(), self.numel(), "reshape {:?} -> {:?}", self.shape, shape);
        self.shape = shape.to_vec();
        self
    }

    /// Every value set to `v`, on whatever device the tensor lives.
    pub fn fill(&mut self, v: f32) {
        match &mut self.storage {
            Storage::Cpu(d) => d.iter_mut().for_each(|x| *x = v),
            Storage::Gpu(_) => super::ops::fill(self, v),
        }
    }
}

fn host_access_panic(v: &GpuVec<f32>) -> ! {
    panic!("host access to a tensor on {}: device code must use engine::ops, and host code must copy it with to_host() first", v.gpu().device)
}

/// Integer data that ops read on the tensor's device: edge endpoints, token ids, segment
/// offsets, padding masks (1 = valid). Uploaded once per batch (a real boundary), then passed to
/// ops alongside the tensors.
#[derive(Clone, Debug)]
pub enum Indices {
    Cpu(Vec<u32>),
    Gpu(GpuVec<u32>),
}

impl Indices {
    pub fn len(&self) -> usize {
        match self {
            Indices::Cpu(v) => v.len(),
            Indices::Gpu(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn device(&self) -> Device {
        match self {
            Indices::Cpu(_) => Device::Cpu,
            Indices::Gpu(v) => v.gpu().device,
        }
    }

    /// The same values on `device`.
    pub fn to_device(&self, device: Device) -> Result<Indices> {
        Ok(match (self, device) {
            (Indices::Cpu(v), Device::Cpu) => Indices::Cpu(v.clone()),
            (Indices::Cpu(v), d) => Indices::Gpu(gpu(d)?.upload(v)?),
            (Indices::Gpu(v), Device::Cpu) => Indices::Cpu(v.gpu().download(v)?),
            (Indices::Gpu(v), d) if v.gpu().device == d => Indices::Gpu(v.try_clone()?),
            (Indices::Gpu(v), d) => Indices::Gpu(gpu(d)?.upload(&v.gpu().download(v)?)?),
        })
    }

    /// Like [`Indices::to_device`], through the staging pool for a host → GPU copy (see
    /// [`Tensor::to_device_staged`]).
    pub fn to_device_staged(&self, device: Device) -> Result<Indices> {
        match (self, device) {
            (Indices::Cpu(v), d) if d.is_gpu() => Ok(Indices::Gpu(gpu(d)?.upload_staged(v)?)),
            _ => self.to_device(device),
        }
    }

    /// Host view (CPU only; like `Tensor::data`, a device access is a bug that panics).
    pub fn host(&self) -> &[u32] {
        match self {
            Indices::Cpu(v) => v,
            Indices::Gpu(v) => panic!("host access to indices on {}: copy them with to_device(Device::Cpu) first", v.gpu().device),
        }
    }

    /// The device buffer (GPU only).
    pub fn gpu_vec(&self) -> &GpuVec<u32> {
        match self {
            Indices::Gpu(v) => v,
            Indices::Cpu(_) => panic!("gpu_vec() on CPU indices"),
        }
    }

    /// A padding mask (true = valid) as 1/0 values.
    pub fn from_mask(mask: &[bool]) -> Indices {
        Indices::Cpu(mask.iter().map(|&b| b as u32).collect())
    }

    /// Mutable host values, for building a batch on the host (CPU only, like [`Indices::host`]).
    pub fn host_mut(&mut self) -> &mut Vec<u32> {
        match self {
            Indices::Cpu(v) => v,
            Indices::Gpu(v) => panic!("host access to indices on {}: copy them with to_device(Device::Cpu) first", v.gpu().device),
        }
    }
}

/// No indices, on the CPU (an empty edge list).
impl Default for Indices {
    fn default() -> Indices {
        Indices::Cpu(Vec::new())
    }
}

impl From<Vec<u32>> for Indices {
    fn from(v: Vec<u32>) -> Indices {
        Indices::Cpu(v)
    }
}

impl FromIterator<u32> for Indices {
    fn from_iter<I: IntoIterator<Item = u32>>(it: I) -> Indices {
        Indices::Cpu(it.into_iter().collect())
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

    /// Moves every parameter (value and gradient) and buffer to `device`. Saved activations
    /// are transient and follow the inputs of the next forward.
    fn to_device(&mut self, device: Device) -> Result<()> {
        let mut err = None;
        self.visit_params(&mut |p| {
            if err.is_none() {
                match (p.value.to_device(device), p.grad.to_device(device)) {
                    (Ok(v), Ok(g)) => (p.value, p.grad) = (v, g),
                    (Err(e), _) | (_, Err(e)) => err = Some(e.context(format!("moving {} to {device}", p.name))),
                }
            }
        });
        self.visit_buffers(&mut |name, b| {
            if err.is_none() {
                match b.to_device(device) {
                    Ok(v) => *b = v,
                    Err(e) => err = Some(e.context(format!("moving buffer {name} to {device}"))),
                }
            }
        });
        err.map_or(Ok(()), Err)
    }

    fn num_params(&mut self) -> usize {
        let mut n = 0;
        self.visit_params(&mut |p| n += p.value.numel());
        n
    }
}
