//! Launchers of `kernels/batchnorm.cu` and the batch-norm op checks.
//!
//! Launch shapes:
//! - sums: a 2-D grid, x = chunk of samples, y = block of 128 channels; one thread sums one
//!   channel of one chunk. A chunk holds `rows_per_chunk(n, s)` samples: at least 4096 values per
//!   thread (so the f64 adds dominate the launch cost) and at most 1024 chunks (so the partials
//!   stay ≤ 1024 × 2C doubles). It depends on N and S only, so a shape always sums in the same
//!   order: the run-to-run determinism resume needs. A second launch adds the partials in chunk
//!   order.
//! - per-channel statistics and parameter gradients: one thread per channel (C ≤ a few hundred).
//! - normalisation and input gradients: one thread per value, elementwise shape.
//!
//! f64 sums live in u32 buffers, two words per value (device memory holds only the element
//! types the backend knows; the kernels read them as double*).

use super::checks::{compare, Comparison, OpCheck};
use super::ELEMENTWISE_THREADS;
use crate::engine::backend::{arg, Gpu, GpuVec, Kernel, LaunchConfig};
use crate::engine::gradcheck::random_vec;
use crate::engine::ops::batchnorm::{
    channel_sums as sums_op, eval_rstd as eval_rstd_op, grad_apply, grad_channel_sums, grad_eval, normalize as normalize_op, stats_from_sums,
    update_running as update_running_op, ChannelSums,
};
use crate::engine::tensor::{Device, Tensor};
use anyhow::Result;

const fn k(name: &'static str) -> Kernel {
    Kernel { family: "batchnorm", name }
}

/// Channels per block of the sum kernels.
const SUM_THREADS: u32 = 128;
/// Fewest values one thread of the sum kernels adds (unless the whole batch has fewer).
const MIN_VALUES_PER_THREAD: usize = 4096;
/// Most chunks of samples, i.e. rows of partial sums.
const MAX_CHUNKS: usize = 1024;

/// Samples per chunk of the sum kernels for (N, ·, S) inputs.
pub fn rows_per_chunk(n: usize, s: usize) -> usize {
    MIN_VALUES_PER_THREAD.div_ceil(s.max(1)).max(n.div_ceil(MAX_CHUNKS)).max(1)
}

/// What the gradient sums need besides dy: the forward input and its statistics.
#[derive(Clone, Copy)]
pub struct GradInputs<'a> {
    pub x: &'a GpuVec<f32>,
    pub mean: &'a GpuVec<f32>,
    pub rstd: &'a GpuVec<f32>,
}

/// Per-channel affine parameters and statistics of a normalisation.
#[derive(Clone, Copy)]
pub struct ChannelParams<'a> {
    pub weight: &'a GpuVec<f32>,
    pub bias: &'a GpuVec<f32>,
    pub mean: &'a GpuVec<f32>,
    pub rstd: &'a GpuVec<f32>,
}

fn per_channel(c: usize) -> LaunchConfig {
    LaunchConfig::elementwise(c, SUM_THREADS)
}

/// [Σv, Σv²] per channel of v (N, C, S) — or, with `grad`, [Σdy, Σdy·x̂] of dy = v — as 2C
/// f64 values (4C u32 words).
pub fn channel_sums(g: &std::sync::Arc<Gpu>, v: &GpuVec<f32>, grad: Option<GradInputs>, n: usize, c: usize, s: usize) -> Result<GpuVec<u32>> {
    let rows = rows_per_chunk(n, s);
    let chunks = n.div_ceil(rows).max(1);
    let partials = g.uninit::<u32>(chunks * 4 * c)?;
    let out = g.uninit::<u32>(4 * c)?;
    let cfg = LaunchConfig { grid: [chunks as u32, (c as u32).div_ceil(SUM_THREADS).max(1), 1], block: [SUM_THREADS, 1, 1], shared_bytes: 0 };
    let (pp, pv, nn, cc, ss, rr) = (partials.ptr(), v.ptr(), n as i64, c as i64, s as i64, rows as i64);
    match grad {
        None => g.launch(k("batchnorm_partial_sums_f32"), cfg, &mut [arg(&pp), arg(&pv), arg(&nn), arg(&cc), arg(&ss), arg(&rr)])?,
        Some(gi) => {
            let (px, pm, prs) = (gi.x.ptr(), gi.mean.ptr(), gi.rstd.ptr());
            let args = &mut [arg(&pp), arg(&pv), arg(&px), arg(&pm), arg(&prs), arg(&nn), arg(&cc), arg(&ss), arg(&rr)];
            g.launch(k("batchnorm_grad_partial_sums_f32"), cfg, args)?
        }
    }
    let (po, ch, w) = (out.ptr(), chunks as i64, 2 * c as i64);
    g.launch(k("batchnorm_reduce_partials_f64"), per_channel(2 * c), &mut [arg(&po), arg(&pp), arg(&ch), arg(&w)])?;
    Ok(out)
}

