//! Physics checks of the tight-binding DOS (`approx::tight_binding`): compression widens bands,
//! ionic insulators show a gap and metals do not, the DOS integrates to the valence electron
//! count, H(k) is Hermitian and time-reversal symmetric, the DOS does not depend on the cell
//! chosen (supercell, rotation), and unknown elements are named in the error.

use multimat::approx::tight_binding::{bands, tight_binding_dos, TbModel, TightBindingParams};
use multimat::material::{Dos, Structure};

fn fcc(a: f64) -> [[f64; 3]; 3] {
    [[0.0, a / 2.0, a / 2.0], [a / 2.0, 0.0, a / 2.0], [a / 2.0, a / 2.0, 0.0]]
}

fn diamond_si(a: f64) -> Structure {
    Structure { lattice: fcc(a), species: vec![14, 14], frac_coords: vec![[0.0; 3], [0.25, 0.25, 0.25]] }
}

fn rocksalt(a: f64, cation: u8, anion: u8) -> Structure {
    Structure { lattice: fcc(a), species: vec![cation, anion], frac_coords: vec![[0.0; 3], [0.5, 0.5, 0.5]] }
}

fn fcc_al() -> Structure {
    Structure { lattice: fcc(4.05), species: vec![13], frac_coords: vec![[0.0; 3]] }
}

fn bcc(a: f64, z: u8) -> Structure {
    let h = a / 2.0;
    Structure { lattice: [[-h, h, h], [h, -h, h], [h, h, -h]], species: vec![z], frac_coords: vec![[0.0; 3]] }
}

/// A low-symmetry cell with s, sp and spd atoms (not a real compound; for symmetry checks).
fn triclinic_mix() -> Structure {
    Structure {
        lattice: [[4.1, 0.2, 0.1], [0.7, 4.4, -0.3], [0.4, 0.5, 5.0]],
        species: vec![22, 8, 8, 14, 1],
        frac_coords: vec![[0.0, 0.0, 0.0], [0.31, 0.12, 0.05], [0.62, 0.48, 0.51], [0.15, 0.63, 0.33], [0.82, 0.21, 0.74]],
    }
}

fn params(sigma: f64) -> TightBindingParams {
    TightBindingParams { sigma, ..Default::default() }
}

/// DOS interpolated at E − E_F = x.
fn dos_at(d: &Dos, x: f64) -> f64 {
    let e = x + d.efermi;
    let i = d.energies.partition_point(|&v| v < e);
    if i == 0 || i >= d.energies.len() {
        return 0.0;
    }
    let (e0, e1) = (d.energies[i - 1], d.energies[i]);
    let t = (e - e0) / (e1 - e0);
    (1.0 - t) * d.densities_up[i - 1] + t * d.densities_up[i]
}

/// ∫ DOS dE from the bottom of the grid up to E_F (trapezoid, last interval cut at E_F).
fn integrated_to_fermi(d: &Dos) -> f64 {
    let mut s = 0.0;
    for i in 1..d.energies.len() {
        let (e0, e1) = (d.energies[i - 1], d.energies[i]);
        if e0 >= d.efermi {
            break;
        }
        let hi = e1.min(d.efermi);
        let f_hi = if e1 <= d.efermi { d.densities_up[i] } else { dos_at(d, 0.0) };
        s += 0.5 * (d.densities_up[i - 1] + f_hi) * (hi - e0);
    }
    s
}

fn occupied_width(d: &Dos, sigma: f64) -> f64 {
    // The grid starts 5σ below the lowest band.
    d.efermi - (d.energies[0] + 5.0 * sigma)
}

#[test]
fn compressing_silicon_widens_its_bands_and_changes_the_dos() {
    let p = params(0.15);
    let normal = tight_binding_dos(&diamond_si(5.43), &p).unwrap();
    let squeezed = tight_binding_dos(&diamond_si(0.9 * 5.43), &p).unwrap();
    let (w0, w1) = (occupied_width(&normal, 0.15), occupied_width(&squeezed, 0.15));
    // Harrison's couplings scale as 1/d² (×1.23 here); the width also contains the fixed s–p
    // term-value splitting, so it grows by less — but by far more than the broadening.
    assert!(w1 > w0 + 0.5, "valence band width {w0:.2} eV → {w1:.2} eV under 10% compression");
    // Real Si's valence band is ≈ 12 eV wide; the universal parameters should land near it.
    assert!(w0 > 8.0 && w0 < 16.0, "Si valence band width {w0:.2} eV");
    // The curves differ clearly on the common E − E_F axis.
    let (mut diff, mut norm) = (0.0, 0.0);
    for i in 0..200 {
        let x = -12.0 + 0.1 * i as f64;
        diff += (dos_at(&normal, x) - dos_at(&squeezed, x)).abs();
        norm += dos_at(&normal, x);
    }
    assert!(diff / norm > 0.3, "relative L1 difference only {:.3}", diff / norm);
    // Diamond Si is a semiconductor in this model too: a (nearly) empty window at E_F.
    assert!(dos_at(&normal, 0.0) < 0.05, "Si DOS(E_F) = {}", dos_at(&normal, 0.0));
}

