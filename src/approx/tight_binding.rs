//! An approximate density of states from a universal tight-binding model (Harrison's scheme),
//! for the demo's DOS modality. An approximation, labelled as such wherever it is used: no
//! self-consistency, no charge transfer, free-atom term values; but it depends on the real
//! structure (bond lengths, coordination, chemistry) and separates metals from insulators.
//!
//! Model (W. A. Harrison, *Electronic Structure and the Properties of Solids*, 1980). An
//! orthogonal minimal basis per atom (s; s,p; or s,p,d — see [`super::tb_params`]), on-site
//! energies = free-atom term values, two-centre couplings in the Slater–Koster form with
//! Harrison's universal distance laws V = η ħ²/(m d²) (sp), η ħ² r_d^{3/2}/(m d^{7/2}) (sp–d) and
//! η ħ² (r_d r_d')^{3/2}/(m d⁵) (d–d). Harrison's scheme couples nearest neighbours; to make that
//! well defined for any crystal, a pair (i, j) at distance d is weighted by a smooth cut-off
//! w(d / s_ij), s_ij = the mean of the two atoms' nearest-neighbour distances: w = 1 below
//! `cutoff_full`, a cos² taper to 0 at `cutoff_end` (defaults 1.15 and 1.45: bcc second
//! neighbours in, diamond second neighbours out). The cut-off is intrinsic to the crystal, so
//! the DOS does not depend on the cell chosen to describe it.
//!
//! Slater–Koster blocks are built by rotating the bond-frame matrix (σ, π, δ on the diagonal)
//! into the crystal frame: p orbitals rotate with the rotation matrix itself, d orbitals through
//! their quadratic forms (d_α(r) = rᵀ Q_α r, rotated Q projected back on the five Q's). Parity:
//! in the frame where atom j sits at +z from atom i, ⟨l₁ on i|H|l₂ on j⟩ = V_{l₁l₂m} for l₁ ≤ l₂
//! and (−1)^{l₁+l₂} V_{l₂l₁m} otherwise (Harrison's sign convention for η).
//!
//! Bloch sums over every periodic image within the cut-off (the crate's neighbour search),
//! H_{iα,jβ}(k) = ε_{iα} δ + Σ_T w V_{αβ}(r_j + T − r_i) e^{ik·(r_j+T−r_i)}, diagonalised with
//! nalgebra's Hermitian eigensolver on a Γ-centred Monkhorst–Pack grid (n_i = ⌈ρ_k |b*_i|⌉,
//! b*_i the reciprocal vectors without 2π; k and −k share eigenvalues — time reversal, V real —
//! so only one of each pair is diagonalised). Large cells get fewer k-points so that
//! n_k · N_orbitals³ stays within `max_work`. States are broadened by Gaussians of width σ,
//! two electrons per state; E_F solves N(E_F) = N_valence with Gaussian (erfc) occupations,
//! by bisection, so the integral of the output DOS up to E_F is the electron count. When the
//! count is reached exactly at a band edge followed by a gap wider than 6σ (an insulator), E_F
//! is put mid-gap (real MP/VASP DOS put it near the valence-band top instead; the encoder sees
//! E − E_F, so insulators are shifted by half their gap relative to DFT).
//!
//! Output: a [`Dos`] with absolute energies (the model's scale, eV) on an evenly spaced grid of
//! `points` energies from the lowest band − 5σ to E_F + `above_fermi`, the total (spin-summed)
//! DOS in states/eV/cell in `densities_up` (like a non-spin-polarised VASP/MP DOS), and E_F;
//! `preprocess::dos` shifts it by E_F and resamples as it does a real DOS.

use super::tb_params::{self, eta, ElementTb, OrbitalSet, HBAR2_OVER_M};
use crate::crystal::lattice::{self, Cell, Mat3, Vec3};
use crate::crystal::neighbors::neighbors_within;
use crate::material::{Dos, Structure};
use anyhow::{bail, Context, Result};
use nalgebra::DMatrix;
use num_complex::Complex64;
use rayon::prelude::*;

