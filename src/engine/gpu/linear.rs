//! Launchers of the linear layer: two or three cuBLAS GEMMs plus `kernels/linear.cu` for the bias.

use super::{matmul_row_major, ELEMENTWISE_THREADS};
use crate::engine::backend::{arg, Gpu, GpuVec, Kernel, LaunchConfig};
use anyhow::Result;

const fn k(name: &'static str) -> Kernel {
    Kernel { family: "linear", name }
}

/// out (N, OC) = inp (N, C)·weight (OC, C)ᵀ + bias (OC)
#[allow(clippy::too_many_arguments)]
pub fn forward(g: &Gpu, out: &mut GpuVec<f32>, inp: &GpuVec<f32>, weight: &GpuVec<f32>, bias: Option<&GpuVec<f32>>, n: usize, c: usize, oc: usize) -> Result<()> {
    matmul_row_major(g, false, true, n, oc, c, 1.0, inp.ptr(), weight.ptr(), 0.0, out.ptr())?;
    if let Some(b) = bias {
        let (po, pb, nn, occ) = (out.ptr(), b.ptr(), n as i64, oc as i32);
        g.launch(k("add_bias_rows_f32"), LaunchConfig::elementwise(n * oc, ELEMENTWISE_THREADS), &mut [arg(&po), arg(&pb), arg(&nn), arg(&occ)])?;
    }
    Ok(())
}

/// dinp (N, C) = dout·W (written); dweight (OC, C) += doutᵀ·inp; dbias (OC) += Σ_n dout.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    g: &Gpu, dinp: Option<&mut GpuVec<f32>>, dweight: &mut GpuVec<f32>, dbias: Option<&mut GpuVec<f32>>,
    dout: &GpuVec<f32>, inp: &GpuVec<f32>, weight: &GpuVec<f32>, n: usize, c: usize, oc: usize,
) -> Result<()> {
    if let Some(dx) = dinp {
        matmul_row_major(g, false, false, n, c, oc, 1.0, dout.ptr(), weight.ptr(), 0.0, dx.ptr())?;
    }
    matmul_row_major(g, true, false, oc, c, n, 1.0, dout.ptr(), inp.ptr(), 1.0, dweight.ptr())?;
    if let Some(db) = dbias {
        let (pdb, pdy, nn, occ) = (db.ptr(), dout.ptr(), n as i64, oc as i32);
        let threads = 128u32;
        let cfg = LaunchConfig { grid: [(oc as u32).div_ceil(threads).max(1), 1, 1], block: [threads, 1, 1], shared_bytes: 0 };
        g.launch(k("bias_grad_f32"), cfg, &mut [arg(&pdb), arg(&pdy), arg(&nn), arg(&occ)])?;
    }
    Ok(())
}
