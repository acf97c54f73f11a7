//! Lattice geometry for the neighbour search and lattice sums: validation of degenerate cells,
//! LLL reduction of the basis, and a `Cell` that holds the reduced basis with every atom wrapped
//! into it, plus the bookkeeping to express image offsets back in the caller's basis.
//!
//! Why reduce: for a skewed basis the images that matter can lie many cells away along a basis
//! vector; after LLL the basis is nearly orthogonal so the image boxes (sized from plane spacings,
//! which is correct for any basis) stay small. Correctness never depends on the reduction.

use crate::material::Structure;
use anyhow::{bail, Result};

pub type Mat3 = [[f64; 3]; 3];
pub type Vec3 = [f64; 3];

/// Smallest distance (Å) allowed between two atoms, images included.
pub const MIN_ATOM_DISTANCE: f64 = 0.1;

/// Longest lattice vector (Å) graph building accepts. The neighbour search and the Ewald sums
/// enumerate translations over boxes sized from the cell, so a 1e9 Å vector (a units error or a
/// flipped exponent) would run for minutes or exhaust memory; real cells, slabs with vacuum
/// included, are far below this. `data-specs/plausibility.md` documents it.
pub const MAX_LATTICE_LENGTH: f64 = 1000.0;

/// Most sites graph building accepts: the infinite edges are all n² ordered pairs (8 MB of
/// lattice sums per record at this limit).
pub const MAX_GRAPH_SITES: usize = 1000;

/// Most lattice translations one neighbour search or lattice-sum plan may enumerate; a cell that
/// needs more is refused with an error instead of running for hours.
pub const MAX_TRANSLATIONS: u64 = 4_000_000;

