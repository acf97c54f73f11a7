//! The pre-training loop (`multimat pretrain`).
//!
//! One step, on every rank (a single process is rank 0 of 1):
//! 1. the global batch of `batch_size` training records is fixed by (seed, epoch, step) alone;
//!    this rank encodes its contiguous share of rows, per modality only the rows that have it;
//! 2. embeddings are L2-normalised and all-gathered, so every rank holds the global (B, D)
//!    matrices and presence masks (gather-with-grad);
//! 3. the loss runs on this rank's rows against the global batch; the shares of the loss and of
//!    d(global embeddings) are all-reduce-summed, and each rank back-propagates its own rows;
//! 4. parameter gradients are all-reduced, BatchNorm statistics were already synchronised inside
//!    the encoders (SyncBN), AdamW steps with the warm-up + cosine rate.
//! On `cpu` the collectives are `Dist`'s MPI calls on host buffers and the parameter gradients
//! one flat bucket after the backward. On a GPU device they go through `dist::DeviceComm` on
//! device tensors (NCCL on `cuda` with several ranks, MPI through the host on `cuda-sim`): the
//! embeddings are gathered and d(embeddings) reduced on the device, and the parameter gradients
//! form one bucket per module whose all-reduce starts as soon as they are final — the loss's
//! temperatures right after the loss, each encoder's right after its backward — and all buckets
//! finish, in the order they started, before step 4 reads the gradients. On NCCL a bucket runs on
//! the device's communication stream while the next encoder's backward computes — until that
//! backward's first SyncBN all-reduce, which queues behind it on the same stream (unmeasured on a
//! real GPU so far); on the host path the MPI reductions run at the finish, with the same result.
//! Batch assembly runs ahead on a prefetch thread. Only rank 0 writes checkpoints and logs.
//! SIGUSR1/SIGTERM on any rank: all ranks agree after the step, one checkpoint is written, and
//! the run returns `Outcome::Preempted` (the CLI exits with the requeue code).

use super::checkpoint;
use super::config::PretrainConfig;
use super::data_order::{batches_per_epoch, epoch_permutation, global_batch, rank_rows};
use super::dataset::{shard_paths, Dataset};
use super::model::MultiMatModel;
use super::preempt::StopSignal;
use crate::dist::{DeviceComm, Dist, PendingGrads};
use crate::engine::ops::gather::{gather_rows, scatter_add_rows, EdgeIndex};
use crate::engine::ops::{l2norm, l2norm_grad};
use crate::engine::optim::{clip_grad_norm, grad_norm, zero_grads, AdamW, WarmupCosine};
use crate::engine::backend::Device;
use crate::engine::{Module, Tensor};
use crate::eval::retrieval::RetrievalMetrics;
use crate::loss::ModalityTensor;
use crate::model::{InputPreparer, PreparedInputs, StepContext};
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::inference::{evaluate_retrieval, is_holdout, load_model_weights, L2_EPS};

/// How a run ended.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Finished,
    /// Stopped by a signal after writing a checkpoint at this step.
    Preempted { step: u64 },
}

#[derive(Debug)]
pub struct Summary {
    pub outcome: Outcome,
    pub steps_done: u64,
    pub first_loss: Option<f64>,
    pub last_loss: Option<f64>,
    pub retrieval: Vec<RetrievalMetrics>,
    pub out_dir: PathBuf,
}

/// Where to resume from.
#[derive(Clone, Debug)]
pub enum Resume {
    /// Start fresh (refuses if the output directory already holds checkpoints).
    No,
    /// Newest complete checkpoint in the output directory, or fresh if there is none.
    Auto,
    /// A specific checkpoint JSON.
    From(PathBuf),
}

/// Options that are not part of the model's configuration.
pub struct RunOptions {
    pub resume: Resume,
    pub progress: bool,
    /// Where parameters, activations and the loss live (`cpu`, `cuda[:N]`, `cuda-sim`).
    pub device: Device,
    /// TF32 tensor-core GEMMs on a CUDA device (ignored elsewhere).
    pub tf32: bool,
}


