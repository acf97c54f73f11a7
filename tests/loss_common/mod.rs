//! Helpers shared by the loss integration tests: deterministic inputs and masks, and the
//! partition check that shares of the loss over disjoint row ranges add up to the full loss.
#![allow(dead_code)]

use multimat::engine::gradcheck::random_vec;
use multimat::loss::{ModalityEmbeddings, MultimodalLoss};

/// (B, D) rows drawn uniformly then L2-normalised.
pub fn unit_rows(b: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut x = random_vec(b * d, seed, 1.0);
    for row in x.chunks_exact_mut(d) {
        let n = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        row.iter_mut().for_each(|v| *v /= n);
    }
    x
}

/// Overwrite the rows absent in `present` with NaN: the losses must never read them.
pub fn poison_absent(x: &mut [f32], present: &[bool], d: usize) {
    for (r, p) in present.iter().enumerate() {
        if !p {
            x[r * d..(r + 1) * d].iter_mut().for_each(|v| *v = f32::NAN);
        }
    }
}

/// Shares over `parts` (disjoint, covering 0..B) must sum to the full loss and gradients.
pub fn check_partition(
    loss: &MultimodalLoss,
    inputs: &[ModalityEmbeddings],
    d: usize,
    parts: &[std::ops::Range<usize>],
    tol: f64,
) {
    let b = inputs[0].present.len();
    let mut l = loss.clone();
    let full = l.forward_backward(inputs, d, 0..b, true).unwrap();
    let mut sum_loss = 0.0;
    let mut sum_grads = vec![vec![0.0f64; b * d]; inputs.len()];
    let temp_grads = |l: &MultimodalLoss| {
        l.temperatures
            .iter()
            .map(|t| t.param.grad.data()[0] as f64)
            .collect::<Vec<_>>()
    };
    let full_tgrads = temp_grads(&l);
    let mut sum_tgrads = vec![0.0f64; full_tgrads.len()];
    for r in parts {
        let mut l = loss.clone();
        let out = l.forward_backward(inputs, d, r.clone(), true).unwrap();
        sum_loss += out.loss;
        for (s, g) in sum_tgrads.iter_mut().zip(temp_grads(&l)) {
            *s += g;
        }
        for (acc, g) in sum_grads.iter_mut().zip(&out.grads) {
            for (a, v) in acc.iter_mut().zip(g) {
                *a += *v as f64;
            }
        }
    }
    assert!(
        (sum_loss - full.loss).abs() <= tol * full.loss.abs().max(1.0),
        "{:?}: Σ shares {sum_loss} vs full {}",
        loss.config.kind,
        full.loss
    );
    for (s, f) in sum_tgrads.iter().zip(&full_tgrads) {
        assert!(
            (s - f).abs() <= tol * f.abs().max(1e-3),
            "{:?}: temperature grad Σ shares {s} vs full {f}",
            loss.config.kind
        );
    }
    let scale = full
        .grads
        .iter()
        .flatten()
        .fold(0.0f64, |m, v| m.max(v.abs() as f64))
        .max(1e-12);
    for (m, (acc, g)) in sum_grads.iter().zip(&full.grads).enumerate() {
        for (k, (a, v)) in acc.iter().zip(g).enumerate() {
            assert!(
                (a - *v as f64).abs() <= tol * scale,
                "{:?}: input {m} grad[{k}]: Σ shares {a} vs full {v} (max |g| {scale})",
                loss.config.kind
            );
        }
    }
}
