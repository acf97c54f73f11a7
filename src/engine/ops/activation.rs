//! Pointwise activations: ReLU, sigmoid, SiLU, softplus. Each forward maps inp → out of any shape
//! (flattened); each backward writes (=) dinp from dout and the saved *input*.
//!
//! Softplus follows PyTorch: softplus(x) = log(1 + exp(βx))/β, reverting to the identity where
//! βx > threshold (default β = 1, threshold = 20) so large inputs neither overflow nor round.
//! Sigmoid is evaluated from exp(−|x|) so neither tail overflows. exp is `fast_exp`, a branch-free
//! polynomial that vectorises (libm's expf is a call per element: ~9 % of a PotNet step was
//! spent in it); it is within a few ulp of libm over the whole f32 range.
//!
//! [`Activation`] names one of these (or GELU, `ops::gelu`) as a value chosen in configs;
//! [`activate`] and [`activate_grad`] are the tensor-level ops with their one device dispatch (the
//! GPU arm launches `kernels/activation.cu`, engine::gpu::activation).

use super::gelu::{gelu_backward, gelu_forward, GeluKind};
use super::PAR_CHUNK;
use crate::engine::gpu::{self, device_ok, gpu_of, gpu_vec_mut};
use crate::engine::tensor::{Storage, Tensor};
use rayon::prelude::*;
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

    /// out = act(inp), same length (the CPU reference).
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

    /// dinp = act'(inp) · dout (written; the CPU reference).
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

/// y = act(x) on x's device.
pub fn activate(kind: Activation, x: &Tensor) -> Tensor {
    if kind == Activation::Identity {
        return x.clone();
    }
    let mut out = device_ok(Tensor::uninit_on(&x.shape, x.device()), "activation");
    match &x.storage {
        Storage::Cpu(xd) => kind.forward(out.data_mut(), xd),
        Storage::Gpu(xd) => {
            let g = gpu_of(x).clone();
            device_ok(gpu::activation::forward(&g, kind, gpu_vec_mut(&mut out, "activation"), xd), "activation");
        }
    }
    out
}

/// dx = act'(x) · dy on dy's device (x: the forward's input).
pub fn activate_grad(kind: Activation, dy: &Tensor, x: &Tensor) -> Tensor {
    assert_eq!(dy.shape, x.shape, "activation backward: dy {:?} and x {:?} differ", dy.shape, x.shape);
    if kind == Activation::Identity {
        return dy.clone();
    }
    let mut dx = device_ok(Tensor::uninit_on(&x.shape, x.device()), "activation_grad");
    match &dy.storage {
        Storage::Cpu(g) => kind.backward(dx.data_mut(), g, x.data()),
        Storage::Gpu(g) => {
            let gpu = gpu_of(dy).clone();
            device_ok(gpu::activation::backward(&gpu, kind, gpu_vec_mut(&mut dx, "activation_grad"), g, x.gpu_vec()), "activation_grad");
        }
    }
    dx
}

/// out[i] = f(inp[i]) in parallel chunks.
fn map1(out: &mut [f32], inp: &[f32], what: &str, f: impl Fn(f32) -> f32 + Sync) {
    check(out.len(), inp.len(), what);
    out.par_chunks_mut(PAR_CHUNK).zip(inp.par_chunks(PAR_CHUNK)).for_each(|(o, x)| {
        o.iter_mut().zip(x).for_each(|(o, &x)| *o = f(x));
    });
}

/// dinp[i] = f(dout[i], inp[i]) in parallel chunks.
fn map2(dinp: &mut [f32], dout: &[f32], inp: &[f32], what: &str, f: impl Fn(f32, f32) -> f32 + Sync) {
    check(dinp.len(), inp.len(), what);
    check(dout.len(), inp.len(), what);
    dinp.par_chunks_mut(PAR_CHUNK).zip(dout.par_chunks(PAR_CHUNK)).zip(inp.par_chunks(PAR_CHUNK)).for_each(|((d, g), x)| {
        d.iter_mut().zip(g).zip(x).for_each(|((d, &g), &x)| *d = f(g, x));
    });
}

