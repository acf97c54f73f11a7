//! PotNet crystal encoder (Lin et al. 2023), the MultiMat crystal encoder. What is implemented,
//! following the reference code (GPL-3, read for facts only, not copied):
//!
//! ```text
//! x (N, 92) atom features ─ atom_embedding Linear(92→H) ─ h⁰ (N, H)
//! local edge (E_l):  u = −0.75/d ─ Gaussian RBF(K_l over [−4, 4]) ─ local_embedding Linear(K_l→H) ─ SiLU
//! infinite edge (P): s = −0.801·Coulomb − 0.074·London + 0.145·Pauli
//!                    ─ multiquadric RBF(K_i over [−4, 4]) ─ infinite_embedding Linear(K_i→H) ─ softplus ─ infinite_bn
//! e = [e_local; e_infinite] (E_l + P, H) and the two edge lists concatenated, as the reference
//! does when `transformer = false`: each conv layer aggregates over local and infinite edges at once.
//! conv k (k < L):  z_ij = [h_i, h_j, e_ij]  (i = dst, the receiving atom; j = src)
//!                  m_ij = σ(bn_a(mlp_a(z_ij))) ⊙ mlp_b(z_ij)      (MLPs 3H→H→H, SiLU inside)
//!                  h_i ← ReLU(h_i + bn(Σ_j m_ij))
//! mean pool over each crystal's atoms ─ head Linear(H→embed_dim)
//! ```
//!
//! The RBF length scale is the centre spacing (the reference's default). The reference's
//! property-prediction head (Linear + shifted softplus + Linear→1) is replaced by the single
//! Linear(H→embed_dim) of the MultiMat design table. Every BatchNorm is SyncBN (statistics summed
//! over ranks through `StepContext::dist`). Parameter names: `crystal.atom_embedding.weight`,
//! `crystal.local_embedding`, `crystal.infinite_embedding`, `crystal.infinite_bn`,
//! `crystal.conv.<k>.{mlp_a.<i>,bn_a,mlp_b.<i>,bn}`, `crystal.head`.

use super::common::*;
use super::{Encoder, GraphBatch, Modality, ModalityBatch, StepContext};
use crate::crystal::features::ATOM_FEATURE_DIM;
use crate::engine::nn::{add, Act, Activation, BatchNorm, Linear, Mlp};
use crate::engine::ops::gather::{gather_rows_forward, index_add_rows};
use crate::engine::ops::rbf::{gaussian_rbf_forward, multiquadric_rbf_forward, RbfGrid};
use crate::engine::ops::segment::{segment_mean_backward, segment_mean_forward};
use crate::engine::{Module, Param, Tensor};
use anyhow::{bail, ensure, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// PotNet hyper-parameters; defaults are the reference's (and the paper's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PotNetConfig {
    /// Hidden width H of atoms and edges (`fc_features`).
    pub hidden: usize,
    pub conv_layers: usize,
    /// Gaussian RBF bins of the local edges (the reference uses H).
    pub local_rbf_bins: usize,
    /// Multiquadric RBF bins of the infinite edges.
    pub infinite_rbf_bins: usize,
    pub rbf_min: f32,
    pub rbf_max: f32,
    /// Local edge input u = local_scale / d.
    pub local_scale: f32,
    /// Weights of (Coulomb, London, Pauli) in the infinite-edge potential s.
    pub potential_weights: [f32; 3],
}

impl Default for PotNetConfig {
    fn default() -> Self {
        PotNetConfig {
            hidden: 256,
            conv_layers: 3,
            local_rbf_bins: 256,
            infinite_rbf_bins: 64,
            rbf_min: -4.0,
            rbf_max: 4.0,
            local_scale: -0.75,
            potential_weights: [-0.801, -0.074, 0.145],
        }
    }
}

impl PotNetConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(self.hidden > 0 && self.conv_layers > 0, "potnet: hidden and conv_layers must be positive");
        ensure!(self.local_rbf_bins >= 2 && self.infinite_rbf_bins >= 2, "potnet: RBF bins must be ≥ 2");
        ensure!(self.rbf_max > self.rbf_min, "potnet: rbf_max must exceed rbf_min");
        Ok(())
    }
}