#[test]
fn ionic_insulators_have_a_gap_and_metals_do_not() {
    let p = params(0.1);
    for (name, s) in [("NaCl", rocksalt(5.64, 11, 17)), ("MgO", rocksalt(4.21, 12, 8))] {
        let d = tight_binding_dos(&s, &p).unwrap();
        let peak = d.densities_up.iter().cloned().fold(0.0, f64::max);
        for i in 0..=20 {
            let x = -1.0 + 0.1 * i as f64;
            let v = dos_at(&d, x);
            assert!(v < 1e-3 * peak, "{name}: DOS({x:+.1} eV) = {v:.2e} (peak {peak:.2})");
        }
    }
    for (name, s) in [("fcc Al", fcc_al()), ("bcc Na", bcc(4.23, 11)), ("bcc Fe", bcc(2.87, 26))] {
        let d = tight_binding_dos(&s, &p).unwrap();
        let at_ef = dos_at(&d, 0.0);
        assert!(at_ef > 0.05, "{name}: DOS(E_F) = {at_ef:.3} states/eV/cell");
    }
}

#[test]
fn dos_integrates_to_the_valence_electron_count() {
    let p = params(0.1);
    for (name, s, electrons) in [
        ("Si", diamond_si(5.43), 8.0),
        ("Al", fcc_al(), 3.0),
        ("NaCl", rocksalt(5.64, 11, 17), 8.0),
        ("Fe", bcc(2.87, 26), 8.0),
        ("mixed", triclinic_mix(), 4.0 + 12.0 + 4.0 + 1.0),
    ] {
        let d = tight_binding_dos(&s, &p).unwrap();
        let n = integrated_to_fermi(&d);
        assert!((n - electrons).abs() < 0.02 * electrons, "{name}: ∫DOS up to E_F = {n:.3}, expected {electrons}");
        let energies_even = d.energies.windows(2).all(|w| ((w[1] - w[0]) - (d.energies[1] - d.energies[0])).abs() < 1e-9);
        assert!(energies_even && d.energies.len() == p.points);
        assert!(d.densities_up.iter().all(|v| v.is_finite() && *v >= 0.0));
    }
}

#[test]
fn bloch_hamiltonian_is_hermitian_and_time_reversal_symmetric() {
    let s = triclinic_mix();
    let model = TbModel::new(&s, &params(0.1)).unwrap();
    assert_eq!(model.num_orbitals(), 9 + 4 + 4 + 4 + 1);
    for k in [[0.0, 0.0, 0.0], [0.13, -0.27, 0.41], [0.5, 0.5, 0.5], [0.33, 0.01, -0.22]] {
        let h = model.bloch_hamiltonian(k);
        let scale = h.iter().map(|v| v.norm()).fold(0.0, f64::max);
        assert!((&h - h.adjoint()).norm() < 1e-12 * scale, "H(k) not Hermitian at {k:?}");
        let hm = model.bloch_hamiltonian([-k[0], -k[1], -k[2]]);
        assert!((&hm - h.conjugate()).norm() < 1e-12 * scale, "H(−k) ≠ H(k)* at {k:?}");
        // A Bloch Hamiltonian is periodic in k with the reciprocal lattice up to a unitary gauge:
        // the spectrum at k and k + G agree.
        let hg = model.bloch_hamiltonian([k[0] + 1.0, k[1], k[2] - 2.0]);
        let (mut e1, mut e2): (Vec<f64>, Vec<f64>) =
            (h.symmetric_eigenvalues().iter().cloned().collect(), hg.symmetric_eigenvalues().iter().cloned().collect());
        e1.sort_by(f64::total_cmp);
        e2.sort_by(f64::total_cmp);
        assert!(e1.iter().zip(&e2).all(|(a, b)| (a - b).abs() < 1e-9));
    }
}

fn max_relative_difference(a: &Dos, b: &Dos, per_cell_ratio: f64) -> f64 {
    let peak = a.densities_up.iter().cloned().fold(0.0, f64::max);
    let mut worst: f64 = 0.0;
    for i in 0..300 {
        let x = -15.0 + 0.08 * i as f64;
        worst = worst.max((dos_at(a, x) * per_cell_ratio - dos_at(b, x)).abs() / peak);
    }
    worst
}

