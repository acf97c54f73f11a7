//! `multimat ingest`: raw files → validated, preprocessed records → HDF5 shards + manifest,
//! in parallel over records (rayon) and ranks (`dist::Topology`), with rejects recorded and
//! atomic outputs.
//!
//! Flow: [`plan()`] lists inputs sorted by id → the list is cut into slices of
//! `records_per_shard`; slice k is shard k, written by rank k mod world size as
//! `shard-r{rank:03}-{k:05}.h5` → each input is parsed and preprocessed in parallel, failures
//! become [`Reject`]s (the batch goes on unless `strict`) → the shard is written with its slice's
//! rejects and a fingerprint of its inputs → rank 0 assembles `manifest.json` and `rejects.jsonl`
//! from the shards.
//!
//! Invariants: shard k depends only on slice k and the options, so identical inputs give
//! byte-identical shards and a re-run skips every shard that exists, validates and carries the
//! same fingerprint (resume). Every output is written atomically.

mod approximations;
mod plan;
pub mod robocrys;

pub use plan::{plan, Extras, Input, InputFiles, Plan, Source};

use crate::crystal::GraphParams;
use crate::dist::Dist;
use crate::material::{MaterialRecord, Provenance};
use crate::plausibility::Bounds;
use crate::preprocess::PreprocessParams;
use crate::shard::manifest::{file_sha256, Manifest, MANIFEST_FILE};
use crate::shard::{check_record, IngestInfo, ModalityCounts, ShardData, ShardMeta, ShardRecord, ShardWriter, TargetSpec};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const REJECTS_FILE: &str = "rejects.jsonl";
/// One JSON object per modality left absent on a kept record ([`Absent`]).
pub const ABSENT_FILE: &str = "absent.jsonl";

/// A modality that could not be computed for a record that was kept without it (the record
/// keeps its structure and other modalities; the batch masking of training handles the gap).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Absent {
    /// The file the record came from.
    pub file: String,
    pub record: String,
    /// `dos`, `charge_density` or `text`.
    pub modality: String,
    pub reason: String,
}

/// How `generated_text` makes descriptions.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum TextGenerator {
    /// multimat's Robocrystallographer-style approximation (`approx::describe`), labelled so.
    #[default]
    Approx,
    /// The `robocrys` package in this Python (see `robocrys.rs`).
    Robocrys { python: PathBuf },
}

/// One input that did not make it into a shard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reject {
    /// The file at fault (or the source file the record came from).
    pub file: String,
    /// Material id, row or line within the file.
    pub record: String,
    pub reason: String,
}

impl Reject {
    pub fn new(file: &Path, record: impl Into<String>, reason: impl Into<String>) -> Self {
        Reject { file: file.display().to_string(), record: record.into(), reason: reason.into() }
    }
}

/// Everything besides the source that decides the output.
#[derive(Clone, Debug)]
pub struct IngestOptions {
    pub out: PathBuf,
    pub records_per_shard: usize,
    /// Stop at the first rejected input instead of recording it.
    pub strict: bool,
    /// Build crystal graphs (`crystal::build_graphs`); failures become rejects.
    pub build_graphs: bool,
    pub preprocess: PreprocessParams,
    pub graph_params: GraphParams,
    /// Target name → units, overriding [`default_units`].
    pub units: BTreeMap<String, String>,
    pub progress: bool,
    /// Attach a promolecular charge density (`approx::promolecular`, an approximation, labelled
    /// as such in the provenance) to every input that has a structure but no charge density.
    pub approx_charge_density: bool,
    /// Attach a tight-binding DOS (`approx::tight_binding`, an approximation, labelled as such)
    /// to every input that has a structure but no DOS.
    pub approx_dos: Option<crate::approx::tight_binding::TightBindingParams>,
    /// Attach a generated structure description as the text of every input that has a
    /// structure but no text, made by `text_generator`.
    pub generated_text: bool,
    pub text_generator: TextGenerator,
    /// Keep only the first N inputs (in id order) of the plan; `None` keeps all.
    pub limit: Option<usize>,
    /// Plausibility bounds every record must meet (`data-specs/plausibility.md`).
    pub bounds: Bounds,
}