/// mean, rstd, biased var (C) from sums (2C f64) over `count` values.
#[allow(clippy::too_many_arguments)]
pub fn stats(g: &Gpu, mean: &mut GpuVec<f32>, rstd: &mut GpuVec<f32>, var: &mut GpuVec<f32>, sums: &GpuVec<u32>, c: usize, count: usize, eps: f32) -> Result<()> {
    let (pm, pr, pv, ps, cc, cnt) = (mean.ptr(), rstd.ptr(), var.ptr(), sums.ptr(), c as i64, count as i64);
    g.launch(k("batchnorm_stats_f32"), per_channel(c), &mut [arg(&pm), arg(&pr), arg(&pv), arg(&ps), arg(&cc), arg(&cnt), arg(&eps)])
}

/// running ← (1 − momentum)·running + momentum·batch, the variance times `unbias`.
pub fn update_running(g: &Gpu, rm: &mut GpuVec<f32>, rv: &mut GpuVec<f32>, mean: &GpuVec<f32>, var: &GpuVec<f32>, momentum: f32, unbias: f32) -> Result<()> {
    let (a, b, m, v, c) = (rm.ptr(), rv.ptr(), mean.ptr(), var.ptr(), mean.len() as i64);
    g.launch(k("batchnorm_update_running_f32"), per_channel(mean.len()), &mut [arg(&a), arg(&b), arg(&m), arg(&v), arg(&c), arg(&momentum), arg(&unbias)])
}

/// rstd (C) = 1/√(running_var + eps)
pub fn eval_rstd(g: &Gpu, rstd: &mut GpuVec<f32>, running_var: &GpuVec<f32>, eps: f32) -> Result<()> {
    let (pr, pv, c) = (rstd.ptr(), running_var.ptr(), running_var.len() as i64);
    g.launch(k("batchnorm_eval_rstd_f32"), per_channel(running_var.len()), &mut [arg(&pr), arg(&pv), arg(&c), arg(&eps)])
}

/// out (N, C, S) = (x − mean)·rstd·weight + bias
pub fn normalize(g: &Gpu, out: &mut GpuVec<f32>, x: &GpuVec<f32>, p: ChannelParams, n: usize, c: usize, s: usize) -> Result<()> {
    let (po, px, pw, pb, pm, pr) = (out.ptr(), x.ptr(), p.weight.ptr(), p.bias.ptr(), p.mean.ptr(), p.rstd.ptr());
    let (nn, cc, ss) = (n as i64, c as i64, s as i64);
    g.launch(
        k("batchnorm_normalize_f32"),
        LaunchConfig::elementwise(n * c * s, ELEMENTWISE_THREADS),
        &mut [arg(&po), arg(&px), arg(&pw), arg(&pb), arg(&pm), arg(&pr), arg(&nn), arg(&cc), arg(&ss)],
    )
}

/// dweight (C) += Σdy·x̂, dbias (C) += Σdy from local sums (2C f64)
pub fn param_grads(g: &Gpu, dweight: &mut GpuVec<f32>, dbias: &mut GpuVec<f32>, local: &GpuVec<u32>, c: usize) -> Result<()> {
    let (pw, pb, pl, cc) = (dweight.ptr(), dbias.ptr(), local.ptr(), c as i64);
    g.launch(k("batchnorm_param_grads_f32"), per_channel(c), &mut [arg(&pw), arg(&pb), arg(&pl), arg(&cc)])
}

/// dinp (N, C, S) = w·rstd·((dy − Σdy/M) − x̂·Σdy·x̂/M) from global sums over M = `count`
#[allow(clippy::too_many_arguments)]
pub fn backward_apply(
    g: &Gpu, dinp: &mut GpuVec<f32>, dy: &GpuVec<f32>, weight: &GpuVec<f32>, saved: GradInputs, global: &GpuVec<u32>, count: usize, n: usize, c: usize, s: usize,
) -> Result<()> {
    let (pd, pdy, px, pw, pm, pr, pg) = (dinp.ptr(), dy.ptr(), saved.x.ptr(), weight.ptr(), saved.mean.ptr(), saved.rstd.ptr(), global.ptr());
    let (cnt, nn, cc, ss) = (count as i64, n as i64, c as i64, s as i64);
    g.launch(
        k("batchnorm_backward_apply_f32"),
        LaunchConfig::elementwise(n * c * s, ELEMENTWISE_THREADS),
        &mut [arg(&pd), arg(&pdy), arg(&px), arg(&pw), arg(&pm), arg(&pr), arg(&pg), arg(&cnt), arg(&nn), arg(&cc), arg(&ss)],
    )
}

fn rand(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    Tensor::from_vec(shape, random_vec(shape.iter().product(), seed, scale))
}

