//! NVRTC: compiles `kernels/*.cu` at run time for the device's architecture. (Placeholder until
//! the NVRTC pipeline lands: compilation is refused with a clear error.)

use anyhow::{bail, Result};

/// The cubin of kernel family `family` (`kernels/<family>.cu`) for `arch` (e.g. `sm_90`).
pub fn compile_family(family: &str, arch: &str) -> Result<Vec<u8>> {
    bail!("NVRTC is not wired into this build: cannot compile kernels/{family}.cu for {arch}")
}

/// NVRTC's version, or why it is unavailable.
pub fn version_string() -> String {
    "unavailable (placeholder build)".into()
}

/// Every kernel family (`kernels/<family>.cu`) embedded in the binary.
pub fn families() -> Vec<&'static str> {
    Vec::new()
}