/// Settings of the tight-binding DOS.
#[derive(Clone, Debug, PartialEq)]
pub struct TightBindingParams {
    /// k-point density ρ_k in Å: n_i = ⌈ρ_k |b*_i|⌉ points along reciprocal vector i (|b*_i| =
    /// 1 / spacing of the lattice planes). 20 Å gives 7×7×7 for primitive Si.
    pub kpoint_density: f64,
    /// An explicit Γ-centred grid instead of the density (tests, convergence studies).
    pub kgrid: Option<[usize; 3]>,
    /// Cap on (irreducible-by-time-reversal k-points) × N_orbitals³; the grid is thinned
    /// until it fits, down to Γ only.
    pub max_work: f64,
    /// Gaussian broadening σ in eV.
    pub sigma: f64,
    /// Number of energies in the output grid.
    pub points: usize,
    /// The grid ends this far above E_F (eV).
    pub above_fermi: f64,
    /// Couplings at d ≤ cutoff_full · s_ij count fully …
    pub cutoff_full: f64,
    /// … and vanish (cos² taper) at d ≥ cutoff_end · s_ij.
    pub cutoff_end: f64,
}

impl Default for TightBindingParams {
    fn default() -> Self {
        TightBindingParams {
            kpoint_density: 20.0,
            kgrid: None,
            max_work: 1.5e7,
            sigma: 0.15,
            points: 601,
            above_fermi: 10.0,
            cutoff_full: 1.15,
            cutoff_end: 1.45,
        }
    }
}

impl TightBindingParams {
    fn validate(&self) -> Result<()> {
        let ok = self.kpoint_density.is_finite()
            && self.kpoint_density > 0.0
            && self.max_work > 0.0
            && self.sigma.is_finite()
            && self.sigma > 0.0
            && self.points >= 2
            && self.above_fermi.is_finite()
            && self.above_fermi > 0.0
            && self.cutoff_full > 1.0
            && self.cutoff_end > self.cutoff_full
            && self.kgrid.map_or(true, |g| g.iter().all(|&n| n >= 1));
        if !ok {
            bail!("invalid tight-binding parameters: {self:?}");
        }
        Ok(())
    }
}

/// One coupling block ⟨i, α | H | j + T, β⟩, already weighted by the cut-off.
#[derive(Clone, Debug)]
pub struct Hopping {
    pub i: usize,
    pub j: usize,
    /// r_j + T − r_i in Å (cartesian).
    pub d: Vec3,
    /// (n_i, n_j) row-major real block in eV.
    pub block: Vec<f64>,
}

/// The real-space tight-binding model of one crystal.
#[derive(Clone, Debug)]
pub struct TbModel {
    /// First basis index of each atom; `offsets[n_atoms]` = number of orbitals.
    pub offsets: Vec<usize>,
    /// On-site energies (N_orbitals), eV.
    pub onsite: Vec<f64>,
    pub hoppings: Vec<Hopping>,
    /// Valence electrons per cell.
    pub electrons: f64,
    /// Reciprocal vectors of the caller's lattice, without 2π (rows).
    pub reciprocal: Mat3,
}

