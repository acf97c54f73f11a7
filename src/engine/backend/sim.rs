//! The CPU executor of `kernels/*.cu` (`cuda-sim`): launches a kernel's own CUDA source, compiled
//! as C++ against the CUDA execution model in `kernels/sim/`, with the grid, block and shared
//! memory the launcher computed. (Placeholder until the executor lands: every launch is refused.)

use anyhow::{bail, Result};
use std::ffi::c_void;

/// Runs `kernel` on the CPU with CUDA launch semantics.
pub fn launch(kernel: &str, _grid: [u32; 3], _block: [u32; 3], _shared_bytes: u32, _params: &mut [*mut c_void]) -> Result<()> {
    bail!("the CUDA simulator has no kernel {kernel} in this build")
}