/// One step's inputs for this rank, assembled and prepared ahead of time.
struct StepBatch {
    step: u64,
    /// Global record indices of the whole batch (B).
    records: Vec<usize>,
    /// Per configured modality: positions (within this rank's rows) that have it, and its
    /// encoder's inputs, already checked and on the model's device.
    local: Vec<(Vec<usize>, Option<PreparedInputs>)>,
}

/// `perm` is the permutation of `step`'s epoch (computed once per epoch by the caller);
/// `preparers[k]` is the input step of modality k's encoder (run here, on the prefetch thread, so
/// the upload of step k+1's batch overlaps step k's compute).
#[allow(clippy::too_many_arguments)]
fn assemble_step(ds: &Dataset, train: &[usize], perm: &[usize], cfg: &PretrainConfig, preparers: &[Box<dyn InputPreparer>], step: u64, spe: u64, dist_rank: usize, world: usize) -> Result<StepBatch> {
    let bsz = cfg.optim.batch_size;
    let b = (step % spe) as usize;
    let records: Vec<usize> = global_batch(perm, bsz, b).iter().map(|&k| train[k]).collect();
    let rows = rank_rows(bsz, world, dist_rank);
    let mut local = Vec::new();
    for &m in &cfg.data.modalities {
        let pos: Vec<usize> = (0..rows.len()).filter(|&p| ds.has(m, records[rows.start + p])).collect();
        let recs: Vec<usize> = pos.iter().map(|&p| records[rows.start + p]).collect();
        let inputs = if recs.is_empty() && world == 1 {
            None
        } else {
            let batch = ds.assemble(m, &recs)?;
            let k = local.len();
            Some(preparers[k].prepare(&batch).with_context(|| format!("step {step}: {} encoder", m.name()))?)
        };
        local.push((pos, inputs));
    }
    Ok(StepBatch { step, records, local })
}

