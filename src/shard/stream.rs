//! Streamed reads of a shard's per-record columns: the charge density (32³ f32 = 128 KiB per
//! record), the DOS rows, the text embeddings, the structures' species and coordinates and the
//! three edge lists (~35 kB per record) are read per record from their HDF5 chunks instead of
//! held in memory; only small per-record metadata (ids, masks, offsets, lattices, targets and the
//! chunk index kept here) stays resident.
//!
//! A column is an (N, …) dataset chunked along its first dimension only, with shuffle + deflate
//! (deflate alone for 1-byte values). Reading rows `a..b` is one positional read per chunk that
//! overlaps them plus an inflate — no HDF5 call (HDF5 serialises every call behind one global
//! lock), safe from any thread. Rows are records for the fixed-width columns (the writer stores
//! those one record per chunk) and edges or atoms for the ragged ones (the record's range comes
//! from its offsets, kept in memory; the writer chunks them at [`STREAM_CHUNK_BYTES`]).
//!
//! [`StreamedColumn::open`] records where each chunk lies and, in one bounded-memory pass over
//! the chunks, hands every row's values to the caller's check (finite rows, edge endpoints…) and
//! computes the dataset's sha256, compared with its `sha256` attribute. It keeps the sha256 of
//! each compressed chunk, so a read long after the load still fails — naming shard, dataset and
//! record — if the bytes on disk are not the ones verified at load. A dataset whose chunks are
//! too large to read per record (shards written before this layout: ~1 MiB chunks of many
//! records) is not streamed: [`streamable_layout`] says no and the reader loads it whole.

use super::checksum::{hash_values, LeBytes};
use super::read::read_attr_str;
use anyhow::{anyhow, Result};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Chunks decoded together during the load-time pass: bounds its memory to this many chunks
/// (8 MiB of 32³ densities) while the inflate runs on every core.
const VERIFY_BLOCK_CHUNKS: usize = 64;

/// Largest uncompressed chunk a streamed read will inflate for one record when a chunk holds
/// several records (one record's own row may be larger, e.g. a 128 KiB density). Chunks of ~1 MiB
/// (the old writer's, ~400 DOS rows) would cost ~1 MiB of inflate per record and column.
pub const STREAM_CHUNK_BYTES: usize = 64 * 1024;

/// Bytes of in-memory metadata a [`StreamedColumn`] keeps per chunk (address, size, digest).
/// For a one-record-per-chunk column (charge density, DOS, text embedding) this is per record.
pub const CHUNK_METADATA_BYTES: usize = 16 + 32;

/// Numbers a column can hold, decoded from little-endian bytes.
pub trait ColumnValue: LeBytes + Send + Sync + 'static {
    const SIZE: usize;
    fn from_le(b: &[u8]) -> Self;
}

macro_rules! impl_column_value {
    ($($t:ty),*) => {$(
        impl ColumnValue for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn from_le(b: &[u8]) -> Self {
                <$t>::from_le_bytes(b.try_into().expect("one value's bytes"))
            }
        }
    )*};
}
impl_column_value!(u8, u32, i32, i64, f32, f64);

/// How a dataset is chunked, when it is a layout [`StreamedColumn`] reads.
#[derive(Clone, Debug)]
pub(crate) struct ChunkLayout {
    /// Rows (first-dimension entries) in the dataset.
    pub rows: usize,
    /// Values per row (product of the other dimensions).
    pub row_len: usize,
    /// Rows per chunk (the last chunk is stored full-size; its tail is padding).
    pub chunk_rows: usize,
    /// Whether the shuffle filter precedes deflate.
    pub shuffled: bool,
    /// `(address, size)` of chunk k's compressed bytes; chunk k holds rows `k·chunk_rows..`.
    pub chunks: Vec<(u64, u64)>,
}

