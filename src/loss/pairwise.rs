//! AllPairsCLIP and AnchoredCLIP: the mean of pairwise CLIP terms (paper Equations 3 and 4).
//!
//! The divisor is the number of configured pairs (n(n−1)/2, or n−1 with an anchor), constant
//! from batch to batch: a pair with fewer than 2 valid rows contributes 0 to the sum but still
//! counts in the mean, which is the paper's "loss terms of the missing entries set to zero" and
//! keeps every process's share on the same scale. (The reference `TriInfoNCE` divides by
//! 2·(number of modalities) instead of 2·(number of anchored pairs) — a constant factor
//! (n−1)/n; we follow Equation 4.) Each pair has its own temperature.

use std::ops::Range;

use super::clip::clip_pair;
use super::{ModalityEmbeddings, Temperature, TermReport};

/// All unordered pairs (i < j) of n modalities, in canonical order.
pub fn all_pairs(n: usize) -> Vec<(usize, usize)> {
    (0..n).flat_map(|i| (i + 1..n).map(move |j| (i, j))).collect()
}

/// The n−1 pairs containing `anchor`, each ordered (anchor, other).
pub fn anchored_pairs(n: usize, anchor: usize) -> Vec<(usize, usize)> {
    (0..n).filter(|&j| j != anchor).map(|j| (anchor, j)).collect()
}

/// Σ_pairs CLIP(pair) / #pairs for the owned rows. `grads` (one (B, D) per input, or empty for
/// no gradients) is written; temperature gradients are accumulated.
pub fn mean_of_pairs(
    grads: &mut [Vec<f32>],
    inputs: &[ModalityEmbeddings],
    pairs: &[(usize, usize)],
    temperatures: &mut [Temperature],
    dim: usize,
    rows: Range<usize>,
) -> (f64, Vec<TermReport>) {
    let want = !grads.is_empty();
    for g in grads.iter_mut() {
        g.fill(0.0);
    }
    let batch = inputs[0].present.len();
    let inv = 1.0 / pairs.len() as f64;
    let mut total = 0.0;
    let mut terms = Vec::with_capacity(pairs.len());
    let (mut ga, mut gb) = if want {
        (vec![0.0f32; batch * dim], vec![0.0f32; batch * dim])
    } else {
        (Vec::new(), Vec::new())
    };
    for (p, &(i, j)) in pairs.iter().enumerate() {
        let (ei, ej) = (&inputs[i], &inputs[j]);
        let r = clip_pair(
            want.then_some((&mut ga[..], &mut gb[..])),
            ei.data,
            ej.data,
            ei.present,
            ej.present,
            dim,
            temperatures[p].logit_scale(),
            rows.clone(),
        );
        temperatures[p].accumulate_scale_grad(r.dscale * inv);
        total += r.loss * inv;
        if want {
            for (g, x) in grads[i].iter_mut().zip(&ga) {
                *g += (*x as f64 * inv) as f32;
            }
            for (g, x) in grads[j].iter_mut().zip(&gb) {
                *g += (*x as f64 * inv) as f32;
            }
        }
        terms.push(TermReport {
            name: format!("{}-{}", ei.modality, ej.modality),
            loss: r.loss,
            valid_rows: r.valid_rows,
        });
    }
    (total, terms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_lists_match_equations_3_and_4() {
        assert_eq!(all_pairs(4), vec![(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]);
        assert_eq!(anchored_pairs(4, 0), vec![(0, 1), (0, 2), (0, 3)]);
        assert_eq!(anchored_pairs(3, 1), vec![(1, 0), (1, 2)]);
    }
}