/// One PotNet convolution (`PotNetConv`).
pub struct PotNetConv {
    pub mlp_a: Mlp,
    pub bn_a: BatchNorm,
    pub mlp_b: Mlp,
    pub bn: BatchNorm,
    gate: Act,
    out_act: Act,
    saved: Option<(Tensor, Tensor)>, // gate σ (E, H), mlp_b output (E, H)
}

impl PotNetConv {
    fn new(name: &str, hidden: usize, rng: &mut ChaCha8Rng) -> PotNetConv {
        PotNetConv {
            mlp_a: Mlp::new(&format!("{name}.mlp_a"), &[3 * hidden, hidden, hidden], Activation::Silu, false, true, rng),
            bn_a: BatchNorm::new(&format!("{name}.bn_a"), hidden),
            mlp_b: Mlp::new(&format!("{name}.mlp_b"), &[3 * hidden, hidden, hidden], Activation::Silu, false, true, rng),
            bn: BatchNorm::new(&format!("{name}.bn"), hidden),
            gate: Act::new(Activation::Sigmoid),
            out_act: Act::new(Activation::Relu),
            saved: None,
        }
    }

    /// h (N, H), e (E, H) → h' (N, H).
    fn forward(&mut self, h: &Tensor, e: &Tensor, src: &[u32], dst: &[u32], ctx: &StepContext) -> Result<Tensor> {
        let (n, c) = (h.shape[0], h.shape[1]);
        let z = edge_concat_forward(h, e, src, dst); // (E, 3H)
        let a = self.mlp_a.forward(&z);
        let a = bn_forward(&mut self.bn_a, &a, ctx)?;
        let gate = self.gate.forward(&a); // (E, H)
        let b = self.mlp_b.forward(&z); // (E, H)
        let m = mul(&gate, &b);
        let mut agg = Tensor::zeros(&[n, c]); // (N, H)
        index_add_rows(agg.data_mut(), m.data(), dst, n, c, false);
        let y = bn_forward(&mut self.bn, &agg, ctx)?;
        self.saved = Some((gate, b));
        Ok(self.out_act.forward(&add(h, &y)))
    }

    /// dout (N, H) → (dh (N, H), de (E, H)).
    fn backward(&mut self, dout: &Tensor, src: &[u32], dst: &[u32], ctx: &StepContext) -> (Tensor, Tensor) {
        let (gate, b) = self.saved.take().expect("PotNetConv: backward without forward");
        let (n, c) = (dout.shape[0], dout.shape[1]);
        let dsum = self.out_act.backward(dout); // (N, H), to both the residual and the BN branch
        let dagg = bn_backward(&mut self.bn, &dsum, ctx);
        let mut dm = Tensor::zeros(&gate.shape); // (E, H)
        gather_rows_forward(dm.data_mut(), dagg.data(), dst, n, c);
        let dgate = mul(&dm, &b);
        let db = mul(&dm, &gate);
        let mut dz = self.mlp_b.backward(&db); // (E, 3H)
        let da = self.gate.backward(&dgate);
        let da = bn_backward(&mut self.bn_a, &da, ctx);
        crate::engine::nn::add_assign(&mut dz, &self.mlp_a.backward(&da));
        let mut dh = dsum;
        let de = edge_concat_backward(&mut dh, &dz, src, dst);
        (dh, de)
    }
}

impl Module for PotNetConv {
    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        self.mlp_a.visit_params(f);
        self.bn_a.visit_params(f);
        self.mlp_b.visit_params(f);
        self.bn.visit_params(f);
    }
    fn visit_buffers(&mut self, f: &mut dyn FnMut(&str, &mut Tensor)) {
        self.bn_a.visit_buffers(f);
        self.bn.visit_buffers(f);
    }
    fn set_training(&mut self, training: bool) {
        self.bn_a.set_training(training);
        self.bn.set_training(training);
    }
}

