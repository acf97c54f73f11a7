//! PotNet's infinite lattice sums checked against physics and against an independent direct
//! summation: Madelung constants of five ionic structures (Coulomb), independence of the Ewald
//! splitting parameter, and agreement with a windowed direct sum (Coulomb, London, Pauli).

use multimat::crystal::lattice::{Cell, Mat3, Vec3};
use multimat::crystal::lattice_sums::{all_pair_sums, LatticeSumPlan, PairSums};
use multimat::material::Structure;
use std::f64::consts::PI;

fn inverse(m: &Mat3) -> Mat3 {
    let r = multimat::crystal::lattice::reciprocal(m); // rows b*_k with a_i·b*_k = δ
    // cart = f · m  ⇒ f_k = cart · b*_k, i.e. inverse(m) has b*_k as columns.
    [[r[0][0], r[1][0], r[2][0]], [r[0][1], r[1][1], r[2][1]], [r[0][2], r[1][2], r[2][2]]]
}

fn from_cart(lattice: Mat3, species: &[u8], cart: &[Vec3]) -> Structure {
    let inv = inverse(&lattice);
    let frac_coords = cart.iter().map(|&c| multimat::crystal::lattice::vec_mat(c, &inv)).collect();
    Structure { lattice, species: species.to_vec(), frac_coords }
}

fn fcc(a: f64) -> Mat3 {
    [[0.0, a / 2.0, a / 2.0], [a / 2.0, 0.0, a / 2.0], [a / 2.0, a / 2.0, 0.0]]
}

/// Electrostatic energy of the cell, ½ Σ_i Σ_j q_i q_j C_ij, from the stored Coulomb sums.
fn coulomb_energy(s: &Structure, charges: &[f64]) -> f64 {
    let cell = Cell::new(s).unwrap();
    let plan = LatticeSumPlan::new(&cell, 1.0, true, 1e-10);
    let sums = all_pair_sums(&cell, &plan);
    let n = charges.len();
    let mut e = 0.0;
    for i in 0..n {
        for j in 0..n {
            e += 0.5 * charges[i] * charges[j] * sums[i * n + j].coulomb;
        }
    }
    e
}

/// Madelung constants in the usual normalisation: E per formula unit = −M · |z₊ z₋| / d, with d
/// the nearest cation–anion distance (values: e.g. Kittel, and Johnston's table via Wikipedia
/// "Madelung constant", which gives CaF₂ 2.51939 referred to |z₊z₋| = 2).
#[test]
fn madelung_constants_of_ionic_structures() {
    let a = 5.64; // any lattice constant: M is scale free
    // Rock salt, primitive fcc, Cl at (a/2, 0, 0).
    let nacl = from_cart(fcc(a), &[11, 17], &[[0.0; 3], [a / 2.0, 0.0, 0.0]]);
    let m = -coulomb_energy(&nacl, &[1.0, -1.0]) * (a / 2.0);
    assert!((m - 1.747565).abs() < 1e-6, "NaCl Madelung {m}");

    // CsCl, simple cubic, d = a√3/2.
    let cscl = from_cart([[a, 0.0, 0.0], [0.0, a, 0.0], [0.0, 0.0, a]], &[55, 17], &[[0.0; 3], [a / 2.0; 3]]);
    let m = -coulomb_energy(&cscl, &[1.0, -1.0]) * (a * 3f64.sqrt() / 2.0);
    assert!((m - 1.762675).abs() < 1e-6, "CsCl Madelung {m}");

    // Zinc blende, d = a√3/4.
    let zns = from_cart(fcc(a), &[30, 16], &[[0.0; 3], [a / 4.0; 3]]);
    let m = -coulomb_energy(&zns, &[1.0, -1.0]) * (a * 3f64.sqrt() / 4.0);
    assert!((m - 1.638055).abs() < 1e-6, "zinc blende Madelung {m}");

    // Ideal wurtzite: c/a = √(8/3), u = 3/8, d = u c. Literature: 1.641.
    let (ah, c, u) = (3.8, 3.8 * (8.0f64 / 3.0).sqrt(), 0.375);
    let hex = [[ah, 0.0, 0.0], [-ah / 2.0, ah * 3f64.sqrt() / 2.0, 0.0], [0.0, 0.0, c]];
    let wz = Structure {
        lattice: hex,
        species: vec![30, 30, 16, 16],
        frac_coords: vec![[1.0 / 3.0, 2.0 / 3.0, 0.0], [2.0 / 3.0, 1.0 / 3.0, 0.5], [1.0 / 3.0, 2.0 / 3.0, u], [2.0 / 3.0, 1.0 / 3.0, 0.5 + u]],
    };
    let m = -coulomb_energy(&wz, &[1.0, 1.0, -1.0, -1.0]) / 2.0 * (u * c);
    assert!((m - 1.641).abs() < 5e-4, "wurtzite Madelung {m}");

    // Fluorite CaF₂: Ca at 0, F at ±(a/4)(1,1,1); d = a√3/4, |z₊z₋| = 2. Literature: 2.519.
    let caf2 = from_cart(fcc(a), &[20, 9, 9], &[[0.0; 3], [a / 4.0; 3], [-a / 4.0; 3]]);
    let m = -coulomb_energy(&caf2, &[2.0, -1.0, -1.0]) * (a * 3f64.sqrt() / 4.0) / 2.0;
    assert!((m - 2.519).abs() < 5e-4, "fluorite Madelung {m}");
}

