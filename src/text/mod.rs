//! The text modality: a frozen BERT encoder (MatBERT in the paper, any Hugging Face BERT
//! checkpoint here) that turns Robocrystallographer descriptions into fixed vectors, on the
//! project's own engine ops.
//!
//! - `config`   — `BertConfig` from `config.json`, rejecting non-BERT checkpoints;
//! - `tokenize` — the `tokenizers` crate, `tokenizer.json` or a WordPiece built from `vocab.txt`,
//!   truncation to the model maximum with the untruncated length kept;
//! - `weights`  — `model.safetensors` → shape-checked f32 weights (Q/K/V fused);
//! - `bert`     — the forward pass on tensor-level ops (on the weights' device: CPU, `cuda`,
//!   `cuda-sim`) and [CLS]/mean pooling on the host;
//! - `npy`      — embeddings files (`.npy` + `.ids.txt`), written atomically, read with checks;
//! - this file  — `TextEncoder`: a model directory loaded and validated, and `embed`, which sorts
//!   texts by length into batches, runs them, and returns vectors in input order.

pub mod bert;
pub mod config;
pub mod npy;
pub mod tokenize;
pub mod weights;

pub use bert::{BertModel, Pooling, Scratch};
pub use config::BertConfig;
pub use tokenize::{BertTokenizer, TokenizedText};
pub use weights::BertWeights;

use crate::engine::{Device, Storage};
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// A BERT checkpoint loaded from a directory in the Hugging Face layout.
pub struct TextEncoder {
    pub tokenizer: BertTokenizer,
    pub model: BertModel,
    /// Human-readable model name: `_name_or_path` from the config, else the directory name.
    pub name: String,
    pub dir: PathBuf,
}

/// One embedded text.
#[derive(Clone, Debug, PartialEq)]
pub struct TextEmbedding {
    pub vector: Vec<f32>,
    /// Tokens fed to the model (special tokens included, after truncation).
    pub n_tokens: usize,
    /// Tokens the text has without truncation (special tokens included).
    pub untruncated_len: usize,
}

/// The files of a model directory, checked to exist.
#[derive(Clone, Debug)]
pub struct ModelFiles {
    pub config: PathBuf,
    pub weights: PathBuf,
}

/// Check a model directory holds what a BERT checkpoint needs; errors say which file is missing.
pub fn locate_model_files(dir: &Path) -> Result<ModelFiles> {
    if !dir.is_dir() {
        bail!("model directory {} does not exist or is not a directory", dir.display());
    }
    let config = dir.join("config.json");
    if !config.is_file() {
        bail!("model directory {} has no config.json", dir.display());
    }
    if !dir.join("tokenizer.json").is_file() && !dir.join("vocab.txt").is_file() {
        bail!("model directory {} has neither tokenizer.json nor vocab.txt", dir.display());
    }
    let weights = dir.join("model.safetensors");
    if !weights.is_file() {
        if dir.join("pytorch_model.bin").is_file() {
            bail!(
                "model directory {} holds only pytorch_model.bin (a Python pickle, not read here): convert to \
                 safetensors first, e.g. `python -c \"from transformers import AutoModel; \
                 AutoModel.from_pretrained('DIR').save_pretrained('DIR', safe_serialization=True)\"`",
                dir.display()
            );
        }
        bail!("model directory {} has no model.safetensors", dir.display());
    }
    Ok(ModelFiles { config, weights })
}

/// `model_max_length` from `tokenizer_config.json` when present and sensible (transformers writes
/// a huge sentinel when unset).
fn tokenizer_max_length(dir: &Path) -> Result<Option<usize>> {
    let path = dir.join("tokenizer_config.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parsing {} as JSON", path.display()))?;
    Ok(v.get("model_max_length").and_then(|m| m.as_u64()).filter(|&m| m > 0 && m < 1_000_000).map(|m| m as usize))
}