#[test]
fn dos_does_not_depend_on_the_cell_chosen() {
    // Supercell: 2×1×1 Si with half the k-points along the doubled axis samples the same k's.
    let si = diamond_si(5.43);
    let mut sc = si.clone();
    sc.lattice[0] = [2.0 * si.lattice[0][0], 2.0 * si.lattice[0][1], 2.0 * si.lattice[0][2]];
    sc.species = vec![14; 4];
    sc.frac_coords = vec![[0.0; 3], [0.125, 0.25, 0.25], [0.5, 0.0, 0.0], [0.625, 0.25, 0.25]];
    let p1 = TightBindingParams { kgrid: Some([6, 6, 6]), sigma: 0.15, ..Default::default() };
    let p2 = TightBindingParams { kgrid: Some([3, 6, 6]), sigma: 0.15, ..Default::default() };
    let d1 = tight_binding_dos(&si, &p1).unwrap();
    let d2 = tight_binding_dos(&sc, &p2).unwrap();
    assert!((d1.efermi - d2.efermi).abs() < 1e-6, "E_F {} vs {}", d1.efermi, d2.efermi);
    let diff = max_relative_difference(&d1, &d2, 2.0);
    assert!(diff < 1e-6, "primitive vs supercell DOS differ by {diff:.2e} of the peak");

    // Rotation: rotate the lattice (rows) of a low-symmetry spd cell; fractional coords unchanged.
    let s = triclinic_mix();
    let (c, sn) = (0.6f64.cos(), 0.6f64.sin());
    let rz = [[c, -sn, 0.0], [sn, c, 0.0], [0.0, 0.0, 1.0]];
    let (c2, s2) = (1.1f64.cos(), 1.1f64.sin());
    let rx = [[1.0, 0.0, 0.0], [0.0, c2, -s2], [0.0, s2, c2]];
    let rotate = |v: [f64; 3], r: [[f64; 3]; 3]| -> [f64; 3] { std::array::from_fn(|i| (0..3).map(|j| r[i][j] * v[j]).sum()) };
    let mut rotated = s.clone();
    for row in rotated.lattice.iter_mut() {
        *row = rotate(rotate(*row, rz), rx);
    }
    let p = TightBindingParams { kgrid: Some([3, 3, 3]), sigma: 0.15, ..Default::default() };
    let a = tight_binding_dos(&s, &p).unwrap();
    let b = tight_binding_dos(&rotated, &p).unwrap();
    assert!((a.efermi - b.efermi).abs() < 1e-8);
    let diff = max_relative_difference(&a, &b, 1.0);
    assert!(diff < 1e-8, "rotated cell DOS differs by {diff:.2e} of the peak");
}

#[test]
fn large_cells_get_fewer_kpoints() {
    let p = TightBindingParams::default();
    let small = TbModel::new(&diamond_si(5.43), &p).unwrap();
    let b_small = bands(&small, &p).unwrap();
    let mut big = diamond_si(5.43);
    // 3×3×3 supercell: 54 atoms, 216 orbitals.
    let mut species = Vec::new();
    let mut frac = Vec::new();
    for i in 0..3 {
        for j in 0..3 {
            for k in 0..3 {
                for f in [[0.0; 3], [0.25, 0.25, 0.25]] {
                    species.push(14);
                    frac.push([(f[0] + i as f64) / 3.0, (f[1] + j as f64) / 3.0, (f[2] + k as f64) / 3.0]);
                }
            }
        }
    }
    big.lattice = big.lattice.map(|r| r.map(|x| 3.0 * x));
    big.species = species;
    big.frac_coords = frac;
    let m_big = TbModel::new(&big, &p).unwrap();
    let grid = multimat::approx::tight_binding::choose_kgrid(&m_big.reciprocal, m_big.num_orbitals(), &p);
    let n_big: usize = grid.iter().product();
    assert!(n_big < b_small.grid.iter().product::<usize>(), "{grid:?} vs {:?}", b_small.grid);
    let work = (n_big as f64 / 2.0).ceil() * (m_big.num_orbitals() as f64).powi(3);
    assert!(work <= p.max_work || grid == [1, 1, 1]);
}

#[test]
fn unknown_elements_are_named_in_the_error() {
    let s = Structure { lattice: fcc(5.0), species: vec![14, 2], frac_coords: vec![[0.0; 3], [0.5, 0.5, 0.5]] };
    let e = format!("{:#}", tight_binding_dos(&s, &TightBindingParams::default()).unwrap_err());
    assert!(e.contains("element He"), "{e}");
    let s = Structure { lattice: fcc(5.0), species: vec![92], frac_coords: vec![[0.0; 3]] };
    let e = format!("{:#}", tight_binding_dos(&s, &TightBindingParams::default()).unwrap_err());
    assert!(e.contains("element U "), "{e}");
}
