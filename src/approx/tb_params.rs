//! Per-element parameters of the universal (Harrison) tight-binding model in
//! [`super::tight_binding`]: free-atom term values ε_s, ε_p (and ε_d, r_d for the transition
//! metals), the valence-electron count, and the universal coupling constants η.
//!
//! Sources.
//! - Couplings: W. A. Harrison, *Electronic Structure and the Properties of Solids* (Freeman 1980;
//!   Dover 1989), the "Solid State Table" (inside cover): V_ll'm = η_ll'm ħ²/(m d²) with
//!   η_ssσ = −1.40, η_spσ = 1.84, η_ppσ = 3.24, η_ppπ = −0.81; couplings to d states
//!   V_ldm = η_ldm ħ² r_d^{3/2}/(m d^{7/2}) with η_sdσ = −3.16, η_pdσ = −2.95, η_pdπ = 1.36, and
//!   V_ddm = η_ddm ħ² r_d³/(m d⁵) with η_ddσ = −16.2, η_ddπ = 8.75, η_ddδ = 0 (same book, ch. 20).
//! - Term values: W. A. Harrison, *Elementary Electronic Structure* (World Scientific 1999),
//!   table of atomic term values — the Hartree–Fock eigenvalues of J. B. Mann, *Atomic Structure
//!   Calculations I* (Los Alamos LA-3690, 1967) — and its transition-metal table (ε_d, r_d).
//!   The numbers were transcribed by hand for this module; they are rounded to 0.01 eV.
//!
//! Documented simplifications (each marked where it is applied):
//! - **p level of atoms whose free-atom p shell is empty** (alkali, alkaline-earth, group-12
//!   and transition metals; H has no p orbital): the tables list no occupied p level, so
//!   ε_p = 0.45 · ε_s, the mean ratio of the tabulated (Herman–Skillman) p and s term values of
//!   Be, Mg, Zn, Al, Ga and In in Harrison's Solid State Table (0.40–0.51).
//! - **d shells**: only the open-shell transition metals (groups 3–11) carry d orbitals. Full d
//!   shells of Zn, Cd, Hg, Ga, In, Tl, … are treated as core, as in Harrison's sp³ treatment.
//!   Lanthanides and actinides (open f shells) are not covered.
//! - Entries marked `†` (the ns level of the 4d and 5d metals, and La/Hf d parameters) were not
//!   in the transcribed tables; they follow a stated rule: ns term values interpolate linearly
//!   between the alkaline earth and the group-11 metal of the same row; La's d parameters are
//!   Y's, Hf's are interpolated between La and Ta. They are approximations of approximations.
//!
//! Valence electrons: s + p outside the noble-gas core for main-group elements (group-12/13 full
//! d shells as core), s + d for the transition metals (Cu, Ag, Au: 11).

use anyhow::{bail, Result};

/// ħ²/m in eV·Å² (ħ²/m_e = 7.62 eV Å², as in Harrison's tables).
pub const HBAR2_OVER_M: f64 = 7.62;

/// Harrison's universal coupling constants η (dimensionless), Solid State Table (1980).
pub mod eta {
    pub const SS_SIGMA: f64 = -1.40;
    pub const SP_SIGMA: f64 = 1.84;
    pub const PP_SIGMA: f64 = 3.24;
    pub const PP_PI: f64 = -0.81;
    pub const SD_SIGMA: f64 = -3.16;
    pub const PD_SIGMA: f64 = -2.95;
    pub const PD_PI: f64 = 1.36;
    pub const DD_SIGMA: f64 = -16.2;
    pub const DD_PI: f64 = 8.75;
    pub const DD_DELTA: f64 = 0.0;
}

/// The orbitals an element carries in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrbitalSet {
    /// s only (hydrogen).
    S,
    /// s, p_x, p_y, p_z.
    Sp,
    /// s, p_x, p_y, p_z and five d (xy, yz, zx, x²−y², 3z²−r²).
    Spd,
}

