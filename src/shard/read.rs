//! Reading shards: open, check the schema version, and bulk-load a whole shard into columns.
//!
//! Training consumes every record of a shard at once, so [`ShardReader::load`] reads each dataset
//! whole (one HDF5 read per dataset, no per-record calls) into flat vectors; [`ShardData::record`]
//! materialises one record when a caller wants the row view.

use super::checksum::{dataset_sha256, strings_sha256, LeBytes};
use super::stream::DensityRows;
use super::{
    paths, EmbeddingSpec, IngestInfo, ShardMeta, ShardRecord, TargetSpec, FORMAT_NAME, MODALITIES, SCHEMA_VERSION,
};
use crate::crystal::{CrystalGraphs, EdgeList, InfiniteEdges, GraphParams};
use crate::material::{ProcessedDos, Provenance, Structure, TextEmbedding};
use crate::preprocess::PreprocessParams;
use anyhow::{anyhow, bail, Context, Result};
use hdf5::types::VarLenUnicode;
use hdf5::H5Type;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What to check while reading a dataset besides dtype and shape.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Checks {
    /// Recompute the sha256 of the values and compare with the `sha256` attribute.
    pub checksum: bool,
    /// Require chunked layout and deflate compression (non-empty datasets).
    pub layout: bool,
}

/// Read a numeric dataset whole, checking dtype and shape (`None` = any extent). Fatal problems
/// (missing, wrong dtype/rank/extent, unreadable) are `Err`; others are pushed to `problems`.
pub(crate) fn read_numeric<T: H5Type + LeBytes + ParallelDecode>(
    file: &hdf5::File,
    path: &str,
    expected: &[Option<usize>],
    checks: Checks,
    problems: &mut Vec<String>,
) -> std::result::Result<(Vec<T>, Vec<usize>), String> {
    let ds = open_checked::<T>(file, path, expected, checks, problems)?;
    let shape = ds.shape();
    let values: Vec<T> = match T::parallel_decode(&ds) {
        Some(result) => result?,
        None => ds.read_raw::<T>().map_err(|e| format!("cannot read values: {e}"))?,
    };
    if checks.checksum {
        check_sha(&ds, &dataset_sha256(&values), problems);
    }
    Ok((values, shape))
}

/// Element types whose chunks can be decoded outside HDF5 (see [`decode_chunks_parallel`]).
pub(crate) trait ParallelDecode: Sized {
    /// `None` when the dataset's layout is not one the parallel path handles (HDF5 reads it).
    fn parallel_decode(_ds: &hdf5::Dataset) -> Option<std::result::Result<Vec<Self>, String>> {
        None
    }
}
impl ParallelDecode for u8 {}
impl ParallelDecode for u32 {}
impl ParallelDecode for i32 {}
impl ParallelDecode for i64 {}
impl ParallelDecode for u64 {}
impl ParallelDecode for f64 {}
impl ParallelDecode for f32 {
    fn parallel_decode(ds: &hdf5::Dataset) -> Option<std::result::Result<Vec<Self>, String>> {
        decode_chunks_parallel(ds)
    }
}

/// Decode a shuffle+deflate f32 dataset chunked one row per chunk (the charge density) with
/// rayon. HDF5 serialises every call behind one global lock, so its own read inflates chunk after
/// chunk on one core; here HDF5 only says where each chunk lies (address, size), the compressed
/// bytes are read with positional reads, and the inflate (zlib format, as HDF5's deflate filter
/// writes it) + unshuffle run in parallel. Any other layout returns `None` and HDF5 reads it.
fn decode_chunks_parallel(ds: &hdf5::Dataset) -> Option<std::result::Result<Vec<f32>, String>> {
    use rayon::prelude::*;
    use std::os::unix::fs::FileExt;

    let (row_len, where_) = row_chunks(ds)?;
    let rows = where_.len();
    if rows < 2 {
        return None;
    }
    let file = match std::fs::File::open(ds.filename()) {
        Ok(f) => f,
        Err(_) => return None,
    };
    let mut out = vec![0f32; rows * row_len]; // (rows, row_len)
    let result = out.par_chunks_mut(row_len).zip(where_.par_iter()).enumerate().try_for_each(|(row, (dst, &(addr, size)))| {
        let mut packed = vec![0u8; size as usize];
        file.read_exact_at(&mut packed, addr).map_err(|e| format!("row {row}: reading chunk: {e}"))?;
        unpack_row(&packed, dst).map_err(|e| format!("row {row}: {e}"))
    });
    Some(result.map(|()| out))
}

