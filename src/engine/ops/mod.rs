//! Ops, one file each, forward and backward side by side (llm.c style). Conventions for every op:
//! - arguments: outputs first, then inputs, then sizes; shapes in comments on every buffer;
//! - backward *accumulates* (`+=`) into parameter gradients and *writes* (`=`) input gradients;
//! - the functions here on `&[f32]` are the plain CPU reference; faster CPU paths or CUDA kernels
//!   must agree with them in a test; every op with a backward has a finite-difference test;
//! - threads (rayon) split work into fixed partitions, and reductions sum the partitions' results
//!   in order, so every op is bit-identical from run to run whatever the thread count (exact
//!   resume depends on it).

/// Elements per rayon task in pointwise ops: large enough to amortise scheduling.
pub(crate) const PAR_CHUNK: usize = 1 << 14;

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
pub mod masked_mean;
pub mod gather;
pub mod segment;
pub mod rbf;
pub mod conv3d;
pub mod pool3d;
pub mod l2norm;
pub mod elementwise;

pub use elementwise::{add, add_assign, concat_last, concat_rows, fill, mul, split_last, split_rows};
pub use linear::{linear, linear_grad};
pub use layernorm::{layernorm, layernorm_grad};
pub use attention::{attention, attention_grad};
pub use softmax::{softmax, softmax_grad};
pub use masked_mean::{masked_mean, masked_mean_grad};
pub use dropout::{dropout, dropout_grad};
pub use embedding::{embedding, embedding_grad, TokenIds};
pub use activation::{activate, activate_grad, Activation};
