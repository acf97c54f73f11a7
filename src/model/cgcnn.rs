//! CGCNN crystal encoder (Xie & Grossman 2018), the baseline. The standard model:
//!
//! ```text
//! x (N, 92) ─ embedding Linear(92→F) ─ h (N, F)
//! edge (E): g = Gaussian RBF of d (41 centres over [0, 8] Å, ℓ = 0.2 Å, CGCNN's GaussianDistance)
//! conv k:  z_ij = [h_i, h_j, g_ij]   (i = dst, the centre atom; j = src, its neighbour)
//!          [f, c] = bn1(fc_full(z_ij))          fc_full: Linear(2F + 41 → 2F)
//!          h_i ← softplus(h_i + bn2(Σ_j σ(f) ⊙ softplus(c)))
//! mean pool ─ softplus ─ conv_to_fc Linear(F→128) ─ softplus ─ head Linear(128→embed_dim)
//! ```
//! The neighbour list (12 nearest within 8 Å) is built at ingest (`GraphBatch::cgcnn`). Every BN
//! is SyncBN. Parameter names `crystal.embedding`, `crystal.conv.<k>.{fc_full,bn1,bn2}`,
//! `crystal.conv_to_fc`, `crystal.head`.

use super::common::*;
use super::{Encoder, InputPreparer, Modality, ModalityBatch, PreparedInputs, StepContext};
use crate::crystal::features::{AtomFeatureEncoding, ATOM_FEATURE_DIM};
use crate::engine::nn::{add, Act, Activation, BatchNorm, Linear};
use crate::engine::ops::gather::{gather_rows, scatter_add_rows, EdgeIndex};
use crate::engine::ops::rbf::{rbf, RbfGrid, RbfKind};
use crate::engine::ops::segment::{segment_mean, segment_mean_grad};
use crate::engine::ops::{concat_last, mul, split_last};
use crate::engine::{Device, Indices, Module, Param, Tensor};
use anyhow::{bail, ensure, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CgcnnConfig {
    /// Atom feature width F (`atom_fea_len`).
    pub atom_fea_len: usize,
    pub conv_layers: usize,
    /// Width after pooling (`h_fea_len`).
    pub h_fea_len: usize,
    pub rbf_min: f32,
    pub rbf_max: f32,
    pub rbf_bins: usize,
    /// Atom-feature conventions: `cgcnn` (CGCNN's `atom_init.json`, the reference) or `legacy`.
    pub atom_features: AtomFeatureEncoding,
}

impl Default for CgcnnConfig {
    fn default() -> Self {
        CgcnnConfig { atom_fea_len: 64, conv_layers: 3, h_fea_len: 128, rbf_min: 0.0, rbf_max: 8.0, rbf_bins: 41, atom_features: AtomFeatureEncoding::Cgcnn }
    }
}

/// One CGCNN convolution (`ConvLayer`).
pub struct CgcnnConv {
    pub fc_full: Linear,
    pub bn1: BatchNorm,
    pub bn2: BatchNorm,
    filter_act: Act,
    core_act: Act,
    out_act: Act,
    saved: Option<(Tensor, Tensor)>, // σ(f) (E, F), softplus(c) (E, F)
}

impl CgcnnConv {
    fn new(name: &str, f: usize, edge_features: usize, rng: &mut ChaCha8Rng) -> CgcnnConv {
        CgcnnConv {
            fc_full: Linear::new(&format!("{name}.fc_full"), 2 * f + edge_features, 2 * f, true, rng),
            bn1: BatchNorm::new(&format!("{name}.bn1"), 2 * f),
            bn2: BatchNorm::new(&format!("{name}.bn2"), f),
            filter_act: Act::new(Activation::Sigmoid),
            core_act: Act::new(Activation::SOFTPLUS),
            out_act: Act::new(Activation::SOFTPLUS),
            saved: None,
        }
    }

    fn forward(&mut self, h: &Tensor, g: &Tensor, src: &EdgeIndex, dst: &EdgeIndex, ctx: &StepContext) -> Result<Tensor> {
        let f = h.shape[1];
        let z = edge_concat_forward(h, g, src, dst); // (E, 2F + G)
        let gated = bn_forward(&mut self.bn1, &self.fc_full.forward(&z), ctx)?; // (E, 2F)
        let parts = split_last(&gated, &[f, f]);
        let filter = self.filter_act.forward(&parts[0]); // (E, F)
        let core = self.core_act.forward(&parts[1]); // (E, F)
        let agg = scatter_add_rows(&mul(&filter, &core), dst); // (N, F)
        let y = bn_forward(&mut self.bn2, &agg, ctx)?;
        self.saved = Some((filter, core));
        Ok(self.out_act.forward(&add(h, &y)))
    }

    /// dout (N, F) → dh (N, F) (the edge features are data: no gradient).
    fn backward(&mut self, dout: &Tensor, src: &EdgeIndex, dst: &EdgeIndex, ctx: &StepContext) -> Result<Tensor> {
        let (filter, core) = self.saved.take().expect("CgcnnConv: backward without forward");
        let dsum = self.out_act.backward(dout);
        let dagg = bn_backward(&mut self.bn2, &dsum, ctx)?;
        let dm = gather_rows(&dagg, dst); // (E, F)
        let dfilter = self.filter_act.backward(&mul(&dm, &core));
        let dcore = self.core_act.backward(&mul(&dm, &filter));
        let d = bn_backward(&mut self.bn1, &concat_last(&[&dfilter, &dcore]), ctx)?; // (E, 2F)
        let dz = self.fc_full.backward(&d);
        let mut dh = dsum;
        edge_concat_backward(&mut dh, &dz, src, dst);
        Ok(dh)
    }
}

impl Module for CgcnnConv {
    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        self.fc_full.visit_params(f);
        self.bn1.visit_params(f);
        self.bn2.visit_params(f);
    }
    fn visit_buffers(&mut self, f: &mut dyn FnMut(&str, &mut Tensor)) {
        self.bn1.visit_buffers(f);
        self.bn2.visit_buffers(f);
    }
    fn set_training(&mut self, training: bool) {
        self.bn1.set_training(training);
        self.bn2.set_training(training);
    }
}