/// Where each row's chunk of an (N, …) f32 dataset lies in the file, `(address, size)` per row,
/// and the row length — when the dataset is chunked one row per chunk with shuffle + deflate,
/// little-endian, every chunk allocated and filtered (the layout the writer gives the charge
/// density). `None` for any other layout: callers then let HDF5 read the dataset.
pub(crate) fn row_chunks(ds: &hdf5::Dataset) -> Option<(usize, Vec<(u64, u64)>)> {
    use hdf5::filters::Filter;
    let shape = ds.shape();
    let rows = *shape.first()?;
    let row_len: usize = shape[1..].iter().product();
    let chunk = ds.chunk()?;
    let pipeline = ds.filters();
    let one_row_chunks = chunk.first() == Some(&1) && chunk[1..] == shape[1..];
    if rows == 0 || row_len == 0 || !one_row_chunks || !matches!(pipeline.as_slice(), [Filter::Shuffle, Filter::Deflate(_)]) {
        return None;
    }
    let little_endian = ds.dtype().is_ok_and(|t| matches!(t.byte_order(), hdf5::datatype::ByteOrder::LittleEndian));
    if !little_endian || ds.num_chunks()? != rows {
        return None; // unallocated chunks (fill values): let HDF5 handle them
    }
    // A chunk with a skipped filter goes back to HDF5.
    let mut where_ = vec![(0u64, 0u64); rows];
    for k in 0..rows {
        let info = ds.chunk_info(k)?;
        if info.filter_mask != 0 {
            return None;
        }
        *where_.get_mut(*info.offset.first()? as usize)? = (info.addr, info.size);
    }
    Some((row_len, where_))
}

/// Inflate (zlib format, as HDF5's deflate filter writes it, Adler-32 checked) and unshuffle one
/// row's chunk of f32 values into `dst`.
pub(crate) fn unpack_row(packed: &[u8], dst: &mut [f32]) -> std::result::Result<(), String> {
    use std::io::Read;
    let row_len = dst.len();
    let mut shuffled = Vec::with_capacity(row_len * 4);
    flate2::read::ZlibDecoder::new(packed)
        .read_to_end(&mut shuffled)
        .map_err(|e| format!("corrupt compressed chunk: {e}"))?;
    if shuffled.len() != row_len * 4 {
        return Err(format!("chunk inflates to {} bytes, expected {}", shuffled.len(), row_len * 4));
    }
    // Shuffle stored byte j of element k at j·row_len + k.
    for (k, v) in dst.iter_mut().enumerate() {
        *v = f32::from_le_bytes([shuffled[k], shuffled[row_len + k], shuffled[2 * row_len + k], shuffled[3 * row_len + k]]);
    }
    Ok(())
}

/// Read a 1-D variable-length UTF-8 string dataset.
pub(crate) fn read_strings(
    file: &hdf5::File,
    path: &str,
    expected_len: Option<usize>,
    checks: Checks,
    problems: &mut Vec<String>,
) -> std::result::Result<Vec<String>, String> {
    let ds = open_checked::<VarLenUnicode>(file, path, &[expected_len], checks, problems)?;
    let values: Vec<String> = ds
        .read_raw::<VarLenUnicode>()
        .map_err(|e| format!("cannot read strings: {e}"))?
        .into_iter()
        .map(|s| s.as_str().to_owned())
        .collect();
    if checks.checksum {
        check_sha(&ds, &strings_sha256(&values), problems);
    }
    Ok(values)
}

