//! The embeddings file (HDF5, schema `multimat-embeddings` v1, specified in
//! `data-specs/embeddings-v1.md`): one vector per material with its id, the modality, and the
//! model/checkpoint that produced it. Written by `multimat embed` (and `multimat-screen
//! gen-random`), read by `multimat-screen`. Every reader and writer goes through this module.
//!
//! Design: the `embeddings` dataset is chunked by rows so a reader can stream row blocks — the
//! screen never holds a candidate file in memory. Rows are validated as they are read (finite,
//! non-zero norm; errors name the file, row and id), so a NaN never reaches a similarity.
//! Writing is atomic (`crate::atomic::write_with`): a crashed `embed` leaves no half file.

use anyhow::{bail, ensure, Context, Result};
use hdf5::types::{FixedAscii, FixedUnicode, VarLenAscii, VarLenUnicode};
use ndarray::{s, ArrayView1, ArrayView2};
use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Value of the `schema` attribute on the root group.
pub const SCHEMA_NAME: &str = "multimat-embeddings";
/// The schema version this module writes and the only one it reads.
pub const SCHEMA_VERSION: u32 = 1;
/// Rows per HDF5 chunk of `embeddings` and `ids`: 1024 × 128 × 4 B = 512 KiB, inside HDF5's
/// default 1 MiB chunk cache and a multiple of which the screen reads.
pub const CHUNK_ROWS: usize = 1024;
/// Modalities an embeddings file may declare (the four MultiMat encoders).
pub const MODALITIES: [&str; 4] = ["crystal", "dos", "charge_density", "text"];

/// File-level metadata (root-group attributes). The dimension is the `embeddings` dataset's
/// second extent and is also stored as the `dim` attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbeddingsMeta {
    /// Which encoder produced the vectors: one of [`MODALITIES`].
    pub modality: String,
    /// Human-readable model id (e.g. the pre-training run name).
    pub model_id: String,
    /// SHA-256 (hex) of the checkpoint file the vectors came from; empty when there was none
    /// (synthetic data).
    pub checkpoint_sha256: String,
    /// Whether every row was L2-normalised by the writer. Informational: the screen
    /// re-normalises on read regardless (see `data-specs/embeddings-v1.md`).
    pub normalised: bool,
    /// What wrote the file, e.g. `multimat 0.1.0 embed`.
    pub producer: String,
}

impl EmbeddingsMeta {
    /// The identity used to decide whether two files live in the same latent space.
    pub fn model_identity(&self) -> String {
        if self.checkpoint_sha256.is_empty() {
            format!("model '{}' (no checkpoint hash)", self.model_id)
        } else {
            let short = &self.checkpoint_sha256[..self.checkpoint_sha256.len().min(12)];
            format!("model '{}' (checkpoint sha256 {short}…)", self.model_id)
        }
    }

    /// True if both files were produced by the same model: by the checkpoint's SHA-256 when both
    /// files name one (the model id is then only a label — the same checkpoint embedded into two
    /// folders under two run names is the same latent space), else by the model id.
    pub fn same_model(&self, other: &EmbeddingsMeta) -> bool {
        if !self.checkpoint_sha256.is_empty() && !other.checkpoint_sha256.is_empty() {
            return self.checkpoint_sha256.eq_ignore_ascii_case(&other.checkpoint_sha256);
        }
        self.model_id == other.model_id && self.checkpoint_sha256 == other.checkpoint_sha256
    }
}

/// A contiguous block of rows: ids and vectors, as stored (or normalised, see
/// [`RowBlock::normalise`]).
#[derive(Clone, Debug, PartialEq)]
pub struct RowBlock {
    /// Index of the first row in the file.
    pub start: usize,
    pub ids: Vec<String>,
    pub rows: Vec<f32>, // (n, dim)
    pub dim: usize,
}

impl RowBlock {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    pub fn row(&self, i: usize) -> &[f32] {
        &self.rows[i * self.dim..(i + 1) * self.dim]
    }

