//! A fine-tuned model applied to new materials (`multimat predict`, and `multimat embed` with a
//! fine-tuning checkpoint): the crystal encoder + head rebuilt from a fine-tuning run's best
//! checkpoint, with everything the run decided — encoder settings, target name, units, target
//! standardisation and the crystal-graph settings of its training shards — taken from the
//! checkpoint, never re-specified.
//!
//! Predictions are made in fixed batches of `batch` records (batch i holds records
//! i·batch…(i+1)·batch of the caller's order) and batch i runs on rank i mod world, so every
//! prediction is computed from the same batch whatever the number of ranks: the output of
//! `mpirun -n R` is identical to one process's.

use super::config::FinetuneConfig;
use super::metrics::Standardizer;
use super::model::{load_module_weights, FinetuneModel};
use crate::crystal::GraphParams;
use crate::dist::Dist;
use crate::engine::ops::l2norm::l2norm_forward;
use crate::engine::Module;
use crate::model::{Modality, StepContext};
use crate::train::checkpoint::{self, Checkpoint};
use crate::train::dataset::{shard_paths, Dataset};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// ε of the embedding normalisation, as pre-training's embeddings use.
const L2_EPS: f32 = 1e-12;

/// `kind` of a fine-tuning checkpoint's metadata.
pub const FINETUNE_KIND: &str = "multimat-finetune";

/// A fine-tuning run's best model, ready for inference.
pub struct FinetunedModel {
    pub model: FinetuneModel,
    pub config: FinetuneConfig,
    pub standardizer: Standardizer,
    pub target: String,
    pub units: String,
    /// Target components (1 for a scalar).
    pub width: usize,
    /// Crystal-graph settings of the shards the run trained on.
    pub graph_params: GraphParams,
    pub json_path: PathBuf,
    /// Epoch of the checkpoint (the best validation epoch).
    pub epoch: u64,
    /// SHA-256 of the checkpoint's tensors file: identifies the weights.
    pub tensors_sha256: String,
}

/// The checkpoint `path` names when it is a fine-tuning run: a run directory (its `best/`),
/// a `best/` directory, or a `step-*.json`; `None` when it is none of these.
pub fn find_finetune_checkpoint(path: &Path) -> Result<Option<Checkpoint>> {
    let c = if path.is_dir() && path.join("best").is_dir() {
        checkpoint::latest(&path.join("best"))?
            .with_context(|| format!("no complete checkpoint in {}", path.join("best").display()))?
    } else {
        crate::eval::checkpoint_model::resolve_checkpoint(path)?
    };
    Ok((c.meta["kind"].as_str() == Some(FINETUNE_KIND)).then_some(c))
}

/// Whether `path` names a fine-tuning checkpoint (a run or best/ directory, or a JSON whose
/// `kind` says so), judged from the names and the small JSON only.
pub fn names_finetune_checkpoint(path: &Path) -> bool {
    if path.is_dir() {
        return path.join("best").is_dir() || (path.file_name().is_some_and(|n| n == "best") && path.parent().is_some_and(|p| p.join("split.csv").is_file()));
    }
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v["kind"].as_str() == Some(FINETUNE_KIND))
}

impl FinetunedModel {
    /// Load a fine-tuning run's best checkpoint (see [`find_finetune_checkpoint`]).
    pub fn load(path: &Path) -> Result<FinetunedModel> {
        let c = find_finetune_checkpoint(path)?.with_context(|| {
            format!("{}: not a fine-tuning checkpoint (expected a `multimat finetune` run directory, its best/ or a best/step-*.json)", path.display())
        })?;
        Self::from_checkpoint(c)
    }

