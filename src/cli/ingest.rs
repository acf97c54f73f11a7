//! `multimat ingest`: raw files → HDF5 shards + manifest.json + rejects.jsonl.

use crate::ingest::{Extras, IngestOptions, Source};
use crate::preprocess::{DensityResampling, DosSpin, PreprocessParams};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;

/// Runnable examples (from the repository root; tests/ingest_jarvis_mp.rs runs each of them).
pub const EXAMPLES: &str = "Examples (the fixtures are small hand-written files, not real SNUMAT/JARVIS/MP data):
  multimat ingest --jarvis tests/fixtures/snumat_bandgap_handwritten.json --out runs/snumat
  multimat ingest --jarvis tests/fixtures/jarvis_dft3d_handwritten.json --approx-dos --out runs/jarvis
  multimat ingest --mp-docs tests/fixtures/mp_docs --density-grid 4 --out runs/mp-docs
Records whose approximate modality cannot be computed (e.g. --approx-dos on a lanthanide) are kept
without it and listed in <out>/absent.jsonl; rejected inputs are listed in <out>/rejects.jsonl.";

#[derive(clap::Args, Debug)]
#[command(after_help = EXAMPLES)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["mp_multimodal", "matminer", "jarvis", "mp_docs", "vasp_dirs", "structures", "cif_dir"])))]
pub struct Args {
    /// A directory in the mp-multimodal layout (materials.csv, structures/, dos/, chgcar/, text/).
    #[arg(long, value_name = "DIR")]
    pub mp_multimodal: Option<PathBuf>,
    /// A matminer dataset in pandas "split" JSON (.json or .json.gz).
    #[arg(long, value_name = "FILE")]
    pub matminer: Option<PathBuf>,
    /// A JARVIS-style JSON list: JARVIS dft_3d (`jid`, `atoms`, numeric fields → targets, "na" →
    /// absent) or SNUMAT's band-gap set in the MultiMat reference code's form (`SNUMAT_id`,
    /// `Band_gap_HSE` → target band_gap_hse in eV, `atoms` {lattice_mat, coords, elements,
    /// cartesian}; coordinates fractional unless `cartesian` is true).
    #[arg(long, value_name = "FILE")]
    pub jarvis: Option<PathBuf>,
    /// Materials Project API documents: a JSON file of summary documents (structure, numeric
    /// fields → targets, `description` → text), or a folder of them plus `<id>.dos.json`
    /// (pymatgen CompleteDos) and `<id>.chgcar.json` (pymatgen Chgcar, values ρ·V_cell).
    #[arg(long, value_name = "FILE|DIR")]
    pub mp_docs: Option<PathBuf>,
    /// A directory of per-material folders (name = id) with CONTCAR/POSCAR, vasprun.xml/DOSCAR, CHGCAR.
    #[arg(long, value_name = "DIR")]
    pub vasp_dirs: Option<PathBuf>,
    /// A folder of structure files, one material each: CIF, POSCAR/CONTCAR/*.vasp, pymatgen
    /// JSON, extended XYZ, vasprun.xml or CHGCAR, by name or content (gzip allowed); the id is
    /// the file name without .gz and extension. Labels: --csv, or an id_prop.csv in the folder.
    #[arg(long, value_name = "DIR")]
    pub structures: Option<PathBuf>,
    /// A folder of CIF files (the same as --structures).
    #[arg(long, value_name = "DIR", conflicts_with = "structures")]
    pub cif_dir: Option<PathBuf>,
    /// Labels for --structures: a CSV keyed by material id (column `material_id`, --id-column,
    /// else the first; ids with or without the file extension), or ALIGNN's headerless
    /// id_prop.csv (file name, value(s) → target "target").
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// The CSV column holding the material ids.
    #[arg(long, value_name = "NAME", requires = "csv")]
    pub id_column: Option<String>,
    /// Robocrystallographer descriptions (JSON lines with material_id, description).
    #[arg(long, value_name = "FILE.jsonl")]
    pub texts: Option<PathBuf>,
    /// Extra labels CSV keyed by material id, merged into the targets.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Model name recorded with precomputed text embeddings (default: the .npy file stem).
    #[arg(long)]
    pub embedding_model: Option<String>,
    /// Output directory for shards, manifest.json and rejects.jsonl.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 1024)]
    pub records_per_shard: usize,
    /// Stop at the first bad record instead of recording it in rejects.jsonl.
    #[arg(long)]
    pub strict: bool,
    /// Exit non-zero (after writing everything) when more than this fraction of the inputs
    /// were rejected; default: any fraction is accepted. Nothing written is always an error.
    #[arg(long, value_name = "F")]
    pub max_reject_fraction: Option<f64>,
    /// Do not build crystal graphs (structures are still stored).
    #[arg(long)]
    pub no_graphs: bool,
    /// Units of a target, NAME=UNIT (repeatable); known MP/matminer names have defaults.
    #[arg(long = "units", value_name = "NAME=UNIT")]
    pub units: Vec<String>,
    /// DOS points after resampling.
    #[arg(long, default_value_t = PreprocessParams::default().dos_points)]
    pub dos_points: usize,
    /// DOS spin channel: up or sum.
    #[arg(long, default_value = "up")]
    pub dos_spin: String,
    /// Charge-density grid edge (N gives N³).
    #[arg(long, default_value_t = 32)]
    pub density_grid: usize,
    /// Charge-density resampling: trilinear or fourier.
    #[arg(long, default_value = "trilinear")]
    pub density_resampling: String,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Attach an APPROXIMATE promolecular charge density (computed by multimat) to every record
    /// that has a structure but no charge density (for the demo; labelled in the provenance).
    #[arg(long)]
    pub approx_charge_density: bool,
    /// Attach an APPROXIMATE tight-binding DOS (Harrison's universal parameters, computed by
    /// multimat) to every record that has a structure but no DOS (labelled in the provenance).
    #[arg(long)]
    pub approx_dos: bool,
    /// Attach a generated structure description (formula, symmetry, coordination, bond lengths)
    /// as the text of every record that has a structure but no text; embed it afterwards with
    /// `multimat embed-text`.
    #[arg(long)]
    pub generated_text: bool,
    /// Generate descriptions (implies --generated-text) with `approx` (multimat's labelled
    /// approximation) or `robocrys` (the robocrys Python package, run with MULTIMAT_PYTHON, else
    /// python3; an error if that Python cannot import it — nothing is installed).
    #[arg(long, value_name = "approx|robocrys")]
    pub text_generator: Option<String>,
    /// Ingest only the first N inputs (in material-id order).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Plausibility bounds overriding the defaults (TOML, keys of data-specs/plausibility.md).
    #[arg(long, value_name = "FILE.toml")]
    pub bounds: Option<PathBuf>,
}