/// Where each chunk of an (N, …) dataset of `elem_size`-byte values lies: `Some` when it is
/// chunked along the first dimension only, filtered by shuffle + deflate (deflate alone for
/// 1-byte values), little-endian, with every chunk allocated and filtered. `None` for any other
/// layout (or an empty dataset): callers then let HDF5 read it.
pub(crate) fn chunk_layout(ds: &hdf5::Dataset, elem_size: usize) -> Option<ChunkLayout> {
    use hdf5::filters::Filter;
    let shape = ds.shape();
    let rows = *shape.first()?;
    let row_len: usize = shape[1..].iter().product();
    let chunk = ds.chunk()?;
    let chunk_rows = *chunk.first()?;
    if rows == 0 || row_len == 0 || chunk_rows == 0 || chunk[1..] != shape[1..] {
        return None;
    }
    let shuffled = match ds.filters().as_slice() {
        [Filter::Shuffle, Filter::Deflate(_)] => true,
        [Filter::Deflate(_)] if elem_size == 1 => false,
        _ => return None,
    };
    let little_endian = ds.dtype().is_ok_and(|t| t.size() == elem_size && (elem_size == 1 || matches!(t.byte_order(), hdf5::datatype::ByteOrder::LittleEndian)));
    let n_chunks = rows.div_ceil(chunk_rows);
    if !little_endian || ds.num_chunks()? != n_chunks {
        return None; // unallocated chunks (fill values): let HDF5 handle them
    }
    let mut chunks = vec![(0u64, 0u64); n_chunks];
    for k in 0..n_chunks {
        let info = ds.chunk_info(k)?;
        if info.filter_mask != 0 {
            return None; // a chunk with a skipped filter goes back to HDF5
        }
        let first_row = *info.offset.first()? as usize;
        if first_row % chunk_rows != 0 {
            return None;
        }
        *chunks.get_mut(first_row / chunk_rows)? = (info.addr, info.size);
    }
    Some(ChunkLayout { rows, row_len, chunk_rows, shuffled, chunks })
}

/// Whether a column with this layout is read per record rather than loaded whole: one chunk is
/// at most one row or [`STREAM_CHUNK_BYTES`], whichever is larger.
pub(crate) fn streamable_layout(layout: &ChunkLayout, elem_size: usize) -> bool {
    let row_bytes = layout.row_len * elem_size;
    layout.chunk_rows == 1 || layout.chunk_rows * row_bytes <= STREAM_CHUNK_BYTES.max(row_bytes)
}

/// Inflate (zlib format, as HDF5's deflate filter writes it, Adler-32 checked) and unshuffle one
/// chunk of `values` values of `elem_size` bytes into their little-endian bytes.
pub(crate) fn unpack_chunk(packed: &[u8], elem_size: usize, values: usize, shuffled: bool) -> std::result::Result<Vec<u8>, String> {
    use std::io::Read;
    let n = values * elem_size;
    let mut raw = Vec::with_capacity(n);
    flate2::read::ZlibDecoder::new(packed).read_to_end(&mut raw).map_err(|e| format!("corrupt compressed chunk: {e}"))?;
    if raw.len() != n {
        return Err(format!("chunk inflates to {} bytes, expected {n}", raw.len()));
    }
    if !shuffled || elem_size == 1 {
        return Ok(raw);
    }
    // Shuffle stored byte j of value k at j·values + k.
    let mut out = vec![0u8; n];
    for (k, v) in out.chunks_exact_mut(elem_size).enumerate() {
        for (j, b) in v.iter_mut().enumerate() {
            *b = raw[j * values + k];
        }
    }
    Ok(out)
}

fn decode_values<T: ColumnValue>(bytes: &[u8]) -> Vec<T> {
    bytes.chunks_exact(T::SIZE).map(T::from_le).collect()
}

/// One streamed column of one shard: its chunk index and the digests verified at open.
#[derive(Clone, Debug)]
pub struct StreamedColumn {
    path: PathBuf,
    dataset: String,
    file: Arc<std::fs::File>,
    elem_size: usize,
    layout: ChunkLayout,
    /// sha256 of chunk k's compressed bytes as verified at open.
    digests: Vec<[u8; 32]>,
}

