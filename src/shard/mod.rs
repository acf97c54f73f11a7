//! The multimat HDF5 shard format (schema v1, specified in `data-specs/shard-v1.md`).
//! Every reader and writer of shards goes through this module.
//!
//! A shard holds N processed records column-wise: ragged data (atoms, edges) as flat arrays plus
//! per-record offsets, fixed-size data (DOS, charge density, embeddings, targets) as (N, …) arrays
//! whose rows are NaN for absent records, and a presence mask per modality. Every dataset carries
//! the sha256 of its raw little-endian bytes; a record has its own checksum for the manifest.
//!
//! - [`ShardWriter`] writes a whole shard atomically and deterministically (byte-identical files
//!   for identical inputs: HDF5 object time stamps are off).
//! - [`ShardReader`] bulk-loads a whole shard into [`ShardData`] (columnar, as training wants it),
//!   or with its per-record columns (density, DOS, embeddings, atoms, edges) indexed so that
//!   [`stream`] reads them one record at a time.
//! - [`validate()`] reports every violation of the spec with its location; [`integrity`] checks
//!   the cheap part of it on data loaded for training.
//! - [`manifest`] is the JSON index written beside the shards.

mod checksum;
pub mod integrity;
pub mod manifest;
mod read;
pub mod stream;
mod validate;
mod write;

pub use checksum::{dataset_sha256, LeBytes};
/// Turn off HDF5's advisory file locking for this process (unless the user set
/// `HDF5_USE_FILE_LOCKING` themselves). multimat never opens a file for writing under its final
/// name — every shard is written to a temporary file and renamed — so the lock protects nothing,
/// while HDF5's flock on a second descriptor of a just-renamed file failed intermittently with
/// EAGAIN in tests, and parallel file systems (Lustre, NFS) often refuse flock altogether.
/// Called before every HDF5 open/create; HDF5 reads the variable at each file open.
pub fn hdf5_without_file_locking() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("HDF5_USE_FILE_LOCKING").is_none() {
            std::env::set_var("HDF5_USE_FILE_LOCKING", "FALSE");
        }
    });
}

pub use read::{EdgeColumns, InfiniteColumns, LoadOptions, ShardData, ShardReader, StreamedColumns};
pub use validate::{validate, Violation};
pub use write::{check_record, ShardWriter};

use crate::crystal::{CrystalGraphs, GraphParams};
use crate::material::{ProcessedDos, Provenance, Structure, TextEmbedding};
use crate::preprocess::PreprocessParams;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// File name of shard `slice` written by `rank` (ingest and `synth` both name shards this way).
pub fn shard_name(rank: usize, slice: usize) -> String {
    format!("shard-r{rank:03}-{slice:05}.h5")
}
/// Value of the root attribute `format`.
pub const FORMAT_NAME: &str = "multimat-shard";

/// Modalities with a presence mask, in the order used by record checksums and counts.
pub const MODALITIES: [&str; 6] = ["structure", "graphs", "dos", "charge_density", "text", "text_embedding"];

/// Dataset paths (schema v1). Kept in one place so writer, reader and validator agree.
pub mod paths {
    pub const IDS: &str = "ids";
    pub const PROVENANCE: &str = "provenance";
    pub const LATTICE: &str = "crystal/lattice";
    pub const ATOM_OFFSETS: &str = "crystal/atom_offsets";
    pub const SPECIES: &str = "crystal/species";
    pub const FRAC_COORDS: &str = "crystal/frac_coords";
    pub const DOS_ENERGIES: &str = "dos/energies";
    pub const DOS_DENSITIES: &str = "dos/densities";
    pub const DOS_REPAIRED: &str = "dos/repaired_points";
    pub const CHARGE_DENSITY: &str = "charge_density/values";
    pub const DESCRIPTIONS: &str = "text/description";
    pub const EMBEDDING: &str = "text/embedding";
    pub const INFINITE: &str = "graphs/infinite";
    pub const INGEST_REJECTS: &str = "ingest/rejects";
    /// Optional (shards written before it lack it): modalities left absent on kept records.
    pub const INGEST_ABSENT: &str = "ingest/absent";
    /// `graphs/local` and `graphs/cgcnn` share the edge-list layout.
    pub const EDGE_LISTS: [&str; 2] = ["graphs/local", "graphs/cgcnn"];
}