pub struct Cgcnn {
    pub config: CgcnnConfig,
    embed_dim: usize,
    pub embedding: Linear,
    pub convs: Vec<CgcnnConv>,
    pool_act: Act,
    pub conv_to_fc: Linear,
    fc_act: Act,
    pub head: Linear,
    grid: RbfGrid,
    saved: Option<Saved>,
}

/// The batch structure the backward reuses.
struct Saved {
    src: EdgeIndex,
    dst: EdgeIndex,
    node_offsets: Indices, // (B + 1)
    atoms: usize,
}

impl Cgcnn {
    pub fn new(config: &CgcnnConfig, embed_dim: usize, seed: u64) -> Result<Cgcnn> {
        ensure!(config.atom_fea_len > 0 && config.conv_layers > 0 && config.h_fea_len > 0, "cgcnn: widths and layers must be positive");
        ensure!(config.rbf_bins >= 2 && config.rbf_max > config.rbf_min, "cgcnn: need rbf_bins ≥ 2 and rbf_max > rbf_min");
        let rng = &mut ChaCha8Rng::seed_from_u64(seed);
        let f = config.atom_fea_len;
        Ok(Cgcnn {
            config: config.clone(),
            embed_dim,
            embedding: Linear::new("crystal.embedding", ATOM_FEATURE_DIM, f, true, rng),
            convs: (0..config.conv_layers).map(|k| CgcnnConv::new(&format!("crystal.conv.{k}"), f, config.rbf_bins, rng)).collect(),
            pool_act: Act::new(Activation::SOFTPLUS),
            conv_to_fc: Linear::new("crystal.conv_to_fc", f, config.h_fea_len, true, rng),
            fc_act: Act::new(Activation::SOFTPLUS),
            head: Linear::new("crystal.head", config.h_fea_len, embed_dim, true, rng),
            grid: RbfGrid::new(config.rbf_min, config.rbf_max, config.rbf_bins),
            saved: None,
        })
    }

    /// The device the parameters live on (batches are uploaded there).
    pub fn device(&self) -> Device {
        self.head.weight.value.device()
    }

    /// The step after the inputs: embedding, the conv layers, pooling and the head.
    fn forward_inputs(&mut self, inp: CgcnnInputs, ctx: &StepContext) -> Result<Tensor> {
        check_prepared_device("cgcnn", inp.x.device(), self.device())?;
        let CgcnnInputs { x, distance, src, dst, node_offsets } = inp;
        let (n, f) = (x.shape[0], self.config.atom_fea_len);
        let mut h = self.embedding.forward(&x); // (N, F)
        let gauss = rbf(&distance, &self.grid, RbfKind::Gaussian); // (E, G)
        for conv in &mut self.convs {
            h = conv.forward(&h, &gauss, &src, &dst, ctx)?;
        }
        let pooled = segment_mean(&h, &node_offsets); // (B, F)
        debug_assert_eq!(pooled.shape, vec![node_offsets.len() - 1, f]);
        let y = self.fc_act.forward(&self.conv_to_fc.forward(&self.pool_act.forward(&pooled)));
        self.saved = Some(Saved { src, dst, node_offsets, atoms: n });
        Ok(self.head.forward(&y))
    }
}

