//! Regression metrics in the target's units, and the per-component target standardisation.
//!
//! For vector targets (an elastic tensor flattened to 36 values) MAE and RMSE average over every
//! component of every material; R² is computed per component and averaged over the components
//! whose test values vary (scikit-learn's `r2_score` default, "uniform_average", except that
//! constant components are left out instead of scoring 1 or 0).

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub mae: f64,
    pub rmse: f64,
    /// NaN when no component varies (serialised as null).
    pub r2: f64,
    pub n: usize,
}

/// Metrics of `pred` against `truth`, both (n, width) row-major.
pub fn regression_metrics(pred: &[f64], truth: &[f64], width: usize) -> Metrics {
    assert_eq!(pred.len(), truth.len(), "metrics: {} predictions for {} targets", pred.len(), truth.len());
    let n = if width == 0 { 0 } else { truth.len() / width };
    if n == 0 {
        return Metrics { mae: f64::NAN, rmse: f64::NAN, r2: f64::NAN, n: 0 };
    }
    let count = (n * width) as f64;
    let mae = pred.iter().zip(truth).map(|(p, t)| (p - t).abs()).sum::<f64>() / count;
    let rmse = (pred.iter().zip(truth).map(|(p, t)| (p - t) * (p - t)).sum::<f64>() / count).sqrt();
    let mut r2_sum = 0.0;
    let mut r2_terms = 0usize;
    for c in 0..width {
        let mean = (0..n).map(|i| truth[i * width + c]).sum::<f64>() / n as f64;
        let ss_tot: f64 = (0..n).map(|i| (truth[i * width + c] - mean).powi(2)).sum();
        let ss_res: f64 = (0..n).map(|i| (truth[i * width + c] - pred[i * width + c]).powi(2)).sum();
        if ss_tot > 0.0 {
            r2_sum += 1.0 - ss_res / ss_tot;
            r2_terms += 1;
        }
    }
    let r2 = if r2_terms > 0 { r2_sum / r2_terms as f64 } else { f64::NAN };
    Metrics { mae, rmse, r2, n }
}

/// Per-component affine map target ↔ model space: z = (y − mean) / scale. With standardisation
/// off it is the identity (mean 0, scale 1), so the rest of the code has one path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Standardizer {
    pub enabled: bool,
    pub mean: Vec<f64>,  // (width)
    pub scale: Vec<f64>, // (width)
}

impl Standardizer {
    /// Fitted on the training rows `values` (n, width): population standard deviation per
    /// component; a constant component gets scale 1 (so it maps to 0, never to NaN).
    pub fn fit(values: &[f64], width: usize, enabled: bool) -> Standardizer {
        if !enabled || values.is_empty() {
            return Standardizer { enabled, mean: vec![0.0; width], scale: vec![1.0; width] };
        }
        let n = values.len() / width;
        let mut mean = vec![0.0; width];
        let mut scale = vec![0.0; width];
        for c in 0..width {
            let m = (0..n).map(|i| values[i * width + c]).sum::<f64>() / n as f64;
            let var = (0..n).map(|i| (values[i * width + c] - m).powi(2)).sum::<f64>() / n as f64;
            mean[c] = m;
            scale[c] = if var > 0.0 { var.sqrt() } else { 1.0 };
        }
        Standardizer { enabled, mean, scale }
    }

    pub fn width(&self) -> usize {
        self.mean.len()
    }

    /// Target units → model space, row-major (n, width).
    pub fn forward(&self, y: &[f64]) -> Vec<f64> {
        let w = self.width();
        y.iter().enumerate().map(|(k, v)| (v - self.mean[k % w]) / self.scale[k % w]).collect()
    }

    /// Model space → target units, row-major (n, width).
    pub fn inverse(&self, z: &[f64]) -> Vec<f64> {
        let w = self.width();
        z.iter().enumerate().map(|(k, v)| v * self.scale[k % w] + self.mean[k % w]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_match_hand_computation() {
        // errors 1, −2, 0, 3 → MAE 1.5, RMSE √(14/4); truth mean 2.5, SS_tot 5, SS_res 14.
        let m = regression_metrics(&[2.0, 0.0, 3.0, 7.0], &[1.0, 2.0, 3.0, 4.0], 1);
        assert!((m.mae - 1.5).abs() < 1e-12);
        assert!((m.rmse - 3.5f64.sqrt()).abs() < 1e-12);
        assert!((m.r2 - (1.0 - 14.0 / 5.0)).abs() < 1e-12);
        // A perfect prediction of a 2-wide target with one constant component: R² over the other.
        let m = regression_metrics(&[1.0, 5.0, 2.0, 5.0], &[1.0, 5.0, 2.0, 5.0], 2);
        assert_eq!((m.mae, m.r2, m.n), (0.0, 1.0, 2));
    }

    #[test]
    fn standardizer_round_trips_and_has_unit_statistics() {
        let y = [10.0, -1.0, 20.0, -1.0, 60.0, -1.0]; // (3, 2), second component constant
        let s = Standardizer::fit(&y, 2, true);
        assert_eq!(s.mean, vec![30.0, -1.0]);
        assert_eq!(s.scale[1], 1.0);
        let z = s.forward(&y);
        let zm: f64 = [z[0], z[2], z[4]].iter().sum::<f64>() / 3.0;
        let zv: f64 = [z[0], z[2], z[4]].iter().map(|v| v * v).sum::<f64>() / 3.0;
        assert!(zm.abs() < 1e-12 && (zv - 1.0).abs() < 1e-12);
        let back = s.inverse(&z);
        for (a, b) in back.iter().zip(&y) {
            assert!((a - b).abs() < 1e-9);
        }
        let off = Standardizer::fit(&y, 2, false);
        assert_eq!(off.forward(&y), y.to_vec());
    }
}
