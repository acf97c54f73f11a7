//! Fine-tuning (`multimat finetune`): a crystal encoder — transferred from a pre-training
//! checkpoint or from scratch — plus a randomly initialised linear head, trained end to end with
//! MSE on one scalar or vector property (the paper's "Fine-tuning for prediction tasks").
//!
//! One run:
//! 1. load the shards; keep records with a crystal graph and a finite target (the others are
//!    counted and reported by reason), optionally the first `max_records` by material id;
//! 2. split 60/20/20 by a hash of (seed, id) (`split.rs`; written to `split.csv`);
//! 3. standardise the target per component with training statistics (or keep raw units);
//! 4. AdamW with linear warm-up + cosine decay over `epochs`, batch 120 drawn by
//!    `train::data_order::epoch_permutation(seed, epoch)`; after every epoch the validation MAE
//!    (target units) is logged to `metrics.jsonl`, and an improvement is kept in memory and
//!    written as `best/step-<epoch>` (atomic); no improvement for `patience` epochs stops;
//! 5. the best-validation weights are evaluated on the test split: MAE, RMSE, R² in the target's
//!    units → `predictions.csv` and `result.json` (written last: a run is complete exactly when
//!    its `result.json` exists, which is what `multimat sweep` checks).
//! 6. with `data.test_shards`, the same best-validation weights are also evaluated on that
//!    external set (records with a crystal graph and the target; ids that also occur in the
//!    training or validation part are counted as overlap, not dropped) → `predictions-external.csv`
//!    and `result.json`'s `external`, beside the split's own test metrics. Without it nothing
//!    changes: no field, no file.
//!
//! Each run is a single process (`Dist::single`): a sweep spreads whole runs over ranks.
//!
//! Preemption: SIGUSR1/SIGTERM (Slurm's warning before the time limit) raise `RunOptions::stop`;
//! after the current step the run writes its state to `RUN/resume/` (weights and BatchNorm
//! statistics, AdamW moments in their own file, the best weights so far, and where it stands:
//! epoch, batch, step, loss sums, early-stopping counter) and returns a [`Preempted`] error, which
//! `multimat finetune` turns into exit code 75 (requeue). `--resume auto` continues from there:
//! the data order, dropout masks and schedule are functions of (seed, epoch, step), so the
//! resumed run ends bit-identical to an uninterrupted one; `resume/` is removed once
//! `result.json` is written.

pub mod config;
pub mod metrics;
pub mod model;
pub mod predict;
pub mod split;

pub use config::FinetuneConfig;
pub use metrics::{regression_metrics, Metrics, Standardizer};
pub use model::{load_pretrained_crystal, FinetuneModel, TransferInfo};

use crate::dist::Dist;
use crate::engine::optim::{clip_grad_norm, grad_norm, zero_grads, AdamW, WarmupCosine};
use crate::engine::{Device, Module, Tensor};
use crate::model::{Modality, StepContext};
use crate::train::checkpoint::{self, NamedTensors};
use crate::train::data_order::epoch_permutation;
use crate::train::preempt::StopSignal;
use crate::train::dataset::{shard_paths, Dataset};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use split::Part;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Name of the file that marks a complete run.
pub const RESULT_FILE: &str = "result.json";

/// Options that are not part of the experiment's definition.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Show a progress bar over epochs.
    pub progress: bool,
    /// Start over even if `result.json` already exists in the run directory.
    pub force: bool,
    /// Print a one-line summary per epoch to stderr.
    pub verbose: bool,
    /// Where the encoder and head train (`cpu`, `cuda:N`, `cuda-sim`).
    pub device: Device,
    /// Continue from `RUN/resume/` when a run stopped by a signal left its state there (without
    /// it such a directory is refused unless `force`).
    pub resume: bool,
    /// Raised by SIGUSR1/SIGTERM: save the state after the current step and stop ([`Preempted`]).
    pub stop: StopSignal,
}

/// Sub-directory of a run holding the state of a run stopped by a signal.
pub const RESUME_DIR: &str = "resume";

/// Name prefix of the best-validation weights inside a saved state.
const BEST_PREFIX: &str = "best.";

