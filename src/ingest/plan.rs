//! Planning an ingest: turn a source layout into a sorted list of inputs (one per material id:
//! the files to parse plus whatever is already in memory: texts, embeddings, labels, matminer
//! records). Cheap — no large file is parsed here — so it is redone on every run and the plan,
//! not the parsing, decides which shard each record lands in.

use super::Reject;
use crate::material::{MaterialRecord, TextEmbedding};
use crate::shard::EmbeddingSpec;
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the records come from (one per ingest run).
#[derive(Clone, Debug)]
pub enum Source {
    /// `materials.csv`, `structures/<id>.json`, `dos/<id>.json`, `chgcar/<id>.CHGCAR.gz`,
    /// `text/<name>.npy` + `<name>.ids.txt` (the mp-multimodal layout).
    MpMultimodal { dir: PathBuf },
    /// A matminer dataset in pandas "split" JSON (optionally gzipped).
    Matminer { file: PathBuf },
    /// A JARVIS-style JSON list (`io::jarvis`): JARVIS `dft_3d` (`jid`) or SNUMAT's band-gap set
    /// in the reference code's form (`SNUMAT_id`, `Band_gap_HSE` → `band_gap_hse`).
    Jarvis { file: PathBuf },
    /// Materials Project API documents (`io::mp_docs`): a file of summary documents, or a folder
    /// of them with `<id>.dos.json` (pymatgen DOS) and `<id>.chgcar.json` (pymatgen Chgcar).
    MpDocs { path: PathBuf },
    /// One folder per material (folder name = id) with CONTCAR/POSCAR, vasprun.xml/DOSCAR,
    /// CHGCAR (or CHGCAR.*); without POSCAR/CONTCAR the structure comes from vasprun.xml's
    /// final structure, else from a CHGCAR*/AECCAR* header.
    VaspDirs { dir: PathBuf },
    /// Labels CSV keyed by material id, structures as `<cif_dir>/<id>.cif[.gz]`: the same as
    /// `Structures { dir: cif_dir, labels: Some(csv), id_column: None }`.
    CsvCif { csv: PathBuf, cif_dir: PathBuf },
    /// A folder of structure files in any format `io::read_structure` reads (by name or
    /// content; id = file name without `.gz` and extension), each one material, with optional
    /// labels: a CSV keyed by `id_column` (default `material_id`, else the first column; ids
    /// with or without the file extension), or the headerless ALIGNN form (`id_prop.csv`: file
    /// name, value(s) → target `target`), which is also picked up from the folder itself.
    Structures { dir: PathBuf, labels: Option<PathBuf>, id_column: Option<String> },
}

/// Extra per-id data merged onto any source.
#[derive(Clone, Debug, Default)]
pub struct Extras {
    /// Robocrystallographer descriptions, JSON lines `{"material_id", "description"}`.
    pub texts: Option<PathBuf>,
    /// Labels CSV keyed by material id (merged into targets; the source's own values win).
    pub labels: Option<PathBuf>,
    /// Name recorded for precomputed embeddings (default: the .npy file stem).
    pub embedding_model: Option<String>,
}

/// Files of one input still to be parsed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct InputFiles {
    pub structure: Option<PathBuf>,
    pub dos: Option<PathBuf>,
    pub charge_density: Option<PathBuf>,
}

/// One material to ingest: files to parse plus what is already known (`record`).
#[derive(Clone, Debug, Default)]
pub struct Input {
    pub id: String,
    pub files: InputFiles,
    pub record: MaterialRecord,
}

#[derive(Debug, Default)]
pub struct Plan {
    /// Sorted by id, ids unique.
    pub inputs: Vec<Input>,
    /// Inputs rejected while planning (unreadable label rows, duplicate ids, …).
    pub rejects: Vec<Reject>,
    pub embedding: Option<EmbeddingSpec>,
}

/// Columns of `materials.csv` that describe the file rather than the material's properties.
const MP_MULTIMODAL_METADATA_COLUMNS: [&str; 3] = ["nsites", "has_dos", "has_charge_density"];

/// Unusable label rows become rejects (one per row, naming the line) instead of failing the file.
fn label_row_rejects(csv: &Path, rows: &[crate::io::labels::RejectedRow], rejects: &mut Vec<Reject>) {
    for r in rows {
        let what = if r.id.is_empty() { format!("line {}", r.line) } else { format!("line {} ({})", r.line, r.id) };
        rejects.push(Reject::new(csv, what, format!("labels row: {}", r.reason)));
    }
}

fn first_existing(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("listing {}", dir.display()))?;
    v.sort();
    Ok(v)
}