    /// Scale every row to unit L2 norm, rejecting non-finite values and zero rows (errors name
    /// the file `source`, the row and the id). One pass: the sum of squares is accumulated in f64
    /// over 8 fixed lanes (vectorisable, and the same bits for a row whichever block it is read
    /// in); it is non-finite exactly when some value is (f32 squares cannot overflow f64).
    pub fn normalise(&mut self, source: &Path) -> Result<()> {
        let dim = self.dim;
        for (i, row) in self.rows.chunks_exact_mut(dim).enumerate() {
            let mut lanes = [0.0f64; 8];
            let mut chunks = row.chunks_exact(8);
            for c in &mut chunks {
                for l in 0..8 {
                    lanes[l] += c[l] as f64 * c[l] as f64;
                }
            }
            for (l, &x) in chunks.remainder().iter().enumerate() {
                lanes[l] += x as f64 * x as f64;
            }
            let sumsq = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
            if !sumsq.is_finite() {
                let col = row.iter().position(|x| !x.is_finite()).unwrap_or(0);
                bail!(
                    "{}: row {} (id '{}') has a non-finite value ({}) in column {col}",
                    source.display(),
                    self.start + i,
                    self.ids[i],
                    row[col]
                );
            }
            if sumsq == 0.0 {
                bail!(
                    "{}: row {} (id '{}') has zero norm; cosine similarity is undefined for it",
                    source.display(),
                    self.start + i,
                    self.ids[i]
                );
            }
            // Scale in f64 and round once: within half an ulp of the exact quotient.
            let inv = 1.0 / sumsq.sqrt();
            for x in row.iter_mut() {
                *x = (*x as f64 * inv) as f32;
            }
        }
        Ok(())
    }
}

/// Reject non-finite values, naming the file, row and id.
fn check_finite(source: &Path, start: usize, ids: &[String], rows: &[f32], dim: usize) -> Result<()> {
    for (i, row) in rows.chunks_exact(dim).enumerate() {
        if let Some(col) = row.iter().position(|x| !x.is_finite()) {
            bail!(
                "{}: row {} (id '{}') has a non-finite value ({}) in column {col}",
                source.display(),
                start + i,
                ids[i],
                row[col]
            );
        }
    }
    Ok(())
}

/// Streaming reader. Opening validates the schema and shapes; rows are read in blocks.
pub struct EmbeddingsReader {
    path: PathBuf,
    meta: EmbeddingsMeta,
    len: usize,
    dim: usize,
    storage: Storage,
}

/// Where the rows come from.
enum Storage {
    /// An HDF5 embeddings file, streamed. `float64`: the vectors are float64 (numpy/h5py's
    /// default), converted to f32 on read.
    Hdf5 { ids: hdf5::Dataset, id_type: IdType, embeddings: hdf5::Dataset, float64: bool },
    /// `PREFIX.npy` + `PREFIX.ids.txt` (what numpy pipelines write), read whole by
    /// `io::npy::read_embeddings` — as `np.load` would; (len, dim) row-major.
    Npy { ids: Vec<String>, rows: Vec<f32> },
}

/// How the `ids` dataset stores its strings. multimat writes variable-length UTF-8; other tools
/// (h5py, numpy `S`/`U` arrays) write variable-length ASCII (Python `bytes`) or fixed-length
/// strings, which are read into the fixed buffers below (HDF5 converts between fixed-length
/// string sizes, not between fixed and variable length).
#[derive(Clone, Copy, Debug)]
enum IdType {
    VarUtf8,
    VarAscii,
    FixedAscii,
    FixedUtf8,
}

/// Longest fixed-length id or string attribute read, in bytes (material ids are ~10 bytes).
const MAX_FIXED_STRING: usize = 256;

