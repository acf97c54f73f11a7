//! Batch normalisation over (N, C, S) inputs: statistics per channel C over the batch N and the
//! spatial extent S. BatchNorm1d on (N, C) is S = 1; on (N, C, L) S = L; BatchNorm3d on
//! (N, C, D, H, W) is S = D·H·W. Semantics follow PyTorch: training normalises with the biased
//! batch variance and updates running statistics with the *unbiased* variance,
//! r ← (1 − momentum)·r + momentum·batch (momentum 0.1 by default); evaluation normalises with the
//! running statistics.
//!
//! The statistics are split so SyncBN can all-reduce them across ranks:
//! - forward: [`batchnorm_local_sums`] gives Σx and Σx² per channel (f64, 2C values) for this
//!   rank; all-reduce them (and the element count); [`batchnorm_stats_from_sums`] turns global sums
//!   into mean/rstd; [`batchnorm_normalize`] applies them locally.
//! - backward: [`batchnorm_backward_local_sums`] gives Σdy and Σdy·x̂ per channel; all-reduce;
//!   [`batchnorm_backward_apply`] writes dinp from the global sums and accumulates the *local* sums
//!   into dweight/dbias (as PyTorch's SyncBN does; the gradient all-reduce then sums them).
//! A single process simply passes its local sums as the global ones ([`batchnorm_forward_train`]).
//!
//! Sums accumulate in f64 so Σx² − N·μ² keeps its digits for the 32³ charge-density grids.
//! Backward writes (=) dinp and accumulates (+=) dweight and dbias.

use anyhow::{bail, Result};
use rayon::prelude::*;

/// Element-wise sum of per-sample partials in a fixed order.
fn sum_in_order(partials: &[Vec<f64>], len: usize) -> Vec<f64> {
    let mut total = vec![0.0f64; len];
    for p in partials {
        total.iter_mut().zip(p).for_each(|(t, v)| *t += v);
    }
    total
}

/// Per-channel Σx then Σx² over N and S: sums (2C) written.
pub fn batchnorm_local_sums(
    sums: &mut [f64],  // (2C): [Σx (C), Σx² (C)]
    inp: &[f32],       // (N, C, S)
    n: usize,
    c: usize,
    s: usize,
) {
    assert!(sums.len() == 2 * c && inp.len() == n * c * s, "batchnorm_local_sums: sizes");
    // One partial per sample, summed in sample order: bit-identical for any thread count.
    let partials: Vec<Vec<f64>> = inp
        .par_chunks(c * s.max(1))
        .map(|sample| {
            let mut acc = vec![0.0f64; 2 * c];
            for (ci, chan) in sample.chunks_exact(s).enumerate() {
                for &x in chan {
                    acc[ci] += x as f64;
                    acc[c + ci] += x as f64 * x as f64;
                }
            }
            acc
        })
        .collect();
    let total = sum_in_order(&partials, 2 * c);
    sums.copy_from_slice(&total);
}

/// Batch mean (C), rstd (C) = 1/√(var + eps) and biased var (C) from global sums over `count`
/// elements per channel.
pub fn batchnorm_stats_from_sums(
    mean: &mut [f32],    // (C)
    rstd: &mut [f32],    // (C)
    var: &mut [f32],     // (C) biased batch variance
    sums: &[f64],        // (2C)
    count: usize,
    eps: f32,
) {
    let c = mean.len();
    assert!(rstd.len() == c && var.len() == c && sums.len() == 2 * c && count > 0, "batchnorm_stats_from_sums: sizes");
    for ci in 0..c {
        let m = sums[ci] / count as f64;
        let v = (sums[c + ci] / count as f64 - m * m).max(0.0);
        mean[ci] = m as f32;
        var[ci] = v as f32;
        rstd[ci] = (1.0 / (v + eps as f64).sqrt()) as f32;
    }
}

