//! Preprocessing as the paper's reference code does it: DOS relative to E_F resampled to a
//! fixed length, charge densities resampled periodically to 32³ with the electron count preserved.
//! The parameters are part of every shard's attributes and every checkpoint's metadata.

pub mod density;
pub mod dos;

use serde::{Deserialize, Serialize};

/// Which spin channel(s) of a spin-polarised DOS to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DosSpin {
    /// Spin-up channel only (the reference code's choice).
    Up,
    /// Sum of both channels.
    Sum,
}

/// How charge densities are resampled onto the model grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DensityResampling {
    /// Trilinear interpolation on the periodic grid, rescaled so the electron count is exact.
    Trilinear,
    /// Fourier interpolation/truncation (band-limited; preserves the mean exactly).
    Fourier,
}

/// All preprocessing parameters; defaults are the paper's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreprocessParams {
    /// Number of points a DOS is resampled to (601 in the reference code).
    pub dos_points: usize,
    pub dos_spin: DosSpin,
    /// Grid the charge density is resampled to (32³ in the paper).
    pub density_grid: [usize; 3],
    pub density_resampling: DensityResampling,
}

impl Default for PreprocessParams {
    fn default() -> Self {
        PreprocessParams {
            dos_points: 601,
            dos_spin: DosSpin::Up,
            density_grid: [32, 32, 32],
            density_resampling: DensityResampling::Trilinear,
        }
    }
}
