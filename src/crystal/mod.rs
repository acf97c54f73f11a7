//! Crystal graphs: lattice reduction, periodic neighbour search (PotNet and CGCNN graphs),
//! PotNet's infinite lattice sums (Coulomb, London, Pauli) and CGCNN-style atom features.
//!
//! The types in this file are the contract with the shard format: `build_graphs` turns a
//! `Structure` into a `CrystalGraphs`, which `shard` stores and the encoders read.
//!
//! Submodules: `lattice` (validation, LLL reduction, wrapped cell), `neighbors` (periodic k-NN
//! and radius graphs), `lattice_sums` (Ewald/direct sums), `special` (erfc, Γ(s, x)),
//! `features` + `element_data` (92-d CGCNN-style atom features).
//!
//! Facts taken from the reference PotNet code (divelab/AIRS, OpenMat/PotNet: `configs/potnet.yaml`,
//! `algorithm.py`, `models/potnet.py`; read, not copied): `infinite_params: [0.5, 3.0, 3.0]`, i.e.
//! Coulomb = Epstein zeta with exponent 2·0.5 = 1, London = exponent 2·3 = 6, Pauli α₀ = 3.0;
//! the Pauli sum is Σ_T e^{−α|r+T|} with α = α₀ / √(V^{1/3}) (the code multiplies α₀ by
//! √(V^{1/3}) in units where the cell is rescaled to volume 1); the stored values are the plain
//! sums in Å units, not divided by anything; the model feeds s = −0.801·C − 0.074·L + 0.145·P to
//! a 64-bin multiquadric RBF on [−4, 4] (and local-edge distances as −0.75/r — the encoder's
//! business; we store plain distances). The reference sums a fixed 7×7×7 box of translations
//! (342 terms besides the origin) with a fixed splitting; here the cut-offs follow from
//! `lattice_sum_tolerance` and the lattice, so skewed or small cells stay accurate.

use crate::material::Structure;
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

pub mod element_data;
pub mod features;
pub mod lattice;
pub mod lattice_sums;
pub mod neighbors;
pub mod special;

pub use features::{atom_features, ATOM_FEATURE_DIM};

/// Directed edges of a periodic neighbour graph. Edge e connects neighbour `src[e]` (in the image
/// cell shifted by `image[e]` lattice vectors) to centre atom `dst[e]`; messages flow src → dst.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EdgeList {
    pub src: Vec<u32>,
    pub dst: Vec<u32>,
    pub image: Vec<[i32; 3]>,
    /// |r_src + image·L − r_dst| in Å.
    pub distance: Vec<f32>,
}

/// PotNet's complete graph over the unit-cell atoms: every ordered pair (i, j), including i = j,
/// with the three infinite lattice sums over all translations (zero translation excluded for i = j
/// in Coulomb and London; for Pauli per `GraphParams::pauli_include_origin`). Edge e = i·n + j has
/// `src` = i, `dst` = j (the reference's order); all three sums are symmetric in i ↔ j.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InfiniteEdges {
    pub src: Vec<u32>,
    pub dst: Vec<u32>,
    /// Σ_T 1/|r_ij + T| as an Epstein zeta with neutralising background (Ewald), Å⁻¹.
    pub coulomb: Vec<f64>,
    /// Σ_T 1/|r_ij + T|⁶, Å⁻⁶.
    pub london: Vec<f64>,
    /// Σ_T exp(−α |r_ij + T|), α per `GraphParams::pauli_alpha`.
    pub pauli: Vec<f64>,
}

/// How the Pauli decay constant α scales with the cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauliAlphaConvention {
    /// α = α₀ / √(V^{1/3}) — what the reference PotNet code does (default, checkpoint-compatible).
    /// V is the volume of the cell *as given*, so the Pauli sums of a supercell differ from the
    /// primitive cell's (a property of the reference convention, kept for comparability).
    ReferenceSqrt,
    /// α = α₀ / V^{1/3} — what the PotNet paper writes.
    PaperCubeRoot,
}

/// Parameters of graph construction; stored in shard attributes and checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphParams {
    /// PotNet local graph: k nearest neighbours (ties with the k-th kept).
    pub local_k: usize,
    /// Initial cutoff (Å) of the neighbour search, grown until every atom has k neighbours.
    pub local_initial_cutoff: f64,
    /// CGCNN graph: at most this many neighbours …
    pub cgcnn_max_neighbors: usize,
    /// … within this radius (Å).
    pub cgcnn_cutoff: f64,
    pub pauli_alpha: PauliAlphaConvention,
    /// α₀ of the Pauli term before the cell scaling (reference: 3.0, `infinite_params[2]`).
    pub pauli_alpha0: f64,
    /// Target relative accuracy of the lattice sums.
    pub lattice_sum_tolerance: f64,
    /// Whether the Pauli sum of a self pair (i = j) includes the zero translation (a constant
    /// e^0 = 1). The reference code includes it (its `exp` sums the full box, origin included,
    /// unlike its `zeta`), so the default is `true`. Added by the crystal helper.
    pub pauli_include_origin: bool,
}

impl GraphParams {
    /// The Pauli decay constant α (Å⁻¹) for a cell of volume `volume` (Å³).
    pub fn pauli_alpha_for_volume(&self, volume: f64) -> f64 {
        match self.pauli_alpha {
            PauliAlphaConvention::ReferenceSqrt => self.pauli_alpha0 / volume.cbrt().sqrt(),
            PauliAlphaConvention::PaperCubeRoot => self.pauli_alpha0 / volume.cbrt(),
        }
    }
}