/// running ← (1 − momentum)·running + momentum·batch, with the unbiased batch variance.
pub fn batchnorm_update_running(
    running_mean: &mut [f32],  // (C)
    running_var: &mut [f32],   // (C)
    mean: &[f32],              // (C)
    var: &[f32],               // (C) biased
    count: usize,
    momentum: f32,
) {
    let unbias = count as f32 / (count.max(2) - 1) as f32;
    for ci in 0..mean.len() {
        running_mean[ci] = (1.0 - momentum) * running_mean[ci] + momentum * mean[ci];
        running_var[ci] = (1.0 - momentum) * running_var[ci] + momentum * var[ci] * unbias;
    }
}

/// out (N, C, S) = (inp − mean)·rstd·weight + bias, per channel.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_normalize(
    out: &mut [f32],     // (N, C, S)
    inp: &[f32],         // (N, C, S)
    weight: &[f32],      // (C)
    bias: &[f32],        // (C)
    mean: &[f32],        // (C)
    rstd: &[f32],        // (C)
    n: usize,
    c: usize,
    s: usize,
) {
    assert!(out.len() == n * c * s && inp.len() == n * c * s, "batchnorm_normalize: sizes");
    assert!(weight.len() == c && bias.len() == c && mean.len() == c && rstd.len() == c);
    if s == 0 {
        return;
    }
    out.par_chunks_mut(c * s).zip(inp.par_chunks(c * s)).for_each(|(o, x)| {
        for ci in 0..c {
            let k = rstd[ci] * weight[ci];
            let b = bias[ci] - mean[ci] * k;
            for (oo, &xx) in o[ci * s..(ci + 1) * s].iter_mut().zip(&x[ci * s..(ci + 1) * s]) {
                *oo = xx * k + b;
            }
        }
    });
}

/// Single-process training forward: batch statistics, running update, normalisation.
/// Errors when a channel has a single value (the unbiased variance is undefined; PyTorch refuses
/// too). Saves mean (C) and rstd (C) for the backward.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward_train(
    out: &mut [f32],           // (N, C, S)
    mean: &mut [f32],          // (C)
    rstd: &mut [f32],          // (C)
    running_mean: &mut [f32],  // (C)
    running_var: &mut [f32],   // (C)
    inp: &[f32],               // (N, C, S)
    weight: &[f32],            // (C)
    bias: &[f32],              // (C)
    n: usize,
    c: usize,
    s: usize,
    eps: f32,
    momentum: f32,
) -> Result<()> {
    let count = n * s;
    if count < 2 {
        bail!("batch norm in training mode needs more than one value per channel, got input (N={n}, C={c}, S={s})");
    }
    let mut sums = vec![0.0f64; 2 * c];
    batchnorm_local_sums(&mut sums, inp, n, c, s);
    let mut var = vec![0.0f32; c];
    batchnorm_stats_from_sums(mean, rstd, &mut var, &sums, count, eps);
    batchnorm_update_running(running_mean, running_var, mean, &var, count, momentum);
    batchnorm_normalize(out, inp, weight, bias, mean, rstd, n, c, s);
    Ok(())
}

/// rstd (C) = 1/√(running_var + eps), for evaluation mode.
pub fn batchnorm_eval_rstd(rstd: &mut [f32], running_var: &[f32], eps: f32) {
    for (r, &v) in rstd.iter_mut().zip(running_var) {
        *r = 1.0 / (v + eps).sqrt();
    }
}

/// Per-channel Σdy then Σdy·x̂ with x̂ = (x − mean)·rstd: sums (2C) written.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward_local_sums(
    sums: &mut [f64],  // (2C): [Σdy (C), Σdy·x̂ (C)]
    dout: &[f32],      // (N, C, S)
    inp: &[f32],       // (N, C, S)
    mean: &[f32],      // (C)
    rstd: &[f32],      // (C)
    n: usize,
    c: usize,
    s: usize,
) {
    assert!(sums.len() == 2 * c && dout.len() == n * c * s && inp.len() == n * c * s, "batchnorm_backward_local_sums: sizes");
    let partials: Vec<Vec<f64>> = dout
        .par_chunks(c * s.max(1))
        .zip(inp.par_chunks(c * s.max(1)))
        .map(|(dy, x)| {
            let mut acc = vec![0.0f64; 2 * c];
            for ci in 0..c {
                for (&g, &xx) in dy[ci * s..(ci + 1) * s].iter().zip(&x[ci * s..(ci + 1) * s]) {
                    acc[ci] += g as f64;
                    acc[c + ci] += (g * (xx - mean[ci]) * rstd[ci]) as f64;
                }
            }
            acc
        })
        .collect();
    let total = sum_in_order(&partials, 2 * c);
    sums.copy_from_slice(&total);
}

