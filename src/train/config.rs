//! The pre-training configuration (TOML). Every field but the data and the loss kind has the
//! paper's default; `--set section.key=value` overrides any field from the command line, and the
//! resolved configuration is written beside the checkpoints.
//!
//! The one path rule of every config file (pre-training, fine-tuning, sweeps): a relative path
//! written in a config file is relative to that file's directory; a relative path given on the
//! command line (`--set key=path`, `--checkpoint`) or left at its default is relative to the
//! current directory. Loaded configs hold absolute paths only, so a written
//! `config.resolved.toml` names the same files from any directory ([`load_config_value`],
//! [`absolute_from`]).

use crate::engine::optim::{AdamWConfig, WeightDecayGroups};
use crate::loss::{LossConfig, Modality};
use crate::model::config::EncodersConfig;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainConfig {
    pub data: DataConfig,
    #[serde(default)]
    pub model: ModelConfig,
    pub loss: LossConfig,
    #[serde(default)]
    pub optim: OptimConfig,
    #[serde(default)]
    pub run: RunConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Shard files or directories of shards.
    pub shards: Vec<PathBuf>,
    /// Modalities to train (2 to 4 of crystal, dos, charge_density, text).
    pub modalities: Vec<Modality>,
    /// Fraction of records held out (chosen by a hash of the material id and the seed) for the
    /// retrieval evaluation.
    #[serde(default = "default_holdout")]
    pub holdout_fraction: f64,
}

fn default_holdout() -> f64 {
    0.1
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    pub embed_dim: usize,
    pub encoders: EncodersConfig,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig { embed_dim: 128, encoders: EncodersConfig::default() }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    /// Peak learning rate.
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
    pub epochs: u64,
    /// Global batch size (split over ranks; the result does not depend on the rank count).
    pub batch_size: usize,
    /// Global-norm gradient clipping; 0 disables it.
    pub grad_clip: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            lr: 1e-4,
            final_lr: 0.0,
            weight_decay: 5e-4,
            weight_decay_groups: WeightDecayGroups::All,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            warmup_epochs: 10.0,
            epochs: 500,
            batch_size: 360,
            grad_clip: 0.0,
        }
    }
}

impl OptimConfig {
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
pub struct RunConfig {
    /// Checkpoints, metrics.jsonl, config.resolved.toml and retrieval.json go here.
    pub out_dir: PathBuf,
    pub seed: u64,
    /// Checkpoint every N steps (0: at the end of every epoch).
    pub checkpoint_every: u64,
    /// Complete checkpoints kept (0 keeps all).
    pub keep_last: usize,
    /// Stop after this many optimiser steps in total (0: run all epochs). For tests and smoke runs.
    pub max_steps: u64,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig { out_dir: PathBuf::from("runs/pretrain"), seed: 0, checkpoint_every: 0, keep_last: 3, max_steps: 0 }
    }
}

impl PretrainConfig {
    /// Read a TOML config, apply `key=value` overrides (dotted paths, values in TOML syntax or bare
    /// strings), make every path absolute by the module's path rule, and check it.
    pub fn load(path: &Path, overrides: &[String]) -> Result<PretrainConfig> {
        let cfg = Self::load_settings(path, overrides)?;
        cfg.check_memory().with_context(|| format!("config {}", path.display()))?;
        Ok(cfg)
    }

    /// [`load`](Self::load) without the memory estimate against this machine: for validating a
    /// config written for other hardware (a GPU node) on a login node or in a test.
    pub fn load_settings(path: &Path, overrides: &[String]) -> Result<PretrainConfig> {
        let value = load_config_value(path, overrides, PRETRAIN_PATH_KEYS)?;
        let mut cfg: PretrainConfig = value
            .try_into()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("config {}: {e}", path.display()))?;
        cfg.run.out_dir = absolute_from(Path::new(""), &cfg.run.out_dir); // the default, if unset
        cfg.check_settings().with_context(|| format!("config {}", path.display()))?;
        Ok(cfg)
    }

    pub fn check(&self) -> Result<()> {
        self.check_settings()?;
        self.check_memory()
    }

    /// The estimated training memory at the global batch against what this machine has available.
    pub fn check_memory(&self) -> Result<()> {
        crate::model::memory_estimate::check_fits(&self.data.modalities, &self.model.encoders, self.model.embed_dim, self.optim.batch_size, None)
    }

    /// Every rule but the memory estimate (sizes in range are still checked).
    pub fn check_settings(&self) -> Result<()> {
        let m = &self.data.modalities;
        if m.len() < 2 {
            bail!("data.modalities needs at least two modalities, got {m:?}");
        }
        let mut sorted = m.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != m.len() {
            bail!("data.modalities lists a modality twice: {m:?}");
        }
        if self.data.shards.is_empty() {
            bail!("data.shards is empty");
        }
        if !(0.0..0.9).contains(&self.data.holdout_fraction) {
            bail!("data.holdout_fraction must be in [0, 0.9), got {}", self.data.holdout_fraction);
        }
        if self.optim.batch_size < 2 {
            bail!("optim.batch_size must be at least 2 (contrastive losses need negatives)");
        }
        if !(self.optim.lr > 0.0) || !self.optim.lr.is_finite() {
            bail!("optim.lr must be a positive number, got {}", self.optim.lr);
        }
        if self.model.embed_dim == 0 {
            bail!("model.embed_dim must be positive");
        }
        if self.run.out_dir.as_os_str().is_empty() {
            bail!("run.out_dir is empty (it would write into the working directory); name a run directory");
        }
        self.model.encoders.potnet.validate()?;
        self.model.encoders.resnext3d.validate()?;
        if self.data.modalities.contains(&Modality::Dos) {
            self.model.encoders.dos_transformer.validate(self.model.embed_dim)?;
        }
        // Sizes in range (the estimate refuses absurd ones), whatever memory this machine has.
        crate::model::memory_estimate::training_bytes(&self.data.modalities, &self.model.encoders, self.model.embed_dim, self.optim.batch_size)?;
        Ok(())
    }

    /// The resolved configuration as TOML: clean floats, and only the encoder tables of the
    /// modalities trained (the others have no effect on the run).
    pub fn to_toml(&self) -> Result<String> {
        let mut value = toml::Value::try_from(self)?;
        let used: Vec<&str> = self.data.modalities.iter().map(|&m| encoder_table(m, &self.model.encoders)).collect();
        if let Some(enc) = value.get_mut("model").and_then(|m| m.get_mut("encoders")).and_then(|e| e.as_table_mut()) {
            enc.retain(|k, v| !v.is_table() || used.contains(&k));
        }
        resolved_toml(value)
    }
}