/// The error a run returns after it saved its state because of a signal; the CLI exits with
/// [`crate::train::preempt::REQUEUE_EXIT_CODE`] on it.
#[derive(Debug)]
pub struct Preempted {
    /// Optimiser steps done.
    pub step: u64,
    /// 1-based epoch the run was in.
    pub epoch: u64,
    /// The saved state's JSON.
    pub state: PathBuf,
}

impl std::fmt::Display for Preempted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stopped by signal after step {} (epoch {}); state saved in {}; continue with --resume auto",
            self.step,
            self.epoch,
            self.state.display()
        )
    }
}

impl std::error::Error for Preempted {}

/// Counts of records left out, by reason (reported, never silently dropped).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Excluded {
    /// Records whose target is absent or not finite.
    pub missing_target: usize,
    /// Records without a crystal graph.
    pub missing_crystal: usize,
    /// Usable records beyond `data.max_records`.
    pub over_limit: usize,
    /// Up to 20 ids of records missing the target, for the log.
    pub missing_target_examples: Vec<String>,
}

/// Everything `result.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinetuneResult {
    pub target: String,
    pub units: String,
    pub target_width: usize,
    pub standardized: bool,
    pub crystal_encoder: String,
    /// The pre-training checkpoint's JSON, or null when trained from scratch.
    pub checkpoint: Option<String>,
    pub checkpoint_sha256: Option<String>,
    pub seed: u64,
    pub split_seed: u64,
    pub lr: f64,
    pub records_total: usize,
    pub excluded: Excluded,
    pub n_train: usize,
    pub n_val: usize,
    pub n_test: usize,
    pub epochs_run: u64,
    /// 1-based epoch of the lowest validation MAE.
    pub best_epoch: u64,
    pub val_mae: f64,
    pub val_rmse: f64,
    pub test_mae: f64,
    pub test_rmse: f64,
    pub test_r2: Option<f64>,
    /// Validation and test MAE of predicting the training mean for every material.
    pub val_mae_train_mean: f64,
    pub test_mae_train_mean: f64,
    pub stopped_early: bool,
    pub parameters: usize,
    pub wall_s: f64,
    /// Metrics on `data.test_shards` (absent without an external test set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalTest>,
}

/// The best-validation model on the external test set `data.test_shards`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExternalTest {
    /// The shard files evaluated, as given (made absolute).
    pub shards: Vec<String>,
    /// Records in those shards, and those left out (no crystal graph, no finite target).
    pub records_total: usize,
    pub excluded: Excluded,
    /// Records evaluated.
    pub n: usize,
    /// Of those, ids that are also in the training or validation part (a leak to know about).
    pub overlap_train_val: usize,
    pub mae: f64,
    pub rmse: f64,
    pub r2: Option<f64>,
    /// MAE of predicting the training mean for every external record.
    pub mae_train_mean: f64,
}

/// The usable records, their targets and parts.
struct Prepared {
    ds: Dataset,
    records: Vec<usize>,  // global record indices, usable, in material-id order
    targets: Vec<f64>,    // (n, width) in target units
    parts: Vec<Part>,     // (n)
    width: usize,
    units: String,
    excluded: Excluded,
}

