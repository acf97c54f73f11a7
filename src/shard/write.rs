//! Writing shards: records → columns → one HDF5 file, written atomically (temp file + rename)
//! and deterministically (object time stamps off, fixed chunking and filters, fixed order), so
//! identical records give byte-identical files.
//!
//! The writer refuses records that would make an invalid shard ([`check_record`]); the ingest
//! calls the same check first so a bad record becomes a reject instead of failing its shard.

use super::checksum::{dataset_sha256, strings_sha256, LeBytes};
use super::{paths, ShardMeta, ShardRecord, FORMAT_NAME, MODALITIES, SCHEMA_VERSION};
use anyhow::{anyhow, bail, Context, Result};
use hdf5::types::VarLenUnicode;
use hdf5::H5Type;
use std::collections::HashSet;
use std::path::Path;

/// Deflate level for every dataset: level 4 with the shuffle filter compresses the f32/f64 data
/// nearly as well as 9 while decompressing at full speed (measured in `multimat bench ingest`).
const DEFLATE_LEVEL: u8 = 4;
/// Target uncompressed chunk size for row-chunked datasets that are not per-record columns
/// (masks, lattices, offsets, targets: always loaded whole).
const CHUNK_BYTES: usize = 1 << 20;
/// Target uncompressed chunk size of the ragged per-record columns (atoms, edges), which training
/// reads a record at a time (`stream.rs`): a record's read inflates its chunk, so chunks stay
/// small (a few records each), well under what the reader streams (`STREAM_CHUNK_BYTES`).
/// Fixed-width per-record columns (charge density, DOS, text embedding) are one record per chunk.
const RECORD_CHUNK_BYTES: usize = 16 * 1024;

/// Writes whole shards with fixed shard-wide metadata.
#[derive(Clone, Debug)]
pub struct ShardWriter {
    meta: ShardMeta,
}

impl ShardWriter {
    pub fn new(meta: ShardMeta) -> Self {
        ShardWriter { meta }
    }

    pub fn meta(&self) -> &ShardMeta {
        &self.meta
    }

    /// Write `records` as one shard at `path` (atomically). Returns each record's checksum.
    pub fn write(&self, path: &Path, records: &[ShardRecord]) -> Result<Vec<String>> {
        let mut seen = HashSet::new();
        for (i, r) in records.iter().enumerate() {
            check_record(r, &self.meta)
                .map_err(|e| anyhow!("record {i} ({}) cannot be written to a shard: {e}", r.id))?;
            if !seen.insert(r.id.as_str()) {
                bail!("record {i}: duplicate id {:?} in one shard", r.id);
            }
        }
        crate::atomic::write_with(path, |tmp| {
            write_file(tmp, &self.meta, records)?;
            // Read it back before it gets its final name: libhdf5 can close a file without an
            // error after writes failed (a full disk measured on tmpfs left a shard of holes),
            // and "a file under a shard name is complete" must hold.
            let violations = super::validate(tmp);
            if let Some(first) = violations.first() {
                bail!(
                    "the shard does not read back ({} violation(s), first: {first}); is the disk full?",
                    violations.len()
                );
            }
            Ok(())
        })
        .with_context(|| format!("writing shard {}", path.display()))?;
        Ok(records.iter().map(|r| r.checksum()).collect())
    }
}