fn open_checked<T: H5Type>(
    file: &hdf5::File,
    path: &str,
    expected: &[Option<usize>],
    checks: Checks,
    problems: &mut Vec<String>,
) -> std::result::Result<hdf5::Dataset, String> {
    if !file.link_exists(path) {
        return Err("dataset is missing".into());
    }
    let ds = file.dataset(path).map_err(|e| format!("cannot open dataset: {e}"))?;
    let want = T::type_descriptor();
    let have = ds.dtype().and_then(|t| t.to_descriptor()).map_err(|e| format!("unreadable dtype: {e}"))?;
    if have != want {
        return Err(format!("dtype is {have}, expected {want}"));
    }
    let shape = ds.shape();
    let shape_ok = shape.len() == expected.len() && shape.iter().zip(expected).all(|(s, e)| e.is_none_or(|e| e == *s));
    if !shape_ok {
        let want: Vec<String> = expected.iter().map(|e| e.map_or("*".to_string(), |e| e.to_string())).collect();
        return Err(format!("shape {shape:?}, expected [{}]", want.join(", ")));
    }
    if checks.layout && ds.size() > 0 {
        if !ds.is_chunked() {
            problems.push("dataset is not chunked".into());
        }
        if !ds.filters().iter().any(|f| matches!(f, hdf5::filters::Filter::Deflate(_))) {
            problems.push("dataset is not deflate-compressed".into());
        }
    }
    Ok(ds)
}

fn check_sha(ds: &hdf5::Dataset, actual: &str, problems: &mut Vec<String>) {
    match read_attr_str(ds, "sha256") {
        Ok(stored) if stored == actual => {}
        Ok(stored) => problems.push(format!("checksum mismatch: attribute sha256 {stored}, data hashes to {actual}")),
        Err(_) => problems.push("missing sha256 attribute".into()),
    }
}

pub(crate) fn read_attr_str(loc: &hdf5::Location, name: &str) -> Result<String> {
    let attr = loc.attr(name).with_context(|| format!("missing attribute {name}"))?;
    let v: VarLenUnicode = attr.read_scalar().with_context(|| format!("attribute {name} is not a UTF-8 string"))?;
    Ok(v.as_str().to_owned())
}

pub(crate) fn read_attr_u64(loc: &hdf5::Location, name: &str) -> Result<u64> {
    let attr = loc.attr(name).with_context(|| format!("missing attribute {name}"))?;
    attr.read_scalar::<u64>().with_context(|| format!("attribute {name} is not an integer"))
}

/// Root attributes every v1 shard has.
pub(crate) struct RootAttrs {
    pub schema_version: u32,
    pub multimat_version: String,
    pub num_records: u64,
    pub preprocess: PreprocessParams,
    pub graph_params: GraphParams,
}

/// Read root attributes; each failure is reported with the attribute name.
pub(crate) fn read_root_attrs(file: &hdf5::File, problems: &mut Vec<(String, String)>) -> Option<RootAttrs> {
    let mut fail = |attr: &str, msg: String| problems.push((format!("/@{attr}"), msg));
    match read_attr_str(file, "format") {
        Ok(f) if f == FORMAT_NAME => {}
        Ok(f) => fail("format", format!("format is {f:?}, expected {FORMAT_NAME:?}")),
        Err(e) => fail("format", format!("{e:#}")),
    }
    let schema_version = match file.attr("schema_version").and_then(|a| a.read_scalar::<u32>()) {
        Ok(v) if v == SCHEMA_VERSION => Some(v),
        Ok(v) => {
            fail("schema_version", format!("schema version {v}, this build reads {SCHEMA_VERSION}"));
            None
        }
        Err(e) => {
            fail("schema_version", format!("missing or not a u32: {e}"));
            None
        }
    };
    let multimat_version = read_attr_str(file, "multimat_version").map_err(|e| fail("multimat_version", format!("{e:#}"))).ok();
    let num_records = read_attr_u64(file, "num_records").map_err(|e| fail("num_records", format!("{e:#}"))).ok();
    let preprocess = read_attr_str(file, "preprocess_params")
        .and_then(|s| serde_json::from_str::<PreprocessParams>(&s).map_err(|e| anyhow!("not valid PreprocessParams JSON: {e}")))
        .map_err(|e| fail("preprocess_params", format!("{e:#}")))
        .ok();
    let graph_params = read_attr_str(file, "graph_params")
        .and_then(|s| serde_json::from_str::<GraphParams>(&s).map_err(|e| anyhow!("not valid GraphParams JSON: {e}")))
        .map_err(|e| fail("graph_params", format!("{e:#}")))
        .ok();
    Some(RootAttrs {
        schema_version: schema_version?,
        multimat_version: multimat_version?,
        num_records: num_records?,
        preprocess: preprocess?,
        graph_params: graph_params?,
    })
}

