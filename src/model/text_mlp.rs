//! Text encoder: a trainable MLP on frozen MatBERT [CLS] vectors, 768 → 512 → 512 → embed_dim
//! with ReLU between layers (none after the last). Parameter names `text.mlp.<i>.{weight,bias}`.
//! Runs on the device its parameters live on (the batch is checked on the host and uploaded).

use super::common::batch_name;
use super::{Encoder, Modality, ModalityBatch, StepContext};
use crate::engine::nn::{Activation, Mlp};
use crate::engine::{Module, Param, Tensor};
use anyhow::{bail, ensure, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TextMlpConfig {
    pub input_dim: usize,
    pub hidden: Vec<usize>,
}

impl Default for TextMlpConfig {
    fn default() -> Self {
        TextMlpConfig { input_dim: 768, hidden: vec![512, 512] }
    }
}

pub struct TextMlp {
    pub config: TextMlpConfig,
    embed_dim: usize,
    pub mlp: Mlp,
}

impl TextMlp {
    pub fn new(config: &TextMlpConfig, embed_dim: usize, seed: u64) -> Result<TextMlp> {
        ensure!(config.input_dim > 0 && config.hidden.iter().all(|&h| h > 0), "text_mlp: widths must be positive");
        let mut dims = vec![config.input_dim];
        dims.extend(&config.hidden);
        dims.push(embed_dim);
        let mlp = Mlp::new("text.mlp", &dims, Activation::Relu, false, true, &mut ChaCha8Rng::seed_from_u64(seed));
        Ok(TextMlp { config: config.clone(), embed_dim, mlp })
    }
}

impl Encoder for TextMlp {
    fn modality(&self) -> Modality {
        Modality::Text
    }
    fn embed_dim(&self) -> usize {
        self.embed_dim
    }
    fn forward(&mut self, batch: &ModalityBatch, _ctx: &StepContext) -> Result<Tensor> {
        let t = match batch {
            ModalityBatch::Text(t) => t,
            other => bail!("text_mlp: expected a text batch, got a {} batch", batch_name(other)),
        };
        ensure!(t.dim == self.config.input_dim, "text batch: embeddings are {}-d, the encoder expects {}", t.dim, self.config.input_dim);
        ensure!(t.values.len() == t.batch * t.dim, "text batch: {} values for B = {} × {}", t.values.len(), t.batch, t.dim);
        if let Some(i) = t.values.iter().position(|v| !v.is_finite()) {
            bail!("text batch: sample {} feature {}: non-finite value {}", i / t.dim, i % t.dim, t.values[i]);
        }
        let x = Tensor::from_vec(&[t.batch, t.dim], t.values.clone()).to_device(self.mlp.layers[0].weight.value.device())?;
        Ok(self.mlp.forward(&x))
    }
    fn backward(&mut self, dout: &Tensor, _ctx: &StepContext) -> Result<()> {
        self.mlp.backward(dout);
        Ok(())
    }
}

impl Module for TextMlp {
    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        self.mlp.visit_params(f);
    }
}
