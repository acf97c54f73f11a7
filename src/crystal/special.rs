//! Special functions for the Ewald-type lattice sums: the complementary error function and the
//! upper incomplete gamma function Γ(s, x) for the integer and half-integer orders the sums need
//! (s = 1/2 for Coulomb, s = 3 and s = −3/2 for London dispersion).
//!
//! `erfc` comes from the `libm` crate (a port of FreeBSD's msun, < 1 ulp), which is more
//! trustworthy than a re-derived rational approximation. Γ(s, x) is ours: for x ≥ 1.5 the Legendre
//! continued fraction (evaluated with the modified Lentz method), which has no cancellation for
//! negative s; for small x the exact recurrence down from Γ(1/2, x) = √π erfc(√x), where the
//! power term dominates and the recurrence is stable. Tested against 20-digit values from mpmath.

use std::f64::consts::PI;

/// Complementary error function erfc(x) = 1 − erf(x).
#[inline]
pub fn erfc(x: f64) -> f64 {
    libm::erfc(x)
}

/// Upper incomplete gamma Γ(s, x) = ∫ₓ^∞ t^{s−1} e^{−t} dt for x > 0 and s a multiple of 1/2
/// (given as `twice_s` = 2s, e.g. −3 for s = −3/2). Negative orders are allowed (x > 0).
/// Relative accuracy ≈ 1e-14 over the range the lattice sums use.
pub fn upper_gamma_half(twice_s: i32, x: f64) -> f64 {
    debug_assert!(x > 0.0, "Γ(s, x) needs x > 0, got {x}");
    let s = twice_s as f64 / 2.0;
    if x >= 1.5 {
        return upper_gamma_continued_fraction(s, x);
    }
    // Small x: start from an exactly known order with the same fractional part and step with
    // Γ(s+1, x) = s Γ(s, x) + x^s e^{−x} (up) or Γ(s, x) = (Γ(s+1, x) − x^s e^{−x}) / s (down).
    let (mut order2, mut value) = if twice_s % 2 == 0 {
        (2, (-x).exp()) // Γ(1, x) = e^{−x}
    } else {
        (1, PI.sqrt() * erfc(x.sqrt())) // Γ(1/2, x) = √π erfc(√x)
    };
    while order2 < twice_s {
        let a = order2 as f64 / 2.0;
        value = a * value + x.powf(a) * (-x).exp();
        order2 += 2;
    }
    while order2 > twice_s {
        let a = order2 as f64 / 2.0 - 1.0; // Γ(a, x) from Γ(a + 1, x)
        if a == 0.0 {
            // Γ(0, x) = E₁(x): not needed by the sums (integer orders here are ≥ 1).
            return f64::NAN;
        }
        value = (value - x.powf(a) * (-x).exp()) / a;
        order2 -= 2;
    }
    value
}

/// Γ(−3/2, x) for x > 0 by the exact recurrence down from Γ(1/2, x) = √π erfc(√x):
/// Γ(−1/2, x) = 2(x^{−1/2}e^{−x} − Γ(1/2, x)), Γ(−3/2, x) = (2/3)(x^{−3/2}e^{−x} − Γ(−1/2, x)).
/// One exp and one erfc instead of a continued fraction (the lattice-sum plans evaluate it for
/// hundreds of k vectors). For large x the subtractions cancel: the relative error grows like
/// ~x² ε (3e-13 at x = 40), harmless where, as in the London sum, the term is then negligible.
pub fn upper_gamma_neg_three_halves(x: f64) -> f64 {
    let e = (-x).exp();
    let sx = x.sqrt();
    let g_half = PI.sqrt() * erfc(sx);
    let g_m_half = 2.0 * (e / sx - g_half);
    (2.0 / 3.0) * (e / (x * sx) - g_m_half)
}