impl IngestOptions {
    pub fn new(out: PathBuf) -> Self {
        IngestOptions {
            out,
            records_per_shard: 1024,
            strict: false,
            build_graphs: true,
            preprocess: PreprocessParams::default(),
            graph_params: GraphParams::default(),
            units: BTreeMap::new(),
            progress: false,
            approx_charge_density: false,
            approx_dos: None,
            generated_text: false,
            text_generator: TextGenerator::Approx,
            limit: None,
            bounds: Bounds::default(),
        }
    }
}

/// Units of the target names found in Materials Project / matminer data; "" for others.
pub fn default_units(name: &str) -> &'static str {
    match name {
        "bulk_modulus" | "shear_modulus" | "elastic_tensor" | "elastic_tensor_original" | "K_VRH" | "G_VRH"
        | "K_Voigt" | "K_Reuss" | "G_Voigt" | "G_Reuss" | "K_Voigt_Reuss_Hill" | "G_Voigt_Reuss_Hill"
        | "compliance_tensor" => "GPa",
        "bulk_modulus_vrh" | "bulk_modulus_voigt" | "bulk_modulus_reuss" | "shear_modulus_vrh" | "shear_modulus_voigt"
        | "shear_modulus_reuss" | "bulk_modulus_kv" | "shear_modulus_gv" => "GPa",
        "band_gap" | "gap pbe" | "e_fermi" | "efermi" | "band_gap_hse" | "band_gap_gga" | "optb88vdw_bandgap" | "mbj_bandgap"
        | "hse_gap" | "cbm" | "vbm" => "eV",
        "formation_energy_per_atom" | "e_form" | "energy_per_atom" | "e_above_hull" | "energy_above_hull"
        | "formation_energy_peratom" | "ehull" | "optb88vdw_total_energy" => "eV/atom",
        "volume" => "angstrom^3",
        _ => "",
    }
}

/// What an ingest run did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IngestSummary {
    pub inputs: usize,
    pub shards_written: usize,
    pub shards_resumed: usize,
    pub rejects: usize,
    pub counts: ModalityCounts,
    /// Modality → records kept without it because it could not be computed (`absent.jsonl`).
    pub absent: BTreeMap<String, usize>,
    pub manifest: Option<PathBuf>,
}

pub use crate::shard::shard_name;

/// Parse and preprocess one input into a shard record, or say why not (default plausibility
/// bounds; see [`process_input_with_bounds`]).
pub fn process_input(input: &Input, meta: &ShardMeta, build_graphs: bool) -> std::result::Result<ShardRecord, Reject> {
    process_input_with_bounds(input, meta, build_graphs, &Bounds::default())
}

/// The file a modality of `input` came from: the file parsed for it, else its provenance entry
/// (`labels.csv#mp-1` → `labels.csv`), else the record's main source. A reject must blame the
/// file that holds the bad value, not the structure beside it.
fn source_of(input: &Input, key: &str) -> String {
    let file = match key {
        "structure" => input.files.structure.as_ref(),
        "dos" => input.files.dos.as_ref(),
        "charge_density" => input.files.charge_density.as_ref(),
        _ => None,
    };
    if let Some(p) = file {
        return p.display().to_string();
    }
    match input.record.provenance.sources.get(key) {
        Some(s) => s.split_once('#').map_or(s.as_str(), |(f, _)| f).to_string(),
        None => main_source(&input.record.provenance),
    }
}

