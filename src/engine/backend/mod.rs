//! Device backends of the engine: `sim` runs the CUDA kernels of `kernels/*.cu` on the CPU
//! (the `cuda-sim` device), `kernels` is their generated registry (simulator entry points and
//! NVRTC sources), `nvrtc` compiles them for a GPU architecture at run time.

pub mod sim;
pub mod kernels;
pub mod nvrtc;
