//! A training dataset: a set of shards loaded into memory, addressed by one global record index,
//! and the assembly of `ModalityBatch`es (graph batching with re-indexed nodes, DOS, density and
//! text tensors) for any list of records.
//!
//! The whole set is held in memory (bulk shard loads are ~10³–10⁴ records/s, far above what a
//! step consumes); batch assembly runs on a prefetch thread in the training loop.

use crate::model::{BatchedEdges, DensityBatch, DosBatch, GraphBatch, Modality, ModalityBatch, TextBatch};
use crate::shard::{EdgeColumns, ShardData};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

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
    pub shards: Vec<ShardData>,
    /// Global record r lives in shard `locate[r].0` at row `locate[r].1`.
    locate: Vec<(u32, u32)>,
    /// SHA-256 over the shard files' names and their record ids: identifies the data a
    /// checkpoint was trained on.
    pub fingerprint: String,
}

impl Dataset {
    pub fn load(paths: &[PathBuf]) -> Result<Dataset> {
        let mut shards = Vec::new();
        for p in paths {
            // Checksums verified and integrity checked: training must not run on a shard that
            // `multimat validate` would reject (or panic on its offsets).
            let data = crate::shard::ShardReader::open(p)
                .and_then(|r| r.load(crate::shard::LoadOptions { verify_checksums: true }))
                .with_context(|| format!("loading shard {}", p.display()))?;
            crate::shard::integrity::check_loaded(&data)?;
            shards.push(data);
        }
        Self::from_shards(shards)
    }

    pub fn from_shards(shards: Vec<ShardData>) -> Result<Dataset> {
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
        Ok(Dataset { fingerprint: hex::encode(hasher.finalize()), shards, locate })
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

    /// Assemble modality `m` for `records` (all must have it).
    pub fn assemble(&self, m: Modality, records: &[usize]) -> Result<ModalityBatch> {
        for &r in records {
            if !self.has(m, r) {
                bail!("record {} has no {} data", self.id(r), m.name());
            }
        }
        Ok(match m {
            Modality::Crystal => ModalityBatch::Crystal(self.graph_batch(records)),
            Modality::Dos => {
                let p = self.shards[0].meta.preprocess.dos_points;
                let mut b = DosBatch { batch: records.len(), len: p, ..Default::default() };
                for &r in records {
                    let (s, i) = self.at(r);
                    b.energies.extend_from_slice(&s.dos_energies[i * p..(i + 1) * p]);
                    b.densities.extend_from_slice(&s.dos_densities[i * p..(i + 1) * p]);
                }
                ModalityBatch::Dos(b)
            }
            Modality::ChargeDensity => {
                let grid = self.shards[0].meta.preprocess.density_grid;
                let n: usize = grid.iter().product();
                let mut b = DensityBatch { batch: records.len(), grid, ..Default::default() };
                for &r in records {
                    let (s, i) = self.at(r);
                    b.values.extend_from_slice(&s.charge_density[i * n..(i + 1) * n]);
                    b.volumes.push(cell_volume(&s.lattice[i * 9..i * 9 + 9]) as f32);
                }
                ModalityBatch::ChargeDensity(b)
            }
            Modality::Text => {
                let d = self.text_dim();
                let mut b = TextBatch { batch: records.len(), dim: d, ..Default::default() };
                for &r in records {
                    let (s, i) = self.at(r);
                    b.values.extend_from_slice(&s.text_embedding[i * d..(i + 1) * d]);
                }
                ModalityBatch::Text(b)
            }
        })
    }

    fn graph_batch(&self, records: &[usize]) -> GraphBatch {
        let mut g = GraphBatch { num_graphs: records.len(), node_offsets: vec![0].into(), ..Default::default() };
        for &r in records {
            let (s, i) = self.at(r);
            let base = g.species.len() as u32;
            g.species.extend_from_slice(&s.species[s.atoms(i)]);
            g.node_offsets.host_mut().push(g.species.len() as u32);
            append_edges(&mut g.local, &s.local, i, base);
            append_edges(&mut g.cgcnn, &s.cgcnn, i, base);
            let inf = &s.infinite;
            let range = inf.offsets[i] as usize..inf.offsets[i + 1] as usize;
            g.infinite.src.host_mut().extend(inf.src[range.clone()].iter().map(|v| v + base));
            g.infinite.dst.host_mut().extend(inf.dst[range.clone()].iter().map(|v| v + base));
            g.infinite.coulomb.extend(inf.coulomb[range.clone()].iter().map(|&v| v as f32));
            g.infinite.london.extend(inf.london[range.clone()].iter().map(|&v| v as f32));
            g.infinite.pauli.extend(inf.pauli[range].iter().map(|&v| v as f32));
        }
        g
    }
}

fn append_edges(out: &mut BatchedEdges, cols: &EdgeColumns, i: usize, base: u32) {
    let range = cols.offsets[i] as usize..cols.offsets[i + 1] as usize;
    out.src.host_mut().extend(cols.src[range.clone()].iter().map(|v| v + base));
    out.dst.host_mut().extend(cols.dst[range.clone()].iter().map(|v| v + base));
    out.distance.extend_from_slice(&cols.distance[range]);
}

fn cell_volume(l: &[f64]) -> f64 {
    (l[0] * (l[4] * l[8] - l[5] * l[7]) - l[1] * (l[3] * l[8] - l[5] * l[6]) + l[2] * (l[3] * l[7] - l[4] * l[6])).abs()
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