impl OrbitalSet {
    pub fn len(self) -> usize {
        match self {
            OrbitalSet::S => 1,
            OrbitalSet::Sp => 4,
            OrbitalSet::Spd => 9,
        }
    }
}

/// Tight-binding parameters of one element.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ElementTb {
    pub z: u8,
    pub orbitals: OrbitalSet,
    /// s term value, eV.
    pub eps_s: f64,
    /// p term value, eV (unused for `OrbitalSet::S`).
    pub eps_p: f64,
    /// d term value, eV (only for `OrbitalSet::Spd`).
    pub eps_d: f64,
    /// Harrison's d-state radius r_d, Å (only for `OrbitalSet::Spd`).
    pub r_d: f64,
    /// Valence electrons the atom contributes to the bands.
    pub valence_electrons: f64,
}

/// Ratio ε_p / ε_s used where the free atom has no occupied p level (see module docs).
pub const EMPTY_P_RATIO: f64 = 0.45;

// (Z, ε_s, ε_p or NaN when the free atom's p shell is empty, valence electrons) for the sp elements.
#[rustfmt::skip]
const SP_ELEMENTS: &[(u8, f64, f64, f64)] = &[
    (1, -13.61, f64::NAN, 1.0),                                   // H (s only)
    (3, -5.34, f64::NAN, 1.0), (4, -8.42, f64::NAN, 2.0),         // Li Be
    (5, -13.46, -8.43, 3.0), (6, -19.38, -11.07, 4.0), (7, -26.22, -13.84, 5.0),
    (8, -34.02, -16.77, 6.0), (9, -42.79, -19.87, 7.0),           // B C N O F
    (11, -4.96, f64::NAN, 1.0), (12, -6.89, f64::NAN, 2.0),       // Na Mg
    (13, -10.71, -5.71, 3.0), (14, -14.79, -7.58, 4.0), (15, -19.22, -9.54, 5.0),
    (16, -23.93, -11.60, 6.0), (17, -29.20, -13.78, 7.0),         // Al Si P S Cl
    (19, -4.01, f64::NAN, 1.0), (20, -5.32, f64::NAN, 2.0),       // K Ca
    (30, -7.96, f64::NAN, 2.0),                                   // Zn (3d¹⁰ core)
    (31, -11.55, -5.67, 3.0), (32, -15.16, -7.33, 4.0), (33, -18.92, -8.98, 5.0),
    (34, -22.86, -10.68, 6.0), (35, -27.01, -12.44, 7.0),         // Ga Ge As Se Br
    (37, -3.75, f64::NAN, 1.0), (38, -4.86, f64::NAN, 2.0),       // Rb Sr
    (48, -7.21, f64::NAN, 2.0),                                   // Cd
    (49, -10.14, -5.37, 3.0), (50, -13.04, -6.76, 4.0), (51, -16.03, -8.14, 5.0),
    (52, -19.12, -9.54, 6.0), (53, -22.34, -10.97, 7.0),          // In Sn Sb Te I
    (55, -3.37, f64::NAN, 1.0), (56, -4.29, f64::NAN, 2.0),       // Cs Ba
    (80, -7.10, f64::NAN, 2.0),                                   // Hg
    (81, -9.83, -5.24, 3.0), (82, -12.49, -6.53, 4.0), (83, -15.19, -7.79, 5.0), // Tl Pb Bi
];

