//! What the figures colour and overlay, looked up by material id in shards: crystal systems
//! (space group from the `moyo` symmetry finder — a maintained Rust port of spglib's algorithm —
//! mapped to its crystal system), target properties (formation energy, band gap) and DOS curves.

use crate::material::Structure;
use crate::shard::ShardData;
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// The seven crystal systems, in order of increasing symmetry.
pub const CRYSTAL_SYSTEMS: [&str; 7] = ["triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic"];

/// Index into [`CRYSTAL_SYSTEMS`] of an International Tables space-group number (1…230).
pub fn crystal_system_of_space_group(number: i32) -> Option<usize> {
    Some(match number {
        1..=2 => 0,
        3..=15 => 1,
        16..=74 => 2,
        75..=142 => 3,
        143..=167 => 4,
        168..=194 => 5,
        195..=230 => 6,
        _ => return None,
    })
}

/// Space-group number of a structure by moyo, with distance tolerance `symprec` Å (moyo widens
/// or narrows it itself when the search is inconsistent, as spglib callers do by hand).
pub fn space_group(s: &Structure, symprec: f64) -> Result<i32> {
    use moyo::base::{AngleTolerance, Cell, Lattice, Position};
    let lattice = Lattice::from_basis(s.lattice);
    let positions: Vec<Position> = s.frac_coords.iter().map(|f| Position::new(f[0], f[1], f[2])).collect();
    let numbers: Vec<i32> = s.species.iter().map(|&z| z as i32).collect();
    let cell = Cell::new(lattice, positions, numbers);
    let ds = moyo::MoyoDataset::new(&cell, symprec, AngleTolerance::Default, moyo::data::Setting::Standard)
        .map_err(|e| anyhow::anyhow!("symmetry search failed: {e:?}"))?;
    Ok(ds.number)
}

/// Shards loaded whole and indexed by material id.
pub struct ShardIndex {
    pub shards: Vec<ShardData>,
    by_id: HashMap<String, (usize, usize)>,
    pub paths: Vec<PathBuf>,
}

impl ShardIndex {
    /// Load every `*.h5` shard of `dir` (or the one file `dir` names).
    pub fn load(dir: &Path) -> Result<Self> {
        let paths = crate::train::dataset::shard_paths(&[dir.to_path_buf()])?;
        let shards: Vec<ShardData> =
            paths.iter().map(|p| ShardData::load(p).with_context(|| format!("loading shard {}", p.display()))).collect::<Result<_>>()?;
        let mut by_id = HashMap::new();
        for (s, data) in shards.iter().enumerate() {
            for (r, id) in data.ids.iter().enumerate() {
                by_id.entry(id.clone()).or_insert((s, r));
            }
        }
        Ok(ShardIndex { shards, by_id, paths })
    }

    pub fn locate(&self, id: &str) -> Option<(usize, usize)> {
        self.by_id.get(id).copied()
    }

    /// Structure of `id`, if a shard has one.
    pub fn structure(&self, id: &str) -> Option<Structure> {
        let (s, r) = self.locate(id)?;
        let d = &self.shards[s];
        if !d.has(0, r) {
            return None;
        }
        let l = &d.lattice[r * 9..r * 9 + 9];
        let atoms = d.atoms(r);
        Some(Structure {
            lattice: [[l[0], l[1], l[2]], [l[3], l[4], l[5]], [l[6], l[7], l[8]]],
            species: d.species[atoms.clone()].to_vec(),
            frac_coords: atoms.map(|a| [d.frac_coords[3 * a], d.frac_coords[3 * a + 1], d.frac_coords[3 * a + 2]]).collect(),
        })
    }

    /// (E − E_F in eV, density) of `id`'s DOS, if present.
    pub fn dos(&self, id: &str) -> Option<(&[f32], &[f32])> {
        let (s, r) = self.locate(id)?;
        let d = &self.shards[s];
        if !d.has(2, r) {
            return None;
        }
        let p = d.meta.preprocess.dos_points;
        Some((&d.dos_energies[r * p..(r + 1) * p], &d.dos_densities[r * p..(r + 1) * p]))
    }

    /// Target names present in any shard, with units.
    pub fn target_names(&self) -> BTreeSet<String> {
        self.shards.iter().flat_map(|d| d.meta.targets.keys().cloned()).collect()
    }

    /// Scalar target `name` of `id` (first component of a vector target), if present and finite.
    pub fn target(&self, id: &str, name: &str) -> Option<f64> {
        let (s, r) = self.locate(id)?;
        let d = &self.shards[s];
        let spec = d.meta.targets.get(name)?;
        let v = d.targets.get(name)?[r * spec.width];
        v.is_finite().then_some(v)
    }

    /// First of `candidates` that some shard carries as a target.
    pub fn find_target(&self, candidates: &[&str]) -> Option<String> {
        let names = self.target_names();
        candidates.iter().find(|c| names.contains(**c)).map(|c| c.to_string())
    }

    fn shard_list(&self) -> String {
        self.paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    }
}

/// What the points of a UMAP are coloured by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ColourBy {
    CrystalSystem,
    FormationEnergy,
    Metal,
}