impl TbModel {
    /// Build the model: parameters per atom, neighbours within the cut-off, Slater–Koster blocks.
    pub fn new(structure: &Structure, params: &TightBindingParams) -> Result<TbModel> {
        params.validate()?;
        if structure.num_sites() == 0 {
            bail!("structure has no sites");
        }
        let elements: Vec<ElementTb> = structure.species.iter().map(|&z| tb_params::element(z)).collect::<Result<_>>()?;
        let cell = Cell::new(structure)?;
        let n = structure.num_sites();
        let mut offsets = vec![0usize];
        let mut onsite = Vec::new();
        for e in &elements {
            onsite.push(e.eps_s);
            if e.orbitals != OrbitalSet::S {
                onsite.extend([e.eps_p; 3]);
            }
            if e.orbitals == OrbitalSet::Spd {
                onsite.extend([e.eps_d; 5]);
            }
            offsets.push(onsite.len());
        }
        let electrons: f64 = elements.iter().map(|e| e.valence_electrons).sum();

        // Nearest-neighbour distance of every atom: grow the search radius until each has one.
        let mut radius = 1.5 * (cell.volume.abs() / n as f64).cbrt().max(1.0);
        let nearest: Vec<f64> = loop {
            let lists = neighbors_within(&cell, radius);
            if lists.iter().all(|l| !l.is_empty()) {
                break lists.iter().map(|l| l[0].distance).collect();
            }
            radius *= 1.5;
            if radius > 1e3 {
                bail!("no neighbour found within 1000 Å");
            }
        };
        if let Some((i, &d)) = nearest.iter().enumerate().find(|(_, &d)| d < lattice::MIN_ATOM_DISTANCE.max(0.3)) {
            bail!("site {i} has a neighbour only {d:.3} Å away; atoms overlap");
        }
        let reach = params.cutoff_end * nearest.iter().cloned().fold(0.0, f64::max);
        let lists = neighbors_within(&cell, reach);

        let mut hoppings = Vec::new();
        for (i, list) in lists.iter().enumerate() {
            let ri = structure.cart(i);
            for nb in list {
                let j = nb.src as usize;
                let scale = 0.5 * (nearest[i] + nearest[j]);
                let w = taper(nb.distance / scale, params.cutoff_full, params.cutoff_end);
                if w == 0.0 {
                    continue;
                }
                let rj = structure.cart(j);
                let t = lattice::vec_mat([nb.image[0] as f64, nb.image[1] as f64, nb.image[2] as f64], &structure.lattice);
                let d = [rj[0] + t[0] - ri[0], rj[1] + t[1] - ri[1], rj[2] + t[2] - ri[2]];
                let mut block = slater_koster_block(&elements[i], &elements[j], d);
                block.iter_mut().for_each(|v| *v *= w);
                hoppings.push(Hopping { i, j, d, block });
            }
        }
        Ok(TbModel { offsets, onsite, hoppings, electrons, reciprocal: lattice::reciprocal(&structure.lattice) })
    }

    pub fn num_orbitals(&self) -> usize {
        *self.offsets.last().unwrap()
    }

    /// H(k) for k in fractional reciprocal coordinates (k_cart = 2π Σ k_i b*_i). (N, N).
    pub fn bloch_hamiltonian(&self, k_frac: Vec3) -> DMatrix<Complex64> {
        let n = self.num_orbitals();
        let two_pi = 2.0 * std::f64::consts::PI;
        let k: Vec3 = std::array::from_fn(|c| two_pi * (0..3).map(|r| k_frac[r] * self.reciprocal[r][c]).sum::<f64>());
        let mut h = DMatrix::<Complex64>::zeros(n, n); // (N, N)
        for (a, &e) in self.onsite.iter().enumerate() {
            h[(a, a)] = Complex64::new(e, 0.0);
        }
        for hop in &self.hoppings {
            let phase = Complex64::from_polar(1.0, lattice::dot(k, hop.d));
            let (oi, oj) = (self.offsets[hop.i], self.offsets[hop.j]);
            let nj = self.offsets[hop.j + 1] - oj;
            for (idx, &v) in hop.block.iter().enumerate() {
                h[(oi + idx / nj, oj + idx % nj)] += phase * v;
            }
        }
        h
    }
}

/// Smooth pair weight: 1 for x ≤ full, cos² down to 0 at x = end.
fn taper(x: f64, full: f64, end: f64) -> f64 {
    if x <= full {
        1.0
    } else if x >= end {
        0.0
    } else {
        let t = (x - full) / (end - full);
        (0.5 * std::f64::consts::PI * t).cos().powi(2)
    }
}

/// Bond-frame symmetry of a basis orbital (index 0 = s, 1–3 = p_x,p_y,p_z, 4–8 = d_xy, d_yz,
/// d_zx, d_{x²−y²}, d_{3z²−r²}) when the bond lies along z: (l, kind) with kind 0 = σ,
/// 1 = π (x-like), 2 = π (y-like), 3 = δ (x²−y²-like), 4 = δ (xy-like).
const BOND_SYMMETRY: [(u8, u8); 9] = [(0, 0), (1, 1), (1, 2), (1, 0), (2, 4), (2, 2), (2, 1), (2, 3), (2, 0)];

