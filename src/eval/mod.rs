//! Evaluation of trained models: cross-modal retrieval (paper Fig. 3A) and, later, discovery.

pub mod retrieval;