/// CGCNN's inputs of one batch on the parameters' device.
pub struct CgcnnInputs {
    x: Tensor,             // (N, 92) atom features
    distance: Tensor,      // (E) Å
    src: EdgeIndex,        // (E)
    dst: EdgeIndex,        // (E)
    node_offsets: Indices, // (B + 1)
}

/// CGCNN's [`InputPreparer`]: the atom-feature encoding and the parameters' device.
struct CgcnnPreparer {
    atom_features: AtomFeatureEncoding,
    device: Device,
}

impl InputPreparer for CgcnnPreparer {
    fn prepare(&self, batch: &ModalityBatch) -> Result<PreparedInputs> {
        let g = match batch {
            ModalityBatch::Crystal(g) => g,
            other => bail!("cgcnn: expected a crystal batch, got a {} batch", batch_name(other)),
        };
        validate_nodes(g)?;
        let (n, dev) = (g.species.len(), self.device);
        let (src, dst) = (host_indices(&g.cgcnn.src)?, host_indices(&g.cgcnn.dst)?);
        validate_edges("cgcnn edges", &src, &dst, &[("distance", &g.cgcnn.distance)], n, true)?;
        ensure!(src.len() >= 2, "crystal batch: CGCNN needs at least two edges in a batch (batch norm over edges)");
        let src = EdgeIndex::new(&src, n, "crystal batch: cgcnn edges src", dev)?;
        let dst = EdgeIndex::new(&dst, n, "crystal batch: cgcnn edges dst", dev)?;
        let node_offsets = g.node_offsets.to_device_staged(dev)?;
        let x = batch_atom_features(&g.species, self.atom_features)?.to_device_staged(dev)?; // (N, 92)
        let distance = upload(&[src.len()], g.cgcnn.distance.clone(), dev)?; // (E)
        Ok(PreparedInputs::Cgcnn(CgcnnInputs { x, distance, src, dst, node_offsets }))
    }
}

impl Encoder for Cgcnn {
    fn modality(&self) -> Modality {
        Modality::Crystal
    }
    fn embed_dim(&self) -> usize {
        self.embed_dim
    }
    fn input_preparer(&self) -> Box<dyn InputPreparer> {
        Box::new(CgcnnPreparer { atom_features: self.config.atom_features, device: self.device() })
    }
    fn forward_prepared(&mut self, inputs: PreparedInputs, ctx: &StepContext) -> Result<Tensor> {
        self.set_training(ctx.train);
        match inputs {
            PreparedInputs::Cgcnn(inp) => self.forward_inputs(inp, ctx),
            other => bail!("cgcnn: got inputs prepared by {}", other.kind()),
        }
    }
    fn backward(&mut self, dout: &Tensor, ctx: &StepContext) -> Result<()> {
        let sv = self.saved.take().ok_or_else(|| anyhow::anyhow!("cgcnn: backward without a forward"))?;
        let d = self.fc_act.backward(&self.head.backward(dout));
        let dpooled = self.pool_act.backward(&self.conv_to_fc.backward(&d)); // (B, F)
        let mut dh = segment_mean_grad(&dpooled, &sv.node_offsets, sv.atoms); // (N, F)
        for conv in self.convs.iter_mut().rev() {
            dh = conv.backward(&dh, &sv.src, &sv.dst, ctx)?;
        }
        self.embedding.backward(&dh);
        Ok(())
    }
}

impl Module for Cgcnn {
    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        self.embedding.visit_params(f);
        for c in &mut self.convs {
            c.visit_params(f);
        }
        self.conv_to_fc.visit_params(f);
        self.head.visit_params(f);
    }
    fn visit_buffers(&mut self, f: &mut dyn FnMut(&str, &mut Tensor)) {
        for c in &mut self.convs {
            c.visit_buffers(f);
        }
    }
    fn set_training(&mut self, training: bool) {
        for c in &mut self.convs {
            c.set_training(training);
        }
    }
}
