//! The manifest: a JSON index beside the shards (spec in `data-specs/shard-v1.md`, "Manifest").
//! It lists every record with its shard, row, source files and checksum, every shard with the
//! sha256 of its bytes, and the counts per modality. Written atomically by the ingest (rank 0).

use super::{ModalityCounts, ShardData, Violation, MODALITIES, SCHEMA_VERSION};
use crate::crystal::GraphParams;
use crate::preprocess::PreprocessParams;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

pub const MANIFEST_FORMAT: &str = "multimat-manifest";
pub const MANIFEST_FILE: &str = "manifest.json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// The shard schema version of every listed shard.
    pub schema_version: u32,
    pub multimat_version: String,
    pub preprocess_params: PreprocessParams,
    pub graph_params: GraphParams,
    pub shards: Vec<ManifestShard>,
    pub counts: ModalityCounts,
    /// Inputs rejected by the ingest (details in `rejects.jsonl`).
    pub rejects: usize,
    pub records: Vec<ManifestRecord>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestShard {
    /// File name relative to the manifest's directory.
    pub file: String,
    pub records: usize,
    /// sha256 of the whole file's bytes.
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestRecord {
    pub id: String,
    /// Shard file name relative to the manifest's directory.
    pub shard: String,
    /// Row in that shard.
    pub index: usize,
    /// Modalities present, in the order of `MODALITIES`.
    pub modalities: Vec<String>,
    /// Modality → source file (`#record` suffix where a file holds many records).
    pub sources: BTreeMap<String, String>,
    /// `ShardRecord::checksum` of the stored record.
    pub checksum: String,
}

impl Manifest {
    pub fn new(preprocess_params: PreprocessParams, graph_params: GraphParams) -> Self {
        Manifest {
            format: MANIFEST_FORMAT.into(),
            schema_version: SCHEMA_VERSION,
            multimat_version: env!("CARGO_PKG_VERSION").into(),
            preprocess_params,
            graph_params,
            shards: Vec::new(),
            counts: ModalityCounts::default(),
            rejects: 0,
            records: Vec::new(),
        }
    }

    /// Add every record of a loaded shard (file name `file`, relative to the manifest).
    pub fn add_shard(&mut self, file: &str, data: &ShardData, file_sha256: String) {
        for i in 0..data.len() {
            let r = data.record(i);
            let presence = r.presence();
            self.counts.add(presence, r.targets.keys());
            self.records.push(ManifestRecord {
                id: r.id.clone(),
                shard: file.to_owned(),
                index: i,
                modalities: MODALITIES.iter().zip(presence).filter(|(_, p)| *p).map(|(m, _)| m.to_string()).collect(),
                sources: r.provenance.sources.clone(),
                checksum: r.checksum(),
            });
        }
        self.shards.push(ManifestShard { file: file.to_owned(), records: data.len(), sha256: file_sha256 });
    }

    /// Write atomically as pretty JSON.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        crate::atomic::write_bytes(path, &bytes)
    }

    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading manifest {}", path.display()))?;
        let m: Manifest = serde_json::from_slice(&bytes).with_context(|| format!("parsing manifest {}", path.display()))?;
        anyhow::ensure!(m.format == MANIFEST_FORMAT, "{}: format {:?} is not {MANIFEST_FORMAT:?}", path.display(), m.format);
        Ok(m)
    }
}

/// sha256 of a file's bytes (streamed).
pub fn file_sha256(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(h.finalize()))
}

/// Check a manifest against the shards beside it: every shard present with the listed sha256,
/// every record at its listed row with the listed id and checksum, counts consistent.
pub fn check_manifest(path: &Path) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut v = |location: String, record: Option<(usize, String)>, message: String| {
        out.push(Violation { file: path.to_owned(), location, record, message })
    };
    let m = match Manifest::read(path) {
        Ok(m) => m,
        Err(e) => {
            v("/".into(), None, format!("{e:#}"));
            return out;
        }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut by_shard: HashMap<&str, Vec<(usize, &ManifestRecord)>> = HashMap::new();
    for (k, r) in m.records.iter().enumerate() {
        by_shard.entry(r.shard.as_str()).or_default().push((k, r));
    }
    let mut counts = ModalityCounts::default();
    for shard in &m.shards {
        let loc = format!("shards/{}", shard.file);
        let file = dir.join(&shard.file);
        match file_sha256(&file) {
            Ok(s) if s == shard.sha256 => {}
            Ok(s) => v(loc.clone(), None, format!("file sha256 {s} ≠ listed {}", shard.sha256)),
            Err(e) => {
                v(loc, None, format!("{e:#}"));
                continue;
            }
        }
        let data = match ShardData::load(&file) {
            Ok(d) => d,
            Err(e) => {
                v(loc, None, format!("{e:#}"));
                continue;
            }
        };
        if data.len() != shard.records {
            v(loc.clone(), None, format!("{} records in the file, {} listed", data.len(), shard.records));
        }
        for (k, r) in by_shard.remove(shard.file.as_str()).unwrap_or_default() {
            let rloc = format!("records[{k}]");
            if r.index >= data.len() {
                v(rloc, Some((k, r.id.clone())), format!("row {} beyond the shard's {} records", r.index, data.len()));
                continue;
            }
            let rec = data.record(r.index);
            counts.add(rec.presence(), rec.targets.keys());
            if rec.id != r.id {
                v(rloc, Some((k, r.id.clone())), format!("row {} holds {:?}", r.index, rec.id));
            } else if rec.checksum() != r.checksum {
                v(rloc, Some((k, r.id.clone())), "record checksum mismatch".into());
            }
        }
    }
    for (shard, recs) in by_shard {
        v(format!("records[{}]", recs[0].0), Some((recs[0].0, recs[0].1.id.clone())), format!("shard {shard} is not listed in shards"));
    }
    if counts != m.counts {
        v("counts".into(), None, format!("listed counts {:?} ≠ recomputed {:?}", m.counts, counts));
    }
    out
}
