//! multimat: multimodal foundation models for crystalline materials (the MultiMat method,
//! Moro et al., Newton 2025) — ingest real DFT data into HDF5 shards, pre-train four encoders
//! contrastively, fine-tune for properties, and screen databases by latent similarity.
//!
//! See `ARCHITECTURE.md` at the repository root for the code map and invariants.

pub mod atomic;
pub mod elements;
pub mod material;
pub mod plausibility;

pub mod io;
pub mod preprocess;
pub mod shard;
pub mod ingest;
pub mod crystal;
pub mod engine;
pub mod loss;
pub mod embeddings;
pub mod screen;
pub mod approx;
pub mod dist;
pub mod run_lock;
pub mod text;
pub mod model;
pub mod train;
pub mod finetune;
pub mod sweep;
pub mod eval;
pub mod plot;
pub mod bench;
pub mod cli;
