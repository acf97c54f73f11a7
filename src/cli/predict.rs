//! `multimat predict`: a fine-tuned crystal encoder + head (`finetune::predict`) applied to new
//! structures — a folder of structure files in any format the ingest reads, or shards — with
//! the run's own graph settings, target standardisation and units; one CSV row per material and
//! component, every input that could not be used in a rejects file with its reason.

use crate::dist::Dist;
use crate::finetune::predict::FinetunedModel;
use crate::ingest::{IngestOptions, Reject, Source, REJECTS_FILE};
use crate::loss::Modality;
use crate::train::dataset::{shard_paths, Dataset};
use anyhow::{bail, Context, Result};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args, Debug)]
#[command(
    group(clap::ArgGroup::new("input").required(true).args(["structures", "cif_dir", "shards"])),
    long_about = "Predict the property a `multimat finetune` run learned for new materials.\n\n\
The model is the run's best-validation checkpoint (best/). Everything the run decided comes from \
it: the encoder and its settings, the crystal-graph settings of its training shards, the target's \
name, units and standardisation; nothing is re-specified here.\n\n\
Inputs: a folder of structure files (--structures: CIF, POSCAR/CONTCAR/*.vasp, pymatgen JSON, \
extended XYZ, vasprun.xml, CHGCAR; by name or content; the id is the file name without .gz and \
extension), or shards whose graphs were built with the run's settings (--shards). Structures are \
ingested into a work folder <out>.ingest/ (removed at the end; a re-run after a failure resumes it).\n\n\
Output: --out, a CSV with columns material_id,target,component,prediction,units (component 0 for \
a scalar), in material-id order for structures and shard order for shards; and \
<out stem>.rejects.jsonl listing every input that got no prediction (file, record, reason). Exits \
non-zero when nothing could be predicted. Under srun/mpirun the ranks share the work and the output \
is identical to one process's.\n\n\
Example:\n  multimat predict --model runs/finetune-kvrh --structures my-crystals/ --out predictions.csv"
)]
pub struct Args {
    /// A fine-tuning run directory (its best/ checkpoint), a best/ directory, or a best/step-*.json.
    #[arg(long, value_name = "RUN")]
    pub model: PathBuf,
    /// A folder of structure files, one material each.
    #[arg(long, value_name = "DIR")]
    pub structures: Option<PathBuf>,
    /// A folder of CIF files (the same as --structures).
    #[arg(long, value_name = "DIR")]
    pub cif_dir: Option<PathBuf>,
    /// Shard files or directories of shards (graphs built with the run's graph settings).
    #[arg(long, value_name = "SHARD", num_args = 1..)]
    pub shards: Vec<PathBuf>,
    /// Output CSV, written atomically.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Materials per encoder call.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub device: crate::cli::device::DeviceArgs,
}

/// `preds.csv` → `preds.rejects.jsonl`.
pub fn rejects_path(out: &Path) -> PathBuf {
    out.with_extension("rejects.jsonl")
}

