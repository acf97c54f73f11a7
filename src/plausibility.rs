//! Physical plausibility bounds: what a record may hold before it is stored. A reader checks
//! syntax (a number is a number, a grid has its values); these bounds check that the numbers can
//! describe a real material, so a flipped exponent (a 1e30 Å lattice, a charge density of 1e23, a
//! bulk modulus of 1e308 GPa) is a reject naming the file and the quantity, not a silently stored
//! value that poisons a training run.
//!
//! The limits and why each was chosen are in `data-specs/plausibility.md`; every one can be
//! overridden with `multimat ingest --bounds FILE.toml` (same keys as [`Bounds`]; unknown keys are
//! an error). Non-finite values are not judged here: the readers reject them, except DOS
//! densities, which preprocessing repairs and counts.

use crate::material::{ChargeDensity, Dos, Structure};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Plausibility limits (defaults documented in `data-specs/plausibility.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bounds {
    /// Most sites in one cell.
    pub max_sites: usize,
    /// Longest lattice vector, Å.
    pub max_lattice_length: f64,
    /// Largest |fractional coordinate| (coordinates need not be wrapped, but −99999 is an error).
    pub max_abs_frac_coord: f64,
    /// Largest |energy| of a DOS grid point or of E_F, eV.
    pub max_abs_dos_energy: f64,
    /// Largest DOS value, states/eV per cell.
    pub max_dos_density: f64,
    /// Most negative DOS value accepted (smearing and tetrahedron corrections give small
    /// negative values), states/eV per cell.
    pub min_dos_density: f64,
    /// Largest |ρ| at a grid point, electrons/Å³ (stored values are ρ·V_cell).
    pub max_abs_charge_density: f64,
    /// Most electrons per site the density may integrate to (all-electron AECCAR included).
    pub max_electrons_per_site: f64,
    /// Target name → [low, high] inclusive, overriding the per-unit defaults.
    pub targets: BTreeMap<String, [f64; 2]>,
    /// Bound on |value| for a target whose name has no entry in `targets` and whose units
    /// have no default range.
    pub max_abs_target: f64,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            max_sites: 1000,
            max_lattice_length: crate::crystal::lattice::MAX_LATTICE_LENGTH,
            max_abs_frac_coord: 100.0,
            max_abs_dos_energy: 1000.0,
            max_dos_density: 1e5,
            min_dos_density: -1.0,
            max_abs_charge_density: 1e6,
            max_electrons_per_site: 150.0,
            targets: BTreeMap::new(),
            max_abs_target: 1e12,
        }
    }
}

impl Bounds {
    /// Read bounds from a TOML file; keys absent from the file keep their defaults.
    pub fn from_toml_file(path: &Path) -> Result<Bounds> {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
        let bounds: Bounds = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        bounds.validate().with_context(|| path.display().to_string())?;
        Ok(bounds)
    }

    /// The bounds themselves must make sense (positive limits, low ≤ high).
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("max_lattice_length", self.max_lattice_length),
            ("max_abs_frac_coord", self.max_abs_frac_coord),
            ("max_abs_dos_energy", self.max_abs_dos_energy),
            ("max_dos_density", self.max_dos_density),
            ("max_abs_charge_density", self.max_abs_charge_density),
            ("max_electrons_per_site", self.max_electrons_per_site),
            ("max_abs_target", self.max_abs_target),
        ];
        for (name, v) in positive {
            if !(v > 0.0) {
                bail!("bounds: {name} = {v} must be positive");
            }
        }
        if self.max_sites == 0 || self.min_dos_density.is_nan() || self.min_dos_density > 0.0 {
            bail!("bounds: max_sites must be ≥ 1 and min_dos_density ≤ 0");
        }
        for (name, [lo, hi]) in &self.targets {
            if !(lo <= hi) {
                bail!("bounds: targets.{name} = [{lo}, {hi}] is not a range");
            }
        }
        Ok(())
    }

    /// A structure: site count, lattice vector lengths, fractional coordinates.
    pub fn check_structure(&self, s: &Structure) -> Result<()> {
        if s.num_sites() > self.max_sites {
            bail!("{} sites, more than the plausible {} (bounds.max_sites)", s.num_sites(), self.max_sites);
        }
        for (k, row) in s.lattice.iter().enumerate() {
            let length = (row[0] * row[0] + row[1] * row[1] + row[2] * row[2]).sqrt();
            if length > self.max_lattice_length {
                bail!(
                    "lattice vector {} is {length:.4e} Å long, more than the plausible {} Å (bounds.max_lattice_length)",
                    ["a", "b", "c"][k],
                    self.max_lattice_length
                );
            }
        }
        for (i, f) in s.frac_coords.iter().enumerate() {
            if f.iter().any(|x| x.abs() > self.max_abs_frac_coord) {
                bail!(
                    "site {}: fractional coordinate {f:?} is beyond ±{} (bounds.max_abs_frac_coord)",
                    i + 1,
                    self.max_abs_frac_coord
                );
            }
        }
        Ok(())
    }

    /// A DOS as read: energies and E_F within ±max_abs_dos_energy, densities (where finite) in
    /// [min_dos_density, max_dos_density].
    pub fn check_dos(&self, d: &Dos) -> Result<()> {
        if d.efermi.abs() > self.max_abs_dos_energy {
            bail!("E_F = {} eV is beyond ±{} eV (bounds.max_abs_dos_energy)", d.efermi, self.max_abs_dos_energy);
        }
        if let Some(k) = d.energies.iter().position(|e| e.abs() > self.max_abs_dos_energy) {
            bail!("DOS point {}: energy {} eV is beyond ±{} eV (bounds.max_abs_dos_energy)", k + 1, d.energies[k], self.max_abs_dos_energy);
        }
        let channels = std::iter::once(("spin-up", &d.densities_up)).chain(d.densities_down.iter().map(|v| ("spin-down", v)));
        for (name, values) in channels {
            for (k, &v) in values.iter().enumerate() {
                if v.is_finite() && !(self.min_dos_density..=self.max_dos_density).contains(&v) {
                    bail!(
                        "DOS point {} ({name}, E = {} eV): density {v} states/eV is outside [{}, {}] \
                         (bounds.min_dos_density / max_dos_density)",
                        k + 1,
                        d.energies.get(k).copied().unwrap_or(f64::NAN),
                        self.min_dos_density,
                        self.max_dos_density
                    );
                }
            }
        }
        Ok(())
    }

    /// A charge density as read: |ρ| per point, and a positive electron count of at most
    /// `max_electrons_per_site` per site (`sites` from the record's structure, if it has one).
    pub fn check_charge_density(&self, c: &ChargeDensity, sites: Option<usize>) -> Result<()> {
        let volume = Structure { lattice: c.lattice, species: vec![], frac_coords: vec![] }.volume().abs();
        if !(volume > 0.0) || !volume.is_finite() {
            bail!("charge-density cell volume {volume} Å³ is not positive");
        }
        let limit = self.max_abs_charge_density * volume;
        if let Some(k) = c.values.iter().position(|v| v.abs() > limit) {
            bail!(
                "charge density {:.4e} e/Å³ at grid point {k} is beyond ±{} e/Å³ (bounds.max_abs_charge_density)",
                c.values[k] / volume,
                self.max_abs_charge_density
            );
        }
        let electrons = c.electron_count();
        let max_electrons = self.max_electrons_per_site * sites.unwrap_or(self.max_sites) as f64;
        if !(electrons > 0.0) || electrons > max_electrons {
            bail!(
                "charge density integrates to {electrons:.6e} electrons, outside (0, {max_electrons}] \
                 (bounds.max_electrons_per_site × sites)"
            );
        }
        Ok(())
    }

    /// The DOS after preprocessing must still hold something: a DOS resampled to all zeros
    /// (e.g. every point outside the energy window) is not a DOS.
    pub fn check_processed_dos(&self, densities: &[f32]) -> Result<()> {
        if densities.iter().all(|&v| v == 0.0) {
            bail!("the DOS is zero at every point after preprocessing (energies outside the window or an empty DOS)");
        }
        Ok(())
    }

    /// The inclusive range a target must lie in: the per-name override, else a default for its
    /// units, else ±max_abs_target.
    pub fn target_range(&self, name: &str, units: &str) -> [f64; 2] {
        if let Some(r) = self.targets.get(name) {
            return *r;
        }
        let m = self.max_abs_target;
        match units {
            "GPa" => [-1e4, 1e4],
            "eV" => [-1e3, 1e3],
            "eV/atom" => [-1e2, 1e2],
            "angstrom^3" => [0.0, 1e8],
            _ => [-m, m],
        }
    }

    /// Targets: every element finite (a target is all present or absent — a vector with one
    /// NaN element is an error, not a silently dropped target) and inside its range.
    pub fn check_targets(&self, targets: &BTreeMap<String, Vec<f64>>, units: impl Fn(&str) -> String) -> Result<()> {
        for (name, values) in targets {
            if values.is_empty() {
                bail!("target {name:?} is empty");
            }
            let [lo, hi] = self.target_range(name, &units(name));
            for (k, &v) in values.iter().enumerate() {
                let at = if values.len() > 1 { format!(" element {k}") } else { String::new() };
                if !v.is_finite() {
                    bail!("target {name:?}{at} is {v} (a target must be complete)");
                }
                if !(lo..=hi).contains(&v) {
                    bail!("target {name:?}{at} = {v} is outside the plausible range [{lo}, {hi}] (bounds.targets.{name})");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cubic(a: f64) -> Structure {
        Structure { lattice: [[a, 0.0, 0.0], [0.0, a, 0.0], [0.0, 0.0, a]], species: vec![14], frac_coords: vec![[0.0; 3]] }
    }

    #[test]
    fn structures_out_of_bounds_are_named() {
        let b = Bounds::default();
        b.check_structure(&cubic(5.0)).unwrap();
        let e = b.check_structure(&cubic(1e30)).unwrap_err().to_string();
        assert!(e.contains("lattice vector a") && e.contains("max_lattice_length"), "{e}");
        let mut s = cubic(5.0);
        s.frac_coords[0][1] = -99999.0;
        let e = b.check_structure(&s).unwrap_err().to_string();
        assert!(e.contains("site 1") && e.contains("max_abs_frac_coord"), "{e}");
    }

    #[test]
    fn dos_and_density_garbage_is_rejected_small_negatives_are_not() {
        let b = Bounds::default();
        let dos = |v: f64| Dos { energies: vec![-1.0, 0.0, 1.0], densities_up: vec![0.5, v, 0.5], densities_down: None, efermi: 0.0 };
        b.check_dos(&dos(-0.01)).unwrap();
        b.check_dos(&dos(f64::NAN)).unwrap(); // repaired later, counted
        assert!(b.check_dos(&dos(-5.0)).unwrap_err().to_string().contains("DOS point 2"));
        assert!(b.check_dos(&dos(1e20)).is_err());
        let rho = |v: f64| ChargeDensity { lattice: cubic(2.0).lattice, grid: [2, 1, 1], values: vec![v, 8.0] };
        b.check_charge_density(&rho(8.0), Some(1)).unwrap();
        assert!(b.check_charge_density(&rho(-100.0), Some(1)).unwrap_err().to_string().contains("electrons"));
        assert!(b.check_charge_density(&rho(1e23), Some(1)).unwrap_err().to_string().contains("grid point 0"));
        assert!(b.check_processed_dos(&[0.0, 0.0]).is_err());
    }

    #[test]
    fn targets_use_overrides_then_units_then_the_global_limit() {
        let mut b = Bounds::default();
        let mut t = BTreeMap::new();
        t.insert("K_VRH".to_string(), vec![1e308]);
        let e = b.check_targets(&t, |_| "GPa".into()).unwrap_err().to_string();
        assert!(e.contains("K_VRH") && e.contains("[-10000, 10000]"), "{e}");
        b.targets.insert("K_VRH".into(), [0.0, f64::MAX]);
        b.check_targets(&t, |_| "GPa".into()).unwrap();
        t.insert("tensor".to_string(), vec![1.0, f64::NAN]);
        assert!(b.check_targets(&t, |_| String::new()).unwrap_err().to_string().contains("element 1"));
    }

    #[test]
    fn bounds_file_overrides_and_rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.toml");
        std::fs::write(&p, "max_sites = 5000\n[targets]\nK_VRH = [0.0, 1000.0]\n").unwrap();
        let b = Bounds::from_toml_file(&p).unwrap();
        assert_eq!((b.max_sites, b.targets["K_VRH"]), (5000, [0.0, 1000.0]));
        std::fs::write(&p, "max_site = 5000\n").unwrap();
        let e = format!("{:#}", Bounds::from_toml_file(&p).unwrap_err());
        assert!(e.contains("b.toml") && e.contains("max_site"), "{e}");
    }
}