fn source(args: &Args) -> Result<Source> {
    let structures = args.structures.as_ref().or(args.cif_dir.as_ref());
    if args.csv.is_some() && structures.is_none() {
        bail!("--csv labels the structures of --structures DIR (or --cif-dir DIR); give the folder too");
    }
    let mut given = Vec::new();
    if let Some(dir) = &args.mp_multimodal {
        given.push(Source::MpMultimodal { dir: dir.clone() });
    }
    if let Some(file) = &args.matminer {
        given.push(Source::Matminer { file: file.clone() });
    }
    if let Some(file) = &args.jarvis {
        given.push(Source::Jarvis { file: file.clone() });
    }
    if let Some(path) = &args.mp_docs {
        given.push(Source::MpDocs { path: path.clone() });
    }
    if let Some(dir) = &args.vasp_dirs {
        given.push(Source::VaspDirs { dir: dir.clone() });
    }
    if let Some(dir) = structures {
        given.push(Source::Structures { dir: dir.clone(), labels: args.csv.clone(), id_column: args.id_column.clone() });
    }
    match given.len() {
        1 => Ok(given.pop().unwrap()),
        _ => bail!("give exactly one of --mp-multimodal, --matminer, --jarvis, --mp-docs, --vasp-dirs, --structures (--cif-dir)"),
    }
}

pub fn preprocess_params(args: &Args) -> Result<PreprocessParams> {
    let dos_spin = match args.dos_spin.as_str() {
        "up" => DosSpin::Up,
        "sum" => DosSpin::Sum,
        other => bail!("--dos-spin {other:?}: expected up or sum"),
    };
    let density_resampling = match args.density_resampling.as_str() {
        "trilinear" => DensityResampling::Trilinear,
        "fourier" => DensityResampling::Fourier,
        other => bail!("--density-resampling {other:?}: expected trilinear or fourier"),
    };
    anyhow::ensure!(args.dos_points >= 2 && args.density_grid >= 1, "--dos-points ≥ 2 and --density-grid ≥ 1");
    Ok(PreprocessParams {
        dos_points: args.dos_points,
        dos_spin,
        density_grid: [args.density_grid; 3],
        density_resampling,
    })
}