/// Settings added when multimat made the reference code's behaviour its default, each with the
/// value that means what a config written before it meant. A config stored in a checkpoint
/// without one of these keys was trained that way, so [`fill_pre_reference_settings`] writes the
/// value in before the config is read; a config file without them gets the new defaults.
pub const PRE_REFERENCE_SETTINGS: &[(&str, &str)] = &[
    ("model.encoders.potnet.undirected_local_edges", "false"),
    ("model.encoders.potnet.atom_features", "\"legacy\""),
    ("model.encoders.cgcnn.atom_features", "\"legacy\""),
    ("model.encoders.dos_transformer.head", "true"),
    ("optim.weight_decay_groups", "\"weights_only\""),
];

/// [`PRE_REFERENCE_SETTINGS`] of fine-tuning configs only.
pub const PRE_REFERENCE_FINETUNE_SETTINGS: &[(&str, &str)] = &[("data.split_per_seed", "true")];

/// Adds every key of `settings` that a stored config lacks, where its table exists (a
/// fine-tuning config may lack encoder tables it never built).
pub fn fill_pre_reference_settings(config: &mut serde_json::Value, settings: &[(&str, &str)]) {
    for (path, value) in settings {
        let (table_path, key) = path.rsplit_once('.').expect("dotted key");
        let mut table = Some(&mut *config);
        for part in table_path.split('.') {
            table = table.and_then(|t| t.get_mut(part));
        }
        if let Some(serde_json::Value::Object(map)) = table {
            if !map.contains_key(key) {
                map.insert(key.to_string(), serde_json::from_str(value).expect("valid JSON literal"));
            }
        }
    }
}

impl PretrainConfig {
    /// The pre-training config stored in a checkpoint's metadata, read with the settings it was
    /// trained with ([`fill_pre_reference_settings`]).
    pub fn from_stored(stored: &serde_json::Value) -> Result<PretrainConfig> {
        let mut value = stored.clone();
        fill_pre_reference_settings(&mut value, PRE_REFERENCE_SETTINGS);
        Ok(serde_json::from_value(value)?)
    }
}

/// Path fields of the pre-training config (dotted keys; arrays of paths allowed).
pub const PRETRAIN_PATH_KEYS: &[&str] = &["data.shards", "run.out_dir"];

/// The `model.encoders` table holding the settings of modality `m`'s encoder.
pub fn encoder_table(m: Modality, encoders: &EncodersConfig) -> &'static str {
    use crate::model::config::CrystalEncoderKind;
    match m {
        Modality::Crystal => match encoders.crystal_encoder {
            CrystalEncoderKind::Potnet => "potnet",
            CrystalEncoderKind::Cgcnn => "cgcnn",
        },
        Modality::Dos => "dos_transformer",
        Modality::ChargeDensity => "resnext3d",
        Modality::Text => "text_mlp",
    }
}

/// `p` made absolute: relative paths are taken relative to `base` (itself relative to the
/// current directory when relative, e.g. `""`). Lexical only (no symlinks resolved, the file
/// need not exist), so the path a user wrote stays recognisable.
pub fn absolute_from(base: &Path, p: &Path) -> PathBuf {
    let joined = if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
    std::path::absolute(&joined).unwrap_or(joined)
}