fn read_str_attr(file: &hdf5::File, path: &Path, name: &str) -> Result<String> {
    let attr = file.attr(name).map_err(|_| {
        anyhow::anyhow!(
            "{}: missing attribute '{name}' (is this a multimat embeddings file? see data-specs/embeddings-v1.md)",
            path.display()
        )
    })?;
    // Any string type: h5py writes `str` as variable-length UTF-8, `bytes`/numpy `S` as ASCII.
    let r = attr.as_reader();
    r.read_scalar::<VarLenUnicode>()
        .map(|v| v.as_str().to_owned())
        .or_else(|_| r.read_scalar::<VarLenAscii>().map(|v| v.as_str().to_owned()))
        .or_else(|_| r.read_scalar::<FixedAscii<MAX_FIXED_STRING>>().map(|v| v.as_str().to_owned()))
        .or_else(|_| r.read_scalar::<FixedUnicode<MAX_FIXED_STRING>>().map(|v| v.as_str().to_owned()))
        .ok()
    .with_context(|| format!("{}: attribute '{name}' is not a string", path.display()))
}

/// An informational attribute: its value, or `default` when the file lacks it (files written
/// by other tools often carry only what defines the vectors).
fn read_str_attr_or(file: &hdf5::File, path: &Path, name: &str, default: &str) -> Result<String> {
    if file.attr(name).is_err() {
        return Ok(default.to_string());
    }
    read_str_attr(file, path, name)
}

fn read_u32_attr(file: &hdf5::File, path: &Path, name: &str) -> Result<u32> {
    let attr = file.attr(name).map_err(|_| {
        anyhow::anyhow!(
            "{}: missing attribute '{name}' (is this a multimat embeddings file? see data-specs/embeddings-v1.md)",
            path.display()
        )
    })?;
    attr.as_reader()
        .read_scalar::<u32>()
        .with_context(|| format!("{}: attribute '{name}' is not an unsigned integer", path.display()))
}