/// One training step of the op split (sums → stats → running update → normalise → grad sums →
/// apply) and the evaluation backward, on the CPU and on `d`, compared.
fn run_split(d: Device, shape: &[usize], abs: f64, rel: f64) -> Result<Comparison> {
    let c = shape[1];
    let count = shape[0] * shape[2..].iter().product::<usize>();
    let on = |t: &Tensor| t.to_device(d);
    // An offset mean so Σx² − N·μ² cancels, as in real activations.
    let x = Tensor::from_vec(shape, random_vec(shape.iter().product(), 1, 2.0).iter().map(|v| v + 3.0).collect());
    let dy = rand(shape, 2, 1.0);
    let (w, b) = (rand(&[c], 3, 1.5), rand(&[c], 4, 1.0));
    let (rm0, rv0) = (rand(&[c], 5, 1.0), Tensor::from_vec(&[c], random_vec(c, 6, 0.5).iter().map(|v| v + 1.0).collect()));
    let (dw0, db0) = (rand(&[c], 7, 1.0), rand(&[c], 8, 1.0));
    let step = |x: &Tensor, dy: &Tensor, w: &Tensor, b: &Tensor| -> Vec<Tensor> {
        let put = |t: &Tensor| t.to_device(x.device()).expect("copying a check input");
        let (mut rm, mut rv, mut dw, mut db) = (put(&rm0), put(&rv0), put(&dw0), put(&db0));
        let sums = sums_op(x);
        let (mean, rstd, var) = stats_from_sums(&sums, count, 1e-5);
        update_running_op(&mut rm, &mut rv, &mean, &var, count, 0.1);
        let y = normalize_op(x, w, b, &mean, &rstd);
        let gsums = grad_channel_sums(dy, x, &mean, &rstd);
        // Round-trip the sums through the host, as SyncBN's all-reduce does.
        let global = ChannelSums::from_host(&gsums.to_host(), x.device());
        let dx = grad_apply(dy, x, w, &mean, &rstd, &gsums, &global, count, &mut dw, &mut db);
        let erstd = eval_rstd_op(&rv, 1e-5);
        let dxe = grad_eval(dy, x, w, &rm, &erstd, &mut dw, &mut db);
        vec![mean, rstd, rm, rv, y, dx, dxe, dw, db]
    };
    let cpu = step(&x, &dy, &w, &b);
    let dev = step(&on(&x)?, &on(&dy)?, &on(&w)?, &on(&b)?);
    let names = ["mean", "rstd", "running_mean", "running_var", "y", "dx", "dx (eval)", "dweight", "dbias"];
    let pairs: Vec<(&str, &Tensor, &Tensor)> = names.iter().zip(dev.iter().zip(&cpu)).map(|(n, (a, b))| (*n, a, b)).collect();
    compare(&pairs, abs, rel)
}

fn check_batchnorm_2d(d: Device) -> Result<Comparison> {
    // (N, C) as the graph encoders use it, N ≤ one chunk of samples: the sums are added in the
    // CPU's order and every other kernel repeats the CPU's roundings, so all is bit-identical.
    run_split(d, &[300, 37], 0.0, 0.0)
}

fn check_batchnorm_spatial(d: Device) -> Result<Comparison> {
    // (N, C, S) with S > 1 (BatchNorm3d's layout), one chunk: exact as above.
    run_split(d, &[5, 3, 4, 6], 0.0, 0.0)
}

fn check_batchnorm_chunked(d: Device) -> Result<Comparison> {
    // 9000 rows: three chunks whose f64 partials are added in chunk order rather than the CPU's
    // sample order. The f64 sums then differ by ~1e-16 relative; after rounding to f32 a
    // statistic can move by one ulp (6e-8 relative), and the outputs built from it (x̂ ≈ ±2,
    // gradients summed over 9000 values) by a few ulp of their magnitude: 1e-6 relative and
    // 1e-6 absolute.
    run_split(d, &[9000, 5], 1e-6, 1e-6)
}

/// The checks of this family, for `checks::all()`.
pub fn checks() -> Vec<OpCheck> {
    const KERNELS: &[&str] = &[
        "batchnorm_partial_sums_f32", "batchnorm_grad_partial_sums_f32", "batchnorm_reduce_partials_f64", "batchnorm_stats_f32",
        "batchnorm_update_running_f32", "batchnorm_eval_rstd_f32", "batchnorm_normalize_f32", "batchnorm_param_grads_f32",
        "batchnorm_backward_apply_f32",
    ];
    vec![
        OpCheck { name: "batch norm train/eval (N, C), one chunk of samples", kernels: KERNELS, run: check_batchnorm_2d },
        OpCheck { name: "batch norm train/eval (N, C, S), one chunk of samples", kernels: KERNELS, run: check_batchnorm_spatial },
        OpCheck { name: "batch norm train/eval, chunked sums", kernels: KERNELS, run: check_batchnorm_chunked },
    ]
}
