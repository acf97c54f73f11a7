//! The fine-tuning configuration (TOML): which shards and target, which crystal encoder (from a
//! pre-training checkpoint or from scratch), the optimiser (the paper's fine-tuning settings by
//! default: AdamW, 10 warm-up epochs then cosine decay, batch 120, no weight decay) and early
//! stopping. `--set section.key=value` overrides any field; the resolved configuration is written
//! into the run directory. Paths follow `train::config`'s one rule (relative to the config file
//! when written there, to the current directory when given on the command line; absolute once
//! loaded).

use crate::engine::optim::{AdamWConfig, WeightDecayGroups};
use crate::model::config::{CrystalEncoderKind, EncodersConfig};
use crate::train::config::{absolute_from, encoder_table, load_config_value, resolved_toml};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneConfig {
    pub data: FtDataConfig,
    #[serde(default)]
    pub model: FtModelConfig,
    #[serde(default)]
    pub optim: FtOptimConfig,
    #[serde(default)]
    pub run: FtRunConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FtDataConfig {
    /// Shard files or directories of shards.
    pub shards: Vec<PathBuf>,
    /// Target name as stored in the shards (`K_VRH`, `G_VRH`, `elastic_tensor`, `band_gap`, …);
    /// scalar or vector.
    pub target: String,
    /// Use only the first N usable records in material-id order (0: all). For quick runs and tests.
    #[serde(default)]
    pub max_records: usize,
    /// Train / validation / test fractions (must sum to 1).
    #[serde(default = "default_split")]
    pub split: [f64; 3],
    /// Seed of the split. Default: [`FIXED_SPLIT_SEED`], one split for every `run.seed`, as the
    /// reference code does (its first run saves the split and every later seed reuses it), so
    /// the seeds of a sweep differ only in initialisation and data order.
    #[serde(default)]
    pub split_seed: Option<u64>,
    /// `true`: without `split_seed`, the split is drawn from `run.seed`, so each seed of a sweep
    /// also draws a new split (multimat's earlier behaviour).
    #[serde(default)]
    pub split_per_seed: bool,
    /// Standardise each target component with the training set's mean and standard deviation
    /// (the loss is then on standardised values; metrics are always reported in the target's
    /// units). Default `false`: train on raw units, as the reference code does.
    #[serde(default)]
    pub standardize: bool,
    /// An external test set: shard files or directories whose records (with the target) are
    /// evaluated with the best epoch's model beside the split's own test set, e.g. a later
    /// Materials Project release. Training and validation come from `shards` as without it.
    /// Records whose id is also in `shards` are kept and counted as overlapping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_shards: Option<Vec<PathBuf>>,
}

fn default_split() -> [f64; 3] {
    [0.6, 0.2, 0.2]
}
/// The split seed when neither `data.split_seed` nor `data.split_per_seed` is set.
pub const FIXED_SPLIT_SEED: u64 = 0;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FtModelConfig {
    /// Output width of the crystal encoder (the pre-training embedding width).
    pub embed_dim: usize,
    /// The crystal encoder: `encoders.crystal_encoder` (potnet or cgcnn) and its hyper-parameters.
    /// Only the crystal sub-tables matter here.
    pub encoders: EncodersConfig,
    /// A pre-training checkpoint's `.json`: its crystal encoder's weights are loaded. Absent: the
    /// encoder starts from random weights.
    pub checkpoint: Option<PathBuf>,
}

impl Default for FtModelConfig {
    fn default() -> Self {
        FtModelConfig { embed_dim: 128, encoders: EncodersConfig::default(), checkpoint: None }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FtOptimConfig {
    /// Peak learning rate (the paper sweeps 1e-3, 1e-4, 1e-5).
    pub lr: f64,
    pub final_lr: f64,
    pub weight_decay: f64,
    /// Which parameters the weight decay applies to: `all` (the reference code's one parameter
    /// group) or `weights_only` (biases and normalisation parameters excluded).
    pub weight_decay_groups: WeightDecayGroups,
    pub beta1: f64,
    /// AdamW β2: 0.95, the reference code's value (the paper names none).
    pub beta2: f64,
    pub eps: f64,
    /// Linear warm-up length in epochs (fractions allowed).
    pub warmup_epochs: f64,
    /// Maximum number of epochs (the cosine schedule spans all of them).
    pub epochs: u64,
    pub batch_size: usize,
    /// Global-norm gradient clipping; 0 disables it.
    pub grad_clip: f64,
    /// Stop when the validation MAE has not improved for this many epochs (0: never stop early).
    pub patience: u64,
}

impl Default for FtOptimConfig {
    fn default() -> Self {
        FtOptimConfig {
            lr: 1e-4,
            final_lr: 0.0,
            weight_decay: 0.0,
            weight_decay_groups: WeightDecayGroups::All,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            warmup_epochs: 10.0,
            epochs: 200,
            batch_size: 120,
            grad_clip: 0.0,
            patience: 50,
        }
    }
}

impl FtOptimConfig {
    /// The optimiser settings of this config.
    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            decay_every_param: self.weight_decay_groups.decay_every_param(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FtRunConfig {
    /// Run directory: config.resolved.toml, split.csv, metrics.jsonl, best/, predictions.csv,
    /// result.json.
    pub out_dir: PathBuf,
    /// Seed of the head and (from scratch) encoder initialisation, the data order and, unless
    /// `data.split_seed` is set, the split.
    pub seed: u64,
}

impl Default for FtRunConfig {
    fn default() -> Self {
        FtRunConfig { out_dir: PathBuf::from("runs/finetune"), seed: 0 }
    }
}

impl FinetuneConfig {
    /// Read a TOML config, apply `key=value` overrides, make every path absolute by the path
    /// rule, and check it.
    pub fn load(path: &Path, overrides: &[String]) -> Result<FinetuneConfig> {
        let cfg = Self::load_settings(path, overrides)?;
        cfg.check_memory().with_context(|| format!("config {}", path.display()))?;
        Ok(cfg)
    }

    /// [`load`](Self::load) without the memory estimate against this machine (for validating a
    /// config written for other hardware).
    pub fn load_settings(path: &Path, overrides: &[String]) -> Result<FinetuneConfig> {
        let value = load_config_value(path, overrides, FINETUNE_PATH_KEYS)?;
        let mut cfg: FinetuneConfig =
            value.try_into().map_err(|e: toml::de::Error| anyhow::anyhow!("config {}: {e}", path.display()))?;
        cfg.run.out_dir = absolute_from(Path::new(""), &cfg.run.out_dir); // the default, if unset
        cfg.check_settings().with_context(|| format!("config {}", path.display()))?;
        Ok(cfg)
    }

    pub fn check(&self) -> Result<()> {
        self.check_settings()?;
        self.check_memory()
    }

    /// The estimated training memory against what this machine has available.
    pub fn check_memory(&self) -> Result<()> {
        crate::model::memory_estimate::check_fits(&[crate::model::Modality::Crystal], &self.model.encoders, self.model.embed_dim, self.optim.batch_size, None)
    }

    /// Every rule but the memory estimate (sizes in range are still checked).
    pub fn check_settings(&self) -> Result<()> {
        if self.data.shards.is_empty() {
            bail!("data.shards is empty");
        }
        if self.data.target.trim().is_empty() {
            bail!("data.target is empty");
        }
        let s = self.data.split;
        if s.iter().any(|f| !(0.0..=1.0).contains(f)) || (s.iter().sum::<f64>() - 1.0).abs() > 1e-9 || s[0] <= 0.0 || s[1] <= 0.0 {
            bail!("data.split must be three fractions in [0, 1] summing to 1 with train and validation > 0, got {s:?}");
        }
        let o = &self.optim;
        if !(o.lr > 0.0 && o.lr.is_finite()) {
            bail!("optim.lr must be a positive number, got {}", o.lr);
        }
        if o.batch_size < 2 {
            bail!("optim.batch_size must be at least 2 (BatchNorm needs more than one row)");
        }
        if o.epochs == 0 {
            bail!("optim.epochs must be positive");
        }
        if self.model.embed_dim == 0 {
            bail!("model.embed_dim must be positive");
        }
        if self.run.out_dir.as_os_str().is_empty() {
            bail!("run.out_dir is empty (it would write into the working directory); name a run directory");
        }
        self.model.encoders.potnet.validate()?;
        self.model.encoders.resnext3d.validate()?;
        // Sizes in range (the estimate refuses absurd ones), whatever memory this machine has.
        crate::model::memory_estimate::training_bytes(&[crate::model::Modality::Crystal], &self.model.encoders, self.model.embed_dim, self.optim.batch_size)?;
        if let Some(t) = &self.data.test_shards {
            if t.is_empty() {
                bail!("data.test_shards is empty; leave it out for no external test set");
            }
        }
        Ok(())
    }

    pub fn crystal_encoder(&self) -> CrystalEncoderKind {
        self.model.encoders.crystal_encoder
    }

    /// The fine-tuning config stored in a checkpoint's metadata, read with the settings it was
    /// trained with (`train::config::fill_pre_reference_settings`).
    pub fn from_stored(stored: &serde_json::Value) -> Result<FinetuneConfig> {
        let mut value = stored.clone();
        use crate::train::config::{fill_pre_reference_settings, PRE_REFERENCE_FINETUNE_SETTINGS, PRE_REFERENCE_SETTINGS};
        fill_pre_reference_settings(&mut value, PRE_REFERENCE_SETTINGS);
        fill_pre_reference_settings(&mut value, PRE_REFERENCE_FINETUNE_SETTINGS);
        Ok(serde_json::from_value(value)?)
    }

    /// The seed of the train/validation/test split.
    pub fn split_seed(&self) -> u64 {
        match (self.data.split_seed, self.data.split_per_seed) {
            (Some(seed), _) => seed,
            (None, true) => self.run.seed,
            (None, false) => FIXED_SPLIT_SEED,
        }
    }

    /// The resolved configuration as TOML: clean floats, and of the encoder tables only the
    /// crystal encoder's (the only one fine-tuning builds).
    pub fn to_toml(&self) -> Result<String> {
        let mut value = toml::Value::try_from(self)?;
        let used = encoder_table(crate::loss::Modality::Crystal, &self.model.encoders);
        if let Some(enc) = value.get_mut("model").and_then(|m| m.get_mut("encoders")).and_then(|e| e.as_table_mut()) {
            enc.retain(|k, v| !v.is_table() || k == used);
        }
        resolved_toml(value)
    }
}

/// Path fields of the fine-tuning config (dotted keys).
pub const FINETUNE_PATH_KEYS: &[&str] = &["data.shards", "data.test_shards", "model.checkpoint", "run.out_dir"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_defaults_overrides_and_validation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.toml");
        std::fs::write(&p, "[data]\nshards = [\"shards\"]\ntarget = \"K_VRH\"\n[model]\ncheckpoint = \"ck/step-1.json\"\n").unwrap();
        let c = FinetuneConfig::load(&p, &["optim.lr=1e-3".into(), "model.encoders.crystal_encoder=cgcnn".into()]).unwrap();
        assert_eq!(c.optim.batch_size, 120);
        assert_eq!(c.optim.weight_decay, 0.0);
        assert_eq!(c.optim.warmup_epochs, 10.0);
        assert_eq!(c.data.split, [0.6, 0.2, 0.2]);
        assert!(!c.data.standardize, "the reference trains on raw target units");
        assert_eq!((c.optim.beta1, c.optim.beta2), (0.9, 0.95), "the reference's AdamW betas");
        assert!(c.optim.adamw().decay_every_param, "the reference decays every parameter");
        assert_eq!(c.optim.lr, 1e-3);
        assert_eq!(c.crystal_encoder(), CrystalEncoderKind::Cgcnn);
        assert_eq!(c.data.shards[0], dir.path().join("shards"));
        assert_eq!(c.model.checkpoint.as_deref(), Some(dir.path().join("ck/step-1.json").as_path()));
        assert_eq!(c.split_seed(), FIXED_SPLIT_SEED);
        // The split stays fixed across run seeds unless asked otherwise.
        let seeded = FinetuneConfig::load(&p, &["run.seed=7".into()]).unwrap();
        assert_eq!(seeded.split_seed(), FIXED_SPLIT_SEED);
        let per_seed = FinetuneConfig::load(&p, &["run.seed=7".into(), "data.split_per_seed=true".into()]).unwrap();
        assert_eq!(per_seed.split_seed(), 7);
        let explicit = FinetuneConfig::load(&p, &["run.seed=7".into(), "data.split_per_seed=true".into(), "data.split_seed=3".into()]).unwrap();
        assert_eq!(explicit.split_seed(), 3);
        assert!(FinetuneConfig::load(&p, &["data.split=[0.5, 0.2, 0.2]".into()]).is_err());
        assert!(FinetuneConfig::load(&p, &["optim.batch_size=1".into()]).is_err());
        assert!(FinetuneConfig::load(&p, &["optim.learning_rate=1".into()]).is_err(), "unknown keys are refused");
        let again: FinetuneConfig = toml::from_str(&c.to_toml().unwrap()).unwrap();
        assert_eq!(again, c);
    }
}
