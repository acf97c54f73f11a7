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
//!
//! A single process simply passes its local sums as the global ones ([`batchnorm_forward_train`]).
//!
//! Sums accumulate in f64 so Σx² − N·μ² keeps its digits for the 32³ charge-density grids.
//! Backward writes (=) dinp and accumulates (+=) dweight and dbias.
//!
//! The tensor-level ops at the end of the file ([`channel_sums`], [`stats_from_sums`],
//! [`update_running`], [`normalize`], [`grad_channel_sums`], [`grad_apply`], [`grad_eval`],
//! [`eval_rstd`]) are the same split on any device, with the sums in a [`ChannelSums`]; the GPU
//! arms launch `kernels/batchnorm.cu`. Everything but the sums is bit-identical to the CPU; the
//! sums are too while N ≤ the kernels' chunk of samples, and otherwise differ in the last bits
//! of an f64 (see `engine::gpu::batchnorm`).

use crate::engine::backend::GpuVec;
use crate::engine::gpu::{self, device_ok};
use crate::engine::tensor::{Device, Storage, Tensor};
use anyhow::{bail, Context, Result};
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

/// Per-channel f64 sums (2C values, [Σa (C), Σb (C)]) on a device: what SyncBN all-reduces
/// between the local-sum and apply steps. On a GPU each f64 is two raw u32 words.
#[derive(Debug)]
pub enum ChannelSums {
    Cpu(Vec<f64>),
    Gpu(GpuVec<u32>),
}

