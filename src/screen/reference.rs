//! The plain reference screen the fast path is tested against: f64 everywhere, every
//! similarity computed with the obvious loops, every candidate list fully sorted with the same
//! ranking rule (similarity descending, id ascending), then cut at k.

use std::cmp::Ordering;
use std::collections::HashMap;

/// One modality's raw (un-normalised) vectors with ids.
pub struct RawEmbeddings<'a> {
    pub ids: &'a [String],
    pub rows: &'a [f32], // (n, dim)
    pub dim: usize,
}

fn normalised_f64(row: &[f32]) -> Vec<f64> {
    let norm = row.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    row.iter().map(|&x| x as f64 / norm).collect()
}

/// Weighted multi-modal reference: `pairs[m] = (weight, queries_m, candidates_m)`. A query is
/// used if its id is in every query set (in the order of the first), a candidate if its id is
/// in every candidate set; score = Σ_m weight_m · cos(q_m, c_m). Returns per query
/// `(query_id, [(candidate_id, score)])`, best first, at most `k` each.
pub fn topk_reference(pairs: &[(f64, RawEmbeddings, RawEmbeddings)], k: usize) -> Vec<(String, Vec<(String, f64)>)> {
    let index = |e: &RawEmbeddings| -> HashMap<String, usize> {
        e.ids.iter().enumerate().map(|(i, id)| (id.clone(), i)).collect()
    };
    let q_index: Vec<_> = pairs.iter().map(|(_, q, _)| index(q)).collect();
    let c_index: Vec<_> = pairs.iter().map(|(_, _, c)| index(c)).collect();
    let query_ids: Vec<&String> = pairs[0].1.ids.iter().filter(|id| q_index.iter().all(|m| m.contains_key(*id))).collect();
    let cand_ids: Vec<&String> = pairs[0].2.ids.iter().filter(|id| c_index.iter().all(|m| m.contains_key(*id))).collect();
    let mut out = Vec::new();
    for qid in query_ids {
        let mut scored: Vec<(String, f64)> = Vec::with_capacity(cand_ids.len());
        for cid in &cand_ids {
            let mut score = 0.0;
            for (m, (w, q, c)) in pairs.iter().enumerate() {
                let qi = q_index[m][qid];
                let ci = c_index[m][*cid];
                let qv = normalised_f64(&q.rows[qi * q.dim..(qi + 1) * q.dim]);
                let cv = normalised_f64(&c.rows[ci * c.dim..(ci + 1) * c.dim]);
                let mut dot = 0.0;
                for d in 0..q.dim {
                    dot += qv[d] * cv[d];
                }
                score += w * dot;
            }
            scored.push(((*cid).clone(), score));
        }
        scored.sort_by(|a, b| match b.1.partial_cmp(&a.1) {
            Some(Ordering::Equal) | None => a.0.cmp(&b.0),
            Some(o) => o,
        });
        scored.truncate(k);
        out.push((qid.clone(), scored));
    }
    out
}