fn triclinic() -> Structure {
    Structure {
        lattice: [[4.1, 0.2, -0.3], [1.3, 3.7, 0.4], [-0.8, 0.9, 5.2]],
        species: vec![8, 26, 3],
        frac_coords: vec![[0.1, 0.2, 0.3], [0.55, 0.45, 0.8], [0.9, 0.05, 0.5]],
    }
}

#[test]
fn sums_do_not_depend_on_the_splitting() {
    let s = triclinic();
    let cell = Cell::new(&s).unwrap();
    for (i, j) in [(0, 0), (0, 1), (2, 1)] {
        let r = multimat::crystal::lattice::sub(cell.cart[j], cell.cart[i]);
        let base = LatticeSumPlan::with_splitting(&cell, 1.3, true, 1e-10, 1.0).pair_sums(r, i == j);
        for scale in [0.6, 1.7] {
            let other = LatticeSumPlan::with_splitting(&cell, 1.3, true, 1e-10, scale).pair_sums(r, i == j);
            assert!((other.coulomb - base.coulomb).abs() < 1e-10 * base.coulomb.abs().max(1.0), "C({i},{j}) η×{scale}");
            assert!((other.london - base.london).abs() < 1e-10 * base.london.abs(), "L({i},{j}) η×{scale}");
            assert!((other.pauli - base.pauli).abs() < 1e-10 * base.pauli.abs(), "P({i},{j}) η×{scale}");
        }
    }
}

// ---- Independent direct summation ------------------------------------------------------------
//
// Σ_T f(|r+T|) = Σ_T f·w + Σ_T f·(1−w) with the smooth window w(ρ) = ½ erfc((ρ − R₀)/σ). The
// first sum is finite and summed image by image; the second is a smooth, slowly varying
// function summed over a lattice, equal to its continuum integral (1/V)∫f(1−w)d³ρ up to Fourier
// terms of relative order e^{−k²σ²/4} at the shortest reciprocal vector k (σ is chosen per
// lattice so that this is < 1e-13). For Coulomb the continuum integral of the full 1/ρ
// is the k = 0 term the neutralising background removes, which leaves
// C = Σ_T w/ρ − (4π/V)∫₀^∞ w ρ dρ. No reciprocal lattice, no incomplete gamma functions.

struct Window {
    r0: f64,
    sigma: f64,
}

