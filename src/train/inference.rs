//! Inference helpers shared by pre-training (its end-of-run retrieval), `embed`, `eval` and
//! fine-tuning: the held-out split rule, per-modality embeddings of records, cross-modal
//! retrieval metrics, and loading a checkpoint's weights into a model.

use super::checkpoint;
use super::dataset::Dataset;
use super::model::MultiMatModel;
use crate::dist::Dist;
use crate::engine::ops::l2norm;
use crate::engine::Module;
use crate::eval::retrieval::{match_ranks, metrics, RetrievalMetrics};
use crate::loss::Modality;
use crate::model::StepContext;
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// The ε of `F.normalize` used on every embedding.
pub const L2_EPS: f32 = 1e-12;

/// Records held out for evaluation: a hash of (seed, id) below the fraction. Independent of
/// record order and shard layout.
pub fn is_holdout(id: &str, seed: u64, fraction: f64) -> bool {
    if fraction <= 0.0 {
        return false;
    }
    let h = Sha256::digest(format!("{seed}:{id}").as_bytes());
    let x = u64::from_le_bytes(h[..8].try_into().unwrap()) as f64 / u64::MAX as f64;
    x < fraction
}

/// Embeddings (n, D), L2-normalised, of `records` (all having modality `m`), in eval mode.
pub fn embed_records(model: &mut MultiMatModel, ds: &Dataset, m: Modality, records: &[usize]) -> Result<Vec<f32>> {
    let single = Dist::single();
    let ctx = StepContext { train: false, dist: &single, comm: None, dropout_seed: 0 };
    model.set_training(false);
    let d = model.embed_dim;
    let enc = model.encoder(m).with_context(|| format!("model has no {} encoder", m.name()))?;
    let mut out = Vec::with_capacity(records.len() * d);
    let chunks: Vec<&[usize]> = records.chunks(64).collect();
    let preparer = enc.input_preparer();
    ds.for_each_prepared(m, &chunks, preparer.as_ref(), |_, inputs| {
        let z = enc.forward_prepared(inputs, &ctx)?;
        let (y, _) = l2norm(&z, L2_EPS);
        out.extend_from_slice(&y.to_host()?); // the embeddings leave the device here
        Ok(())
    })?;
    Ok(out)
}

/// Retrieval metrics for every ordered pair of the model's modalities over `records`.
pub fn evaluate_retrieval(model: &mut MultiMatModel, ds: &Dataset, records: &[usize]) -> Result<Vec<RetrievalMetrics>> {
    let mods = model.modalities.clone();
    let d = model.embed_dim;
    let mut out = Vec::new();
    for &a in &mods {
        for &b in &mods {
            if a == b {
                continue;
            }
            let both: Vec<usize> = records.iter().copied().filter(|&r| ds.has(a, r) && ds.has(b, r)).collect();
            if both.len() < 2 {
                continue;
            }
            let ea = embed_records(model, ds, a, &both)?;
            let eb = embed_records(model, ds, b, &both)?;
            let ranks = match_ranks(&ea, &eb, both.len(), d);
            out.push(metrics(a.name(), b.name(), &ranks));
        }
    }
    Ok(out)
}

/// Copy a checkpoint's parameters and BatchNorm buffers into `model` (names and shapes checked;
/// the first mismatch is the error). Shared by resuming and by evaluation.
pub fn load_model_weights(model: &mut MultiMatModel, c: &checkpoint::Checkpoint) -> Result<()> {
    let mut err: Option<anyhow::Error> = None;
    model.visit_params(&mut |p| {
        if err.is_none() {
            match c.tensor(&format!("param.{}", p.name), &p.value.shape) {
                Ok(v) => p.value.data_mut().copy_from_slice(v),
                Err(e) => err = Some(e),
            }
        }
    });
    model.visit_buffers(&mut |name, b| {
        if err.is_none() {
            match c.tensor(&format!("buffer.{name}"), &b.shape.clone()) {
                Ok(v) => b.data_mut().copy_from_slice(v),
                Err(e) => err = Some(e),
            }
        }
    });
    err.map_or(Ok(()), Err)
}
