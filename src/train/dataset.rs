//! A training dataset: a set of shards addressed by one global record index, and the assembly of
//! `ModalityBatch`es (graph batching with re-indexed nodes, DOS, density and text tensors) for any
//! list of records.
//!
//! [`Dataset::load`] streams every per-record column whose size matters — the charge density
//! (128 KiB per record at 32³), DOS rows, text embeddings, species, coordinates and the three
//! edge lists — from its HDF5 chunks (`shard::stream`): a batch reads only its own records'
//! chunks (pre-training's batches are assembled ahead on the prefetch thread, so that is where
//! the reads happen). What stays in memory is per-record metadata: ids, masks, lattices,
//! offsets, targets and the chunk index ([`Dataset::resident_bytes`], stated per record by
//! `bench stream`); descriptions and provenance, which no training path reads, are dropped. A
//! shard is loaded whole once at open for its checks and its streamed columns freed before the
//! next, so the load's peak is one shard, not the data set. Columns of shards written before
//! the streamed layout (many records per ~1 MiB chunk) stay in memory, as they always were.
//! Decoded density rows are kept in a bounded FIFO cache of at most
//! [`DEFAULT_DENSITY_CACHE_RECORDS`] records ([`Dataset::density_cache`] reports it), so the
//! memory of a rank is that bound plus the batches in flight, independent of the data set.
//! [`Dataset::load_in_memory`] loads everything (the previous behaviour, kept for comparison).
//! Both give bit-identical batches: the same bytes are decoded either way.

use crate::model::{BatchedEdges, DensityBatch, DosBatch, GraphBatch, InputPreparer, Modality, ModalityBatch, PreparedInputs, TextBatch};
use crate::shard::stream::ColumnValue;
use crate::shard::{paths, EdgeColumns, ShardData, StreamedColumns};
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Decoded charge-density rows a streamed [`Dataset`] keeps (8 MiB at 32³): enough for a
/// record assembled twice in a row (e.g. by `eval` for two pairings) to be decoded once; a
/// training epoch visits each record once, so a larger cache would not save reads.
pub const DEFAULT_DENSITY_CACHE_RECORDS: usize = 64;

/// State of the decoded-row cache of a streamed dataset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DensityCacheStats {
    /// Most records the cache may hold.
    pub capacity: usize,
    /// Records it holds now.
    pub resident: usize,
    /// Most it has held at once.
    pub peak_resident: usize,
    /// Rows decoded from disk so far (cache misses).
    pub rows_read: u64,
}

/// Bounded FIFO cache of decoded density rows, keyed by global record index.
#[derive(Default)]
struct RowCache {
    rows: HashMap<usize, Arc<[f32]>>,
    order: VecDeque<usize>,
    stats: DensityCacheStats,
}

impl RowCache {
    fn insert(&mut self, r: usize, row: Arc<[f32]>) {
        if self.stats.capacity == 0 || self.rows.contains_key(&r) {
            return;
        }
        while self.rows.len() >= self.stats.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.rows.remove(&old);
                }
                None => break,
            }
        }
        self.rows.insert(r, row);
        self.order.push_back(r);
        self.stats.resident = self.rows.len();
        self.stats.peak_resident = self.stats.peak_resident.max(self.stats.resident);
    }
}

/// Index into `ShardData::masks` of the data a modality's encoder consumes.
pub fn mask_index(m: Modality) -> usize {
    match m {
        Modality::Crystal => 1, // graphs (derived from the structure)
        Modality::Dos => 2,
        Modality::ChargeDensity => 3,
        Modality::Text => 5, // precomputed text embedding
    }
}

/// Shard files named by `inputs`: files as given, directories expanded to their `*.h5` files
/// (sorted, so the global record order is reproducible).
pub fn shard_paths(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("listing shard directory {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|q| q.extension().is_some_and(|e| e == "h5"))
                .collect();
            v.sort();
            if v.is_empty() {
                bail!("no *.h5 shards in {}", p.display());
            }
            out.extend(v);
        } else if p.exists() {
            out.push(p.clone());
        } else {
            bail!("shard {} does not exist", p.display());
        }
    }
    Ok(out)
}