/// Files `<dir>/<id><suffix>` → id.
fn files_by_id(dir: &Path, suffixes: &[&str]) -> Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    for p in sorted_entries(dir)? {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if let Some(id) = suffixes.iter().find_map(|s| name.strip_suffix(s)) {
            out.entry(id.to_string()).or_insert(p);
        }
    }
    Ok(out)
}

/// Every id mentioned by any file gets one input; its fields fill in as the files are listed.
fn get<'a>(by_id: &'a mut BTreeMap<String, Input>, id: &str) -> &'a mut Input {
    by_id.entry(id.to_string()).or_insert_with(|| Input {
        id: id.to_string(),
        record: MaterialRecord { id: id.to_string(), ..Default::default() },
        ..Default::default()
    })
}

/// The structure-folder source (see [`Source::Structures`]): one input per structure file,
/// labels attached by id with the CSV line recorded as their provenance (`file#line N`); every
/// file or row that cannot be used is a reject naming it.
fn plan_structure_dir(
    dir: &Path,
    labels: Option<&Path>,
    id_column: Option<&str>,
    by_id: &mut BTreeMap<String, Input>,
    rejects: &mut Vec<Reject>,
) -> Result<()> {
    use crate::io::structure_dir::{is_id_prop, list_structure_files, read_id_prop, structure_id};
    anyhow::ensure!(dir.is_dir(), "{}: not a directory", dir.display());
    let (files, refused) = list_structure_files(dir)?;
    for (path, reason) in refused {
        rejects.push(Reject::new(&path, structure_id(&path), reason));
    }
    for f in &files {
        get(by_id, &f.id).files.structure = Some(f.path.clone());
    }
    let in_folder = dir.join("id_prop.csv");
    let Some(csv) = labels.or(in_folder.is_file().then_some(in_folder.as_path())) else {
        return Ok(());
    };
    let mut attach = |id: &str, line: u64, targets: BTreeMap<String, Vec<f64>>, rejects: &mut Vec<Reject>| match by_id.get_mut(id) {
        Some(input) => {
            input.record.provenance.sources.insert("targets".into(), format!("{}#line {line}", csv.display()));
            input.record.targets = targets;
        }
        None => rejects.push(Reject::new(
            csv,
            format!("line {line} ({id})"),
            format!("no structure file for {id} (e.g. {id}.cif) in {}", dir.display()),
        )),
    };
    if id_column.is_none() && is_id_prop(csv, dir)? {
        let (rows, rejected) = read_id_prop(csv).with_context(|| format!("reading labels {}", csv.display()))?;
        label_row_rejects(csv, &rejected, rejects);
        for row in rows {
            let id = structure_id(Path::new(&row.file));
            attach(&id, row.line, BTreeMap::from([("target".to_string(), row.values)]), rejects);
        }
    } else {
        let parsed = crate::io::labels::read_csv_keyed(csv, id_column).with_context(|| format!("reading labels {}", csv.display()))?;
        label_row_rejects(csv, &parsed.rejected, rejects);
        for ((id, targets), line) in parsed.labels.into_iter().zip(parsed.lines) {
            // Ids may be written with the file's extension (`mp-1.cif`).
            attach(&structure_id(Path::new(&id)), line, targets, rejects);
        }
    }
    Ok(())
}

/// Records read whole from one file (matminer, JARVIS, MP summary documents): one input each,
/// keyed by id; unreadable records, records without an id and repeated ids are rejects naming
/// the file and row.
fn add_records(file: &Path, records: Vec<Result<MaterialRecord>>, by_id: &mut BTreeMap<String, Input>, rejects: &mut Vec<Reject>) {
    for (row, r) in records.into_iter().enumerate() {
        match r {
            Ok(mut rec) => {
                if rec.id.is_empty() {
                    rejects.push(Reject::new(file, format!("row {row}"), "record has no material id"));
                    continue;
                }
                if by_id.contains_key(&rec.id) {
                    rejects.push(Reject::new(file, format!("row {row} ({})", rec.id), "duplicate material id"));
                    continue;
                }
                for key in ["structure", "targets"] {
                    rec.provenance.sources.entry(key.into()).or_insert_with(|| format!("{}#{row}", file.display()));
                }
                if rec.structure.is_none() {
                    rec.provenance.sources.remove("structure");
                }
                if rec.targets.is_empty() {
                    rec.provenance.sources.remove("targets");
                }
                let id = rec.id.clone();
                by_id.insert(id.clone(), Input { id, files: InputFiles::default(), record: rec });
            }
            Err(e) => rejects.push(Reject::new(file, format!("row {row}"), format!("{e:#}"))),
        }
    }
}

