//! The JSON files `multimat eval` writes (`retrieval.json`, `discovery.json`) as serde types, so
//! readers (`multimat plot`, tests, notebooks) share one definition of the schema.
//!
//! Conventions: accuracies are fractions in 0..1, ranks are 1-based, nMAE is Equation 5 of the
//! paper (dimensionless), similarities are cosine similarities.

use super::checkpoint_model::{LoadedModel, Split};
use super::retrieval::RetrievalMetrics;
use crate::train::dataset::Dataset;
use crate::train::inference::evaluate_retrieval;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// `multimat eval retrieval` output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetrievalReport {
    /// `holdout`, `train` or `all`.
    pub split: String,
    /// Records in the split.
    pub n_materials: usize,
    /// 1 / n_materials: top-1 accuracy of a random ranking over the whole split.
    pub chance_top1: f64,
    /// Every ordered pair of the checkpoint's modalities with at least 2 materials having both.
    pub pairs: Vec<RetrievalPair>,
}

impl RetrievalReport {
    /// Evaluate every ordered modality pair of `loaded` on `split` of `ds` — the same
    /// computation pre-training runs at its end (`train::inference::evaluate_retrieval`).
    pub fn evaluate(loaded: &mut LoadedModel, ds: &Dataset, split: Split) -> Result<RetrievalReport> {
        let records = loaded.select(ds, split);
        if records.len() < 2 {
            bail!(
                "the {} split has {} record(s) (checkpoint data.holdout_fraction = {}, seed {}); retrieval needs at least 2 — \
                 try --split train or --split all",
                split.name(),
                records.len(),
                loaded.config.data.holdout_fraction,
                loaded.config.run.seed
            );
        }
        let metrics = evaluate_retrieval(&mut loaded.model, ds, &records)?;
        if metrics.is_empty() {
            bail!("no modality pair has 2 or more records of the {} split with both modalities", split.name());
        }
        Ok(RetrievalReport {
            split: split.name().to_string(),
            n_materials: records.len(),
            chance_top1: 1.0 / records.len() as f64,
            pairs: metrics.iter().map(RetrievalPair::from_metrics).collect(),
        })
    }
}

/// Retrieval of `target`-modality embeddings from `query`-modality ones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetrievalPair {
    pub query: String,
    pub target: String,
    /// Materials of the split having both modalities (the candidate pool).
    pub n: usize,
    pub top1: f64,
    pub top5: f64,
    pub top10: f64,
    pub top25: f64,
    pub mean_rank: f64,
    pub median_rank: f64,
}

impl RetrievalPair {
    pub fn from_metrics(m: &RetrievalMetrics) -> RetrievalPair {
        let at = |k: usize| m.top_k.iter().find(|(kk, _)| *kk == k).map(|(_, v)| *v).unwrap_or(f64::NAN);
        RetrievalPair {
            query: m.query.clone(),
            target: m.target.clone(),
            n: m.n,
            top1: at(1),
            top5: at(5),
            top10: at(10),
            top25: at(25),
            mean_rank: m.mean_rank,
            median_rank: m.median_rank,
        }
    }
}

/// `multimat eval discovery` output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiscoveryReport {
    pub n_max: usize,
    /// The Equation 5 window around the Fermi level, eV.
    pub window_ev: [f64; 2],
    /// Entry n−1: best-of-n nMAE among the n nearest candidates, averaged over targets.
    pub mean_best_nmae: Vec<f64>,
    /// Entry n−1: expected best-of-n nMAE of n random candidates, averaged over targets.
    pub random_mean_best_nmae: Vec<f64>,
    pub n_targets: usize,
    pub n_candidates: usize,
    pub targets: Vec<DiscoveryTarget>,
}

/// One held-out DOS target and its n_max nearest candidate crystals, best first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiscoveryTarget {
    pub target_id: String,
    pub candidates: Vec<DiscoveryCandidate>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiscoveryCandidate {
    pub id: String,
    /// Cosine similarity of the target's DOS embedding and the candidate's crystal embedding.
    pub similarity: f64,
    /// Equation 5 between the target's DOS and the candidate's DOS.
    pub nmae: f64,
}
