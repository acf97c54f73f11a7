//! Evaluation of trained models: cross-modal retrieval (paper Fig. 3A) and material discovery
//! via latent-space similarity (Fig. 3B), on models rebuilt from checkpoints.

pub mod checkpoint_model;
pub mod discovery;
pub mod report;
pub mod retrieval;