/// Everything a record must satisfy to be stored under `meta` (the per-record rules of the spec).
pub fn check_record(r: &ShardRecord, meta: &ShardMeta) -> std::result::Result<(), String> {
    if r.id.is_empty() || r.id.contains('\0') {
        return Err(format!("invalid material id {:?}", r.id));
    }
    if let Some(s) = &r.structure {
        if s.species.is_empty() {
            return Err("structure has no sites".into());
        }
        if s.species.len() != s.frac_coords.len() {
            return Err(format!("{} species but {} coordinates", s.species.len(), s.frac_coords.len()));
        }
        if let Some(z) = s.species.iter().find(|z| !(1..=118).contains(*z)) {
            return Err(format!("atomic number {z} out of range 1..=118"));
        }
        if !s.lattice.iter().flatten().all(|x| x.is_finite()) {
            return Err("lattice has non-finite entries".into());
        }
        if s.volume().abs() < 1e-6 {
            return Err(format!("degenerate lattice (volume {:.3e} Å³)", s.volume()));
        }
        if !s.frac_coords.iter().flatten().all(|x| x.is_finite()) {
            return Err("fractional coordinates have non-finite entries".into());
        }
    }
    if let Some(g) = &r.graphs {
        let n = match &r.structure {
            Some(s) => s.species.len(),
            None => return Err("crystal graphs without a structure".into()),
        };
        for (name, list) in [("local", &g.local), ("cgcnn", &g.cgcnn)] {
            let e = list.src.len();
            if list.dst.len() != e || list.image.len() != e || list.distance.len() != e {
                return Err(format!("graphs/{name}: src, dst, image, distance lengths differ"));
            }
            if list.src.iter().chain(&list.dst).any(|&a| a as usize >= n) {
                return Err(format!("graphs/{name}: atom index ≥ {n} sites"));
            }
            if !list.distance.iter().all(|d| d.is_finite() && *d >= 0.0) {
                return Err(format!("graphs/{name}: distance negative or non-finite"));
            }
        }
        let inf = &g.infinite;
        let e = inf.src.len();
        if inf.dst.len() != e || inf.coulomb.len() != e || inf.london.len() != e || inf.pauli.len() != e {
            return Err("graphs/infinite: array lengths differ".into());
        }
        if e != n * n {
            return Err(format!("graphs/infinite: {e} edges, expected {n}² = {}", n * n));
        }
        if inf.src.iter().chain(&inf.dst).any(|&a| a as usize >= n) {
            return Err(format!("graphs/infinite: atom index ≥ {n} sites"));
        }
        if !inf.coulomb.iter().chain(&inf.london).chain(&inf.pauli).all(|x| x.is_finite()) {
            return Err("graphs/infinite: non-finite lattice sum".into());
        }
    }
    if let Some(d) = &r.dos {
        let p = meta.preprocess.dos_points;
        if d.energies.len() != p || d.densities.len() != p {
            return Err(format!(
                "DOS has {} energies and {} densities, expected {p}",
                d.energies.len(),
                d.densities.len()
            ));
        }
        if !d.energies.iter().chain(&d.densities).all(|x| x.is_finite()) {
            return Err("DOS has non-finite values after preprocessing".into());
        }
        if d.energies.windows(2).any(|w| w[1] <= w[0]) {
            return Err("DOS energies are not strictly increasing".into());
        }
        if d.repaired_points > u32::MAX as usize {
            return Err("DOS repaired-point count overflows u32".into());
        }
    }
    if let Some(c) = &r.charge_density {
        let want: usize = meta.preprocess.density_grid.iter().product();
        if c.len() != want {
            return Err(format!("charge density has {} values, expected {want} ({:?})", c.len(), meta.preprocess.density_grid));
        }
        if let Some(i) = c.iter().position(|x| !x.is_finite()) {
            return Err(format!("charge density value {i} is not finite"));
        }
    }
    if let Some(t) = &r.text {
        if t.is_empty() || t.contains('\0') {
            return Err("description is empty or contains NUL".into());
        }
    }
    if let Some(e) = &r.text_embedding {
        let spec = meta.text_embedding.as_ref().ok_or("text embedding present but the shard has no embedding model")?;
        if e.model != spec.model {
            return Err(format!("text embedding from model {:?}, shard holds {:?}", e.model, spec.model));
        }
        if e.vector.len() != spec.dim {
            return Err(format!("text embedding has {} values, expected {}", e.vector.len(), spec.dim));
        }
        if !e.vector.iter().all(|x| x.is_finite()) {
            return Err("text embedding has non-finite values".into());
        }
    }
    for (name, values) in &r.targets {
        let spec = meta.targets.get(name).ok_or_else(|| format!("target {name:?} is not in the shard's target list"))?;
        if values.is_empty() || values.len() != spec.width {
            return Err(format!("target {name:?} has {} values, expected {}", values.len(), spec.width));
        }
        if !values.iter().all(|x| x.is_finite()) {
            return Err(format!("target {name:?} has non-finite values"));
        }
        if name.is_empty() || name.contains('/') || name.contains('\0') {
            return Err(format!("target name {name:?} is not a valid dataset name"));
        }
    }
    Ok(())
}

fn vlen(s: &str) -> Result<VarLenUnicode> {
    s.parse::<VarLenUnicode>().map_err(|e| anyhow!("string {s:?} cannot be stored: {e}"))
}

pub(crate) fn write_attr_str(loc: &hdf5::Location, name: &str, value: &str) -> Result<()> {
    loc.new_attr::<VarLenUnicode>().create(name)?.write_scalar(&vlen(value)?)?;
    Ok(())
}

