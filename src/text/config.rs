//! `BertConfig`: the architecture hyper-parameters of a BERT checkpoint, read from the Hugging Face
//! `config.json` and validated, so that everything downstream (weights, tokeniser, forward) can
//! rely on them. Checkpoints of other families (RoBERTa, DistilBERT, GPT-2, …) are rejected here
//! with an error that says so, rather than failing later on a missing tensor.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::Path;

/// The subset of a Hugging Face BERT `config.json` the encoder needs.
#[derive(Clone, Debug, PartialEq)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f32,
    /// `_name_or_path` when the checkpoint records one (used as the model name in outputs).
    pub name_or_path: Option<String>,
}

/// `config.json` as written by transformers; every field optional so that a missing one gives our
/// own error naming it rather than serde's.
#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    intermediate_size: Option<usize>,
    max_position_embeddings: Option<usize>,
    type_vocab_size: Option<usize>,
    layer_norm_eps: Option<f64>,
    hidden_act: Option<String>,
    position_embedding_type: Option<String>,
    #[serde(rename = "_name_or_path")]
    name_or_path: Option<String>,
}

impl BertConfig {
    /// Read and validate `config.json`.
    pub fn from_file(path: &Path) -> Result<BertConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading BERT config {}", path.display()))?;
        BertConfig::from_json(&text).with_context(|| format!("in BERT config {}", path.display()))
    }

    /// Parse and validate the contents of a `config.json`.
    pub fn from_json(text: &str) -> Result<BertConfig> {
        let raw: RawConfig = serde_json::from_str(text).context("config.json is not valid JSON of the expected form")?;
        match raw.model_type.as_deref() {
            Some("bert") => {}
            Some(other) => bail!("model_type is {other:?}, not \"bert\": only BERT checkpoints are supported"),
            None => bail!("missing field model_type (expected \"bert\")"),
        }
        if let Some(archs) = &raw.architectures {
            // BertModel, BertForMaskedLM, BertForPreTraining, BertForSequenceClassification, … all
            // carry the same encoder; anything not named Bert* is another family.
            if let Some(bad) = archs.iter().find(|a| !a.starts_with("Bert")) {
                bail!("architecture {bad:?} is not a BERT architecture (expected BertModel, BertForMaskedLM, …)");
            }
        }
        if let Some(act) = &raw.hidden_act {
            if act != "gelu" {
                bail!("hidden_act is {act:?}; only \"gelu\" (exact erf GELU, as in BERT) is supported");
            }
        }
        if let Some(pe) = &raw.position_embedding_type {
            if pe != "absolute" {
                bail!("position_embedding_type is {pe:?}; only \"absolute\" is supported");
            }
        }
        fn need(v: Option<usize>, name: &str) -> Result<usize> {
            match v {
                Some(0) => bail!("field {name} is 0"),
                Some(x) => Ok(x),
                None => bail!("missing field {name}"),
            }
        }
        let cfg = BertConfig {
            vocab_size: need(raw.vocab_size, "vocab_size")?,
            hidden_size: need(raw.hidden_size, "hidden_size")?,
            num_hidden_layers: need(raw.num_hidden_layers, "num_hidden_layers")?,
            num_attention_heads: need(raw.num_attention_heads, "num_attention_heads")?,
            intermediate_size: need(raw.intermediate_size, "intermediate_size")?,
            max_position_embeddings: need(raw.max_position_embeddings, "max_position_embeddings")?,
            // transformers' BertConfig defaults: type_vocab_size 2, layer_norm_eps 1e-12.
            type_vocab_size: raw.type_vocab_size.unwrap_or(2).max(1),
            layer_norm_eps: raw.layer_norm_eps.unwrap_or(1e-12) as f32,
            name_or_path: raw.name_or_path.filter(|s| !s.is_empty()),
        };
        if cfg.hidden_size % cfg.num_attention_heads != 0 {
            bail!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                cfg.hidden_size,
                cfg.num_attention_heads
            );
        }
        if !(cfg.layer_norm_eps.is_finite() && cfg.layer_norm_eps >= 0.0) {
            bail!("layer_norm_eps {} is not a finite non-negative number", cfg.layer_norm_eps);
        }
        Ok(cfg)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// BERT-base shape (12 layers, 768 hidden, 12 heads, 3072 FFN, 512 positions, uncased vocab):
    /// the size of MatBERT, used by the benchmark with random weights.
    pub fn bert_base() -> BertConfig {
        BertConfig {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            name_or_path: None,
        }
    }

    /// Floating-point operations of one forward pass over a sequence of `t` tokens (multiply-add
    /// = 2 FLOPs; GEMMs only: projections, FFN, QKᵀ and PV — the element-wise work is < 1 %).
    pub fn forward_flops(&self, t: usize) -> f64 {
        let (t, c, f, l) = (t as f64, self.hidden_size as f64, self.intermediate_size as f64, self.num_hidden_layers as f64);
        let per_layer = 2.0 * t * (4.0 * c * c + 2.0 * c * f) + 2.0 * 2.0 * t * t * c;
        l * per_layer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINI: &str = r#"{"architectures":["BertModel"],"hidden_act":"gelu","hidden_size":384,
        "intermediate_size":1536,"layer_norm_eps":1e-12,"max_position_embeddings":512,"model_type":"bert",
        "num_attention_heads":12,"num_hidden_layers":6,"type_vocab_size":2,"vocab_size":30522}"#;

    #[test]
    fn parses_a_bert_config() {
        let c = BertConfig::from_json(MINI).unwrap();
        assert_eq!((c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.head_dim()), (384, 6, 12, 32));
        assert_eq!(c.layer_norm_eps, 1e-12);
    }

    #[test]
    fn rejects_other_families_and_bad_fields() {
        let roberta = MINI.replace("\"bert\"", "\"roberta\"");
        let e = format!("{:#}", BertConfig::from_json(&roberta).unwrap_err());
        assert!(e.contains("roberta") && e.contains("only BERT"), "{e}");
        let gpt = MINI.replace("BertModel", "GPT2LMHeadModel");
        assert!(format!("{:#}", BertConfig::from_json(&gpt).unwrap_err()).contains("GPT2LMHeadModel"));
        let relu = MINI.replace("\"gelu\"", "\"relu\"");
        assert!(format!("{:#}", BertConfig::from_json(&relu).unwrap_err()).contains("relu"));
        let heads = MINI.replace("\"num_attention_heads\":12", "\"num_attention_heads\":7");
        assert!(format!("{:#}", BertConfig::from_json(&heads).unwrap_err()).contains("divisible"));
        let missing = MINI.replace("\"hidden_size\":384,", "");
        assert!(format!("{:#}", BertConfig::from_json(&missing).unwrap_err()).contains("missing field hidden_size"));
    }
}