pub fn pretrain(cfg: &PretrainConfig, opts: &RunOptions, dist: &Dist, stop: &StopSignal) -> Result<Summary> {
    let out_dir = cfg.run.out_dir.clone();
    let ckpt_dir = out_dir.join("checkpoints");
    // One run per out_dir: rank 0 holds the lock for the whole run; every rank stops if it can't.
    let lock = if dist.is_root() { Some(crate::run_lock::RunLock::acquire(&out_dir, "pretrain")) } else { None };
    let refusal = match &lock {
        Some(Err(e)) => format!("{e:#}").into_bytes(),
        _ => Vec::new(),
    };
    let refusal = dist.broadcast_bytes(refusal);
    if !refusal.is_empty() {
        bail!("{}", String::from_utf8_lossy(&refusal));
    }
    let _lock = lock.and_then(Result::ok);
    let paths = shard_paths(&cfg.data.shards)?;
    let ds = Arc::new(Dataset::load(&paths)?);
    for &m in &cfg.data.modalities {
        if ds.count(m) == 0 {
            bail!("no record in {:?} has {} data; remove it from data.modalities or ingest it", cfg.data.shards, m.name());
        }
    }
    let (train, holdout): (Vec<usize>, Vec<usize>) =
        (0..ds.len()).partition(|&r| !is_holdout(ds.id(r), cfg.run.seed, cfg.data.holdout_fraction));
    let bsz = cfg.optim.batch_size;
    let spe = batches_per_epoch(train.len(), bsz) as u64;
    if spe == 0 {
        bail!("{} training records are fewer than one batch of {bsz}; lower optim.batch_size", train.len());
    }
    let total_steps = spe * cfg.optim.epochs;
    let end_step = if cfg.run.max_steps > 0 { cfg.run.max_steps.min(total_steps) } else { total_steps };
    let schedule = WarmupCosine {
        peak_lr: cfg.optim.lr,
        warmup_steps: (cfg.optim.warmup_epochs * spe as f64).round() as u64,
        total_steps,
        final_lr: cfg.optim.final_lr,
    };

    let mut model = MultiMatModel::new(&cfg.data.modalities, &cfg.model.encoders, &cfg.loss, cfg.model.embed_dim, cfg.run.seed)?;
    let mut adam = AdamW::new(cfg.optim.adamw());
    adam.init_state(&mut model)?;

    let mut start_step = 0u64;
    let resume_from = match &opts.resume {
        Resume::No => {
            if checkpoint::any(&ckpt_dir)? {
                bail!(
                    "{} already holds checkpoints: pass --resume auto to continue, or choose another run.out_dir \
                     (or move the checkpoints away to start this directory over)",
                    ckpt_dir.display()
                );
            }
            None
        }
        Resume::Auto => checkpoint::latest(&ckpt_dir)?,
        Resume::From(p) => Some(checkpoint::load(p)?),
    };
    if let Some(c) = resume_from {
        if c.meta["data_fingerprint"].as_str() != Some(ds.fingerprint.as_str()) {
            bail!("{}: checkpoint was trained on different shards (data fingerprint differs)", c.json_path.display());
        }
        check_same_run_config(&c, cfg)?;
        restore(&mut model, &mut adam, &c)?;
        start_step = c.step();
        let trained_on = c.meta["device"].as_str().unwrap_or("cpu");
        let here = device_description(opts.device);
        if dist.is_root() && trained_on != here {
            eprintln!(
                "note: {} was written on {trained_on}, this run uses {here}: training continues, but exact \
                 (bit-identical) resume holds only on the same device type",
                c.json_path.display()
            );
        }
        if dist.is_root() {
            eprintln!("resuming from {} (step {start_step})", c.json_path.display());
        }
    }

    let device = opts.device;
    if device.is_gpu() {
        model.to_gpu(device, opts.tf32)?;
        // The moments follow their parameters (created on the host, moved with them here).
        adam.init_state(&mut model)?;
    }

    // Collectives on the device's tensors (collective setup on `cuda` with several ranks).
    let comm = if device.is_gpu() { Some(DeviceComm::new(dist, device)?) } else { None };

    let resolved = cfg.to_toml()?;
    if dist.is_root() {
        // The log holds exactly the steps behind the state we continue from: steps logged after
        // the checkpoint (by a run that was killed later) would be logged again.
        let dropped = checkpoint::truncate_jsonl_after(&out_dir.join("metrics.jsonl"), "step", start_step)?;
        if dropped > 0 {
            eprintln!("metrics.jsonl: removed {dropped} line(s) logged after step {start_step} (they are re-run from the checkpoint)");
        }
        crate::atomic::write_bytes(&out_dir.join("config.resolved.toml"), resolved.as_bytes())?;
    }
    let mut params_count = 0usize;
    model.visit_params(&mut |p| params_count += p.value.numel());

    // Prefetch: a thread assembles the next steps' batches and prepares each encoder's inputs on
    // the model's device (checks, atom features, edge grouping, the upload through pinned staging
    // buffers on the engine's compute stream) while this one computes.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<StepBatch>>(2);
    let producer = {
        let preparers: Vec<Box<dyn InputPreparer>> = model.encoders.iter().map(|e| e.input_preparer()).collect();
        let ds = Arc::clone(&ds);
        let train = train.clone();
        let cfg = cfg.clone();
        let (rank, world) = (dist.rank(), dist.world_size());
        std::thread::spawn(move || {
            let mut perm: (u64, Vec<usize>) = (u64::MAX, Vec::new());
            for step in start_step..end_step {
                let epoch = step / spe;
                if perm.0 != epoch {
                    perm = (epoch, epoch_permutation(train.len(), cfg.run.seed, epoch));
                }
                let r = assemble_step(&ds, &train, &perm.1, &cfg, &preparers, step, spe, rank, world);
                let failed = r.is_err();
                if tx.send(r).is_err() || failed {
                    break;
                }
            }
        })
    };

    let bar = (opts.progress && dist.is_root()).then(|| {
        let pb = indicatif::ProgressBar::new(end_step);
        pb.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb.set_position(start_step);
        pb
    });
    if dist.is_root() {
        eprintln!(
            "pre-training {} on {} records ({} train, {} held out), {} parameters, {} steps/epoch, ranks {}, device {device}",
            cfg.data.modalities.iter().map(|m| m.name()).collect::<Vec<_>>().join("+"),
            ds.len(), train.len(), holdout.len(), params_count, spe, dist.world_size()
        );
    }

    let mut first_loss = None;
    let mut last_loss = None;
    let mut outcome = Outcome::Finished;
    let mut step = start_step;
    let rows = rank_rows(bsz, dist.world_size(), dist.rank());
    let rows_per_rank: Vec<usize> = (0..dist.world_size()).map(|r| rank_rows(bsz, dist.world_size(), r).len()).collect();
    let d = cfg.model.embed_dim;
    while step < end_step {
        let t_wait = Instant::now();
        let sb = rx.recv().context("batch prefetch thread stopped")??;
        debug_assert_eq!(sb.step, step);
        let mut timer = super::step_timing::StepTimer::start(dist, t_wait.elapsed());
        let t0 = Instant::now();
        model.set_training(true);
        let ctx = StepContext { train: true, dist, comm: comm.as_ref(), dropout_seed: cfg.run.seed ^ step.wrapping_mul(0x2545_F491_4F6C_DD1D) };

        // 1–2. Encode this rank's rows, normalise, gather the global batch.
        let mut global: Vec<Tensor> = Vec::new(); // per modality (B, D)
        let mut normalised: Vec<Option<(Tensor, Tensor)>> = Vec::new(); // per modality (n_m, D) y and (n_m) norms
        let (positions, prepared): (Vec<Vec<usize>>, Vec<Option<PreparedInputs>>) = sb.local.into_iter().unzip();
        for (k, inputs) in prepared.into_iter().enumerate() {
            let pos = &positions[k];
            let mut yn = None;
            if let Some(inputs) = inputs {
                let z = model.encoders[k].forward_prepared(inputs, &ctx).with_context(|| format!("step {step}: {} encoder", cfg.data.modalities[k].name()))?;
                yn = Some(l2norm(&z, L2_EPS));
            }
            if let Some(comm) = &comm {
                // (B_local, D) on the device: this rank's rows at their positions, zeros where absent.
                let local_rows = match &yn {
                    Some((y, _)) => {
                        let at: Vec<u32> = pos.iter().map(|&p| p as u32).collect();
                        scatter_add_rows(&y.to_device(device)?, &EdgeIndex::new(&at, rows.len(), "this rank's rows", device)?)
                    }
                    None => Tensor::zeros_on(&[rows.len(), d], device)?,
                };
                global.push(comm.all_gather_rows(&local_rows, &rows_per_rank, d).with_context(|| format!("step {step}: gathering embeddings"))?);
            } else {
                let mut local_rows = vec![0.0f32; rows.len() * d]; // (B_local, D), zeros where absent
                if let Some((y, _)) = &yn {
                    let yh = y.to_host()?;
                    for (i, &p) in pos.iter().enumerate() {
                        local_rows[p * d..(p + 1) * d].copy_from_slice(&yh[i * d..(i + 1) * d]);
                    }
                }
                let gathered = dist.all_gather_f32(&local_rows);
                global.push(Tensor::from_vec(&[gathered.len() / d, d], gathered));
            }
            normalised.push(yn);
        }
        let present: Vec<Vec<bool>> = cfg.data.modalities.iter().map(|&m| sb.records.iter().map(|&r| ds.has(m, r)).collect()).collect();

        // 3. Loss on this rank's rows against the global batch; sum shares over ranks.
        let inputs: Vec<ModalityTensor> = cfg
            .data
            .modalities
            .iter()
            .enumerate()
            .map(|(k, &m)| ModalityTensor { modality: m, data: &global[k], present: &present[k] })
            .collect();
        let out = model.loss.forward_backward_tensors(&inputs, rows.clone(), true).with_context(|| format!("step {step}: loss"))?;
        let mut loss_buf = [out.loss];
        dist.all_reduce_sum_f64(&mut loss_buf);
        let loss = loss_buf[0];
        // Parameter-gradient buckets started and not yet finished: the loss's (None), then each
        // encoder's (Some(k)), in the order every rank starts them.
        let mut in_flight: Vec<(Option<usize>, PendingGrads)> = Vec::new();
        if let Some(comm) = &comm {
            // The temperatures' gradients are final: their bucket goes first.
            let bucket = comm.start_grads_all_reduce(&mut model.loss).with_context(|| format!("step {step}: all-reducing the loss's gradients"))?;
            in_flight.push((None, bucket));
        }
        for (k, g) in out.grads.into_iter().enumerate() {
            // This rank's rows, present ones only → through the L2 norm → encoder backward.
            let pos = &positions[k];
            let dy = if let Some(comm) = &comm {
                let mut g = g.to_device(device)?;
                comm.all_reduce_sum(&mut g).with_context(|| format!("step {step}: all-reducing d(embeddings)"))?;
                let at: Vec<u32> = pos.iter().map(|&p| (rows.start + p) as u32).collect();
                gather_rows(&g, &EdgeIndex::new(&at, g.shape[0], "this rank's rows of the global batch", device)?)
            } else {
                let mut g = g.to_host()?;
                dist.all_reduce_sum_f32(&mut g);
                let n = pos.len();
                let mut dy = vec![0.0f32; n * d];
                for (i, &p) in pos.iter().enumerate() {
                    let gr = rows.start + p;
                    dy[i * d..(i + 1) * d].copy_from_slice(&g[gr * d..(gr + 1) * d]);
                }
                Tensor::from_vec(&[n, d], dy)
            };
            if let Some((y, norms)) = &normalised[k] {
                let dz = l2norm_grad(&dy.to_device(y.device())?, y, norms, L2_EPS);
                model.encoders[k].backward(&dz, &ctx).with_context(|| format!("step {step}: {} backward", cfg.data.modalities[k].name()))?;
            }
            if let Some(comm) = &comm {
                // This encoder's gradients are final: its bucket reduces during the next backward.
                let bucket = comm
                    .start_grads_all_reduce(model.encoders[k].as_mut())
                    .with_context(|| format!("step {step}: all-reducing the {} encoder's gradients", cfg.data.modalities[k].name()))?;
                in_flight.push((Some(k), bucket));
            }
        }

        // 4. Gradient all-reduce (GPU device: the buckets in flight finish; CPU: one flat
        // bucket), checks, clipping, update.
        if let Some(comm) = &comm {
            let mut finished = Ok(());
            timer.param_all_reduce(dist, || {
                finished = in_flight.drain(..).try_for_each(|(k, bucket)| match k {
                    None => comm.finish_grads_all_reduce(bucket, &mut model.loss).with_context(|| format!("step {step}: all-reducing the loss's gradients")),
                    Some(k) => comm
                        .finish_grads_all_reduce(bucket, model.encoders[k].as_mut())
                        .with_context(|| format!("step {step}: all-reducing the {} encoder's gradients", cfg.data.modalities[k].name())),
                })
            });
            finished?;
        }
        if comm.is_none() && dist.world_size() > 1 {
            let mut flat = flat_grads(&mut model, params_count)?;
            timer.param_all_reduce(dist, || dist.all_reduce_sum_f32(&mut flat));
            set_flat_grads(&mut model, &flat)?;
        }
        let gnorm = if cfg.optim.grad_clip > 0.0 { clip_grad_norm(&mut model, cfg.optim.grad_clip) } else { grad_norm(&mut model) };
        if !loss.is_finite() || !gnorm.is_finite() {
            let culprit = cfg
                .data
                .modalities
                .iter()
                .enumerate()
                .find(|(k, _)| !grad_norm(model.encoders[*k].as_mut()).is_finite())
                .map(|(_, m)| m.name())
                .unwrap_or("loss");
            let ids: Vec<&str> = sb.records.iter().map(|&r| ds.id(r)).collect();
            if dist.is_root() {
                let p = save(&ckpt_dir, &mut model, &mut adam, step, cfg, &ds.fingerprint, 0, device)?;
                bail!(
                    "non-finite loss {loss} or gradient norm {gnorm} at step {step} (first non-finite gradients in the {culprit} encoder); \
                     last good state saved to {}; batch materials: {}",
                    p.display(),
                    ids.join(", ")
                );
            }
            bail!("non-finite loss or gradient at step {step} ({culprit})");
        }
        let lr = schedule.lr(step);
        adam.step(&mut model, lr)?;
        model.loss.clamp_temperatures();
        zero_grads(&mut model);
        step += 1;
        let dt = t0.elapsed().as_secs_f64();
        let timing = timer.finish(dist);
        first_loss.get_or_insert(loss);
        last_loss = Some(loss);

        if dist.is_root() {
            let temps: Vec<serde_json::Value> = model
                .loss
                .temperature_log()
                .into_iter()
                .map(|(name, raw, tau)| serde_json::json!({"name": name, "raw_log_scale": raw, "tau": tau}))
                .collect();
            let line = serde_json::json!({
                "step": step, "epoch": (step - 1) / spe, "loss": loss, "lr": lr, "grad_norm": gnorm,
                "step_time_s": dt, "materials_per_s": bsz as f64 / dt,
                "terms": out.terms.iter().map(|t| serde_json::json!({"name": t.name, "valid_rows": t.valid_rows})).collect::<Vec<_>>(),
                "temperatures": temps,
                "timing": timing.to_json(),
            });
            append_line(&out_dir.join("metrics.jsonl"), &line.to_string())?;
            if let Some(pb) = &bar {
                pb.set_position(step);
                pb.set_message(format!("loss {loss:.4}  {dt:.2} s/step  {:.0} materials/s", bsz as f64 / dt));
            }
        }

        let stop_now = stop.agreed(dist);
        let periodic = if cfg.run.checkpoint_every > 0 { step % cfg.run.checkpoint_every == 0 } else { step % spe == 0 };
        if stop_now || periodic || step == end_step {
            if dist.is_root() {
                save(&ckpt_dir, &mut model, &mut adam, step, cfg, &ds.fingerprint, cfg.run.keep_last, device)?;
            }
            dist.barrier();
        }
        if stop_now {
            outcome = Outcome::Preempted { step };
            break;
        }
    }
    drop(rx);
    let _ = producer.join();
    if let Some(pb) = bar {
        pb.finish();
    }

    let mut retrieval = Vec::new();
    if outcome == Outcome::Finished && dist.is_root() {
        let eval_set = if holdout.len() >= 2 { &holdout } else { &train };
        retrieval = evaluate_retrieval(&mut model, &ds, eval_set)?;
        let summary = serde_json::json!({
            "set": if holdout.len() >= 2 { "holdout" } else { "train" },
            "pairs": retrieval,
        });
        crate::atomic::write_bytes(&out_dir.join("retrieval.json"), serde_json::to_string_pretty(&summary)?.as_bytes())?;
    }
    Ok(Summary { outcome, steps_done: step - start_step, first_loss, last_loss, retrieval, out_dir })
}