fn write_attr<T: H5Type>(loc: &hdf5::Location, name: &str, value: T) -> Result<()> {
    loc.new_attr::<T>().create(name)?.write_scalar(&value)?;
    Ok(())
}

fn create_group(parent: &hdf5::Group, name: &str) -> Result<hdf5::Group> {
    Ok(parent.create_group_builder().obj_track_times(false).create(name)?)
}

/// Rows per chunk so a chunk holds about `CHUNK_BYTES` uncompressed.
fn chunk_rows(shape: &[usize], elem_bytes: usize) -> usize {
    rows_for_bytes(shape, elem_bytes, CHUNK_BYTES)
}

/// Rows per chunk of a ragged per-record column (see [`RECORD_CHUNK_BYTES`]).
fn record_chunk_rows(shape: &[usize], elem_bytes: usize) -> Option<usize> {
    Some(rows_for_bytes(shape, elem_bytes, RECORD_CHUNK_BYTES))
}

fn rows_for_bytes(shape: &[usize], elem_bytes: usize, bytes: usize) -> usize {
    let row_bytes = shape[1..].iter().product::<usize>().max(1) * elem_bytes;
    (bytes / row_bytes).clamp(1, shape[0].max(1))
}

/// Create a numeric dataset (chunked, shuffle+deflate unless empty) with its `sha256` attribute.
fn write_numeric<T: H5Type + LeBytes>(
    group: &hdf5::Group,
    name: &str,
    data: &[T],
    shape: &[usize],
    rows_per_chunk: Option<usize>,
) -> Result<hdf5::Dataset> {
    let view = ndarray::ArrayViewD::from_shape(ndarray::IxDyn(shape), data)
        .with_context(|| format!("{name}: {} values do not fit shape {shape:?}", data.len()))?;
    let mut builder = group.new_dataset_builder().obj_track_times(false).with_data(view);
    if !data.is_empty() {
        let rows = rows_per_chunk.unwrap_or_else(|| chunk_rows(shape, std::mem::size_of::<T>()));
        let mut chunk = shape.to_vec();
        chunk[0] = rows.min(shape[0]);
        builder = builder.chunk(chunk);
        if std::mem::size_of::<T>() > 1 {
            builder = builder.shuffle();
        }
        builder = builder.deflate(DEFLATE_LEVEL);
    }
    let ds = builder.create(name).with_context(|| format!("creating dataset {name}"))?;
    write_attr_str(&ds, "sha256", &dataset_sha256(data))?;
    Ok(ds)
}

/// Create a variable-length UTF-8 string dataset (N,) with its `sha256` attribute.
fn write_strings(group: &hdf5::Group, name: &str, values: &[&str]) -> Result<hdf5::Dataset> {
    let data = values.iter().map(|s| vlen(s)).collect::<Result<Vec<_>>>()?;
    let view = ndarray::ArrayView1::from(&data[..]);
    let mut builder = group.new_dataset_builder().obj_track_times(false).with_data(view);
    if !data.is_empty() {
        builder = builder.chunk(data.len().min(4096)).deflate(DEFLATE_LEVEL);
    }
    let ds = builder.create(name).with_context(|| format!("creating dataset {name}"))?;
    write_attr_str(&ds, "sha256", &strings_sha256(values))?;
    Ok(ds)
}