pub struct Dataset {
    /// The shards' columns; a column is empty where `streamed[s]` reads it per record.
    pub shards: Vec<ShardData>,
    /// Per shard: its columns read per record (empty for a shard held in memory).
    streamed: Vec<StreamedColumns>,
    cache: Mutex<RowCache>,
    /// Global record r lives in shard `locate[r].0` at row `locate[r].1`.
    locate: Vec<(u32, u32)>,
    /// SHA-256 over the shard files' names and their record ids: identifies the data a
    /// checkpoint was trained on.
    pub fingerprint: String,
}

impl Dataset {
    /// Load `paths` with the per-record columns streamed (see the module doc) and a
    /// decoded-density cache of [`DEFAULT_DENSITY_CACHE_RECORDS`].
    pub fn load(paths: &[PathBuf]) -> Result<Dataset> {
        Self::load_streamed(paths, DEFAULT_DENSITY_CACHE_RECORDS)
    }

    /// [`Dataset::load`] with a decoded-row cache of `cache_records` records (0: none).
    pub fn load_streamed(paths: &[PathBuf], cache_records: usize) -> Result<Dataset> {
        let mut shards = Vec::new();
        let mut streamed = Vec::new();
        for p in paths {
            // Checksums verified and integrity checked: training must not run on a shard that
            // `multimat validate` would reject (or panic on its offsets).
            let (mut data, columns) = crate::shard::ShardReader::open(p)
                .and_then(|r| r.load_streamed(crate::shard::LoadOptions { verify_checksums: true }))
                .with_context(|| format!("loading shard {}", p.display()))?;
            if columns.contains_key(paths::CHARGE_DENSITY) {
                crate::shard::integrity::check_loaded_streamed(&data)?;
            } else {
                crate::shard::integrity::check_loaded(&data)?;
            }
            // Checked: free what is read per record before the next shard loads.
            data.drop_streamed(&columns);
            shards.push(data);
            streamed.push(columns);
        }
        Self::assemble_from(shards, streamed, cache_records)
    }

    /// Load `paths` whole into memory (charge densities included), with the same checks.
    pub fn load_in_memory(paths: &[PathBuf]) -> Result<Dataset> {
        let mut shards = Vec::new();
        for p in paths {
            let data = crate::shard::ShardReader::open(p)
                .and_then(|r| r.load(crate::shard::LoadOptions { verify_checksums: true }))
                .with_context(|| format!("loading shard {}", p.display()))?;
            crate::shard::integrity::check_loaded(&data)?;
            shards.push(data);
        }
        Self::from_shards(shards)
    }

    /// A dataset over shards already in memory.
    pub fn from_shards(shards: Vec<ShardData>) -> Result<Dataset> {
        let streamed = vec![StreamedColumns::new(); shards.len()];
        Self::assemble_from(shards, streamed, 0)
    }

    fn assemble_from(shards: Vec<ShardData>, streamed: Vec<StreamedColumns>, cache_records: usize) -> Result<Dataset> {
        if shards.is_empty() {
            bail!("no shards given");
        }
        let first = &shards[0];
        let mut hasher = Sha256::new();
        let mut locate = Vec::new();
        for (s, sh) in shards.iter().enumerate() {
            if sh.meta.preprocess != first.meta.preprocess || sh.meta.graph_params != first.meta.graph_params {
                bail!(
                    "{} was preprocessed with different parameters than {}; re-ingest so all shards agree",
                    sh.path.display(),
                    first.path.display()
                );
            }
            hasher.update(file_name(&sh.path).as_bytes());
            for (r, id) in sh.ids.iter().enumerate() {
                hasher.update(id.as_bytes());
                hasher.update([0u8]);
                locate.push((s as u32, r as u32));
            }
        }
        let cache = RowCache { stats: DensityCacheStats { capacity: cache_records, ..Default::default() }, ..Default::default() };
        Ok(Dataset { fingerprint: hex::encode(hasher.finalize()), shards, streamed, cache: Mutex::new(cache), locate })
    }

