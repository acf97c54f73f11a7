//! Inputs of `multimat plot`: the pre-training `metrics.jsonl`, `retrieval.json` (written by
//! `multimat eval retrieval`) and `discovery.json` (`multimat eval discovery`). Every reader
//! checks the values a figure relies on and names the file (and line or record) in its errors.

use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// One optimiser step of `metrics.jsonl` (fields written by `train::pretrain`).
#[derive(Clone, Debug, PartialEq)]
pub struct StepMetrics {
    pub step: u64,
    pub loss: f64,
    pub lr: Option<f64>,
    /// Per-term losses ("crystal-dos" → value) when the log carries them.
    pub term_losses: BTreeMap<String, f64>,
}

/// Every step of a metrics log, sorted by step. A step logged twice (a run resumed from an
/// earlier checkpoint re-runs steps) keeps its last line.
pub fn read_metrics(path: &Path) -> Result<Vec<StepMetrics>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading metrics log {}", path.display()))?;
    let mut by_step: BTreeMap<u64, StepMetrics> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{} line {}", path.display(), i + 1);
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{}: not JSON", at()))?;
        let step = v["step"].as_u64().with_context(|| format!("{}: no integer \"step\"", at()))?;
        let loss = v["loss"].as_f64().with_context(|| format!("{}: no numeric \"loss\"", at()))?;
        ensure!(loss.is_finite(), "{}: loss {loss} is not finite", at());
        let lr = v.get("lr").and_then(|x| x.as_f64());
        let mut term_losses = BTreeMap::new();
        if let Some(terms) = v.get("terms").and_then(|t| t.as_array()) {
            for t in terms {
                if let (Some(name), Some(l)) = (t["name"].as_str(), t.get("loss").and_then(|x| x.as_f64())) {
                    term_losses.insert(name.to_string(), l);
                }
            }
        }
        by_step.insert(step, StepMetrics { step, loss, lr, term_losses });
    }
    ensure!(!by_step.is_empty(), "{}: no steps logged", path.display());
    Ok(by_step.into_values().collect())
}

// The report types are the writer's own (`eval::report`, data-specs/eval-reports-v1.md), so the
// schema has one definition; the checks a figure relies on are here.
pub use crate::eval::report::{DiscoveryCandidate, DiscoveryReport, DiscoveryTarget, RetrievalPair, RetrievalReport};

/// (top-1, top-5, top-10, top-25) accuracies of a pair.
pub fn tops(p: &RetrievalPair) -> [f64; 4] {
    [p.top1, p.top5, p.top10, p.top25]
}

/// Chance top-k accuracy of a pair: min(k, n)/n over its candidate pool of n (the spec's rule),
/// falling back to k · chance_top1 when n is 0.
pub fn chance_topk(p: &RetrievalPair, k: usize, chance_top1: f64) -> f64 {
    if p.n > 0 { k.min(p.n) as f64 / p.n as f64 } else { (k as f64 * chance_top1).min(1.0) }
}

/// Read and check a retrieval report: accuracies in [0, 1] and non-decreasing in k.
pub fn read_retrieval(path: &Path) -> Result<RetrievalReport> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading retrieval report {}", path.display()))?;
    let r: RetrievalReport = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a retrieval report (expected split, n_materials, chance_top1, pairs[query, target, n, top1, top5, top10, top25, mean_rank, median_rank])", path.display()))?;
    ensure!(!r.pairs.is_empty(), "{}: \"pairs\" is empty", path.display());
    ensure!((0.0..=1.0).contains(&r.chance_top1), "{}: chance_top1 = {} is not in [0, 1]", path.display(), r.chance_top1);
    for (i, p) in r.pairs.iter().enumerate() {
        let t = tops(p);
        if let Some(x) = t.iter().find(|x| !(0.0..=1.0).contains(*x)) {
            bail!("{}: pairs[{i}] ({} → {}): accuracy {x} is not in [0, 1]", path.display(), p.query, p.target);
        }
        ensure!(t.windows(2).all(|w| w[0] <= w[1] + 1e-12), "{}: pairs[{i}] ({} → {}): top-k accuracies decrease with k: {t:?}", path.display(), p.query, p.target);
    }
    Ok(r)
}

/// The candidate with the smallest finite nMAE (the nearer one on ties), if any.
pub fn best_candidate(t: &DiscoveryTarget) -> Option<&DiscoveryCandidate> {
    t.candidates.iter().filter(|c| c.nmae.is_finite()).min_by(|a, b| a.nmae.total_cmp(&b.nmae))
}

/// Read and check a discovery report: both curves have `n_max` finite values.
pub fn read_discovery(path: &Path) -> Result<DiscoveryReport> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading discovery report {}", path.display()))?;
    let r: DiscoveryReport = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a discovery report (expected n_max, window_ev, mean_best_nmae, random_mean_best_nmae, n_targets, n_candidates, targets[target_id, candidates[id, similarity, nmae]])", path.display()))?;
    ensure!(r.n_max >= 1, "{}: n_max is 0", path.display());
    for (name, v) in [("mean_best_nmae", &r.mean_best_nmae), ("random_mean_best_nmae", &r.random_mean_best_nmae)] {
        ensure!(v.len() == r.n_max, "{}: {name} has {} values but n_max = {}", path.display(), v.len(), r.n_max);
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            bail!("{}: {name}[{i}] = {} is not finite", path.display(), v[i]);
        }
    }
    ensure!(r.window_ev[0] < r.window_ev[1], "{}: window_ev {:?} is empty", path.display(), r.window_ev);
    Ok(r)
}
