//! Random embedding sets for tests and benchmarks, with deliberate exact ties: a fraction of
//! rows are exact copies of earlier rows under different ids, and ids are a shuffled numbering
//! without zero padding, so row order, numeric order and the (bytewise) id order all differ.
//!
//! Two kinds: `Gaussian` (directions uniform on the sphere; the benchmark data) and `Lattice`
//! (4 non-zero components ±s, s ∈ {0.5, 1}, so norms are exactly 1 or 2, normalisation is exact
//! and every cosine is a multiple of 1/4 computed exactly in f32 and f64 alike — a tie-heavy set
//! on which the fast screen must equal the f64 reference bit for bit).

use anyhow::{ensure, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RandomKind {
    Gaussian,
    Lattice,
}

/// `n` rows of dimension `dim` with ids `{prefix}{k}` (k a permutation of 0..n).
pub fn random_embeddings(
    n: usize,
    dim: usize,
    seed: u64,
    duplicate_fraction: f64,
    kind: RandomKind,
    prefix: &str,
) -> Result<(Vec<String>, Vec<f32>)> {
    ensure!(dim > 0, "dimension must be positive");
    ensure!((0.0..=1.0).contains(&duplicate_fraction), "duplicate fraction {duplicate_fraction} not in [0, 1]");
    ensure!(kind != RandomKind::Lattice || dim >= 4, "lattice embeddings need dim >= 4");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut numbers: Vec<usize> = (0..n).collect();
    numbers.shuffle(&mut rng);
    let ids = numbers.iter().map(|k| format!("{prefix}{k}")).collect();
    let mut rows = vec![0.0f32; n * dim]; // (n, dim)
    for i in 0..n {
        if i > 0 && rng.random::<f64>() < duplicate_fraction {
            let j = rng.random_range(0..i);
            rows.copy_within(j * dim..(j + 1) * dim, i * dim);
            continue;
        }
        let row = &mut rows[i * dim..(i + 1) * dim];
        match kind {
            RandomKind::Gaussian => {
                // Box–Muller; the crate set has no rand_distr and this is all we need.
                for x in row.iter_mut() {
                    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
                    let u2: f64 = rng.random();
                    *x = ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32;
                }
            }
            RandomKind::Lattice => {
                let scale = if rng.random::<bool>() { 0.5 } else { 1.0 };
                let mut positions: Vec<usize> = (0..dim).collect();
                positions.partial_shuffle(&mut rng, 4);
                for &p in &positions[..4] {
                    row[p] = if rng.random::<bool>() { scale } else { -scale };
                }
            }
        }
    }
    Ok((ids, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_exact_copies_and_ids_unique() {
        let (ids, rows) = random_embeddings(500, 8, 3, 0.2, RandomKind::Gaussian, "c-").unwrap();
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), 500);
        let rowset: std::collections::HashSet<Vec<u32>> =
            rows.chunks(8).map(|r| r.iter().map(|x| x.to_bits()).collect()).collect();
        assert!(rowset.len() < 450 && rowset.len() > 350, "about 20% duplicates, got {} distinct", rowset.len());
    }
}