    /// Whether any shard's charge density is streamed rather than held in memory.
    pub fn streams_density(&self) -> bool {
        self.streams(paths::CHARGE_DENSITY)
    }

    /// Whether any shard reads column `dataset` (e.g. `dos/energies`) per record.
    pub fn streams(&self, dataset: &str) -> bool {
        self.streamed.iter().any(|c| c.contains_key(dataset))
    }

    /// The per-record columns some shard holds in memory although a training load streams
    /// them where it can: shards written before the streamed layout (chunks of many records).
    pub fn resident_columns(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .shards
            .iter()
            .flat_map(|s| s.per_record_columns())
            .filter(|(_, bytes)| *bytes > 0)
            .map(|(name, _)| name)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The decoded-row cache's bound, occupancy and reads so far.
    pub fn density_cache(&self) -> DensityCacheStats {
        self.cache.lock().map(|c| c.stats).unwrap_or_default()
    }

    /// Bytes this dataset holds in memory for its records (every in-memory column of every
    /// shard, the streamed columns' chunk index, the record index), excluding the decoded-row
    /// cache. Divided by `len()`, the per-record metadata cost of a streamed dataset.
    pub fn resident_bytes(&self) -> usize {
        fn v<T>(x: &[T]) -> usize {
            std::mem::size_of_val(x)
        }
        let strings = |x: &[String]| x.iter().map(|s| s.len() + std::mem::size_of::<String>()).sum::<usize>();
        let mut total = v(&self.locate);
        for (s, columns) in self.shards.iter().zip(&self.streamed) {
            total += strings(&s.ids) + strings(&s.descriptions)
                + s.provenance.iter().map(|p| p.sources.iter().map(|(k, x)| k.len() + x.len() + 48).sum::<usize>()).sum::<usize>()
                + s.masks.iter().map(|m| v(m)).sum::<usize>()
                + v(&s.lattice) + v(&s.atom_offsets) + v(&s.local.offsets) + v(&s.cgcnn.offsets) + v(&s.infinite.offsets)
                + v(&s.dos_repaired)
                + s.targets.values().map(|t| v(t)).sum::<usize>()
                + s.per_record_columns().iter().map(|(_, bytes)| bytes).sum::<usize>()
                + columns.values().map(|c| c.metadata_bytes()).sum::<usize>();
        }
        total
    }

    /// Bytes of the streamed columns' chunk index (part of [`Dataset::resident_bytes`]).
    pub fn chunk_index_bytes(&self) -> usize {
        self.streamed.iter().flat_map(|c| c.values()).map(|c| c.metadata_bytes()).sum()
    }

    pub fn len(&self) -> usize {
        self.locate.len()
    }
    pub fn is_empty(&self) -> bool {
        self.locate.is_empty()
    }

    fn at(&self, r: usize) -> (&ShardData, usize) {
        let (s, i) = self.locate[r];
        (&self.shards[s as usize], i as usize)
    }

    pub fn id(&self, r: usize) -> &str {
        let (s, i) = self.at(r);
        &s.ids[i]
    }

    pub fn has(&self, m: Modality, r: usize) -> bool {
        let (s, i) = self.at(r);
        s.has(mask_index(m), i)
    }

    /// Scalar or vector target of record r, if present (no NaN).
    pub fn target(&self, name: &str, r: usize) -> Option<Vec<f64>> {
        let (s, i) = self.at(r);
        let spec = s.meta.targets.get(name)?;
        let vals = s.targets.get(name)?;
        let row = &vals[i * spec.width..(i + 1) * spec.width];
        (row.iter().all(|v| v.is_finite())).then(|| row.to_vec())
    }

    /// Text-embedding dimension (0 if the shards carry none).
    pub fn text_dim(&self) -> usize {
        self.shards[0].meta.text_embedding.as_ref().map(|e| e.dim).unwrap_or(0)
    }

    /// Number of records having modality m.
    pub fn count(&self, m: Modality) -> usize {
        (0..self.len()).filter(|&r| self.has(m, r)).count()
    }

    /// Assembles `batches` (record lists, each all having modality `m`) one after another and
    /// prepares each for an encoder with `preparer` (checks, input features, the upload to the
    /// encoder's device through pinned staging buffers) on a prefetch thread, up to two ahead, and
    /// calls `f(k, inputs)` for the k-th on this thread, in order: the reads (a streamed shard
    /// reads its chunks), the preparation and the upload overlap the caller's compute, and the
    /// inputs are the ones preparing on this thread would give. Take `preparer` from the encoder
    /// after it moved to its device. Stops at the first error of either side.
    pub fn for_each_prepared<B: AsRef<[usize]> + Sync>(
        &self,
        m: Modality,
        batches: &[B],
        preparer: &dyn InputPreparer,
        mut f: impl FnMut(usize, PreparedInputs) -> Result<()>,
    ) -> Result<()> {
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<PreparedInputs>>(2);
            scope.spawn(move || {
                for records in batches {
                    let r = self.assemble(m, records.as_ref()).and_then(|batch| preparer.prepare(&batch));
                    let failed = r.is_err();
                    if tx.send(r).is_err() || failed {
                        break; // the caller stopped, or this batch failed (the caller gets its error)
                    }
                }
            });
            for (k, inputs) in rx.iter().enumerate() {
                f(k, inputs?)?;
            }
            Ok(())
        })
    }

    /// Assemble modality `m` for `records` (all must have it).
    pub fn assemble(&self, m: Modality, records: &[usize]) -> Result<ModalityBatch> {
        for &r in records {
            if !self.has(m, r) {
                bail!("record {} has no {} data", self.id(r), m.name());
            }
        }
        Ok(match m {
            Modality::Crystal => ModalityBatch::Crystal(self.graph_batch(records)?),
            Modality::Dos => {
                let p = self.shards[0].meta.preprocess.dos_points;
                let mut b = DosBatch { batch: records.len(), len: p, ..Default::default() };
                let rows: Vec<_> = records
                    .par_iter()
                    .map(|&r| {
                        let (s, i) = self.locate[r];
                        let sh = &self.shards[s as usize];
                        let e = self.rows(s, i, paths::DOS_ENERGIES, &sh.dos_energies, i as usize..i as usize + 1, p)?;
                        let d = self.rows(s, i, paths::DOS_DENSITIES, &sh.dos_densities, i as usize..i as usize + 1, p)?;
                        Ok((e, d))
                    })
                    .collect::<Result<_>>()?;
                for (e, d) in rows {
                    b.energies.extend_from_slice(&e);
                    b.densities.extend_from_slice(&d);
                }
                ModalityBatch::Dos(b)
            }
            Modality::ChargeDensity => {
                let grid = self.shards[0].meta.preprocess.density_grid;
                let n: usize = grid.iter().product();
                let mut b = DensityBatch { batch: records.len(), grid, ..Default::default() };
                let streamed = self.streamed_rows(records, n)?;
                b.values.reserve(records.len() * n);
                for (k, &r) in records.iter().enumerate() {
                    let (s, i) = self.at(r);
                    match &streamed[k] {
                        Some(row) => b.values.extend_from_slice(row),
                        None => b.values.extend_from_slice(&s.charge_density[i * n..(i + 1) * n]),
                    }
                    b.volumes.push(cell_volume(&s.lattice[i * 9..i * 9 + 9]) as f32);
                }
                ModalityBatch::ChargeDensity(b)
            }
            Modality::Text => {
                let d = self.text_dim();
                let mut b = TextBatch { batch: records.len(), dim: d, ..Default::default() };
                let rows: Vec<_> = records
                    .par_iter()
                    .map(|&r| {
                        let (s, i) = self.locate[r];
                        self.rows(s, i, paths::EMBEDDING, &self.shards[s as usize].text_embedding, i as usize..i as usize + 1, d)
                    })
                    .collect::<Result<_>>()?;
                for row in rows {
                    b.values.extend_from_slice(&row);
                }
                ModalityBatch::Text(b)
            }
        })
    }

    /// The decoded density rows of `records` whose shard streams them (`None` for records held
    /// in memory): from the cache, else read from disk in parallel and cached.
    fn streamed_rows(&self, records: &[usize], n: usize) -> Result<Vec<Option<Arc<[f32]>>>> {
        let mut out: Vec<Option<Arc<[f32]>>> = vec![None; records.len()];
        if !self.streams_density() {
            return Ok(out);
        }
        let mut missing = Vec::new();
        {
            let cache = self.cache.lock().map_err(|_| anyhow::anyhow!("density cache poisoned by a panicked reader"))?;
            for (k, &r) in records.iter().enumerate() {
                if self.streamed[self.locate[r].0 as usize].contains_key(paths::CHARGE_DENSITY) {
                    match cache.rows.get(&r) {
                        Some(row) => out[k] = Some(Arc::clone(row)),
                        None => missing.push(k),
                    }
                }
            }
        }
        // Decode outside the lock: the prefetch thread and a caller may both assemble.
        let decoded: Vec<Arc<[f32]>> = missing
            .par_iter()
            .map(|&k| {
                let r = records[k];
                let (s, i) = self.locate[r];
                let column = &self.streamed[s as usize][paths::CHARGE_DENSITY];
                let mut row = Vec::with_capacity(n);
                column.read_rows(i as usize..i as usize + 1, &record_name(i as usize, self.id(r)), &mut row)?;
                Ok(Arc::from(row))
            })
            .collect::<Result<_>>()?;
        let mut cache = self.cache.lock().map_err(|_| anyhow::anyhow!("density cache poisoned by a panicked reader"))?;
        cache.stats.rows_read += decoded.len() as u64;
        for (&k, row) in missing.iter().zip(decoded) {
            cache.insert(records[k], Arc::clone(&row));
            out[k] = Some(row);
        }
        Ok(out)
    }

    /// Rows `rows` (of `row_len` values each) of column `dataset` of shard `s`, for its record
    /// `i`: a slice of the in-memory column, or read from the column's chunks where the shard
    /// streams it (errors name shard, dataset and record).
    fn rows<'a, T: ColumnValue>(&'a self, s: u32, i: u32, dataset: &str, in_memory: &'a [T], rows: Range<usize>, row_len: usize) -> Result<Cow<'a, [T]>> {
        match self.streamed[s as usize].get(dataset) {
            Some(column) => {
                let mut out = Vec::new();
                column.read_rows(rows, &record_name(i as usize, &self.shards[s as usize].ids[i as usize]), &mut out)?;
                Ok(Cow::Owned(out))
            }
            None => Ok(Cow::Borrowed(&in_memory[rows.start * row_len..rows.end * row_len])),
        }
    }

    /// Record `r`'s atoms and edges (record-local atom indices), read in parallel with the
    /// batch's other records; [`Dataset::graph_batch`] concatenates them in batch order.
    fn record_graph(&self, r: usize) -> Result<RecordGraph<'_>> {
        let (s, i) = self.locate[r];
        let sh = &self.shards[s as usize];
        let ix = i as usize;
        let span = |offsets: &[i64]| offsets[ix] as usize..offsets[ix + 1] as usize;
        let inf = &sh.infinite;
        let e = span(&inf.offsets);
        let g = paths::INFINITE;
        Ok(RecordGraph {
            species: self.rows(s, i, paths::SPECIES, &sh.species, span(&sh.atom_offsets), 1)?,
            local: self.record_edges(s, i, paths::EDGE_LISTS[0], &sh.local)?,
            cgcnn: self.record_edges(s, i, paths::EDGE_LISTS[1], &sh.cgcnn)?,
            inf_src: self.rows(s, i, &format!("{g}/src"), &inf.src, e.clone(), 1)?,
            inf_dst: self.rows(s, i, &format!("{g}/dst"), &inf.dst, e.clone(), 1)?,
            coulomb: self.rows(s, i, &format!("{g}/coulomb"), &inf.coulomb, e.clone(), 1)?,
            london: self.rows(s, i, &format!("{g}/london"), &inf.london, e.clone(), 1)?,
            pauli: self.rows(s, i, &format!("{g}/pauli"), &inf.pauli, e, 1)?,
        })
    }

    /// Record `i` of shard `s`'s edges of list `group` (its columns `c` where in memory).
    fn record_edges<'a>(&'a self, s: u32, i: u32, group: &str, c: &'a EdgeColumns) -> Result<RecordEdges<'a>> {
        let e = c.offsets[i as usize] as usize..c.offsets[i as usize + 1] as usize;
        Ok(RecordEdges {
            src: self.rows(s, i, &format!("{group}/src"), &c.src, e.clone(), 1)?,
            dst: self.rows(s, i, &format!("{group}/dst"), &c.dst, e.clone(), 1)?,
            distance: self.rows(s, i, &format!("{group}/distance"), &c.distance, e, 1)?,
        })
    }

    fn graph_batch(&self, records: &[usize]) -> Result<GraphBatch> {
        let parts: Vec<RecordGraph> = records.par_iter().map(|&r| self.record_graph(r)).collect::<Result<_>>()?;
        let mut g = GraphBatch { num_graphs: records.len(), node_offsets: vec![0].into(), ..Default::default() };
        for p in parts {
            let base = g.species.len() as u32;
            g.species.extend_from_slice(&p.species);
            g.node_offsets.host_mut().push(g.species.len() as u32);
            append_edges(&mut g.local, &p.local, base);
            append_edges(&mut g.cgcnn, &p.cgcnn, base);
            g.infinite.src.host_mut().extend(p.inf_src.iter().map(|v| v + base));
            g.infinite.dst.host_mut().extend(p.inf_dst.iter().map(|v| v + base));
            g.infinite.coulomb.extend(p.coulomb.iter().map(|&v| v as f32));
            g.infinite.london.extend(p.london.iter().map(|&v| v as f32));
            g.infinite.pauli.extend(p.pauli.iter().map(|&v| v as f32));
        }
        Ok(g)
    }
}

