//! The order in which training sees the data. It depends on the seed and the epoch only — never
//! on the number of ranks — so 1 rank × B and n ranks × B/n see the same global batches, and a
//! resumed run continues with exactly the batch it would have seen.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::ops::Range;

/// A permutation of `0..n` for `epoch`, derived from `seed` alone.
pub fn epoch_permutation(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    // Mix seed and epoch into one stream id so consecutive epochs are unrelated permutations.
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut p: Vec<usize> = (0..n).collect();
    p.shuffle(&mut rng);
    p
}

/// Number of full global batches per epoch (the last partial batch is dropped, as contrastive
/// losses with a tiny batch would be noisy and BatchNorm needs > 1 row).
pub fn batches_per_epoch(n: usize, batch_size: usize) -> usize {
    if batch_size == 0 { 0 } else { n / batch_size }
}

/// Positions `[start, end)` inside the global batch that `rank` of `world` computes: a
/// contiguous balanced split, so concatenating all ranks' rows in rank order gives the batch.
pub fn rank_rows(batch_size: usize, world: usize, rank: usize) -> Range<usize> {
    crate::dist::split_range(batch_size, world, rank)
}

/// Record indices of global batch `b` of `epoch`.
pub fn global_batch(perm: &[usize], batch_size: usize, b: usize) -> &[usize] {
    &perm[b * batch_size..(b + 1) * batch_size]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_a_permutation_that_depends_on_seed_and_epoch_only() {
        let p = epoch_permutation(100, 7, 3);
        let mut s = p.clone();
        s.sort();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
        assert_eq!(p, epoch_permutation(100, 7, 3));
        assert_ne!(p, epoch_permutation(100, 7, 4));
        assert_ne!(p, epoch_permutation(100, 8, 3));
    }

    #[test]
    fn ranks_partition_the_global_batch() {
        let perm = epoch_permutation(50, 1, 0);
        let batch = global_batch(&perm, 12, 2);
        for world in 1..=4 {
            let mut joined = Vec::new();
            for r in 0..world {
                joined.extend_from_slice(&batch[rank_rows(12, world, r)]);
            }
            assert_eq!(joined, batch);
        }
    }
}