impl Default for GraphParams {
    fn default() -> Self {
        GraphParams {
            local_k: 16,
            local_initial_cutoff: 4.0,
            cgcnn_max_neighbors: 12,
            cgcnn_cutoff: 8.0,
            pauli_alpha: PauliAlphaConvention::ReferenceSqrt,
            pauli_alpha0: 3.0,
            lattice_sum_tolerance: 1e-8,
            pauli_include_origin: true,
        }
    }
}

/// Everything derived from a structure that the crystal encoders need.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CrystalGraphs {
    /// PotNet local graph: each atom's `local_k` nearest neighbours (images included), ties with
    /// the k-th kept (within `neighbors::TIE_TOLERANCE`); directed, grouped by `dst`, sorted by
    /// distance. Not symmetrised here: PotNet adds the reverse edges the reference adds
    /// (`model::potnet::undirected_local_edges`, on by default).
    pub local: EdgeList,
    /// CGCNN graph: at most `cgcnn_max_neighbors` nearest within `cgcnn_cutoff`, no padding
    /// stored — an atom with fewer neighbours has fewer edges; pad with index 0 at distance
    /// cutoff + 1 Å and mask for CGCNN's fixed layout (see `neighbors`).
    pub cgcnn: EdgeList,
    pub infinite: InfiniteEdges,
}

/// Build the PotNet local graph, the CGCNN graph and the infinite-edge lattice sums.
///
/// Errors (never NaN): no sites, mismatched lengths, non-finite coordinates, unknown atomic
/// numbers, degenerate lattices (zero volume, collinear or coplanar vectors), atoms closer than
/// 0.1 Å (images included), bad parameters. The caller adds the record id as context.
pub fn build_graphs(structure: &Structure, params: &GraphParams) -> anyhow::Result<CrystalGraphs> {
    validate_params(params)?;
    let cell = lattice::Cell::new(structure)?;
    check_overlaps(&cell)?;
    let local = neighbors::local_graph(&cell, params.local_k, params.local_initial_cutoff)?;
    let cgcnn = neighbors::cgcnn_graph(&cell, params.cgcnn_max_neighbors, params.cgcnn_cutoff)?;
    let infinite = infinite_edges(&cell, params)?;
    Ok(CrystalGraphs { local, cgcnn, infinite })
}

/// `build_graphs` for many structures in parallel (rayon over structures, and over pairs inside
/// each); one result per structure, in order, so the caller can attach record ids to errors.
pub fn build_graphs_batch(structures: &[Structure], params: &GraphParams) -> Vec<anyhow::Result<CrystalGraphs>> {
    use rayon::prelude::*;
    structures.par_iter().map(|s| build_graphs(s, params)).collect()
}

/// Only the lattice sums (the part that dominates ingest time); same validation as `build_graphs`.
pub fn build_infinite_edges(structure: &Structure, params: &GraphParams) -> anyhow::Result<InfiniteEdges> {
    validate_params(params)?;
    let cell = lattice::Cell::new(structure)?;
    check_overlaps(&cell)?;
    infinite_edges(&cell, params)
}

fn infinite_edges(cell: &lattice::Cell, params: &GraphParams) -> anyhow::Result<InfiniteEdges> {
    let alpha = params.pauli_alpha_for_volume(cell.volume);
    let plan = lattice_sums::LatticeSumPlan::try_new(cell, alpha, params.pauli_include_origin, params.lattice_sum_tolerance)?;
    let sums = lattice_sums::all_pair_sums(cell, &plan);
    let n = cell.num_sites();
    let mut out = InfiniteEdges::default();
    for (e, s) in sums.iter().enumerate() {
        let (i, j) = (e / n, e % n);
        if !(s.coulomb.is_finite() && s.london.is_finite() && s.pauli.is_finite()) {
            bail!("lattice sums for pair ({i}, {j}) are not finite: {s:?}");
        }
        out.src.push(i as u32);
        out.dst.push(j as u32);
        out.coulomb.push(s.coulomb);
        out.london.push(s.london);
        out.pauli.push(s.pauli);
    }
    Ok(out)
}

fn validate_params(p: &GraphParams) -> anyhow::Result<()> {
    let ok = p.local_k >= 1
        && p.local_initial_cutoff.is_finite()
        && p.local_initial_cutoff > 0.0
        && p.cgcnn_cutoff.is_finite()
        && p.cgcnn_cutoff > 0.0
        && p.pauli_alpha0.is_finite()
        && p.pauli_alpha0 > 0.0
        && p.lattice_sum_tolerance > 0.0
        && p.lattice_sum_tolerance < 1.0;
    if !ok {
        bail!("invalid graph parameters: {p:?}");
    }
    Ok(())
}

/// Reject atoms (or an atom and its own image) closer than `lattice::MIN_ATOM_DISTANCE`.
fn check_overlaps(cell: &lattice::Cell) -> anyhow::Result<()> {
    lattice::check_translation_budget(cell.image_box(lattice::MIN_ATOM_DISTANCE), "the overlap check")?;
    let close = neighbors::neighbors_within(cell, lattice::MIN_ATOM_DISTANCE);
    for (i, list) in close.iter().enumerate() {
        if let Some(nb) = list.first() {
            return Err(anyhow::anyhow!(
                "sites {} and {} (image {:?}) are {:.4} Å apart, closer than {} Å",
                nb.src.min(i as u32),
                nb.src.max(i as u32),
                nb.image,
                nb.distance,
                lattice::MIN_ATOM_DISTANCE
            ))
            .context("overlapping atoms");
        }
    }
    Ok(())
}