/// One periodic edge list in columns, for all records of a shard.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EdgeColumns {
    /// (N+1,) record r owns edges `offsets[r]..offsets[r+1]`.
    pub offsets: Vec<i64>,
    pub src: Vec<u32>,
    pub dst: Vec<u32>,
    /// (E, 3) lattice translation of the source atom.
    pub image: Vec<i32>,
    pub distance: Vec<f32>,
}

/// PotNet's infinite edges in columns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InfiniteColumns {
    pub offsets: Vec<i64>,
    pub src: Vec<u32>,
    pub dst: Vec<u32>,
    pub coulomb: Vec<f64>,
    pub london: Vec<f64>,
    pub pauli: Vec<f64>,
}

/// A whole shard in memory, column-wise (shapes as in the spec).
#[derive(Clone, Debug, PartialEq)]
pub struct ShardData {
    pub path: PathBuf,
    pub schema_version: u32,
    pub multimat_version: String,
    pub meta: ShardMeta,
    pub ids: Vec<String>,
    pub provenance: Vec<Provenance>,
    /// Presence masks in [`MODALITIES`] order, each (N,) of 0/1.
    pub masks: [Vec<u8>; 6],
    pub lattice: Vec<f64>, // (N, 3, 3)
    pub atom_offsets: Vec<i64>, // (N+1,)
    pub species: Vec<u8>, // (A,)
    pub frac_coords: Vec<f64>, // (A, 3)
    pub local: EdgeColumns,
    pub cgcnn: EdgeColumns,
    pub infinite: InfiniteColumns,
    pub dos_energies: Vec<f32>, // (N, P)
    pub dos_densities: Vec<f32>, // (N, P)
    pub dos_repaired: Vec<u32>, // (N,)
    pub charge_density: Vec<f32>, // (N, gx, gy, gz)
    pub descriptions: Vec<String>, // (N,)
    pub text_embedding: Vec<f32>, // (N, D)
    /// Target name → (N, W) values, NaN rows where absent.
    pub targets: BTreeMap<String, Vec<f64>>,
}

/// Options of a bulk load.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// Recompute every dataset's sha256 (costs about as much as decompression; `validate` always does).
    pub verify_checksums: bool,
}

/// An open shard whose root attributes have been checked.
pub struct ShardReader {
    path: PathBuf,
    file: hdf5::File,
    attrs: RootAttrs,
}

impl ShardReader {
    /// Open a shard and check its format name and schema version.
    pub fn open(path: &Path) -> Result<Self> {
        crate::shard::hdf5_without_file_locking();
        let file = hdf5::File::open(path).with_context(|| format!("opening shard {}", path.display()))?;
        let mut problems = Vec::new();
        let attrs = read_root_attrs(&file, &mut problems);
        match attrs {
            Some(attrs) if problems.is_empty() => Ok(ShardReader { path: path.to_owned(), file, attrs }),
            _ => {
                let msgs: Vec<String> = problems.iter().map(|(loc, m)| format!("{loc}: {m}")).collect();
                bail!("{} is not a readable multimat shard v{SCHEMA_VERSION}: {}", path.display(), msgs.join("; "))
            }
        }
    }