/// Make the string (or array of strings) at each dotted key of `value` an absolute path
/// relative to `base`; keys that are absent are left alone.
pub fn absolutize_keys(value: &mut toml::Value, keys: &[&str], base: &Path) {
    for key in keys {
        let mut cur = Some(&mut *value);
        for part in key.split('.') {
            cur = cur.and_then(|v| v.get_mut(part));
        }
        let fix = |v: &mut toml::Value| {
            // An empty path stays empty, so the config check can refuse it by name instead of
            // silently meaning the config's directory.
            if let toml::Value::String(s) = v {
                if !s.is_empty() {
                    *s = absolute_from(base, Path::new(s.as_str())).display().to_string();
                }
            }
        };
        match cur {
            Some(toml::Value::Array(items)) => items.iter_mut().for_each(fix),
            Some(v) => fix(v),
            None => {}
        }
    }
}

/// A `key=value` override whose key is one of `path_keys` with its relative path(s) made
/// absolute against `base`; any other override unchanged. For overrides written in a file (a
/// sweep's `set`), which follow that file's directory.
pub fn absolutize_override(assignment: &str, path_keys: &[&str], base: &Path) -> Result<String> {
    let (key, _) = assignment.split_once('=').context("expected key=value")?;
    if !path_keys.contains(&key.trim()) {
        return Ok(assignment.to_string());
    }
    let mut v = toml::Value::Table(Default::default());
    apply_override(&mut v, assignment)?;
    absolutize_keys(&mut v, &[key.trim()], base);
    let mut cur = &v;
    for part in key.trim().split('.') {
        cur = &cur[part];
    }
    Ok(format!("{}={}", key.trim(), cur))
}

/// Read the TOML config at `path` with the path rule applied: the file's relative paths at
/// `path_keys` against its directory, then the `key=value` overrides, whose relative paths
/// are against the current directory.
pub fn load_config_value(path: &Path, overrides: &[String], path_keys: &[&str]) -> Result<toml::Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
    let mut value: toml::Value = toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))?;
    absolutize_keys(&mut value, path_keys, path.parent().unwrap_or(Path::new("")));
    for o in overrides {
        apply_override(&mut value, o).with_context(|| format!("applying override {o:?}"))?;
    }
    absolutize_keys(&mut value, path_keys, Path::new(""));
    Ok(value)
}

/// Pretty TOML of a resolved config with every float written as its shortest form: an `f32`
/// field widened to f64 (0.2f32 = 0.20000000298023224) is written as the f32's own shortest
/// decimal (0.2), which reads back to the same f32. A genuine f64 field is changed only if it
/// holds exactly an f32 value with a longer f64 spelling, which no hand-written value does.
pub fn resolved_toml(mut value: toml::Value) -> Result<String> {
    clean_floats(&mut value);
    Ok(toml::to_string_pretty(&value)?)
}

/// Every float of `value` written as its shortest form (see [`resolved_toml`]).
pub fn clean_floats(v: &mut toml::Value) {
    match v {
        toml::Value::Float(x) => {
            let narrow = *x as f32;
            if narrow as f64 == *x {
                if let Ok(short) = narrow.to_string().parse::<f64>() {
                    *x = short;
                }
            }
        }
        toml::Value::Array(a) => a.iter_mut().for_each(clean_floats),
        toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| clean_floats(v)),
        _ => {}
    }
}

/// Set `a.b.c = value` in a TOML tree; the value is parsed as TOML if it can be (numbers, bools,
/// arrays, quoted strings), otherwise taken as a bare string.
pub fn apply_override(root: &mut toml::Value, assignment: &str) -> Result<()> {
    let (path, raw) = assignment.split_once('=').context("expected key=value")?;
    let parsed: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").unwrap(),
        Err(_) => toml::Value::String(raw.trim().to_string()),
    };
    let keys: Vec<&str> = path.trim().split('.').collect();
    let mut cur = root;
    for k in &keys[..keys.len() - 1] {
        let table = cur.as_table_mut().with_context(|| format!("{k} is not a table"))?;
        cur = table.entry(k.to_string()).or_insert_with(|| toml::Value::Table(Default::default()));
    }
    cur.as_table_mut()
        .context("override target is not a table")?
        .insert(keys[keys.len() - 1].to_string(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_and_validation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[data]\nshards = [\"shards\"]\nmodalities = [\"crystal\", \"dos\"]\n[loss]\nkind = \"clip\"\n").unwrap();
        let c = PretrainConfig::load(&p, &["optim.lr=3e-4".into(), "run.out_dir=/tmp/x".into()]).unwrap();
        assert_eq!(c.optim.lr, 3e-4);
        assert_eq!(c.optim.batch_size, 360, "paper default");
        assert_eq!(c.run.out_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.data.shards[0], dir.path().join("shards"));
        assert!(PretrainConfig::load(&p, &["optim.batch_size=1".into()]).is_err());
        assert!(PretrainConfig::load(&p, &["data.modalities=[\"dos\"]".into()]).is_err());
        assert!(PretrainConfig::load(&p, &["optim.learning_rate=1".into()]).is_err(), "unknown keys are refused");
        // Round trip of the resolved config.
        let again: PretrainConfig = toml::from_str(&c.to_toml().unwrap()).unwrap();
        assert_eq!(again, c);
    }
}
