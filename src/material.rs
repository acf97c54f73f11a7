//! The in-memory record of one material, shared by readers, preprocessing, the shard writer and
//! the demo generators. Units: Å, eV, electrons; lattice vectors are the *rows* of `lattice`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A periodic crystal structure. Fully ordered (one species per site; partial occupancy is
/// rejected by the readers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Structure {
    /// Lattice vectors a, b, c as rows, in Å: cartesian(r) = Σ_k frac[k] · lattice[k].
    pub lattice: [[f64; 3]; 3],
    /// Atomic number of each site, 1..=118.
    pub species: Vec<u8>,
    /// Fractional coordinates of each site (not necessarily wrapped into [0, 1)).
    pub frac_coords: Vec<[f64; 3]>,
}

impl Structure {
    pub fn num_sites(&self) -> usize {
        self.species.len()
    }

    /// Signed cell volume a · (b × c) in Å³.
    pub fn volume(&self) -> f64 {
        let [a, b, c] = self.lattice;
        let bxc = [b[1] * c[2] - b[2] * c[1], b[2] * c[0] - b[0] * c[2], b[0] * c[1] - b[1] * c[0]];
        a[0] * bxc[0] + a[1] * bxc[1] + a[2] * bxc[2]
    }

    /// Cartesian position (Å) of site `i`.
    pub fn cart(&self, i: usize) -> [f64; 3] {
        let f = self.frac_coords[i];
        let l = &self.lattice;
        [
            f[0] * l[0][0] + f[1] * l[1][0] + f[2] * l[2][0],
            f[0] * l[0][1] + f[1] * l[1][1] + f[2] * l[2][1],
            f[0] * l[0][2] + f[1] * l[1][2] + f[2] * l[2][2],
        ]
    }

    /// Reduced formula-like composition string in order of first appearance, e.g. "Si2", "NaCl".
    pub fn formula(&self) -> String {
        let mut order: Vec<u8> = Vec::new();
        let mut counts: BTreeMap<u8, usize> = BTreeMap::new();
        for &z in &self.species {
            if !counts.contains_key(&z) {
                order.push(z);
            }
            *counts.entry(z).or_default() += 1;
        }
        order
            .iter()
            .map(|z| {
                let n = counts[z];
                let s = crate::elements::symbol(*z);
                if n == 1 { s.to_string() } else { format!("{s}{n}") }
            })
            .collect()
    }
}

/// A density of states as read from a file (before preprocessing).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dos {
    /// Energies in eV, absolute (as in the file), strictly increasing.
    pub energies: Vec<f64>,
    /// Spin-up (or the only) channel, states/eV per cell.
    pub densities_up: Vec<f64>,
    /// Spin-down channel when the calculation was spin-polarised.
    pub densities_down: Option<Vec<f64>>,
    /// Fermi energy in eV on the same scale as `energies`.
    pub efermi: f64,
}

/// A volumetric charge density on a periodic grid as VASP writes it: values are ρ·V_cell, so
/// the electron count is `values.sum() / (nx·ny·nz)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChargeDensity {
    /// Lattice of the cell the grid spans (rows, Å).
    pub lattice: [[f64; 3]; 3],
    /// Grid points along a, b, c.
    pub grid: [usize; 3],
    /// Values in C order: index `(ix * ny + iy) * nz + iz` (VASP files are x-fastest; readers reorder).
    pub values: Vec<f64>,
}

impl ChargeDensity {
    /// Total number of electrons in the cell: mean of ρ·V over the grid.
    pub fn electron_count(&self) -> f64 {
        self.values.iter().sum::<f64>() / self.values.len() as f64
    }
}

/// A precomputed text embedding with the model that produced it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TextEmbedding {
    pub vector: Vec<f32>,
    pub model: String,
}

/// Where a piece of a record came from, for the manifest and for error messages.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Modality or field name ("structure", "dos", "charge_density", "text", "targets") → file path
    /// (with `#record` suffix where one file holds many records).
    pub sources: BTreeMap<String, String>,
}

/// Everything known about one material before it is written to a shard. Any modality may be
/// missing; the shard records a presence mask per modality.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MaterialRecord {
    /// Material id, e.g. "mp-149". Unique within a dataset.
    pub id: String,
    pub structure: Option<Structure>,
    pub dos: Option<Dos>,
    pub charge_density: Option<ChargeDensity>,
    /// Robocrystallographer (or generated) description.
    pub text: Option<String>,
    pub text_embedding: Option<TextEmbedding>,
    /// Property name → values (scalar properties have one value; e.g. an elastic tensor has 21 or 36).
    pub targets: BTreeMap<String, Vec<f64>>,
    pub provenance: Provenance,
}

/// A DOS after preprocessing, as stored in shards and fed to the DOS encoder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessedDos {
    /// E − E_F in eV, increasing, length = `PreprocessParams::dos_points`.
    pub energies: Vec<f32>,
    /// Density of states on those energies (spin-up or spin-summed per the params), states/eV/cell.
    pub densities: Vec<f32>,
    /// How many NaN/inf points were repaired from their neighbours.
    pub repaired_points: usize,
}

/// The four MultiMat modalities. The declaration order is the canonical pair order
/// (crystal–DOS, crystal–charge density, …), as in the paper's Equation 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Modality {
    Crystal,
    Dos,
    ChargeDensity,
    Text,
}

impl Modality {
    pub const ALL: [Modality; 4] = [
        Modality::Crystal,
        Modality::Dos,
        Modality::ChargeDensity,
        Modality::Text,
    ];

    /// Short name used in logs and parameter names.
    pub fn name(self) -> &'static str {
        match self {
            Modality::Crystal => "crystal",
            Modality::Dos => "dos",
            Modality::ChargeDensity => "charge_density",
            Modality::Text => "text",
        }
    }
}

impl Modality {
    /// Parse a modality name as written in configs and on the command line.
    pub fn parse(s: &str) -> anyhow::Result<Modality> {
        Modality::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| anyhow::anyhow!("unknown modality {s:?} (expected crystal, dos, charge_density or text)"))
    }
}

impl std::fmt::Display for Modality {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
