//! `Dropout` layer: inverted dropout in training, identity in evaluation. It keeps no RNG state
//! and stores no mask: each forward's mask is a pure function of (the caller's per-step seed
//! `StepContext::dropout_seed`, this layer's stream, element index) — see `ops::dropout` — so it
//! is deterministic, different for every layer, the same on every device, exact on resume with
//! nothing extra in the checkpoint, and recomputed by the backward.

use super::saved;
use crate::engine::ops;
use crate::engine::tensor::{Module, Param, Tensor};

pub struct Dropout {
    pub p: f32,
    pub training: bool,
    /// ChaCha stream id; give every dropout layer of a model its own.
    pub stream: u64,
    seed: Option<Option<u64>>,  // the forward's seed; Some(None): identity forward (evaluation or p = 0)
}

impl Dropout {
    pub fn new(p: f32, stream: u64) -> Dropout {
        assert!((0.0..=1.0).contains(&p), "Dropout: p = {p} outside [0, 1]");
        Dropout { p, training: true, stream, seed: None }
    }

    /// y = dropout(x) with the mask drawn from (`seed`, this layer's stream).
    pub fn forward(&mut self, x: &Tensor, seed: u64) -> Tensor {
        if !self.training || self.p == 0.0 {
            self.seed = Some(None);
            return x.clone();
        }
        self.seed = Some(Some(seed));
        ops::dropout(x, self.p, seed, self.stream)
    }

    pub fn backward(&mut self, dout: &Tensor) -> Tensor {
        let Some(seed) = saved(&mut self.seed, "Dropout") else { return dout.clone() };
        ops::dropout_grad(dout, self.p, seed, self.stream)
    }
}

impl Module for Dropout {
    fn visit_params(&mut self, _f: &mut dyn FnMut(&mut Param)) {}
    fn set_training(&mut self, training: bool) {
        self.training = training;
    }
}
