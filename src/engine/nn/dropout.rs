//! `Dropout` layer: inverted dropout in training, identity in evaluation. It keeps no RNG state:
//! each forward draws its mask from ChaCha8 seeded with the caller's per-step seed
//! (`StepContext::dropout_seed`) on this layer's own stream, so masks are a pure function of
//! (step seed, layer) — deterministic, different for every layer, and exact on resume with
//! nothing extra in the checkpoint.

use super::{no_cuda_kernel, saved};
use crate::engine::ops::dropout::{dropout_backward, dropout_forward};
use crate::engine::tensor::{Device, Module, Param, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub struct Dropout {
    pub p: f32,
    pub training: bool,
    /// ChaCha stream id; give every dropout layer of a model its own.
    pub stream: u64,
    mask: Option<Option<Vec<bool>>>,  // Some(None): identity forward (evaluation or p = 0)
}

impl Dropout {
    pub fn new(p: f32, stream: u64) -> Dropout {
        assert!((0.0..=1.0).contains(&p), "Dropout: p = {p} outside [0, 1]");
        Dropout { p, training: true, stream, mask: None }
    }

    /// y = dropout(x) with the mask drawn from (`seed`, this layer's stream).
    pub fn forward(&mut self, x: &Tensor, seed: u64) -> Tensor {
        if !self.training || self.p == 0.0 {
            self.mask = Some(None);
            return x.clone();
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(self.stream);
        let mut out = Tensor::zeros(&x.shape);
        let mut mask = vec![false; x.numel()];
        match x.device() {
            Device::Cpu => dropout_forward(out.data_mut(), &mut mask, x.data(), self.p, &mut rng),
            Device::Cuda(_) | Device::CudaSim => no_cuda_kernel("Dropout"),
        }
        self.mask = Some(Some(mask));
        out
    }

    pub fn backward(&mut self, dout: &Tensor) -> Tensor {
        let Some(mask) = saved(&mut self.mask, "Dropout") else { return dout.clone() };
        let mut dx = Tensor::zeros(&dout.shape);
        match dout.device() {
            Device::Cpu => dropout_backward(dx.data_mut(), dout.data(), &mask, self.p),
            Device::Cuda(_) | Device::CudaSim => no_cuda_kernel("Dropout"),
        }
        dx
    }
}

impl Module for Dropout {
    fn visit_params(&mut self, _f: &mut dyn FnMut(&mut Param)) {}
    fn set_training(&mut self, training: bool) {
        self.training = training;
    }
}
