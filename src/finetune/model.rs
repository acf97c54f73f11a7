//! The fine-tuning model: the crystal encoder (PotNet or CGCNN, as in pre-training, output
//! `embed_dim`) followed by a randomly initialised linear head `embed_dim → target width`, and
//! the transfer of a pre-trained crystal encoder out of a `multimat pretrain` checkpoint.
//!
//! Parameter names: the encoder's own (`crystal.*`, identical to pre-training, which is what makes
//! the transfer a name-by-name copy) and `finetune_head.{weight,bias}`.

use super::config::FinetuneConfig;
use crate::engine::nn::Linear;
use crate::engine::{Module, Param, Tensor};
use crate::model::config::build_encoder;
use crate::model::{Encoder, Modality, PreparedInputs, StepContext};
use crate::train::checkpoint::Checkpoint;
use crate::train::config::PretrainConfig;
use anyhow::{bail, Context, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::Path;

pub struct FinetuneModel {
    pub encoder: Box<dyn Encoder>,
    pub head: Linear, // (width, embed_dim)
}

impl FinetuneModel {
    /// Encoder from scratch (weights drawn from `seed`) and a fresh head (drawn from another
    /// stream of `seed`, so loading a checkpoint does not change the head's initialisation).
    pub fn new(cfg: &FinetuneConfig, width: usize, seed: u64) -> Result<FinetuneModel> {
        let encoder = build_encoder(Modality::Crystal, &cfg.model.encoders, cfg.model.embed_dim, seed.wrapping_mul(1_000_003).wrapping_add(1))?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6865_6164_5f66_7431); // "head_ft1"
        let head = Linear::new("finetune_head", cfg.model.embed_dim, width, true, &mut rng);
        Ok(FinetuneModel { encoder, head })
    }

    /// (B, width) predictions in model space, from inputs prepared by the encoder's
    /// [`Encoder::input_preparer`] (taken after the model moved to its device).
    pub fn forward_prepared(&mut self, inputs: PreparedInputs, ctx: &StepContext) -> Result<Tensor> {
        let z = self.encoder.forward_prepared(inputs, ctx)?; // (B, E)
        Ok(self.head.forward(&z))
    }

    /// `dout` (B, width): accumulates every parameter gradient.
    pub fn backward(&mut self, dout: &Tensor, ctx: &StepContext) -> Result<()> {
        let dz = self.head.backward(dout); // (B, E)
        self.encoder.backward(&dz, ctx)
    }
}

impl Module for FinetuneModel {
    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        self.encoder.visit_params(f);
        self.head.visit_params(f);
    }
    fn visit_buffers(&mut self, f: &mut dyn FnMut(&str, &mut Tensor)) {
        self.encoder.visit_buffers(f);
    }
    fn set_training(&mut self, training: bool) {
        self.encoder.set_training(training);
    }
}

/// What a loaded pre-training checkpoint said about itself (recorded in `result.json`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct TransferInfo {
    pub checkpoint: String,
    pub step: u64,
    pub tensors_sha256: String,
    pub modalities: Vec<String>,
    pub loss: String,
    pub tensors_loaded: usize,
}

/// Copy the crystal encoder's parameters and BatchNorm statistics from the pre-training
/// checkpoint `path` names (a step-*.json, or a run or checkpoints directory: its newest) into
/// `encoder`. Errors (naming the checkpoint) when it is not a
/// pre-training checkpoint, has no crystal encoder, or its crystal encoder is of another kind
/// or shape than `cfg` asks for.
pub fn load_pretrained_crystal(encoder: &mut dyn Encoder, cfg: &FinetuneConfig, path: &Path) -> Result<TransferInfo> {
    let c = crate::eval::checkpoint_model::resolve_checkpoint(path)?;
    check_compatible(&c, cfg)?;
    let loaded = load_module_weights(encoder, &c)
        .map_err(|e| e.context(format!("{}: its crystal encoder does not match model.encoders of the fine-tuning config", path.display())))?;
    Ok(TransferInfo {
        checkpoint: c.json_path.display().to_string(),
        step: c.step(),
        tensors_sha256: c.meta["tensors_sha256"].as_str().unwrap_or("").to_string(),
        modalities: c.meta["modalities"].as_array().map(|a| a.iter().filter_map(|m| m.as_str().map(String::from)).collect()).unwrap_or_default(),
        loss: c.meta["config"]["loss"]["kind"].as_str().unwrap_or("").to_string(),
        tensors_loaded: loaded,
    })
}

/// Copy every parameter (`param.<name>`) and BatchNorm buffer (`buffer.<name>`) of `module`
/// from the checkpoint, shapes checked; returns the number of tensors copied. Tensors of the
/// checkpoint that `module` does not have are ignored (a pre-training checkpoint holds every
/// encoder).
pub fn load_module_weights<M: Module + ?Sized>(module: &mut M, c: &Checkpoint) -> Result<usize> {
    let mut err: Option<anyhow::Error> = None;
    let mut loaded = 0usize;
    module.visit_params(&mut |p| {
        if err.is_none() {
            match c.tensor(&format!("param.{}", p.name), &p.value.shape) {
                Ok(v) => {
                    p.value.data_mut().copy_from_slice(v);
                    loaded += 1;
                }
                Err(e) => err = Some(e),
            }
        }
    });
    module.visit_buffers(&mut |name, b| {
        if err.is_none() {
            match c.tensor(&format!("buffer.{name}"), &b.shape.clone()) {
                Ok(v) => {
                    b.data_mut().copy_from_slice(v);
                    loaded += 1;
                }
                Err(e) => err = Some(e),
            }
        }
    });
    err.map_or(Ok(loaded), Err)
}

/// The checkpoint's crystal encoder must be the one the fine-tuning config builds.
fn check_compatible(c: &Checkpoint, cfg: &FinetuneConfig) -> Result<()> {
    let p = c.json_path.display();
    let kind = c.meta["kind"].as_str().unwrap_or("?");
    if kind != "multimat-pretrain" {
        bail!("{p}: checkpoint kind is {kind:?}, expected a `multimat pretrain` checkpoint (\"multimat-pretrain\")");
    }
    let pre = PretrainConfig::from_stored(&c.meta["config"])
        .with_context(|| format!("{p}: cannot read the pre-training config stored in the checkpoint"))?;
    if !pre.data.modalities.contains(&Modality::Crystal) {
        bail!("{p}: the checkpoint was pre-trained without a crystal encoder (modalities {:?})", pre.data.modalities);
    }
    let (want, have) = (cfg.model.encoders.crystal_encoder, pre.model.encoders.crystal_encoder);
    if want != have {
        bail!("{p}: the checkpoint's crystal encoder is {have:?} but model.encoders.crystal_encoder = {want:?}");
    }
    if cfg.model.embed_dim != pre.model.embed_dim {
        bail!("{p}: the checkpoint's embed_dim is {} but model.embed_dim = {}", pre.model.embed_dim, cfg.model.embed_dim);
    }
    use crate::model::config::CrystalEncoderKind::*;
    let (a, b) = match want {
        Potnet => (format!("{:?}", cfg.model.encoders.potnet), format!("{:?}", pre.model.encoders.potnet)),
        Cgcnn => (format!("{:?}", cfg.model.encoders.cgcnn), format!("{:?}", pre.model.encoders.cgcnn)),
    };
    if a != b {
        bail!("{p}: the checkpoint's {want:?} settings are {b} but the fine-tuning config has {a}; set model.encoders to match");
    }
    Ok(())
}