impl StreamedColumn {
    /// Index the chunks of `dataset` (opened as `ds`) in the shard at `path` and verify them:
    /// `check(first_row, values)` sees every row's values once, in row order, in blocks (return
    /// `Err((row, message))` to refuse row `row`; `record_of(row)` names the record it belongs
    /// to); with `verify_checksum`, the dataset's `sha256` attribute is compared with its values.
    /// `Ok(None)` when the layout is not streamable ([`streamable_layout`]): the caller loads
    /// the dataset whole. Errors name shard, dataset and record (index and id).
    pub(crate) fn open<T: ColumnValue>(
        ds: &hdf5::Dataset,
        path: &Path,
        dataset: &str,
        verify_checksum: bool,
        record_of: &(dyn Fn(usize) -> String + Sync),
        mut check: impl FnMut(usize, &[T]) -> std::result::Result<(), (usize, String)>,
    ) -> Result<Option<StreamedColumn>> {
        let Some(layout) = chunk_layout(ds, T::SIZE).filter(|l| streamable_layout(l, T::SIZE)) else { return Ok(None) };
        let file = std::fs::File::open(path).map_err(|e| anyhow!("{}: reopening for streamed reads: {e}", path.display()))?;
        let mut column = StreamedColumn { path: path.to_owned(), dataset: dataset.to_owned(), file: Arc::new(file), elem_size: T::SIZE, layout, digests: Vec::new() };
        let at = |row: usize, msg: String| anyhow!("{}: /{dataset}: {}: {msg}", path.display(), record_of(row));
        let mut hasher = Sha256::new();
        let n_chunks = column.layout.chunks.len();
        let mut digests = Vec::with_capacity(n_chunks);
        for start in (0..n_chunks).step_by(VERIFY_BLOCK_CHUNKS) {
            let end = (start + VERIFY_BLOCK_CHUNKS).min(n_chunks);
            let block: Vec<([u8; 32], Vec<T>)> = (start..end)
                .into_par_iter()
                .map(|k| {
                    let first = k * column.layout.chunk_rows;
                    let packed = column.packed(k).map_err(|e| at(first, e))?;
                    let values = column.unpack_rows(k, &packed).map_err(|e| at(first, e))?;
                    Ok((Sha256::digest(&packed).into(), values))
                })
                .collect::<Result<_>>()?;
            for (k, (digest, values)) in (start..end).zip(block) {
                check(k * column.layout.chunk_rows, &values).map_err(|(row, msg)| at(row, msg))?;
                hash_values(&mut hasher, &values);
                digests.push(digest);
            }
        }
        if verify_checksum {
            let actual = hex::encode(hasher.finalize());
            let whole = |msg: String| anyhow!("{}: /{dataset}: {msg}", path.display());
            match read_attr_str(ds, "sha256") {
                Ok(stored) if stored == actual => {}
                Ok(stored) => return Err(whole(format!("checksum mismatch: attribute sha256 {stored}, data hashes to {actual}"))),
                Err(_) => return Err(whole("missing sha256 attribute".into())),
            }
        }
        column.digests = digests;
        Ok(Some(column))
    }

    /// Values per row.
    pub fn row_len(&self) -> usize {
        self.layout.row_len
    }

    /// Rows in the dataset.
    pub fn rows(&self) -> usize {
        self.layout.rows
    }

    /// Bytes of chunk index this column keeps in memory.
    pub fn metadata_bytes(&self) -> usize {
        self.digests.len() * CHUNK_METADATA_BYTES
    }

    /// Append the values of rows `rows` to `dst`; `record` names the record they belong to in
    /// errors (e.g. "record 3 (mp-149)"). Fails if a chunk is unreadable, corrupt, or not the
    /// bytes verified at open.
    pub fn read_rows<T: ColumnValue>(&self, rows: std::ops::Range<usize>, record: &str, dst: &mut Vec<T>) -> Result<()> {
        let err = |msg: String| anyhow!("{}: /{}: {record}: {msg}", self.path.display(), self.dataset);
        if T::SIZE != self.elem_size || rows.start > rows.end || rows.end > self.layout.rows {
            return Err(err(format!("asked for rows {rows:?} of {}-byte values; the dataset has {} rows of {}-byte values", T::SIZE, self.layout.rows, self.elem_size)));
        }
        if rows.is_empty() {
            return Ok(());
        }
        let c = self.layout.chunk_rows;
        let row_len = self.layout.row_len;
        dst.reserve(rows.len() * row_len);
        for k in rows.start / c..=(rows.end - 1) / c {
            let packed = self.packed(k).map_err(err)?;
            if <[u8; 32]>::from(Sha256::digest(&packed)) != self.digests[k] {
                return Err(err("chunk changed on disk since the shard was verified at load".into()));
            }
            let values: Vec<T> = self.unpack_rows(k, &packed).map_err(err)?;
            let first = k * c;
            let (a, b) = (rows.start.max(first) - first, rows.end.min(first + c) - first);
            dst.extend_from_slice(&values[a * row_len..b * row_len]);
        }
        Ok(())
    }

    fn packed(&self, k: usize) -> std::result::Result<Vec<u8>, String> {
        let (addr, size) = self.layout.chunks[k];
        let mut packed = vec![0u8; size as usize];
        self.file.read_exact_at(&mut packed, addr).map_err(|e| format!("reading chunk: {e}"))?;
        Ok(packed)
    }

    /// The dataset rows chunk `k` holds (padding of the last chunk dropped).
    fn unpack_rows<T: ColumnValue>(&self, k: usize, packed: &[u8]) -> std::result::Result<Vec<T>, String> {
        let l = &self.layout;
        let bytes = unpack_chunk(packed, self.elem_size, l.chunk_rows * l.row_len, l.shuffled)?;
        let valid_rows = (l.rows - k * l.chunk_rows).min(l.chunk_rows);
        Ok(decode_values(&bytes[..valid_rows * l.row_len * self.elem_size]))
    }
}