    /// Rebuild the model of a loaded fine-tuning checkpoint.
    pub fn from_checkpoint(c: Checkpoint) -> Result<FinetunedModel> {
        let at = c.json_path.display().to_string();
        let config = FinetuneConfig::from_stored(&c.meta["config"])
            .with_context(|| format!("{at}: the stored fine-tuning config cannot be read"))?;
        let standardizer: Standardizer = serde_json::from_value(c.meta["standardizer"].clone())
            .with_context(|| format!("{at}: the stored target standardisation cannot be read"))?;
        let width = standardizer.mean.len();
        if width == 0 || standardizer.scale.len() != width {
            bail!("{at}: the stored standardisation has {} means and {} scales", width, standardizer.scale.len());
        }
        let graph_params = match c.meta.get("graph_params").filter(|v| !v.is_null()) {
            Some(v) => serde_json::from_value(v.clone()).with_context(|| format!("{at}: the stored graph settings cannot be read"))?,
            // Checkpoints written before the settings were stored: the training shards say.
            None => training_graph_params(&config).with_context(|| {
                format!("{at}: the checkpoint does not record its crystal-graph settings and its training shards cannot be read")
            })?,
        };
        let mut model = FinetuneModel::new(&config, width, config.run.seed)?;
        load_module_weights(&mut model, &c).map_err(|e| e.context(format!("{at}: weights do not match the model its config builds")))?;
        model.set_training(false);
        Ok(FinetunedModel {
            model,
            target: c.meta["target"].as_str().unwrap_or(&config.data.target).to_string(),
            units: c.meta["units"].as_str().unwrap_or("").to_string(),
            epoch: c.meta["epoch"].as_u64().unwrap_or_else(|| c.step()),
            tensors_sha256: c.meta["tensors_sha256"].as_str().unwrap_or_default().to_string(),
            json_path: c.json_path,
            config,
            standardizer,
            width,
            graph_params,
        })
    }

    /// Moves the encoder and head to `device` (inference on a GPU or the simulator).
    pub fn to_device(&mut self, device: crate::engine::Device) -> Result<()> {
        self.model.to_device(device).with_context(|| format!("{}: moving the model to {device}", self.json_path.display()))
    }

    /// A readable model id: the run directory's name and the epoch, e.g. `kvrh@epoch-12`.
    pub fn model_id(&self) -> String {
        let run = self
            .json_path
            .parent()
            .filter(|d| d.file_name().is_some_and(|n| n == "best"))
            .and_then(|d| d.parent())
            .and_then(|d| d.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "finetune".into());
        format!("{run}@epoch-{}", self.epoch)
    }

    /// Predictions (records.len(), width) in the target's units for `records` of `ds` (all with
    /// a crystal graph), in fixed batches of `batch`; this rank computes batches rank, rank +
    /// world, …, and the values of all batches come back on every rank. `on_batch(n)` is called
    /// after each of this rank's batches with its record count (progress).
    pub fn predict(&mut self, ds: &Dataset, records: &[usize], batch: usize, dist: &Dist, on_batch: &mut dyn FnMut(usize)) -> Result<Vec<f64>> {
        let width = self.width;
        let outputs = self.per_batch(ds, records, batch, dist, width, on_batch, |model, z| model.head.forward(z).to_host())?;
        let z: Vec<f64> = outputs.iter().map(|&v| v as f64).collect();
        Ok(self.standardizer.inverse(&z))
    }

    /// L2-normalised crystal embeddings (records.len(), embed_dim) of the fine-tuned encoder,
    /// batched and shared over ranks as [`FinetunedModel::predict`].
    pub fn embed(&mut self, ds: &Dataset, records: &[usize], batch: usize, dist: &Dist, on_batch: &mut dyn FnMut(usize)) -> Result<Vec<f32>> {
        let d = self.config.model.embed_dim;
        self.per_batch(ds, records, batch, dist, d, on_batch, |_, z| {
            let n = z.shape[0];
            let mut y = vec![0.0f32; n * d];
            let mut norms = vec![0.0f32; n];
            l2norm_forward(&mut y, &mut norms, &z.to_host()?, n, d, L2_EPS);
            Ok(y)
        })
    }