fn prepare(cfg: &FinetuneConfig) -> Result<Prepared> {
    let paths = shard_paths(&cfg.data.shards)?;
    let ds = Dataset::load(&paths)?;
    let name = &cfg.data.target;
    let mut spec = None;
    for sh in &ds.shards {
        match (sh.meta.targets.get(name), &spec) {
            (None, _) => {}
            (Some(s), None) => spec = Some(s.clone()),
            (Some(s), Some(first)) if s.width != first.width => {
                bail!("{}: target {name:?} has width {} but an earlier shard has {}", sh.path.display(), s.width, first.width)
            }
            _ => {}
        }
    }
    let spec = spec.with_context(|| {
        let mut names: Vec<&String> = ds.shards.iter().flat_map(|s| s.meta.targets.keys()).collect();
        names.sort();
        names.dedup();
        format!("no shard in {:?} has a target {name:?}; targets present: {names:?}", cfg.data.shards)
    })?;
    let width = spec.width;
    let (mut usable, mut excluded) = usable_records(&ds, name);
    if cfg.data.max_records > 0 && usable.len() > cfg.data.max_records {
        excluded.over_limit = usable.len() - cfg.data.max_records;
        usable.truncate(cfg.data.max_records);
    }
    let ids: Vec<&str> = usable.iter().map(|(r, _)| ds.id(*r)).collect();
    let parts = split::assign(&ids, cfg.split_seed(), cfg.data.split);
    let n_train = parts.iter().filter(|&&p| p == Part::Train).count();
    let n_val = parts.iter().filter(|&&p| p == Part::Val).count();
    if n_train < 2 || n_val < 1 {
        bail!(
            "target {name:?}: {} usable records ({} missing the target, {} without a crystal graph) give {n_train} training and {n_val} validation records; need at least 2 and 1",
            usable.len(), excluded.missing_target, excluded.missing_crystal
        );
    }
    let records = usable.iter().map(|(r, _)| *r).collect();
    let targets = usable.into_iter().flat_map(|(_, v)| v).collect();
    Ok(Prepared { ds, records, targets, parts, width, units: spec.units, excluded })
}

/// Records of `ds` with a crystal graph and a finite `target`, with their values, in
/// material-id order; the others counted by reason.
fn usable_records(ds: &Dataset, target: &str) -> (Vec<(usize, Vec<f64>)>, Excluded) {
    let mut excluded = Excluded::default();
    let mut usable: Vec<(usize, Vec<f64>)> = Vec::new();
    for r in 0..ds.len() {
        if !ds.has(Modality::Crystal, r) {
            excluded.missing_crystal += 1;
            continue;
        }
        match ds.target(target, r) {
            Some(v) => usable.push((r, v)),
            None => {
                excluded.missing_target += 1;
                if excluded.missing_target_examples.len() < 20 {
                    excluded.missing_target_examples.push(ds.id(r).to_string());
                }
            }
        }
    }
    usable.sort_by(|a, b| ds.id(a.0).cmp(ds.id(b.0)).then(a.0.cmp(&b.0)));
    (usable, excluded)
}

/// The external test set of `data.test_shards`, loaded and checked against the training data.
struct External {
    paths: Vec<PathBuf>,
    ds: Dataset,
    records: Vec<usize>,
    targets: Vec<f64>, // (n, width) in target units
    excluded: Excluded,
}

fn prepare_external(cfg: &FinetuneConfig, p: &Prepared, dirs: &[PathBuf]) -> Result<External> {
    let paths = shard_paths(dirs)?;
    let ds = Dataset::load(&paths).context("loading data.test_shards")?;
    let name = &cfg.data.target;
    for sh in &ds.shards {
        let spec = sh.meta.targets.get(name);
        if let Some(s) = spec {
            if s.width != p.width || s.units != p.units {
                bail!(
                    "data.test_shards: {}: target {name:?} has width {} and units {:?}, but the training shards have width {} and units {:?}",
                    sh.path.display(), s.width, s.units, p.width, p.units
                );
            }
        }
        // The model reads graphs: the external set must have been built the same way.
        if sh.meta.graph_params != p.ds.shards[0].meta.graph_params {
            bail!(
                "data.test_shards: {}: its crystal graphs were built with other settings than {} ({:?} vs {:?}); ingest both with the same graph settings",
                sh.path.display(), p.ds.shards[0].path.display(), sh.meta.graph_params, p.ds.shards[0].meta.graph_params
            );
        }
    }
    let (usable, excluded) = usable_records(&ds, name);
    if usable.is_empty() {
        bail!(
            "data.test_shards {dirs:?}: no record has a crystal graph and the target {name:?} ({} records: {} missing the target, {} without a crystal graph)",
            ds.len(), excluded.missing_target, excluded.missing_crystal
        );
    }
    let records = usable.iter().map(|(r, _)| *r).collect();
    let targets = usable.into_iter().flat_map(|(_, v)| v).collect();
    Ok(External { paths, ds, records, targets, excluded })
}

/// Predictions (n, width) in model space for `rows` (indices into `p.records`), eval mode.
fn predict(model: &mut FinetuneModel, p: &Prepared, rows: &[usize], batch: usize) -> Result<Vec<f64>> {
    let recs: Vec<usize> = rows.iter().map(|&i| p.records[i]).collect();
    predict_records(model, &p.ds, &recs, p.width, batch)
}