impl EmbeddingsReader {
    /// Open and validate an embeddings file: schema name and version, attributes, dataset
    /// shapes, at least one row. Row values are checked as blocks are read.
    pub fn open(path: &Path) -> Result<Self> {
        if path.extension().is_some_and(|e| e == "npy") {
            return Self::open_npy(path);
        }
        let size = std::fs::metadata(path)
            .with_context(|| format!("{}: cannot read embeddings file", path.display()))?
            .len();
        if size == 0 {
            bail!("{}: the file is empty (0 bytes), not an HDF5 embeddings file", path.display());
        }
        crate::shard::hdf5_without_file_locking();
        let file = hdf5::File::open(path)
            .with_context(|| format!("{}: not a readable HDF5 file", path.display()))?;
        let schema = read_str_attr(&file, path, "schema")?;
        ensure!(
            schema == SCHEMA_NAME,
            "{}: attribute schema = '{schema}', expected '{SCHEMA_NAME}'",
            path.display()
        );
        let version = read_u32_attr(&file, path, "schema_version")?;
        ensure!(
            version == SCHEMA_VERSION,
            "{}: schema_version {version} is not supported (this build reads version {SCHEMA_VERSION})",
            path.display()
        );
        // What defines the vectors (schema, version, modality) is required; the model's label,
        // checkpoint hash, producer, `normalised` and `dim` are informational and may be absent
        // (the screen re-normalises and takes the dimension from the dataset anyway).
        let normalised = if file.attr("normalised").is_ok() { read_u32_attr(&file, path, "normalised")? } else { 0 };
        ensure!(normalised <= 1, "{}: attribute normalised = {normalised}, expected 0 or 1", path.display());
        let meta = EmbeddingsMeta {
            modality: read_str_attr(&file, path, "modality")?,
            model_id: read_str_attr_or(&file, path, "model_id", "")?,
            checkpoint_sha256: read_str_attr_or(&file, path, "checkpoint_sha256", "")?,
            normalised: normalised == 1,
            producer: read_str_attr_or(&file, path, "producer", "")?,
        };
        ensure!(
            MODALITIES.contains(&meta.modality.as_str()),
            "{}: unknown modality '{}' (expected one of {})",
            path.display(),
            meta.modality,
            MODALITIES.join(", ")
        );
        let dim_attr = if file.attr("dim").is_ok() { Some(read_u32_attr(&file, path, "dim")? as usize) } else { None };
        let missing = |name: &str| {
            anyhow::anyhow!(
                "{}: missing dataset '{name}' (is this a multimat embeddings file? see data-specs/embeddings-v1.md)",
                path.display()
            )
        };
        let embeddings = file.dataset("embeddings").map_err(|_| missing("embeddings"))?;
        let ids = file.dataset("ids").map_err(|_| missing("ids"))?;
        let shape = embeddings.shape();
        ensure!(
            shape.len() == 2,
            "{}: dataset 'embeddings' has shape {shape:?}, expected (N, D)",
            path.display()
        );
        let float64 = match embeddings.dtype() {
            Ok(t) if t.is::<f32>() => false,
            Ok(t) if t.is::<f64>() => true,
            Ok(t) => bail!(
                "{}: dataset 'embeddings' is {:?}, expected float32 (or float64, converted)",
                path.display(),
                t.to_descriptor().map(|d| d.to_string()).unwrap_or_else(|_| "of an unknown type".into())
            ),
            Err(e) => bail!("{}: dataset 'embeddings': unreadable type: {e}", path.display()),
        };
        let (len, dim) = (shape[0], shape[1]);
        if let Some(dim_attr) = dim_attr {
            ensure!(
                dim == dim_attr,
                "{}: attribute dim = {dim_attr} but dataset 'embeddings' has {dim} columns",
                path.display()
            );
        }
        ensure!(dim > 0, "{}: embeddings have dimension 0", path.display());
        let id_shape = ids.shape();
        ensure!(
            id_shape == [len],
            "{}: dataset 'ids' has shape {id_shape:?} but 'embeddings' has {len} rows",
            path.display()
        );
        ensure!(len > 0, "{}: the file holds no embeddings (0 rows)", path.display());
        use hdf5::types::TypeDescriptor as TD;
        let id_type = match ids.dtype().and_then(|t| t.to_descriptor()) {
            Ok(TD::VarLenUnicode) => IdType::VarUtf8,
            Ok(TD::VarLenAscii) => IdType::VarAscii,
            Ok(TD::FixedAscii(n)) if n <= MAX_FIXED_STRING => IdType::FixedAscii,
            Ok(TD::FixedUnicode(n)) if n <= MAX_FIXED_STRING => IdType::FixedUtf8,
            Ok(TD::FixedAscii(n) | TD::FixedUnicode(n)) => {
                bail!("{}: dataset 'ids' holds {n}-byte fixed-length strings; at most {MAX_FIXED_STRING} are read", path.display())
            }
            Ok(other) => bail!("{}: dataset 'ids' holds {other}, expected strings", path.display()),
            Err(e) => bail!("{}: dataset 'ids': unreadable type: {e}", path.display()),
        };
        let reader = EmbeddingsReader { path: path.to_path_buf(), meta, len, dim, storage: Storage::Hdf5 { ids, id_type, embeddings, float64 } };
        reader.check_ids()?;
        Ok(reader)
    }

    /// `PREFIX.npy` (2-D float32 or float64) + `PREFIX.ids.txt` (one id per line). Such a pair
    /// carries no modality or model identity: the modality reads as `unspecified` and the model
    /// as unknown, so screening it against a multimat file needs `--allow-model-mismatch`.
    fn open_npy(path: &Path) -> Result<Self> {
        let (npy, ids_path) = crate::text::npy::embedding_paths(path);
        ensure!(ids_path.exists(), "{}: no ids file {} beside it (one material id per line, in row order)", npy.display(), ids_path.display());
        let pairs = crate::io::npy::read_embeddings(&npy, &ids_path)?;
        ensure!(!pairs.is_empty(), "{}: the file holds no embeddings (0 rows)", npy.display());
        let dim = pairs[0].1.len();
        let (ids, rows): (Vec<String>, Vec<Vec<f32>>) = pairs.into_iter().unzip();
        let meta = EmbeddingsMeta {
            modality: "unspecified".into(),
            model_id: String::new(),
            checkpoint_sha256: String::new(),
            normalised: false,
            producer: format!("{} + {}", npy.display(), ids_path.display()),
        };
        let len = ids.len();
        Ok(EmbeddingsReader { path: npy, meta, len, dim, storage: Storage::Npy { ids, rows: rows.concat() } })
    }

