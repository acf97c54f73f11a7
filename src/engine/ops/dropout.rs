//! Inverted dropout: in training each element is kept with probability 1 − p and scaled by
//! 1/(1 − p) (PyTorch's convention, so evaluation is the identity). The keep-mask is drawn from the
//! caller's RNG — deterministic for a given RNG state — and saved for the backward, which writes
//! (=) dinp = dout · mask / (1 − p).

use rand::Rng;

/// out (N) = inp (N) · mask / (1 − p); mask (N) is written (true = kept).
pub fn dropout_forward(out: &mut [f32], mask: &mut [bool], inp: &[f32], p: f32, rng: &mut impl Rng) {
    assert!(out.len() == inp.len() && mask.len() == inp.len(), "dropout_forward: buffer lengths differ");
    assert!((0.0..=1.0).contains(&p), "dropout probability {p} outside [0, 1]");
    let scale = if p < 1.0 { 1.0 / (1.0 - p) } else { 0.0 };
    for ((o, m), &x) in out.iter_mut().zip(mask.iter_mut()).zip(inp) {
        *m = p == 0.0 || (p < 1.0 && rng.random::<f32>() >= p);
        *o = if *m { x * scale } else { 0.0 };
    }
}

/// dinp (N) = dout (N) · mask / (1 − p)
pub fn dropout_backward(dinp: &mut [f32], dout: &[f32], mask: &[bool], p: f32) {
    assert!(dinp.len() == dout.len() && mask.len() == dout.len(), "dropout_backward: buffer lengths differ");
    let scale = if p < 1.0 { 1.0 / (1.0 - p) } else { 0.0 };
    for ((d, &g), &m) in dinp.iter_mut().zip(dout).zip(mask) {
        *d = if m { g * scale } else { 0.0 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::{check_gradient, dot, random_vec};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn dropout_is_deterministic_keeps_about_1_minus_p_and_preserves_the_mean() {
        let n = 20_000;
        let x = vec![1.0f32; n];
        let run = |seed| {
            let (mut out, mut mask) = (vec![0.0; n], vec![false; n]);
            dropout_forward(&mut out, &mut mask, &x, 0.3, &mut ChaCha8Rng::seed_from_u64(seed));
            (out, mask)
        };
        let (a, mask) = run(7);
        assert_eq!(a, run(7).0, "same seed, same mask");
        assert_ne!(a, run(8).0, "different seed, different mask");
        let kept = mask.iter().filter(|&&m| m).count() as f64 / n as f64;
        // Binomial(20000, 0.7): sd of the fraction ≈ 0.0032; 5 sd margin.
        assert!((kept - 0.7).abs() < 0.016, "kept fraction {kept}");
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        assert!((mean - 1.0).abs() < 0.025, "mean {mean}");
    }

    #[test]
    fn dropout_gradient_matches_finite_differences_for_a_fixed_mask() {
        let n = 50;
        let x = random_vec(n, 1, 1.0);
        let proj = random_vec(n, 2, 1.0);
        let fwd = |x: &[f32]| {
            let (mut out, mut mask) = (vec![0.0; n], vec![false; n]);
            dropout_forward(&mut out, &mut mask, x, 0.5, &mut ChaCha8Rng::seed_from_u64(3));
            dot(&proj, &out)
        };
        let (mut out, mut mask) = (vec![0.0; n], vec![false; n]);
        dropout_forward(&mut out, &mut mask, &x, 0.5, &mut ChaCha8Rng::seed_from_u64(3));
        let mut dx = vec![f32::NAN; n];
        dropout_backward(&mut dx, &proj, &mask, 0.5);
        check_gradient("dropout", &x, &dx, fwd, 1e-2, 1e-4, 1e-4);
    }
}
