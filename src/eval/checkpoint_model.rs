//! A pre-trained model rebuilt from its checkpoint for inference (`multimat embed`, `multimat
//! eval`): the configuration stored in the checkpoint rebuilds the encoders, the weights and
//! BatchNorm statistics are loaded (optimiser moments are not needed and not read), and the
//! held-out split is recomputed with the checkpoint's own seed and fraction, so evaluation sees
//! exactly the records pre-training never trained on.

use crate::loss::Modality;
use crate::train::checkpoint::{self, Checkpoint};
use crate::train::config::PretrainConfig;
use crate::train::dataset::Dataset;
use crate::train::model::MultiMatModel;
use crate::train::inference::{embed_records, is_holdout};
use crate::engine::Module;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Which records of the shards to use, by the checkpoint's held-out rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Split {
    /// Every record.
    All,
    /// Records pre-training trained on.
    Train,
    /// Records pre-training held out (`data.holdout_fraction`, chosen by a hash of seed and id).
    Holdout,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::All => "all",
            Split::Train => "train",
            Split::Holdout => "holdout",
        }
    }
}

/// A checkpoint's model, ready for inference.
pub struct LoadedModel {
    pub config: PretrainConfig,
    pub model: MultiMatModel,
    /// The checkpoint's JSON file.
    pub json_path: PathBuf,
    pub step: u64,
    /// SHA-256 of the checkpoint's tensors file (verified on load): identifies the weights.
    pub tensors_sha256: String,
}

/// Find the checkpoint `path` names: a checkpoint `.json`, a `checkpoints/` directory, or a run
/// directory holding `checkpoints/` (the newest complete checkpoint in either directory).
pub fn resolve_checkpoint(path: &Path) -> Result<Checkpoint> {
    if !path.exists() {
        bail!("checkpoint {} does not exist (pass a step-*.json file or a pre-training run directory)", path.display());
    }
    if path.is_file() {
        return checkpoint::load(path);
    }
    let dir = if path.join("checkpoints").is_dir() { path.join("checkpoints") } else { path.to_path_buf() };
    checkpoint::latest(&dir)?.with_context(|| {
        format!("no complete checkpoint (step-*.json + .safetensors) in {}", dir.display())
    })
}

impl LoadedModel {
    /// Load the checkpoint `path` names (see [`resolve_checkpoint`]) and rebuild its model.
    pub fn load(path: &Path) -> Result<LoadedModel> {
        let c = resolve_checkpoint(path)?;
        let at = c.json_path.display().to_string();
        let kind = c.meta["kind"].as_str().unwrap_or("");
        if kind != "multimat-pretrain" {
            bail!("{at}: checkpoint kind is {kind:?}, expected \"multimat-pretrain\" (a pre-training checkpoint)");
        }
        let config = PretrainConfig::from_stored(&c.meta["config"])
            .with_context(|| format!("{at}: the stored pre-training config cannot be read"))?;
        let mut model = MultiMatModel::new(
            &config.data.modalities,
            &config.model.encoders,
            &config.loss,
            config.model.embed_dim,
            config.run.seed,
        )
        .with_context(|| format!("{at}: rebuilding the model from the stored config"))?;
        load_weights(&mut model, &c)?;
        model.set_training(false);
        let tensors_sha256 = c.meta["tensors_sha256"].as_str().unwrap_or_default().to_string();
        Ok(LoadedModel { config, model, step: c.step(), json_path: c.json_path, tensors_sha256 })
    }

    /// Runs the model on `device` from now on.
    pub fn place_on(&mut self, device: crate::engine::Device) -> Result<()> {
        if device.is_gpu() {
            self.model.to_gpu(device, false)?;
        }
        Ok(())
    }

    /// A readable model id: the run directory's name and the step, e.g. `mp85@step-00000120`.
    pub fn model_id(&self) -> String {
        let ckpt_dir = self.json_path.parent();
        let run = ckpt_dir
            .filter(|d| d.file_name().is_some_and(|n| n == "checkpoints"))
            .and_then(|d| d.parent())
            .or(ckpt_dir)
            .and_then(|d| d.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        format!("{run}@{}", checkpoint::stem(self.step))
    }

    /// Error unless the checkpoint has an encoder for `m`.
    pub fn require(&self, m: Modality) -> Result<()> {
        if !self.model.modalities.contains(&m) {
            bail!(
                "{}: the checkpoint has no {} encoder (it was trained on {})",
                self.json_path.display(),
                m.name(),
                self.model.modalities.iter().map(|m| m.name()).collect::<Vec<_>>().join(", ")
            );
        }
        Ok(())
    }

    /// Whether record id `id` was held out of pre-training.
    pub fn is_holdout(&self, id: &str) -> bool {
        is_holdout(id, self.config.run.seed, self.config.data.holdout_fraction)
    }

    /// Records of `ds` in `split`, in dataset order.
    pub fn select(&self, ds: &Dataset, split: Split) -> Vec<usize> {
        (0..ds.len())
            .filter(|&r| match split {
                Split::All => true,
                Split::Train => !self.is_holdout(ds.id(r)),
                Split::Holdout => self.is_holdout(ds.id(r)),
            })
            .collect()
    }
}

/// Copy parameters and BatchNorm buffers from the checkpoint into `model` (shapes checked).
fn load_weights(model: &mut MultiMatModel, c: &Checkpoint) -> Result<()> {
    crate::train::inference::load_model_weights(model, c).map_err(|e| e.context("checkpoint does not match the model built from its stored config"))
}

/// Records per encoder call (and progress-bar tick).
const EMBED_CHUNK: usize = 64;

/// L2-normalised embeddings (n, D) of `records` (all having modality `m`), in eval mode, with a
/// progress bar on stderr when `progress`.
pub fn embed_with_progress(model: &mut MultiMatModel, ds: &Dataset, m: Modality, records: &[usize], progress: bool, label: &str) -> Result<Vec<f32>> {
    let bar = progress.then(|| {
        let pb = indicatif::ProgressBar::new(records.len() as u64);
        pb.set_style(
            indicatif::ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} [{elapsed_precise} < {eta_precise}]")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb.set_message(label.to_string());
        pb
    });
    let mut out = Vec::with_capacity(records.len() * model.embed_dim); // (n, D)
    for chunk in records.chunks(EMBED_CHUNK) {
        let e = embed_records(model, ds, m, chunk).with_context(|| {
            format!("embedding {} of records {}…", m.name(), ds.id(chunk[0]))
        })?;
        out.extend_from_slice(&e);
        if let Some(pb) = &bar {
            pb.inc(chunk.len() as u64);
        }
    }
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    Ok(out)
}