/// Config keys a resumed run may change: how long it runs and how it logs and checkpoints
/// (`data.shards` may move: the data fingerprint checks the content).
const RESUMABLE_CHANGES: &[&str] = &["optim.epochs", "run.max_steps", "run.checkpoint_every", "run.keep_last", "run.out_dir", "data.shards"];

/// Refuses to resume `c` when its recorded config differs from `cfg` in anything that changes
/// what is trained, naming every such key with both values.
fn check_same_run_config(c: &checkpoint::Checkpoint, cfg: &PretrainConfig) -> Result<()> {
    // Checkpoints from before the reference defaults recorded no such keys: they were trained
    // with the old settings, so compare against those.
    let mut recorded = c.meta["config"].clone();
    if !recorded.is_null() {
        use crate::train::config::{fill_pre_reference_settings, PRE_REFERENCE_SETTINGS};
        fill_pre_reference_settings(&mut recorded, PRE_REFERENCE_SETTINGS);
    }
    checkpoint::refuse_config_change(&c.json_path, &recorded, &serde_json::to_value(cfg)?, RESUMABLE_CHANGES)
}

/// Every parameter gradient, in visiting order, as one host vector (the MPI all-reduce bucket).
fn flat_grads(model: &mut MultiMatModel, params_count: usize) -> Result<Vec<f32>> {
    let mut flat = Vec::with_capacity(params_count);
    let mut err = None;
    model.visit_params(&mut |p| match &p.grad.storage {
        crate::engine::tensor::Storage::Cpu(v) => flat.extend_from_slice(v),
        crate::engine::tensor::Storage::Gpu(_) => match p.grad.to_host() {
            Ok(v) => flat.extend_from_slice(&v),
            Err(e) => {
                err.get_or_insert(e.context(format!("copying the gradient of {} to the host", p.name)));
            }
        },
    });
    err.map_or(Ok(flat), Err)
}