/// Legendre's continued fraction Γ(s, x) = e^{−x} x^s / (x + 1 − s − 1·(1 − s)/(x + 3 − s − …)),
/// modified Lentz evaluation; converges quickly for x ≳ 1 and any real s.
fn upper_gamma_continued_fraction(s: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut b = x + 1.0 - s;
    let mut c = 1.0 / TINY;
    let mut d = 1.0 / b;
    let mut h = d;
    for i in 1..500 {
        let an = -(i as f64) * (i as f64 - s);
        b += 2.0;
        d = an * d + b;
        if d.abs() < TINY {
            d = TINY;
        }
        c = b + an / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (-x + s * x.ln()).exp() * h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(a: f64, b: f64) -> f64 {
        (a - b).abs() / b.abs()
    }

    /// Reference values: mpmath 1.4.1 at 40 significant digits, `mpmath.gammainc(s, x, inf)` and
    /// `mpmath.erfc(x)`, printed to 20 digits.
    #[test]
    fn upper_gamma_matches_mpmath() {
        let table: &[(i32, f64, f64)] = &[
            (1, 0.001, 1.7092293732301664626),
            (1, 0.7, 0.41958160437717424778),
            (1, 3.0, 0.02535650932346344319),
            (1, 40.0, 6.6362398267956972838e-19),
            (-1, 0.001, 59.763880515942196324),
            (-1, 0.1, 3.4017693366916152574),
            (-1, 1.5, 0.069204999317904974341),
            (-1, 10.0, 1.2609042613241570681e-6),
            (-3, 0.001, 21020.937167123547847),
            (-3, 0.1, 16.8078014631359345),
            (-3, 0.7, 0.33333434409661185846),
            (-3, 1.5, 0.034834450616085086418),
            (-3, 3.0, 0.0018702598486750916567),
            (-3, 10.0, 1.1651171685802436755e-7),
            (-3, 40.0, 3.9565643509360977569e-22),
            (6, 0.001, 1.9999999996669165667),
            (6, 0.7, 1.931716831748583023),
            (6, 3.0, 0.84638016225368703065),
            (6, 10.0, 0.0055387914310231518873),
            (6, 40.0, 7.1457318574004526901e-15),
        ];
        for &(twice_s, x, want) in table {
            let got = upper_gamma_half(twice_s, x);
            assert!(rel(got, want) < 1e-13, "Γ({}, {x}) = {got}, mpmath {want}", twice_s as f64 / 2.0);
        }
    }

    #[test]
    fn fast_gamma_minus_three_halves_matches_mpmath() {
        // Same mpmath values as above; tolerance grows with x (cancellation, see the doc).
        for &(x, want) in &[
            (0.001, 21020.937167123547847),
            (0.1, 16.8078014631359345),
            (0.7, 0.33333434409661185846),
            (1.5, 0.034834450616085086418),
            (3.0, 0.0018702598486750916567),
            (10.0, 1.1651171685802436755e-7),
            (40.0, 3.9565643509360977569e-22),
        ] {
            let got = upper_gamma_neg_three_halves(x);
            assert!(rel(got, want) < 1e-14 * (1.0 + x * x), "Γ(−3/2, {x}) = {got}, mpmath {want}");
        }
    }

    #[test]
    fn erfc_matches_mpmath() {
        for &(x, want) in &[
            (0.1, 0.8875370839817151016),
            (1.0, 0.15729920705028513066),
            (2.5, 0.00040695201744495893956),
            (5.0, 1.5374597944280348502e-12),
            (10.0, 2.088487583762544757e-45),
        ] {
            assert!(rel(erfc(x), want) < 1e-14, "erfc({x})");
        }
    }

    #[test]
    fn both_branches_agree_at_the_switch() {
        // Continued fraction vs recurrence at x = 1.5, where the code switches.
        for twice_s in [-3, -1, 1, 6] {
            let s = twice_s as f64 / 2.0;
            let cf = upper_gamma_continued_fraction(s, 1.5);
            let below = upper_gamma_half(twice_s, 1.5 - 1e-12);
            assert!(rel(cf, below) < 1e-11, "s = {s}: {cf} vs {below}");
        }
    }
}
