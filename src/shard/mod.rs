//! The multimat HDF5 shard format (schema v1, specified in `data-specs/shard-v1.md`).
//! Every reader and writer of shards goes through this module.
