//! DOS encoder: a Transformer without positional encoding (MultiMat methods, "DOS encoder").
//!
//! ```text
//! E (B, L, 1) ─ energy_embedding Linear(1→D) ─┐
//! ρ (B, L, 1) ─ density_embedding Linear(1→D) ─┴─ concat (B, L, 2D) ─ [mix Linear(2D→2D)] ─ down Linear(2D→D)
//!   ─ blocks × 4 (pre-LN, H heads × hs, FFN D→4D→D, GELU; key padding mask) ─ masked mean ─ [head Linear(D→embed_dim)]
//! ```
//! The paper: "a linear layer was employed to mix the embeddings for each token. This was then
//! followed by another layer, which downsampled the embeddings … back to the original embedding
//! dimension" — so by default there is a mixing Linear(2D→2D) before the down-projection
//! (`mix_layer = false` gives the design table's single Linear(2D→D)). No activation sits between
//! them (the paper names none). The pooled (B, D) is the embedding, as in the reference (D =
//! embed_dim); `head = true` adds a Linear(D→embed_dim) onto the shared latent size.
//! Padded tokens (`DosBatch::mask` false) are masked as attention keys and left out of the pool,
//! and their input values are replaced by 0 so non-finite padding cannot leak in.
//!
//! The encoder runs on the device its parameters live on: the batch (host data) is checked and
//! uploaded once (`DosInputs`, prepared inline or on the prefetch thread), then forward and
//! backward are tensor-level ops only.