/// The Slater–Koster block ⟨a orbitals | H | b orbitals⟩ for b at displacement `d` from a, (n_a, n_b) row-major.
pub fn slater_koster_block(a: &ElementTb, b: &ElementTb, d: Vec3) -> Vec<f64> {
    let dist = lattice::norm(d);
    let (na, nb) = (a.orbitals.len(), b.orbitals.len());
    let rot = bond_rotation(d, dist);
    let dmat = orbital_rotation(&rot); // (9, 9): global orbital α = Σ_m D[α][m] bond-frame orbital m
    // Bond-frame matrix (9, 9): nonzero only between orbitals of the same symmetry kind.
    let mut bond = [[0.0f64; 9]; 9];
    for m1 in 0..na {
        for m2 in 0..nb {
            let (l1, k1) = BOND_SYMMETRY[m1];
            let (l2, k2) = BOND_SYMMETRY[m2];
            if k1 != k2 {
                continue;
            }
            let m = match k1 {
                0 => 0,
                1 | 2 => 1,
                _ => 2,
            };
            if m > l1.min(l2) {
                continue;
            }
            let (lo, hi, ra, rb) = if l1 <= l2 { (l1, l2, a.r_d, b.r_d) } else { (l2, l1, b.r_d, a.r_d) };
            let sign = if l1 > l2 && (l1 + l2) % 2 == 1 { -1.0 } else { 1.0 };
            bond[m1][m2] = sign * coupling(lo, hi, m, dist, ra, rb);
        }
    }
    let mut out = vec![0.0; na * nb];
    for alpha in 0..na {
        for beta in 0..nb {
            let mut s = 0.0;
            for m1 in 0..na {
                let da = dmat[alpha][m1];
                if da == 0.0 {
                    continue;
                }
                for m2 in 0..nb {
                    s += da * bond[m1][m2] * dmat[beta][m2];
                }
            }
            out[alpha * nb + beta] = s;
        }
    }
    out
}

/// Harrison's coupling V_{lo,hi,m} at distance d (lo ≤ hi; m = 0 σ, 1 π, 2 δ). `r_lo`, `r_hi`:
/// d-state radii of the atoms carrying the lo and hi orbitals (used only for d).
fn coupling(lo: u8, hi: u8, m: u8, d: f64, r_lo: f64, r_hi: f64) -> f64 {
    let c = HBAR2_OVER_M;
    match (lo, hi, m) {
        (0, 0, 0) => eta::SS_SIGMA * c / (d * d),
        (0, 1, 0) => eta::SP_SIGMA * c / (d * d),
        (1, 1, 0) => eta::PP_SIGMA * c / (d * d),
        (1, 1, 1) => eta::PP_PI * c / (d * d),
        (0, 2, 0) => eta::SD_SIGMA * c * r_hi.powf(1.5) / d.powf(3.5),
        (1, 2, 0) => eta::PD_SIGMA * c * r_hi.powf(1.5) / d.powf(3.5),
        (1, 2, 1) => eta::PD_PI * c * r_hi.powf(1.5) / d.powf(3.5),
        (2, 2, 0) => eta::DD_SIGMA * c * (r_lo * r_hi).powf(1.5) / d.powi(5),
        (2, 2, 1) => eta::DD_PI * c * (r_lo * r_hi).powf(1.5) / d.powi(5),
        (2, 2, 2) => eta::DD_DELTA * c * (r_lo * r_hi).powf(1.5) / d.powi(5),
        _ => 0.0,
    }
}

/// Rows e1, e2, n: an orthonormal right-handed frame whose third axis is the bond direction.
fn bond_rotation(d: Vec3, dist: f64) -> Mat3 {
    let n = lattice::scale(d, 1.0 / dist);
    let helper = if n[0].abs() < 0.9 { [1.0, 0.0, 0.0] } else { [0.0, 1.0, 0.0] };
    let e1 = lattice::sub(helper, lattice::scale(n, lattice::dot(helper, n)));
    let e1 = lattice::scale(e1, 1.0 / lattice::norm(e1));
    let e2 = lattice::cross(n, e1);
    [e1, e2, n]
}

