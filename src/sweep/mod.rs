//! Hyper-parameter sweeps of fine-tuning (`multimat sweep`): learning rates × seeds × variants
//! (a variant = a crystal encoder, optionally a pre-training checkpoint, optionally extra
//! overrides), each run a `finetune::run` in its own directory, aggregated into a Table-1-style
//! table (`aggregate.rs`).
//!
//! - Every run has a stable id: the first 16 hex digits of SHA-256 over its variant name and its
//!   resolved configuration (with the run directory blanked and the checkpoint path replaced by
//!   the checkpoint's tensor hash), so the same settings always land in `runs/<id>/`.
//! - A run whose `result.json` exists is skipped: a crashed or cancelled sweep is re-submitted
//!   as is.
//! - The plan is sorted by id. `--task-id I --num-tasks N` (Slurm arrays) takes runs k with
//!   k mod N = I. Under `mpirun -n R` rank 0 hands out run indices one at a time (`dispatch`):
//!   a worker rank asks for the next run when it finishes one; rank 0's own runs execute on a
//!   worker thread while its main thread answers requests (MPI is called from the main thread
//!   only). Runs are single-process, so the result of a run does not depend on who ran it.
//! - Every run trains on `ExecOptions::device` (`multimat sweep --device`); the device is not
//!   part of a run's settings (nor of its id), and `run.json` records where it ran.
//! - Preemption: `ExecOptions::stop` is the flag of the one SIGUSR1/SIGTERM handler
//!   (`train::preempt::StopSignal`), handed to the running `finetune::run`, which saves its state
//!   in `RUN/resume/` and returns `finetune::Preempted`; the sweep then starts no further run and
//!   `multimat sweep` exits with the requeue code. Runs execute with `resume: true`, so the
//!   re-submitted sweep continues that run from its state, then runs the remaining ones.

pub mod aggregate;
pub mod table1;

use crate::dist::Dist;
use crate::engine::Device;
use crate::finetune::config::FINETUNE_PATH_KEYS;
use crate::finetune::{self, FinetuneConfig, RESULT_FILE};
use crate::train::config::{absolute_from, absolutize_override};
use crate::model::config::CrystalEncoderKind;
use crate::train::preempt::StopSignal;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepConfig {
    /// The fine-tuning config every run starts from (relative to the sweep file).
    pub base: PathBuf,
    /// Sweep directory: runs/<id>/, table.md, table.csv (relative to the sweep file).
    pub out_dir: PathBuf,
    #[serde(default = "default_lrs")]
    pub lrs: Vec<f64>,
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    /// Overrides applied to every run (`key=value`, as `multimat finetune --set`).
    #[serde(default)]
    pub set: Vec<String>,
    pub variants: Vec<Variant>,
}

fn default_lrs() -> Vec<f64> {
    vec![1e-3, 1e-4, 1e-5]
}
fn default_seeds() -> Vec<u64> {
    vec![0, 1, 2]
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// Row label of the table, e.g. "PotNet scratch", "PotNet MultiMat".
    pub name: String,
    pub crystal_encoder: CrystalEncoderKind,
    /// Pre-training checkpoint `.json`, or a pre-training run (or `checkpoints/`) directory
    /// meaning its newest complete checkpoint (relative to the sweep file); absent = from scratch.
    #[serde(default)]
    pub checkpoint: Option<PathBuf>,
    /// Extra overrides for this variant's runs (applied after the sweep's `set`).
    #[serde(default)]
    pub set: Vec<String>,
}

/// One planned run.
#[derive(Clone, Debug)]
pub struct PlannedRun {
    pub id: String,
    pub variant: usize,
    pub variant_name: String,
    pub lr: f64,
    pub seed: u64,
    pub dir: PathBuf,
    pub config: FinetuneConfig,
}

impl PlannedRun {
    pub fn is_complete(&self) -> bool {
        self.dir.join(RESULT_FILE).exists()
    }
}

