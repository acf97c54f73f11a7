//! Streamed reads of a shard's charge density: the one column whose size matters (32³ f32 =
//! 128 KiB per record, ~95 % of a shard's bytes), read one record at a time from its HDF5 chunk
//! instead of loaded whole.
//!
//! The writer stores the charge density one record per chunk (shuffle + deflate), so a record is
//! one positional read of its compressed chunk plus an inflate — no HDF5 call (HDF5 serialises
//! every call behind one global lock), safe from any thread. [`DensityRows::open`] records where
//! each chunk lies (16 bytes per record) and, in one bounded-memory pass over the rows, runs the
//! checks a whole-dataset load runs: the dataset's `sha256` attribute against its values, and
//! every present row finite. It also keeps the sha256 of each compressed chunk (32 bytes per
//! record), so a read long after the load still fails — naming shard, dataset and record — if the
//! bytes on disk are not the ones verified at load.

use super::checksum::hash_values;
use super::read::{read_attr_str, row_chunks, unpack_row};
use super::paths;
use anyhow::{anyhow, Result};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Rows decoded together during the load-time pass: bounds its memory to this many records
/// (8 MiB at 32³) while the inflate runs on every core.
const VERIFY_BLOCK_ROWS: usize = 64;

/// Per-record addresses of a shard's charge-density chunks, verified at open.
#[derive(Clone, Debug)]
pub struct DensityRows {
    path: PathBuf,
    file: Arc<std::fs::File>,
    row_len: usize,
    /// `(address, size)` of record i's compressed chunk.
    chunks: Vec<(u64, u64)>,
    /// sha256 of record i's compressed chunk as verified at open.
    digests: Vec<[u8; 32]>,
}

/// Bytes of in-memory metadata [`DensityRows`] keeps per record (address, size, digest).
pub const DENSITY_ROW_METADATA_BYTES: usize = 16 + 32;

impl DensityRows {
    /// Index the chunks of `/charge_density/values` of the shard at `path` and verify them:
    /// every present row (`mask[i] != 0`) finite, and, with `verify_checksum`, the dataset's
    /// `sha256` attribute. `Ok(None)` when the dataset's layout is not one record per
    /// shuffle+deflate chunk (the caller then loads it whole). Errors name shard, dataset and
    /// record (index and id).
    pub(crate) fn open(ds: &hdf5::Dataset, path: &Path, ids: &[String], mask: &[u8], verify_checksum: bool) -> Result<Option<DensityRows>> {
        let Some((row_len, chunks)) = row_chunks(ds) else { return Ok(None) };
        if chunks.len() != ids.len() || mask.len() != ids.len() {
            return Err(anyhow!("{}: /{}: {} rows for {} records", path.display(), paths::CHARGE_DENSITY, chunks.len(), ids.len()));
        }
        let file = std::fs::File::open(path).map_err(|e| anyhow!("{}: reopening for streamed reads: {e}", path.display()))?;
        let mut rows = DensityRows { path: path.to_owned(), file: Arc::new(file), row_len, chunks, digests: Vec::new() };
        let mut hasher = Sha256::new();
        let mut digests = Vec::with_capacity(ids.len());
        for start in (0..ids.len()).step_by(VERIFY_BLOCK_ROWS) {
            let end = (start + VERIFY_BLOCK_ROWS).min(ids.len());
            let block: Vec<([u8; 32], Vec<f32>)> = (start..end)
                .into_par_iter()
                .map(|i| {
                    let packed = rows.packed(i).map_err(|e| rows.at(i, ids, e))?;
                    let mut values = vec![0f32; row_len];
                    unpack_row(&packed, &mut values).map_err(|e| rows.at(i, ids, e))?;
                    Ok((Sha256::digest(&packed).into(), values))
                })
                .collect::<Result<_>>()?;
            for (k, (digest, values)) in block.into_iter().enumerate() {
                let i = start + k;
                if mask[i] != 0 {
                    if let Some(p) = values.iter().position(|x| !x.is_finite()) {
                        return Err(rows.at(i, ids, format!("NaN/inf at position {p} of a present row")));
                    }
                }
                hash_values(&mut hasher, &values);
                digests.push(digest);
            }
        }
        if verify_checksum {
            let actual = hex::encode(hasher.finalize());
            let whole = |msg: String| anyhow!("{}: /{}: {msg}", path.display(), paths::CHARGE_DENSITY);
            match read_attr_str(ds, "sha256") {
                Ok(stored) if stored == actual => {}
                Ok(stored) => return Err(whole(format!("checksum mismatch: attribute sha256 {stored}, data hashes to {actual}"))),
                Err(_) => return Err(whole("missing sha256 attribute".into())),
            }
        }
        rows.digests = digests;
        Ok(Some(rows))
    }

    /// Values per record (gx·gy·gz).
    pub fn row_len(&self) -> usize {
        self.row_len
    }

    /// Decode record `i` into `dst` (`row_len` values); `id` names it in errors. Fails if the
    /// chunk is unreadable, corrupt, or not the bytes verified at open.
    pub fn read(&self, i: usize, id: &str, dst: &mut [f32]) -> Result<()> {
        let err = |msg: String| anyhow!("{}: /{}: record {i} ({id}): {msg}", self.path.display(), paths::CHARGE_DENSITY);
        if dst.len() != self.row_len || i >= self.chunks.len() {
            return Err(err(format!("asked for {} values of row {i}; the dataset has {} rows of {}", dst.len(), self.chunks.len(), self.row_len)));
        }
        let packed = self.packed(i).map_err(err)?;
        if <[u8; 32]>::from(Sha256::digest(&packed)) != self.digests[i] {
            return Err(err("chunk changed on disk since the shard was verified at load".into()));
        }
        unpack_row(&packed, dst).map_err(err)
    }

    fn packed(&self, i: usize) -> std::result::Result<Vec<u8>, String> {
        let (addr, size) = self.chunks[i];
        let mut packed = vec![0u8; size as usize];
        self.file.read_exact_at(&mut packed, addr).map_err(|e| format!("reading chunk: {e}"))?;
        Ok(packed)
    }

    fn at(&self, i: usize, ids: &[String], msg: String) -> anyhow::Error {
        anyhow!("{}: /{}: record {i} ({}): {msg}", self.path.display(), paths::CHARGE_DENSITY, ids[i])
    }
}