struct Saved {
    src: Vec<u32>,          // (E_l + P) local then infinite
    dst: Vec<u32>,          // (E_l + P)
    n_local: usize,
    node_offsets: Vec<usize>,
}

pub struct PotNet {
    pub config: PotNetConfig,
    embed_dim: usize,
    pub atom_embedding: Linear,
    pub local_embedding: Linear,
    local_act: Act,
    pub infinite_embedding: Linear,
    infinite_act: Act,
    pub infinite_bn: BatchNorm,
    pub convs: Vec<PotNetConv>,
    pub head: Linear,
    local_grid: RbfGrid,
    infinite_grid: RbfGrid,
    saved: Option<Saved>,
}

impl PotNet {
    /// Parameters under `crystal.`; weights drawn from ChaCha8 seeded with `seed`.
    pub fn new(config: &PotNetConfig, embed_dim: usize, seed: u64) -> Result<PotNet> {
        config.validate()?;
        let rng = &mut ChaCha8Rng::seed_from_u64(seed);
        let h = config.hidden;
        Ok(PotNet {
            config: config.clone(),
            embed_dim,
            atom_embedding: Linear::new("crystal.atom_embedding", ATOM_FEATURE_DIM, h, true, rng),
            local_embedding: Linear::new("crystal.local_embedding", config.local_rbf_bins, h, true, rng),
            local_act: Act::new(Activation::Silu),
            infinite_embedding: Linear::new("crystal.infinite_embedding", config.infinite_rbf_bins, h, true, rng),
            infinite_act: Act::new(Activation::SOFTPLUS),
            infinite_bn: BatchNorm::new("crystal.infinite_bn", h),
            convs: (0..config.conv_layers).map(|k| PotNetConv::new(&format!("crystal.conv.{k}"), h, rng)).collect(),
            head: Linear::new("crystal.head", h, embed_dim, true, rng),
            local_grid: RbfGrid::new(config.rbf_min, config.rbf_max, config.local_rbf_bins),
            infinite_grid: RbfGrid::new(config.rbf_min, config.rbf_max, config.infinite_rbf_bins),
            saved: None,
        })
    }

    fn validate(g: &GraphBatch) -> Result<()> {
        validate_nodes(g)?;
        let n = g.species.len();
        validate_edges("local edges", &g.local.src, &g.local.dst, &[("distance", &g.local.distance)], n, true)?;
        let inf = &g.infinite;
        validate_edges("infinite edges", &inf.src, &inf.dst,
            &[("coulomb", &inf.coulomb), ("london", &inf.london), ("pauli", &inf.pauli)], n, false)?;
        if g.local.src.len() + inf.src.len() < 2 {
            bail!("crystal batch: PotNet needs at least two edges in a batch (batch norm over edges)");
        }
        Ok(())
    }

    fn forward_graph(&mut self, g: &GraphBatch, ctx: &StepContext) -> Result<Tensor> {
        Self::validate(g)?;
        let h_dim = self.config.hidden;
        let x = batch_atom_features(&g.species)?; // (N, 92)
        let mut h = self.atom_embedding.forward(&x); // (N, H)

        let n_local = g.local.src.len();
        let u: Vec<f32> = g.local.distance.iter().map(|d| self.config.local_scale / d).collect(); // (E_l)
        let mut rbf_local = Tensor::zeros(&[n_local, self.config.local_rbf_bins]); // (E_l, K_l)
        gaussian_rbf_forward(rbf_local.data_mut(), &u, &self.local_grid);
        let e_local = self.local_act.forward(&self.local_embedding.forward(&rbf_local)); // (E_l, H)

        let inf = &g.infinite;
        let [wc, wl, wp] = self.config.potential_weights;
        let s: Vec<f32> = (0..inf.src.len()).map(|p| wc * inf.coulomb[p] + wl * inf.london[p] + wp * inf.pauli[p]).collect(); // (P)
        let mut rbf_inf = Tensor::zeros(&[s.len(), self.config.infinite_rbf_bins]); // (P, K_i)
        multiquadric_rbf_forward(rbf_inf.data_mut(), &s, &self.infinite_grid);
        let e_inf = self.infinite_act.forward(&self.infinite_embedding.forward(&rbf_inf)); // (P, H)
        let e_inf = if s.is_empty() { e_inf } else { bn_forward(&mut self.infinite_bn, &e_inf, ctx)? };

        let mut e = e_local.into_vec();
        e.extend_from_slice(e_inf.data());
        let e = Tensor::from_vec(&[n_local + s.len(), h_dim], e); // (E, H)
        let src: Vec<u32> = g.local.src.iter().chain(&inf.src).copied().collect();
        let dst: Vec<u32> = g.local.dst.iter().chain(&inf.dst).copied().collect();
        for conv in &mut self.convs {
            h = conv.forward(&h, &e, &src, &dst, ctx)?;
        }
        let mut pooled = Tensor::zeros(&[g.num_graphs, h_dim]); // (B, H)
        segment_mean_forward(pooled.data_mut(), h.data(), &g.node_offsets, h_dim);
        self.saved = Some(Saved { src, dst, n_local, node_offsets: g.node_offsets.clone() });
        Ok(self.head.forward(&pooled))
    }
}