/// Writes the all-reduced bucket back into the gradients (on their device).
fn set_flat_grads(model: &mut MultiMatModel, flat: &[f32]) -> Result<()> {
    let mut off = 0;
    let mut err = None;
    model.visit_params(&mut |p| {
        let n = p.grad.numel();
        let part = &flat[off..off + n];
        off += n;
        if p.grad.device().is_gpu() {
            match Tensor::from_vec(&p.grad.shape, part.to_vec()).to_device(p.grad.device()) {
                Ok(g) => p.grad = g,
                Err(e) => {
                    err.get_or_insert(e.context(format!("uploading the reduced gradient of {}", p.name)));
                }
            }
        } else {
            p.grad.data_mut().copy_from_slice(part);
        }
    });
    err.map_or(Ok(()), Err)
}

/// The training device as a checkpoint records it, with the GPU's name where there is one
/// (exact resume holds on the same device type).
fn device_description(device: Device) -> String {
    use crate::engine::backend::{gpu, GpuKind};
    if let Device::Cuda(_) = device {
        if let Ok(g) = gpu(device) {
            if let GpuKind::Cuda(cu) = &g.kind {
                if let Ok(name) = cu.name() {
                    return format!("{device} ({name})");
                }
            }
        }
    }
    device.to_string()
}

