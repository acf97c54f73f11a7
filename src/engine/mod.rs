//! The training engine: tensors on a device, explicit forward/backward per op (llm.c style)
//! with a plain CPU reference for each, optimisers and schedules.

pub mod tensor;
pub mod gradcheck;
pub mod ops;
pub mod nn;
pub mod optim;
pub mod bench;
pub mod bench_conv3d;

pub use tensor::{Device, Module, Param, Storage, Tensor};
