//! The screen over MPI ranks (issue 7): candidates are sharded over ranks by contiguous row
//! ranges (`blocked::shard_range`), each rank streams its range through the same blocked top-k
//! engine as the single-process screen, the per-rank hit lists travel to rank 0 as bytes
//! (`topk::encode_hits`), and rank 0 k-way merges them (`topk::merge_topk`) and alone writes the
//! CSV. Similarities are bit-identical whatever the partition (see `blocked`) and the merge
//! applies the same total order (similarity, then id), so the CSV is byte-identical to the
//! single-process one for any number of ranks, ties included.
//!
//! Failure protocol (no hangs): every rank wraps all its local work — opening and validating the
//! inputs, reading the queries, screening its range — in one `Result`, and then every rank takes
//! part in exactly the same collectives whatever happened. The first collective carries either
//! the rank's hits or its error message, tagged; so every rank learns whether any rank failed and
//! all return an error together (rank 0 with every rank's message). Rank 0's CSV write is the
//! last fallible step; its outcome is broadcast so that a failed write fails every rank too.

use super::blocked::{shard_range, topk_over_range_with_stats, ScreenConfig, ScreenStats};
use super::io::{prepare, write_hits_csv, ScreenInputs};
use super::topk::{decode_hits, encode_hits, merge_topk, Hit};
use crate::dist::Dist;
use anyhow::{bail, Result};
use std::path::Path;
use std::time::Instant;

/// First byte of a rank's message to the others.
const TAG_OK: u8 = 0;
const TAG_ERR: u8 = 1;

/// What rank 0 reports after a distributed screen (the other ranks return `None`).
#[derive(Debug, Clone)]
pub struct ScreenReport {
    pub queries: usize,
    pub candidates: usize,
    /// Seconds each rank spent in its local screen (rank order).
    pub rank_screen_s: Vec<f64>,
    /// Seconds rank 0 spent gathering and merging after its own local screen.
    pub merge_s: f64,
    /// Bytes of encoded hit lists that travelled (all ranks together).
    pub hit_bytes: usize,
    /// Input summary lines (for the log).
    pub summary: Vec<String>,
}

/// One rank's local work: its candidate range screened. Returns the query ids, the hits over
/// the range, the global candidate count, the local time and the input summary.
fn local_screen(inputs: &ScreenInputs, k: usize, cfg: &ScreenConfig, dist: &Dist) -> Result<(Vec<String>, Vec<Vec<Hit>>, usize, f64, Vec<String>)> {
    let prepared = prepare(inputs)?;
    let n = prepared.candidates.len();
    let range = shard_range(n, dist.rank(), dist.world_size());
    let t = Instant::now();
    let stats = ScreenStats::default();
    let hits = topk_over_range_with_stats(&prepared.queries, &*prepared.candidates, range.clone(), k, cfg, &stats)
        .map_err(|e| e.context(format!("screening candidate rows {}..{}", range.start, range.end)))?;
    Ok((prepared.queries.ids, hits, n, t.elapsed().as_secs_f64(), prepared.summary))
}

/// Screen `inputs` with every rank of `dist` and write the merged top-k CSV to `out` on rank 0.
/// With a single-process `dist` this is exactly the serial screen. Every rank returns `Err` if
/// any rank failed (rank 0's error lists each failing rank's message).
pub fn screen_distributed(inputs: &ScreenInputs, k: usize, cfg: &ScreenConfig, out: &Path, dist: &Dist) -> Result<Option<ScreenReport>> {
    anyhow::ensure!(k >= 1, "-k must be at least 1");
    // Only rank 0 draws a progress bar (ranks share one terminal).
    let cfg = ScreenConfig { progress: cfg.progress && dist.is_root(), ..cfg.clone() };
    let local = local_screen(inputs, k, &cfg, dist);

    // Message: tag, then (ok) local seconds as f64 bits + encoded hits, or (err) the message.
    let mut message = Vec::new();
    match &local {
        Ok((_, hits, _, secs, _)) => {
            message.push(TAG_OK);
            message.extend_from_slice(&secs.to_bits().to_le_bytes());
            // Rank 0 keeps its own hits; only the others ship theirs.
            if !dist.is_root() {
                message.extend_from_slice(&encode_hits(hits));
            }
        }
        Err(e) => {
            message.push(TAG_ERR);
            message.extend_from_slice(format!("{e:#}").as_bytes());
        }
    }
    let t_gather = Instant::now();
    // Every rank sees every message, so all agree on success without a second round. (A
    // root-only gatherv would save memory on the other ranks; `dist` offers all-gather.)
    let messages = dist.all_gather_bytes(&message);
    let failures: Vec<(usize, String)> = messages
        .iter()
        .enumerate()
        .filter(|(_, m)| m.first() != Some(&TAG_OK))
        .map(|(r, m)| (r, String::from_utf8_lossy(m.get(1..).unwrap_or_default()).into_owned()))
        .collect();
    if !failures.is_empty() {
        if dist.is_root() || dist.world_size() == 1 {
            let text: Vec<String> = if dist.world_size() == 1 {
                failures.into_iter().map(|(_, m)| m).collect()
            } else {
                failures.into_iter().map(|(r, m)| format!("rank {r}: {m}")).collect()
            };
            bail!("{}", text.join("\n"));
        }
        let ranks: Vec<String> = failures.iter().map(|(r, _)| r.to_string()).collect();
        bail!("rank {}: stopping because rank(s) {} failed (rank 0 prints their errors)", dist.rank(), ranks.join(", "));
    }
    let (query_ids, own_hits, n, _, summary) = local.expect("no failure was reported, so this rank succeeded");

    let mut write_result: Result<()> = Ok(());
    let mut report = None;
    if dist.is_root() {
        let result = (|| -> Result<ScreenReport> {
            let mut parts = Vec::with_capacity(messages.len());
            let mut rank_screen_s = Vec::with_capacity(messages.len());
            let hit_bytes = messages.iter().map(Vec::len).sum();
            for (r, m) in messages.iter().enumerate() {
                anyhow::ensure!(m.len() >= 9, "rank {r} sent a truncated result ({} bytes)", m.len());
                rank_screen_s.push(f64::from_bits(u64::from_le_bytes(m[1..9].try_into()?)));
                if r == 0 {
                    parts.push(Vec::new());
                } else {
                    parts.push(decode_hits(&m[9..]).map_err(|e| e.context(format!("decoding rank {r}'s hits")))?);
                }
            }
            parts[0] = own_hits;
            let merged = if parts.len() == 1 { parts.pop().unwrap_or_default() } else { merge_topk(parts, k)? };
            let merge_s = t_gather.elapsed().as_secs_f64();
            write_hits_csv(out, &query_ids, &merged)?;
            Ok(ScreenReport { queries: query_ids.len(), candidates: n, rank_screen_s, merge_s, hit_bytes, summary })
        })();
        match result {
            Ok(r) => report = Some(r),
            Err(e) => write_result = Err(e),
        }
    }
    // Rank 0's merge/write outcome, so no rank exits 0 when the output was not written.
    let verdict = dist.broadcast_bytes(match &write_result {
        Ok(()) => vec![TAG_OK],
        Err(e) => {
            let mut v = vec![TAG_ERR];
            v.extend_from_slice(format!("{e:#}").as_bytes());
            v
        }
    });
    write_result?;
    if verdict.first() != Some(&TAG_OK) {
        bail!("rank {}: rank 0 failed to merge or write {}: {}", dist.rank(), out.display(), String::from_utf8_lossy(verdict.get(1..).unwrap_or_default()));
    }
    Ok(report)
}
