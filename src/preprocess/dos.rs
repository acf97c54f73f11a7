//! DOS preprocessing as the MultiMat reference code does it (its `generate_dos_bandgap.py`,
//! read for facts): energies shifted by E_F, the spin-up channel by default, NaNs replaced by
//! the average of their closest non-NaN neighbours, and a fixed number of points (601).
//!
//! Length: the reference maps MP's three DOS lengths to 601 by special cases (301 → linear
//! upsampling ×2; 601 → unchanged; 2001 → every 3rd point with every 10th of those dropped, an
//! uneven grid). We keep its rule for a DOS that already has `dos_points` points (its grid is
//! kept as is — so the reference's own 601-point outputs, like `mp-multimodal/dos`, pass through
//! unchanged) and resample *any other* length by linear interpolation onto an evenly spaced
//! grid spanning the material's own energy range [E_min − E_F, E_max − E_F]. For MP's evenly
//! spaced 301-point DOS this is exactly the reference's upsampling; for 2001 points it takes an
//! even grid instead of the uneven decimation. The DOS encoder receives the energies alongside
//! the densities, so the grid is never implicit.
//!
//! Repair: a non-finite density (NaN, ±inf) takes the value of the closest finite neighbour —
//! the average of both when the closest finite points on either side are equally far, as in the
//! reference (without its wrap-around at the array ends). Repairs are counted in the output.

use super::{DosSpin, PreprocessParams};
use crate::material::{Dos, ProcessedDos};
use anyhow::{bail, Result};

/// Shift, select the spin channel, repair non-finite values and resample to `params.dos_points`.
pub fn process(dos: &Dos, params: &PreprocessParams) -> Result<ProcessedDos> {
    let n_out = params.dos_points;
    if n_out < 2 {
        bail!("dos_points must be at least 2, got {n_out}");
    }
    let n = dos.energies.len();
    if n < 2 {
        bail!("DOS has {n} energy points; at least 2 are needed");
    }
    if dos.densities_up.len() != n {
        bail!("DOS has {n} energies but {} spin-up densities", dos.densities_up.len());
    }
    if !dos.efermi.is_finite() {
        bail!("DOS Fermi energy is not finite ({})", dos.efermi);
    }
    for (i, w) in dos.energies.windows(2).enumerate() {
        if !(w[0].is_finite() && w[1].is_finite()) || w[1] <= w[0] {
            bail!("DOS energies must be finite and strictly increasing; points {i} and {} are {} and {}", i + 1, w[0], w[1]);
        }
    }
    let mut densities: Vec<f64> = match (params.dos_spin, &dos.densities_down) {
        (DosSpin::Sum, Some(down)) => {
            if down.len() != n {
                bail!("DOS has {n} energies but {} spin-down densities", down.len());
            }
            dos.densities_up.iter().zip(down).map(|(u, d)| u + d).collect()
        }
        _ => dos.densities_up.clone(),
    };
    let repaired_points = repair_nonfinite(&mut densities)?;

    // (n) energies relative to E_F, then the even output grid over the same range.
    let shifted: Vec<f64> = dos.energies.iter().map(|e| e - dos.efermi).collect();
    if n == n_out {
        // Already the model's length: keep the grid (the reference's rule; see module docs).
        return Ok(ProcessedDos {
            energies: shifted.iter().map(|&e| e as f32).collect(),
            densities: densities.iter().map(|&d| d as f32).collect(),
            repaired_points,
        });
    }
    let (lo, hi) = (shifted[0], shifted[n - 1]);
    let step = (hi - lo) / (n_out - 1) as f64;
    let mut energies = Vec::with_capacity(n_out); // (n_out)
    let mut values = Vec::with_capacity(n_out); // (n_out)
    let mut seg = 0usize; // shifted[seg] ≤ e ≤ shifted[seg + 1]
    for j in 0..n_out {
        // The last point is pinned to `hi` so rounding cannot push it outside the data.
        let e = if j == n_out - 1 { hi } else { lo + step * j as f64 };
        while seg + 2 < n && shifted[seg + 1] < e {
            seg += 1;
        }
        let (e0, e1) = (shifted[seg], shifted[seg + 1]);
        let t = ((e - e0) / (e1 - e0)).clamp(0.0, 1.0);
        values.push(((1.0 - t) * densities[seg] + t * densities[seg + 1]) as f32);
        energies.push(e as f32);
    }
    Ok(ProcessedDos { energies, densities: values, repaired_points })
}

