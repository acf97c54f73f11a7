//! `Conv3d` layer: grouped 3-D convolution with its weight, optional bias and the saved input,
//! over the tensor-level `ops::conv3d` (im2col + GEMM on the CPU, one cuDNN descriptor per pass
//! on a GPU device; a bias is CPU-only, the ResNeXt's convolutions have none). Parameter names `<name>.weight`, `<name>.bias` and the
//! weight layout (OC, C/groups, kD, kH, kW) are PyTorch's, so checkpoints map one to one.
//!
//! Initialisation, from a caller-seeded RNG (ChaCha8 in the encoders, so runs are reproducible):
//! - `ConvInit::PytorchDefault` — what `nn.Conv3d` does on construction: kaiming-uniform with
//!   a = √5, i.e. weight ~ U(−1/√fan_in, 1/√fan_in), and bias ~ U(−1/√fan_in, 1/√fan_in), where
//!   fan_in = C/groups · kD·kH·kW;
//! - `ConvInit::KaimingNormalFanOut` — what the 3-D ResNeXt reference (Hara et al.) applies to
//!   every conv after construction: weight ~ N(0, 2/fan_out) with fan_out = OC·kD·kH·kW as
//!   PyTorch computes it (its fan_out ignores groups); bias (if any) as the default.
//!
//! Backward consumes the saved input, accumulates (`+=`) weight and bias gradients and returns
//! the input gradient; `backward_params_only` skips the input gradient (a network's first layer,
//! whose input is data, saves a third of its backward that way).

use super::saved;
use crate::engine::ops::conv3d::{conv3d, conv3d_grad, Conv3dDims, Window3d};
use crate::engine::{Module, Param, Tensor};
use rand::Rng;

/// How a convolution's weights are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvInit {
    /// PyTorch `nn.Conv3d` default (kaiming-uniform, a = √5).
    PytorchDefault,
    /// kaiming-normal, mode fan_out, ReLU gain — the 3-D ResNeXt reference's explicit init.
    KaimingNormalFanOut,
}

/// Hyper-parameters of one convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv3dConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub window: Window3d,
    pub groups: usize,
    pub bias: bool,
}

pub struct Conv3d {
    pub config: Conv3dConfig,
    pub weight: Param,           // (OC, C/groups, kD, kH, kW)
    pub bias: Option<Param>,     // (OC)
    saved_input: Option<Tensor>, // (N, C, D, H, W) from the last forward
}

/// One standard normal draw (Box–Muller; `rand` 0.9 has no normal distribution without the
/// extra `rand_distr` crate, and this is the only place that needs one).
fn standard_normal(rng: &mut impl Rng) -> f32 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]: ln is finite
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

impl Conv3d {
    /// A convolution named `name` (the parameter-name prefix). Panics if groups do not divide
    /// the channel counts (a model-definition error).
    pub fn new(name: &str, config: Conv3dConfig, init: ConvInit, rng: &mut impl Rng) -> Conv3d {
        let Conv3dConfig { in_channels: c, out_channels: oc, window, groups, bias } = config;
        assert!(groups > 0 && c % groups == 0 && oc % groups == 0,
            "Conv3d {name}: groups {groups} must divide in channels {c} and out channels {oc}");
        let k = window.volume();
        let fan_in = (c / groups * k) as f32;
        let bound = 1.0 / fan_in.sqrt();
        let weight: Vec<f32> = match init {
            ConvInit::PytorchDefault => (0..oc * (c / groups) * k).map(|_| rng.random_range(-bound..bound)).collect(),
            ConvInit::KaimingNormalFanOut => {
                let std = (2.0 / (oc * k) as f32).sqrt();
                (0..oc * (c / groups) * k).map(|_| std * standard_normal(rng)).collect()
            }
        };
        let weight = Param::new(format!("{name}.weight"), Tensor::from_vec(&[oc, c / groups, window.kernel[0], window.kernel[1], window.kernel[2]], weight), true);
        let bias = bias.then(|| {
            let b: Vec<f32> = (0..oc).map(|_| rng.random_range(-bound..bound)).collect();
            Param::new(format!("{name}.bias"), Tensor::from_vec(&[oc], b), false)
        });
        Conv3d { config, weight, bias, saved_input: None }
    }

    /// Op sizes for an input of shape (N, C, D, H, W); panics on a wrong rank or channel count.
    pub fn dims_for(&self, shape: &[usize]) -> Conv3dDims {
        assert!(shape.len() == 5 && shape[1] == self.config.in_channels,
            "Conv3d {}: expected input (N, {}, D, H, W), got {shape:?}", self.weight.name, self.config.in_channels);
        Conv3dDims {
            n: shape[0],
            c: shape[1],
            in_dims: [shape[2], shape[3], shape[4]],
            oc: self.config.out_channels,
            groups: self.config.groups,
            window: self.config.window,
        }
    }

    /// out (N, OC, OD, OH, OW); saves the input for backward.
    pub fn forward(&mut self, x: &Tensor) -> Tensor {
        let dims = self.dims_for(&x.shape);
        let out = conv3d(x, &self.weight.value, self.bias.as_ref().map(|b| &b.value), &dims);
        self.saved_input = Some(x.clone());
        out
    }

    /// Accumulates weight/bias gradients from dout (N, OC, OD, OH, OW) and returns dinp
    /// (N, C, D, H, W).
    pub fn backward(&mut self, dout: &Tensor) -> Tensor {
        self.backward_impl(dout, true).expect("input gradient requested")
    }