/// e^x in f32 without a libm call, so loops over it vectorise: x = k·ln2 + r with |r| ≤ ln2/2,
/// e^r by Cephes' degree-6 polynomial (≈ 1 ulp), 2^k by building the exponent bits. Below
/// −87.3 (where e^x leaves the normal range) the result is 0, as expf underflows; above 88 it
/// saturates at e^88 ≈ 1.65e38 rather than ∞, so a masked score times a 0 weight stays 0, never NaN.
/// NaN stays NaN.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer without a rounding instruction.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.336_54, 88.0);
    let k = (x * LOG2E + ROUND) - ROUND;
    let r = x - k * LN2_HI - k * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    let y = er * f32::from_bits(((k as i32 + 127) as u32) << 23);
    // A select, not a branch: the loop still vectorises.
    if x <= -87.336_54 { 0.0 } else { y }
}

/// σ(x) without overflow in either tail: e = exp(−|x|) ≤ 1, σ = 1/(1+e) or e/(1+e). Branch-free
/// (both arms are selects) so it vectorises.
#[inline]
pub fn sigmoid_scalar(x: f32) -> f32 {
    let e = fast_exp(-x.abs());
    let r = 1.0 / (1.0 + e);
    if x >= 0.0 { r } else { e * r }
}

/// Softplus for one value with PyTorch's β and threshold.
#[inline]
pub fn softplus_scalar(x: f32, beta: f32, threshold: f32) -> f32 {
    let bx = beta * x;
    if bx > threshold {
        x
    } else {
        // ln(1 + e^{βx}) = max(βx, 0) + ln(1 + e^{−|βx|}): exact for large |βx| of either sign.
        (bx.max(0.0) + fast_exp(-bx.abs()).ln_1p()) / beta
    }
}

fn check(a: usize, b: usize, what: &str) {
    assert_eq!(a, b, "{what}: buffer lengths differ");
}

/// out = max(inp, 0)
pub fn relu_forward(out: &mut [f32], inp: &[f32]) {
    map1(out, inp, "relu_forward", |x| x.max(0.0));
}

/// dinp = dout · [inp > 0]
pub fn relu_backward(dinp: &mut [f32], dout: &[f32], inp: &[f32]) {
    map2(dinp, dout, inp, "relu_backward", |g, x| if x > 0.0 { g } else { 0.0 });
}

/// out = σ(inp)
pub fn sigmoid_forward(out: &mut [f32], inp: &[f32]) {
    map1(out, inp, "sigmoid_forward", sigmoid_scalar);
}

/// dinp = dout · σ(x)(1 − σ(x))
pub fn sigmoid_backward(dinp: &mut [f32], dout: &[f32], inp: &[f32]) {
    map2(dinp, dout, inp, "sigmoid_backward", |g, x| {
        let s = sigmoid_scalar(x);
        g * s * (1.0 - s)
    });
}

/// out = x·σ(x)
pub fn silu_forward(out: &mut [f32], inp: &[f32]) {
    map1(out, inp, "silu_forward", |x| x * sigmoid_scalar(x));
}

/// dinp = dout · σ(x)(1 + x(1 − σ(x)))
pub fn silu_backward(dinp: &mut [f32], dout: &[f32], inp: &[f32]) {
    map2(dinp, dout, inp, "silu_backward", |g, x| {
        let s = sigmoid_scalar(x);
        g * s * (1.0 + x * (1.0 - s))
    });
}

/// out = softplus(inp; β, threshold)
pub fn softplus_forward(out: &mut [f32], inp: &[f32], beta: f32, threshold: f32) {
    map1(out, inp, "softplus_forward", |x| softplus_scalar(x, beta, threshold));
}

/// dinp = dout · σ(βx), or dout where βx > threshold (the identity branch, as PyTorch).
pub fn softplus_backward(dinp: &mut [f32], dout: &[f32], inp: &[f32], beta: f32, threshold: f32) {
    map2(dinp, dout, inp, "softplus_backward", |g, x| if beta * x > threshold { g } else { g * sigmoid_scalar(beta * x) });
}

#[cfg(test)]
mod tests {
    #[test]
    fn fast_exp_matches_f64_exp_to_a_few_ulp_and_keeps_nan() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let want = (x as f64).exp();
            worst = worst.max(((super::fast_exp(x) as f64 - want) / want).abs());
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert!(super::fast_exp(f32::NAN).is_nan());
        assert_eq!(super::fast_exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(super::fast_exp(-1000.0), 0.0);
        assert!(super::fast_exp(1000.0).is_finite() && super::fast_exp(1000.0) > 1.6e38);
        assert_eq!(super::fast_exp(0.0), 1.0);
    }

