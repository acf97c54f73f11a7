//! Launchers of `kernels/barlow_twins.cu` (standardisation, the S part's targets, the Gram
//! triple sums, the standardisation backward) and the check of the whole device 3-D
//! BarlowTwins against the CPU reference. The loss-level orchestration (the GEMMs and how the
//! shares add up) is `loss::barlow_twins::barlow_twins_3d_device`.
//!
//! Every kernel is a grid-stride loop with one thread per dimension or per row, which sums what
//! it owns in order (the elementwise launch shape): no value has two writers, no atomics. f64
//! outputs live in u32 buffers of two words per value (see `gpu::tensor_clip::f64_words`).

use super::ELEMENTWISE_THREADS;
use crate::engine::backend::{arg, Gpu, Kernel, LaunchConfig};
use crate::engine::gpu::checks::{compare, Comparison, OpCheck};
use crate::engine::gradcheck::random_vec;
use crate::engine::tensor::{Device, Tensor};
use anyhow::{bail, Result};

const fn k(name: &'static str) -> Kernel {
    Kernel { family: "barlow_twins", name }
}

fn each(n: usize) -> LaunchConfig {
    LaunchConfig::elementwise(n, ELEMENTWISE_THREADS)
}

/// z (n, D) and inv_std (D f64) from x (n, D); `active = false` copies x and sets inv_std = 1.
#[allow(clippy::too_many_arguments)]
pub fn standardize(g: &Gpu, z: u64, inv_std: u64, x: u64, n: usize, d: usize, eps: f64, active: bool) -> Result<()> {
    let (nn, dd, act) = (n as i32, d as i32, active as i32);
    g.launch(k("bt_standardize_f32"), each(d), &mut [arg(&z), arg(&inv_std), arg(&x), arg(&nn), arg(&dd), arg(&eps), arg(&act)])
}

/// s_rows (D f64) = the S part per row of the D×D slices p, q, r; dp, dq, dr (D, D) = dS/dC.
#[allow(clippy::too_many_arguments)]
pub fn targets(g: &Gpu, s_rows: u64, dp: u64, dq: u64, dr: u64, p: u64, q: u64, r: u64, d: usize, lambda: f64) -> Result<()> {
    let dd = d as i32;
    g.launch(k("bt_targets_f32"), each(d), &mut [arg(&s_rows), arg(&dp), arg(&dq), arg(&dr), arg(&p), arg(&q), arg(&r), arg(&dd), arg(&lambda)])
}

/// out (rows f64) = Σ over the n columns of ga ⊙ gb ⊙ gc (rows, n).
pub fn triple_rows(g: &Gpu, out: u64, ga: u64, gb: u64, gc: u64, rows: usize, n: usize) -> Result<()> {
    if rows == 0 {
        return Ok(());
    }
    let (rr, nn) = (rows as i32, n as i32);
    g.launch(k("bt_triple_rows_f32"), each(rows), &mut [arg(&out), arg(&ga), arg(&gb), arg(&gc), arg(&rr), arg(&nn)])
}

/// dx (n, D, written) from dz (own, D) on the rows o0 … o0 + own − 1 through the standardisation.
#[allow(clippy::too_many_arguments)]
pub fn standardize_backward(g: &Gpu, dx: u64, dz: u64, z: u64, inv_std: u64, n: usize, d: usize, o0: usize, own: usize, active: bool) -> Result<()> {
    let (nn, dd, oo, no, act) = (n as i32, d as i32, o0 as i32, own as i32, active as i32);
    g.launch(
        k("bt_standardize_backward_f32"),
        each(d),
        &mut [arg(&dx), arg(&dz), arg(&z), arg(&inv_std), arg(&nn), arg(&dd), arg(&oo), arg(&no), arg(&act)],
    )
}

// ---------------------------------------------------------------------------------------------
// Check: the whole device BarlowTwins against the CPU reference.

/// Relative tolerance of the device loss: f64 sums of f32 products whose GEMMs (P, Q, R, the
/// Gram rows) sum in another order than the CPU GEMM.
pub const LOSS_RTOL: f64 = 1e-5;
/// Gradient tolerance (values of O(1/n)): the GEMM order, amplified by σ⁻¹ in the
/// standardisation backward.
pub const GRAD_ATOL: f64 = 1e-6;
pub const GRAD_RTOL: f64 = 1e-4;

fn check_barlow(d: Device) -> Result<Comparison> {
    use crate::loss::barlow_twins::{barlow_twins_3d, barlow_twins_3d_device};
    // 23 rows (3 missing a modality), D = 10, raw (not normalised) inputs with offsets so the
    // standardisation matters; standardised over the whole batch, and a rank's rows without it.
    let (b, dim) = (23, 10);
    let host: Vec<Vec<f32>> = (0..3).map(|m| random_vec(b * dim, 110 + m, 1.5).iter().map(|v| v + 0.3 * m as f32).collect()).collect();
    let present: Vec<Vec<bool>> = (0..3).map(|m| (0..b).map(|r| r % (6 + m) != 2).collect()).collect();
    let dev: Vec<Tensor> = host.iter().map(|v| Tensor::from_vec(&[b, dim], v.clone()).to_device(d)).collect::<Result<_>>()?;
    let p: Vec<&[bool]> = present.iter().map(|v| v.as_slice()).collect();
    let mut worst: Option<Comparison> = None;
    for (standardize, rows) in [(true, 0..b), (false, 4..17), (true, 9..23)] {
        let mut gc: Vec<Vec<f32>> = vec![vec![0.0; b * dim]; 3];
        let [g0, g1, g2] = &mut gc[..] else { unreachable!() };
        let want = barlow_twins_3d(Some(g0), Some(g1), Some(g2), [&host[0], &host[1], &host[2]], [p[0], p[1], p[2]], dim, 0.0051, standardize, rows.clone());
        let mut gd: Vec<Tensor> = (0..3).map(|_| Tensor::zeros_on(&[b, dim], d)).collect::<Result<_>>()?;
        let [h0, h1, h2] = &mut gd[..] else { unreachable!() };
        let got = barlow_twins_3d_device(Some([h0, h1, h2]), [&dev[0], &dev[1], &dev[2]], [p[0], p[1], p[2]], 0.0051, standardize, rows.clone())?;
        if (want.loss - got.loss).abs() > LOSS_RTOL * want.loss.abs().max(1.0) || want.valid_rows != got.valid_rows {
            bail!("BarlowTwins (standardize {standardize}, rows {rows:?}): loss {} on {d}, {} on the CPU", got.loss, want.loss);
        }
        let gc_t: Vec<Tensor> = gc.into_iter().map(|v| Tensor::from_vec(&[b, dim], v)).collect();
        let names = ["da", "db", "dc"];
        let refs: Vec<(&str, &Tensor, &Tensor)> = (0..3).map(|m| (names[m], &gd[m], &gc_t[m])).collect();
        let c = compare(&refs, GRAD_ATOL, GRAD_RTOL)?;
        worst = Some(match worst {
            None => c,
            Some(w) => w.worst_of(c),
        });
    }
    Ok(worst.expect("three cases checked"))
}

/// The checks of `kernels/barlow_twins.cu`.
pub fn checks() -> Vec<OpCheck> {
    vec![OpCheck {
        name: "3-D BarlowTwins (masks, standardised or not, a rank's rows)",
        kernels: &["bt_standardize_f32", "bt_targets_f32", "bt_triple_rows_f32", "bt_standardize_backward_f32"],
        run: check_barlow,
    }]
}
