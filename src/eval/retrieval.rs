//! Cross-modal retrieval: for materials that have both modalities A and B, embed both, and for
//! each material's A-embedding rank all B-embeddings by cosine similarity; the rank of its own
//! B-embedding measures how well the shared latent space aligns them (paper Fig. 3A).

use serde::Serialize;

/// Retrieval metrics for one ordered modality pair.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RetrievalMetrics {
    pub query: String,
    pub target: String,
    /// Materials with both modalities (the candidate pool size).
    pub n: usize,
    /// (k, accuracy) for k in 1, 5, 10, 25.
    pub top_k: Vec<(usize, f64)>,
    /// Accuracy a random ranking would reach at the same k.
    pub chance: Vec<(usize, f64)>,
    pub mean_rank: f64,
    pub median_rank: f64,
}

/// Rank (1-based) of the matching row for every query row: `a` and `b` are (n, d), row i of `a`
/// belongs with row i of `b`; rows need not be normalised (cosine is computed). Ties count
/// against the query (a target tied with the true match ranks ahead of it), so a collapsed
/// embedding scores as badly as it deserves.
pub fn match_ranks(a: &[f32], b: &[f32], n: usize, d: usize) -> Vec<usize> {
    let norm = |x: &[f32]| -> Vec<f32> {
        x.chunks_exact(d)
            .flat_map(|r| {
                let s = r.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                r.iter().map(move |v| v / s)
            })
            .collect()
    };
    let (an, bn) = (norm(&a[..n * d]), norm(&b[..n * d]));
    let mut sim = vec![0.0f32; n * n]; // (n, n)
    crate::engine::ops::matmul::sgemm(&mut sim, &an, &bn, n, n, d, false, true, 1.0, 0.0);
    (0..n)
        .map(|i| {
            let row = &sim[i * n..(i + 1) * n];
            let own = row[i];
            1 + row.iter().enumerate().filter(|&(j, &s)| j != i && s >= own).count()
        })
        .collect()
}

pub fn metrics(query: &str, target: &str, ranks: &[usize]) -> RetrievalMetrics {
    let n = ranks.len();
    let ks = [1usize, 5, 10, 25];
    let top_k = ks.iter().map(|&k| (k, ranks.iter().filter(|&&r| r <= k).count() as f64 / n.max(1) as f64)).collect();
    let chance = ks.iter().map(|&k| (k, (k.min(n) as f64) / n.max(1) as f64)).collect();
    let mut sorted = ranks.to_vec();
    sorted.sort_unstable();
    let median_rank = if n == 0 { 0.0 } else if n % 2 == 1 { sorted[n / 2] as f64 } else { (sorted[n / 2 - 1] + sorted[n / 2]) as f64 / 2.0 };
    RetrievalMetrics {
        query: query.into(),
        target: target.into(),
        n,
        top_k,
        chance,
        mean_rank: ranks.iter().sum::<usize>() as f64 / n.max(1) as f64,
        median_rank,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_alignment_ranks_first_and_collapse_ranks_last() {
        let (n, d) = (6, 3);
        let a: Vec<f32> = (0..n * d).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
        let ranks = match_ranks(&a, &a, n, d);
        assert!(ranks.iter().all(|&r| r == 1), "{ranks:?}");
        let collapsed = vec![1.0f32; n * d];
        let ranks = match_ranks(&a, &collapsed, n, d);
        assert!(ranks.iter().all(|&r| r == n), "ties count against the query: {ranks:?}");
        let m = metrics("crystal", "dos", &[1, 2, 3, 30]);
        assert_eq!(m.top_k[0], (1, 0.25));
        assert_eq!(m.top_k[1], (5, 0.75));
        assert_eq!(m.median_rank, 2.5);
    }
}