    /// Every id non-empty and unique, as the writer guarantees: an empty or repeated id would
    /// otherwise reach `hits.csv`. Streams the ids in blocks and keeps one 64-bit hash per row
    /// (8 bytes/row, so 10⁸ candidates cost 0.8 GB at most), confirming a hash match by the ids.
    fn check_ids(&self) -> Result<()> {
        use std::hash::{Hash, Hasher};
        let mut hashes: Vec<(u64, usize)> = Vec::with_capacity(self.len);
        for rows in block_ranges(0..self.len, 1 << 20) {
            let start = rows.start;
            for (k, id) in self.read_ids(rows)?.iter().enumerate() {
                ensure!(!id.is_empty(), "{}: row {} has an empty id", self.path.display(), start + k);
                let mut h = std::collections::hash_map::DefaultHasher::new();
                id.hash(&mut h);
                hashes.push((h.finish(), start + k));
            }
        }
        hashes.sort_unstable();
        for w in hashes.windows(2) {
            if w[0].0 == w[1].0 {
                let a = self.read_ids(w[0].1..w[0].1 + 1)?;
                let b = self.read_ids(w[1].1..w[1].1 + 1)?;
                ensure!(a != b, "{}: id '{}' appears twice (rows {} and {})", self.path.display(), a[0], w[0].1, w[1].1);
            }
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn meta(&self) -> &EmbeddingsMeta {
        &self.meta
    }
    /// Number of rows (materials).
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Ids of rows `rows`.
    pub fn read_ids(&self, rows: Range<usize>) -> Result<Vec<String>> {
        ensure!(rows.end <= self.len, "{}: rows {rows:?} out of range (N = {})", self.path.display(), self.len);
        let context = || format!("{}: reading ids of rows {rows:?}", self.path.display());
        let (ids, id_type) = match &self.storage {
            Storage::Hdf5 { ids, id_type, .. } => (ids, *id_type),
            Storage::Npy { ids, .. } => return Ok(ids[rows].to_vec()),
        };
        let ids: Vec<String> = match id_type {
            IdType::VarUtf8 => ids.read_slice_1d::<VarLenUnicode, _>(rows.clone()).with_context(context)?.iter().map(|s| s.as_str().to_owned()).collect(),
            IdType::VarAscii => ids.read_slice_1d::<VarLenAscii, _>(rows.clone()).with_context(context)?.iter().map(|s| s.as_str().to_owned()).collect(),
            IdType::FixedAscii => ids.read_slice_1d::<FixedAscii<MAX_FIXED_STRING>, _>(rows.clone()).with_context(context)?.iter().map(|s| s.as_str().to_owned()).collect(),
            IdType::FixedUtf8 => ids.read_slice_1d::<FixedUnicode<MAX_FIXED_STRING>, _>(rows.clone()).with_context(context)?.iter().map(|s| s.as_str().to_owned()).collect(),
        };
        Ok(ids)
    }

    /// Read rows `rows` (ids and raw vectors), rejecting non-finite values.
    pub fn read_block(&self, rows: Range<usize>) -> Result<RowBlock> {
        let block = self.read_block_unchecked(rows)?;
        check_finite(&self.path, block.start, &block.ids, &block.rows, self.dim)?;
        Ok(block)
    }

    fn read_block_unchecked(&self, rows: Range<usize>) -> Result<RowBlock> {
        let ids = self.read_ids(rows.clone())?;
        let context = || format!("{}: reading embeddings of rows {rows:?}", self.path.display());
        let (embeddings, float64) = match &self.storage {
            Storage::Hdf5 { embeddings, float64, .. } => (embeddings, *float64),
            Storage::Npy { rows: all, .. } => {
                let raw = all[rows.start * self.dim..rows.end * self.dim].to_vec();
                return Ok(RowBlock { start: rows.start, ids, rows: raw, dim: self.dim });
            }
        };
        let raw: Vec<f32> = if float64 {
            // Rounded to the nearest f32; a value beyond f32's range becomes ±inf and is refused
            // by the finiteness check with its row and id like any other non-finite value.
            let data = embeddings.read_slice_2d::<f64, _>(s![rows.start..rows.end, ..]).with_context(context)?;
            data.iter().map(|&v| v as f32).collect()
        } else {
            let data = embeddings.read_slice_2d::<f32, _>(s![rows.start..rows.end, ..]).with_context(context)?;
            let (raw, offset) = data.into_raw_vec_and_offset();
            debug_assert!(offset.unwrap_or(0) == 0);
            raw
        };
        Ok(RowBlock { start: rows.start, ids, rows: raw, dim: self.dim })
    }

    /// Read rows `rows` and L2-normalise them (errors on non-finite values and zero rows).
    pub fn read_block_normalised(&self, rows: Range<usize>) -> Result<RowBlock> {
        let mut block = self.read_block_unchecked(rows)?;
        block.normalise(&self.path)?;
        Ok(block)
    }

    /// Every row, normalised.
    pub fn read_all_normalised(&self) -> Result<RowBlock> {
        self.read_block_normalised(0..self.len)
    }

    /// Iterate over `range` in blocks of at most `block_rows` rows.
    pub fn blocks(&self, range: Range<usize>, block_rows: usize) -> impl Iterator<Item = Result<RowBlock>> + '_ {
        block_ranges(range, block_rows).map(move |r| self.read_block(r))
    }
}

/// Split `range` into consecutive sub-ranges of at most `block` elements.
pub fn block_ranges(range: Range<usize>, block: usize) -> impl Iterator<Item = Range<usize>> {
    let block = block.max(1);
    (range.start..range.end).step_by(block).map(move |s| s..(s + block).min(range.end))
}

/// Check that queries and candidates can be compared: same dimension always; same model and
/// checkpoint unless `allow_model_mismatch`.
pub fn check_compatible(
    queries: &EmbeddingsReader,
    candidates: &EmbeddingsReader,
    allow_model_mismatch: bool,
) -> Result<()> {
    ensure!(
        queries.dim() == candidates.dim(),
        "dimension mismatch: queries {} have {}-d embeddings but candidates {} have {}-d",
        queries.path().display(),
        queries.dim(),
        candidates.path().display(),
        candidates.dim()
    );
    if !allow_model_mismatch && !queries.meta().same_model(candidates.meta()) {
        bail!(
            "model mismatch: queries {} come from {} but candidates {} come from {}; embeddings of \
             different models live in different latent spaces, so their cosine similarities mean \
             nothing. Pass --allow-model-mismatch to screen anyway.",
            queries.path().display(),
            queries.meta().model_identity(),
            candidates.path().display(),
            candidates.meta().model_identity()
        );
    }
    Ok(())
}

/// Appends rows to an embeddings file being written; obtained from [`EmbeddingsWriter::write_with`].
pub struct EmbeddingsWriter {
    target: PathBuf,
    ids_ds: hdf5::Dataset,
    emb_ds: hdf5::Dataset,
    dim: usize,
    len: usize,
    normalise: bool,
    seen: HashSet<String>,
}

impl EmbeddingsWriter {
    /// Write an embeddings file atomically: `fill` appends rows through the writer; the file
    /// appears under `path` only if `fill` succeeds and at least one row was written. If
    /// `meta.normalised` the writer L2-normalises each row before storing it. Returns the row
    /// count.
    pub fn write_with<F>(path: &Path, meta: &EmbeddingsMeta, dim: usize, fill: F) -> Result<usize>
    where
        F: FnOnce(&mut EmbeddingsWriter) -> Result<()>,
    {
        ensure!(dim > 0, "{}: embedding dimension must be positive", path.display());
        ensure!(
            MODALITIES.contains(&meta.modality.as_str()),
            "{}: unknown modality '{}' (expected one of {})",
            path.display(),
            meta.modality,
            MODALITIES.join(", ")
        );
        let mut written = 0;
        crate::atomic::write_with(path, |tmp| {
            crate::shard::hdf5_without_file_locking();
            let file = hdf5::File::create(tmp).with_context(|| format!("creating {}", tmp.display()))?;
            let put_str = |name: &str, value: &str| -> Result<()> {
                let v = VarLenUnicode::from_str(value)
                    .map_err(|e| anyhow::anyhow!("attribute {name}: {e}"))?;
                file.new_attr::<VarLenUnicode>().shape(()).create(name)?.as_writer().write_scalar(&v)?;
                Ok(())
            };
            let put_u32 = |name: &str, value: u32| -> Result<()> {
                file.new_attr::<u32>().shape(()).create(name)?.as_writer().write_scalar(&value)?;
                Ok(())
            };
            put_str("schema", SCHEMA_NAME)?;
            put_u32("schema_version", SCHEMA_VERSION)?;
            put_str("modality", &meta.modality)?;
            put_str("model_id", &meta.model_id)?;
            put_str("checkpoint_sha256", &meta.checkpoint_sha256)?;
            put_str("producer", &meta.producer)?;
            put_u32("normalised", meta.normalised as u32)?;
            put_u32("dim", u32::try_from(dim).context("dimension too large")?)?;
            // No compression: trained embeddings are incompressible floats and deflate would
            // cost the streaming reader more than the disk it saves.
            let emb_ds = file
                .new_dataset::<f32>()
                .chunk((CHUNK_ROWS, dim))
                .shape((0.., dim))
                .create("embeddings")?;
            let ids_ds = file
                .new_dataset::<VarLenUnicode>()
                .chunk(CHUNK_ROWS)
                .shape(0..)
                .create("ids")?;
            let mut writer = EmbeddingsWriter {
                target: path.to_path_buf(),
                ids_ds,
                emb_ds,
                dim,
                len: 0,
                normalise: meta.normalised,
                seen: HashSet::new(),
            };
            fill(&mut writer)?;
            ensure!(writer.len > 0, "refusing to write an embeddings file with no rows");
            written = writer.len;
            drop(writer);
            file.close()?;
            Ok(())
        })?;
        Ok(written)
    }