/// The whole sweep, runs sorted by id.
pub struct Plan {
    pub config: SweepConfig,
    pub runs: Vec<PlannedRun>,
}

impl SweepConfig {
    /// Read the sweep file; `extra_set` is appended to its `set`. Paths follow
    /// `train::config`'s one rule: `base`, `out_dir`, variant checkpoints and path overrides in
    /// `set` are relative to the sweep file's directory, those in `extra_set` (the command line)
    /// to the current directory; all are absolute once loaded.
    pub fn load(path: &Path, extra_set: &[String]) -> Result<SweepConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading sweep config {}", path.display()))?;
        let mut cfg: SweepConfig = toml::from_str(&text).with_context(|| format!("parsing sweep config {}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new(""));
        cfg.base = absolute_from(dir, &cfg.base);
        cfg.out_dir = absolute_from(dir, &cfg.out_dir);
        for v in &mut cfg.variants {
            if let Some(c) = &mut v.checkpoint {
                *c = absolute_from(dir, c);
            }
            v.set = v.set.iter().map(|o| absolutize_override(o, FINETUNE_PATH_KEYS, dir)).collect::<Result<_>>()?;
        }
        let from_file = cfg.set.iter().map(|o| absolutize_override(o, FINETUNE_PATH_KEYS, dir));
        let from_cli = extra_set.iter().map(|o| absolutize_override(o, FINETUNE_PATH_KEYS, Path::new("")));
        cfg.set = from_file.chain(from_cli).collect::<Result<_>>()?;
        cfg.check().with_context(|| format!("sweep config {}", path.display()))?;
        Ok(cfg)
    }

    pub fn check(&self) -> Result<()> {
        if self.lrs.is_empty() || self.seeds.is_empty() || self.variants.is_empty() {
            bail!("lrs, seeds and variants must each have at least one entry");
        }
        if let Some(lr) = self.lrs.iter().find(|l| !(**l > 0.0 && l.is_finite())) {
            bail!("learning rate {lr} is not a positive number");
        }
        let mut names: Vec<&str> = self.variants.iter().map(|v| v.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            bail!("variant name {:?} is used twice", w[0]);
        }
        let mut seeds = self.seeds.clone();
        seeds.sort_unstable();
        seeds.dedup();
        let mut lrs = self.lrs.clone();
        lrs.sort_by(f64::total_cmp);
        lrs.dedup();
        if seeds.len() != self.seeds.len() || lrs.len() != self.lrs.len() {
            bail!("lrs and seeds must not repeat a value");
        }
        Ok(())
    }
}

/// The checkpoint's tensor hash (from its JSON), which identifies it in run ids.
fn checkpoint_hash(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading checkpoint {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parsing checkpoint {}", path.display()))?;
    Ok(v["tensors_sha256"].as_str().with_context(|| format!("{}: no tensors_sha256 (not a multimat checkpoint)", path.display()))?.to_string())
}

/// Stable id of a run: variant name + resolved config, independent of where the sweep lives.
pub fn run_id(variant_name: &str, cfg: &FinetuneConfig) -> Result<String> {
    let mut c = cfg.clone();
    c.run.out_dir = PathBuf::new();
    if let Some(ck) = &c.model.checkpoint {
        c.model.checkpoint = Some(PathBuf::from(format!("sha256:{}", checkpoint_hash(ck)?)));
    }
    let mut h = Sha256::new();
    h.update(variant_name.as_bytes());
    h.update([0u8]);
    h.update(c.to_toml()?.as_bytes());
    Ok(hex::encode(h.finalize())[..16].to_string())
}

/// The overrides that make the base config into the run (variant, lr, seed).
fn run_overrides(cfg: &SweepConfig, v: &Variant, lr: f64, seed: u64) -> Vec<String> {
    let mut set = cfg.set.clone();
    set.extend(v.set.iter().cloned());
    let encoder = match v.crystal_encoder {
        CrystalEncoderKind::Potnet => "potnet",
        CrystalEncoderKind::Cgcnn => "cgcnn",
    };
    set.push(format!("model.encoders.crystal_encoder=\"{encoder}\""));
    set.push(format!("optim.lr={lr:e}"));
    set.push(format!("run.seed={seed}"));
    set
}

/// A variant's checkpoint as a `step-*.json`: a pre-training run or `checkpoints/` directory
/// means its newest complete checkpoint now, so every run of the variant (and its id) uses the
/// same weights even if the pre-training writes more checkpoints later.
fn resolve_variant_checkpoint(v: &Variant) -> Result<Option<PathBuf>> {
    match &v.checkpoint {
        Some(p) if p.is_dir() => {
            let c = crate::eval::checkpoint_model::resolve_checkpoint(p).with_context(|| format!("variant {:?}", v.name))?;
            Ok(Some(c.json_path))
        }
        other => Ok(other.clone()),
    }
}

/// What `multimat sweep --check` found: every run's configuration is valid (else an error), and
/// these variants' checkpoints do not exist yet (the pre-training has still to run).
#[derive(Debug)]
pub struct CheckReport {
    pub runs: usize,
    pub missing_checkpoints: Vec<(String, PathBuf)>,
}

/// Validate every run's configuration without running anything and without needing the
/// checkpoints or this machine's memory (a sweep written for GPU nodes checks on a login node).
pub fn check(cfg: &SweepConfig) -> Result<CheckReport> {
    let mut runs = 0;
    let mut missing_checkpoints = Vec::new();
    for v in &cfg.variants {
        if let Some(p) = &v.checkpoint {
            if !p.exists() {
                missing_checkpoints.push((v.name.clone(), p.clone()));
            }
        }
        for &lr in &cfg.lrs {
            for &seed in &cfg.seeds {
                FinetuneConfig::load_settings(&cfg.base, &run_overrides(cfg, v, lr, seed))
                    .with_context(|| format!("variant {:?}, lr {lr:e}, seed {seed}", v.name))?;
                runs += 1;
            }
        }
    }
    Ok(CheckReport { runs, missing_checkpoints })
}

/// Expand the grid into runs sorted by id.
pub fn plan(cfg: &SweepConfig) -> Result<Plan> {
    let mut runs = Vec::new();
    for (vi, v) in cfg.variants.iter().enumerate() {
        let checkpoint = resolve_variant_checkpoint(v)?;
        for &lr in &cfg.lrs {
            for &seed in &cfg.seeds {
                let set = run_overrides(cfg, v, lr, seed);
                let mut c = FinetuneConfig::load(&cfg.base, &set).with_context(|| format!("variant {:?}, lr {lr:e}, seed {seed}", v.name))?;
                c.model.checkpoint = checkpoint.clone();
                let id = run_id(&v.name, &c).with_context(|| format!("variant {:?}", v.name))?;
                let dir = cfg.out_dir.join("runs").join(&id);
                c.run.out_dir = dir.clone();
                runs.push(PlannedRun { id, variant: vi, variant_name: v.name.clone(), lr, seed, dir, config: c });
            }
        }
    }
    runs.sort_by(|a, b| a.id.cmp(&b.id));
    if let Some(w) = runs.windows(2).find(|w| w[0].id == w[1].id) {
        bail!("two runs resolve to the same settings (id {}): {:?} and {:?}", w[0].id, w[0].variant_name, w[1].variant_name);
    }
    Ok(Plan { config: cfg.clone(), runs })
}

/// Indices of the runs that array task `task_id` of `num_tasks` owns (round-robin over the sorted
/// plan).
pub fn task_share(n_runs: usize, task_id: usize, num_tasks: usize) -> Vec<usize> {
    (0..n_runs).filter(|k| k % num_tasks == task_id).collect()
}

/// How this process executes its runs (not part of any run's settings, so not in run ids).
#[derive(Clone, Debug, Default)]
pub struct ExecOptions {
    /// One line per epoch of every run on stderr.
    pub verbose: bool,
    /// Where every fine-tuning run trains (`cpu`, `cuda:N`, `cuda-sim`).
    pub device: Device,
    /// Raised by SIGUSR1/SIGTERM: the running run saves its state and no further run starts.
    pub stop: StopSignal,
}

/// What happened to the runs this process executed.
#[derive(Debug, Default)]
pub struct ExecSummary {
    pub ran: usize,
    pub skipped: usize,
    pub failed: Vec<(String, String)>, // (id, error)
    /// A signal stopped this process: the running run (if any) saved its state and no further
    /// run was started.
    pub stopped: bool,
}

/// Run one planned run unless it is complete; failures are recorded in `<dir>/error.txt` and
/// returned, so the rest of the sweep goes on. Once the stop flag is up no run starts, and a run
/// that stopped for it (state saved in `<dir>/resume/`) is neither a failure nor complete.
fn execute_one(r: &PlannedRun, opts: &ExecOptions, summary: &mut ExecSummary, who: &str) {
    if r.is_complete() {
        summary.skipped += 1;
        return;
    }
    if opts.stop.raised() {
        summary.stopped = true;
        return;
    }
    let desc = format!("{} lr {:e} seed {}", r.variant_name, r.lr, r.seed);
    eprintln!("[sweep{who}] run {} ({desc}) on {}", r.id, opts.device);
    let outcome = (|| -> Result<finetune::FinetuneResult> {
        std::fs::create_dir_all(&r.dir)?;
        let info = serde_json::json!({"id": r.id, "variant": r.variant_name, "lr": r.lr, "seed": r.seed, "device": opts.device.to_string()});
        crate::atomic::write_bytes(&r.dir.join("run.json"), serde_json::to_string_pretty(&info)?.as_bytes())?;
        let _ = std::fs::remove_file(r.dir.join("error.txt"));
        let run_opts = finetune::RunOptions {
            progress: false,
            force: false,
            verbose: opts.verbose,
            device: opts.device,
            resume: true,
            stop: opts.stop.clone(),
        };
        finetune::run(&r.config, &run_opts)
    })();
    match outcome {
        Ok(res) => {
            summary.ran += 1;
            eprintln!(
                "[sweep{who}] done {} ({desc}): best epoch {}, val MAE {:.4}, test MAE {:.4} {}",
                r.id, res.best_epoch, res.val_mae, res.test_mae, res.units
            );
        }
        Err(e) => match e.downcast_ref::<finetune::Preempted>() {
            Some(p) => {
                eprintln!("[sweep{who}] stopped {} ({desc}): {p}", r.id);
                summary.stopped = true;
            }
            None => {
                let msg = format!("{e:#}");
                eprintln!("[sweep{who}] FAILED {} ({desc}): {msg}", r.id);
                let _ = crate::atomic::write_bytes(&r.dir.join("error.txt"), msg.as_bytes());
                summary.failed.push((r.id.clone(), msg));
            }
        },
    }
}

/// Execute the runs `indices` of `plan` in this process, in order, until a signal stops it.
pub fn execute_static(plan: &Plan, indices: &[usize], opts: &ExecOptions) -> ExecSummary {
    let mut s = ExecSummary::default();
    for &k in indices {
        execute_one(&plan.runs[k], opts, &mut s, "");
        if s.stopped {
            break;
        }
    }
    s
}

/// Execute the whole plan over the job's ranks, handing out runs dynamically: rank 0 answers
/// "next?" requests with the next pending index (or −1 when none are left). Runs already complete
/// are never handed out. A single process runs everything itself. Returns this rank's summary.
///
/// A stopped rank (signal) says so in its request ([`REQUEST_STOPPING`]) and is answered −1;
/// once rank 0 itself is signalled it hands out nothing more, so every rank ends after its
/// current run (srun and mpirun deliver the signal to every rank).
pub fn execute_dynamic(plan: &Plan, dist: &Dist, opts: &ExecOptions) -> Result<ExecSummary> {
    let pending: Vec<usize> = (0..plan.runs.len()).filter(|&k| !plan.runs[k].is_complete()).collect();
    let skipped = plan.runs.len() - pending.len();
    if dist.world_size() == 1 {
        let mut s = execute_static(plan, &pending, opts);
        s.skipped += skipped;
        return Ok(s);
    }
    let who = format!(" rank {}", dist.rank());
    if !dist.is_root() {
        let mut s = ExecSummary::default();
        loop {
            let stopping = s.stopped || opts.stop.raised();
            dist.send_i64(0, if stopping { REQUEST_STOPPING } else { REQUEST_NEXT })?;
            let k = dist.recv_i64(0)?;
            if k < 0 {
                s.stopped |= stopping;
                break;
            }
            execute_one(&plan.runs[k as usize], opts, &mut s, &who);
        }
        return Ok(s);
    }
    // Rank 0: a local worker thread asks over a channel; remote ranks ask over MPI.
    let mut next = pending.into_iter();
    let (ask_tx, ask_rx) = mpsc::channel::<()>();
    let (give_tx, give_rx) = mpsc::channel::<Option<usize>>();
    let summary = std::thread::scope(|scope| -> Result<ExecSummary> {
        let local = scope.spawn(move || {
            let mut s = ExecSummary::default();
            loop {
                if s.stopped || opts.stop.raised() {
                    s.stopped = true;
                    break;
                }
                if ask_tx.send(()).is_err() {
                    break;
                }
                match give_rx.recv() {
                    Ok(Some(k)) => execute_one(&plan.runs[k], opts, &mut s, " rank 0"),
                    _ => break,
                }
            }
            s
        });
        let mut remote_open = dist.world_size() - 1;
        let mut local_open = true;
        while remote_open > 0 || local_open {
            let mut idle = true;
            if let Some(src) = dist.probe_any() {
                idle = false;
                let request = dist.recv_i64(src)?;
                match if request == REQUEST_NEXT && !opts.stop.raised() { next.next() } else { None } {
                    Some(k) => dist.send_i64(src, k as i64)?,
                    None => {
                        dist.send_i64(src, -1)?;
                        remote_open -= 1;
                    }
                }
            }
            if local_open {
                match ask_rx.try_recv() {
                    Ok(()) => {
                        idle = false;
                        let k = if opts.stop.raised() { None } else { next.next() };
                        if k.is_none() {
                            local_open = false;
                        }
                        let _ = give_tx.send(k);
                    }
                    Err(mpsc::TryRecvError::Empty) => {}
                    Err(mpsc::TryRecvError::Disconnected) => local_open = false,
                }
            }
            if idle {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        local.join().map_err(|_| anyhow::anyhow!("sweep worker thread panicked"))
    })?;
    Ok(summary)
}

/// A worker rank's request to rank 0: the next run, please.
const REQUEST_NEXT: i64 = 0;
/// A worker rank's last request: a signal stopped it, hand it nothing more.
const REQUEST_STOPPING: i64 = 1;

/// True when every planned run has its `result.json`.
pub fn all_complete(plan: &Plan) -> bool {
    plan.runs.iter().all(|r| r.is_complete())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_shares_cover_every_run_once() {
        for n in [0usize, 1, 5, 27] {
            for tasks in 1..6 {
                let mut seen = vec![0usize; n];
                for t in 0..tasks {
                    for k in task_share(n, t, tasks) {
                        seen[k] += 1;
                    }
                }
                assert!(seen.iter().all(|&c| c == 1), "n {n}, {tasks} tasks: {seen:?}");
            }
        }
    }
}
