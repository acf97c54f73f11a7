//! Charge-density encoder: 3-D ResNeXt (Hara et al.'s layout, the MultiMat reference's n_e(r)
//! encoder), ResNeXt-50 by default:
//!
//! ```text
//! x (B, 1, 32, 32, 32) ─ conv1 7³/2 (1→64) ─ bn1 ─ ReLU ─ max-pool 3³/2 (pad 1)
//!   ─ layer1..4: [3, 4, 6, 3] bottleneck blocks, planes 128/256/512/1024 (out 2×planes,
//!     grouped width cardinality·planes/32, cardinality 32), strides 1/2/2/2, 1³ projection shortcuts
//!   ─ global average pool (B, 2048) ─ fc Linear(2048→embed_dim)
//! ```
//! `ResNeXt3dConfig::small()` ([1,1,1,1] blocks, planes 32/64/128/256, cardinality 8, stem 16)
//! is the CPU-sized variant. Convolutions are bias-free with kaiming-normal fan-out init (the
//! reference's); every BN is SyncBN. Names: `charge_density.conv1`, `.bn1`,
//! `.layer<s>.<b>.{conv1,bn1,…,downsample.0,downsample.1}`, `.fc`.
//!
//! Runs on any device: the normalised batch is uploaded to the parameters' device and every
//! step after it is a tensor-level op (cuDNN convolutions, `kernels/pool3d.cu`, the batch-norm,
//! ReLU and add kernels on a GPU).
//!
//! Input (per voxel, recorded by `input_transform` in the config): by default (`raw`) the stored
//! values, ρ·V_cell as the reference feeds its 32³ grid. `signed_log1p` normalises instead:
//! ρ = value / V_cell (e/Å³), then x = sign(ρ)·ln(1 + |ρ|). Why one might: the stored ρ·V_cell scales with
//! the cell volume, which is not a property of the density, so it is divided out; ρ itself spans
//! ~10⁻⁴ in interstitial regions to 10²–10³ e/Å³ near cores, so a log compresses the dynamic
//! range, while ln(1+·) stays linear (and exact) for the small values and the signed form
//! accepts the slightly negative values that Fourier resampling can produce. A per-sample
//! standardisation was rejected: it would erase the absolute density scale (a physical signal)
//! and make an embedding depend on how much vacuum a cell has. `input_transform = "none"` feeds
//! ρ unchanged.