    /// Append `ids.len()` rows; `rows` is (n, dim) row-major. Ids must be unique non-empty
    /// strings without NUL; values finite; rows non-zero.
    pub fn append<S: AsRef<str>>(&mut self, ids: &[S], rows: &[f32]) -> Result<()> {
        let n = ids.len();
        let target = self.target.display().to_string();
        ensure!(
            rows.len() == n * self.dim,
            "{target}: appending {n} ids with {} values, expected {} ({n} × {})",
            rows.len(),
            n * self.dim,
            self.dim
        );
        if n == 0 {
            return Ok(());
        }
        let mut owned_ids = Vec::with_capacity(n);
        let mut h5_ids = Vec::with_capacity(n);
        for (i, id) in ids.iter().enumerate() {
            let id = id.as_ref();
            ensure!(!id.is_empty(), "{target}: row {} has an empty id", self.len + i);
            let v = VarLenUnicode::from_str(id)
                .map_err(|_| anyhow::anyhow!("{target}: row {} id contains a NUL character", self.len + i))?;
            ensure!(self.seen.insert(id.to_owned()), "{target}: duplicate id '{id}' at row {}", self.len + i);
            owned_ids.push(id.to_owned());
            h5_ids.push(v);
        }
        let mut block = RowBlock { start: self.len, ids: owned_ids, rows: rows.to_vec(), dim: self.dim };
        check_finite(&self.target, self.len, &block.ids, &block.rows, self.dim)?;
        if self.normalise {
            block.normalise(&self.target)?;
        } else {
            // Still reject zero rows: the file is useless for cosine screening with them.
            for i in 0..n {
                ensure!(
                    block.row(i).iter().any(|&x| x != 0.0),
                    "{target}: row {} (id '{}') is all zeros",
                    self.len + i,
                    block.ids[i]
                );
            }
        }
        let new_len = self.len + n;
        self.emb_ds.resize((new_len, self.dim))?;
        self.ids_ds.resize(new_len)?;
        let view = ArrayView2::from_shape((n, self.dim), &block.rows)?;
        self.emb_ds.write_slice(view, s![self.len..new_len, ..])?;
        self.ids_ds.write_slice(ArrayView1::from(&h5_ids), s![self.len..new_len])?;
        self.len = new_len;
        Ok(())
    }