#[inline]
pub fn dot(a: Vec3, b: Vec3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
#[inline]
pub fn cross(a: Vec3, b: Vec3) -> Vec3 {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}
#[inline]
pub fn norm(a: Vec3) -> f64 {
    dot(a, a).sqrt()
}
#[inline]
pub fn add(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}
#[inline]
pub fn sub(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
#[inline]
pub fn scale(a: Vec3, s: f64) -> Vec3 {
    [a[0] * s, a[1] * s, a[2] * s]
}

/// Row vector times matrix with rows as basis vectors: Σ_k v[k] · m[k].
#[inline]
pub fn vec_mat(v: Vec3, m: &Mat3) -> Vec3 {
    [
        v[0] * m[0][0] + v[1] * m[1][0] + v[2] * m[2][0],
        v[0] * m[0][1] + v[1] * m[1][1] + v[2] * m[2][1],
        v[0] * m[0][2] + v[1] * m[1][2] + v[2] * m[2][2],
    ]
}

/// Signed volume a · (b × c).
pub fn det(m: &Mat3) -> f64 {
    dot(m[0], cross(m[1], m[2]))
}

/// Reciprocal basis without the 2π: rows b*_k with a_i · b*_k = δ_ik. |b*_k| = 1 / (spacing of
/// the lattice planes spanned by the other two vectors).
pub fn reciprocal(m: &Mat3) -> Mat3 {
    let v = det(m);
    [scale(cross(m[1], m[2]), 1.0 / v), scale(cross(m[2], m[0]), 1.0 / v), scale(cross(m[0], m[1]), 1.0 / v)]
}

/// Reject lattices that are not finite or span (almost) no volume. The test is scale free:
/// |V| must exceed 1e-6 · |a||b||c| (i.e. the vectors are not nearly coplanar or collinear).
pub fn validate_lattice(lattice: &Mat3) -> Result<()> {
    if lattice.iter().flatten().any(|x| !x.is_finite()) {
        bail!("lattice has a non-finite entry: {lattice:?}");
    }
    let lengths = [norm(lattice[0]), norm(lattice[1]), norm(lattice[2])];
    if let Some(k) = lengths.iter().position(|&l| l < 1e-8) {
        bail!("lattice vector {} has zero length: {lattice:?}", ["a", "b", "c"][k]);
    }
    let v = det(lattice).abs();
    if let Some(k) = lengths.iter().position(|&l| l > MAX_LATTICE_LENGTH) {
        bail!(
            "lattice vector {} is {:.4e} Å long, beyond the {MAX_LATTICE_LENGTH} Å graph building accepts \
             (units error or corrupt value?)",
            ["a", "b", "c"][k],
            lengths[k]
        );
    }
    if v <= 1e-6 * lengths[0] * lengths[1] * lengths[2] || v < 1e-6 {
        bail!("degenerate lattice (volume {v:.3e} Å³; vectors collinear or coplanar): {lattice:?}");
    }
    Ok(())
}

/// LLL reduction (δ = 3/4) of the rows of `lattice`. Returns the reduced basis and the integer
/// matrix `m` with reduced = m · lattice (unimodular, so both bases span the same lattice).
pub fn lll_reduce(lattice: &Mat3) -> (Mat3, [[i64; 3]; 3]) {
    let mut b = *lattice;
    let mut m: [[i64; 3]; 3] = [[1, 0, 0], [0, 1, 0], [0, 0, 1]];
    let gram_schmidt = |b: &Mat3| -> (Mat3, [[f64; 3]; 3]) {
        let mut bs = [[0.0; 3]; 3];
        let mut mu = [[0.0; 3]; 3];
        for i in 0..3 {
            bs[i] = b[i];
            for j in 0..i {
                mu[i][j] = dot(b[i], bs[j]) / dot(bs[j], bs[j]);
                bs[i] = sub(bs[i], scale(bs[j], mu[i][j]));
            }
        }
        (bs, mu)
    };
    let mut k = 1;
    let mut guard = 0;
    while k < 3 && guard < 10_000 {
        guard += 1;
        for j in (0..k).rev() {
            let (_, mu) = gram_schmidt(&b);
            let q = mu[k][j].round();
            if q != 0.0 {
                b[k] = sub(b[k], scale(b[j], q));
                let qi = q as i64;
                for c in 0..3 {
                    m[k][c] -= qi * m[j][c];
                }
            }
        }
        let (bs, mu) = gram_schmidt(&b);
        let lhs = dot(bs[k], bs[k]);
        let rhs = (0.75 - mu[k][k - 1] * mu[k][k - 1]) * dot(bs[k - 1], bs[k - 1]);
        if lhs >= rhs {
            k += 1;
        } else {
            b.swap(k, k - 1);
            m.swap(k, k - 1);
            k = k.max(2) - 1;
        }
    }
    (b, m)
}

/// A validated structure in its LLL-reduced basis with all atoms wrapped into the reduced cell.
#[derive(Clone, Debug)]
pub struct Cell {
    /// The caller's lattice (rows, Å).
    pub lattice: Mat3,
    /// LLL-reduced basis of the same lattice: reduced = m · lattice.
    pub reduced: Mat3,
    pub m: [[i64; 3]; 3],
    /// Reciprocal of `reduced` (no 2π).
    pub reduced_recip: Mat3,
    /// |det|, Å³.
    pub volume: f64,
    /// Cartesian positions wrapped into the reduced cell (fractional coords in [0, 1)).
    pub cart: Vec<Vec3>,
    /// Integer shift (caller's basis) with cart[i] = r_i − shift[i] · lattice.
    pub shift: Vec<[i64; 3]>,
}

impl Cell {
    /// Validate a structure and wrap it into its reduced cell. Errors name the site and problem.
    pub fn new(structure: &Structure) -> Result<Cell> {
        let n = structure.species.len();
        if n == 0 {
            bail!("structure has no sites");
        }
        if structure.frac_coords.len() != n {
            bail!("structure has {n} species but {} coordinates", structure.frac_coords.len());
        }
        if n > MAX_GRAPH_SITES {
            bail!("structure has {n} sites, more than the {MAX_GRAPH_SITES} graph building accepts");
        }
        validate_lattice(&structure.lattice)?;
        for (i, (&z, f)) in structure.species.iter().zip(&structure.frac_coords).enumerate() {
            if !(1..=118).contains(&z) {
                bail!("site {i}: unknown element (atomic number {z})");
            }
            if f.iter().any(|x| !x.is_finite()) {
                bail!("site {i}: non-finite fractional coordinate {f:?}");
            }
            // Image offsets are stored as i32; anything this far out is a units or parsing error.
            if f.iter().any(|x| x.abs() > 1e6) {
                bail!("site {i}: fractional coordinate {f:?} is implausibly far outside the cell");
            }
        }
        let lattice = structure.lattice;
        let (reduced, m) = lll_reduce(&lattice);
        let reduced_recip = reciprocal(&reduced);
        let volume = det(&lattice).abs();
        // f_red = cart · recip(reduced)ᵀ; wrap to [0, 1).
        let mut cart = Vec::with_capacity(n);
        let mut shift = Vec::with_capacity(n);
        for i in 0..n {
            let r = structure.cart(i);
            let f_red = [dot(r, reduced_recip[0]), dot(r, reduced_recip[1]), dot(r, reduced_recip[2])];
            let w = [f_red[0].floor(), f_red[1].floor(), f_red[2].floor()];
            let wi = [w[0] as i64, w[1] as i64, w[2] as i64];
            // w · reduced = (w · m) · lattice
            let s = [
                wi[0] * m[0][0] + wi[1] * m[1][0] + wi[2] * m[2][0],
                wi[0] * m[0][1] + wi[1] * m[1][1] + wi[2] * m[2][1],
                wi[0] * m[0][2] + wi[1] * m[1][2] + wi[2] * m[2][2],
            ];
            cart.push(vec_mat(sub(f_red, w), &reduced));
            shift.push(s);
        }
        Ok(Cell { lattice, reduced, m, reduced_recip, volume, cart, shift })
    }

    pub fn num_sites(&self) -> usize {
        self.cart.len()
    }

    /// Image offset in the caller's basis for neighbour j seen from centre i through the
    /// reduced-basis translation `n_red`: r_j + image · lattice − r_i = cart[j] + n_red · reduced − cart[i].
    pub fn image_in_caller_basis(&self, i: usize, j: usize, n_red: [i32; 3]) -> [i32; 3] {
        let mut out = [0i32; 3];
        for c in 0..3 {
            let t: i64 = (0..3).map(|k| n_red[k] as i64 * self.m[k][c]).sum();
            out[c] = (t - self.shift[j][c] + self.shift[i][c]) as i32;
        }
        out
    }

    /// Half-widths of the box of reduced-basis translations that contains every translation T
    /// with |d + T| ≤ radius for any d = cart[j] − cart[i]: along b*_k, |Δf_k + n_k| ≤ radius·|b*_k|
    /// with |Δf_k| ≤ 1 (wrapped coordinates), so |n_k| ≤ ⌊radius·|b*_k|⌋ + 1.
    pub fn image_box(&self, radius: f64) -> [i32; 3] {
        // Saturating float → int casts keep an absurd radius from wrapping; callers bound the
        // count with `translations_in_box` first.
        let mut out = [0; 3];
        for k in 0..3 {
            out[k] = ((radius * norm(self.reduced_recip[k])).floor() as i32).saturating_add(1);
        }
        out
    }
}

/// Number of translations in the box `image_box` gives (saturating).
pub fn translations_in_box(half: [i32; 3]) -> u64 {
    half.iter().fold(1u64, |acc, &h| acc.saturating_mul(2 * (h.max(0) as u64) + 1))
}

/// Refuse a search over more than `MAX_TRANSLATIONS` translations, naming what asked for it.
pub fn check_translation_budget(half: [i32; 3], what: &str) -> Result<()> {
    let count = translations_in_box(half);
    if count > MAX_TRANSLATIONS {
        bail!(
            "{what} would enumerate {count} lattice translations (box ±{half:?}), more than the {MAX_TRANSLATIONS} \
             allowed: the cell is too extreme (very long or very thin) for graph building"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lll_shortens_a_skewed_basis_and_stays_unimodular() {
        let cubic = [[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0]];
        // a, b + 5a, c − 7b + 3a: same lattice, badly skewed.
        let skew = [[3.0, 0.0, 0.0], [15.0, 3.0, 0.0], [9.0, -21.0, 3.0]];
        let (red, m) = lll_reduce(&skew);
        for row in red {
            assert!((norm(row) - 3.0).abs() < 1e-9, "reduced vector {row:?} not of length 3");
        }
        let mf: Mat3 = m.map(|r| r.map(|x| x as f64));
        assert!((det(&mf).abs() - 1.0).abs() < 1e-12);
        assert!((det(&red).abs() - det(&cubic)).abs() < 1e-9);
    }

    #[test]
    fn degenerate_lattices_are_rejected() {
        let collinear = [[1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 1.0]];
        assert!(validate_lattice(&collinear).unwrap_err().to_string().contains("degenerate"));
        let coplanar = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]];
        assert!(validate_lattice(&coplanar).is_err());
        let zero = [[0.0; 3], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        assert!(validate_lattice(&zero).unwrap_err().to_string().contains("zero length"));
        let nan = [[f64::NAN, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        assert!(validate_lattice(&nan).is_err());
    }
}
