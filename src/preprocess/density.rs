//! Charge-density resampling onto the model grid (32³ by default), periodic in all three
//! directions, values kept as ρ·V_cell like CHGCAR (normalisation is the model's job).
//!
//! Two methods (`PreprocessParams::density_resampling`):
//! - `Trilinear` (default): each target point at fractional position (i/Nx, j/Ny, k/Nz) is
//!   interpolated trilinearly from the 8 surrounding source points, indices wrapping around.
//!   Point sampling a sharply peaked density on a coarser grid does not conserve its mean
//!   (the electron count), so the result is then scaled by (source mean / resampled mean). The
//!   count is therefore preserved to rounding, and the shape is the trilinear one. We chose the
//!   rescale over box-averaging because it keeps values at the same physical positions as the
//!   grid the encoder assumes, and it is what "preserve the electron count" means for
//!   ρ·V values (count = mean over the grid).
//! - `Fourier`: band-limited resampling, separable along the three axes: keep the Fourier
//!   components |k| < min(n_src, n_dst)/2 (the unpaired Nyquist term is dropped so the result
//!   stays real) and evaluate them on the new grid. The k = 0 term is kept exactly, so the mean
//!   (electron count) is preserved without rescaling. Cost per axis: lines × |K| × (n_src + n_dst).

use super::{DensityResampling, PreprocessParams};
use crate::material::ChargeDensity;
use anyhow::{bail, Result};

/// Resample `density` to `params.density_grid` (see the module docs). The lattice is unchanged.
pub fn resample(density: &ChargeDensity, params: &PreprocessParams) -> Result<ChargeDensity> {
    let [nx, ny, nz] = density.grid;
    let target = params.density_grid;
    if density.grid.contains(&0) || target.contains(&0) {
        bail!("density grids must be non-empty: source {:?}, target {target:?}", density.grid);
    }
    if density.values.len() != nx * ny * nz {
        bail!("density grid {nx}×{ny}×{nz} needs {} values, has {}", nx * ny * nz, density.values.len());
    }
    if let Some(i) = density.values.iter().position(|v| !v.is_finite()) {
        bail!("density value {i} is not finite ({})", density.values[i]);
    }
    if target == density.grid {
        return Ok(density.clone());
    }
    let values = match params.density_resampling {
        DensityResampling::Trilinear => {
            let mut out = trilinear(&density.values, density.grid, target);
            let source_mean = density.electron_count();
            let new_mean = out.iter().sum::<f64>() / out.len() as f64;
            if source_mean != 0.0 {
                if new_mean.abs() < 1e-300 {
                    bail!("resampled density averages to zero but the source averages to {source_mean}; cannot rescale");
                }
                let scale = source_mean / new_mean;
                out.iter_mut().for_each(|v| *v *= scale);
            }
            out
        }
        DensityResampling::Fourier => fourier(&density.values, density.grid, target),
    };
    Ok(ChargeDensity { lattice: density.lattice, grid: target, values })
}

/// Trilinear periodic interpolation from `src` (C order, `grid`) to `target` (C order).
pub fn trilinear(src: &[f64], grid: [usize; 3], target: [usize; 3]) -> Vec<f64> {
    let [nx, ny, nz] = grid;
    // For each axis and target index: (lower source index, upper source index, weight of upper).
    let axis = |n_src: usize, n_dst: usize| -> Vec<(usize, usize, f64)> {
        (0..n_dst)
            .map(|i| {
                let x = i as f64 * n_src as f64 / n_dst as f64;
                let lo = x.floor();
                let w = x - lo;
                let lo = (lo as usize) % n_src;
                (lo, (lo + 1) % n_src, w)
            })
            .collect()
    };
    let (ax, ay, az) = (axis(nx, target[0]), axis(ny, target[1]), axis(nz, target[2]));
    let at = |i: usize, j: usize, k: usize| src[(i * ny + j) * nz + k];
    let mut out = Vec::with_capacity(target[0] * target[1] * target[2]); // (Nx, Ny, Nz)
    for &(x0, x1, wx) in &ax {
        for &(y0, y1, wy) in &ay {
            for &(z0, z1, wz) in &az {
                let c00 = at(x0, y0, z0) * (1.0 - wz) + at(x0, y0, z1) * wz;
                let c01 = at(x0, y1, z0) * (1.0 - wz) + at(x0, y1, z1) * wz;
                let c10 = at(x1, y0, z0) * (1.0 - wz) + at(x1, y0, z1) * wz;
                let c11 = at(x1, y1, z0) * (1.0 - wz) + at(x1, y1, z1) * wz;
                let c0 = c00 * (1.0 - wy) + c01 * wy;
                let c1 = c10 * (1.0 - wy) + c11 * wy;
                out.push(c0 * (1.0 - wx) + c1 * wx);
            }
        }
    }
    out
}