/// Quadratic forms of the five real d orbitals (all with Frobenius norm² 3/2, mutually
/// orthogonal): √3xy, √3yz, √3zx, (√3/2)(x²−y²), (3z²−r²)/2.
fn d_forms() -> [Mat3; 5] {
    let h = 3f64.sqrt() / 2.0;
    [
        [[0.0, h, 0.0], [h, 0.0, 0.0], [0.0, 0.0, 0.0]],
        [[0.0, 0.0, 0.0], [0.0, 0.0, h], [0.0, h, 0.0]],
        [[0.0, 0.0, h], [0.0, 0.0, 0.0], [h, 0.0, 0.0]],
        [[h, 0.0, 0.0], [0.0, -h, 0.0], [0.0, 0.0, 0.0]],
        [[-0.5, 0.0, 0.0], [0.0, -0.5, 0.0], [0.0, 0.0, 1.0]],
    ]
}

/// D (9, 9), block diagonal: global orbital α = Σ_m D[α][m] · (bond-frame orbital m), where a
/// point has bond-frame coordinates r' = R r.
fn orbital_rotation(rot: &Mat3) -> [[f64; 9]; 9] {
    let mut out = [[0.0; 9]; 9];
    out[0][0] = 1.0;
    for alpha in 0..3 {
        for m in 0..3 {
            out[1 + alpha][1 + m] = rot[m][alpha];
        }
    }
    let forms = d_forms();
    for (alpha, q) in forms.iter().enumerate() {
        // R Q Rᵀ
        let mut rq = [[0.0; 3]; 3];
        for r in 0..3 {
            for c in 0..3 {
                rq[r][c] = (0..3).map(|k| (0..3).map(|l| rot[r][k] * q[k][l] * rot[c][l]).sum::<f64>()).sum();
            }
        }
        for (m, qm) in forms.iter().enumerate() {
            let proj: f64 = (0..3).map(|r| (0..3).map(|c| rq[r][c] * qm[r][c]).sum::<f64>()).sum();
            out[4 + alpha][4 + m] = proj / 1.5;
        }
    }
    out
}

/// The k-points actually diagonalised: fractional coordinates and weights (a k and its −k
/// partner are one point of weight 2). Weights sum to n1·n2·n3.
pub fn kpoints(grid: [usize; 3]) -> Vec<(Vec3, f64)> {
    let [n1, n2, n3] = grid;
    let flat = |a: usize, b: usize, c: usize| (a * n2 + b) * n3 + c;
    let mut out = Vec::new();
    for a in 0..n1 {
        for b in 0..n2 {
            for c in 0..n3 {
                let partner = flat((n1 - a) % n1, (n2 - b) % n2, (n3 - c) % n3);
                let me = flat(a, b, c);
                if me > partner {
                    continue;
                }
                let w = if me == partner { 1.0 } else { 2.0 };
                out.push(([a as f64 / n1 as f64, b as f64 / n2 as f64, c as f64 / n3 as f64], w));
            }
        }
    }
    out
}

/// The k grid for `structure`: explicit, or from the density, thinned to fit `max_work`.
pub fn choose_kgrid(reciprocal: &Mat3, num_orbitals: usize, params: &TightBindingParams) -> [usize; 3] {
    if let Some(g) = params.kgrid {
        return g;
    }
    let lengths: Vec<f64> = reciprocal.iter().map(|b| lattice::norm(*b)).collect();
    let mut density = params.kpoint_density;
    let n3 = (num_orbitals as f64).powi(3);
    loop {
        let grid: [usize; 3] = std::array::from_fn(|i| ((density * lengths[i]).ceil() as usize).max(1));
        let irreducible = (grid.iter().product::<usize>() as f64 / 2.0).ceil().max(1.0);
        if irreducible * n3 <= params.max_work || grid == [1, 1, 1] {
            return grid;
        }
        density *= 0.85;
    }
}

/// Band energies (eV) at each k-point with its weight.
pub struct Bands {
    pub grid: [usize; 3],
    pub weights: Vec<f64>,
    /// (n_k, N) eigenvalues, ascending within a k-point.
    pub energies: Vec<Vec<f64>>,
}

