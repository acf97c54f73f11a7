//! Inputs of `multimat plot`: the pre-training `metrics.jsonl`, `retrieval.json` (written by
//! `multimat eval retrieval`), `discovery.json` (`multimat eval discovery`) and a fine-tuning run
//! directory (`result.json`, `predictions.csv`, `metrics.jsonl`). Every reader
//! checks the values a figure relies on and names the file (and line or record) in its errors.

use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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

/// One epoch of a fine-tuning run's `metrics.jsonl` (fields written by `finetune::run`).
#[derive(Clone, Debug, PartialEq)]
pub struct FtEpoch {
    pub epoch: u64,
    /// Mean training loss (in model units: standardised targets unless standardisation is off).
    pub train_loss: f64,
    /// Validation MAE in the target's units.
    pub val_mae: f64,
}

/// What `multimat plot finetune` draws from a fine-tuning run directory.
#[derive(Clone, Debug)]
pub struct FinetuneRun {
    pub target: String,
    pub units: String,
    /// Components per material (1 for a scalar target).
    pub width: usize,
    /// Test-set true and predicted values, (n, width) row-major, from `predictions.csv`.
    pub truth: Vec<f64>,
    pub pred: Vec<f64>,
    /// Learning curves, sorted by epoch (an epoch logged twice keeps its last line).
    pub epochs: Vec<FtEpoch>,
}

/// Read `result.json` (target, units), `predictions.csv` and `metrics.jsonl` of the fine-tuning
/// run in `dir`; errors name the file and line.
pub fn read_finetune_run(dir: &Path) -> Result<FinetuneRun> {
    let result_path = dir.join("result.json");
    let text = std::fs::read_to_string(&result_path)
        .with_context(|| format!("reading {} (is {} a finished `multimat finetune` run directory?)", result_path.display(), dir.display()))?;
    let result: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", result_path.display()))?;
    let target = result["target"].as_str().with_context(|| format!("{}: no \"target\"", result_path.display()))?.to_string();
    let units = result["units"].as_str().unwrap_or("").to_string();

    let pred_path = dir.join("predictions.csv");
    let text = std::fs::read_to_string(&pred_path).with_context(|| format!("reading {}", pred_path.display()))?;
    let mut lines = text.lines().enumerate();
    let header = lines.next().map(|(_, l)| l.trim()).unwrap_or("");
    ensure!(
        header == "material_id,component,target,prediction",
        "{}: header {header:?}, expected \"material_id,component,target,prediction\"",
        pred_path.display()
    );
    let (mut truth, mut pred, mut components) = (Vec::new(), Vec::new(), Vec::new());
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{} line {}", pred_path.display(), i + 1);
        // Split from the right: the three numeric fields never hold a comma, an id might.
        let f: Vec<&str> = line.rsplitn(4, ',').collect();
        ensure!(f.len() == 4, "{}: expected 4 fields (material_id,component,target,prediction), got {}", at(), f.len());
        let num = |s: &str, what: &str| -> Result<f64> {
            let v: f64 = s.trim().parse().with_context(|| format!("{}: {what} {s:?} is not a number", at()))?;
            ensure!(v.is_finite(), "{}: {what} {v} is not finite", at());
            Ok(v)
        };
        pred.push(num(f[0], "prediction")?);
        truth.push(num(f[1], "target")?);
        components.push(f[2].trim().parse::<usize>().with_context(|| format!("{}: component {:?} is not an index", at(), f[2]))?);
    }
    ensure!(!truth.is_empty(), "{}: no test predictions (was the test split empty?)", pred_path.display());
    let width = components.iter().max().unwrap() + 1;
    // Rows are material-major with components 0..width in order (as `finetune::run` writes them).
    if let Some(k) = components.iter().enumerate().position(|(k, &c)| c != k % width) {
        bail!("{}: row {} has component {}, expected {} (components 0..{width} of each material in order)", pred_path.display(), k + 1, components[k], k % width);
    }
    ensure!(truth.len() % width == 0, "{}: {} rows is not a whole number of {width}-component materials", pred_path.display(), truth.len());

    let metrics_path = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&metrics_path).with_context(|| format!("reading {}", metrics_path.display()))?;
    let mut by_epoch: BTreeMap<u64, FtEpoch> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{} line {}", metrics_path.display(), i + 1);
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{}: not JSON", at()))?;
        let epoch = v["epoch"].as_u64().with_context(|| format!("{}: no integer \"epoch\"", at()))?;
        let train_loss = v["train_loss"].as_f64().with_context(|| format!("{}: no numeric \"train_loss\"", at()))?;
        let val_mae = v["val_mae"].as_f64().with_context(|| format!("{}: no numeric \"val_mae\"", at()))?;
        ensure!(train_loss.is_finite() && val_mae.is_finite(), "{}: train_loss {train_loss} / val_mae {val_mae} not finite", at());
        by_epoch.insert(epoch, FtEpoch { epoch, train_loss, val_mae });
    }
    ensure!(!by_epoch.is_empty(), "{}: no epochs logged", metrics_path.display());
    Ok(FinetuneRun { target, units, width, truth, pred, epochs: by_epoch.into_values().collect() })
}

