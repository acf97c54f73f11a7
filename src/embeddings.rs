//! The embeddings file (HDF5, `data-specs/embeddings-v1.md`): per-material 128-d vectors with ids,
//! model and modality, as written by `multimat embed` and read by `multimat-screen`.