pub fn run(args: Args) -> Result<()> {
    let t0 = Instant::now();
    anyhow::ensure!(args.batch_size > 0, "--batch-size must be positive");
    let dist = Dist::init()?;
    let progress = !args.quiet && std::io::stderr().is_terminal() && dist.is_root();
    let mut model = FinetunedModel::load(&args.model)?;
    model.to_device(args.device.resolve(dist.topology.local_rank)?)?;
    let mut rejects: Vec<Reject> = Vec::new();
    let work = PathBuf::from(format!("{}.ingest", args.out.display()));
    let (ds, from_structures) = match args.structures.as_ref().or(args.cif_dir.as_ref()) {
        Some(dir) => {
            let mut opts = IngestOptions::new(work.clone());
            opts.graph_params = model.graph_params.clone();
            opts.progress = progress;
            let source = Source::Structures { dir: dir.clone(), labels: None, id_column: None };
            let summary = crate::ingest::run_distributed(&source, &Default::default(), &opts, &dist)
                .with_context(|| format!("reading the structures in {}", dir.display()))?;
            if dist.is_root() {
                rejects.extend(read_rejects(&work.join(REJECTS_FILE))?);
            }
            if summary.inputs == 0 && rejects.is_empty() {
                bail!("{}: no structure files", dir.display());
            }
            let paths = shard_paths(std::slice::from_ref(&work)).unwrap_or_default();
            (if paths.is_empty() { None } else { Some(Dataset::load(&paths)?) }, true)
        }
        None => {
            let ds = Dataset::load(&shard_paths(&args.shards)?)?;
            let theirs = &ds.shards[0].meta.graph_params;
            if *theirs != model.graph_params {
                bail!(
                    "{}: its crystal graphs were built with other settings ({theirs:?}) than the run trained on ({:?}); \
                     predict from the structures instead (--structures DIR), so the graphs are built the run's way",
                    ds.shards[0].path.display(),
                    model.graph_params
                );
            }
            (Some(ds), false)
        }
    };

    let mut records = Vec::new();
    if let Some(ds) = &ds {
        for r in 0..ds.len() {
            if ds.has(Modality::Crystal, r) {
                records.push(r);
            } else {
                let shard = ds.shards.iter().find(|s| s.ids.iter().any(|id| id == ds.id(r))).map(|s| s.path.clone()).unwrap_or_default();
                rejects.push(Reject::new(&shard, ds.id(r), "no crystal graph (no structure, or the shard was ingested with --no-graphs)"));
            }
        }
    }
    let values = match (&ds, records.is_empty()) {
        (Some(ds), false) => {
            let bar = progress.then(|| {
                let share: usize = records.chunks(args.batch_size).enumerate().filter(|(i, _)| i % dist.world_size() == 0).map(|(_, c)| c.len()).sum();
                let pb = indicatif::ProgressBar::new(share as u64);
                pb.set_style(
                    indicatif::ProgressStyle::with_template("predict {bar:30} {pos}/{len} materials [{elapsed_precise} < {eta_precise}]")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                pb
            });
            let v = model.predict(ds, &records, args.batch_size, &dist, &mut |n| {
                if let Some(pb) = &bar {
                    pb.inc(n as u64);
                }
            })?;
            if let Some(pb) = bar {
                pb.finish_and_clear();
            }
            v
        }
        _ => Vec::new(),
    };

    // Rank 0 writes; the others wait for its outcome so that all exit alike.
    let written = if dist.is_root() { write_outputs(&args.out, &model, ds.as_ref(), &records, &values, &rejects) } else { Ok(()) };
    let verdict = dist.broadcast_bytes(match &written {
        Ok(()) => vec![0u8],
        Err(e) => [&[1u8][..], format!("{e:#}").as_bytes()].concat(),
    });
    written?;
    if verdict.first() != Some(&0) {
        bail!("rank 0 failed writing {}: {}", args.out.display(), String::from_utf8_lossy(verdict.get(1..).unwrap_or_default()));
    }
    if from_structures {
        dist.barrier();
        if dist.is_root() {
            let _ = std::fs::remove_dir_all(&work);
        }
    }
    if !dist.is_root() {
        return Ok(());
    }
    eprintln!(
        "predicted {} ({}) for {} material(s) with {} in {:.1} s; {} input(s) rejected{}",
        model.target,
        if model.units.is_empty() { "no units" } else { &model.units },
        records.len(),
        model.model_id(),
        t0.elapsed().as_secs_f64(),
        rejects.len(),
        if rejects.is_empty() { String::new() } else { format!(" (reasons in {})", rejects_path(&args.out).display()) }
    );
    for r in rejects.iter().take(5) {
        eprintln!("  rejected {} ({}): {}", r.file, r.record, r.reason);
    }
    if records.is_empty() {
        bail!("nothing to predict: every input was rejected (see {})", rejects_path(&args.out).display());
    }
    println!("{}", args.out.display());
    Ok(())
}

fn read_rejects(path: &Path) -> Result<Vec<Reject>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("{}: not a reject line: {l}", path.display())))
        .collect()
}

/// The predictions CSV and the rejects file, each written atomically.
fn write_outputs(out: &Path, model: &FinetunedModel, ds: Option<&Dataset>, records: &[usize], values: &[f64], rejects: &[Reject]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["material_id", "target", "component", "prediction", "units"])?;
    if let Some(ds) = ds {
        for (k, &r) in records.iter().enumerate() {
            for c in 0..model.width {
                let v = values[k * model.width + c];
                w.write_record([ds.id(r), &model.target, &c.to_string(), &v.to_string(), &model.units])?;
            }
        }
    }
    let bytes = w.into_inner().map_err(|e| anyhow::anyhow!("formatting the CSV: {e}"))?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::atomic::write_bytes(out, &bytes)?;
    let mut lines = String::new();
    for r in rejects {
        lines.push_str(&serde_json::to_string(r)?);
        lines.push('\n');
    }
    crate::atomic::write_bytes(&rejects_path(out), lines.as_bytes())
}