/// Replace each non-finite value by its closest finite neighbour(s) (see module docs); returns
/// how many were replaced. All values non-finite → error.
pub fn repair_nonfinite(values: &mut [f64]) -> Result<usize> {
    let bad: Vec<usize> = (0..values.len()).filter(|&i| !values[i].is_finite()).collect();
    if bad.is_empty() {
        return Ok(0);
    }
    if bad.len() == values.len() {
        bail!("all {} DOS values are NaN or infinite; nothing to repair from", values.len());
    }
    let original = values.to_vec();
    let finite = |i: isize| -> Option<f64> {
        (i >= 0 && (i as usize) < original.len()).then(|| original[i as usize]).filter(|v| v.is_finite())
    };
    for &i in &bad {
        let i = i as isize;
        let mut k = 1isize;
        loop {
            match (finite(i - k), finite(i + k)) {
                (Some(a), Some(b)) => {
                    values[i as usize] = 0.5 * (a + b);
                    break;
                }
                (Some(a), None) | (None, Some(a)) => {
                    values[i as usize] = a;
                    break;
                }
                (None, None) => k += 1,
            }
        }
    }
    Ok(bad.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dos(energies: Vec<f64>, up: Vec<f64>, down: Option<Vec<f64>>, efermi: f64) -> Dos {
        Dos { energies, densities_up: up, densities_down: down, efermi }
    }

    #[test]
    fn linear_function_is_resampled_exactly_and_shifted() {
        // ρ(E) = 2E + 1 on an uneven grid; resampling a linear function must be exact.
        let e = vec![-3.0, -2.5, -1.0, 0.0, 0.7, 2.0];
        let d = dos(e.clone(), e.iter().map(|x| 2.0 * x + 1.0).collect(), None, 0.5);
        let params = PreprocessParams { dos_points: 11, ..Default::default() };
        let p = process(&d, &params).unwrap();
        assert_eq!(p.energies.len(), 11);
        assert!((p.energies[0] - -3.5).abs() < 1e-6 && (p.energies[10] - 1.5).abs() < 1e-6);
        for (en, v) in p.energies.iter().zip(&p.densities) {
            let absolute = *en as f64 + 0.5;
            assert!((*v as f64 - (2.0 * absolute + 1.0)).abs() < 1e-5, "{en} {v}");
        }
        assert_eq!(p.repaired_points, 0);
    }

    #[test]
    fn a_dos_of_the_target_length_keeps_its_grid() {
        let d = dos(vec![0.0, 0.1, 0.3, 0.4], vec![1.0, f64::NAN, 3.0, 4.0], None, 0.1);
        let p = process(&d, &PreprocessParams { dos_points: 4, ..Default::default() }).unwrap();
        let want = [-0.1f32, 0.0, 0.2, 0.3];
        for (g, w) in p.energies.iter().zip(want) {
            assert!((g - w).abs() < 1e-7, "{:?}", p.energies);
        }
        assert_eq!(p.densities, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(p.repaired_points, 1);
    }

    #[test]
    fn spin_selection() {
        let d = dos(vec![0.0, 1.0], vec![1.0, 1.0], Some(vec![2.0, 2.0]), 0.0);
        let up = process(&d, &PreprocessParams { dos_points: 2, ..Default::default() }).unwrap();
        assert_eq!(up.densities, vec![1.0, 1.0]);
        let sum = process(&d, &PreprocessParams { dos_points: 2, dos_spin: DosSpin::Sum, ..Default::default() }).unwrap();
        assert_eq!(sum.densities, vec![3.0, 3.0]);
    }

    #[test]
    fn nan_repair_matches_the_reference_rule() {
        let mut v = vec![f64::NAN, 1.0, f64::NAN, 3.0, f64::INFINITY, f64::NAN, f64::NAN, 10.0, f64::NAN];
        assert_eq!(repair_nonfinite(&mut v).unwrap(), 6);
        // [0] ← right neighbour; [2] ← mean(1, 3); [4] ← left 3 (closest); [5] ← 3 at distance 2
        // vs 10 at distance 2 → mean 6.5; [6] ← 10 (distance 1); [8] ← 10.
        assert_eq!(v, vec![1.0, 1.0, 2.0, 3.0, 3.0, 6.5, 10.0, 10.0, 10.0]);
        let mut all_nan = vec![f64::NAN; 4];
        assert!(repair_nonfinite(&mut all_nan).unwrap_err().to_string().contains("all 4"));
    }

    #[test]
    fn nan_laden_dos_is_repaired_and_counted_all_nan_is_an_error() {
        let d = dos(vec![0.0, 1.0, 2.0, 3.0], vec![0.0, f64::NAN, 2.0, f64::NAN], None, 0.0);
        let p = process(&d, &PreprocessParams { dos_points: 4, ..Default::default() }).unwrap();
        assert_eq!(p.repaired_points, 2);
        assert!(p.densities.iter().all(|v| v.is_finite()));
        let bad = dos(vec![0.0, 1.0], vec![f64::NAN, f64::NAN], None, 0.0);
        assert!(process(&bad, &PreprocessParams::default()).is_err());
        let unsorted = dos(vec![0.0, 2.0, 1.0], vec![0.0; 3], None, 0.0);
        assert!(process(&unsorted, &PreprocessParams::default()).unwrap_err().to_string().contains("increasing"));
    }
}