/// MP documents ([`Source::MpDocs`]): a file of summary documents, or a folder whose
/// `<id>.dos.json`/`<id>.chgcar.json` files attach to the id (a charge-density file also gives
/// the structure when no summary document does) and whose other `*.json` files hold summary
/// documents. Files of another kind are rejects naming them.
fn plan_mp_docs(path: &Path, by_id: &mut BTreeMap<String, Input>, rejects: &mut Vec<Reject>) -> Result<()> {
    use crate::io::mp_docs::{classify, read_summary_docs, DocFile};
    let read = |file: &Path, by_id: &mut BTreeMap<String, Input>, rejects: &mut Vec<Reject>| -> Result<()> {
        let records = read_summary_docs(file).with_context(|| format!("reading MP summary documents {}", file.display()))?;
        add_records(file, records, by_id, rejects);
        Ok(())
    };
    if path.is_file() {
        return read(path, by_id, rejects);
    }
    anyhow::ensure!(path.is_dir(), "{}: no such file or directory", path.display());
    let (mut dos, mut chgcar) = (BTreeMap::new(), BTreeMap::new());
    for p in sorted_entries(path)?.into_iter().filter(|p| p.is_file()) {
        match classify(&p) {
            Some(DocFile::Dos(id)) => {
                dos.insert(id, p);
            }
            Some(DocFile::Chgcar(id)) => {
                chgcar.insert(id, p);
            }
            // A summary file of another form fails alone: its message says what it holds.
            Some(DocFile::Summary) => {
                if let Err(e) = read(&p, by_id, rejects) {
                    rejects.push(Reject::new(&p, "(file)", format!("{e:#}")));
                }
            }
            None => rejects.push(Reject::new(
                &p,
                "(file)",
                "not an MP document: expected <material_id>.dos.json, <material_id>.chgcar.json or summary documents *.json (optionally .gz)",
            )),
        }
    }
    for (id, p) in dos {
        get(by_id, &id).files.dos = Some(p);
    }
    for (id, p) in chgcar {
        let input = get(by_id, &id);
        if input.record.structure.is_none() {
            input.files.structure = Some(p.clone());
        }
        input.files.charge_density = Some(p);
    }
    Ok(())
}