/// Parse and preprocess one input into a shard record under plausibility `bounds`, or say why
/// not; the reject names the file that holds the bad value.
pub fn process_input_with_bounds(
    input: &Input,
    meta: &ShardMeta,
    build_graphs: bool,
    bounds: &Bounds,
) -> std::result::Result<ShardRecord, Reject> {
    let id = &input.id;
    let fail = |key: &str, e: anyhow::Error| Reject { file: source_of(input, key), record: id.clone(), reason: format!("{e:#}") };
    let rec: &MaterialRecord = &input.record;
    let files = &input.files;
    let structure = match (&files.structure, &rec.structure) {
        (Some(p), _) => Some(crate::io::read_structure(p).map_err(|e| fail("structure", e))?),
        (None, s) => s.clone(),
    };
    if let Some(s) = &structure {
        bounds.check_structure(s).map_err(|e| fail("structure", e.context("implausible structure")))?;
    }
    let dos_raw = match (&files.dos, &rec.dos) {
        (Some(p), _) => Some(crate::io::read_dos(p).map_err(|e| fail("dos", e))?),
        (None, d) => d.clone(),
    };
    if let Some(d) = &dos_raw {
        bounds.check_dos(d).map_err(|e| fail("dos", e.context("implausible DOS")))?;
    }
    let dos = dos_raw
        .map(|d| {
            let p = crate::preprocess::dos::process(&d, &meta.preprocess)?;
            bounds.check_processed_dos(&p.densities)?;
            Ok(p)
        })
        .transpose()
        .map_err(|e: anyhow::Error| fail("dos", e.context("preprocessing the DOS")))?;
    let density_raw = match (&files.charge_density, &rec.charge_density) {
        (Some(p), _) => Some(crate::io::read_charge_density(p).map_err(|e| fail("charge_density", e))?),
        (None, c) => c.clone(),
    };
    if let Some(c) = &density_raw {
        bounds
            .check_charge_density(c, structure.as_ref().map(|s| s.num_sites()))
            .map_err(|e| fail("charge_density", e.context("implausible charge density")))?;
    }
    let charge_density = density_raw
        .map(|c| {
            let r = crate::preprocess::density::resample(&c, &meta.preprocess)?;
            anyhow::ensure!(
                r.grid == meta.preprocess.density_grid,
                "resampled grid {:?} ≠ {:?}",
                r.grid,
                meta.preprocess.density_grid
            );
            Ok(r.values.iter().map(|&v| v as f32).collect::<Vec<f32>>())
        })
        .transpose()
        .map_err(|e| fail("charge_density", e.context("resampling the charge density")))?;
    let graphs = match (&structure, build_graphs) {
        (Some(s), true) => Some(
            crate::crystal::build_graphs(s, &meta.graph_params)
                .map_err(|e| fail("structure", e.context("building crystal graphs")))?,
        ),
        _ => None,
    };
    // Targets and texts come from label and text files: check them here, so a bad value is
    // blamed on its own file (check_record below would blame the structure).
    for (name, values) in &rec.targets {
        if let Some(spec) = meta.targets.get(name) {
            if values.len() != spec.width {
                let e = anyhow::anyhow!("target {name:?} has {} values, the other records have {}", values.len(), spec.width);
                return Err(fail("targets", e));
            }
        }
    }
    let units = |name: &str| meta.targets.get(name).map(|t| t.units.clone()).unwrap_or_else(|| default_units(name).to_string());
    bounds.check_targets(&rec.targets, units).map_err(|e| fail("targets", e))?;
    if let Some(t) = &rec.text {
        if let Some(k) = t.find(|c: char| c == '\0' || (c.is_control() && !c.is_whitespace())) {
            let e = anyhow::anyhow!("description has a control character {:?} at byte {k}", &t[k..].chars().next().unwrap_or('?'));
            return Err(fail("text", e));
        }
    }
    let record = ShardRecord {
        id: id.clone(),
        structure,
        graphs,
        dos,
        charge_density,
        text: rec.text.clone().filter(|t| !t.trim().is_empty()),
        text_embedding: rec.text_embedding.clone(),
        targets: rec.targets.clone(),
        provenance: rec.provenance.clone(),
    };
    if let Err(reason) = check_record(&record, meta) {
        return Err(Reject { file: main_source(&record.provenance), record: id.clone(), reason });
    }
    Ok(record)
}

/// The file most responsible for a record: its structure source, else any source.
fn main_source(provenance: &Provenance) -> String {
    let s = &provenance.sources;
    s.get("structure").or_else(|| s.values().next()).cloned().unwrap_or_default()
}