/// Diagonalise H(k) on the k grid (rayon over k-points).
pub fn bands(model: &TbModel, params: &TightBindingParams) -> Result<Bands> {
    let grid = choose_kgrid(&model.reciprocal, model.num_orbitals(), params);
    let ks = kpoints(grid);
    let energies: Vec<Vec<f64>> = ks
        .par_iter()
        .map(|(k, _)| {
            let h = model.bloch_hamiltonian(*k);
            if h.iter().any(|v| !v.re.is_finite() || !v.im.is_finite()) {
                bail!("H(k) at k = {k:?} has a non-finite entry");
            }
            let mut e: Vec<f64> = h.symmetric_eigenvalues().iter().cloned().collect();
            e.sort_by(f64::total_cmp);
            Ok(e)
        })
        .collect::<Result<_>>()?;
    Ok(Bands { grid, weights: ks.iter().map(|k| k.1).collect(), energies })
}

/// Electrons (both spins) in states below μ with Gaussian (erfc) occupations.
fn electron_count(b: &Bands, mu: f64, sigma: f64) -> f64 {
    let total_weight: f64 = b.weights.iter().sum();
    let s = std::f64::consts::SQRT_2 * sigma;
    let mut n = 0.0;
    for (w, es) in b.weights.iter().zip(&b.energies) {
        n += w * es.iter().map(|&e| 0.5 * crate::crystal::special::erfc((e - mu) / s)).sum::<f64>();
    }
    2.0 * n / total_weight
}

/// E_F from the electron count, by bisection on the Gaussian-occupied states.
pub fn fermi_level(b: &Bands, electrons: f64, sigma: f64) -> Result<f64> {
    let states = 2.0 * b.energies.first().map_or(0, |e| e.len()) as f64;
    if !(electrons > 0.0 && electrons < states) {
        bail!("{electrons} valence electrons do not fit in {states} band states");
    }
    // Insulator: filling the states in order, the electron count is reached exactly at a band
    // edge followed by a gap. The count is flat across the gap, so bisection would stop wherever
    // rounding leaves it; put E_F mid-gap instead (deterministic, and the broadened DOS is ≈ 0
    // around it). Only for gaps wider than 6σ, so the broadened integral up to E_F stays exact.
    let total_weight: f64 = b.weights.iter().sum();
    let mut states_by_energy: Vec<(f64, f64)> = b
        .weights
        .iter()
        .zip(&b.energies)
        .flat_map(|(w, es)| es.iter().map(move |&e| (e, 2.0 * w / total_weight)))
        .collect();
    states_by_energy.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut filled = 0.0;
    for (idx, &(e, n)) in states_by_energy.iter().enumerate() {
        filled += n;
        if filled >= electrons - 1e-9 {
            if (filled - electrons).abs() < 1e-9 {
                if let Some(&(next, _)) = states_by_energy.get(idx + 1) {
                    if next - e > 6.0 * sigma {
                        return Ok(0.5 * (e + next));
                    }
                }
            }
            break;
        }
    }
    let lo_e = b.energies.iter().flatten().cloned().fold(f64::INFINITY, f64::min);
    let hi_e = b.energies.iter().flatten().cloned().fold(f64::NEG_INFINITY, f64::max);
    let (mut lo, mut hi) = (lo_e - 20.0 * sigma, hi_e + 20.0 * sigma);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if electron_count(b, mid, sigma) < electrons {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-10 {
            break;
        }
    }
    Ok(0.5 * (lo + hi))
}

/// The tight-binding DOS of `structure` (see the module docs for the model and output grid).
pub fn tight_binding_dos(structure: &Structure, params: &TightBindingParams) -> Result<Dos> {
    let model = TbModel::new(structure, params).context("building the tight-binding model")?;
    let b = bands(&model, params)?;
    let efermi = fermi_level(&b, model.electrons, params.sigma)?;
    Ok(broadened_dos(&b, efermi, params))
}