    /// Accumulates weight/bias gradients only (the input gradient is not computed).
    pub fn backward_params_only(&mut self, dout: &Tensor) {
        self.backward_impl(dout, false);
    }

    fn backward_impl(&mut self, dout: &Tensor, want_dinp: bool) -> Option<Tensor> {
        let x = saved(&mut self.saved_input, &self.weight.name);
        let dims = self.dims_for(&x.shape);
        let [od, oh, ow] = dims.out_dims();
        assert_eq!(dout.shape, [dims.n, dims.oc, od, oh, ow], "Conv3d {}: dout shape", self.weight.name);
        conv3d_grad(dout, &x, &self.weight.value, &mut self.weight.grad, self.bias.as_mut().map(|b| &mut b.grad), want_dinp, &dims)
    }
}

impl Module for Conv3d {
    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        f(&mut self.weight);
        if let Some(b) = self.bias.as_mut() {
            f(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::{check_gradient, dot, random_vec};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn config(c: usize, oc: usize, groups: usize, bias: bool) -> Conv3dConfig {
        Conv3dConfig { in_channels: c, out_channels: oc, window: Window3d::cube(3, 2, 1), groups, bias }
    }

    #[test]
    fn pytorch_default_init_is_bounded_by_one_over_sqrt_fan_in_and_seeded() {
        let cfg = config(8, 16, 2, true);
        let a = Conv3d::new("stem", cfg, ConvInit::PytorchDefault, &mut ChaCha8Rng::seed_from_u64(7));
        let b = Conv3d::new("stem", cfg, ConvInit::PytorchDefault, &mut ChaCha8Rng::seed_from_u64(7));
        assert_eq!(a.weight.value.shape, vec![16, 4, 3, 3, 3]);
        assert_eq!(a.weight.value.data(), b.weight.value.data(), "same seed, same weights");
        let bound = 1.0 / ((4 * 27) as f32).sqrt();
        let w = a.weight.value.data();
        assert!(w.iter().all(|v| v.abs() <= bound));
        // Uniform on (−b, b): the largest |w| of 1728 draws comes close to the bound.
        assert!(w.iter().fold(0.0f32, |m, v| m.max(v.abs())) > 0.95 * bound);
        assert!(a.bias.as_ref().unwrap().value.data().iter().all(|v| v.abs() <= bound));
        assert!(a.weight.decay && !a.bias.as_ref().unwrap().decay);
    }

    #[test]
    fn kaiming_normal_fan_out_has_the_right_spread() {
        let cfg = Conv3dConfig { in_channels: 32, out_channels: 64, window: Window3d::cube(3, 1, 1), groups: 1, bias: false };
        let conv = Conv3d::new("c", cfg, ConvInit::KaimingNormalFanOut, &mut ChaCha8Rng::seed_from_u64(3));
        let w = conv.weight.value.data();
        let var = w.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / w.len() as f64;
        let expected = 2.0 / (64.0 * 27.0);
        // 55k draws: the sample variance is within a few per cent of the target.
        assert!((var / expected - 1.0).abs() < 0.03, "variance {var} vs {expected}");
    }

    #[test]
    fn parameters_are_visited_in_order_with_hierarchical_names() {
        let mut conv = Conv3d::new("charge.stem.conv", config(2, 4, 1, true), ConvInit::PytorchDefault, &mut ChaCha8Rng::seed_from_u64(1));
        let mut names = vec![];
        conv.visit_params(&mut |p| names.push(p.name.clone()));
        assert_eq!(names, ["charge.stem.conv.weight", "charge.stem.conv.bias"]);
        assert_eq!(conv.num_params(), 4 * 2 * 27 + 4);
    }

    #[test]
    fn layer_gradients_match_finite_differences_and_accumulate() {
        let mut conv = Conv3d::new("c", config(4, 6, 2, true), ConvInit::PytorchDefault, &mut ChaCha8Rng::seed_from_u64(5));
        let x = Tensor::from_vec(&[2, 4, 4, 5, 4], random_vec(2 * 4 * 80, 6, 1.0));
        let out = conv.forward(&x);
        let proj = Tensor::from_vec(&out.shape, random_vec(out.numel(), 7, 1.0));
        let dx = conv.backward(&proj);
        let (w, b) = (conv.weight.value.data().to_vec(), conv.bias.as_ref().unwrap().value.data().to_vec());
        let (dw, db) = (conv.weight.grad.data().to_vec(), conv.bias.as_ref().unwrap().grad.data().to_vec());
        let dims = conv.dims_for(&x.shape);
        let loss = |x: &[f32], w: &[f32], b: &[f32]| {
            use crate::engine::ops::conv3d::conv3d_forward;
            let mut o = vec![0.0; dims.output_len()];
            conv3d_forward(&mut o, x, w, Some(b), &dims);
            dot(proj.data(), &o)
        };
        check_gradient("Conv3d layer dinp", x.data(), dx.data(), |xv| loss(xv, &w, &b), 1e-2, 1e-3, 1e-3);
        check_gradient("Conv3d layer dweight", &w, &dw, |wv| loss(x.data(), wv, &b), 1e-2, 1e-3, 1e-3);
        check_gradient("Conv3d layer dbias", &b, &db, |bv| loss(x.data(), &w, bv), 1e-2, 1e-3, 1e-3);
        // A second forward/backward adds the same gradient again.
        conv.forward(&x);
        conv.backward_params_only(&proj);
        for (g2, g1) in conv.weight.grad.data().iter().zip(&dw) {
            assert!((g2 - 2.0 * g1).abs() <= 1e-5 * (1.0 + g1.abs()));
        }
    }
}