/// Point colours: categories (names + each point's category) or a continuous value.
#[derive(Clone, Debug, PartialEq)]
pub enum Colouring {
    Categorical { title: String, names: Vec<String>, of_point: Vec<Option<usize>> },
    Continuous { title: String, values: Vec<Option<f64>> },
}

/// Formation-energy target names, in order of preference (MP / matminer spellings).
pub const FORMATION_ENERGY_NAMES: [&str; 2] = ["formation_energy_per_atom", "e_form"];
/// Band-gap target names, in order of preference.
pub const BAND_GAP_NAMES: [&str; 2] = ["band_gap", "gap pbe"];
/// A band gap below this (eV) counts as a metal (MP stores 0 for metals).
pub const METAL_GAP_EV: f64 = 1e-3;
/// Without a gap target: metal when the DOS at E_F exceeds this (states/eV/cell). A heuristic —
/// smeared DFT DOS of insulators is ≈ 0 at E_F, metals are well above.
pub const METAL_DOS_AT_EF: f64 = 0.1;

/// Linear interpolation of a DOS at energy `e` (None outside the grid).
pub fn dos_at(energies: &[f32], densities: &[f32], e: f64) -> Option<f64> {
    let i = energies.partition_point(|&x| (x as f64) < e);
    if i == 0 || i >= energies.len() {
        return (energies.first().map(|&x| x as f64) == Some(e)).then(|| densities[0] as f64);
    }
    let (e0, e1) = (energies[i - 1] as f64, energies[i] as f64);
    let t = if e1 > e0 { (e - e0) / (e1 - e0) } else { 0.0 };
    Some(densities[i - 1] as f64 * (1.0 - t) + densities[i] as f64 * t)
}

/// Colours of the points `ids` by `by`. `target` overrides the target name for formation energy
/// or band gap; a missing target is an error listing the targets the shards have.
pub fn colouring(index: &ShardIndex, ids: &[String], by: ColourBy, target: Option<&str>, symprec: f64) -> Result<Colouring> {
    let missing_target = |what: &str, tried: &[&str]| -> anyhow::Error {
        let have = index.target_names();
        anyhow::anyhow!(
            "no {what} target in the shards ({}): looked for {:?}; the shards have {}{}",
            index.shard_list(),
            tried,
            if have.is_empty() { "no targets".to_string() } else { format!("{:?}", have) },
            if have.is_empty() { "" } else { " (pass --target NAME to use one)" }
        )
    };
    match by {
        ColourBy::CrystalSystem => {
            let of_point: Vec<Option<usize>> = ids
                .par_iter()
                .map(|id| {
                    let s = index.structure(id)?;
                    space_group(&s, symprec).ok().and_then(crystal_system_of_space_group)
                })
                .collect();
            if of_point.iter().all(|c| c.is_none()) {
                bail!("none of the {} embedded materials has a structure in the shards ({}) that moyo could classify", ids.len(), index.shard_list());
            }
            Ok(Colouring::Categorical {
                title: "crystal system".into(),
                names: CRYSTAL_SYSTEMS.iter().map(|s| s.to_string()).collect(),
                of_point,
            })
        }
        ColourBy::FormationEnergy => {
            let name = match target {
                Some(t) if index.target_names().contains(t) => t.to_string(),
                Some(t) => return Err(missing_target("formation-energy", &[t])),
                None => index.find_target(&FORMATION_ENERGY_NAMES).ok_or_else(|| missing_target("formation-energy", &FORMATION_ENERGY_NAMES))?,
            };
            let values: Vec<Option<f64>> = ids.iter().map(|id| index.target(id, &name)).collect();
            if values.iter().all(|v| v.is_none()) {
                bail!("target {name:?} is absent for all {} embedded materials", ids.len());
            }
            let units = index.shards.iter().find_map(|d| d.meta.targets.get(&name).map(|s| s.units.clone())).unwrap_or_default();
            let title = if units.is_empty() { name } else { format!("{name} ({units})") };
            Ok(Colouring::Continuous { title, values })
        }
        ColourBy::Metal => {
            let gap_name = match target {
                Some(t) if index.target_names().contains(t) => Some(t.to_string()),
                Some(t) => return Err(missing_target("band-gap", &[t])),
                None => index.find_target(&BAND_GAP_NAMES),
            };
            let (of_point, title) = match gap_name {
                Some(name) => (
                    ids.iter().map(|id| index.target(id, &name).map(|g| if g < METAL_GAP_EV { 0 } else { 1 })).collect::<Vec<_>>(),
                    format!("metal: {name} < {METAL_GAP_EV} eV"),
                ),
                None => (
                    ids.iter()
                        .map(|id| {
                            let (e, d) = index.dos(id)?;
                            dos_at(e, d, 0.0).map(|v| if v > METAL_DOS_AT_EF { 0 } else { 1 })
                        })
                        .collect(),
                    format!("metal: DOS(E_F) > {METAL_DOS_AT_EF} states/eV (no band-gap target)"),
                ),
            };
            if of_point.iter().all(|c: &Option<usize>| c.is_none()) {
                let have = index.target_names();
                bail!(
                    "none of the {} embedded materials has a band gap or a DOS in the shards ({}); targets there: {:?}",
                    ids.len(),
                    index.shard_list(),
                    have
                );
            }
            Ok(Colouring::Categorical { title, names: vec!["metal".into(), "non-metal".into()], of_point })
        }
    }
}
