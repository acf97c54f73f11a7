//! The train / validation / test split of a fine-tuning run: a function of the set of material
//! ids and the seed only — never of the record order, the shard layout or the number of ranks.
//!
//! Every id gets the key SHA-256("{seed}:{id}"); ids are ranked by (key, id) and the first
//! round(f_train·n) go to train, the next round(f_val·n) to validation, the rest to test. Ranking
//! (rather than thresholding each hash) gives exactly the requested sizes.

use sha2::{Digest, Sha256};
use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Part {
    Train,
    Val,
    Test,
}

impl Part {
    pub fn name(self) -> &'static str {
        match self {
            Part::Train => "train",
            Part::Val => "val",
            Part::Test => "test",
        }
    }
}

/// Sizes of the three parts of `n` items for `fractions` (train and validation rounded, test
/// takes the rest).
pub fn part_sizes(n: usize, fractions: [f64; 3]) -> [usize; 3] {
    let train = ((fractions[0] * n as f64).round() as usize).min(n);
    let val = ((fractions[1] * n as f64).round() as usize).min(n - train);
    [train, val, n - train - val]
}

/// The part of every id, in the order given. Duplicate ids get the same part.
pub fn assign(ids: &[&str], seed: u64, fractions: [f64; 3]) -> Vec<Part> {
    let mut unique: Vec<&str> = ids.to_vec();
    unique.sort_unstable();
    unique.dedup();
    let mut keyed: Vec<([u8; 32], &str)> = unique
        .iter()
        .map(|id| (Sha256::digest(format!("{seed}:{id}").as_bytes()).into(), *id))
        .collect();
    keyed.sort_unstable();
    let [train, val, _] = part_sizes(keyed.len(), fractions);
    let part_of: HashMap<&str, Part> = keyed
        .iter()
        .enumerate()
        .map(|(rank, (_, id))| (*id, if rank < train { Part::Train } else if rank < train + val { Part::Val } else { Part::Test }))
        .collect();
    ids.iter().map(|id| part_of[id]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_exact() {
        assert_eq!(part_sizes(100, [0.6, 0.2, 0.2]), [60, 20, 20]);
        assert_eq!(part_sizes(1181, [0.6, 0.2, 0.2]), [709, 236, 236]);
        assert_eq!(part_sizes(3, [0.6, 0.2, 0.2]), [2, 1, 0]);
        let ids: Vec<String> = (0..101).map(|i| format!("mp-{i}")).collect();
        let refs: Vec<&str> = ids.iter().map(|s| s.as_str()).collect();
        let parts = assign(&refs, 3, [0.6, 0.2, 0.2]);
        let count = |p| parts.iter().filter(|&&q| q == p).count();
        assert_eq!((count(Part::Train), count(Part::Val), count(Part::Test)), (61, 20, 20));
    }
}