// (Z, ε_s, ε_d, r_d in Å, valence electrons s + d) for the transition metals; p from the
// empty-p rule. `†` = by the rule in the module docs.
#[rustfmt::skip]
const D_ELEMENTS: &[(u8, f64, f64, f64, f64)] = &[
    (21, -5.72, -9.35, 1.24, 3.0), (22, -6.08, -11.04, 1.08, 4.0), (23, -6.27, -12.55, 0.98, 5.0),
    (24, -6.45, -13.94, 0.90, 6.0), (25, -6.84, -15.27, 0.86, 7.0), (26, -7.01, -16.54, 0.80, 8.0),
    (27, -7.18, -17.77, 0.76, 9.0), (28, -7.35, -18.96, 0.71, 10.0), (29, -6.49, -20.14, 0.67, 11.0),
    // 4d; ns values † (Sr −4.86 → Ag −5.99).
    (39, -4.97, -6.80, 1.58, 3.0), (40, -5.09, -8.46, 1.41, 4.0), (41, -5.20, -10.03, 1.28, 5.0),
    (42, -5.31, -11.56, 1.20, 6.0), (43, -5.43, -13.08, 1.13, 7.0), (44, -5.54, -14.59, 1.08, 8.0),
    (45, -5.65, -16.10, 1.04, 9.0), (46, -5.77, -17.62, 1.00, 10.0), (47, -5.99, -19.13, 0.89, 11.0),
    // 5d; ns values † (Ba −4.29 → Au −6.01); La d = Y's †, Hf d interpolated La–Ta †.
    (57, -4.46, -6.80, 1.58, 3.0), (72, -4.63, -8.19, 1.46, 4.0), (73, -4.80, -9.57, 1.34, 5.0),
    (74, -4.98, -10.96, 1.27, 6.0), (75, -5.15, -12.35, 1.21, 7.0), (76, -5.32, -13.75, 1.16, 8.0),
    (77, -5.49, -15.16, 1.11, 9.0), (78, -5.66, -16.57, 1.08, 10.0), (79, -6.01, -17.98, 1.01, 11.0),
];

/// Parameters of element `z`, or an error naming the element when the model does not cover it.
pub fn element(z: u8) -> Result<ElementTb> {
    if let Some(&(z, es, ep, nv)) = SP_ELEMENTS.iter().find(|e| e.0 == z) {
        let orbitals = if z == 1 { OrbitalSet::S } else { OrbitalSet::Sp };
        let eps_p = if ep.is_nan() { EMPTY_P_RATIO * es } else { ep };
        return Ok(ElementTb { z, orbitals, eps_s: es, eps_p, eps_d: f64::NAN, r_d: f64::NAN, valence_electrons: nv });
    }
    if let Some(&(z, es, ed, rd, nv)) = D_ELEMENTS.iter().find(|e| e.0 == z) {
        return Ok(ElementTb { z, orbitals: OrbitalSet::Spd, eps_s: es, eps_p: EMPTY_P_RATIO * es, eps_d: ed, r_d: rd, valence_electrons: nv });
    }
    bail!(
        "the tight-binding model has no parameters for element {} (Z = {z}); it covers H, the sp \
         elements up to Bi and the transition metals (no noble gases, lanthanides beyond La, or actinides)",
        crate::elements::symbol(z)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_element_of_the_matminer_sets_is_covered_with_sane_values() {
        // The 64 elements of the matminer elastic (2015) and dielectric sets.
        let symbols = "Ag Al As Au B Ba Be Bi Br C Ca Cd Cl Co Cr Cs Cu F Fe Ga Ge H Hf Hg I In Ir K La Li \
                       Mg Mn Mo N Na Nb Ni O Os P Pb Pd Pt Rb Re Rh Ru S Sb Sc Se Si Sn Sr Ta Tc Te Ti Tl V W Y Zn Zr";
        for s in symbols.split_whitespace() {
            let z = crate::elements::atomic_number(s).unwrap();
            let e = element(z).unwrap_or_else(|err| panic!("{s}: {err}"));
            assert!(e.eps_s < -3.0 && e.eps_s > -45.0, "{s} ε_s {}", e.eps_s);
            if e.orbitals != OrbitalSet::S {
                assert!(e.eps_p > e.eps_s, "{s}: p must lie above s");
            }
            if e.orbitals == OrbitalSet::Spd {
                assert!(e.r_d > 0.5 && e.r_d < 2.0 && e.eps_d < -5.0, "{s}");
            }
            assert!(e.valence_electrons <= 2.0 * e.orbitals.len() as f64, "{s}: more electrons than states");
        }
        let err = element(2).unwrap_err().to_string();
        assert!(err.contains("He") && err.contains("Z = 2"), "{err}");
        let err = element(92).unwrap_err().to_string();
        assert!(err.contains("element U "), "{err}");
    }
}
