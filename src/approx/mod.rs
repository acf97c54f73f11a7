//! Approximate modalities that multimat computes itself for the demo (clearly labelled as
//! approximations): promolecular charge densities, tight-binding DOS, generated structure
//! descriptions, and synthetic records of realistic size for scale tests.
pub mod promolecular;
pub mod demo_data;
pub mod describe;
pub mod synth;
pub mod tb_params;
pub mod tight_binding;