fn write_file(path: &Path, meta: &ShardMeta, records: &[ShardRecord]) -> Result<()> {
    let n = records.len();
    crate::shard::hdf5_without_file_locking();
    let file = hdf5::File::with_options()
        .with_fcpl(|p| p.obj_track_times(false))
        .create(path)
        .with_context(|| format!("creating HDF5 file {}", path.display()))?;
    let root: &hdf5::Group = &file;

    write_attr_str(root, "format", FORMAT_NAME)?;
    write_attr(root, "schema_version", SCHEMA_VERSION)?;
    write_attr_str(root, "multimat_version", env!("CARGO_PKG_VERSION"))?;
    write_attr(root, "num_records", n as u64)?;
    write_attr_str(root, "preprocess_params", &serde_json::to_string(&meta.preprocess)?)?;
    write_attr_str(root, "graph_params", &serde_json::to_string(&meta.graph_params)?)?;

    let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
    write_strings(root, "ids", &ids)?;
    let provenance: Vec<String> =
        records.iter().map(|r| serde_json::to_string(&r.provenance.sources)).collect::<Result<_, _>>()?;
    let provenance: Vec<&str> = provenance.iter().map(|s| s.as_str()).collect();
    write_strings(root, paths::PROVENANCE, &provenance)?;

    // Presence masks.
    let mask_group = create_group(root, "mask")?;
    for (m, name) in MODALITIES.iter().enumerate() {
        let mask: Vec<u8> = records.iter().map(|r| r.presence()[m] as u8).collect();
        write_numeric(&mask_group, name, &mask, &[n], None)?;
    }

    // Crystal: lattice (N,3,3) rows = a, b, c; atoms flat with offsets.
    let crystal = create_group(root, "crystal")?;
    let mut lattice = Vec::with_capacity(n * 9); // (N, 3, 3)
    let mut atom_offsets = vec![0i64]; // (N+1,)
    let mut species = Vec::new(); // (A,)
    let mut frac: Vec<f64> = Vec::new(); // (A, 3)
    for r in records {
        match &r.structure {
            Some(s) => {
                lattice.extend(s.lattice.iter().flatten());
                species.extend_from_slice(&s.species);
                frac.extend(s.frac_coords.iter().flatten());
            }
            None => lattice.extend([f64::NAN; 9]),
        }
        atom_offsets.push(species.len() as i64);
    }
    let ds = write_numeric(&crystal, "lattice", &lattice, &[n, 3, 3], None)?;
    write_attr_str(&ds, "units", "angstrom; rows are lattice vectors a, b, c")?;
    write_numeric(&crystal, "atom_offsets", &atom_offsets, &[n + 1], None)?;
    let ds = write_numeric(&crystal, "species", &species, &[species.len()], record_chunk_rows(&[species.len()], 1))?;
    write_attr_str(&ds, "units", "atomic number")?;
    let ds = write_numeric(&crystal, "frac_coords", &frac, &[species.len(), 3], record_chunk_rows(&[species.len(), 3], 8))?;
    write_attr_str(&ds, "units", "fractional (of the lattice rows)")?;

    // Graphs: edge lists flat with per-record edge offsets; atom indices are record-local.
    let graphs = create_group(root, "graphs")?;
    for (which, gname) in [0usize, 1].into_iter().zip(["local", "cgcnn"]) {
        let g = create_group(&graphs, gname)?;
        let (mut offsets, mut src, mut dst, mut image, mut dist) = (vec![0i64], Vec::<u32>::new(), Vec::<u32>::new(), Vec::<i32>::new(), Vec::<f32>::new());
        for r in records {
            if let Some(cg) = &r.graphs {
                let list = if which == 0 { &cg.local } else { &cg.cgcnn };
                src.extend_from_slice(&list.src);
                dst.extend_from_slice(&list.dst);
                image.extend(list.image.iter().flatten());
                dist.extend_from_slice(&list.distance);
            }
            offsets.push(src.len() as i64);
        }
        let e = src.len();
        write_numeric(&g, "edge_offsets", &offsets, &[n + 1], None)?;
        write_numeric(&g, "src", &src, &[e], record_chunk_rows(&[e], 4))?;
        write_numeric(&g, "dst", &dst, &[e], record_chunk_rows(&[e], 4))?;
        write_numeric(&g, "image", &image, &[e, 3], record_chunk_rows(&[e, 3], 4))?;
        let ds = write_numeric(&g, "distance", &dist, &[e], record_chunk_rows(&[e], 4))?;
        write_attr_str(&ds, "units", "angstrom")?;
    }
    {
        let g = create_group(&graphs, "infinite")?;
        let (mut offsets, mut src, mut dst) = (vec![0i64], vec![], vec![]);
        let (mut coulomb, mut london, mut pauli) = (vec![], vec![], vec![]);
        for r in records {
            if let Some(cg) = &r.graphs {
                let inf = &cg.infinite;
                src.extend_from_slice(&inf.src);
                dst.extend_from_slice(&inf.dst);
                coulomb.extend_from_slice(&inf.coulomb);
                london.extend_from_slice(&inf.london);
                pauli.extend_from_slice(&inf.pauli);
            }
            offsets.push(src.len() as i64);
        }
        let e = src.len();
        write_numeric(&g, "edge_offsets", &offsets, &[n + 1], None)?;
        write_numeric(&g, "src", &src, &[e], record_chunk_rows(&[e], 4))?;
        write_numeric(&g, "dst", &dst, &[e], record_chunk_rows(&[e], 4))?;
        let ds = write_numeric(&g, "coulomb", &coulomb, &[e], record_chunk_rows(&[e], 8))?;
        write_attr_str(&ds, "units", "1/angstrom")?;
        let ds = write_numeric(&g, "london", &london, &[e], record_chunk_rows(&[e], 8))?;
        write_attr_str(&ds, "units", "1/angstrom^6")?;
        let ds = write_numeric(&g, "pauli", &pauli, &[e], record_chunk_rows(&[e], 8))?;
        write_attr_str(&ds, "units", "dimensionless")?;
    }

    // DOS: (N, P), NaN rows for absent records.
    let p = meta.preprocess.dos_points;
    let dos = create_group(root, "dos")?;
    let (mut energies, mut densities, mut repaired) = (Vec::with_capacity(n * p), Vec::with_capacity(n * p), vec![]);
    for r in records {
        match &r.dos {
            Some(d) => {
                energies.extend_from_slice(&d.energies);
                densities.extend_from_slice(&d.densities);
                repaired.push(d.repaired_points as u32);
            }
            None => {
                energies.extend(std::iter::repeat_n(f32::NAN, p));
                densities.extend(std::iter::repeat_n(f32::NAN, p));
                repaired.push(0);
            }
        }
    }
    // One record per chunk, like the charge density: training reads these rows one at a time.
    let ds = write_numeric(&dos, "energies", &energies, &[n, p], Some(1))?;
    write_attr_str(&ds, "units", "eV, relative to the Fermi energy")?;
    let ds = write_numeric(&dos, "densities", &densities, &[n, p], Some(1))?;
    write_attr_str(&ds, "units", "states/eV/cell")?;
    write_numeric(&dos, "repaired_points", &repaired, &[n], None)?;

    // Charge density: (N, gx, gy, gz), one record per chunk.
    let grid = meta.preprocess.density_grid;
    let g3: usize = grid.iter().product();
    let cd = create_group(root, "charge_density")?;
    let mut values = Vec::with_capacity(n * g3); // (N, gx, gy, gz)
    for r in records {
        match &r.charge_density {
            Some(c) => values.extend_from_slice(c),
            None => values.extend(std::iter::repeat_n(f32::NAN, g3)),
        }
    }
    let ds = write_numeric(&cd, "values", &values, &[n, grid[0], grid[1], grid[2]], Some(1))?;
    write_attr_str(&ds, "units", "rho * V_cell (electrons); electron count = mean over the grid")?;

    // Text: descriptions and embeddings.
    let text = create_group(root, "text")?;
    let descriptions: Vec<&str> = records.iter().map(|r| r.text.as_deref().unwrap_or("")).collect();
    write_strings(&text, "description", &descriptions)?;
    let dim = meta.text_embedding.as_ref().map_or(0, |e| e.dim);
    let mut emb = Vec::with_capacity(n * dim); // (N, D)
    for r in records {
        match &r.text_embedding {
            Some(e) => emb.extend_from_slice(&e.vector),
            None => emb.extend(std::iter::repeat_n(f32::NAN, dim)),
        }
    }
    let ds = write_numeric(&text, "embedding", &emb, &[n, dim], Some(1))?;
    let (model, weights) = meta.text_embedding.as_ref().map_or(("", ""), |e| (e.model.as_str(), e.weights_sha256.as_str()));
    write_attr_str(&ds, "model", model)?;
    write_attr_str(&ds, "weights_sha256", weights)?;

    // Targets: (N, W) f64, NaN rows where absent.
    let targets = create_group(root, "targets")?;
    for (name, spec) in &meta.targets {
        let mut vals = Vec::with_capacity(n * spec.width); // (N, W)
        for r in records {
            match r.targets.get(name) {
                Some(v) => vals.extend_from_slice(v),
                None => vals.extend(std::iter::repeat_n(f64::NAN, spec.width)),
            }
        }
        let ds = write_numeric(&targets, name, &vals, &[n, spec.width], None)?;
        write_attr_str(&ds, "units", &spec.units)?;
    }

    if let Some(info) = &meta.ingest {
        let g = create_group(root, "ingest")?;
        write_attr_str(&g, "fingerprint", &info.fingerprint)?;
        write_attr(&g, "input_start", info.input_start)?;
        write_attr(&g, "input_end", info.input_end)?;
        let rejects: Vec<&str> = info.rejects.iter().map(|s| s.as_str()).collect();
        write_strings(&g, "rejects", &rejects)?;
        // Only when there is something to say, so shards without absent modalities keep
        // their bytes (and their fingerprints' resume) from before this dataset existed.
        if !info.absent.is_empty() {
            let absent: Vec<&str> = info.absent.iter().map(|s| s.as_str()).collect();
            write_strings(&g, "absent", &absent)?;
        }
    }
    file.close()?;
    Ok(())
}