impl Window {
    fn for_lattice(lat: &Mat3) -> Window {
        let recip = multimat::crystal::lattice::reciprocal(lat);
        let mut k_min = f64::INFINITY;
        for a in -2i32..=2 {
            for b in -2i32..=2 {
                for c in -2i32..=2 {
                    if (a, b, c) != (0, 0, 0) {
                        let k = multimat::crystal::lattice::vec_mat([a as f64, b as f64, c as f64], &recip);
                        k_min = k_min.min(2.0 * PI * multimat::crystal::lattice::norm(k));
                    }
                }
            }
        }
        let sigma = 11.5 / k_min; // k²σ²/4 ≥ 33
        Window { r0: 9.0 * sigma, sigma }
    }
    fn w(&self, rho: f64) -> f64 {
        0.5 * libm::erfc((rho - self.r0) / self.sigma)
    }
}

#[derive(Default)]
struct Neumaier {
    sum: f64,
    compensation: f64,
}

impl Neumaier {
    fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.compensation += (self.sum - t) + x;
        } else {
            self.compensation += (x - t) + self.sum;
        }
        self.sum = t;
    }
    fn value(&self) -> f64 {
        self.sum + self.compensation
    }
}

/// Composite Simpson on [a, b] with n (even) intervals.
fn simpson(f: impl Fn(f64) -> f64, a: f64, b: f64, n: usize) -> f64 {
    let h = (b - a) / n as f64;
    let mut s = Neumaier::default();
    s.add(f(a) + f(b));
    for k in 1..n {
        s.add(f(a + k as f64 * h) * if k % 2 == 1 { 4.0 } else { 2.0 });
    }
    s.value() * h / 3.0
}

fn direct_sums(s: &Structure, r: Vec3, same_site: bool, alpha: f64, pauli_origin: bool) -> PairSums {
    let lat = s.lattice;
    let v = multimat::crystal::lattice::det(&lat).abs();
    let win = Window::for_lattice(&lat);
    let window = |x: f64| win.w(x);
    let rmax = win.r0 + 10.0 * win.sigma;
    let recip = multimat::crystal::lattice::reciprocal(&lat);
    let h: Vec<i32> = (0..3).map(|k| ((rmax + 20.0) * multimat::crystal::lattice::norm(recip[k])).ceil() as i32 + 1).collect();
    // Compensated (Neumaier) sums: millions of terms with a large cancelling background.
    let (mut c, mut l, mut p) = (Neumaier::default(), Neumaier::default(), Neumaier::default());
    for a in -h[0]..=h[0] {
        for b in -h[1]..=h[1] {
            for cc in -h[2]..=h[2] {
                let t = multimat::crystal::lattice::vec_mat([a as f64, b as f64, cc as f64], &lat);
                let d = multimat::crystal::lattice::norm(multimat::crystal::lattice::add(r, t));
                if same_site && d < 1e-9 {
                    if pauli_origin {
                        p.add(1.0);
                    }
                    continue;
                }
                if d > rmax {
                    continue;
                }
                let w = window(d);
                c.add(w / d);
                l.add(w / d.powi(6));
                p.add((-alpha * d).exp());
            }
        }
    }
    let lo = win.r0 - 8.0 * win.sigma; // w = 1 − O(1e-29) below
    let c_bg = lo * lo / 2.0 + simpson(|x| window(x) * x, lo, rmax, 200_000);
    c.add(-4.0 * PI / v * c_bg);
    let l_tail = simpson(|x| (1.0 - window(x)) / x.powi(4), lo, rmax, 200_000) + 1.0 / (3.0 * rmax.powi(3));
    l.add(4.0 * PI / v * l_tail);
    PairSums { coulomb: c.value(), london: l.value(), pauli: p.value() }
}

fn assert_close(name: &str, got: f64, want: f64, rel: f64, floor: f64) {
    let err = (got - want).abs();
    assert!(err <= rel * want.abs().max(floor), "{name}: got {got:.15e}, direct {want:.15e}, |Δ| = {err:.2e}");
}