    pub fn len(&self) -> usize {
        self.attrs.num_records as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn preprocess_params(&self) -> &PreprocessParams {
        &self.attrs.preprocess
    }

    pub fn graph_params(&self) -> &GraphParams {
        &self.attrs.graph_params
    }

    /// The material ids, in row order (cheap: one small dataset).
    pub fn ids(&self) -> Result<Vec<String>> {
        let checks = Checks { checksum: false, layout: false };
        read_strings(&self.file, paths::IDS, Some(self.len()), checks, &mut Vec::new())
            .map_err(|e| anyhow!("{}: /{}: {e}", self.path.display(), paths::IDS))
    }

    /// Every record's provenance (one small string column: nothing else is read).
    pub fn provenance(&self) -> Result<Vec<Provenance>> {
        let checks = Checks { checksum: false, layout: false };
        let raw = read_strings(&self.file, paths::PROVENANCE, Some(self.len()), checks, &mut Vec::new())
            .map_err(|e| anyhow!("{}: /{}: {e}", self.path.display(), paths::PROVENANCE))?;
        raw.iter()
            .enumerate()
            .map(|(i, s)| {
                serde_json::from_str(s).map(|sources| Provenance { sources }).with_context(|| {
                    format!("{}: /{}: record {i}: provenance is not a JSON object of strings", self.path.display(), paths::PROVENANCE)
                })
            })
            .collect()
    }

    /// The ingest bookkeeping, if an ingest wrote this shard.
    pub fn ingest_info(&self) -> Result<Option<IngestInfo>> {
        read_ingest_info(&self.file, Checks { checksum: false, layout: false })
            .map_err(|e| anyhow!("{}: {e}", self.path.display()))
    }

    /// Read every dataset of the shard into memory.
    pub fn load(&self, opts: LoadOptions) -> Result<ShardData> {
        Ok(self.load_inner(opts, false)?.0)
    }

    /// Read every dataset except the charge density, which is indexed for streamed reads
    /// ([`DensityRows`]; `ShardData::charge_density` is left empty) after the same checks a whole
    /// load runs (checksum with `opts.verify_checksums`, present rows finite). A charge density
    /// not stored one record per chunk (not what this build writes) is loaded whole instead:
    /// then the second value is `None`.
    pub fn load_streamed(&self, opts: LoadOptions) -> Result<(ShardData, Option<DensityRows>)> {
        self.load_inner(opts, true)
    }

    fn load_inner(&self, opts: LoadOptions, stream_density: bool) -> Result<(ShardData, Option<DensityRows>)> {
        let n = self.len();
        let f = &self.file;
        let checks = Checks { checksum: opts.verify_checksums, layout: false };
        let mut problems = Vec::new();
        let ctx = |p: &str| format!("{}: /{p}", self.path.display());
        macro_rules! num {
            ($t:ty, $path:expr, $shape:expr) => {{
                let path: &str = &$path;
                let (v, shape) = read_numeric::<$t>(f, path, &$shape, checks, &mut problems)
                    .map_err(|e| anyhow!("{}: {e}", ctx(path)))?;
                if let Some(p) = problems.pop() {
                    bail!("{}: {p}", ctx(path));
                }
                (v, shape)
            }};
        }
        let strings = |path: &str, problems: &mut Vec<String>| -> Result<Vec<String>> {
            let v = read_strings(f, path, Some(n), checks, problems).map_err(|e| anyhow!("{}: {e}", ctx(path)))?;
            if let Some(p) = problems.pop() {
                bail!("{}: {p}", ctx(path));
            }
            Ok(v)
        };
        let ids = strings(paths::IDS, &mut problems)?;
        let provenance = strings(paths::PROVENANCE, &mut problems)?
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                serde_json::from_str(&s)
                    .map(|sources| Provenance { sources })
                    .with_context(|| format!("{}: record {i}: provenance is not a JSON object of strings", ctx(paths::PROVENANCE)))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut masks: [Vec<u8>; 6] = Default::default();
        for (m, name) in MODALITIES.iter().enumerate() {
            masks[m] = num!(u8, format!("mask/{name}"), [Some(n)]).0;
        }
        let lattice = num!(f64, paths::LATTICE, [Some(n), Some(3), Some(3)]).0;
        let atom_offsets = num!(i64, paths::ATOM_OFFSETS, [Some(n + 1)]).0;
        let species = num!(u8, paths::SPECIES, [None]).0;
        let frac_coords = num!(f64, paths::FRAC_COORDS, [Some(species.len()), Some(3)]).0;
        let mut edge_lists = Vec::new();
        for g in paths::EDGE_LISTS {
            let offsets = num!(i64, format!("{g}/edge_offsets"), [Some(n + 1)]).0;
            let src = num!(u32, format!("{g}/src"), [None]).0;
            let e = src.len();
            edge_lists.push(EdgeColumns {
                offsets,
                dst: num!(u32, format!("{g}/dst"), [Some(e)]).0,
                image: num!(i32, format!("{g}/image"), [Some(e), Some(3)]).0,
                distance: num!(f32, format!("{g}/distance"), [Some(e)]).0,
                src,
            });
        }
        let cgcnn = edge_lists.pop().expect("two edge lists");
        let local = edge_lists.pop().expect("two edge lists");
        let inf = paths::INFINITE;
        let inf_src = num!(u32, format!("{inf}/src"), [None]).0;
        let e = inf_src.len();
        let infinite = InfiniteColumns {
            offsets: num!(i64, format!("{inf}/edge_offsets"), [Some(n + 1)]).0,
            dst: num!(u32, format!("{inf}/dst"), [Some(e)]).0,
            coulomb: num!(f64, format!("{inf}/coulomb"), [Some(e)]).0,
            london: num!(f64, format!("{inf}/london"), [Some(e)]).0,
            pauli: num!(f64, format!("{inf}/pauli"), [Some(e)]).0,
            src: inf_src,
        };
        let p = self.attrs.preprocess.dos_points;
        let dos_energies = num!(f32, paths::DOS_ENERGIES, [Some(n), Some(p)]).0;
        let dos_densities = num!(f32, paths::DOS_DENSITIES, [Some(n), Some(p)]).0;
        let dos_repaired = num!(u32, paths::DOS_REPAIRED, [Some(n)]).0;
        let [gx, gy, gz] = self.attrs.preprocess.density_grid;
        let density_shape = [Some(n), Some(gx), Some(gy), Some(gz)];
        let density_rows = if stream_density {
            let ds = open_checked::<f32>(f, paths::CHARGE_DENSITY, &density_shape, checks, &mut problems)
                .map_err(|e| anyhow!("{}: {e}", ctx(paths::CHARGE_DENSITY)))?;
            DensityRows::open(&ds, &self.path, &ids, &masks[3], checks.checksum)?
        } else {
            None
        };
        let charge_density = match density_rows {
            Some(_) => Vec::new(),
            None => num!(f32, paths::CHARGE_DENSITY, density_shape).0,
        };
        let descriptions = strings(paths::DESCRIPTIONS, &mut problems)?;
        let (text_embedding, emb_shape) = num!(f32, paths::EMBEDDING, [Some(n), None]);
        let text_embedding_spec = if emb_shape[1] == 0 {
            None
        } else {
            let ds = f.dataset(paths::EMBEDDING)?;
            Some(EmbeddingSpec {
                model: read_attr_str(&ds, "model").with_context(|| ctx(paths::EMBEDDING))?,
                weights_sha256: read_attr_str(&ds, "weights_sha256").with_context(|| ctx(paths::EMBEDDING))?,
                dim: emb_shape[1],
            })
        };
        let mut targets = BTreeMap::new();
        let mut target_specs = BTreeMap::new();
        if f.link_exists("targets") {
            for name in f.group("targets")?.member_names()? {
                let path = format!("targets/{name}");
                let (v, shape) = num!(f64, path, [Some(n), None]);
                let ds = f.dataset(&path)?;
                let units = read_attr_str(&ds, "units").with_context(|| ctx(&path))?;
                target_specs.insert(name.clone(), TargetSpec { width: shape[1], units });
                targets.insert(name, v);
            }
        } else {
            bail!("{}: group is missing", ctx("targets"));
        }
        let ingest = read_ingest_info(f, checks).map_err(|e| anyhow!("{}: {e}", self.path.display()))?;
        let data = ShardData {
            path: self.path.clone(),
            schema_version: self.attrs.schema_version,
            multimat_version: self.attrs.multimat_version.clone(),
            meta: ShardMeta {
                preprocess: self.attrs.preprocess.clone(),
                graph_params: self.attrs.graph_params.clone(),
                targets: target_specs,
                text_embedding: text_embedding_spec,
                ingest,
            },
            ids,
            provenance,
            masks,
            lattice,
            atom_offsets,
            species,
            frac_coords,
            local,
            cgcnn,
            infinite,
            dos_energies,
            dos_densities,
            dos_repaired,
            charge_density,
            descriptions,
            text_embedding,
            targets,
        };
        Ok((data, density_rows))
    }
}

pub(crate) fn read_ingest_info(f: &hdf5::File, checks: Checks) -> std::result::Result<Option<IngestInfo>, String> {
    if !f.link_exists("ingest") {
        return Ok(None);
    }
    let g = f.group("ingest").map_err(|e| format!("/ingest: {e}"))?;
    let fingerprint = read_attr_str(&g, "fingerprint").map_err(|e| format!("/ingest: {e:#}"))?;
    let input_start = read_attr_u64(&g, "input_start").map_err(|e| format!("/ingest: {e:#}"))?;
    let input_end = read_attr_u64(&g, "input_end").map_err(|e| format!("/ingest: {e:#}"))?;
    let mut problems = Vec::new();
    let rejects = read_strings(f, paths::INGEST_REJECTS, None, checks, &mut problems)
        .map_err(|e| format!("/{}: {e}", paths::INGEST_REJECTS))?;
    if let Some(p) = problems.pop() {
        return Err(format!("/{}: {p}", paths::INGEST_REJECTS));
    }
    let absent = if f.link_exists(paths::INGEST_ABSENT) {
        let v = read_strings(f, paths::INGEST_ABSENT, None, checks, &mut problems).map_err(|e| format!("/{}: {e}", paths::INGEST_ABSENT))?;
        if let Some(p) = problems.pop() {
            return Err(format!("/{}: {p}", paths::INGEST_ABSENT));
        }
        v
    } else {
        Vec::new()
    };
    Ok(Some(IngestInfo { fingerprint, input_start, input_end, rejects, absent }))
}

impl ShardData {
    /// Bulk-load a whole shard (no checksum verification; see [`LoadOptions`]).
    pub fn load(path: &Path) -> Result<Self> {
        ShardReader::open(path)?.load(LoadOptions::default())
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Whether record `i` has modality `m` (index into [`MODALITIES`]).
    pub fn has(&self, m: usize, i: usize) -> bool {
        self.masks[m][i] != 0
    }

    /// Atom range of record `i` in the flat crystal arrays.
    pub fn atoms(&self, i: usize) -> std::ops::Range<usize> {
        self.atom_offsets[i] as usize..self.atom_offsets[i + 1] as usize
    }

    /// Record `i` as a row. Assumes a shard that passed [`super::validate()`] or was written here.
    pub fn record(&self, i: usize) -> ShardRecord {
        let atoms = self.atoms(i);
        let structure = self.has(0, i).then(|| {
            let l = &self.lattice[i * 9..i * 9 + 9];
            Structure {
                lattice: [[l[0], l[1], l[2]], [l[3], l[4], l[5]], [l[6], l[7], l[8]]],
                species: self.species[atoms.clone()].to_vec(),
                frac_coords: atoms.clone().map(|a| [self.frac_coords[3 * a], self.frac_coords[3 * a + 1], self.frac_coords[3 * a + 2]]).collect(),
            }
        });
        let edges = |c: &EdgeColumns| {
            let r = c.offsets[i] as usize..c.offsets[i + 1] as usize;
            EdgeList {
                src: c.src[r.clone()].to_vec(),
                dst: c.dst[r.clone()].to_vec(),
                image: r.clone().map(|e| [c.image[3 * e], c.image[3 * e + 1], c.image[3 * e + 2]]).collect(),
                distance: c.distance[r].to_vec(),
            }
        };
        let graphs = self.has(1, i).then(|| {
            let c = &self.infinite;
            let r = c.offsets[i] as usize..c.offsets[i + 1] as usize;
            CrystalGraphs {
                local: edges(&self.local),
                cgcnn: edges(&self.cgcnn),
                infinite: InfiniteEdges {
                    src: c.src[r.clone()].to_vec(),
                    dst: c.dst[r.clone()].to_vec(),
                    coulomb: c.coulomb[r.clone()].to_vec(),
                    london: c.london[r.clone()].to_vec(),
                    pauli: c.pauli[r].to_vec(),
                },
            }
        });
        let p = self.meta.preprocess.dos_points;
        let dos = self.has(2, i).then(|| ProcessedDos {
            energies: self.dos_energies[i * p..(i + 1) * p].to_vec(),
            densities: self.dos_densities[i * p..(i + 1) * p].to_vec(),
            repaired_points: self.dos_repaired[i] as usize,
        });
        let g3: usize = self.meta.preprocess.density_grid.iter().product();
        let charge_density = self.has(3, i).then(|| self.charge_density[i * g3..(i + 1) * g3].to_vec());
        let text = self.has(4, i).then(|| self.descriptions[i].clone());
        let text_embedding = match (&self.meta.text_embedding, self.has(5, i)) {
            (Some(spec), true) => Some(TextEmbedding {
                vector: self.text_embedding[i * spec.dim..(i + 1) * spec.dim].to_vec(),
                model: spec.model.clone(),
            }),
            _ => None,
        };
        let mut targets = BTreeMap::new();
        for (name, spec) in &self.meta.targets {
            let row = &self.targets[name][i * spec.width..(i + 1) * spec.width];
            if row.iter().all(|x| x.is_finite()) {
                targets.insert(name.clone(), row.to_vec());
            }
        }
        ShardRecord {
            id: self.ids[i].clone(),
            structure,
            graphs,
            dos,
            charge_density,
            text,
            text_embedding,
            targets,
            provenance: self.provenance[i].clone(),
        }
    }

    /// All records as rows.
    pub fn records(&self) -> Vec<ShardRecord> {
        (0..self.len()).map(|i| self.record(i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::{ShardRecord, ShardWriter};

    #[test]
    fn parallel_chunk_decoder_matches_hdf5_and_is_used_for_charge_density() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.h5");
        let meta = ShardMeta { preprocess: PreprocessParams { density_grid: [3, 4, 5], ..Default::default() }, ..Default::default() };
        let records: Vec<ShardRecord> = (0..5)
            .map(|i| ShardRecord {
                id: format!("r{i}"),
                charge_density: (i != 2).then(|| (0..60).map(|k| (k * (i + 1)) as f32 * 0.37 - 3.0).collect()),
                ..Default::default()
            })
            .collect();
        ShardWriter::new(meta).write(&path, &records).unwrap();
        let file = hdf5::File::open(&path).unwrap();
        let ds = file.dataset(paths::CHARGE_DENSITY).unwrap();
        let fast = decode_chunks_parallel(&ds).expect("the charge-density layout takes the parallel path").unwrap();
        let reference: Vec<f32> = ds.read_raw().unwrap();
        assert_eq!(fast.len(), reference.len());
        // Bitwise equality, NaN rows included.
        assert!(fast.iter().zip(&reference).all(|(a, b)| a.to_bits() == b.to_bits()));
        assert!(fast[120..180].iter().all(|x| x.is_nan()), "record 2 is absent");
        // Other layouts go to HDF5.
        assert!(decode_chunks_parallel(&file.dataset(paths::DOS_ENERGIES).unwrap()).is_none());
    }
}
