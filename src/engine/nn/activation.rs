//! Activation functions as a value (`Activation`, chosen in configs; defined with the ops in
//! `ops::activation`) and as a layer (`Act`, which saves its input for the backward). No
//! parameters. Runs on the input's device (`ops::activate`).

use super::saved;
use crate::engine::ops;
pub use crate::engine::ops::activation::Activation;
use crate::engine::tensor::{Module, Param, Tensor};

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
        let out = ops::activate(self.kind, x);
        self.input = Some(x.clone());
        out
    }

    pub fn backward(&mut self, dout: &Tensor) -> Tensor {
        let x = saved(&mut self.input, "Act");
        assert_eq!(dout.shape, x.shape, "Act: dout shape differs from the input's");
        ops::activate_grad(self.kind, dout, &x)
    }
}

impl Module for Act {
    fn visit_params(&mut self, _f: &mut dyn FnMut(&mut Param)) {}
}