/// Predictions (n, width) in model space for the records `recs` of `ds`, eval mode.
fn predict_records(model: &mut FinetuneModel, ds: &Dataset, recs: &[usize], width: usize, batch: usize) -> Result<Vec<f64>> {
    let single = Dist::single();
    let ctx = StepContext { train: false, dist: &single, comm: None, dropout_seed: 0 };
    model.set_training(false);
    let mut out = Vec::with_capacity(recs.len() * width);
    let chunks: Vec<&[usize]> = recs.chunks(batch.max(1)).collect();
    let preparer = model.encoder.input_preparer();
    ds.for_each_prepared(Modality::Crystal, &chunks, preparer.as_ref(), |_, inputs| {
        let y = model.forward_prepared(inputs, &ctx)?;
        out.extend(y.to_host()?.into_iter().map(|v| v as f64)); // predictions leave the device here
        Ok(())
    })?;
    Ok(out)
}

fn rows_targets(p: &Prepared, rows: &[usize]) -> Vec<f64> {
    rows.iter().flat_map(|&i| p.targets[i * p.width..(i + 1) * p.width].iter().copied()).collect()
}

fn append_line(path: &Path, line: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("opening {}", path.display()))?;
    f.write_all(format!("{line}\n").as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn mean_of(rows: &[f64], width: usize) -> Vec<f64> {
    let n = rows.len() / width;
    (0..width).map(|c| (0..n).map(|i| rows[i * width + c]).sum::<f64>() / n as f64).collect()
}

/// Run one fine-tuning experiment into `cfg.run.out_dir`.
pub fn run(cfg: &FinetuneConfig, opts: &RunOptions) -> Result<FinetuneResult> {
    cfg.check()?;
    let t_start = Instant::now();
    let out = cfg.run.out_dir.clone();
    let result_path = out.join(RESULT_FILE);
    if result_path.exists() && !opts.force {
        bail!("{} exists: this run is complete (pass --force to run it again, or choose another run.out_dir)", result_path.display());
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    // One run per out_dir (two would interleave metrics.jsonl and overwrite best/).
    let _lock = crate::run_lock::RunLock::acquire(&out, "finetune")?;
    let resume_dir = out.join(RESUME_DIR);
    let state = if checkpoint::any(&resume_dir)? {
        if opts.resume {
            checkpoint::latest(&resume_dir)?
        } else if opts.force {
            std::fs::remove_dir_all(&resume_dir).with_context(|| format!("removing {}", resume_dir.display()))?;
            None
        } else {
            bail!(
                "{} holds the state of a run stopped by a signal: continue it with --resume auto, or start over with --force",
                resume_dir.display()
            );
        }
    } else {
        None
    };
    match &state {
        // A previous incomplete attempt without a saved state: start its log over.
        None => {
            for stale in ["metrics.jsonl", RESULT_FILE, "predictions-external.csv"] {
                let _ = std::fs::remove_file(out.join(stale));
            }
        }
        // The log keeps the epochs behind the saved state (a later, killed attempt may have logged more).
        Some(c) => {
            checkpoint::refuse_config_change(&c.json_path, &c.meta["config"], &serde_json::to_value(cfg)?, &["run.out_dir"])?;
            let done = c.meta["epochs_done"].as_u64().with_context(|| format!("{}: no epochs_done", c.json_path.display()))?;
            let dropped = checkpoint::truncate_jsonl_after(&out.join("metrics.jsonl"), "epoch", done)?;
            if dropped > 0 {
                eprintln!("metrics.jsonl: removed {dropped} line(s) logged after epoch {done} (they are re-run from the saved state)");
            }
        }
    }
    crate::atomic::write_bytes(&out.join("config.resolved.toml"), cfg.to_toml()?.as_bytes())?;

    let p = prepare(cfg)?;
    // Loaded before training, so a bad external set fails the run at once.
    let external = match &cfg.data.test_shards {
        Some(dirs) => Some(prepare_external(cfg, &p, dirs)?),
        None => None,
    };
    let rows_of = |part: Part| -> Vec<usize> { (0..p.records.len()).filter(|&i| p.parts[i] == part).collect() };
    let (train, val, test) = (rows_of(Part::Train), rows_of(Part::Val), rows_of(Part::Test));
    let mut split_csv = String::from("material_id,part\n");
    for (i, &r) in p.records.iter().enumerate() {
        split_csv.push_str(&format!("{},{}\n", p.ds.id(r), p.parts[i].name()));
    }
    crate::atomic::write_bytes(&out.join("split.csv"), split_csv.as_bytes())?;

    let width = p.width;
    let train_y = rows_targets(&p, &train);
    let std = Standardizer::fit(&train_y, width, cfg.data.standardize);
    let z_all = std.forward(&p.targets); // (n, width) model space
    let train_mean = mean_of(&train_y, width);
    let baseline = |rows: &[usize]| -> f64 {
        let t = rows_targets(&p, rows);
        let pred: Vec<f64> = (0..t.len()).map(|k| train_mean[k % width]).collect();
        regression_metrics(&pred, &t, width).mae
    };
    let (val_mae_train_mean, test_mae_train_mean) = (baseline(&val), if test.is_empty() { f64::NAN } else { baseline(&test) });

    let mut model = FinetuneModel::new(cfg, width, cfg.run.seed)?;
    let transfer = match &cfg.model.checkpoint {
        Some(path) => Some(load_pretrained_crystal(model.encoder.as_mut(), cfg, path)?),
        None => None,
    };
    let parameters = model.num_params();
    if opts.device.is_gpu() {
        model.to_device(opts.device).with_context(|| format!("moving the model to {}", opts.device))?;
    }
    let bsz = cfg.optim.batch_size;
    // The last partial batch is kept unless it has a single row (BatchNorm needs two).
    let spe = (train.len() / bsz + usize::from(train.len() % bsz >= 2)).max(1) as u64;
    let total_steps = spe * cfg.optim.epochs;
    let schedule = WarmupCosine {
        peak_lr: cfg.optim.lr,
        warmup_steps: (cfg.optim.warmup_epochs * spe as f64).round() as u64,
        total_steps,
        final_lr: cfg.optim.final_lr,
    };
    let mut adam = AdamW::new(cfg.optim.adamw());
    adam.init_state(&mut model)?;

    // Where the run stands: from scratch, or from the state a signal made it save.
    let mut best: Option<(u64, f64, NamedTensors)> = None; // (epoch, val MAE, weights)
    let mut since_best = 0u64;
    let mut step = 0u64;
    let mut start_epoch = 0u64;
    let mut skip_batches = 0usize;
    let (mut resumed_loss_sum, mut resumed_loss_rows) = (0.0f64, 0usize);
    if let Some(c) = &state {
        let field = |k: &str| c.meta[k].as_u64().with_context(|| format!("{}: no {k}", c.json_path.display()));
        if c.meta["data_fingerprint"].as_str() != Some(p.ds.fingerprint.as_str()) {
            bail!("{}: the saved state was trained on different shards (data fingerprint differs)", c.json_path.display());
        }
        checkpoint::set_module_tensors(&mut model, &c.tensors)
            .and_then(|()| checkpoint::set_optimizer_tensors(&mut adam, c))
            .with_context(|| format!("{}: the saved state does not match the model built from this config", c.json_path.display()))?;
        adam.step = field("adamw_step")?;
        step = field("step")?;
        start_epoch = field("epochs_done")?;
        skip_batches = field("epoch_batches_done")? as usize;
        since_best = field("since_best")?;
        resumed_loss_sum = c.meta["epoch_loss_sum"].as_f64().with_context(|| format!("{}: no epoch_loss_sum", c.json_path.display()))?;
        resumed_loss_rows = field("epoch_loss_rows")? as usize;
        let best_epoch = field("best_epoch")?;
        if best_epoch > 0 {
            let weights: NamedTensors =
                c.tensors.iter().filter_map(|(k, v)| k.strip_prefix(BEST_PREFIX).map(|k| (k.to_string(), v.clone()))).collect();
            let mae = c.meta["best_val_mae"].as_f64().with_context(|| format!("{}: no best_val_mae", c.json_path.display()))?;
            best = Some((best_epoch, mae, weights));
        }
        eprintln!("resuming from {} (epoch {}, step {step})", c.json_path.display(), start_epoch + 1);
    }
    // The best-validation checkpoint, written whenever validation improves (and again on resume,
    // so `best/` is the saved state's best even if a later, killed attempt wrote another).
    let best_dir = out.join("best");
    let save_best = |epoch: u64, val_mae: f64, weights: &NamedTensors| -> Result<()> {
        let meta = serde_json::json!({
            "kind": "multimat-finetune",
            "schema_version": 1,
            "multimat_version": env!("CARGO_PKG_VERSION"),
            "epoch": epoch,
            "val_mae": val_mae,
            "target": cfg.data.target,
            "units": p.units,
            "standardizer": std,
            "config": cfg,
            // What `multimat predict` needs to build graphs of new structures the same way.
            "graph_params": p.ds.shards[0].meta.graph_params,
        });
        checkpoint::save(&best_dir, epoch, weights, meta, 1)?;
        Ok(())
    };
    if state.is_some() && best_dir.exists() {
        std::fs::remove_dir_all(&best_dir).with_context(|| format!("removing {}", best_dir.display()))?;
    }
    if let Some((epoch, mae, weights)) = &best {
        save_best(*epoch, *mae, weights)?;
    }

    let bar = opts.progress.then(|| {
        let pb = indicatif::ProgressBar::new(cfg.optim.epochs);
        pb.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} epochs  {msg}  [{elapsed_precise} < {eta_precise}]")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb
    });
    let single = Dist::single();
    let metrics_path = out.join("metrics.jsonl");
    let mut epochs_run = start_epoch;
    let mut stopped_early = false;
    for epoch in start_epoch..cfg.optim.epochs {
        let t0 = Instant::now();
        let perm = epoch_permutation(train.len(), cfg.run.seed, epoch);
        let resumed_here = state.is_some() && epoch == start_epoch;
        let mut loss_sum = if resumed_here { resumed_loss_sum } else { 0.0 };
        let mut loss_rows = if resumed_here { resumed_loss_rows } else { 0 };
        let skip = if resumed_here { skip_batches } else { 0 };
        // This epoch's batches: (index in the epoch, rows, records), the resumed ones skipped.
        let batches: Vec<(usize, Vec<usize>, Vec<usize>)> = perm
            .chunks(bsz)
            .filter(|c| c.len() >= 2)
            .enumerate()
            .skip(skip)
            .map(|(k, chunk)| {
                let rows: Vec<usize> = chunk.iter().map(|&i| train[i]).collect();
                let recs: Vec<usize> = rows.iter().map(|&i| p.records[i]).collect();
                (k, rows, recs)
            })
            .collect();
        // Read, assembled and prepared on the device on a prefetch thread, in the epoch's order
        // (`Dataset::for_each_prepared`).
        let batch_records: Vec<&[usize]> = batches.iter().map(|(_, _, recs)| recs.as_slice()).collect();
        let preparer = model.encoder.input_preparer();
        p.ds.for_each_prepared(Modality::Crystal, &batch_records, preparer.as_ref(), |k, inputs| {
            let (batch_index, rows, recs) = (batches[k].0, &batches[k].1, &batches[k].2);
            model.set_training(true);
            let ctx = StepContext { train: true, dist: &single, comm: None, dropout_seed: cfg.run.seed ^ step.wrapping_mul(0x2545_F491_4F6C_DD1D) };
            let pred = model.forward_prepared(inputs, &ctx).with_context(|| format!("epoch {}: crystal encoder", epoch + 1))?; // (B, width)
            let b = rows.len();
            // The MSE in f64 on the host: (B, width) predictions are a few hundred floats.
            let pred = pred.to_host()?;
            let scale = 2.0 / (b * width) as f64;
            let mut loss = 0.0f64;
            let mut dpred = vec![0.0f32; b * width]; // (B, width)
            for (j, &i) in rows.iter().enumerate() {
                for c in 0..width {
                    let d = pred[j * width + c] as f64 - z_all[i * width + c];
                    loss += d * d;
                    dpred[j * width + c] = (scale * d) as f32;
                }
            }
            loss /= (b * width) as f64;
            model.backward(&Tensor::from_vec(&[b, width], dpred).to_device(opts.device)?, &ctx).with_context(|| format!("epoch {}: backward", epoch + 1))?;
            let gnorm = if cfg.optim.grad_clip > 0.0 { clip_grad_norm(&mut model, cfg.optim.grad_clip) } else { grad_norm(&mut model) };
            if !loss.is_finite() || !gnorm.is_finite() {
                let ids: Vec<&str> = recs.iter().map(|&r| p.ds.id(r)).collect();
                bail!(
                    "non-finite loss {loss} or gradient norm {gnorm} at epoch {} (step {}, lr {:.3e}); batch materials: {}",
                    epoch + 1, step + 1, schedule.lr(step), ids.join(", ")
                );
            }
            adam.step(&mut model, schedule.lr(step))?;
            zero_grads(&mut model);
            step += 1;
            loss_sum += loss * b as f64;
            loss_rows += b;
            if opts.stop.raised() {
                let mut t = checkpoint::module_tensors(&mut model)?;
                t.extend(checkpoint::optimizer_tensors(&mut adam)?);
                if let Some((_, _, w)) = &best {
                    t.extend(w.iter().map(|(k, v)| (format!("{BEST_PREFIX}{k}"), v.clone())));
                }
                let meta = serde_json::json!({
                    "kind": "multimat-finetune-resume",
                    "schema_version": 1,
                    "multimat_version": env!("CARGO_PKG_VERSION"),
                    "config": cfg,
                    "data_fingerprint": p.ds.fingerprint,
                    "device": opts.device.to_string(),
                    "adamw_step": adam.step,
                    "epochs_done": epoch,
                    "epoch_batches_done": batch_index + 1,
                    "epoch_loss_sum": loss_sum,
                    "epoch_loss_rows": loss_rows,
                    "since_best": since_best,
                    "best_epoch": best.as_ref().map_or(0, |b| b.0),
                    "best_val_mae": best.as_ref().map(|b| b.1),
                });
                let saved = checkpoint::save(&resume_dir, step, &t, meta, 1)?;
                if let Some(pb) = &bar {
                    pb.abandon();
                }
                return Err(Preempted { step, epoch: epoch + 1, state: saved }.into());
            }
            Ok(())
        })?;
        epochs_run = epoch + 1;
        let val_pred = std.inverse(&predict(&mut model, &p, &val, bsz)?);
        let vm = regression_metrics(&val_pred, &rows_targets(&p, &val), width);
        if !vm.mae.is_finite() {
            bail!("epoch {}: validation predictions are not finite", epoch + 1);
        }
        let improved = best.as_ref().is_none_or(|b| vm.mae < b.1);
        if improved {
            let weights = checkpoint::module_tensors(&mut model)?;
            save_best(epoch + 1, vm.mae, &weights)?;
            best = Some((epoch + 1, vm.mae, weights));
            since_best = 0;
        } else {
            since_best += 1;
        }
        let train_loss = loss_sum / loss_rows.max(1) as f64;
        let line = serde_json::json!({
            "epoch": epoch + 1, "step": step, "lr": schedule.lr(step.saturating_sub(1)), "train_loss": train_loss,
            "val_mae": vm.mae, "val_rmse": vm.rmse, "best": improved, "epoch_time_s": t0.elapsed().as_secs_f64(),
        });
        append_line(&metrics_path, &line.to_string())?;
        let best_mae = best.as_ref().map(|b| b.1).unwrap_or(f64::NAN);
        if let Some(pb) = &bar {
            pb.set_position(epoch + 1);
            pb.set_message(format!("loss {train_loss:.4}  val MAE {:.4} {}  best {best_mae:.4}", vm.mae, p.units));
        }
        if opts.verbose {
            eprintln!("epoch {:>4}  loss {train_loss:.4}  val MAE {:.4} {}  best {best_mae:.4}", epoch + 1, vm.mae, p.units);
        }
        if cfg.optim.patience > 0 && since_best >= cfg.optim.patience {
            stopped_early = true;
            break;
        }
    }
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }

    let (best_epoch, _, weights) = best.context("no epoch was evaluated")?;
    checkpoint::set_module_tensors(&mut model, &weights)?;
    let val_pred = std.inverse(&predict(&mut model, &p, &val, bsz)?);
    let vm = regression_metrics(&val_pred, &rows_targets(&p, &val), width);
    let test_truth = rows_targets(&p, &test);
    let test_pred = std.inverse(&predict(&mut model, &p, &test, bsz)?);
    let tm = regression_metrics(&test_pred, &test_truth, width);
    let mut csv = String::from("material_id,component,target,prediction\n");
    for (j, &i) in test.iter().enumerate() {
        for c in 0..width {
            csv.push_str(&format!("{},{c},{},{}\n", p.ds.id(p.records[i]), test_truth[j * width + c], test_pred[j * width + c]));
        }
    }
    crate::atomic::write_bytes(&out.join("predictions.csv"), csv.as_bytes())?;

    let external = match external {
        None => None,
        Some(e) => {
            let pred = std.inverse(&predict_records(&mut model, &e.ds, &e.records, width, bsz)?);
            let m = regression_metrics(&pred, &e.targets, width);
            let mean_pred: Vec<f64> = (0..e.targets.len()).map(|k| train_mean[k % width]).collect();
            let seen: std::collections::HashSet<&str> =
                p.records.iter().zip(&p.parts).filter(|(_, &part)| part != Part::Test).map(|(&r, _)| p.ds.id(r)).collect();
            let mut csv = String::from("material_id,component,target,prediction\n");
            for (j, &r) in e.records.iter().enumerate() {
                for c in 0..width {
                    csv.push_str(&format!("{},{c},{},{}\n", e.ds.id(r), e.targets[j * width + c], pred[j * width + c]));
                }
            }
            crate::atomic::write_bytes(&out.join("predictions-external.csv"), csv.as_bytes())?;
            Some(ExternalTest {
                shards: e.paths.iter().map(|p| p.display().to_string()).collect(),
                records_total: e.ds.len(),
                excluded: e.excluded,
                n: e.records.len(),
                overlap_train_val: e.records.iter().filter(|&&r| seen.contains(e.ds.id(r))).count(),
                mae: m.mae,
                rmse: m.rmse,
                r2: m.r2.is_finite().then_some(m.r2),
                mae_train_mean: regression_metrics(&mean_pred, &e.targets, width).mae,
            })
        }
    };

    let result = FinetuneResult {
        target: cfg.data.target.clone(),
        units: p.units.clone(),
        target_width: width,
        standardized: cfg.data.standardize,
        crystal_encoder: format!("{:?}", cfg.crystal_encoder()).to_lowercase(),
        checkpoint: transfer.as_ref().map(|t| t.checkpoint.clone()),
        checkpoint_sha256: transfer.as_ref().map(|t| t.tensors_sha256.clone()),
        seed: cfg.run.seed,
        split_seed: cfg.split_seed(),
        lr: cfg.optim.lr,
        records_total: p.ds.len(),
        excluded: p.excluded.clone(),
        n_train: train.len(),
        n_val: val.len(),
        n_test: test.len(),
        epochs_run,
        best_epoch,
        val_mae: vm.mae,
        val_rmse: vm.rmse,
        test_mae: tm.mae,
        test_rmse: tm.rmse,
        test_r2: tm.r2.is_finite().then_some(tm.r2),
        val_mae_train_mean,
        test_mae_train_mean,
        stopped_early,
        parameters,
        wall_s: t_start.elapsed().as_secs_f64(),
        external,
    };
    crate::atomic::write_bytes(&result_path, serde_json::to_string_pretty(&result)?.as_bytes())?;
    // The run is complete: a saved state would only be resumed into a finished run.
    if resume_dir.exists() {
        std::fs::remove_dir_all(&resume_dir).with_context(|| format!("removing {}", resume_dir.display()))?;
    }
    Ok(result)
}

/// Read a run's `result.json`.
pub fn read_result(dir: &Path) -> Result<FinetuneResult> {
    let path: PathBuf = dir.join(RESULT_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a fine-tuning result", path.display()))
}
