//! Text encoder: a trainable MLP on frozen MatBERT [CLS] vectors, 768 → 512 → 512 → embed_dim
//! with ReLU between layers (none after the last). Parameter names `text.mlp.<i>.{weight,bias}`.
//! Runs on the device its parameters live on (the batch is checked on the host and uploaded by
//! its `InputPreparer`).

use super::common::{batch_name, check_prepared_device, upload};
use super::{Encoder, InputPreparer, Modality, ModalityBatch, PreparedInputs, StepContext};
use crate::engine::nn::{Activation, Mlp};
use crate::engine::{Device, Module, Param, Tensor};
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

impl TextMlp {
    /// The device the parameters live on (batches are uploaded there).
    pub fn device(&self) -> Device {
        self.mlp.layers[0].weight.value.device()
    }
}

/// The text MLP's [`InputPreparer`]: the expected vector width and the parameters' device.
struct TextPreparer {
    input_dim: usize,
    device: Device,
}

impl InputPreparer for TextPreparer {
    /// (B, dim) checked text vectors on the device.
    fn prepare(&self, batch: &ModalityBatch) -> Result<PreparedInputs> {
        let t = match batch {
            ModalityBatch::Text(t) => t,
            other => bail!("text_mlp: expected a text batch, got a {} batch", batch_name(other)),
        };
        ensure!(t.dim == self.input_dim, "text batch: embeddings are {}-d, the encoder expects {}", t.dim, self.input_dim);
        ensure!(t.values.len() == t.batch * t.dim, "text batch: {} values for B = {} × {}", t.values.len(), t.batch, t.dim);
        if let Some(i) = t.values.iter().position(|v| !v.is_finite()) {
            bail!("text batch: sample {} feature {}: non-finite value {}", i / t.dim, i % t.dim, t.values[i]);
        }
        Ok(PreparedInputs::Text(upload(&[t.batch, t.dim], t.values.clone(), self.device)?))
    }
}

impl Encoder for TextMlp {
    fn modality(&self) -> Modality {
        Modality::Text
    }
    fn embed_dim(&self) -> usize {
        self.embed_dim
    }
    fn input_preparer(&self) -> Box<dyn InputPreparer> {
        Box::new(TextPreparer { input_dim: self.config.input_dim, device: self.device() })
    }
    fn forward_prepared(&mut self, inputs: PreparedInputs, _ctx: &StepContext) -> Result<Tensor> {
        let x = match inputs {
            PreparedInputs::Text(x) => x,
            other => bail!("text_mlp: got inputs prepared by {}", other.kind()),
        };
        check_prepared_device("text_mlp", x.device(), self.device())?;
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
