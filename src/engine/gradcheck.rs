//! Finite-difference gradient checking shared by every op's tests.
//!
//! The check projects the op's output onto a fixed random direction w (loss = Σ w·out), so one
//! analytic backward with dout = w gives the gradient of that scalar with respect to every input,
//! and central differences of the scalar check it element by element. Forward passes run in f32,
//! so differences use a step of ~1e-2 relative and the comparison tolerance is set per op.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Deterministic uniform(-scale, scale) values for tests.
pub fn random_vec(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// Compare an analytic gradient with central differences of `loss(x)` at `x`.
///
/// `loss` must compute the scalar Σ w·forward(x) in f32 (accumulated in f64 by the caller if it
/// wishes). Checks up to `max_checks` evenly spaced coordinates. Panics with the worst
/// coordinate if |analytic − numeric| > atol + rtol·|numeric|.
pub fn check_gradient(
    name: &str,
    x: &[f32],
    analytic: &[f32],
    mut loss: impl FnMut(&[f32]) -> f64,
    eps: f32,
    atol: f64,
    rtol: f64,
) {
    assert_eq!(x.len(), analytic.len(), "{name}: gradient length mismatch");
    let mut xp = x.to_vec();
    let max_checks = 64usize;
    let stride = (x.len() / max_checks).max(1);
    let mut worst = (0usize, 0.0f64, 0.0f64, 0.0f64);
    for i in (0..x.len()).step_by(stride) {
        let orig = xp[i];
        xp[i] = orig + eps;
        let lp = loss(&xp);
        xp[i] = orig - eps;
        let lm = loss(&xp);
        xp[i] = orig;
        let numeric = (lp - lm) / (2.0 * eps as f64);
        let a = analytic[i] as f64;
        let excess = (a - numeric).abs() - (atol + rtol * numeric.abs());
        if excess > worst.3 || i == 0 {
            worst = (i, a, numeric, excess);
        }
    }
    assert!(
        worst.3 <= 0.0,
        "{name}: gradient mismatch at index {}: analytic {:.6e} vs numeric {:.6e} (atol {atol:e}, rtol {rtol:e})",
        worst.0,
        worst.1,
        worst.2
    );
}

/// Σ w·out accumulated in f64, the scalar the gradient checks differentiate.
pub fn dot(w: &[f32], out: &[f32]) -> f64 {
    w.iter().zip(out).map(|(a, b)| *a as f64 * *b as f64).sum()
}

/// Finite-difference check of a whole layer: the input gradient `backward` returns and every
/// parameter gradient it accumulates, for loss = Σ w·forward(x) with a fixed random w.
/// `forward`/`backward` wrap the layer's own calls (so extra arguments such as masks can be bound).
/// Zeroes the module's gradients first.
#[allow(clippy::too_many_arguments)]
pub fn check_module_gradients<M: crate::engine::Module>(
    name: &str,
    module: &mut M,
    x: &crate::engine::Tensor,
    mut forward: impl FnMut(&mut M, &crate::engine::Tensor) -> crate::engine::Tensor,
    mut backward: impl FnMut(&mut M, &crate::engine::Tensor) -> crate::engine::Tensor,
    eps: f32,
    atol: f64,
    rtol: f64,
) {
    use crate::engine::Tensor;
    let y = forward(module, x);
    let w = Tensor::from_vec(&y.shape, random_vec(y.numel(), 0x5eed, 1.0));
    module.zero_grad();
    let dx = backward(module, &w);
    assert_eq!(dx.shape, x.shape, "{name}: input gradient shape");
    check_gradient(&format!("{name} d(input)"), x.data(), dx.data(), |xp| {
        let xt = Tensor::from_vec(&x.shape, xp.to_vec());
        dot(w.data(), forward(module, &xt).data())
    }, eps, atol, rtol);
    let mut params: Vec<(String, Vec<f32>, Vec<f32>)> = Vec::new();
    module.visit_params(&mut |p| params.push((p.name.clone(), p.value.data().to_vec(), p.grad.data().to_vec())));
    for (k, (pname, value, grad)) in params.iter().enumerate() {
        let set = |m: &mut M, v: &[f32]| {
            let mut i = 0;
            m.visit_params(&mut |p| {
                if i == k {
                    p.value.data_mut().copy_from_slice(v);
                }
                i += 1;
            });
        };
        check_gradient(&format!("{name} d({pname})"), value, grad, |vp| {
            set(module, vp);
            let l = dot(w.data(), forward(module, x).data());
            set(module, value);
            l
        }, eps, atol, rtol);
    }
}
