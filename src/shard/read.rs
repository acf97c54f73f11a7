//! Reading shards: open, check the schema version, and bulk-load a whole shard into columns.
//!
//! Training consumes every record of a shard at once, so [`ShardReader::load`] reads each dataset
//! whole (one HDF5 read per dataset, no per-record calls) into flat vectors; [`ShardData::record`]
//! materialises one record when a caller wants the row view.

use super::checksum::{dataset_sha256, strings_sha256, LeBytes};
use super::stream::{chunk_layout, unpack_chunk, ColumnValue, StreamedColumn};
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
        decode_chunks_parallel::<f32>(ds)
    }
}

/// Decode a dataset chunked along its first dimension with shuffle+deflate (the charge density,
/// DOS and text embedding: one row per chunk) with rayon. HDF5 serialises every call behind one
/// global lock, so its own read inflates chunk after chunk on one core; here HDF5 only says where
/// each chunk lies ([`chunk_layout`]), the compressed bytes are read with positional reads, and
/// the inflate + unshuffle ([`unpack_chunk`]) run in parallel. Any other layout returns `None`
/// and HDF5 reads it.
fn decode_chunks_parallel<T: ColumnValue>(ds: &hdf5::Dataset) -> Option<std::result::Result<Vec<T>, String>> {
    use rayon::prelude::*;
    use std::os::unix::fs::FileExt;

    let layout = chunk_layout(ds, T::SIZE)?;
    if layout.chunks.len() < 2 {
        return None;
    }
    let file = std::fs::File::open(ds.filename()).ok()?;
    let chunk_values = layout.chunk_rows * layout.row_len;
    let decoded: std::result::Result<Vec<Vec<u8>>, String> = layout
        .chunks
        .par_iter()
        .enumerate()
        .map(|(k, &(addr, size))| {
            let mut packed = vec![0u8; size as usize];
            file.read_exact_at(&mut packed, addr).map_err(|e| format!("chunk {k}: reading: {e}"))?;
            unpack_chunk(&packed, T::SIZE, chunk_values, layout.shuffled).map_err(|e| format!("chunk {k}: {e}"))
        })
        .collect();
    Some(decoded.map(|chunks| {
        let mut out: Vec<T> = chunks.iter().flat_map(|b| b.chunks_exact(T::SIZE).map(T::from_le)).collect();
        out.truncate(layout.rows * layout.row_len); // the last chunk's padding
        out
    }))
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

/// The columns of a shard read per record ([`StreamedColumn`]), by dataset path (e.g.
/// `dos/energies`, `graphs/local/src`); a column not here is held in memory in [`ShardData`].
pub type StreamedColumns = BTreeMap<String, StreamedColumn>;

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

    /// Read the shard for streamed use: every per-record column whose layout allows it
    /// ([`super::stream::streamable_layout`]) is indexed for per-record reads and returned in
    /// [`StreamedColumns`], after the same checks a whole load runs (checksum with
    /// `opts.verify_checksums`; present density rows finite). The charge density is never held
    /// (its column in `ShardData` is left empty); the other streamed columns are returned whole
    /// as well, so the caller can run [`super::integrity::check_loaded_streamed`] on them before
    /// [`ShardData::drop_streamed`] frees them — one shard at a time, never the data set. A column
    /// not chunked for per-record reads (shards written before the streamed layout) is not in
    /// the map and stays in memory.
    pub fn load_streamed(&self, opts: LoadOptions) -> Result<(ShardData, StreamedColumns)> {
        self.load_inner(opts, true)
    }

    fn load_inner(&self, opts: LoadOptions, stream: bool) -> Result<(ShardData, StreamedColumns)> {
        let n = self.len();
        let f = &self.file;
        let checks = Checks { checksum: opts.verify_checksums, layout: false };
        let mut problems = Vec::new();
        let mut streamed = StreamedColumns::new();
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
        // A per-record column: indexed for streamed reads (values collected for the load's
        // checks) when streaming and its chunks allow it, else read whole.
        macro_rules! column {
            ($t:ty, $path:expr, $shape:expr, $record_of:expr) => {{
                let path: String = $path.to_string();
                let indexed = if stream {
                    let ds = open_checked::<$t>(f, &path, &$shape, checks, &mut problems).map_err(|e| anyhow!("{}: {e}", ctx(&path)))?;
                    let mut values: Vec<$t> = Vec::new();
                    let column = StreamedColumn::open::<$t>(&ds, &self.path, &path, checks.checksum, &$record_of, |_, v| {
                        values.extend_from_slice(v);
                        Ok(())
                    })?;
                    column.map(|c| {
                        streamed.insert(path.clone(), c);
                        (values, ds.shape())
                    })
                } else {
                    None
                };
                match indexed {
                    Some(v) => v,
                    None => num!($t, path, $shape),
                }
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
        let record = |i: usize| format!("record {i} ({})", ids.get(i).map_or("?", String::as_str));
        // The record owning flat item `row` of a ragged column with these offsets.
        let owner = |offsets: &[i64], row: usize| record(offsets.partition_point(|&o| o <= row as i64).saturating_sub(1));
        let mut masks: [Vec<u8>; 6] = Default::default();
        for (m, name) in MODALITIES.iter().enumerate() {
            masks[m] = num!(u8, format!("mask/{name}"), [Some(n)]).0;
        }
        let lattice = num!(f64, paths::LATTICE, [Some(n), Some(3), Some(3)]).0;
        let atom_offsets = num!(i64, paths::ATOM_OFFSETS, [Some(n + 1)]).0;
        let by_atom = |row: usize| owner(&atom_offsets, row);
        let species = column!(u8, paths::SPECIES, [None], by_atom).0;
        let frac_coords = column!(f64, paths::FRAC_COORDS, [Some(species.len()), Some(3)], by_atom).0;
        let mut edge_lists = Vec::new();
        for g in paths::EDGE_LISTS {
            let offsets = num!(i64, format!("{g}/edge_offsets"), [Some(n + 1)]).0;
            let by_edge = |row: usize| owner(&offsets, row);
            let src = column!(u32, format!("{g}/src"), [None], by_edge).0;
            let e = src.len();
            let dst = column!(u32, format!("{g}/dst"), [Some(e)], by_edge).0;
            let image = column!(i32, format!("{g}/image"), [Some(e), Some(3)], by_edge).0;
            let distance = column!(f32, format!("{g}/distance"), [Some(e)], by_edge).0;
            edge_lists.push(EdgeColumns { offsets, src, dst, image, distance });
        }
        let cgcnn = edge_lists.pop().expect("two edge lists");
        let local = edge_lists.pop().expect("two edge lists");
        let inf = paths::INFINITE;
        let inf_offsets = num!(i64, format!("{inf}/edge_offsets"), [Some(n + 1)]).0;
        let by_edge = |row: usize| owner(&inf_offsets, row);
        let inf_src = column!(u32, format!("{inf}/src"), [None], by_edge).0;
        let e = inf_src.len();
        let infinite = InfiniteColumns {
            dst: column!(u32, format!("{inf}/dst"), [Some(e)], by_edge).0,
            coulomb: column!(f64, format!("{inf}/coulomb"), [Some(e)], by_edge).0,
            london: column!(f64, format!("{inf}/london"), [Some(e)], by_edge).0,
            pauli: column!(f64, format!("{inf}/pauli"), [Some(e)], by_edge).0,
            src: inf_src,
            offsets: inf_offsets,
        };
        let p = self.attrs.preprocess.dos_points;
        let dos_energies = column!(f32, paths::DOS_ENERGIES, [Some(n), Some(p)], record).0;
        let dos_densities = column!(f32, paths::DOS_DENSITIES, [Some(n), Some(p)], record).0;
        let dos_repaired = num!(u32, paths::DOS_REPAIRED, [Some(n)]).0;
        let [gx, gy, gz] = self.attrs.preprocess.density_grid;
        let density_shape = [Some(n), Some(gx), Some(gy), Some(gz)];
        // The charge density is never collected: its rows are checked (finite where present)
        // as the load-time pass decodes them, a block at a time.
        let density = if stream {
            let ds = open_checked::<f32>(f, paths::CHARGE_DENSITY, &density_shape, checks, &mut problems)
                .map_err(|e| anyhow!("{}: {e}", ctx(paths::CHARGE_DENSITY)))?;
            let g3 = gx * gy * gz;
            StreamedColumn::open::<f32>(&ds, &self.path, paths::CHARGE_DENSITY, checks.checksum, &record, |first, values| {
                for (k, row) in values.chunks(g3.max(1)).enumerate() {
                    let i = first + k;
                    if masks[3].get(i).is_some_and(|&m| m != 0) {
                        if let Some(p) = row.iter().position(|x| !x.is_finite()) {
                            return Err((i, format!("NaN/inf at position {p} of a present row")));
                        }
                    }
                }
                Ok(())
            })?
        } else {
            None
        };
        let charge_density = match density {
            Some(column) => {
                streamed.insert(paths::CHARGE_DENSITY.to_string(), column);
                Vec::new()
            }
            None => num!(f32, paths::CHARGE_DENSITY, density_shape).0,
        };
        let descriptions = strings(paths::DESCRIPTIONS, &mut problems)?;
        let (text_embedding, emb_shape) = column!(f32, paths::EMBEDDING, [Some(n), None], record);
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
        Ok((data, streamed))
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

    /// Free the in-memory copy of every column in `streamed` (its reads then go through the
    /// [`StreamedColumn`]), and the descriptions and provenance (≈ 2.5 kB per synth record),
    /// which no training, embedding or evaluation path reads ([`ShardReader::provenance`] reads
    /// them on demand). What stays is the per-record metadata: ids, masks, lattices, offsets,
    /// repaired-point counts and targets. [`ShardData::record`] must not be called afterwards.
    pub fn drop_streamed(&mut self, streamed: &StreamedColumns) {
        self.descriptions = Vec::new();
        self.provenance = Vec::new();
        for name in streamed.keys() {
            match name.as_str() {
                paths::SPECIES => self.species = Vec::new(),
                paths::FRAC_COORDS => self.frac_coords = Vec::new(),
                paths::DOS_ENERGIES => self.dos_energies = Vec::new(),
                paths::DOS_DENSITIES => self.dos_densities = Vec::new(),
                paths::CHARGE_DENSITY => self.charge_density = Vec::new(),
                paths::EMBEDDING => self.text_embedding = Vec::new(),
                other => {
                    let (group, column) = other.rsplit_once('/').unwrap_or(("", other));
                    if group == paths::INFINITE {
                        let c = &mut self.infinite;
                        match column {
                            "src" => c.src = Vec::new(),
                            "dst" => c.dst = Vec::new(),
                            "coulomb" => c.coulomb = Vec::new(),
                            "london" => c.london = Vec::new(),
                            "pauli" => c.pauli = Vec::new(),
                            _ => {}
                        }
                    } else if let Some(k) = paths::EDGE_LISTS.iter().position(|g| *g == group) {
                        let c = if k == 0 { &mut self.local } else { &mut self.cgcnn };
                        match column {
                            "src" => c.src = Vec::new(),
                            "dst" => c.dst = Vec::new(),
                            "image" => c.image = Vec::new(),
                            "distance" => c.distance = Vec::new(),
                            _ => {}
                        }
                    }
                }
            }
        }
    }

    /// The per-record columns a streamed load reads per record where their layout allows, by
    /// dataset path, with the bytes each holds in memory now (0 once dropped).
    pub fn per_record_columns(&self) -> Vec<(String, usize)> {
        fn v<T>(x: &[T]) -> usize {
            std::mem::size_of_val(x)
        }
        let mut out = vec![
            (paths::SPECIES.to_string(), v(&self.species)),
            (paths::FRAC_COORDS.to_string(), v(&self.frac_coords)),
            (paths::DOS_ENERGIES.to_string(), v(&self.dos_energies)),
            (paths::DOS_DENSITIES.to_string(), v(&self.dos_densities)),
            (paths::CHARGE_DENSITY.to_string(), v(&self.charge_density)),
            (paths::EMBEDDING.to_string(), v(&self.text_embedding)),
        ];
        for (g, c) in paths::EDGE_LISTS.iter().zip([&self.local, &self.cgcnn]) {
            out.push((format!("{g}/src"), v(&c.src)));
            out.push((format!("{g}/dst"), v(&c.dst)));
            out.push((format!("{g}/image"), v(&c.image)));
            out.push((format!("{g}/distance"), v(&c.distance)));
        }
        let c = &self.infinite;
        for (name, bytes) in [("src", v(&c.src)), ("dst", v(&c.dst)), ("coulomb", v(&c.coulomb)), ("london", v(&c.london)), ("pauli", v(&c.pauli))] {
            out.push((format!("{}/{name}", paths::INFINITE), bytes));
        }
        out
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
        let fast = decode_chunks_parallel::<f32>(&ds).expect("the charge-density layout takes the parallel path").unwrap();
        let reference: Vec<f32> = ds.read_raw().unwrap();
        assert_eq!(fast.len(), reference.len());
        // Bitwise equality, NaN rows included.
        assert!(fast.iter().zip(&reference).all(|(a, b)| a.to_bits() == b.to_bits()));
        assert!(fast[120..180].iter().all(|x| x.is_nan()), "record 2 is absent");
        // A dataset in one chunk goes to HDF5.
        assert!(decode_chunks_parallel::<u8>(&file.dataset("mask/dos").unwrap()).is_none());
    }
}