/// The caption a figure carries when its data has modalities that multimat computed instead of
/// reading them from DFT (provenance `approx:…`, multimat-generated text, `synthetic:…`), naming
/// each with its method and how many records have it; `None` when every modality is real data.
pub fn approximation_caption(shards: &[PathBuf]) -> Result<Option<String>> {
    let mut approximated: BTreeMap<String, (String, usize)> = BTreeMap::new(); // modality → (method, records)
    let mut records = 0usize;
    for path in crate::train::dataset::shard_paths(shards)? {
        for provenance in crate::shard::ShardReader::open(&path)?.provenance()? {
            records += 1;
            for (modality, source) in &provenance.sources {
                if let Some(method) = approximation_method(source) {
                    approximated.entry(modality.clone()).or_insert((method, 0)).1 += 1;
                }
            }
        }
    }
    if approximated.is_empty() {
        return Ok(None);
    }
    let parts: Vec<String> = approximated.iter().map(|(m, (how, n))| format!("{m} ({how}, {n} of {records})")).collect();
    Ok(Some(format!("Approximations computed by multimat, not DFT: {}", parts.join("; "))))
}

/// `approx:tight-binding (…)` → "tight-binding"; multimat's generated text → "generated text";
/// `synthetic:…` → "synthetic"; real sources (files, Robocrystallographer) → `None`.
fn approximation_method(source: &str) -> Option<String> {
    let (scheme, rest) = source.split_once(':')?;
    match scheme {
        "approx" => Some(rest.split([' ', '(']).next().unwrap_or(rest).to_string()),
        "generated" if !rest.starts_with("robocrys") => Some("generated text".into()),
        "synthetic" => Some("synthetic".into()),
        _ => None,
    }
}

/// `data.shards` of a run directory's `config.resolved.toml` (pre-training or fine-tuning), if
/// the run has one.
pub fn run_shards(run_dir: &Path) -> Option<Vec<PathBuf>> {
    let text = std::fs::read_to_string(run_dir.join("config.resolved.toml")).ok()?;
    let value: toml::Value = toml::from_str(&text).ok()?;
    let shards = value.get("data")?.get("shards")?.as_array()?;
    Some(shards.iter().filter_map(|s| s.as_str().map(PathBuf::from)).collect())
}

#[cfg(test)]
mod approximation_tests {
    use super::approximation_method;

    #[test]
    fn approximate_sources_are_named_by_method_and_real_ones_are_not() {
        let dos = String::from_utf8_lossy(crate::approx::demo_data::APPROX_DOS_SOURCE).into_owned();
        let rho = String::from_utf8_lossy(crate::approx::demo_data::APPROX_DENSITY_SOURCE).into_owned();
        assert_eq!(approximation_method(&dos).as_deref(), Some("tight-binding"));
        assert_eq!(approximation_method(&rho).as_deref(), Some("promolecular"));
        assert_eq!(approximation_method(crate::approx::demo_data::GENERATED_TEXT_SOURCE).as_deref(), Some("generated text"));
        assert_eq!(approximation_method("generated:robocrys 0.2.9 (/usr/bin/python3)"), None);
        assert_eq!(approximation_method("/data/mp-149/vasprun.xml"), None);
    }
}