    #[test]
    fn sigmoid_tails_keep_relative_accuracy() {
        for x in [-80.0f32, -30.0, -5.0, -0.5, 0.0, 0.5, 5.0, 30.0, 80.0] {
            let want = 1.0 / (1.0 + (-(x as f64)).exp());
            let got = super::sigmoid_scalar(x) as f64;
            assert!(((got - want) / want).abs() < 1e-6, "σ({x}) = {got}, want {want}");
        }
    }

    use super::*;
    use crate::engine::gradcheck::{check_gradient, dot, random_vec};

    type Fwd = fn(&mut [f32], &[f32]);
    type Bwd = fn(&mut [f32], &[f32], &[f32]);

    fn softplus_default_fwd(o: &mut [f32], x: &[f32]) {
        softplus_forward(o, x, 1.0, 20.0)
    }
    fn softplus_default_bwd(d: &mut [f32], g: &[f32], x: &[f32]) {
        softplus_backward(d, g, x, 1.0, 20.0)
    }
    fn softplus_beta_fwd(o: &mut [f32], x: &[f32]) {
        softplus_forward(o, x, 2.0, 5.0)
    }
    fn softplus_beta_bwd(d: &mut [f32], g: &[f32], x: &[f32]) {
        softplus_backward(d, g, x, 2.0, 5.0)
    }

    #[test]
    fn activation_gradients_match_finite_differences() {
        let n = 128;
        // Keep inputs away from ReLU's kink and softplus's threshold so differences are smooth.
        let x: Vec<f32> = random_vec(n, 1, 6.0).into_iter().map(|v| if v.abs() < 0.05 { v + 0.1 } else { v }).collect();
        let proj = random_vec(n, 2, 1.0);
        let cases: [(&str, Fwd, Bwd); 5] = [
            ("relu", relu_forward, relu_backward),
            ("sigmoid", sigmoid_forward, sigmoid_backward),
            ("silu", silu_forward, silu_backward),
            ("softplus", softplus_default_fwd, softplus_default_bwd),
            ("softplus beta=2 threshold=5", softplus_beta_fwd, softplus_beta_bwd),
        ];
        for (name, fwd, bwd) in cases {
            let x: Vec<f32> = if name.contains("beta=2") {
                x.iter().map(|&v| if (2.0 * v - 5.0).abs() < 0.1 { v + 0.2 } else { v }).collect()
            } else {
                x.clone()
            };
            let mut dx = vec![f32::NAN; n];
            bwd(&mut dx, &proj, &x);
            check_gradient(name, &x, &dx, |x| {
                let mut out = vec![0.0; n];
                fwd(&mut out, x);
                dot(&proj, &out)
            }, 1e-3, 1e-3, 1e-3);
        }
    }

    #[test]
    fn softplus_and_sigmoid_are_stable_in_the_tails() {
        // ln(1 + e^x) for x = −100 is e^−100 ≈ 3.72e−44 (a subnormal f32), never 0/NaN through log(1).
        assert!((softplus_scalar(-30.0, 1.0, 20.0) - (-30.0f32).exp()).abs() < 1e-18);
        assert!(softplus_scalar(-100.0, 1.0, 20.0) >= 0.0);
        assert_eq!(softplus_scalar(1e30, 1.0, 20.0), 1e30);
        // Threshold: identity strictly above βx = 20, log1p form at and below.
        assert_eq!(softplus_scalar(20.5, 1.0, 20.0), 20.5);
        assert!((softplus_scalar(0.0, 1.0, 20.0) - std::f32::consts::LN_2).abs() < 1e-7);
        assert!((softplus_scalar(0.0, 2.0, 20.0) - std::f32::consts::LN_2 / 2.0).abs() < 1e-7);
        assert_eq!(sigmoid_scalar(-1000.0), 0.0);
        assert_eq!(sigmoid_scalar(1000.0), 1.0);
        let mut d = [0.0f32];
        softplus_backward(&mut d, &[1.0], &[25.0], 1.0, 20.0);
        assert_eq!(d[0], 1.0);
    }
}