/// Band-limited resampling of one axis of a C-order array with shape `shape`, axis `axis`, to
/// `n_dst` points; returns the new array (C order, that axis replaced).
fn fourier_axis(src: &[f64], shape: [usize; 3], axis: usize, n_dst: usize) -> Vec<f64> {
    let n_src = shape[axis];
    let mut out_shape = shape;
    out_shape[axis] = n_dst;
    if n_src == n_dst {
        return src.to_vec();
    }
    // Kept frequencies: −m..=m with m = (min(n_src, n_dst) − 1) / 2.
    let m = (n_src.min(n_dst) - 1) / 2;
    let freqs: Vec<f64> = (-(m as isize)..=m as isize).map(|k| k as f64).collect();
    let two_pi = std::f64::consts::TAU;
    // forward[(k, n)] = e^{−2πi k n / n_src}; inverse[(j, k)] = e^{2πi k j / n_dst} / n_src.
    let forward: Vec<(f64, f64)> = freqs
        .iter()
        .flat_map(|&k| (0..n_src).map(move |n| {
            let a = -two_pi * k * n as f64 / n_src as f64;
            (a.cos(), a.sin())
        }))
        .collect();
    let inverse: Vec<(f64, f64)> = (0..n_dst)
        .flat_map(|j| freqs.iter().map(move |&k| {
            let a = two_pi * k * j as f64 / n_dst as f64;
            (a.cos() / n_src as f64, a.sin() / n_src as f64)
        }))
        .collect();
    let strides = [shape[1] * shape[2], shape[2], 1];
    let out_strides = [out_shape[1] * out_shape[2], out_shape[2], 1];
    let mut out = vec![0.0; out_shape[0] * out_shape[1] * out_shape[2]];
    let others: Vec<usize> = (0..3).filter(|&a| a != axis).collect();
    let mut line = vec![0.0; n_src]; // (n_src)
    let mut spectrum = vec![(0.0, 0.0); freqs.len()]; // (2m+1) complex
    for p in 0..shape[others[0]] {
        for q in 0..shape[others[1]] {
            let base = p * strides[others[0]] + q * strides[others[1]];
            let out_base = p * out_strides[others[0]] + q * out_strides[others[1]];
            for (n, l) in line.iter_mut().enumerate() {
                *l = src[base + n * strides[axis]];
            }
            for (ki, s) in spectrum.iter_mut().enumerate() {
                let row = &forward[ki * n_src..(ki + 1) * n_src];
                let (mut re, mut im) = (0.0, 0.0);
                for (x, (c, si)) in line.iter().zip(row) {
                    re += x * c;
                    im += x * si;
                }
                *s = (re, im);
            }
            for j in 0..n_dst {
                let row = &inverse[j * freqs.len()..(j + 1) * freqs.len()];
                // Re[(a + ib)(c + id)] = ac − bd
                let v: f64 = spectrum.iter().zip(row).map(|((a, b), (c, d))| a * c - b * d).sum();
                out[out_base + j * out_strides[axis]] = v;
            }
        }
    }
    out
}

/// Separable band-limited resampling (see module docs).
pub fn fourier(src: &[f64], grid: [usize; 3], target: [usize; 3]) -> Vec<f64> {
    let mut values = src.to_vec();
    let mut shape = grid;
    for axis in 0..3 {
        values = fourier_axis(&values, shape, axis, target[axis]);
        shape[axis] = target[axis];
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smooth_density(grid: [usize; 3]) -> ChargeDensity {
        // A positive, smooth periodic function with mean exactly 5 (the cosines average to 0).
        let [nx, ny, nz] = grid;
        let tau = std::f64::consts::TAU;
        let mut values = Vec::new();
        for i in 0..nx {
            for j in 0..ny {
                for k in 0..nz {
                    let (x, y, z) = (i as f64 / nx as f64, j as f64 / ny as f64, k as f64 / nz as f64);
                    values.push(5.0 + (tau * x).cos() + 0.5 * (tau * (y + 2.0 * z)).sin());
                }
            }
        }
        ChargeDensity { lattice: [[3.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 5.0]], grid, values }
    }

    #[test]
    fn both_methods_preserve_the_count_and_reproduce_a_smooth_field() {
        let src = smooth_density([12, 10, 14]);
        let exact = smooth_density([8, 16, 6]);
        for method in [DensityResampling::Trilinear, DensityResampling::Fourier] {
            let params = PreprocessParams { density_grid: [8, 16, 6], density_resampling: method, ..Default::default() };
            let out = resample(&src, &params).unwrap();
            assert_eq!(out.grid, [8, 16, 6]);
            assert!((out.electron_count() - 5.0).abs() < 1e-9, "{method:?}: {}", out.electron_count());
            let max_err = out.values.iter().zip(&exact.values).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            // Fourier is exact for a band-limited field; trilinear errs by O(h²·f'') ≈ 0.1 here.
            let tol = if method == DensityResampling::Fourier { 1e-9 } else { 0.15 };
            assert!(max_err < tol, "{method:?}: max error {max_err}");
        }
    }

    #[test]
    fn shape_mismatch_and_nonfinite_are_errors() {
        let mut d = smooth_density([4, 4, 4]);
        d.values.pop();
        assert!(resample(&d, &PreprocessParams::default()).unwrap_err().to_string().contains("needs 64 values"));
        let mut d = smooth_density([4, 4, 4]);
        d.values[3] = f64::NAN;
        assert!(resample(&d, &PreprocessParams::default()).is_err());
    }
}
