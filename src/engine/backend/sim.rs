//! The `cuda-sim` executor: runs the project's own CUDA kernels (`kernels/*.cu`, compiled as
//! C++20 against `kernels/sim/cuda_sim.h` by build.rs) on the CPU, with the grid, block and
//! dynamic shared-memory size a GPU launch would use, so every kernel is tested where there is
//! no GPU.
//!
//! The contract with the kernels (binding for every `.cu`):
//! - each kernel is `extern "C" __global__ void NAME(args…)` and is listed after the kernels of
//!   its file as `MULTIMAT_EXPORT(NAME)`;
//! - the simulator entry point is `extern "C" int multimat_sim_NAME(const MultimatSimLaunch*,
//!   void** params)`: `params[i]` points to the value of argument i, exactly cuLaunchKernel's
//!   `kernelParams`; a device pointer argument is its 64-bit address (a `u64` holding the host
//!   address here, as a `CUdeviceptr` on a GPU);
//! - it returns 0 or an error code, with the message from `multimat_sim_last_error()` (per OS
//!   thread) naming the kernel, the block and what went wrong.
//!
//! Execution model (details in cuda_sim.h): blocks spread over up to `MULTIMAT_SIM_THREADS` OS
//! threads (default: the number of cores), the threads of a block as fibers on one OS thread
//! with real block and warp barriers, deterministic scheduling; a barrier that can never
//! release is reported as [`SimError::Deadlock`] instead of hanging.

use anyhow::Result;
use std::ffi::{c_char, c_void, CStr};

/// Launch configuration passed to a simulator entry point (C: `MultimatSimLaunch`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimLaunch {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
}

/// A simulator entry point, `multimat_sim_NAME`.
pub type SimEntry = unsafe extern "C" fn(*const SimLaunch, *mut *mut c_void) -> i32;

/// Threads per block that CUDA allows (every architecture since sm_20).
pub const MAX_THREADS_PER_BLOCK: u32 = 1024;
/// Largest dynamic shared memory per block (sm_90's 227 KiB opt-in maximum; sm_80 has 163 KiB).
pub const MAX_DYNAMIC_SHARED_BYTES: u32 = 227 * 1024;

extern "C" {
    fn multimat_sim_last_error() -> *const c_char;
}

/// Why a simulated launch failed. Each message names the kernel (and the block, where one is
/// at fault).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SimError {
    #[error("cuda-sim: no kernel named `{0}` is compiled in (kernels/*.cu export it with MULTIMAT_EXPORT)")]
    UnknownKernel(String),
    #[error("cuda-sim: kernel {kernel}: {given} parameter(s) given, the kernel takes {takes}")]
    WrongArity { kernel: String, given: usize, takes: usize },
    #[error("cuda-sim: {0}")]
    InvalidConfig(String),
    #[error("cuda-sim: {0}")]
    Deadlock(String),
    #[error("cuda-sim: {0}")]
    InvalidWarpOp(String),
    #[error("cuda-sim: {0}")]
    OutOfResources(String),
    #[error("cuda-sim: {0}")]
    Internal(String),
}

/// Checks a launch configuration the way the CUDA driver would, naming the kernel.
pub fn check_config(kernel: &str, grid: [u32; 3], block: [u32; 3], shared_bytes: u32) -> Result<(), SimError> {
    let threads = block.iter().map(|&b| b as u64).product::<u64>();
    let why = if grid.contains(&0) {
        Some("a grid dimension is 0".to_string())
    } else if block.contains(&0) {
        Some("a block dimension is 0".to_string())
    } else if threads > MAX_THREADS_PER_BLOCK as u64 {
        Some(format!("{threads} threads per block (at most {MAX_THREADS_PER_BLOCK})"))
    } else if block[2] > 64 {
        Some(format!("block z {} (at most 64)", block[2]))
    } else if grid[0] > i32::MAX as u32 || grid[1] > 65535 || grid[2] > 65535 {
        Some("grid exceeds (2^31-1, 65535, 65535)".to_string())
    } else if shared_bytes > MAX_DYNAMIC_SHARED_BYTES {
        Some(format!("{shared_bytes} bytes of dynamic shared memory (at most 227 KiB)"))
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(SimError::InvalidConfig(format!(
            "kernel {kernel}: invalid launch: grid ({},{},{}), block ({},{},{}): {why}",
            grid[0], grid[1], grid[2], block[0], block[1], block[2]
        ))),
    }
}

/// Runs kernel `kernel` on the simulator and waits for it.
///
/// `params[i]` points to the value of the kernel's argument i (cuLaunchKernel's convention); a
/// device pointer is passed as a `u64` address.
///
/// # Safety
/// Each `params[i]` must point to a live value of exactly the type of the kernel's argument i,
/// and every address among them must be valid for every access the kernel makes with this
/// configuration — as on a GPU, the simulator cannot check either.
pub unsafe fn launch(kernel: &str, grid: [u32; 3], block: [u32; 3], shared_bytes: u32, params: &mut [*mut c_void]) -> Result<()> {
    let entry = super::kernels::find(kernel).ok_or_else(|| SimError::UnknownKernel(kernel.to_string()))?;
    let takes = entry.arity();
    if params.len() != takes {
        return Err(SimError::WrongArity { kernel: kernel.to_string(), given: params.len(), takes }.into());
    }
    if params.iter().any(|p| p.is_null()) {
        return Err(SimError::InvalidConfig(format!("kernel {kernel}: a parameter pointer is null")).into());
    }
    check_config(kernel, grid, block, shared_bytes)?;
    let cfg = SimLaunch { grid, block, shared_bytes };
    let code = (entry.sim)(&cfg, params.as_mut_ptr());
    if code == 0 {
        return Ok(());
    }
    let message = CStr::from_ptr(multimat_sim_last_error()).to_string_lossy().into_owned();
    Err(match code {
        1 => SimError::InvalidConfig(message),
        2 => SimError::Deadlock(message),
        3 => SimError::InvalidWarpOp(message),
        4 => SimError::OutOfResources(message),
        _ => SimError::Internal(format!("{message} (code {code})")),
    }
    .into())
}

/// A device pointer as the kernels receive it: the buffer's address as a 64-bit value.
pub fn device_address<T>(p: *const T) -> u64 {
    p as usize as u64
}

