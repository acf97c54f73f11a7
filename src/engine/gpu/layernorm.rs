//! Launchers of `kernels/layernorm.cu`: one warp per row (forward), one warp per task of
//! `ROWS_PER_TASK` rows (backward, input gradient and the task's parameter-gradient partial),
//! then one thread per parameter adding the partials in task order.

use super::checks::{compare, on, rand, Comparison, OpCheck};
use crate::engine::backend::{arg, Gpu, GpuVec, Kernel, LaunchConfig};
use crate::engine::ops;
use crate::engine::tensor::{Device, Tensor};
use anyhow::Result;

const fn k(name: &'static str) -> Kernel {
    Kernel { family: "layernorm", name }
}

/// Warps per block of the row kernels: 4 warps (128 threads) keep blocks small enough that a
/// (B·T)-row grid spreads over every SM, as in llm.c's layernorm launchers.
const WARPS_PER_BLOCK: u32 = 4;

/// Warps per block of the backward: 2, so each block's accumulators (2 warps × 2C floats) stay
/// under 12 KiB of shared memory at BERT width (C = 768).
const BACKWARD_WARPS: u32 = 2;

/// out (N, C), mean (N), rstd (N) from inp (N, C), weight (C), bias (C).
#[allow(clippy::too_many_arguments)]
pub fn forward(
    g: &Gpu, out: &mut GpuVec<f32>, mean: &mut GpuVec<f32>, rstd: &mut GpuVec<f32>, inp: &GpuVec<f32>, weight: &GpuVec<f32>,
    bias: &GpuVec<f32>, n: usize, c: usize, eps: f32,
) -> Result<()> {
    if n == 0 || c == 0 {
        return Ok(());
    }
    let cfg = LaunchConfig { grid: [n.div_ceil(WARPS_PER_BLOCK as usize) as u32, 1, 1], block: [32 * WARPS_PER_BLOCK, 1, 1], shared_bytes: 0 };
    let (po, pm, pr, pi, pw, pb) = (out.ptr(), mean.ptr(), rstd.ptr(), inp.ptr(), weight.ptr(), bias.ptr());
    let (nn, cc) = (n as i64, c as i32);
    g.launch(k("layernorm_forward_f32"), cfg, &mut [arg(&po), arg(&pm), arg(&pr), arg(&pi), arg(&pw), arg(&pb), arg(&nn), arg(&cc), arg(&eps)])
}

/// dinp (N, C) written; dweight, dbias (C) accumulated, in the CPU reference's order.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    g: &std::sync::Arc<Gpu>, dinp: &mut GpuVec<f32>, dweight: &mut GpuVec<f32>, dbias: &mut GpuVec<f32>, dout: &GpuVec<f32>,
    inp: &GpuVec<f32>, weight: &GpuVec<f32>, mean: &GpuVec<f32>, rstd: &GpuVec<f32>, n: usize, c: usize, rows_per_task: usize,
) -> Result<()> {
    if n == 0 || c == 0 {
        return Ok(());
    }
    let tasks = n.div_ceil(rows_per_task);
    let partials = g.uninit::<f32>(tasks * 2 * c)?; // (tasks, 2C)
    let cfg = LaunchConfig {
        grid: [tasks.div_ceil(BACKWARD_WARPS as usize) as u32, 1, 1],
        block: [32 * BACKWARD_WARPS, 1, 1],
        shared_bytes: (BACKWARD_WARPS as usize * 2 * c * 4) as u32,
    };
    let (pd, pp, pdy, pi, pw, pm, pr) = (dinp.ptr(), partials.ptr(), dout.ptr(), inp.ptr(), weight.ptr(), mean.ptr(), rstd.ptr());
    let (nn, cc, rpt) = (n as i64, c as i32, rows_per_task as i32);
    g.launch(
        k("layernorm_backward_f32"),
        cfg,
        &mut [arg(&pd), arg(&pp), arg(&pdy), arg(&pi), arg(&pw), arg(&pm), arg(&pr), arg(&nn), arg(&cc), arg(&rpt)],
    )?;
    let threads = 128u32;
    let cfg = LaunchConfig { grid: [((2 * c) as u32).div_ceil(threads), 1, 1], block: [threads, 1, 1], shared_bytes: 0 };
    let (pdw, pdb, nt) = (dweight.ptr(), dbias.ptr(), tasks as i64);
    g.launch(k("layernorm_param_grad_f32"), cfg, &mut [arg(&pdw), arg(&pdb), arg(&pp), arg(&nt), arg(&cc)])
}

/// Layer norm on 70 rows of BERT-like width with a large offset (several backward tasks, a
/// partial last one). Forward and input gradient: the row statistics are double sums in another
/// order than the CPU's, so mean/rstd may differ in their last float bit (≈ 6e-8 relative) and
/// outputs by a few ulps: 1e-5 absolute + 1e-5 relative (outputs are O(1..10)). Parameter
/// gradients given the CPU's own saved statistics: exact (same order, no FMA contraction).
fn check_layernorm(d: Device) -> Result<Comparison> {
    let (n, c) = (70, 200);
    let x = ops::add(&rand(&[n, c], 21), &Tensor::from_vec(&[n, c], vec![30.0; n * c]));
    let (w, b, dy) = (rand(&[c], 22), rand(&[c], 23), rand(&[n, c], 24));
    let (gx, gw, gb, gdy) = (on(&x, d)?, on(&w, d)?, on(&b, d)?, on(&dy, d)?);
    let (y, mean, rstd) = ops::layernorm(&x, &w, &b, 1e-5);
    let (gy, gmean, grstd) = ops::layernorm(&gx, &gw, &gb, 1e-5);
    let (mut dw, mut db) = (rand(&[c], 25), rand(&[c], 26));
    let dx = ops::layernorm_grad(&dy, &x, &w, &mean, &rstd, &mut dw, &mut db);
    let (mut gdw, mut gdb) = (on(&rand(&[c], 25), d)?, on(&rand(&[c], 26), d)?);
    let gdx = ops::layernorm_grad(&gdy, &gx, &gw, &gmean, &grstd, &mut gdw, &mut gdb);
    let approx = compare(&[("y", &gy, &y), ("mean", &gmean, &mean), ("rstd", &grstd, &rstd), ("dx", &gdx, &dx)], 1e-5, 1e-5)?;
    // The same backward from the CPU's statistics: the parameter gradients must be bit-identical.
    let (mut edw, mut edb) = (on(&rand(&[c], 25), d)?, on(&rand(&[c], 26), d)?);
    ops::layernorm_grad(&gdy, &gx, &gw, &on(&mean, d)?, &on(&rstd, d)?, &mut edw, &mut edb);
    let exact = compare(&[("dweight", &edw, &dw), ("dbias", &edb, &db)], 0.0, 0.0)?;
    Ok(approx.worst_of(exact))
}

pub fn checks() -> Vec<OpCheck> {
    vec![OpCheck {
        name: "layernorm (forward, backward; exact parameter gradients)",
        kernels: &["layernorm_forward_f32", "layernorm_backward_f32", "layernorm_param_grad_f32"],
        run: check_layernorm,
    }]
}
