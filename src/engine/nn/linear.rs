//! `Linear`: y = x·Wᵀ + b over the last dimension, PyTorch layout (W is (out, in)) and PyTorch's
//! default initialisation: kaiming-uniform with a = √5, i.e. W ~ U(±1/√fan_in), and b ~ U(±1/√fan_in).
//! Weights decay under AdamW, biases do not. Backward accumulates dW, db and returns dx.

use super::{rows_and_features, saved};
use crate::engine::ops;
use crate::engine::tensor::{Module, Param, Tensor};
use rand::Rng;

pub struct Linear {
    pub weight: Param,        // (OC, C)
    pub bias: Option<Param>,  // (OC)
    pub in_features: usize,
    pub out_features: usize,
    input: Option<Tensor>,    // (N, C) saved for dW
}

impl Linear {
    /// A layer named `name` (params `name.weight`, `name.bias`) initialised from `rng`.
    pub fn new(name: &str, in_features: usize, out_features: usize, bias: bool, rng: &mut impl Rng) -> Linear {
        let bound = 1.0 / (in_features.max(1) as f32).sqrt();
        let mut uniform = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-bound..bound)).collect() };
        let w = Tensor::from_vec(&[out_features, in_features], uniform(out_features * in_features));
        let b = bias.then(|| Param::new(format!("{name}.bias"), Tensor::from_vec(&[out_features], uniform(out_features)), false));
        Linear { weight: Param::new(format!("{name}.weight"), w, true), bias: b, in_features, out_features, input: None }
    }

    /// y (…, OC) from x (…, C), on x's device; saves x.
    pub fn forward(&mut self, x: &Tensor) -> Tensor {
        rows_and_features(x, &self.weight.name, self.in_features);
        let out = ops::linear(x, &self.weight.value, self.bias.as_ref().map(|b| &b.value));
        self.input = Some(x.clone());
        out
    }

    /// dx (…, C) from dy (…, OC); dW += dyᵀx, db += Σdy.
    pub fn backward(&mut self, dout: &Tensor) -> Tensor {
        let x = saved(&mut self.input, &self.weight.name);
        rows_and_features(dout, &self.weight.name, self.out_features);
        let dx = ops::linear_grad(dout, &x, &self.weight.value, &mut self.weight.grad, self.bias.as_mut().map(|b| &mut b.grad), true);
        dx.expect("dx was requested")
    }
}

impl Module for Linear {
    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        f(&mut self.weight);
        if let Some(b) = &mut self.bias {
            f(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::random_vec;
    use crate::engine::ops::linear::{linear_backward, linear_forward};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn linear_init_follows_pytorch_bounds_and_is_seeded() {
        let mut l = Linear::new("fc", 64, 32, true, &mut ChaCha8Rng::seed_from_u64(0));
        let bound = 1.0 / 8.0;
        let w = l.weight.value.data();
        assert!(w.iter().all(|v| v.abs() <= bound));
        // U(−1/8, 1/8) has variance 1/(3·64); 2048 samples: ±15 % is > 4 sd of the sample variance.
        let var = w.iter().map(|v| (v * v) as f64).sum::<f64>() / w.len() as f64;
        assert!((var * 192.0 - 1.0).abs() < 0.15, "weight variance {var}");
        let l2 = Linear::new("fc", 64, 32, true, &mut ChaCha8Rng::seed_from_u64(0));
        assert_eq!(l.weight.value.data(), l2.weight.value.data());
        assert_eq!(l.param_names(), vec!["fc.weight", "fc.bias"]);
        assert!(l.weight.decay && !l.bias.as_ref().unwrap().decay);
    }

    #[test]
    fn linear_layer_equals_op_composition_on_3d_input() {
        let mut l = Linear::new("fc", 5, 3, true, &mut ChaCha8Rng::seed_from_u64(1));
        let x = Tensor::from_vec(&[2, 4, 5], random_vec(40, 2, 1.0));
        let dy = Tensor::from_vec(&[2, 4, 3], random_vec(24, 3, 1.0));
        let y = l.forward(&x);
        assert_eq!(y.shape, vec![2, 4, 3]);
        let dx = l.backward(&dy);
        let (w, b) = (l.weight.value.data().to_vec(), l.bias.as_ref().unwrap().value.data().to_vec());
        let mut want = vec![0.0; 24];
        linear_forward(&mut want, x.data(), &w, Some(&b), 8, 5, 3);
        assert_eq!(y.data(), &want[..]);
        let (mut wdx, mut wdw, mut wdb) = (vec![0.0; 40], vec![0.0; 15], vec![0.0; 3]);
        linear_backward(Some(&mut wdx), &mut wdw, Some(&mut wdb), dy.data(), x.data(), &w, 8, 5, 3);
        assert_eq!(dx.data(), &wdx[..]);
        assert_eq!(l.weight.grad.data(), &wdw[..]);
        // A second forward/backward accumulates parameter gradients.
        l.forward(&x);
        l.backward(&dy);
        let twice: Vec<f32> = wdb.iter().map(|v| 2.0 * v).collect();
        assert_eq!(l.bias.as_ref().unwrap().grad.data(), &twice[..]);
    }
}