    /// Rows written so far.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Write a whole in-memory set of embeddings (ids, (n, dim) rows) atomically.
pub fn write_embeddings<S: AsRef<str>>(
    path: &Path,
    meta: &EmbeddingsMeta,
    dim: usize,
    ids: &[S],
    rows: &[f32],
) -> Result<()> {
    EmbeddingsWriter::write_with(path, meta, dim, |w| {
        for (chunk_ids, chunk_rows) in ids.chunks(CHUNK_ROWS * 16).zip(rows.chunks(CHUNK_ROWS * 16 * dim)) {
            w.append(chunk_ids, chunk_rows)?;
        }
        Ok(())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> EmbeddingsMeta {
        EmbeddingsMeta {
            modality: "crystal".into(),
            model_id: "m1".into(),
            checkpoint_sha256: "ab".repeat(32),
            normalised: false,
            producer: "test".into(),
        }
    }

    #[test]
    fn round_trip_in_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.h5");
        let n = 2500;
        let dim = 3;
        let ids: Vec<String> = (0..n).map(|i| format!("mp-{i}")).collect();
        let rows: Vec<f32> = (0..n * dim).map(|i| (i % 97) as f32 - 40.5).collect();
        write_embeddings(&p, &meta(), dim, &ids, &rows).unwrap();
        let r = EmbeddingsReader::open(&p).unwrap();
        assert_eq!((r.len(), r.dim()), (n, dim));
        assert_eq!(r.meta(), &meta());
        let mut got_ids = vec![];
        let mut got_rows = vec![];
        for b in r.blocks(0..n, 777) {
            let b = b.unwrap();
            got_ids.extend(b.ids);
            got_rows.extend(b.rows);
        }
        assert_eq!(got_ids, ids);
        assert_eq!(got_rows, rows);
    }

    #[test]
    fn writer_rejects_duplicates_nan_and_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.h5");
        let err = write_embeddings(&p, &meta(), 2, &["a", "a"], &[1.0, 0.0, 0.0, 1.0]).unwrap_err();
        assert!(format!("{err:#}").contains("duplicate id 'a'"), "{err:#}");
        let err = write_embeddings(&p, &meta(), 2, &["a", "b"], &[1.0, 0.0, f32::NAN, 1.0]).unwrap_err();
        assert!(format!("{err:#}").contains("row 1 (id 'b') has a non-finite value"), "{err:#}");
        let err = write_embeddings::<&str>(&p, &meta(), 2, &[], &[]).unwrap_err();
        assert!(format!("{err:#}").contains("no rows"), "{err:#}");
        assert!(!p.exists(), "failed writes must leave no file");
    }

    #[test]
    fn normalising_writer_stores_unit_rows() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.h5");
        let m = EmbeddingsMeta { normalised: true, ..meta() };
        write_embeddings(&p, &m, 2, &["a", "b"], &[3.0, 4.0, 0.0, -2.0]).unwrap();
        let b = EmbeddingsReader::open(&p).unwrap().read_block(0..2).unwrap();
        assert_eq!(b.rows, vec![0.6, 0.8, 0.0, -1.0]);
    }
}