use super::common::*;
use super::{DensityBatch, Encoder, InputPreparer, Modality, ModalityBatch, PreparedInputs, StepContext};
use crate::engine::nn::{Act, Activation, BatchNorm, Conv3d, Conv3dConfig, ConvInit, Linear, ResNeXtBlock, ResNeXtBlockConfig};
use crate::engine::ops::conv3d::Window3d;
use crate::engine::ops::pool3d::{global_avg_pool3d, global_avg_pool3d_grad, max_pool3d, max_pool3d_grad};
use crate::engine::{Device, Indices, Module, Param, Tensor};
use anyhow::{bail, ensure, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The fixed per-voxel input transform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputTransform {
    /// The stored values (ρ·V_cell) unchanged: the reference feeds its 32³ grid as is.
    Raw,
    /// sign(ρ)·ln(1 + |ρ|) of ρ = value / V_cell.
    SignedLog1p,
    /// ρ = value / V_cell unchanged.
    None,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResNeXt3dConfig {
    /// Blocks per stage.
    pub stages: Vec<usize>,
    /// `planes` per stage (block output = 2·planes).
    pub planes: Vec<usize>,
    pub strides: Vec<usize>,
    pub cardinality: usize,
    pub stem_channels: usize,
    pub stem_kernel: usize,
    pub stem_stride: usize,
    pub input_transform: InputTransform,
}

impl Default for ResNeXt3dConfig {
    fn default() -> Self {
        ResNeXt3dConfig {
            stages: vec![3, 4, 6, 3],
            planes: vec![128, 256, 512, 1024],
            strides: vec![1, 2, 2, 2],
            cardinality: 32,
            stem_channels: 64,
            stem_kernel: 7,
            stem_stride: 2,
            input_transform: InputTransform::Raw,
        }
    }
}

impl ResNeXt3dConfig {
    /// CPU-sized preset: one block per stage, planes 32/64/128/256, cardinality 8, stem 16.
    pub fn small() -> ResNeXt3dConfig {
        ResNeXt3dConfig { stages: vec![1, 1, 1, 1], planes: vec![32, 64, 128, 256], cardinality: 8, stem_channels: 16, ..Default::default() }
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(!self.stages.is_empty() && self.stages.len() == self.planes.len() && self.stages.len() == self.strides.len(),
            "resnext3d: stages, planes and strides need the same (non-zero) length");
        ensure!(self.cardinality > 0 && self.stem_channels > 0 && self.stem_kernel % 2 == 1 && self.stem_stride > 0,
            "resnext3d: cardinality, stem channels and stride must be positive and the stem kernel odd");
        for &p in &self.planes {
            ensure!((self.cardinality * p) % 32 == 0 && (self.cardinality * p / 32) % self.cardinality == 0 && p > 0,
                "resnext3d: planes {p} gives a grouped width cardinality·planes/32 not divisible by cardinality {}", self.cardinality);
        }
        Ok(())
    }

    /// Width of the pooled features (2 × the last stage's planes).
    pub fn feature_dim(&self) -> usize {
        2 * self.planes.last().copied().unwrap_or(0)
    }
}

struct Saved {
    stem_shape: Vec<usize>,   // stem output (B, C0, D, H, W), the max-pool input
    argmax: Indices,          // (B, C0, OD, OH, OW) max-pool winners, on the model's device
    pooled_shape: Vec<usize>, // last stage output (B, C, D, H, W)
}

pub struct ResNeXt3d {
    pub config: ResNeXt3dConfig,
    embed_dim: usize,
    pub conv1: Conv3d,
    pub bn1: BatchNorm,
    relu: Act,
    pool: Window3d,
    pub blocks: Vec<ResNeXtBlock>,
    pub fc: Linear,
    saved: Option<Saved>,
}

impl ResNeXt3d {
    pub fn new(config: &ResNeXt3dConfig, embed_dim: usize, seed: u64) -> Result<ResNeXt3d> {
        config.validate()?;
        let rng = &mut ChaCha8Rng::seed_from_u64(seed);
        let stem = Conv3dConfig {
            in_channels: 1,
            out_channels: config.stem_channels,
            window: Window3d::cube(config.stem_kernel, config.stem_stride, config.stem_kernel / 2),
            groups: 1,
            bias: false,
        };
        let conv1 = Conv3d::new("charge_density.conv1", stem, ConvInit::KaimingNormalFanOut, rng);
        let mut blocks = Vec::new();
        let mut c = config.stem_channels;
        for (s, ((&count, &planes), &stride)) in config.stages.iter().zip(&config.planes).zip(&config.strides).enumerate() {
            for b in 0..count {
                let cfg = ResNeXtBlockConfig::stage(c, planes, config.cardinality, if b == 0 { stride } else { 1 });
                blocks.push(ResNeXtBlock::new(&format!("charge_density.layer{}.{b}", s + 1), cfg, ConvInit::KaimingNormalFanOut, rng));
                c = cfg.out_channels;
            }
        }
        Ok(ResNeXt3d {
            config: config.clone(),
            embed_dim,
            conv1,
            bn1: BatchNorm::new("charge_density.bn1", config.stem_channels),
            relu: Act::new(Activation::Relu),
            pool: Window3d::cube(3, 2, 1),
            blocks,
            fc: Linear::new("charge_density.fc", c, embed_dim, true, rng),
            saved: None,
        })
    }

    /// (B, 1, D, H, W) network input from stored ρ·V_cell values.
    pub fn normalise(&self, d: &DensityBatch) -> Result<Tensor> {
        normalise_density(d, self.config.input_transform)
    }

    /// The device the parameters live on (batches are uploaded there).
    pub fn device(&self) -> Device {
        self.conv1.weight.value.device()
    }

    /// The network after its input `x` (B, 1, D, H, W), on the parameters' device.
    fn forward_inputs(&mut self, x: Tensor, ctx: &StepContext) -> Result<Tensor> {
        check_prepared_device("resnext3d", x.device(), self.device())?;
        let grid = [x.shape[2], x.shape[3], x.shape[4]];
        let h = self.conv1.forward(&x); // (B, C0, D/2, …)
        let h = bn_forward(&mut self.bn1, &h, ctx)?;
        let h = self.relu.forward(&h);
        let [od, oh, ow] = self.pool.out_dims([h.shape[2], h.shape[3], h.shape[4]]);
        ensure!(od * oh * ow > 0, "charge-density batch: grid {grid:?} too small for the stem and max-pool");
        let stem_shape = h.shape.clone();
        let (mut h, argmax) = max_pool3d(&h, &self.pool); // (B, C0, OD, OH, OW)
        for blk in &mut self.blocks {
            h = blk.forward_synced(&h, &mut |s, n| sync_sums(ctx, s, n))?;
        }
        let feat = global_avg_pool3d(&h); // (B, C)
        self.saved = Some(Saved { stem_shape, argmax, pooled_shape: h.shape.clone() });
        Ok(self.fc.forward(&feat))
    }
}

/// (B, 1, D, H, W) network input from stored ρ·V_cell values, in `transform`.
fn normalise_density(d: &DensityBatch, transform: InputTransform) -> Result<Tensor> {
    let [gd, gh, gw] = d.grid;
    let vox = gd * gh * gw;
    ensure!(vox > 0, "charge-density batch: empty grid {:?}", d.grid);
    ensure!(d.values.len() == d.batch * vox && d.volumes.len() == d.batch,
        "charge-density batch: {} values and {} volumes for B = {} on a {:?} grid", d.values.len(), d.volumes.len(), d.batch, d.grid);
    let mut x = Vec::with_capacity(d.values.len()); // (B, 1, D, H, W)
    for (s, (vals, &vol)) in d.values.chunks(vox).zip(&d.volumes).enumerate() {
        if !(vol.is_finite() && vol > 0.0) {
            bail!("charge-density batch: sample {s}: cell volume {vol} (must be finite and > 0)");
        }
        if let Some(i) = vals.iter().position(|v| !v.is_finite()) {
            bail!("charge-density batch: sample {s} voxel {i}: non-finite value {}", vals[i]);
        }
        let inv = 1.0 / vol;
        x.extend(vals.iter().map(|v| {
            let rho = v * inv;
            match transform {
                InputTransform::Raw => *v,
                InputTransform::SignedLog1p => rho.signum() * rho.abs().ln_1p(),
                InputTransform::None => rho,
            }
        }));
    }
    Ok(Tensor::from_vec(&[d.batch, 1, gd, gh, gw], x))
}

/// The ResNeXt's [`InputPreparer`]: the input transform and the parameters' device.
struct DensityPreparer {
    input_transform: InputTransform,
    device: Device,
}

impl InputPreparer for DensityPreparer {
    fn prepare(&self, batch: &ModalityBatch) -> Result<PreparedInputs> {
        let d = match batch {
            ModalityBatch::ChargeDensity(d) => d,
            other => bail!("resnext3d: expected a charge_density batch, got a {} batch", batch_name(other)),
        };
        let x = normalise_density(d, self.input_transform)?;
        Ok(PreparedInputs::Density(upload(&x.shape.clone(), x.into_vec(), self.device)?)) // (B, 1, D, H, W)
    }
}

impl Encoder for ResNeXt3d {
    fn modality(&self) -> Modality {
        Modality::ChargeDensity
    }
    fn embed_dim(&self) -> usize {
        self.embed_dim
    }
    fn input_preparer(&self) -> Box<dyn InputPreparer> {
        Box::new(DensityPreparer { input_transform: self.config.input_transform, device: self.device() })
    }
    fn forward_prepared(&mut self, inputs: PreparedInputs, ctx: &StepContext) -> Result<Tensor> {
        self.set_training(ctx.train);
        match inputs {
            PreparedInputs::Density(x) => self.forward_inputs(x, ctx),
            other => bail!("resnext3d: got inputs prepared by {}", other.kind()),
        }
    }
    fn backward(&mut self, dout: &Tensor, ctx: &StepContext) -> Result<()> {
        let sv = self.saved.take().ok_or_else(|| anyhow::anyhow!("resnext3d: backward without a forward"))?;
        let dfeat = self.fc.backward(dout); // (B, C)
        let mut g = global_avg_pool3d_grad(&dfeat, &sv.pooled_shape); // (B, C, D, H, W)
        for blk in self.blocks.iter_mut().rev() {
            g = blk.backward_synced(&g, &mut |s, n| sync_sums(ctx, s, n))?;
        }
        let dstem = max_pool3d_grad(&g, &sv.argmax, &sv.stem_shape, &self.pool); // (B, C0, D, H, W)
        let dstem = self.relu.backward(&dstem);
        let dstem = bn_backward(&mut self.bn1, &dstem, ctx)?;
        self.conv1.backward_params_only(&dstem);
        Ok(())
    }
}

impl Module for ResNeXt3d {
    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        self.conv1.visit_params(f);
        self.bn1.visit_params(f);
        for blk in &mut self.blocks {
            blk.visit_params(f);
        }
        self.fc.visit_params(f);
    }
    fn visit_buffers(&mut self, f: &mut dyn FnMut(&str, &mut Tensor)) {
        self.bn1.visit_buffers(f);
        for blk in &mut self.blocks {
            blk.visit_buffers(f);
        }
    }
    fn set_training(&mut self, training: bool) {
        self.bn1.set_training(training);
        for blk in &mut self.blocks {
            blk.set_training(training);
        }
    }
}
