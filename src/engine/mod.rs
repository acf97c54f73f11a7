//! The training engine: tensors on a device, explicit forward/backward per op (llm.c style)
//! with a plain CPU reference for each (`ops`), layers that own parameters and saved activations
//! (`nn`), AdamW with a warm-up + cosine schedule and gradient clipping (`optim`), finite-difference
//! checking (`gradcheck`), the `multimat bench engine` measurements (`bench`) and the binaries'
//! C-allocator setting that keeps freed tensor memory for the next step (`host_memory`).

pub mod tensor;
pub mod backend;
pub mod gpu;
pub mod gradcheck;
pub mod host_memory;
pub mod ops;
pub mod nn;
pub mod optim;

pub use tensor::{Device, Indices, Module, Param, Storage, Tensor};