pub fn run(args: Args) -> Result<()> {
    let source = source(&args)?;
    let max_reject_fraction = match (args.max_reject_fraction, args.strict) {
        (Some(f), _) if !(0.0..=1.0).contains(&f) => bail!("--max-reject-fraction must be in [0, 1], got {f}"),
        (Some(f), _) => f,
        (None, true) => 0.0,
        (None, false) => 1.0,
    };
    let mut units = BTreeMap::new();
    for u in &args.units {
        let (name, unit) = u.split_once('=').with_context(|| format!("--units {u:?}: expected NAME=UNIT"))?;
        units.insert(name.to_string(), unit.to_string());
    }
    let mut opts = IngestOptions::new(args.out.clone());
    opts.records_per_shard = args.records_per_shard;
    opts.strict = args.strict;
    opts.build_graphs = !args.no_graphs;
    opts.preprocess = preprocess_params(&args)?;
    opts.units = units;
    opts.approx_charge_density = args.approx_charge_density;
    opts.approx_dos = args.approx_dos.then(crate::approx::tight_binding::TightBindingParams::default);
    opts.generated_text = args.generated_text || args.text_generator.is_some();
    opts.text_generator = match args.text_generator.as_deref() {
        None | Some("approx") => crate::ingest::TextGenerator::Approx,
        Some("robocrys") => crate::ingest::TextGenerator::Robocrys { python: crate::ingest::robocrys::default_python() },
        Some(other) => bail!("--text-generator {other:?}: expected approx or robocrys"),
    };
    opts.limit = args.limit;
    if let Some(b) = &args.bounds {
        opts.bounds = crate::plausibility::Bounds::from_toml_file(b)?;
    }
    opts.progress = !args.quiet && std::io::stderr().is_terminal();
    let extras = Extras { texts: args.texts.clone(), labels: args.labels.clone(), embedding_model: args.embedding_model.clone() };
    let t0 = std::time::Instant::now();
    let dist = crate::dist::Dist::init()?;
    let s = crate::ingest::run_distributed(&source, &extras, &opts, &dist)?;
    if !dist.is_root() {
        return Ok(());
    }
    let c = &s.counts;
    println!(
        "ingest: {} inputs → {} records in {} shards ({} written, {} resumed), {} rejects, {:.1} s",
        s.inputs,
        c.records,
        s.shards_written + s.shards_resumed,
        s.shards_written,
        s.shards_resumed,
        s.rejects,
        t0.elapsed().as_secs_f64()
    );
    println!(
        "  structure {}  graphs {}  dos {}  charge_density {}  text {}  text_embedding {}  targets {:?}",
        c.structure, c.graphs, c.dos, c.charge_density, c.text, c.text_embedding, c.targets
    );
    if !s.absent.is_empty() {
        let parts: Vec<String> = s.absent.iter().map(|(m, n)| format!("{m} {n}")).collect();
        println!(
            "  kept without a modality that could not be computed: {} (reasons in {})",
            parts.join(", "),
            args.out.join(crate::ingest::ABSENT_FILE).display()
        );
    }
    if let Some(m) = &s.manifest {
        println!("  manifest: {}", m.display());
    }
    let rejects_file = args.out.join(crate::ingest::REJECTS_FILE);
    if s.rejects > 0 {
        println!("  rejects: {}", rejects_file.display());
    }
    check_outcome(c.records, s.rejects, max_reject_fraction, &rejects_file)
}

/// The exit status of an ingest: an error when nothing was written, or when the rejected share
/// of all inputs (records written + rejects) is above `max_reject_fraction`.
pub fn check_outcome(records: usize, rejects: usize, max_reject_fraction: f64, rejects_file: &std::path::Path) -> Result<()> {
    if records == 0 {
        bail!("no record was written ({rejects} input(s) rejected; reasons in {})", rejects_file.display());
    }
    let fraction = rejects as f64 / (records + rejects) as f64;
    if fraction > max_reject_fraction {
        bail!(
            "{rejects} of {} inputs ({:.1}%) were rejected, more than --max-reject-fraction {max_reject_fraction} allows \
             (the shards that were written are kept; reasons in {})",
            records + rejects,
            100.0 * fraction,
            rejects_file.display()
        );
    }
    Ok(())
}