/// Training-mode backward from sums: dinp = w·rstd·(dy − Σdy/M − x̂·Σdy·x̂/M) with global sums
/// over M = `count` elements (written); dweight += local Σdy·x̂; dbias += local Σdy.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward_apply(
    dinp: &mut [f32],        // (N, C, S)
    dweight: &mut [f32],     // (C)
    dbias: &mut [f32],       // (C)
    dout: &[f32],            // (N, C, S)
    inp: &[f32],             // (N, C, S)
    weight: &[f32],          // (C)
    mean: &[f32],            // (C)
    rstd: &[f32],            // (C)
    local_sums: &[f64],      // (2C) this rank's [Σdy, Σdy·x̂]
    global_sums: &[f64],     // (2C) all ranks'
    count: usize,
    n: usize,
    c: usize,
    s: usize,
) {
    assert!(dinp.len() == n * c * s && dout.len() == n * c * s && inp.len() == n * c * s, "batchnorm_backward_apply: sizes");
    for ci in 0..c {
        dbias[ci] += local_sums[ci] as f32;
        dweight[ci] += local_sums[c + ci] as f32;
    }
    if s == 0 {
        return;
    }
    let mean_dy: Vec<f32> = (0..c).map(|ci| (global_sums[ci] / count as f64) as f32).collect();
    let mean_dyx: Vec<f32> = (0..c).map(|ci| (global_sums[c + ci] / count as f64) as f32).collect();
    dinp.par_chunks_mut(c * s).zip(dout.par_chunks(c * s)).zip(inp.par_chunks(c * s)).for_each(|((d, dy), x)| {
        for ci in 0..c {
            let k = weight[ci] * rstd[ci];
            for j in ci * s..(ci + 1) * s {
                let xhat = (x[j] - mean[ci]) * rstd[ci];
                d[j] = k * (dy[j] - mean_dy[ci] - xhat * mean_dyx[ci]);
            }
        }
    });
}

/// Single-process training backward (local sums are the global sums).
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward_train(
    dinp: &mut [f32],     // (N, C, S)
    dweight: &mut [f32],  // (C)
    dbias: &mut [f32],    // (C)
    dout: &[f32],         // (N, C, S)
    inp: &[f32],          // (N, C, S)
    weight: &[f32],       // (C)
    mean: &[f32],         // (C)
    rstd: &[f32],         // (C)
    n: usize,
    c: usize,
    s: usize,
) {
    let mut sums = vec![0.0f64; 2 * c];
    batchnorm_backward_local_sums(&mut sums, dout, inp, mean, rstd, n, c, s);
    batchnorm_backward_apply(dinp, dweight, dbias, dout, inp, weight, mean, rstd, &sums, &sums, n * s, n, c, s);
}