/// One processed record as stored in a shard: every modality optional.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ShardRecord {
    pub id: String,
    pub structure: Option<Structure>,
    /// Requires `structure`; atom indices refer to its sites.
    pub graphs: Option<CrystalGraphs>,
    pub dos: Option<ProcessedDos>,
    /// ρ·V_cell on `PreprocessParams::density_grid`, C order `(ix·ny + iy)·nz + iz`. // (gx, gy, gz)
    pub charge_density: Option<Vec<f32>>,
    /// Non-empty description when present.
    pub text: Option<String>,
    pub text_embedding: Option<TextEmbedding>,
    /// Target name → values; names and widths must match the shard's [`TargetSpec`]s.
    pub targets: BTreeMap<String, Vec<f64>>,
    pub provenance: Provenance,
}

impl ShardRecord {
    /// Presence of each modality, in [`MODALITIES`] order.
    pub fn presence(&self) -> [bool; 6] {
        [
            self.structure.is_some(),
            self.graphs.is_some(),
            self.dos.is_some(),
            self.charge_density.is_some(),
            self.text.is_some(),
            self.text_embedding.is_some(),
        ]
    }

    /// The record checksum listed in the manifest (see `data-specs/shard-v1.md`, "Record checksum"):
    /// sha256 over the record's stored values, independent of which shard or row holds it.
    pub fn checksum(&self) -> String {
        checksum::record_sha256(self)
    }
}

/// Shape and units of one target property.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetSpec {
    /// Values per record (1 for scalars, e.g. 15 for an upper-triangle elastic tensor).
    pub width: usize,
    /// Units as a plain string ("GPa", "eV"); "" when the source does not say.
    pub units: String,
}

/// The text-embedding model shared by every embedding in a shard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingSpec {
    pub model: String,
    /// sha256 of the model weights file; "" when unknown (e.g. embeddings precomputed elsewhere).
    pub weights_sha256: String,
    pub dim: usize,
}

/// Bookkeeping the ingest stores in each shard so a re-run can resume without re-parsing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IngestInfo {
    /// sha256 over the input slice (ids, source paths and sizes) and every option that changes output.
    pub fingerprint: String,
    /// Position of this shard's slice in the ingest's sorted input list, `[start, end)`.
    pub input_start: u64,
    pub input_end: u64,
    /// One JSON object per rejected input of the slice (file, record, reason).
    pub rejects: Vec<String>,
    /// One JSON object per modality that could not be computed for a record that was kept
    /// without it (file, record, modality, reason); empty in shards written before this existed.
    pub absent: Vec<String>,
}

/// Shard-wide metadata (root attributes and per-dataset attributes).
#[derive(Clone, Debug, PartialEq)]
pub struct ShardMeta {
    pub preprocess: PreprocessParams,
    pub graph_params: GraphParams,
    pub targets: BTreeMap<String, TargetSpec>,
    /// `None`: no record carries an embedding and `text/embedding` has width 0.
    pub text_embedding: Option<EmbeddingSpec>,
    pub ingest: Option<IngestInfo>,
}

impl Default for ShardMeta {
    fn default() -> Self {
        ShardMeta {
            preprocess: PreprocessParams::default(),
            graph_params: GraphParams::default(),
            targets: BTreeMap::new(),
            text_embedding: None,
            ingest: None,
        }
    }
}

/// Per-modality presence counts of a set of records (manifest, ingest summary).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModalityCounts {
    pub records: usize,
    pub structure: usize,
    pub graphs: usize,
    pub dos: usize,
    pub charge_density: usize,
    pub text: usize,
    pub text_embedding: usize,
    /// Target name → records that have it.
    pub targets: BTreeMap<String, usize>,
}

impl ModalityCounts {
    /// Count one record with the given presence flags (in [`MODALITIES`] order) and targets.
    pub fn add<'a>(&mut self, presence: [bool; 6], targets: impl IntoIterator<Item = &'a String>) {
        self.records += 1;
        let fields = [
            &mut self.structure,
            &mut self.graphs,
            &mut self.dos,
            &mut self.charge_density,
            &mut self.text,
            &mut self.text_embedding,
        ];
        for (field, present) in fields.into_iter().zip(presence) {
            *field += present as usize;
        }
        for t in targets {
            *self.targets.entry(t.clone()).or_default() += 1;
        }
    }

    pub fn merge(&mut self, other: &ModalityCounts) {
        self.records += other.records;
        self.structure += other.structure;
        self.graphs += other.graphs;
        self.dos += other.dos;
        self.charge_density += other.charge_density;
        self.text += other.text;
        self.text_embedding += other.text_embedding;
        for (k, v) in &other.targets {
            *self.targets.entry(k.clone()).or_default() += v;
        }
    }
}