impl ChannelSums {
    /// Number of f64 values (2C).
    pub fn len(&self) -> usize {
        match self {
            ChannelSums::Cpu(v) => v.len(),
            ChannelSums::Gpu(v) => v.len() / 2,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn device(&self) -> Device {
        match self {
            ChannelSums::Cpu(_) => Device::Cpu,
            ChannelSums::Gpu(v) => v.gpu().device,
        }
    }

    /// The sums on the host (a copy from the device).
    pub fn to_host(&self) -> Vec<f64> {
        match self {
            ChannelSums::Cpu(v) => v.clone(),
            ChannelSums::Gpu(v) => words_to_f64(&device_ok(v.gpu().download(v), "batchnorm sums")),
        }
    }

    /// Host sums onto `device`.
    pub fn from_host(sums: &[f64], device: Device) -> ChannelSums {
        match device {
            Device::Cpu => ChannelSums::Cpu(sums.to_vec()),
            d => {
                let g = device_ok(crate::engine::backend::gpu(d), "batchnorm sums");
                ChannelSums::Gpu(device_ok(g.upload(&f64_to_words(sums)), "batchnorm sums"))
            }
        }
    }

    /// A second copy on the same device (SyncBN's backward reduces one and keeps the local one).
    pub fn try_clone(&self) -> Result<ChannelSums> {
        Ok(match self {
            ChannelSums::Cpu(v) => ChannelSums::Cpu(v.clone()),
            ChannelSums::Gpu(v) => ChannelSums::Gpu(v.try_clone()?),
        })
    }

    /// SyncBN's all-reduce through the host: `reduce` sums, in place across ranks, the payload
    /// [sums (2C), count] — the count as one more f64, rounded back after — or the 2C sums alone
    /// when `count` is None. CPU sums are the payload (no copy but the count's slot); device sums
    /// are downloaded and uploaded again.
    pub fn reduce_through_host(&mut self, count: Option<&mut usize>, reduce: impl FnOnce(&mut [f64])) -> Result<()> {
        let reduce_payload = |payload: &mut Vec<f64>| {
            let two_c = payload.len();
            match count {
                Some(count) => {
                    payload.push(*count as f64);
                    reduce(payload);
                    *count = payload[two_c].round() as usize;
                    payload.truncate(two_c);
                }
                None => reduce(payload),
            }
        };
        match self {
            ChannelSums::Cpu(v) => reduce_payload(v),
            ChannelSums::Gpu(v) => {
                let g = v.gpu().clone();
                let mut payload = words_to_f64(&g.download(v).context("downloading SyncBN's sums")?);
                reduce_payload(&mut payload);
                *v = g.upload(&f64_to_words(&payload)).context("uploading SyncBN's reduced sums")?;
            }
        }
        Ok(())
    }

    fn gpu_vec(&self) -> &GpuVec<u32> {
        match self {
            ChannelSums::Gpu(v) => v,
            ChannelSums::Cpu(_) => panic!("batchnorm: CPU sums passed to a device op"),
        }
    }

    fn host(&self) -> &[f64] {
        match self {
            ChannelSums::Cpu(v) => v,
            ChannelSums::Gpu(v) => panic!("batchnorm: sums on {} passed to a CPU op (use to_host)", v.gpu().device),
        }
    }
}

/// f64 values as the device's raw words: two u32 per value, low word first (little-endian, as
/// both the GPUs and `cuda-sim`'s host store an f64).
pub fn f64_to_words(values: &[f64]) -> Vec<u32> {
    values.iter().flat_map(|v| [v.to_bits() as u32, (v.to_bits() >> 32) as u32]).collect()
}

/// The inverse of [`f64_to_words`].
pub fn words_to_f64(words: &[u32]) -> Vec<f64> {
    words.chunks_exact(2).map(|w| f64::from_bits(w[0] as u64 | (w[1] as u64) << 32)).collect()
}

/// (N, C, S) of a (N, C, …) tensor.
pub fn ncs(shape: &[usize]) -> (usize, usize, usize) {
    assert!(shape.len() >= 2, "batchnorm: input {shape:?} must be (N, C, …)");
    (shape[0], shape[1], shape[2..].iter().product())
}

fn gpu_out(x: &Tensor, shape: &[usize], op: &str) -> (Tensor, std::sync::Arc<crate::engine::backend::Gpu>) {
    let g = x.gpu_vec().gpu().clone();
    (device_ok(Tensor::uninit_on(shape, x.device()), op), g)
}

fn gv(t: &mut Tensor) -> &mut GpuVec<f32> {
    match &mut t.storage {
        Storage::Gpu(v) => v,
        Storage::Cpu(_) => panic!("batchnorm: a CPU tensor passed to a device op"),
    }
}

/// This rank's per-channel [Σx, Σx²] of x (N, C, S).
pub fn channel_sums(x: &Tensor) -> ChannelSums {
    let (n, c, s) = ncs(&x.shape);
    match &x.storage {
        Storage::Cpu(xd) => {
            let mut sums = vec![0.0f64; 2 * c];
            batchnorm_local_sums(&mut sums, xd, n, c, s);
            ChannelSums::Cpu(sums)
        }
        Storage::Gpu(xd) => ChannelSums::Gpu(device_ok(gpu::batchnorm::channel_sums(xd.gpu(), xd, None, n, c, s), "batchnorm sums")),
    }
}

/// Batch (mean, rstd, biased var), each (C), from global sums over `count` values per channel.
pub fn stats_from_sums(sums: &ChannelSums, count: usize, eps: f32) -> (Tensor, Tensor, Tensor) {
    let c = sums.len() / 2;
    match sums {
        ChannelSums::Cpu(sd) => {
            let (mut mean, mut rstd, mut var) = (vec![0.0f32; c], vec![0.0f32; c], vec![0.0f32; c]);
            batchnorm_stats_from_sums(&mut mean, &mut rstd, &mut var, sd, count, eps);
            (Tensor::from_vec(&[c], mean), Tensor::from_vec(&[c], rstd), Tensor::from_vec(&[c], var))
        }
        ChannelSums::Gpu(sd) => {
            let dev = sd.gpu().device;
            let alloc = || device_ok(Tensor::uninit_on(&[c], dev), "batchnorm stats");
            let (mut mean, mut rstd, mut var) = (alloc(), alloc(), alloc());
            device_ok(gpu::batchnorm::stats(sd.gpu(), gv(&mut mean), gv(&mut rstd), gv(&mut var), sd, c, count, eps), "batchnorm stats");
            (mean, rstd, var)
        }
    }
}

/// running ← (1 − momentum)·running + momentum·batch (unbiased variance over `count` values).
pub fn update_running(running_mean: &mut Tensor, running_var: &mut Tensor, mean: &Tensor, var: &Tensor, count: usize, momentum: f32) {
    match (&mut running_mean.storage, &mut running_var.storage) {
        (Storage::Cpu(rm), Storage::Cpu(rv)) => batchnorm_update_running(rm, rv, mean.data(), var.data(), count, momentum),
        (Storage::Gpu(rm), Storage::Gpu(rv)) => {
            let g = rm.gpu().clone();
            let unbias = count as f32 / (count.max(2) - 1) as f32;
            device_ok(gpu::batchnorm::update_running(&g, rm, rv, mean.gpu_vec(), var.gpu_vec(), momentum, unbias), "batchnorm running statistics")
        }
        _ => panic!("batchnorm: running mean and variance on different devices"),
    }
}

/// rstd (C) = 1/√(running_var + eps) (evaluation mode).
pub fn eval_rstd(running_var: &Tensor, eps: f32) -> Tensor {
    let c = running_var.numel();
    match &running_var.storage {
        Storage::Cpu(rv) => {
            let mut rstd = vec![0.0f32; c];
            batchnorm_eval_rstd(&mut rstd, rv, eps);
            Tensor::from_vec(&[c], rstd)
        }
        Storage::Gpu(rv) => {
            let (mut out, g) = gpu_out(running_var, &[c], "batchnorm eval rstd");
            device_ok(gpu::batchnorm::eval_rstd(&g, gv(&mut out), rv, eps), "batchnorm eval rstd");
            out
        }
    }
}

/// out (N, C, S) = (x − mean)·rstd·weight + bias per channel.
pub fn normalize(x: &Tensor, weight: &Tensor, bias: &Tensor, mean: &Tensor, rstd: &Tensor) -> Tensor {
    let (n, c, s) = ncs(&x.shape);
    match &x.storage {
        Storage::Cpu(xd) => {
            let mut out = vec![0.0f32; n * c * s];
            batchnorm_normalize(&mut out, xd, weight.data(), bias.data(), mean.data(), rstd.data(), n, c, s);
            Tensor::from_vec(&x.shape, out)
        }
        Storage::Gpu(xd) => {
            let (mut out, g) = gpu_out(x, &x.shape, "batchnorm normalize");
            let p = gpu::batchnorm::ChannelParams { weight: weight.gpu_vec(), bias: bias.gpu_vec(), mean: mean.gpu_vec(), rstd: rstd.gpu_vec() };
            device_ok(gpu::batchnorm::normalize(&g, gv(&mut out), xd, p, n, c, s), "batchnorm normalize");
            out
        }
    }
}

/// This rank's per-channel [Σdy, Σdy·x̂] with x̂ = (x − mean)·rstd.
pub fn grad_channel_sums(dy: &Tensor, x: &Tensor, mean: &Tensor, rstd: &Tensor) -> ChannelSums {
    let (n, c, s) = ncs(&x.shape);
    assert_eq!(dy.shape, x.shape, "batchnorm: dout {:?} and input {:?} differ", dy.shape, x.shape);
    match &dy.storage {
        Storage::Cpu(dd) => {
            let mut sums = vec![0.0f64; 2 * c];
            batchnorm_backward_local_sums(&mut sums, dd, x.data(), mean.data(), rstd.data(), n, c, s);
            ChannelSums::Cpu(sums)
        }
        Storage::Gpu(dd) => {
            let grad = gpu::batchnorm::GradInputs { x: x.gpu_vec(), mean: mean.gpu_vec(), rstd: rstd.gpu_vec() };
            ChannelSums::Gpu(device_ok(gpu::batchnorm::channel_sums(dd.gpu(), dd, Some(grad), n, c, s), "batchnorm grad sums"))
        }
    }
}

/// Training-mode backward from sums: returns dinp (written) from the global sums over `count`
/// values; dweight/dbias += this rank's local sums.
#[allow(clippy::too_many_arguments)]
pub fn grad_apply(
    dy: &Tensor, x: &Tensor, weight: &Tensor, mean: &Tensor, rstd: &Tensor, local: &ChannelSums, global: &ChannelSums, count: usize,
    dweight: &mut Tensor, dbias: &mut Tensor,
) -> Tensor {
    let (n, c, s) = ncs(&x.shape);
    match &dy.storage {
        Storage::Cpu(dd) => {
            let mut dx = vec![0.0f32; n * c * s];
            batchnorm_backward_apply(
                &mut dx, dweight.data_mut(), dbias.data_mut(), dd, x.data(), weight.data(), mean.data(), rstd.data(), local.host(), global.host(), count, n, c, s,
            );
            Tensor::from_vec(&x.shape, dx)
        }
        Storage::Gpu(dd) => {
            let (mut dx, g) = gpu_out(dy, &x.shape, "batchnorm backward");
            device_ok(gpu::batchnorm::param_grads(&g, gv(dweight), gv(dbias), local.gpu_vec(), c), "batchnorm backward");
            let saved = gpu::batchnorm::GradInputs { x: x.gpu_vec(), mean: mean.gpu_vec(), rstd: rstd.gpu_vec() };
            let r = gpu::batchnorm::backward_apply(&g, gv(&mut dx), dd, weight.gpu_vec(), saved, global.gpu_vec(), count, n, c, s);
            device_ok(r, "batchnorm backward");
            dx
        }
    }
}

/// Evaluation-mode backward (running statistics are constants): returns dinp = dy·w·rstd;
/// dweight += Σdy·x̂, dbias += Σdy.
pub fn grad_eval(dy: &Tensor, x: &Tensor, weight: &Tensor, mean: &Tensor, rstd: &Tensor, dweight: &mut Tensor, dbias: &mut Tensor) -> Tensor {
    let (n, c, s) = ncs(&x.shape);
    match &dy.storage {
        Storage::Cpu(dd) => {
            let mut dx = vec![0.0f32; n * c * s];
            batchnorm_backward_eval(&mut dx, dweight.data_mut(), dbias.data_mut(), dd, x.data(), weight.data(), mean.data(), rstd.data(), n, c, s);
            Tensor::from_vec(&x.shape, dx)
        }
        Storage::Gpu(_) => {
            let sums = grad_channel_sums(dy, x, mean, rstd);
            let g = dy.gpu_vec().gpu().clone();
            device_ok(gpu::batchnorm::param_grads(&g, gv(dweight), gv(dbias), sums.gpu_vec(), c), "batchnorm backward (eval)");
            // dy·w·rstd is the normalisation itself with a zero mean and bias, as on the CPU.
            let zeros = device_ok(Tensor::zeros_on(&[c], dy.device()), "batchnorm backward (eval)");
            normalize(dy, weight, &zeros, &zeros, rstd)
        }
    }
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