    /// Run the encoder on this rank's batches, map each batch's embeddings (B, embed_dim) to
    /// (B, cols) values with `finish`, and gather every batch's values in batch order.
    #[allow(clippy::too_many_arguments)]
    fn per_batch(
        &mut self,
        ds: &Dataset,
        records: &[usize],
        batch: usize,
        dist: &Dist,
        cols: usize,
        on_batch: &mut dyn FnMut(usize),
        finish: impl Fn(&mut FinetuneModel, &crate::engine::Tensor) -> Result<Vec<f32>>,
    ) -> Result<Vec<f32>> {
        anyhow::ensure!(batch > 0, "the batch size must be positive");
        let single = Dist::single();
        let ctx = StepContext { train: false, dist: &single, comm: None, dropout_seed: 0 };
        self.model.set_training(false);
        let batches: Vec<&[usize]> = records.chunks(batch).collect();
        let mut mine = || -> Result<Vec<u8>> {
            let mut bytes = Vec::new();
            // This rank's batches (round-robin), read on a prefetch thread in order.
            let own: Vec<(usize, &[usize])> = batches.iter().copied().enumerate().filter(|(i, _)| i % dist.world_size() == dist.rank()).collect();
            let own_records: Vec<&[usize]> = own.iter().map(|&(_, chunk)| chunk).collect();
            let preparer = self.model.encoder.input_preparer();
            ds.for_each_prepared(Modality::Crystal, &own_records, preparer.as_ref(), |k, inputs| {
                let (i, chunk) = own[k];
                let z = self.model.encoder.forward_prepared(inputs, &ctx).with_context(|| format!("batch {i} (first material {})", ds.id(chunk[0])))?;
                let values = finish(&mut self.model, &z)?;
                anyhow::ensure!(values.len() == chunk.len() * cols, "batch {i}: {} values for {} materials", values.len(), chunk.len());
                if let Some(bad) = (0..chunk.len()).find(|&r| values[r * cols..(r + 1) * cols].iter().any(|v| !v.is_finite())) {
                    bail!("material {}: the model gives a non-finite output", ds.id(chunk[bad]));
                }
                bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
                on_batch(chunk.len());
                Ok(())
            })?;
            Ok(bytes)
        };
        let local = mine();
        // Every rank sends its values or its error, so all stop together when one fails.
        let msg = match &local {
            Ok(b) => [&[0u8][..], b].concat(),
            Err(e) => [&[1u8][..], format!("{e:#}").as_bytes()].concat(),
        };
        let all = dist.all_gather_bytes(&msg);
        if dist.world_size() == 1 {
            local?;
        }
        let mut failed = Vec::new();
        for (r, m) in all.iter().enumerate() {
            if m.first() != Some(&0) {
                failed.push(format!("rank {r}: {}", String::from_utf8_lossy(m.get(1..).unwrap_or_default())));
            }
        }
        if !failed.is_empty() {
            bail!("the model failed on {} of {} ranks:\n{}", failed.len(), dist.world_size(), failed.join("\n"));
        }
        let per_rank: Vec<Vec<f32>> =
            all.iter().map(|m| m[1..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()).collect();
        let mut cursor = vec![0usize; dist.world_size()];
        let mut out = Vec::with_capacity(records.len() * cols);
        for (i, chunk) in batches.iter().enumerate() {
            let r = i % dist.world_size();
            let n = chunk.len() * cols;
            let part = per_rank[r].get(cursor[r]..cursor[r] + n).with_context(|| format!("rank {r} sent too few values"))?;
            out.extend_from_slice(part);
            cursor[r] += n;
        }
        Ok(out)
    }
}

/// The crystal-graph settings of the first training shard of `config`.
fn training_graph_params(config: &FinetuneConfig) -> Result<GraphParams> {
    let paths = shard_paths(&config.data.shards)?;
    let first = paths.first().context("no training shards")?;
    Ok(crate::shard::ShardReader::open(first)?.graph_params().clone())
}
