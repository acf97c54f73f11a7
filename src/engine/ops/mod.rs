//! Ops, one file each, forward and backward side by side (llm.c style). Conventions for every op:
//! - arguments: outputs first, then inputs, then sizes; shapes in comments on every buffer;
//! - backward *accumulates* (`+=`) into parameter gradients and *writes* (`=`) input gradients;
//! - the functions here on `&[f32]` are the plain CPU reference; faster CPU paths or CUDA kernels
//!   must agree with them in a test; every op with a backward has a finite-difference test.

pub mod matmul;
pub mod linear;
pub mod layernorm;
pub mod gelu;
pub mod softmax;
pub mod embedding;
pub mod attention;
pub mod activation;
pub mod dropout;
pub mod mse;
pub mod batchnorm;