fn check_against_direct(s: &Structure, label: &str) {
    let cell = Cell::new(s).unwrap();
    // The reference convention's α (α₀ = 3, α = α₀/√(V^{1/3})).
    check_against_direct_with_alpha(s, label, 3.0 / cell.volume.cbrt().sqrt());
}

fn check_against_direct_with_alpha(s: &Structure, label: &str, alpha: f64) {
    let cell = Cell::new(s).unwrap();
    let plan = LatticeSumPlan::new(&cell, alpha, true, 1e-8);
    let sums = all_pair_sums(&cell, &plan);
    let n = s.num_sites();
    // i ≤ j: the sums are symmetric in i ↔ j (checked in `structure_factor_path_matches_plain_path`).
    for i in 0..n.min(3) {
        for j in i..n.min(3) {
            let r = multimat::crystal::lattice::sub(s.cart(j), s.cart(i));
            let want = direct_sums(s, r, i == j, alpha, true);
            let got = sums[i * n + j];
            let tag = format!("{label} pair ({i},{j})");
            // Coulomb can be near zero: relative to max(|C|, 1 Å⁻¹).
            assert_close(&format!("{tag} Coulomb"), got.coulomb, want.coulomb, 1e-10, 1.0);
            assert_close(&format!("{tag} London"), got.london, want.london, 1e-10, 0.0);
            assert_close(&format!("{tag} Pauli"), got.pauli, want.pauli, 1e-10, 0.0);
        }
    }
}

#[test]
fn sums_agree_with_windowed_direct_summation() {
    check_against_direct(&triclinic(), "triclinic");
    // A slow Pauli decay (the paper's α₀/V^{1/3} convention gives α ≈ 0.3 Å⁻¹ for ~1000 Å³).
    check_against_direct_with_alpha(&triclinic(), "triclinic α = 0.3", 0.3);
    // A single-atom cell: only the self pair.
    let one = Structure { lattice: [[2.9, 0.0, 0.0], [0.4, 3.1, 0.0], [0.2, -0.5, 3.3]], species: vec![29], frac_coords: vec![[0.3, 0.3, 0.3]] };
    check_against_direct(&one, "one-atom");
    // A long, thin cell (c ≫ a, b).
    let thin = Structure {
        lattice: [[3.0, 0.0, 0.0], [0.0, 3.2, 0.0], [0.0, 0.0, 10.0]],
        species: vec![6, 8],
        frac_coords: vec![[0.0, 0.0, 0.0], [0.5, 0.5, 0.37]],
    };
    check_against_direct(&thin, "thin");
}

#[test]
fn structure_factor_path_matches_plain_path() {
    let s = triclinic();
    let cell = Cell::new(&s).unwrap();
    let plan = LatticeSumPlan::new(&cell, 1.1, false, 1e-8);
    let fast = all_pair_sums(&cell, &plan);
    let n = s.num_sites();
    for i in 0..n {
        for j in 0..n {
            // Use the caller's (unwrapped) positions: the sums are periodic.
            let plain = plan.pair_sums(multimat::crystal::lattice::sub(s.cart(j), s.cart(i)), i == j);
            let f = fast[i * n + j];
            assert!((plain.coulomb - f.coulomb).abs() < 1e-12 * plain.coulomb.abs().max(1.0));
            assert!((plain.london - f.london).abs() < 1e-12 * plain.london.abs());
            assert!((plain.pauli - f.pauli).abs() < 1e-12 * plain.pauli.abs());
            let t = fast[j * n + i];
            assert!((t.coulomb - f.coulomb).abs() < 1e-12 * f.coulomb.abs().max(1.0), "C not symmetric");
            assert!((t.london - f.london).abs() < 1e-12 * f.london && (t.pauli - f.pauli).abs() < 1e-12 * f.pauli);
        }
    }
}