impl TextEncoder {
    /// Load config, tokeniser and weights from `dir`, validating each.
    pub fn load(dir: &Path) -> Result<TextEncoder> {
        let files = locate_model_files(dir)?;
        let config = BertConfig::from_file(&files.config)?;
        let max_len = match tokenizer_max_length(dir)? {
            Some(m) => m.min(config.max_position_embeddings),
            None => config.max_position_embeddings,
        };
        let tokenizer = BertTokenizer::from_dir(dir, max_len)?;
        if tokenizer.vocab_size() > config.vocab_size {
            bail!(
                "tokeniser in {} has {} tokens but config.json says vocab_size = {}",
                dir.display(),
                tokenizer.vocab_size(),
                config.vocab_size
            );
        }
        let weights = BertWeights::from_safetensors(&files.weights, &config)?;
        let name = config.name_or_path.clone().unwrap_or_else(|| {
            dir.canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| dir.display().to_string())
        });
        Ok(TextEncoder { tokenizer, model: BertModel::new(config, weights), name, dir: dir.to_path_buf() })
    }

    /// The encoder with its weights on `device` (`cuda`, `cuda:N`, `cuda-sim`, or `cpu`): every
    /// later `embed` runs its forward there.
    pub fn to_device(self, device: Device) -> Result<TextEncoder> {
        let model = self.model.to_device(device).with_context(|| format!("copying the BERT weights to {device}"))?;
        Ok(TextEncoder { model, ..self })
    }

    /// sha256 of the weights file (hex).
    pub fn weights_hash(&self) -> &str {
        &self.model.weights.hash
    }

    pub fn dim(&self) -> usize {
        self.model.config.hidden_size
    }

    /// Tokenise every text (in parallel); errors name the text's index.
    pub fn tokenize_all(&self, texts: &[&str]) -> Result<Vec<TokenizedText>> {
        texts
            .par_iter()
            .enumerate()
            .map(|(i, t)| self.tokenizer.encode(t).with_context(|| format!("text #{i}")))
            .collect()
    }

    /// Embed `texts`, returning one vector per text in input order. Texts are sorted by token
    /// count and cut into batches of `batch_size`, so a batch pads only to its own longest member.
    pub fn embed(&self, texts: &[&str], pooling: Pooling, batch_size: usize, progress: bool) -> Result<Vec<TextEmbedding>> {
        let tokens = self.tokenize_all(texts)?;
        self.embed_tokens(&tokens, pooling, batch_size, progress)
    }

    /// `embed` for already tokenised texts.
    pub fn embed_tokens(&self, tokens: &[TokenizedText], pooling: Pooling, batch_size: usize, progress: bool) -> Result<Vec<TextEmbedding>> {
        embed_sorted(&self.model, tokens, pooling, batch_size, progress)
    }
}

/// The batching pipeline, separate from the tokeniser so the benchmark can feed random models.
pub fn embed_sorted(
    model: &BertModel,
    tokens: &[TokenizedText],
    pooling: Pooling,
    batch_size: usize,
    progress: bool,
) -> Result<Vec<TextEmbedding>> {
    if batch_size == 0 {
        bail!("batch size must be at least 1");
    }
    let order = length_sorted_order(tokens);
    let bar = if progress {
        let b = indicatif::ProgressBar::new(tokens.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} embedding {pos}/{len} texts [{elapsed_precise} < {eta_precise}] {per_sec}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut results: Vec<Option<TextEmbedding>> = vec![None; tokens.len()];
    let mut scratch = Scratch::default();
    for chunk in order.chunks(batch_size) {
        let lengths: Vec<usize> = chunk.iter().map(|&i| tokens[i].ids.len()).collect();
        let t = *lengths.iter().max().unwrap_or(&1);
        // (B, T) ids, padded with id 0 ([PAD] in BERT vocabularies; masked out either way).
        let mut ids = vec![0u32; chunk.len() * t];
        for (row, &i) in chunk.iter().enumerate() {
            ids[row * t..row * t + lengths[row]].copy_from_slice(&tokens[i].ids);
        }
        let hidden = model
            .forward(&mut scratch, &ids, &lengths, t)
            .with_context(|| format!("embedding texts {:?}", chunk))?;
        // The one download per batch (a no-op move on the CPU); pooling runs on the host.
        let hidden = match hidden.storage {
            Storage::Cpu(v) => v,
            Storage::Gpu(_) => hidden.to_host().with_context(|| format!("copying the hidden states of texts {:?} to the host", chunk))?,
        };
        let pooled = model.pool(&hidden, &lengths, t, pooling);
        for ((&i, vector), &n_tokens) in chunk.iter().zip(pooled).zip(&lengths) {
            if let Some(j) = vector.iter().position(|x| !x.is_finite()) {
                bail!("text #{i}: the model produced a non-finite value at dimension {j}");
            }
            results[i] = Some(TextEmbedding { vector, n_tokens, untruncated_len: tokens[i].untruncated_len });
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(results.into_iter().map(|r| r.expect("every index is in exactly one batch")).collect())
}

/// Indices of `tokens`, longest first (stable, so equal lengths keep input order).
pub fn length_sorted_order(tokens: &[TokenizedText]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..tokens.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(tokens[i].ids.len()));
    order
}
