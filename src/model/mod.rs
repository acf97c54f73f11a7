//! The MultiMat model: one encoder per modality into a shared latent space, and the batch types
//! they consume. This file is the contract between the encoders (`model::*`) and the training
//! loop (`train::*`): the loop assembles `ModalityBatch`es from shards, calls `forward` on the
//! rows present for a modality, runs the loss, and calls `backward` with d(embeddings).

pub mod cgcnn;
pub(crate) mod common;
pub mod config;
pub mod dos_transformer;
pub mod memory_estimate;
pub mod potnet;
pub mod resnext3d;
pub mod synthetic;
pub mod text_mlp;

pub use config::{build_encoder, CrystalEncoderKind, EncodersConfig};

use crate::dist::{DeviceComm, Dist};
use crate::engine::{Indices, Module, Tensor};
use anyhow::Result;

/// The four modalities of the paper (defined with the losses, shared here).
pub use crate::loss::Modality;

/// Directed edges of a batch of graphs; node indices are global within the batch. The integer
/// columns are `Indices`, which may live on a device; the graph encoders validate them and group
/// the edges by node on the host once per batch (copying them back if they are on a device).
#[derive(Clone, Debug, Default)]
pub struct BatchedEdges {
    pub src: Indices,       // (E)
    pub dst: Indices,       // (E)
    pub distance: Vec<f32>, // (E) Å
}

/// PotNet infinite edges of a batch (complete graph per crystal, i = j included).
#[derive(Clone, Debug, Default)]
pub struct BatchedInfinite {
    pub src: Indices,      // (P)
    pub dst: Indices,      // (P)
    pub coulomb: Vec<f32>, // (P)
    pub london: Vec<f32>,  // (P)
    pub pauli: Vec<f32>,   // (P)
}

/// A batch of crystal graphs.
#[derive(Clone, Debug, Default)]
pub struct GraphBatch {
    pub num_graphs: usize,
    /// Atomic number of every atom of every crystal, graph after graph.
    pub species: Vec<u8>, // (n_atoms)
    /// Graph g owns atoms node_offsets[g]..node_offsets[g+1].
    pub node_offsets: Indices, // (B + 1)
    pub local: BatchedEdges,
    pub cgcnn: BatchedEdges,
    pub infinite: BatchedInfinite,
}

/// A batch of densities of states (fixed length after preprocessing; `mask` marks valid points
/// when lengths differ — true = valid).
#[derive(Clone, Debug, Default)]
pub struct DosBatch {
    pub batch: usize,
    pub len: usize,
    pub energies: Vec<f32>,       // (B, L) eV relative to E_F
    pub densities: Vec<f32>,      // (B, L) states/eV/cell
    pub mask: Option<Vec<bool>>,  // (B, L)
}

/// A batch of charge densities on the model grid, values as stored (ρ·V_cell); normalising them
/// is the encoder's job (and its convention is recorded in its config).
#[derive(Clone, Debug, Default)]
pub struct DensityBatch {
    pub batch: usize,
    pub grid: [usize; 3],
    pub values: Vec<f32>,  // (B, D, H, W)
    pub volumes: Vec<f32>, // (B) Å³
}

/// A batch of precomputed text embeddings (frozen BERT [CLS] vectors).
#[derive(Clone, Debug, Default)]
pub struct TextBatch {
    pub batch: usize,
    pub dim: usize,
    pub values: Vec<f32>, // (B, dim)
}

#[derive(Clone, Debug)]
pub enum ModalityBatch {
    Crystal(GraphBatch),
    Dos(DosBatch),
    ChargeDensity(DensityBatch),
    Text(TextBatch),
}

impl ModalityBatch {
    pub fn len(&self) -> usize {
        match self {
            ModalityBatch::Crystal(g) => g.num_graphs,
            ModalityBatch::Dos(d) => d.batch,
            ModalityBatch::ChargeDensity(c) => c.batch,
            ModalityBatch::Text(t) => t.batch,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a forward pass needs besides its inputs: train/eval mode, and the job's collectives so
/// BatchNorm layers can synchronise their statistics across ranks (SyncBN).
pub struct StepContext<'a> {
    pub train: bool,
    pub dist: &'a Dist,
    /// The collectives on the model's device (pre-training on a GPU): SyncBN reduces its sums
    /// through it where they live (NCCL on `cuda`). None: through `dist` on the host.
    pub comm: Option<&'a DeviceComm<'a>>,
    /// Seed for this step's dropout masks (derived from run seed, step and rank-independent row ids).
    pub dropout_seed: u64,
}

/// A batch's inputs checked and on the encoder's device: what each encoder's forward reads
/// (atom features, edge indices grouped by row, RBF inputs, offsets; DOS energies, values and
/// mask; text vectors; normalised densities). Built by an [`InputPreparer`] — inline in
/// [`Encoder::forward`], or on the pre-training prefetch thread so that batch k+1 is checked and
/// uploaded (through the pinned staging pool on a GPU) while step k computes.
pub enum PreparedInputs {
    PotNet(potnet::PotNetInputs),
    Cgcnn(cgcnn::CgcnnInputs),
    Dos(dos_transformer::DosInputs),
    /// (B, 1, D, H, W) network input of the ResNeXt.
    Density(Tensor),
    /// (B, dim) text embeddings.
    Text(Tensor),
}

impl PreparedInputs {
    /// The encoder kind that prepared these inputs, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            PreparedInputs::PotNet(_) => "potnet",
            PreparedInputs::Cgcnn(_) => "cgcnn",
            PreparedInputs::Dos(_) => "dos_transformer",
            PreparedInputs::Density(_) => "resnext3d",
            PreparedInputs::Text(_) => "text_mlp",
        }
    }
}

/// Turns a host batch into an encoder's [`PreparedInputs`]. Detached from the encoder (it holds a
/// copy of the configuration and the parameters' device), so another thread can run it while the
/// encoder trains; it must be taken again after the encoder moves to another device.
pub trait InputPreparer: Send + Sync {
    fn prepare(&self, batch: &ModalityBatch) -> Result<PreparedInputs>;
}

/// An encoder maps a batch of one modality to (B, embed_dim) embeddings (before L2
/// normalisation, which the loss side applies). Forward saves what backward needs.
pub trait Encoder: Module + Send {
    fn modality(&self) -> Modality;
    fn embed_dim(&self) -> usize;
    /// The step that checks a batch and puts it on this encoder's current device.
    fn input_preparer(&self) -> Box<dyn InputPreparer>;
    /// (B, embed_dim) from inputs prepared by this encoder's [`Encoder::input_preparer`] for its
    /// current device (other inputs are an error).
    fn forward_prepared(&mut self, inputs: PreparedInputs, ctx: &StepContext) -> Result<Tensor>;
    /// (B, embed_dim): prepare, then [`Encoder::forward_prepared`] — bit-identical to preparing on
    /// another thread.
    fn forward(&mut self, batch: &ModalityBatch, ctx: &StepContext) -> Result<Tensor> {
        let inputs = self.input_preparer().prepare(batch)?;
        self.forward_prepared(inputs, ctx)
    }
    /// `dout`: (B, embed_dim) gradient w.r.t. the last forward's output. Accumulates parameter
    /// gradients; the input needs none.
    fn backward(&mut self, dout: &Tensor, ctx: &StepContext) -> Result<()>;
}
