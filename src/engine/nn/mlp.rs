//! `Mlp`: a stack of Linear layers with an activation between them (and optionally after the
//! last), e.g. the text encoder 768→512→512→128 with ReLU, or PotNet's 768→256→256 SiLU MLPs.
//! Parameters are named `<prefix>.<i>.weight` / `.bias` for the i-th Linear.

use super::activation::{Act, Activation};
use super::linear::Linear;
use crate::engine::tensor::{Module, Param, Tensor};
use rand::Rng;

pub struct Mlp {
    pub layers: Vec<Linear>,
    pub acts: Vec<Act>,  // one per hidden layer, plus one after the last if `activate_last`
}

impl Mlp {
    /// `dims` = [in, hidden…, out] (at least two entries); `activation` between layers and after
    /// the last one when `activate_last`.
    pub fn new(name: &str, dims: &[usize], activation: Activation, activate_last: bool, bias: bool, rng: &mut impl Rng) -> Mlp {
        assert!(dims.len() >= 2, "Mlp {name}: needs at least [in, out] dims, got {dims:?}");
        let layers: Vec<Linear> =
            dims.windows(2).enumerate().map(|(i, w)| Linear::new(&format!("{name}.{i}"), w[0], w[1], bias, rng)).collect();
        let n_acts = layers.len() - 1 + activate_last as usize;
        let acts = (0..n_acts).map(|_| Act::new(activation)).collect();
        Mlp { layers, acts }
    }

    pub fn forward(&mut self, x: &Tensor) -> Tensor {
        let mut h = x.clone();
        for i in 0..self.layers.len() {
            h = self.layers[i].forward(&h);
            if i < self.acts.len() {
                h = self.acts[i].forward(&h);
            }
        }
        h
    }

    pub fn backward(&mut self, dout: &Tensor) -> Tensor {
        let mut g = dout.clone();
        for i in (0..self.layers.len()).rev() {
            if i < self.acts.len() {
                g = self.acts[i].backward(&g);
            }
            g = self.layers[i].backward(&g);
        }
        g
    }
}

impl Module for Mlp {
    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        for l in &mut self.layers {
            l.visit_params(f);
        }
    }
}
