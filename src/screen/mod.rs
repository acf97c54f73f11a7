//! Exact top-k cosine-similarity screening (`multimat-screen`): for every query embedding, the
//! k most similar candidates, exactly — blocked GEMM fused with per-query bounded heaps,
//! streaming over candidate files larger than memory, deterministic tie-break by material id,
//! no cap on k; optional two-modality weighted queries.
//!
//! Layout: `topk` (hits, ranking rule, heaps, k-way merge), `blocked` (the streaming GEMM
//! engine and the `topk_over_range` building block the MPI screen shards with), `multimodal`
//! (joins by id), `reference` (the plain f64 screen tests compare against), `random` (test and
//! benchmark data), `distributed` (the screen over MPI ranks), `gpu` (the same screen on a GPU or `cuda-sim`:
//! device GEMM + top-k kernel, host re-score for CPU-identical output), `cli` (the binary). Inputs are `crate::embeddings` files.

pub mod blocked;
pub mod cli;
pub mod distributed;
pub mod gpu;
pub mod io;
pub mod multimodal;
pub mod random;
pub mod reference;
pub mod topk;

pub use blocked::{
    shard_range, topk_over_range, topk_over_range_with_stats, CandidateSource, EmbeddingMatrix, Parallelism,
    ScreenConfig, ScreenStats,
};
pub use distributed::{screen_distributed, ScreenReport};
pub use cli::{prepare, write_hits_csv, PreparedScreen, ScreenInputs};
pub use topk::{decode_hits, encode_hits, hit_order, merge_topk, rank_order, Hit, TopK};

/// Entry point of the `multimat-screen` binary.
pub fn cli_main() -> anyhow::Result<()> {
    cli::main()
}