use super::common::*;
use super::{DosBatch, Encoder, InputPreparer, Modality, ModalityBatch, PreparedInputs, StepContext};
use crate::engine::nn::transformer::TransformerConfig;
use crate::engine::nn::{Activation, Linear, TransformerBlock};
use crate::engine::ops;
use crate::engine::ops::gelu::GeluKind;
use crate::engine::tensor::Indices;
use crate::engine::{Device, Module, Param, Tensor};
use anyhow::{bail, ensure, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DosTransformerConfig {
    /// Model width D.
    pub dim: usize,
    pub layers: usize,
    pub heads: usize,
    pub head_size: usize,
    pub ffn_dim: usize,
    /// The paper's mixing Linear(2D→2D) before the down-projection.
    pub mix_layer: bool,
    pub qkv_bias: bool,
    pub ln_eps: f32,
    /// A head Linear(D→embed_dim) after the pool. Default `false`: the pooled (B, D) is the
    /// embedding, as in the reference (`TransformerDOS` ends in the mean pool), which needs
    /// D = embed_dim.
    pub head: bool,
}

impl Default for DosTransformerConfig {
    fn default() -> Self {
        DosTransformerConfig { dim: 128, layers: 4, heads: 8, head_size: 64, ffn_dim: 512, mix_layer: true, qkv_bias: false, ln_eps: 1e-5, head: false }
    }
}

impl DosTransformerConfig {
    /// Sizes positive; without a head the model width must be the embedding width.
    pub fn validate(&self, embed_dim: usize) -> Result<()> {
        let c = self;
        ensure!(c.dim > 0 && c.layers > 0 && c.heads > 0 && c.head_size > 0 && c.ffn_dim > 0, "dos_transformer: sizes must be positive");
        ensure!(c.head || c.dim == embed_dim,
            "dos_transformer: without a head (head = false, the reference) the pooled width dim = {} is the embedding, so it must equal model.embed_dim = {embed_dim}; set dim = {embed_dim} or head = true", c.dim);
        Ok(())
    }
}

pub struct DosTransformer {
    pub config: DosTransformerConfig,
    embed_dim: usize,
    pub energy_embedding: Linear,
    pub density_embedding: Linear,
    pub mix: Option<Linear>,
    pub down: Linear,
    pub blocks: Vec<TransformerBlock>,
    pub head: Option<Linear>,
    saved: Option<(Indices, usize)>, // valid (B, L) on the model's device, L
}

impl DosTransformer {
    pub fn new(config: &DosTransformerConfig, embed_dim: usize, seed: u64) -> Result<DosTransformer> {
        let c = config;
        c.validate(embed_dim)?;
        let rng = &mut ChaCha8Rng::seed_from_u64(seed);
        let block_cfg = TransformerConfig {
            dim: c.dim,
            heads: c.heads,
            head_size: c.head_size,
            ffn_dim: c.ffn_dim,
            activation: Activation::Gelu(GeluKind::Erf),
            ln_eps: c.ln_eps,
            qkv_bias: c.qkv_bias,
            norm_first: true,
        };
        Ok(DosTransformer {
            config: c.clone(),
            embed_dim,
            energy_embedding: Linear::new("dos.energy_embedding", 1, c.dim, true, rng),
            density_embedding: Linear::new("dos.density_embedding", 1, c.dim, true, rng),
            mix: c.mix_layer.then(|| Linear::new("dos.mix", 2 * c.dim, 2 * c.dim, true, rng)),
            down: Linear::new("dos.down", 2 * c.dim, c.dim, true, rng),
            blocks: (0..c.layers).map(|k| TransformerBlock::new(&format!("dos.blocks.{k}"), &block_cfg, rng)).collect(),
            head: c.head.then(|| Linear::new("dos.head", c.dim, embed_dim, true, rng)),
            saved: None,
        })
    }

    /// The device the parameters live on (batches are uploaded there).
    pub fn device(&self) -> Device {
        self.down.weight.value.device()
    }

    /// The step after the inputs: token embeddings, the blocks, the masked mean and the head.
    fn forward_inputs(&mut self, inp: DosInputs) -> Result<Tensor> {
        check_prepared_device("dos_transformer", inp.e.device(), self.device())?;
        let DosInputs { e, rho, valid, batch: b, len: l } = inp;
        let dim = self.config.dim;
        let ee = self.energy_embedding.forward(&e); // (B·L, D)
        let re = self.density_embedding.forward(&rho); // (B·L, D)
        let mut x = ops::concat_last(&[&ee, &re]).reshape(&[b, l, 2 * dim]); // (B, L, 2D)
        if let Some(mix) = self.mix.as_mut() {
            x = mix.forward(&x);
        }
        let mut x = self.down.forward(&x); // (B, L, D)
        for blk in &mut self.blocks {
            x = blk.forward(&x, Some(&valid));
        }
        let pooled = ops::masked_mean(&x, Some(&valid)); // (B, D)
        self.saved = Some((valid, l));
        Ok(match self.head.as_mut() {
            Some(head) => head.forward(&pooled),
            None => pooled,
        })
    }
}

/// The DOS transformer's inputs of one batch on the parameters' device.
pub struct DosInputs {
    e: Tensor,      // (B·L, 1) energies, 0 at padded points
    rho: Tensor,    // (B·L, 1) densities, 0 at padded points
    valid: Indices, // (B, L) 1 = valid point
    batch: usize,
    len: usize,
}

/// The DOS transformer's [`InputPreparer`]: only the parameters' device.
struct DosPreparer {
    device: Device,
}

impl InputPreparer for DosPreparer {
    fn prepare(&self, batch: &ModalityBatch) -> Result<PreparedInputs> {
        let d = match batch {
            ModalityBatch::Dos(d) => d,
            other => bail!("dos_transformer: expected a dos batch, got a {} batch", batch_name(other)),
        };
        Ok(PreparedInputs::Dos(prepare_dos(d, self.device)?))
    }
}

/// Checks a DOS batch, zeroes its padded points and puts it on `dev`.
fn prepare_dos(d: &DosBatch, dev: Device) -> Result<DosInputs> {
    let (b, l) = (d.batch, d.len);
    ensure!(d.energies.len() == b * l && d.densities.len() == b * l,
        "dos batch: energies/densities hold {}/{} values for B = {b} × L = {l}", d.energies.len(), d.densities.len());
    let valid = match &d.mask {
        Some(m) => {
            ensure!(m.len() == b * l, "dos batch: mask has {} entries for B = {b} × L = {l}", m.len());
            m.clone()
        }
        None => vec![true; b * l],
    };
    let (mut e, mut rho) = (vec![0.0f32; b * l], vec![0.0f32; b * l]); // (B·L, 1) each
    for i in (0..b * l).filter(|&i| valid[i]) {
        if !d.energies[i].is_finite() || !d.densities[i].is_finite() {
            bail!("dos batch: sample {} point {}: non-finite value (E = {}, ρ = {})", i / l, i % l, d.energies[i], d.densities[i]);
        }
        e[i] = d.energies[i];
        rho[i] = d.densities[i];
    }
    let e = upload(&[b * l, 1], e, dev)?;
    let rho = upload(&[b * l, 1], rho, dev)?;
    let valid = Indices::from_mask(&valid).to_device_staged(dev)?; // (B, L)
    Ok(DosInputs { e, rho, valid, batch: b, len: l })
}

impl Encoder for DosTransformer {
    fn modality(&self) -> Modality {
        Modality::Dos
    }
    fn embed_dim(&self) -> usize {
        self.embed_dim
    }
    fn input_preparer(&self) -> Box<dyn InputPreparer> {
        Box::new(DosPreparer { device: self.device() })
    }
    fn forward_prepared(&mut self, inputs: PreparedInputs, _ctx: &StepContext) -> Result<Tensor> {
        match inputs {
            PreparedInputs::Dos(inp) => self.forward_inputs(inp),
            other => bail!("dos_transformer: got inputs prepared by {}", other.kind()),
        }
    }
    fn backward(&mut self, dout: &Tensor, _ctx: &StepContext) -> Result<()> {
        let (valid, l) = self.saved.take().ok_or_else(|| anyhow::anyhow!("dos_transformer: backward without a forward"))?;
        let dim = self.config.dim;
        let dpooled = match self.head.as_mut() {
            Some(head) => head.backward(dout),
            None => dout.clone(),
        };
        let mut g = ops::masked_mean_grad(&dpooled, Some(&valid), l); // (B, L, D)
        for blk in self.blocks.iter_mut().rev() {
            g = blk.backward(&g);
        }
        let mut g = self.down.backward(&g); // (B, L, 2D)
        if let Some(mix) = self.mix.as_mut() {
            g = mix.backward(&g);
        }
        let rows = g.numel() / (2 * dim);
        let mut parts = ops::split_last(&g, &[dim, dim]).into_iter(); // d(energy), d(density) embeddings
        let (de, dr) = (parts.next().expect("two parts"), parts.next().expect("two parts"));
        self.energy_embedding.backward(&de.reshape(&[rows, dim]));
        self.density_embedding.backward(&dr.reshape(&[rows, dim]));
        Ok(())
    }
}

impl Module for DosTransformer {
    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        self.energy_embedding.visit_params(f);
        self.density_embedding.visit_params(f);
        if let Some(m) = self.mix.as_mut() {
            m.visit_params(f);
        }
        self.down.visit_params(f);
        for blk in &mut self.blocks {
            blk.visit_params(f);
        }
        if let Some(head) = self.head.as_mut() {
            head.visit_params(f);
        }
    }
}
