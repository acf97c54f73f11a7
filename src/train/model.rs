//! The MultiMat model as the trainer sees it: one encoder per configured modality plus the loss
//! (whose learnable temperatures are parameters), walked as one `Module` in a fixed order so the
//! optimiser, checkpoints and gradient all-reduce agree on every parameter.

use crate::engine::{Device, Module, Param, Tensor};
use crate::loss::{LossConfig, Modality, MultimodalLoss};
use crate::model::config::{build_encoder, EncodersConfig};
use crate::model::Encoder;
use anyhow::{Context, Result};

pub struct MultiMatModel {
    pub modalities: Vec<Modality>,
    pub encoders: Vec<Box<dyn Encoder>>,
    pub loss: MultimodalLoss,
    pub embed_dim: usize,
}

impl MultiMatModel {
    pub fn new(modalities: &[Modality], encoders: &EncodersConfig, loss: &LossConfig, embed_dim: usize, seed: u64) -> Result<Self> {
        let mut encs = Vec::new();
        for &m in modalities {
            // A distinct, stable seed per modality: adding a modality does not re-draw the others.
            let s = seed.wrapping_mul(1_000_003).wrapping_add(m as u64 * 7919 + 1);
            encs.push(build_encoder(m, encoders, embed_dim, s)?);
        }
        Ok(MultiMatModel {
            modalities: modalities.to_vec(),
            encoders: encs,
            loss: MultimodalLoss::new(loss.clone(), modalities)?,
            embed_dim,
        })
    }

    /// Moves the model (every encoder and the loss temperatures) to a GPU device (`cuda:N` or
    /// `cuda-sim`), with TF32 GEMMs (and TF32 cuDNN convolutions) as asked.
    pub fn to_gpu(&mut self, device: Device, tf32: bool) -> Result<()> {
        crate::engine::backend::gpu(device)?.set_tf32(tf32);
        for (m, e) in self.modalities.iter().zip(&mut self.encoders) {
            e.to_device(device).with_context(|| format!("moving the {} encoder to {device}", m.name()))?;
        }
        self.loss.to_device(device).with_context(|| format!("moving the loss temperatures to {device}"))?;
        Ok(())
    }

    pub fn encoder(&mut self, m: Modality) -> Option<&mut Box<dyn Encoder>> {
        let k = self.modalities.iter().position(|&x| x == m)?;
        Some(&mut self.encoders[k])
    }
}

impl Module for MultiMatModel {
    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        for e in &mut self.encoders {
            e.visit_params(f);
        }
        self.loss.visit_params(f);
    }
    fn visit_buffers(&mut self, f: &mut dyn FnMut(&str, &mut Tensor)) {
        for e in &mut self.encoders {
            e.visit_buffers(f);
        }
    }
    fn set_training(&mut self, training: bool) {
        for e in &mut self.encoders {
            e.set_training(training);
        }
    }
}
