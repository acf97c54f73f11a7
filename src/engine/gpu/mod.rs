//! The GPU host code of the ops: one file per `kernels/<family>.cu`, each holding the launchers
//! of that family's kernels (launch configuration, argument order next to the kernel's
//! signature). The same launchers drive a real GPU and `cuda-sim`; `engine::ops` calls them from
//! its one device match per op.
//!
//! Launchers return `Result`; the tensor-level ops turn a device failure (out of memory, a launch
//! error) into a panic that names the op and the device, the way the CPU ops treat a violated
//! shape contract.

pub mod elementwise;
pub mod linear;
pub mod adamw;
pub mod l2norm;
pub mod mse;
pub mod infonce;
pub mod checks;
pub mod layernorm;
pub mod attention;
pub mod masked_mean;
pub mod dropout;
pub mod embedding;
pub mod activation;
pub mod batchnorm;
pub mod gather;
pub mod rbf;
pub mod segment;
pub mod topk;
pub mod tensor_clip;
pub mod barlow_twins;
pub mod pool3d;
pub mod conv3d;

use super::backend::{Gpu, GemmDesc, GpuVec};
use super::tensor::{Indices, Storage, Tensor};
use anyhow::Result;
use std::sync::Arc;

/// Threads per block of the elementwise launchers (a multiple of the warp; 256 keeps an H100's
/// SMs full with the grid cap and is a common best point in llm.c's kernel sweeps).
pub const ELEMENTWISE_THREADS: u32 = 256;

/// The GPU a device tensor lives on.
pub(crate) fn gpu_of(t: &Tensor) -> &Arc<Gpu> {
    t.gpu_vec().gpu()
}

/// Unwraps a launcher's result, or panics naming the op and the device.
pub(crate) fn device_ok<T>(r: Result<T>, op: &str) -> T {
    r.unwrap_or_else(|e| panic!("{op}: device failure: {e:#}"))
}

/// Row-major C (m × n) = α·op(A)·op(B) + β·C on the GPU (A stored (m, k) or (k, m) when
/// `trans_a`; B stored (k, n) or (n, k) when `trans_b`), as one cuBLAS call.
#[allow(clippy::too_many_arguments)]
pub fn matmul_row_major(g: &Gpu, trans_a: bool, trans_b: bool, m: usize, n: usize, k: usize, alpha: f32, a: u64, b: u64, beta: f32, c: u64) -> Result<()> {
    let d = GemmDesc::row_major(trans_a, trans_b, m, n, k, alpha, beta);
    // Column-major roles are swapped (see GemmDesc::row_major): B comes first.
    g.gemm(&d, b, a, c)
}

/// The device buffer of a GPU tensor, for writing (the tensor-level ops' outputs).
pub(crate) fn gpu_vec_mut<'a>(t: &'a mut Tensor, op: &str) -> &'a mut GpuVec<f32> {
    match &mut t.storage {
        Storage::Gpu(v) => v,
        Storage::Cpu(_) => panic!("{op}: a CPU tensor {:?} where a device tensor was expected (operands on different devices)", t.shape),
    }
}

/// The device address of optional integer data (a padding mask), 0 (a null pointer, which the
/// kernels read as "all valid") when there is none.
pub(crate) fn opt_indices_ptr(m: Option<&Indices>) -> u64 {
    m.map_or(0, |m| m.gpu_vec().ptr())
}