/// Build the plan for `source` plus `extras`.
pub fn plan(source: &Source, extras: &Extras) -> Result<Plan> {
    let mut by_id: BTreeMap<String, Input> = BTreeMap::new();
    let mut rejects = Vec::new();
    let mut embedding = None;
    let mut labels_files: Vec<(PathBuf, bool)> = Vec::new(); // (csv, is the source's own)

    match source {
        Source::MpMultimodal { dir } => {
            anyhow::ensure!(dir.is_dir(), "{}: not a directory", dir.display());
            for (id, p) in files_by_id(&dir.join("structures"), &[".json.gz", ".json"])? {
                get(&mut by_id, &id).files.structure = Some(p);
            }
            for (id, p) in files_by_id(&dir.join("dos"), &[".json.gz", ".json"])? {
                get(&mut by_id, &id).files.dos = Some(p);
            }
            for (id, p) in files_by_id(&dir.join("chgcar"), &[".CHGCAR.gz", ".CHGCAR"])? {
                get(&mut by_id, &id).files.charge_density = Some(p);
            }
            let csv = dir.join("materials.csv");
            if csv.is_file() {
                labels_files.push((csv, true));
            }
            // Precomputed embeddings: every text/<name>.npy with its <name>.ids.txt.
            let text_dir = dir.join("text");
            if text_dir.is_dir() {
                for npy in sorted_entries(&text_dir)?.into_iter().filter(|p| p.extension().is_some_and(|e| e == "npy")) {
                    let stem = npy.file_stem().unwrap().to_string_lossy().into_owned();
                    let ids = text_dir.join(format!("{stem}.ids.txt"));
                    anyhow::ensure!(embedding.is_none(), "{}: more than one embedding file; one model per ingest", npy.display());
                    let rows = crate::io::npy::read_embeddings(&npy, &ids)
                        .with_context(|| format!("reading embeddings {}", npy.display()))?;
                    let model = extras.embedding_model.clone().unwrap_or(stem);
                    let dim = rows.first().map_or(0, |r| r.1.len());
                    for (row, (id, vector)) in rows.into_iter().enumerate() {
                        let origin = format!("{}#{row}", npy.display());
                        let input = get(&mut by_id, &id);
                        input.record.provenance.sources.insert("text_embedding".into(), origin);
                        input.record.text_embedding = Some(TextEmbedding { vector, model: model.clone() });
                    }
                    embedding = Some(EmbeddingSpec { model, weights_sha256: String::new(), dim });
                }
            }
        }
        Source::Matminer { file } => {
            let records = crate::io::matminer::read_dataset(file).with_context(|| format!("reading {}", file.display()))?;
            add_records(file, records, &mut by_id, &mut rejects);
        }
        Source::Jarvis { file } => {
            let records = crate::io::jarvis::read_dataset(file).with_context(|| format!("reading {}", file.display()))?;
            add_records(file, records, &mut by_id, &mut rejects);
        }
        Source::MpDocs { path } => plan_mp_docs(path, &mut by_id, &mut rejects)?,
        Source::VaspDirs { dir } => {
            anyhow::ensure!(dir.is_dir(), "{}: not a directory", dir.display());
            for sub in sorted_entries(dir)?.into_iter().filter(|p| p.is_dir()) {
                let id = sub.file_name().unwrap().to_string_lossy().into_owned();
                let vasprun = first_existing(&sub, &["vasprun.xml", "vasprun.xml.gz"]);
                // CHGCAR, else a named variant (CHGCAR.nospin, CHGCAR.relax.gz, …; the first by
                // name). AECCAR0/2 are core/valence partial densities, not the CHGCAR the encoder
                // learns from: they serve only as a structure source.
                let entries = sorted_entries(&sub)?;
                let named = |prefix: &str| {
                    entries.iter().find(|p| p.is_file() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix))).cloned()
                };
                let chgcar = first_existing(&sub, &["CHGCAR", "CHGCAR.gz"]).or_else(|| named("CHGCAR."));
                let files = InputFiles {
                    // The relaxed structure first; a folder without POSCAR/CONTCAR still has one in
                    // vasprun.xml (finalpos) or in a volumetric file's header.
                    structure: first_existing(&sub, &["CONTCAR", "CONTCAR.gz", "POSCAR", "POSCAR.gz"])
                        .or_else(|| vasprun.clone())
                        .or_else(|| chgcar.clone())
                        .or_else(|| named("AECCAR")),
                    dos: vasprun.or_else(|| first_existing(&sub, &["DOSCAR", "DOSCAR.gz"])),
                    charge_density: chgcar,
                };
                if files.structure.is_none() && files.dos.is_none() && files.charge_density.is_none() {
                    rejects.push(Reject::new(&sub, id, "no CONTCAR/POSCAR, vasprun.xml/DOSCAR, CHGCAR* or AECCAR* in the folder"));
                    continue;
                }
                get(&mut by_id, &id).files = files;
            }
        }
        Source::CsvCif { csv, cif_dir } => plan_structure_dir(cif_dir, Some(csv), None, &mut by_id, &mut rejects)?,
        Source::Structures { dir, labels, id_column } => {
            plan_structure_dir(dir, labels.as_deref(), id_column.as_deref(), &mut by_id, &mut rejects)?
        }
    }

    if let Some(labels) = &extras.labels {
        labels_files.push((labels.clone(), false));
    }
    for (csv, own) in labels_files {
        let parsed = crate::io::labels::read_csv(&csv).with_context(|| format!("reading labels {}", csv.display()))?;
        label_row_rejects(&csv, &parsed.rejected, &mut rejects);
        for (id, targets) in parsed.labels {
            // Labels for ids no other file mentions would make records with nothing but targets.
            let Some(input) = by_id.get_mut(&id) else {
                if !own {
                    rejects.push(Reject::new(&csv, id, "labels for a material with no other data"));
                }
                continue;
            };
            let mut added = false;
            for (name, values) in targets {
                if own && MP_MULTIMODAL_METADATA_COLUMNS.contains(&name.as_str()) {
                    continue;
                }
                if !input.record.targets.contains_key(&name) {
                    input.record.targets.insert(name, values);
                    added = true;
                }
            }
            if added {
                input.record.provenance.sources.entry("targets".into()).or_insert_with(|| format!("{}#{id}", csv.display()));
            }
        }
    }

    if let Some(texts) = &extras.texts {
        let rows = crate::io::text::read_descriptions_jsonl(texts).with_context(|| format!("reading texts {}", texts.display()))?;
        for (line, (id, description)) in rows.into_iter().enumerate() {
            match by_id.get_mut(&id) {
                Some(input) => {
                    input.record.provenance.sources.insert("text".into(), format!("{}#{}", texts.display(), line + 1));
                    input.record.text = Some(description);
                }
                None => rejects.push(Reject::new(texts, format!("line {} ({id})", line + 1), "description for a material with no other data")),
            }
        }
    }

    // Paths of files still to be parsed go into the provenance now, so a reject and the manifest
    // name the same files.
    for input in by_id.values_mut() {
        let f = &input.files;
        for (key, path) in [("structure", &f.structure), ("dos", &f.dos), ("charge_density", &f.charge_density)] {
            if let Some(p) = path {
                input.record.provenance.sources.insert(key.into(), p.display().to_string());
            }
        }
    }
    Ok(Plan { inputs: by_id.into_values().collect(), rejects, embedding })
}