/// Target widths (the most common width among the inputs that have the target; a tie goes to
/// the width seen first in id order) and units.
fn target_specs(inputs: &[Input], units: &BTreeMap<String, String>) -> BTreeMap<String, TargetSpec> {
    let mut widths: BTreeMap<&String, Vec<(usize, usize)>> = BTreeMap::new(); // name → (width, count) in first-seen order
    for input in inputs {
        for (name, values) in &input.record.targets {
            let seen = widths.entry(name).or_default();
            match seen.iter_mut().find(|(w, _)| *w == values.len()) {
                Some((_, count)) => *count += 1,
                None => seen.push((values.len(), 1)),
            }
        }
    }
    widths
        .into_iter()
        .map(|(name, seen)| {
            let best = seen.iter().map(|&(_, c)| c).max().unwrap_or(0);
            let width = seen.iter().find(|&&(_, c)| c == best).map_or(0, |&(w, _)| w);
            let units = units.get(name).cloned().unwrap_or_else(|| default_units(name).to_string());
            (name.clone(), TargetSpec { width, units })
        })
        .collect()
}

/// Inputs whose targets have another width than `specs` says become rejects naming the labels'
/// own origin (`file#line N` / `file#row`), not the structure file: the label is what is wrong.
fn reject_target_width_mismatches(plan: &mut Plan, specs: &BTreeMap<String, TargetSpec>) {
    let inputs = std::mem::take(&mut plan.inputs);
    for input in inputs {
        let bad = input.record.targets.iter().find(|(name, v)| specs.get(*name).is_some_and(|s| s.width != v.len()));
        match bad {
            None => plan.inputs.push(input),
            Some((name, values)) => {
                let origin = input.record.provenance.sources.get("targets").cloned().unwrap_or_else(|| main_source(&input.record.provenance));
                let (file, place) = match origin.rsplit_once('#') {
                    Some((f, p)) if p.chars().all(|c| c.is_ascii_digit()) => (f.to_string(), format!("row {p} ({})", input.id)),
                    Some((f, p)) if p != input.id => (f.to_string(), format!("{p} ({})", input.id)),
                    Some((f, _)) => (f.to_string(), input.id.clone()),
                    None => (origin, input.id.clone()),
                };
                plan.rejects.push(Reject {
                    file,
                    record: place,
                    reason: format!("target {name:?} has {} value(s), but most materials have {}", values.len(), specs[name].width),
                });
            }
        }
    }
}

/// Descriptions made ahead of a slice by robocrys (id → text or robocrys's error), with the
/// provenance label of the run.
struct GeneratedTexts {
    source: String,
    texts: BTreeMap<String, std::result::Result<String, String>>,
}

/// `input` with the approximate modalities the options ask for attached (real data always wins;
/// see `approx::demo_data`), and the modalities that could not be computed for it ([`Absent`]):
/// those stay absent and the record goes on with the rest. Borrowed unchanged when nothing is
/// asked for.
fn with_approximations<'a>(
    input: &'a Input,
    opts: &IngestOptions,
    meta: &ShardMeta,
    generated: Option<&GeneratedTexts>,
) -> (std::borrow::Cow<'a, Input>, Vec<Absent>) {
    use approximations as approx;
    let mut current = std::borrow::Cow::Borrowed(input);
    let mut absent = Vec::new();
    let mut apply = |current: &mut std::borrow::Cow<'a, Input>, modality: &str, r: Result<Input>| match r {
        Ok(i) => *current = std::borrow::Cow::Owned(i),
        Err(e) => absent.push(Absent {
            file: main_source(&input.record.provenance),
            record: input.id.clone(),
            modality: modality.to_string(),
            reason: format!("{e:#}"),
        }),
    };
    if opts.approx_charge_density {
        let r = approx::with_promolecular_density(&current, meta.preprocess.density_grid);
        apply(&mut current, "charge_density", r);
    }
    if let Some(tb) = &opts.approx_dos {
        let r = approx::with_tight_binding_dos(&current, tb);
        apply(&mut current, "dos", r);
    }
    if opts.generated_text {
        let r = match generated {
            Some(g) => match g.texts.get(&input.id) {
                Some(Ok(text)) => approx::with_text(&current, text, &g.source),
                Some(Err(e)) => Err(anyhow::anyhow!("{e}")),
                // Not sent to robocrys: it has a text already, or no readable structure (that
                // is the structure's reject, not a missing text).
                None => Ok(current.clone().into_owned()),
            },
            None => approx::with_generated_text(&current),
        };
        apply(&mut current, "text", r);
    }
    (current, absent)
}