/// Gaussian-broadened total DOS (states/eV/cell, both spins) on the output grid.
pub fn broadened_dos(b: &Bands, efermi: f64, params: &TightBindingParams) -> Dos {
    let sigma = params.sigma;
    let lowest = b.energies.iter().flatten().cloned().fold(f64::INFINITY, f64::min);
    let e_lo = lowest - 5.0 * sigma;
    let e_hi = (efermi + params.above_fermi).max(e_lo + 10.0 * sigma);
    let step = (e_hi - e_lo) / (params.points - 1) as f64;
    let energies: Vec<f64> = (0..params.points).map(|i| e_lo + step * i as f64).collect(); // (P)
    let mut dos = vec![0.0; params.points]; // (P)
    let total_weight: f64 = b.weights.iter().sum();
    let norm = 2.0 / (total_weight * sigma * (2.0 * std::f64::consts::PI).sqrt());
    let reach = 6.0 * sigma;
    for (w, es) in b.weights.iter().zip(&b.energies) {
        for &e in es {
            let first = (((e - reach - e_lo) / step).ceil().max(0.0)) as usize;
            let last = (((e + reach - e_lo) / step).floor()).min((params.points - 1) as f64);
            if last < 0.0 {
                continue;
            }
            for (i, slot) in dos.iter_mut().enumerate().take(last as usize + 1).skip(first) {
                let x = (energies[i] - e) / sigma;
                *slot += w * norm * (-0.5 * x * x).exp();
            }
        }
    }
    Dos { energies, densities_up: dos, densities_down: None, efermi }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orbital_rotation_is_orthogonal_and_identity_for_a_z_bond() {
        for d in [[0.0, 0.0, 2.0], [1.0, -2.0, 0.5], [-3.0, 0.1, 0.2]] {
            let r = bond_rotation(d, lattice::norm(d));
            let m = orbital_rotation(&r);
            for a in 0..9 {
                for b in 0..9 {
                    let dot: f64 = (0..9).map(|k| m[a][k] * m[b][k]).sum();
                    assert!((dot - if a == b { 1.0 } else { 0.0 }).abs() < 1e-12, "{d:?} {a} {b} {dot}");
                }
            }
        }
        // Textbook Slater–Koster entries for a general direction (l, m, n).
        let si = tb_params::element(14).unwrap();
        let fe = tb_params::element(26).unwrap();
        let d = [1.0, -2.0, 0.5];
        let dist = lattice::norm(d);
        let (l, m, n) = (d[0] / dist, d[1] / dist, d[2] / dist);
        let b = slater_koster_block(&si, &fe, d);
        let vsp = coupling(0, 1, 0, dist, 0.0, 0.0);
        let (vpps, vppp) = (coupling(1, 1, 0, dist, 0.0, 0.0), coupling(1, 1, 1, dist, 0.0, 0.0));
        let vsd = coupling(0, 2, 0, dist, 0.0, fe.r_d);
        let (vpds, vpdp) = (coupling(1, 2, 0, dist, 0.0, fe.r_d), coupling(1, 2, 1, dist, 0.0, fe.r_d));
        let nb = 9;
        assert!((b[1] - l * vsp).abs() < 1e-12); // E_{s,x}
        assert!((b[nb + 2] - (l * m * (vpps - vppp))).abs() < 1e-12); // E_{x,y}
        assert!((b[nb + 1] - (l * l * vpps + (1.0 - l * l) * vppp)).abs() < 1e-12); // E_{x,x}
        assert!((b[4] - 3f64.sqrt() * l * m * vsd).abs() < 1e-12); // E_{s,xy}
        // E_{x,xy} = √3 l² m V_pdσ + m (1 − 2 l²) V_pdπ
        let want = 3f64.sqrt() * l * l * m * vpds + m * (1.0 - 2.0 * l * l) * vpdp;
        assert!((b[nb + 4] - want).abs() < 1e-12, "{} vs {want}", b[nb + 4]);
        // E_{z,3z²−r²} = n (n² − (l² + m²)/2) V_pdσ + √3 n (l² + m²) V_pdπ
        let want = n * (n * n - 0.5 * (l * l + m * m)) * vpds + 3f64.sqrt() * n * (l * l + m * m) * vpdp;
        assert!((b[3 * nb + 8] - want).abs() < 1e-12, "{} vs {want}", b[3 * nb + 8]);
    }

    #[test]
    fn kpoint_weights_cover_the_grid() {
        for g in [[1, 1, 1], [2, 3, 4], [5, 5, 5], [4, 4, 1]] {
            let ks = kpoints(g);
            let total: f64 = ks.iter().map(|k| k.1).sum();
            assert_eq!(total as usize, g.iter().product::<usize>());
            assert!(ks.len() < g.iter().product::<usize>() || g == [1, 1, 1]);
        }
    }
}
