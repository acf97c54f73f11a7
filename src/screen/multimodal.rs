//! Multi-modal queries (the paper's proposed extension): score = Σ_m w_m · cos(q_m, c_m), e.g.
//! a target DOS and a target charge density against candidates that have both.
//!
//! Reduced to the single-modal engine by concatenation: with each part L2-normalised on its
//! own, [w₁q̂₁, w₂q̂₂] · [ĉ₁, ĉ₂] = w₁ cos(q₁, c₁) + w₂ cos(q₂, c₂). Queries are joined by id in
//! memory; candidates are joined while streaming the first file: the second file's ids are held
//! in a map (id → row; O(N) strings) and its rows are read in coalesced runs, so two files in the
//! same order cost one contiguous read per block.

use super::blocked::{CandidateSource, EmbeddingMatrix};
use crate::embeddings::{EmbeddingsReader, RowBlock};
use anyhow::{ensure, Result};
use std::collections::HashMap;
use std::ops::Range;

/// Rows of the second file that may be read in one go even if some in between are unused.
const MAX_GAP_ROWS: usize = 256;

/// Queries of both modalities joined by id (order of the first), each part normalised and
/// weighted. Returns the joined matrix and how many queries of each input were dropped.
pub fn join_queries(first: &EmbeddingMatrix, w1: f32, second: &EmbeddingMatrix, w2: f32) -> Result<(EmbeddingMatrix, usize, usize)> {
    ensure!(w1.is_finite() && w2.is_finite(), "weights must be finite, got {w1}, {w2}");
    let index: HashMap<&str, usize> = second.ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
    let dim = first.dim + second.dim;
    let mut ids = Vec::new();
    let mut rows = Vec::new(); // (n, d1 + d2)
    for (i, id) in first.ids.iter().enumerate() {
        if let Some(&j) = index.get(id.as_str()) {
            ids.push(id.clone());
            rows.extend(first.row(i).iter().map(|x| x * w1));
            rows.extend(second.row(j).iter().map(|x| x * w2));
        }
    }
    let joined = ids.len();
    Ok((EmbeddingMatrix { ids, rows, dim }, first.len() - joined, second.len() - joined))
}

/// Candidates present in both files, streamed in the first file's order.
pub struct JoinedCandidates {
    first: EmbeddingsReader,
    second: EmbeddingsReader,
    second_row: HashMap<String, usize>,
    /// Candidates present in both files.
    pub matched: usize,
}

impl JoinedCandidates {
    pub fn new(first: EmbeddingsReader, second: EmbeddingsReader) -> Result<Self> {
        let mut second_row = HashMap::with_capacity(second.len());
        for r in crate::embeddings::block_ranges(0..second.len(), 1 << 16) {
            let start = r.start;
            for (i, id) in second.read_ids(r)?.into_iter().enumerate() {
                second_row.insert(id, start + i);
            }
        }
        let mut matched = 0;
        for r in crate::embeddings::block_ranges(0..first.len(), 1 << 16) {
            matched += first.read_ids(r)?.iter().filter(|id| second_row.contains_key(*id)).count();
        }
        ensure!(
            matched > 0,
            "no candidate id is in both {} and {}: nothing to screen",
            first.path().display(),
            second.path().display()
        );
        Ok(JoinedCandidates { first, second, second_row, matched })
    }

    pub fn first(&self) -> &EmbeddingsReader {
        &self.first
    }
    pub fn second(&self) -> &EmbeddingsReader {
        &self.second
    }
}

impl CandidateSource for JoinedCandidates {
    /// Ranges address the first file's rows.
    fn len(&self) -> usize {
        self.first.len()
    }
    fn dim(&self) -> usize {
        self.first.dim() + self.second.dim()
    }
    fn read_block(&self, rows: Range<usize>) -> Result<RowBlock> {
        let a = self.first.read_block_normalised(rows.clone())?;
        // (position in a, row in second), sorted by second row for coalesced reads.
        let mut wanted: Vec<(usize, usize)> = a
            .ids
            .iter()
            .enumerate()
            .filter_map(|(i, id)| self.second_row.get(id).map(|&j| (i, j)))
            .collect();
        wanted.sort_by_key(|&(_, j)| j);
        let (d1, d2) = (self.first.dim(), self.second.dim());
        let mut second_rows: Vec<Option<Vec<f32>>> = vec![None; a.len()];
        let mut run_start = 0;
        while run_start < wanted.len() {
            let mut run_end = run_start + 1;
            while run_end < wanted.len() && wanted[run_end].1 - wanted[run_end - 1].1 <= MAX_GAP_ROWS {
                run_end += 1;
            }
            let span = wanted[run_start].1..wanted[run_end - 1].1 + 1;
            let b = self.second.read_block_normalised(span.clone())?;
            for &(i, j) in &wanted[run_start..run_end] {
                second_rows[i] = Some(b.row(j - span.start).to_vec());
            }
            run_start = run_end;
        }
        let mut ids = Vec::with_capacity(wanted.len());
        let mut out = Vec::with_capacity(wanted.len() * (d1 + d2)); // (n, d1 + d2)
        for (i, second) in second_rows.into_iter().enumerate() {
            if let Some(v) = second {
                ids.push(a.ids[i].clone());
                out.extend_from_slice(a.row(i));
                out.extend_from_slice(&v);
            }
        }
        Ok(RowBlock { start: rows.start, ids, rows: out, dim: d1 + d2 })
    }
}