/// robocrys descriptions for the inputs of `slice` that have a readable structure and no text.
fn robocrys_texts(slice: &[Input], python: &Path, source: &str) -> Result<GeneratedTexts> {
    let structures: Vec<(String, crate::material::Structure)> = slice
        .par_iter()
        .filter(|i| i.record.text.as_ref().is_none_or(|t| t.trim().is_empty()))
        .filter_map(|i| {
            let s = match (&i.record.structure, &i.files.structure) {
                (Some(s), _) => Some(s.clone()),
                (None, Some(p)) => crate::io::read_structure(p).ok(),
                (None, None) => None,
            };
            s.map(|s| (i.id.clone(), s))
        })
        .collect();
    let texts = robocrys::describe_all(python, &structures)?;
    Ok(GeneratedTexts { source: source.to_string(), texts })
}

/// sha256 over everything that decides shard `slice`'s content: options, metadata, and each
/// input's id, known values, and files with their sizes.
/// `text_source` is the provenance label of generated texts made outside the options (robocrys
/// with its version), so another robocrys rewrites the shards.
fn fingerprint(meta: &ShardMeta, opts: &IngestOptions, inputs: &[Input], text_source: Option<&str>) -> Result<String> {
    let build_graphs = opts.build_graphs;
    let mut h = Sha256::new();
    h.update(b"multimat-ingest-v1");
    if opts.approx_charge_density {
        h.update(crate::approx::demo_data::APPROX_DENSITY_SOURCE);
    }
    if let Some(tb) = &opts.approx_dos {
        h.update(crate::approx::demo_data::APPROX_DOS_SOURCE);
        h.update(format!("{tb:?}"));
    }
    if opts.generated_text {
        match &opts.text_generator {
            TextGenerator::Approx => h.update(crate::approx::demo_data::GENERATED_TEXT_SOURCE),
            TextGenerator::Robocrys { .. } => h.update(text_source.unwrap_or("generated:robocrys")),
        }
    }
    if opts.bounds != Bounds::default() {
        // Other bounds accept other records; default runs keep their fingerprints.
        h.update(serde_json::to_vec(&opts.bounds)?);
    }
    h.update(env!("CARGO_PKG_VERSION"));
    h.update(serde_json::to_vec(&(&meta.preprocess, &meta.graph_params, &meta.targets, &meta.text_embedding, build_graphs))?);
    for input in inputs {
        h.update(serde_json::to_vec(&input.record)?);
        for p in [&input.files.structure, &input.files.dos, &input.files.charge_density].into_iter().flatten() {
            let size = std::fs::metadata(p).map(|m| m.len()).unwrap_or(u64::MAX);
            h.update(serde_json::to_vec(&(p, size))?);
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// Whether `path` is a complete, valid shard for this exact slice.
fn resumable(path: &Path, fingerprint: &str) -> bool {
    if !path.is_file() || !crate::shard::validate(path).is_empty() {
        return false;
    }
    crate::shard::ShardReader::open(path)
        .and_then(|r| r.ingest_info())
        .is_ok_and(|info| info.is_some_and(|i| i.fingerprint == fingerprint))
}

/// Run an ingest of `source` into `opts.out` in this process alone.
pub fn run(source: &Source, extras: &Extras, opts: &IngestOptions) -> Result<IngestSummary> {
    run_distributed(source, extras, opts, &Dist::single())
}

/// Run an ingest with every rank of `dist`: each rank plans (cheap, identical everywhere),
/// writes the shards of its slices, then rank 0 writes the manifest and rejects after a barrier.
pub fn run_distributed(source: &Source, extras: &Extras, opts: &IngestOptions, dist: &Dist) -> Result<IngestSummary> {
    anyhow::ensure!(opts.records_per_shard > 0, "--records-per-shard must be positive");
    let mut plan = plan(source, extras)?;
    // robocrys is checked before anything is written, so a Python without it fails at once.
    let robocrys_source = match (&opts.text_generator, opts.generated_text) {
        (TextGenerator::Robocrys { python }, true) => {
            let version = robocrys::check(python)?;
            Some(format!("generated:robocrys {version} ({})", python.display()))
        }
        _ => None,
    };
    if let Some(n) = opts.limit {
        plan.inputs.truncate(n);
    }
    if opts.strict {
        if let Some(r) = plan.rejects.first() {
            bail!("--strict: rejected {} ({}): {}", r.file, r.record, r.reason);
        }
    }
    let targets = target_specs(&plan.inputs, &opts.units);
    reject_target_width_mismatches(&mut plan, &targets);
    if opts.strict {
        if let Some(r) = plan.rejects.first() {
            bail!("--strict: rejected {} ({}): {}", r.file, r.record, r.reason);
        }
    }
    let meta = ShardMeta {
        preprocess: opts.preprocess.clone(),
        graph_params: opts.graph_params.clone(),
        targets,
        text_embedding: plan.embedding.clone(),
        ingest: None,
    };
    std::fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    let slices: Vec<&[Input]> = plan.inputs.chunks(opts.records_per_shard).collect();
    let topo = dist.topology;
    let mine: Vec<usize> = (0..slices.len()).filter(|k| k % topo.world_size == topo.rank).collect();

    let total: usize = mine.iter().map(|&k| slices[k].len()).sum();
    let bar = if opts.progress { ProgressBar::new(total as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{spinner} ingest [{elapsed_precise}] {bar:40} {pos}/{len} records ({per_sec}, eta {eta}) {msg}")
            .expect("valid progress template"),
    );
    let mut summary = IngestSummary { inputs: plan.inputs.len(), ..Default::default() };
    // This rank's shards, in one Result so that every rank reaches the agreement below
    // whatever happens (an error on one rank used to leave the others in a barrier).
    let mut write_mine = || -> Result<()> {
        for &k in &mine {
            let slice = slices[k];
            let path = opts.out.join(shard_name(topo.rank, k));
            let fp = fingerprint(&meta, opts, slice, robocrys_source.as_deref())?;
            if resumable(&path, &fp) {
                summary.shards_resumed += 1;
                bar.inc(slice.len() as u64);
                continue;
            }
            bar.set_message(shard_name(topo.rank, k));
            let generated = match (&opts.text_generator, &robocrys_source) {
                (TextGenerator::Robocrys { python }, Some(label)) => Some(robocrys_texts(slice, python, label)?),
                _ => None,
            };
            let results: Vec<std::result::Result<(ShardRecord, Vec<Absent>), Reject>> = slice
                .par_iter()
                .map(|input| {
                    let (with, absent) = with_approximations(input, opts, &meta, generated.as_ref());
                    let r = process_input_with_bounds(&with, &meta, opts.build_graphs, &opts.bounds).map(|rec| (rec, absent));
                    bar.inc(1);
                    r
                })
                .collect();
            let mut records = Vec::with_capacity(slice.len());
            let mut rejects = Vec::new();
            let mut absent = Vec::new();
            for r in results {
                match r {
                    Ok((rec, gaps)) => {
                        records.push(rec);
                        for a in gaps {
                            absent.push(serde_json::to_string(&a)?);
                        }
                    }
                    Err(rej) if opts.strict => {
                        bar.abandon();
                        bail!("--strict: rejected {} ({}): {}", rej.file, rej.record, rej.reason)
                    }
                    Err(rej) => rejects.push(serde_json::to_string(&rej)?),
                }
            }
            let start = (k * opts.records_per_shard) as u64;
            let info = IngestInfo { fingerprint: fp, input_start: start, input_end: start + slice.len() as u64, rejects, absent };
            let writer = ShardWriter::new(ShardMeta { ingest: Some(info), ..meta.clone() });
            writer.write(&path, &records)?;
            summary.shards_written += 1;
        }
        bar.finish_and_clear();
        Ok(())
    };
    let local = write_mine().map(|()| [summary.shards_written as u64, summary.shards_resumed as u64]);
    let [written, resumed] = agree(dist, local, "ingest")?;
    summary.shards_written = written as usize;
    summary.shards_resumed = resumed as usize;

    // Rank 0 writes the shared outputs once every rank's shards exist (all agreed above),
    // and shares the outcome so that no rank exits 0 without a manifest.
    let mut write_shared = || -> Result<()> {
        if topo.is_root() {
            let mut manifest = Manifest::new(meta.preprocess.clone(), meta.graph_params.clone());
            let mut reject_lines: Vec<String> =
                plan.rejects.iter().map(serde_json::to_string).collect::<std::result::Result<_, _>>()?;
            let mut absent_lines: Vec<String> = Vec::new();
            for k in 0..slices.len() {
                let name = shard_name(k % topo.world_size, k);
                let path = opts.out.join(&name);
                let data = ShardData::load(&path).with_context(|| format!("reading back {}", path.display()))?;
                reject_lines.extend(data.meta.ingest.as_ref().map(|i| i.rejects.clone()).unwrap_or_default());
                absent_lines.extend(data.meta.ingest.as_ref().map(|i| i.absent.clone()).unwrap_or_default());
                manifest.add_shard(&name, &data, file_sha256(&path)?);
            }
            manifest.rejects = reject_lines.len();
            let mut text = reject_lines.join("\n");
            if !text.is_empty() {
                text.push('\n');
            }
            crate::atomic::write_bytes(&opts.out.join(REJECTS_FILE), text.as_bytes())?;
            for line in &absent_lines {
                let a: Absent = serde_json::from_str(line).with_context(|| format!("an ingest/absent entry is not an Absent: {line}"))?;
                *summary.absent.entry(a.modality).or_default() += 1;
            }
            let mut text = absent_lines.join("\n");
            if !text.is_empty() {
                text.push('\n');
            }
            crate::atomic::write_bytes(&opts.out.join(ABSENT_FILE), text.as_bytes())?;
            let manifest_path = opts.out.join(MANIFEST_FILE);
            manifest.write(&manifest_path)?;
            summary.rejects = manifest.rejects;
            summary.counts = manifest.counts.clone();
            summary.manifest = Some(manifest_path);
        }
        Ok(())
    };
    let shared = write_shared();
    agree_with_root(dist, shared, "writing the manifest")?;
    Ok(summary)
}


/// Every rank contributes its outcome (two counters, or an error) and learns everyone's.
/// Returns the counters summed over ranks, or — on every rank — an error when any rank failed
/// (rank 0's names each failing rank and its message).
fn agree(dist: &Dist, local: Result<[u64; 2]>, what: &str) -> Result<[u64; 2]> {
    let msg = match &local {
        Ok([a, b]) => [&[0u8][..], &a.to_le_bytes(), &b.to_le_bytes()].concat(),
        Err(e) => [&[1u8][..], format!("{e:#}").as_bytes()].concat(),
    };
    let all = dist.all_gather_bytes(&msg);
    if dist.world_size() == 1 {
        return local; // the original error, with its context chain
    }
    let mut failed = Vec::new();
    let mut sums = [0u64; 2];
    for (r, m) in all.iter().enumerate() {
        match m.split_first() {
            Some((0, rest)) if rest.len() == 16 => {
                sums[0] += u64::from_le_bytes(rest[..8].try_into()?);
                sums[1] += u64::from_le_bytes(rest[8..].try_into()?);
            }
            Some((_, rest)) => failed.push((r, String::from_utf8_lossy(rest).into_owned())),
            None => failed.push((r, "sent nothing".to_string())),
        }
    }
    if failed.is_empty() {
        return Ok(sums);
    }
    if dist.is_root() {
        let lines: Vec<String> = failed.iter().map(|(r, m)| format!("rank {r}: {m}")).collect();
        bail!("{what} failed on {} of {} ranks:\n{}", failed.len(), dist.world_size(), lines.join("\n"));
    }
    let ranks: Vec<String> = failed.iter().map(|(r, _)| r.to_string()).collect();
    bail!("rank {}: stopping because {what} failed on rank(s) {} (rank 0 prints the errors)", dist.rank(), ranks.join(", "))
}

/// Rank 0's outcome on every rank.
fn agree_with_root(dist: &Dist, root: Result<()>, what: &str) -> Result<()> {
    let msg = match &root {
        Ok(()) => vec![0u8],
        Err(e) => [&[1u8][..], format!("{e:#}").as_bytes()].concat(),
    };
    let verdict = dist.broadcast_bytes(msg);
    root?;
    if verdict.first() != Some(&0) {
        bail!("rank {}: rank 0 failed {what}: {}", dist.rank(), String::from_utf8_lossy(verdict.get(1..).unwrap_or_default()));
    }
    Ok(())
}