/// Evaluation-mode backward (running statistics are constants): dinp = dy·w·rstd (written);
/// dweight += Σdy·x̂; dbias += Σdy.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward_eval(
    dinp: &mut [f32],     // (N, C, S)
    dweight: &mut [f32],  // (C)
    dbias: &mut [f32],    // (C)
    dout: &[f32],         // (N, C, S)
    inp: &[f32],          // (N, C, S)
    weight: &[f32],       // (C)
    mean: &[f32],         // (C) running mean
    rstd: &[f32],         // (C) from running var
    n: usize,
    c: usize,
    s: usize,
) {
    let mut sums = vec![0.0f64; 2 * c];
    batchnorm_backward_local_sums(&mut sums, dout, inp, mean, rstd, n, c, s);
    for ci in 0..c {
        dbias[ci] += sums[ci] as f32;
        dweight[ci] += sums[c + ci] as f32;
    }
    let zeros = vec![0.0f32; c];
    // dy·w·rstd is the normalisation itself with a zero mean and bias.
    batchnorm_normalize(dinp, dout, weight, &zeros, &zeros, rstd, n, c, s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::{check_gradient, dot, random_vec};

    #[test]
    fn batchnorm_train_normalises_per_channel_and_updates_running_stats_like_pytorch() {
        // (N=2, C=2, S=2): channel 0 holds 1,2,3,4 (mean 2.5, biased var 1.25, unbiased 5/3);
        // channel 1 holds 10,10,10,10.
        let x = [1.0, 2.0, 10.0, 10.0, 3.0, 4.0, 10.0, 10.0];
        let (mut out, mut mean, mut rstd) = (vec![0.0; 8], vec![0.0; 2], vec![0.0; 2]);
        let (mut rm, mut rv) = (vec![0.0, 0.0], vec![1.0, 1.0]);
        batchnorm_forward_train(&mut out, &mut mean, &mut rstd, &mut rm, &mut rv, &x, &[1.0, 1.0], &[0.0, 0.0], 2, 2, 2, 1e-5, 0.1).unwrap();
        assert_eq!(mean, vec![2.5, 10.0]);
        assert!((rm[0] - 0.25).abs() < 1e-6 && (rm[1] - 1.0).abs() < 1e-6);
        assert!((rv[0] - (0.9 + 0.1 * 5.0 / 3.0)).abs() < 1e-6, "running var {}", rv[0]);
        assert!((rv[1] - 0.9).abs() < 1e-6);
        let want0 = (1.0 - 2.5) / (1.25f32 + 1e-5).sqrt();
        assert!((out[0] - want0).abs() < 1e-5 && out[2] == 0.0);
        let err = batchnorm_forward_train(&mut [0.0; 2], &mut mean, &mut rstd, &mut rm, &mut rv, &[1.0, 2.0], &[1.0; 2], &[0.0; 2], 1, 2, 1, 1e-5, 0.1);
        assert!(err.is_err());
    }

    #[test]
    fn batchnorm_split_sums_over_two_shards_equal_the_whole_batch() {
        // SyncBN contract: sums of two half-batches give the whole batch's statistics and grads.
        let (n, c, s) = (4, 3, 5);
        let x = random_vec(n * c * s, 1, 2.0);
        let dy = random_vec(n * c * s, 2, 1.0);
        let w = random_vec(c, 3, 1.0);
        let half = n / 2 * c * s;
        let (mut sa, mut sb, mut sall) = (vec![0.0; 2 * c], vec![0.0; 2 * c], vec![0.0; 2 * c]);
        batchnorm_local_sums(&mut sa, &x[..half], n / 2, c, s);
        batchnorm_local_sums(&mut sb, &x[half..], n / 2, c, s);
        batchnorm_local_sums(&mut sall, &x, n, c, s);
        let global: Vec<f64> = sa.iter().zip(&sb).map(|(a, b)| a + b).collect();
        for (g, a) in global.iter().zip(&sall) {
            assert!((g - a).abs() < 1e-9);
        }
        let (mut mean, mut rstd, mut var) = (vec![0.0; c], vec![0.0; c], vec![0.0; c]);
        batchnorm_stats_from_sums(&mut mean, &mut rstd, &mut var, &global, n * s, 1e-5);
        // Whole-batch backward vs two shards with all-reduced backward sums.
        let (mut dx_all, mut dw_all, mut db_all) = (vec![0.0; n * c * s], vec![0.0; c], vec![0.0; c]);
        batchnorm_backward_train(&mut dx_all, &mut dw_all, &mut db_all, &dy, &x, &w, &mean, &rstd, n, c, s);
        let (mut la, mut lb) = (vec![0.0; 2 * c], vec![0.0; 2 * c]);
        batchnorm_backward_local_sums(&mut la, &dy[..half], &x[..half], &mean, &rstd, n / 2, c, s);
        batchnorm_backward_local_sums(&mut lb, &dy[half..], &x[half..], &mean, &rstd, n / 2, c, s);
        let gsum: Vec<f64> = la.iter().zip(&lb).map(|(a, b)| a + b).collect();
        let (mut dx, mut dw, mut db) = (vec![0.0; n * c * s], vec![0.0; c], vec![0.0; c]);
        batchnorm_backward_apply(&mut dx[..half], &mut dw, &mut db, &dy[..half], &x[..half], &w, &mean, &rstd, &la, &gsum, n * s, n / 2, c, s);
        batchnorm_backward_apply(&mut dx[half..], &mut dw, &mut db, &dy[half..], &x[half..], &w, &mean, &rstd, &lb, &gsum, n * s, n / 2, c, s);
        for (a, b) in dx.iter().zip(&dx_all).chain(dw.iter().zip(&dw_all)).chain(db.iter().zip(&db_all)) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn batchnorm_train_gradients_match_finite_differences() {
        for &(n, c, s) in &[(6, 3, 1), (3, 2, 4)] {
            let x = random_vec(n * c * s, 1, 2.0);
            let w = random_vec(c, 2, 1.5);
            let b = random_vec(c, 3, 1.0);
            let proj = random_vec(n * c * s, 4, 1.0);
            let fwd = |x: &[f32], w: &[f32], b: &[f32], saved: Option<(&mut [f32], &mut [f32])>| {
                let (mut out, mut mean, mut rstd) = (vec![0.0; n * c * s], vec![0.0; c], vec![0.0; c]);
                let (mut rm, mut rv) = (vec![0.0; c], vec![1.0; c]);
                batchnorm_forward_train(&mut out, &mut mean, &mut rstd, &mut rm, &mut rv, x, w, b, n, c, s, 1e-5, 0.1).unwrap();
                if let Some((m, r)) = saved {
                    m.copy_from_slice(&mean);
                    r.copy_from_slice(&rstd);
                }
                dot(&proj, &out)
            };
            let (mut mean, mut rstd) = (vec![0.0; c], vec![0.0; c]);
            fwd(&x, &w, &b, Some((&mut mean, &mut rstd)));
            let (mut dx, mut dw, mut db) = (vec![f32::NAN; n * c * s], vec![0.0; c], vec![0.0; c]);
            batchnorm_backward_train(&mut dx, &mut dw, &mut db, &proj, &x, &w, &mean, &rstd, n, c, s);
            let tag = format!("(N={n}, C={c}, S={s})");
            check_gradient(&format!("batchnorm dx {tag}"), &x, &dx, |x| fwd(x, &w, &b, None), 1e-2, 3e-3, 3e-3);
            check_gradient(&format!("batchnorm dw {tag}"), &w, &dw, |w| fwd(&x, w, &b, None), 1e-2, 3e-3, 3e-3);
            check_gradient(&format!("batchnorm db {tag}"), &b, &db, |b| fwd(&x, &w, b, None), 1e-2, 3e-3, 3e-3);
        }
    }

    #[test]
    fn batchnorm_eval_gradients_match_finite_differences() {
        let (n, c, s) = (3, 2, 3);
        let x = random_vec(n * c * s, 1, 2.0);
        let w = random_vec(c, 2, 1.5);
        let b = random_vec(c, 3, 1.0);
        let (rm, rv) = (vec![0.3, -0.2], vec![1.7, 0.4]);
        let proj = random_vec(n * c * s, 4, 1.0);
        let mut rstd = vec![0.0; c];
        batchnorm_eval_rstd(&mut rstd, &rv, 1e-5);
        let fwd = |x: &[f32], w: &[f32], b: &[f32]| {
            let mut out = vec![0.0; n * c * s];
            batchnorm_normalize(&mut out, x, w, b, &rm, &rstd, n, c, s);
            dot(&proj, &out)
        };
        let (mut dx, mut dw, mut db) = (vec![0.0; n * c * s], vec![0.0; c], vec![0.0; c]);
        batchnorm_backward_eval(&mut dx, &mut dw, &mut db, &proj, &x, &w, &rm, &rstd, n, c, s);
        check_gradient("batchnorm eval dx", &x, &dx, |x| fwd(x, &w, &b), 1e-2, 1e-3, 1e-3);
        check_gradient("batchnorm eval dw", &w, &dw, |w| fwd(&x, w, &b), 1e-2, 1e-3, 1e-3);
        check_gradient("batchnorm eval db", &b, &db, |b| fwd(&x, &w, b), 1e-2, 1e-3, 1e-3);
    }
}