fn append_line(path: &Path, line: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("opening {}", path.display()))?;
    // One write per line: an O_APPEND write of a short line is not interleaved or split.
    f.write_all(format!("{line}\n").as_bytes())?;
    Ok(())
}

/// Save parameters, BatchNorm buffers and AdamW moments with the metadata a resume needs.
#[allow(clippy::too_many_arguments)]
fn save(dir: &Path, model: &mut MultiMatModel, adam: &mut AdamW, step: u64, cfg: &PretrainConfig, fingerprint: &str, keep: usize, device: Device) -> Result<PathBuf> {
    let mut t = checkpoint::module_tensors(model)?;
    t.extend(checkpoint::optimizer_tensors(adam)?);
    let meta = serde_json::json!({
        "kind": "multimat-pretrain",
        "schema_version": 1,
        "multimat_version": env!("CARGO_PKG_VERSION"),
        "adamw_step": adam.step,
        "config": cfg,
        "data_fingerprint": fingerprint,
        "modalities": cfg.data.modalities,
        "embed_dim": cfg.model.embed_dim,
        "device": device_description(device),
    });
    checkpoint::save(dir, step, &t, meta, keep)
}

/// Load parameters, buffers and optimiser state from a checkpoint into a freshly built model.
pub fn restore(model: &mut MultiMatModel, adam: &mut AdamW, c: &checkpoint::Checkpoint) -> Result<()> {
    load_model_weights(model, c).map_err(|e| e.context("checkpoint does not match the model built from this config"))?;
    checkpoint::set_optimizer_tensors(adam, c).map_err(|e| e.context("checkpoint does not match the model built from this config"))?;
    adam.step = c.meta["adamw_step"].as_u64().context("checkpoint metadata lacks adamw_step")?;
    Ok(())
}
