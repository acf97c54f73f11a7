//! `Dropout` layer: inverted dropout in training, identity in evaluation. Masks come from the
//! layer's own ChaCha8 stream seeded at construction, so a run is deterministic for a given seed;
//! the stream position (`rng.get_word_pos()`) is what a checkpoint must store to resume exactly.

use super::{no_cuda_kernel, saved};
use crate::engine::ops::dropout::{dropout_backward, dropout_forward};
use crate::engine::tensor::{Device, Module, Param, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub struct Dropout {
    pub p: f32,
    pub training: bool,
    pub rng: ChaCha8Rng,
    mask: Option<Option<Vec<bool>>>,  // Some(None): evaluation-mode forward (identity)
}

impl Dropout {
    pub fn new(p: f32, seed: u64) -> Dropout {
        assert!((0.0..=1.0).contains(&p), "Dropout: p = {p} outside [0, 1]");
        Dropout { p, training: true, rng: ChaCha8Rng::seed_from_u64(seed), mask: None }
    }

    pub fn forward(&mut self, x: &Tensor) -> Tensor {
        if !self.training || self.p == 0.0 {
            self.mask = Some(None);
            return x.clone();
        }
        let mut out = Tensor::zeros(&x.shape);
        let mut mask = vec![false; x.numel()];
        match x.device() {
            Device::Cpu => dropout_forward(out.data_mut(), &mut mask, x.data(), self.p, &mut self.rng),
            Device::Cuda(_) => no_cuda_kernel("Dropout"),
        }
        self.mask = Some(Some(mask));
        out
    }

    pub fn backward(&mut self, dout: &Tensor) -> Tensor {
        let Some(mask) = saved(&mut self.mask, "Dropout") else { return dout.clone() };
        let mut dx = Tensor::zeros(&dout.shape);
        match dout.device() {
            Device::Cpu => dropout_backward(dx.data_mut(), dout.data(), &mask, self.p),
            Device::Cuda(_) => no_cuda_kernel("Dropout"),
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