/// One record's edges of one list, borrowed from memory or read from disk.
struct RecordEdges<'a> {
    src: Cow<'a, [u32]>,
    dst: Cow<'a, [u32]>,
    distance: Cow<'a, [f32]>,
}

/// One record's part of a [`GraphBatch`].
struct RecordGraph<'a> {
    species: Cow<'a, [u8]>,
    local: RecordEdges<'a>,
    cgcnn: RecordEdges<'a>,
    inf_src: Cow<'a, [u32]>,
    inf_dst: Cow<'a, [u32]>,
    coulomb: Cow<'a, [f64]>,
    london: Cow<'a, [f64]>,
    pauli: Cow<'a, [f64]>,
}

/// How errors name record `i` of a shard.
fn record_name(i: usize, id: &str) -> String {
    format!("record {i} ({id})")
}

fn append_edges(out: &mut BatchedEdges, e: &RecordEdges, base: u32) {
    out.src.host_mut().extend(e.src.iter().map(|v| v + base));
    out.dst.host_mut().extend(e.dst.iter().map(|v| v + base));
    out.distance.extend_from_slice(&e.distance);
}

fn cell_volume(l: &[f64]) -> f64 {
    (l[0] * (l[4] * l[8] - l[5] * l[7]) - l[1] * (l[3] * l[8] - l[5] * l[6]) + l[2] * (l[3] * l[7] - l[4] * l[6])).abs()
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