impl Encoder for PotNet {
    fn modality(&self) -> Modality {
        Modality::Crystal
    }
    fn embed_dim(&self) -> usize {
        self.embed_dim
    }

    fn forward(&mut self, batch: &ModalityBatch, ctx: &StepContext) -> Result<Tensor> {
        self.set_training(ctx.train);
        match batch {
            ModalityBatch::Crystal(g) => self.forward_graph(g, ctx),
            other => bail!("potnet: expected a crystal batch, got a {} batch", batch_name(other)),
        }
    }

    fn backward(&mut self, dout: &Tensor, ctx: &StepContext) -> Result<()> {
        let sv = self.saved.take().ok_or_else(|| anyhow::anyhow!("potnet: backward without a forward"))?;
        let h_dim = self.config.hidden;
        let dpooled = self.head.backward(dout); // (B, H)
        let n = *sv.node_offsets.last().unwrap();
        let mut dh = Tensor::zeros(&[n, h_dim]); // (N, H)
        segment_mean_backward(dh.data_mut(), dpooled.data(), &sv.node_offsets, h_dim);
        let mut de = Tensor::zeros(&[sv.src.len(), h_dim]); // (E, H), summed over the layers
        for conv in self.convs.iter_mut().rev() {
            let (dh_prev, de_k) = conv.backward(&dh, &sv.src, &sv.dst, ctx);
            crate::engine::nn::add_assign(&mut de, &de_k);
            dh = dh_prev;
        }
        self.atom_embedding.backward(&dh);
        let (de_local, de_inf) = de.data().split_at(sv.n_local * h_dim);
        let de_local = Tensor::from_vec(&[sv.n_local, h_dim], de_local.to_vec());
        self.local_embedding.backward(&self.local_act.backward(&de_local));
        let n_inf = sv.src.len() - sv.n_local;
        if n_inf > 0 {
            let de_inf = Tensor::from_vec(&[n_inf, h_dim], de_inf.to_vec());
            let d = bn_backward(&mut self.infinite_bn, &de_inf, ctx);
            self.infinite_embedding.backward(&self.infinite_act.backward(&d));
        } else {
            let d = Tensor::zeros(&[0, h_dim]);
            self.infinite_embedding.backward(&self.infinite_act.backward(&d));
        }
        Ok(())
    }
}

impl Module for PotNet {
    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        self.atom_embedding.visit_params(f);
        self.local_embedding.visit_params(f);
        self.infinite_embedding.visit_params(f);
        self.infinite_bn.visit_params(f);
        for c in &mut self.convs {
            c.visit_params(f);
        }
        self.head.visit_params(f);
    }
    fn visit_buffers(&mut self, f: &mut dyn FnMut(&str, &mut Tensor)) {
        self.infinite_bn.visit_buffers(f);
        for c in &mut self.convs {
            c.visit_buffers(f);
        }
    }
    fn set_training(&mut self, training: bool) {
        self.infinite_bn.set_training(training);
        for c in &mut self.convs {
            c.set_training(training);
        }
    }
}
