//! `multimat ingest`: raw files → validated, preprocessed records → HDF5 shards + manifest,
//! in parallel over records and MPI ranks, with rejects recorded and atomic outputs.
