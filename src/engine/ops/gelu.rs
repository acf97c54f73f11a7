//! GELU, elementwise, in both of PyTorch's forms:
//! - exact: gelu(x) = x·Φ(x) = ½x(1 + erf(x/√2)) — what BERT and `nn.GELU()` use;
//! - tanh: ½x(1 + tanh(√(2/π)(x + 0.044715x³))) — `nn.GELU(approximate="tanh")`, GPT-2's form.
//!
//! erf comes from the `libm` crate (a port of musl's, within an ulp; std's `f32::erf` is still
//! unstable). The exact form evaluates in f64 so that the left tail, where 1 + erf(x/√2) cancels,
//! keeps its relative accuracy: 1 + erf(−t) is computed as erfc(t).
//!
//! Backward writes (=) the input gradient.

use super::PAR_CHUNK;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Which GELU formula.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum GeluKind {
    /// ½x(1 + erf(x/√2)).
    #[default]
    Erf,
    /// ½x(1 + tanh(√(2/π)(x + 0.044715x³))).
    Tanh,
}

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// Φ(x), the standard normal CDF, accurate in the left tail.
#[inline]
fn normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x * std::f64::consts::FRAC_1_SQRT_2)
}

/// gelu(x) for one value.
#[inline]
pub fn gelu_scalar(x: f32, kind: GeluKind) -> f32 {
    let x = x as f64;
    match kind {
        GeluKind::Erf => (x * normal_cdf(x)) as f32,
        GeluKind::Tanh => (0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)).tanh())) as f32,
    }
}

/// d gelu / dx for one value.
#[inline]
pub fn gelu_grad_scalar(x: f32, kind: GeluKind) -> f32 {
    let x = x as f64;
    match kind {
        // Φ(x) + x·φ(x)
        GeluKind::Erf => (normal_cdf(x) + x * FRAC_1_SQRT_2PI * (-0.5 * x * x).exp()) as f32,
        GeluKind::Tanh => {
            let u = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
            let th = u.tanh();
            let du = SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x);
            (0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * du) as f32
        }
    }
}

/// out (N) = gelu(inp) (N), any shape flattened.
pub fn gelu_forward(out: &mut [f32], inp: &[f32], kind: GeluKind) {
    assert_eq!(out.len(), inp.len(), "gelu_forward: out/inp lengths differ");
    out.par_chunks_mut(PAR_CHUNK).zip(inp.par_chunks(PAR_CHUNK)).for_each(|(out, inp)| {
        for (o, &x) in out.iter_mut().zip(inp) {
            *o = gelu_scalar(x, kind);
        }
    });
}

/// dinp (N) = gelu'(inp) · dout (written).
pub fn gelu_backward(dinp: &mut [f32], dout: &[f32], inp: &[f32], kind: GeluKind) {
    assert!(dinp.len() == inp.len() && dout.len() == inp.len(), "gelu_backward: lengths differ");
    dinp.par_chunks_mut(PAR_CHUNK).zip(dout.par_chunks(PAR_CHUNK)).zip(inp.par_chunks(PAR_CHUNK)).for_each(|((dinp, dout), inp)| {
        for ((d, &g), &x) in dinp.iter_mut().zip(dout).zip(inp) {
            *d = g * gelu_grad_scalar(x, kind);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::{check_gradient, dot, random_vec};

    #[test]
    fn gelu_erf_matches_normal_cdf_values_from_tables() {
        // Φ(1) = 0.8413447460685429, Φ(−3) = 0.0013498980316301, Φ(2) = 0.9772498680518208
        // (standard normal table values).
        let cases = [(1.0f32, 0.841_344_746_068_542_9f64), (-3.0, -3.0 * 0.001_349_898_031_630_1), (2.0, 2.0 * 0.977_249_868_051_820_8)];
        for (x, want) in cases {
            let got = gelu_scalar(x, GeluKind::Erf) as f64;
            assert!((got - want).abs() <= 1e-7 * want.abs().max(1e-3), "gelu({x}) = {got}, want {want}");
        }
        // Far left tail keeps relative accuracy: Φ(−8) = 6.22096057427178e-16.
        let got = gelu_scalar(-8.0, GeluKind::Erf) as f64;
        let want = -8.0 * 6.220_960_574_271_78e-16;
        assert!(((got - want) / want).abs() < 1e-5, "tail {got} vs {want}");
        assert_eq!(gelu_scalar(0.0, GeluKind::Erf), 0.0);
    }

    #[test]
    fn gelu_tanh_approximates_exact_form() {
        for i in -60..=60 {
            let x = i as f32 * 0.1;
            let (a, b) = (gelu_scalar(x, GeluKind::Erf), gelu_scalar(x, GeluKind::Tanh));
            // The tanh form's documented max error is ~1e-3 absolute on this range.
            assert!((a - b).abs() < 1e-3, "x={x}: erf {a} tanh {b}");
        }
    }

    #[test]
    fn gelu_gradients_match_finite_differences() {
        let n = 200;
        let x = random_vec(n, 1, 5.0);
        let proj = random_vec(n, 2, 1.0);
        for kind in [GeluKind::Erf, GeluKind::Tanh] {
            let mut dx = vec![0.0; n];
            gelu_backward(&mut dx, &proj, &x, kind);
            check_gradient(&format!("gelu {kind:?}"), &x, &dx, |x| {
                let mut out = vec![0.0; n];
                gelu_forward(&mut out, x, kind);
                dot(&proj, &out)
            }, 1e-3, 1e-3, 1e-3);
        }
    }
}
