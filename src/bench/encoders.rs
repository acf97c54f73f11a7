//! `multimat bench encoders`: pre-training step throughput (materials/s) of each encoder, and of
//! the full four-modality model, on generated batches (`model::synthetic`) in training mode,
//! single process. One step = forward + backward + AdamW update + zero_grad, as in `pretrain`.
//!
//! Reported per workload: median wall time per step (and its forward/backward/optimiser parts),
//! CPU time per step (user + system over all threads, from /proc/self/stat: robust to other load
//! on a shared machine), materials/s by wall time and by CPU time (batch ÷ (CPU-seconds per step
//! ÷ threads): what the threads would reach if never descheduled), and peak RSS.
//!
//! `--dump-dir` writes each workload's exact batch (and the encoder hyper-parameters) as `.npy`
//! files and a `meta.json`, so `benches/encoders_torch.py` times PyTorch on identical sizes —
//! the same graphs, edge lists, sequence lengths and grids, not merely the same batch size.

use crate::model::cgcnn::{Cgcnn, CgcnnConfig};
use crate::model::config::EncodersConfig;
use crate::model::dos_transformer::{DosTransformer, DosTransformerConfig};
use crate::model::potnet::{PotNet, PotNetConfig};
use crate::model::resnext3d::{ResNeXt3d, ResNeXt3dConfig};
use crate::model::synthetic::*;
use crate::model::text_mlp::{TextMlp, TextMlpConfig};
use crate::model::{Encoder, GraphBatch, ModalityBatch, StepContext};
use crate::crystal::features::ATOM_FEATURE_DIM;
use crate::dist::Dist;
use crate::engine::ops::{l2norm, l2norm_grad};
use crate::engine::optim::{AdamW, AdamWConfig};
use crate::engine::{Device, Module, Tensor};
use crate::loss::{LossConfig, LossKind, Modality, ModalityTensor};
use crate::train::model::MultiMatModel;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;
use crate::bench::{process_cpu_seconds, reset_peak_rss};

/// Every workload this bench knows, in the order it runs them.
pub const WORKLOADS: [&str; 7] = ["potnet", "cgcnn", "dos", "text", "resnext_small", "resnext50", "full"];

#[derive(clap::Args, Debug)]
pub struct EncodersBenchArgs {
    /// Batch size of PotNet, CGCNN, the text MLP and the small ResNeXt.
    #[arg(long, default_value_t = 360)]
    pub batch: usize,
    /// Batch size of the DOS Transformer (default: --batch).
    #[arg(long)]
    pub dos_batch: Option<usize>,
    /// Batch size of the full ResNeXt-50 (0 skips it).
    #[arg(long, default_value_t = 16)]
    pub resnext_full_batch: usize,
    /// Batch size of the full model (PotNet + DOS + small ResNeXt + text, AllPairsCLIP); 0 skips it.
    #[arg(long, default_value_t = 0)]
    pub full_batch: usize,
    /// Timed steps after one warm-up step (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Embedding width.
    #[arg(long, default_value_t = 128)]
    pub embed_dim: usize,
    /// Charge-density grid edge.
    #[arg(long, default_value_t = 32)]
    pub grid: usize,
    /// DOS points.
    #[arg(long, default_value_t = 601)]
    pub dos_points: usize,
    /// Comma-separated workloads to run (potnet, cgcnn, dos, text, resnext_small, resnext50, full);
    /// default: all but `full` (which also needs --full-batch).
    #[arg(long)]
    pub only: Option<String>,
    /// Write each workload's batch and hyper-parameters here (`<workload>.*.npy`, `<workload>.meta.json`).
    #[arg(long)]
    pub dump_dir: Option<PathBuf>,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// Also measure this process's sgemm rate (n×n×n through the engine's GEMM) as the
    /// machine-peak yardstick; 0 skips it.
    #[arg(long, default_value_t = 0)]
    pub sgemm: usize,
    #[command(flatten)]
    pub device: crate::cli::device::DeviceArgs,
    /// TF32 tensor-core GEMMs on a CUDA GPU (`on`, as pre-training uses them, or `off`).
    #[arg(long, default_value = "on", value_parser = crate::cli::device::parse_on_off, action = clap::ArgAction::Set)]
    pub tf32: bool,
}



fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n == 0 { f64::NAN } else if n % 2 == 1 { s[n / 2] } else { 0.5 * (s[n / 2 - 1] + s[n / 2]) }
}

/// Timing of one workload.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StepReport {
    pub name: String,
    pub batch: usize,
    pub params: usize,
    pub steps: usize,
    pub threads: usize,
    /// Medians over the timed steps, seconds.
    pub step_s: f64,
    pub forward_s: f64,
    pub backward_s: f64,
    pub optimizer_s: f64,
    /// Mean CPU seconds (all threads) per step; None without /proc.
    pub cpu_step_s: Option<f64>,
    pub materials_per_s: f64,
    /// batch ÷ (CPU seconds per step ÷ threads).
    pub materials_per_cpu_s: Option<f64>,
    pub peak_rss_mib: Option<f64>,
}

/// Phases of one timed step, seconds.
struct Phases {
    forward: f64,
    backward: f64,
    optimizer: f64,
}

/// Runs `step` once to warm up, then `repeats` times; medians, CPU time, peak RSS.
fn time_steps(name: &str, batch: usize, params: usize, repeats: usize, mut step: impl FnMut() -> Result<Phases>) -> Result<StepReport> {
    step().with_context(|| format!("{name}: warm-up step"))?;
    let repeats = repeats.max(1);
    let cpu0 = process_cpu_seconds();
    let mut phases = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        phases.push(step()?);
    }
    let cpu_step_s = cpu0.zip(process_cpu_seconds()).map(|(a, b)| (b - a) / repeats as f64);
    let threads = rayon::current_num_threads();
    let totals: Vec<f64> = phases.iter().map(|p| p.forward + p.backward + p.optimizer).collect();
    let step_s = median(&totals);
    let report = StepReport {
        name: name.to_string(),
        batch,
        params,
        steps: repeats,
        threads,
        step_s,
        forward_s: median(&phases.iter().map(|p| p.forward).collect::<Vec<_>>()),
        backward_s: median(&phases.iter().map(|p| p.backward).collect::<Vec<_>>()),
        optimizer_s: median(&phases.iter().map(|p| p.optimizer).collect::<Vec<_>>()),
        cpu_step_s,
        materials_per_s: batch as f64 / step_s,
        materials_per_cpu_s: cpu_step_s.filter(|&c| c > 0.0).map(|c| batch as f64 / (c / threads as f64)),
        peak_rss_mib: crate::bench::peak_rss_mib(),
    };
    println!(
        "{:<16} B={:<4} fwd {:>7.3} s  bwd {:>7.3} s  adamw {:>6.3} s  step {:>7.3} s  {:>8.1} materials/s  {:>8} materials/CPU-s·thr  {:>6} MiB",
        report.name, batch, report.forward_s, report.backward_s, report.optimizer_s, step_s, report.materials_per_s,
        report.materials_per_cpu_s.map_or("-".into(), |r| format!("{r:.1}")),
        report.peak_rss_mib.map_or("-".into(), |r| format!("{r:.0}")),
    );
    Ok(report)
}

/// PyTorch's AdamW settings of MultiMat pre-training (weight decay 5e-4, lr 1e-4).
fn adamw() -> (AdamW, f64) {
    (AdamW::new(AdamWConfig { weight_decay: 5e-4, ..AdamWConfig::default() }), 1e-4)
}

/// Waits for the device's queued work (GPU launches are asynchronous: a phase ends when its
/// kernels have run, as PyTorch's benchmarks call `torch.cuda.synchronize()`).
fn sync(device: Device) -> Result<()> {
    if device.is_gpu() {
        crate::engine::backend::gpu(device)?.synchronize()?;
    }
    Ok(())
}

/// One encoder's pre-training step on `batch`: forward, backward of mean(y), AdamW, zero_grad.
fn time_encoder(name: &str, enc: &mut dyn Encoder, batch: &ModalityBatch, repeats: usize, device: Device) -> Result<StepReport> {
    let dist = Dist::single();
    let ctx = StepContext { train: true, dist: &dist, comm: None, dropout_seed: 0 };
    let (mut opt, lr) = adamw();
    let params = enc.num_params();
    if device.is_gpu() {
        enc.to_device(device)?;
        opt.init_state(enc)?;
    }
    time_steps(name, batch.len(), params, repeats, || {
        let t0 = Instant::now();
        let y = enc.forward(batch, &ctx)?;
        sync(device)?;
        let t1 = Instant::now();
        // d mean(y) / dy, as PyTorch's `y.mean().backward()`.
        let dy = Tensor::from_vec(&y.shape, vec![1.0 / y.numel() as f32; y.numel()]).to_device(device)?;
        enc.backward(&dy, &ctx)?;
        sync(device)?;
        let t2 = Instant::now();
        opt.step(enc, lr)?;
        crate::engine::optim::zero_grads(enc);
        sync(device)?;
        let t3 = Instant::now();
        Ok(Phases { forward: (t1 - t0).as_secs_f64(), backward: (t2 - t1).as_secs_f64(), optimizer: (t3 - t2).as_secs_f64() })
    })
}

/// The full model's step: the four encoders, L2 normalisation, AllPairsCLIP (τ = 0.2) over all
/// six pairs with every modality present, backward through all of it, AdamW — the training
/// loop's tensor ops, on whatever device the model lives.
fn time_full(model: &mut MultiMatModel, batches: &[ModalityBatch], repeats: usize, device: Device) -> Result<StepReport> {
    let dist = Dist::single();
    let ctx = StepContext { train: true, dist: &dist, comm: None, dropout_seed: 0 };
    let (mut opt, lr) = adamw();
    let b = batches[0].len();
    let params = model.num_params();
    opt.init_state(model)?;
    let present = vec![true; b];
    const EPS: f32 = 1e-12;
    time_steps("full", b, params, repeats, || {
        let t0 = Instant::now();
        let mut ys = Vec::new(); // per modality: (B, D) normalised rows and (B) norms, on `device`
        for (enc, batch) in model.encoders.iter_mut().zip(batches) {
            let z = enc.forward(batch, &ctx)?;
            let (y, norms) = l2norm(&z, EPS);
            ys.push((y, norms));
        }
        let inputs: Vec<ModalityTensor> =
            model.modalities.iter().zip(&ys).map(|(&m, (y, _))| ModalityTensor { modality: m, data: y, present: &present }).collect();
        let out = model.loss.forward_backward_tensors(&inputs, 0..b, true)?;
        if !out.loss.is_finite() {
            bail!("full model: non-finite loss {}", out.loss);
        }
        sync(device)?;
        let t1 = Instant::now();
        for ((enc, (y, norms)), g) in model.encoders.iter_mut().zip(&ys).zip(&out.grads) {
            enc.backward(&l2norm_grad(g, y, norms, EPS), &ctx)?;
        }
        sync(device)?;
        let t2 = Instant::now();
        opt.step(model, lr)?;
        crate::engine::optim::zero_grads(model);
        sync(device)?;
        let t3 = Instant::now();
        Ok(Phases { forward: (t1 - t0).as_secs_f64(), backward: (t2 - t1).as_secs_f64(), optimizer: (t3 - t2).as_secs_f64() })
    })
}

/// GFLOP/s of an n×n×n sgemm through the engine's GEMM: best wall time of 5 after a warm-up,
/// and by CPU time (GFLOP per CPU-second × threads).
fn sgemm_peak(n: usize) -> serde_json::Value {
    use crate::engine::gradcheck::random_vec;
    use crate::engine::ops::matmul::sgemm;
    let (a, b) = (random_vec(n * n, 1, 1.0), random_vec(n * n, 2, 1.0));
    let mut c = vec![0.0f32; n * n]; // (n, n)
    sgemm(&mut c, &a, &b, n, n, n, false, false, 1.0, 0.0);
    let cpu0 = process_cpu_seconds();
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        sgemm(&mut c, &a, &b, n, n, n, false, false, 1.0, 0.0);
        best = best.min(t.elapsed().as_secs_f64());
    }
    let flops = 2.0 * (n as f64).powi(3);
    let threads = rayon::current_num_threads() as f64;
    let cpu = cpu0.zip(process_cpu_seconds()).map(|(a, b)| (b - a) / 5.0).filter(|&c| c > 0.0);
    let v = serde_json::json!({ "n": n, "gflops_wall": flops / best / 1e9, "gflops_cpu_per_thread_x_threads": cpu.map(|c| flops / c * threads / 1e9) });
    println!("sgemm {n}³ (matrixmultiply): {:.1} GFLOP/s wall, {} GFLOP/s by CPU time", flops / best / 1e9,
        cpu.map_or("-".into(), |c| format!("{:.1}", flops / c * threads / 1e9)));
    v
}

/// A `.npy` (format 1.0) file of a C-ordered array; `descr` is numpy's dtype string.
fn npy_bytes(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_str = if shape.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_str}, }}");
    // Magic (6) + version (2) + header length (2) + header + '\n' must be a multiple of 64.
    let pad = (64 - (10 + header.len() + 1) % 64) % 64;
    header.push_str(&" ".repeat(pad));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// Writes `<dir>/<prefix>.<name>.npy` holding f32 values.
fn dump_f32(dir: &Path, prefix: &str, name: &str, shape: &[usize], v: &[f32]) -> Result<()> {
    debug_assert_eq!(shape.iter().product::<usize>(), v.len());
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    crate::atomic::write_bytes(&dir.join(format!("{prefix}.{name}.npy")), &npy_bytes("<f4", shape, &bytes))
}

/// Writes `<dir>/<prefix>.<name>.npy` holding int64 indices (PyTorch's index dtype).
fn dump_index(dir: &Path, prefix: &str, name: &str, v: &[i64]) -> Result<()> {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    crate::atomic::write_bytes(&dir.join(format!("{prefix}.{name}.npy")), &npy_bytes("<i8", &[v.len()], &bytes))
}

fn to_i64(v: &[u32]) -> Vec<i64> {
    v.iter().map(|&x| x as i64).collect()
}

/// Dumps one modality batch under `prefix` (graph batches with their 92-d atom features).
fn dump_batch(dir: &Path, prefix: &str, batch: &ModalityBatch) -> Result<()> {
    match batch {
        ModalityBatch::Crystal(g) => dump_graph(dir, prefix, g),
        ModalityBatch::Dos(d) => {
            dump_f32(dir, prefix, "energies", &[d.batch, d.len], &d.energies)?;
            dump_f32(dir, prefix, "densities", &[d.batch, d.len], &d.densities)
        }
        ModalityBatch::ChargeDensity(c) => {
            let [gd, gh, gw] = c.grid;
            dump_f32(dir, prefix, "values", &[c.batch, gd, gh, gw], &c.values)?;
            dump_f32(dir, prefix, "volumes", &[c.batch], &c.volumes)
        }
        ModalityBatch::Text(t) => dump_f32(dir, prefix, "values", &[t.batch, t.dim], &t.values),
    }
}

fn dump_graph(dir: &Path, prefix: &str, g: &GraphBatch) -> Result<()> {
    // What the default PotNet/CGCNN see: cgcnn-encoded features, the local graph made undirected.
    let x = crate::model::common::batch_atom_features(&g.species, crate::crystal::features::AtomFeatureEncoding::Cgcnn)?; // (N, 92)
    dump_f32(dir, prefix, "atom_features", &[g.species.len(), ATOM_FEATURE_DIM], x.data())?;
    dump_index(dir, prefix, "node_offsets", &to_i64(g.node_offsets.host()))?;
    let (src, dst, distance) = crate::model::potnet::undirected_local_edges(g.local.src.host(), g.local.dst.host(), &g.local.distance);
    let cgcnn = (g.cgcnn.src.host().to_vec(), g.cgcnn.dst.host().to_vec(), g.cgcnn.distance.clone());
    for (name, (src, dst, distance)) in [("local", (src, dst, distance)), ("cgcnn", cgcnn)] {
        dump_index(dir, prefix, &format!("{name}_src"), &to_i64(&src))?;
        dump_index(dir, prefix, &format!("{name}_dst"), &to_i64(&dst))?;
        dump_f32(dir, prefix, &format!("{name}_distance"), &[distance.len()], &distance)?;
    }
    let inf = &g.infinite;
    dump_index(dir, prefix, "infinite_src", &to_i64(inf.src.host()))?;
    dump_index(dir, prefix, "infinite_dst", &to_i64(inf.dst.host()))?;
    for (name, v) in [("coulomb", &inf.coulomb), ("london", &inf.london), ("pauli", &inf.pauli)] {
        dump_f32(dir, prefix, &format!("infinite_{name}"), &[v.len()], v)?;
    }
    Ok(())
}

/// `<dir>/<workload>.meta.json`: batch size, thread count, the encoder configs and which batch
/// files belong to which modality, for the PyTorch side.
fn dump_meta(dir: &Path, workload: &str, batch: usize, embed_dim: usize, modalities: &[(&str, &str)]) -> Result<()> {
    let meta = serde_json::json!({
        "workload": workload,
        "batch": batch,
        "embed_dim": embed_dim,
        "threads": rayon::current_num_threads(),
        "encoders": EncodersConfig::default(),
        "resnext_small": ResNeXt3dConfig::small(),
        "atom_feature_dim": ATOM_FEATURE_DIM,
        "adamw": {"lr": 1e-4, "weight_decay": 5e-4, "betas": [0.9, 0.999], "eps": 1e-8},
        "loss": {"kind": "all_pairs_clip", "temperature": 0.2},
        // modality → file prefix
        "batches": modalities.iter().map(|(m, p)| (m.to_string(), serde_json::Value::from(*p))).collect::<serde_json::Map<_, _>>(),
    });
    crate::atomic::write_bytes(&dir.join(format!("{workload}.meta.json")), serde_json::to_string_pretty(&meta)?.as_bytes())
}

/// Dumps (when asked) a single-encoder workload's batch and meta.
fn dump_workload(a: &EncodersBenchArgs, workload: &str, modality: &str, batch: &ModalityBatch) -> Result<()> {
    if let Some(dir) = &a.dump_dir {
        dump_batch(dir, workload, batch).with_context(|| format!("dumping the {workload} batch to {}", dir.display()))?;
        dump_meta(dir, workload, batch.len(), a.embed_dim, &[(modality, workload)])?;
    }
    Ok(())
}

pub fn run(a: EncodersBenchArgs) -> Result<()> {
    let wanted: Vec<String> = match &a.only {
        Some(list) => list.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
        None => WORKLOADS.iter().filter(|&&w| w != "full").map(|w| w.to_string()).collect(),
    };
    if let Some(bad) = wanted.iter().find(|w| !WORKLOADS.contains(&w.as_str())) {
        bail!("--only: unknown workload {bad:?} (known: {})", WORKLOADS.join(", "));
    }
    let want = |n: &str| wanted.iter().any(|w| w == n);
    let device = a.device.resolve(0)?;
    if device.is_gpu() {
        crate::engine::backend::gpu(device)?.set_tf32(a.tf32);
    }
    println!("pre-training step (forward + backward + AdamW), training mode, on {device}{}, {} threads (rayon); median of {} steps after 1 warm-up",
        if matches!(device, Device::Cuda(_)) { if a.tf32 { " (TF32 GEMMs)" } else { " (f32 GEMMs)" } } else { "" },
        rayon::current_num_threads(), a.repeats.max(1));
    // The allocator setting changes PotNet's CPU step by up to 1.6× at batch 360: say which one ran.
    println!("host memory: {}", crate::engine::host_memory::describe());
    let sgemm = (a.sgemm > 0).then(|| sgemm_peak(a.sgemm));
    let mut reports = Vec::new();
    let needs_graphs = want("potnet") || want("cgcnn");
    let graphs = needs_graphs.then(|| ModalityBatch::Crystal(graph_batch(a.batch, GraphSizes::default(), 1)));
    if let Some(ModalityBatch::Crystal(g)) = &graphs {
        // PotNet's default (the reference's) makes the k-NN graph undirected: say how many edges
        // it really runs on, since its cost scales with them.
        let undirected = crate::model::potnet::undirected_local_edges(g.local.src.host(), g.local.dst.host(), &g.local.distance).0.len();
        println!(
            "crystal batch: {} atoms; PotNet {} local edges ({} k-NN, made undirected) + {} infinite; CGCNN {} edges",
            g.species.len(), undirected, g.local.src.len(), g.infinite.src.len(), g.cgcnn.src.len()
        );
    }
    if want("potnet") {
        let g = graphs.as_ref().unwrap();
        dump_workload(&a, "potnet", "crystal", g)?;
        reports.push(time_encoder("potnet", &mut PotNet::new(&PotNetConfig::default(), a.embed_dim, 0)?, g, a.repeats, device)?);
    }
    if want("cgcnn") {
        let g = graphs.as_ref().unwrap();
        dump_workload(&a, "cgcnn", "crystal", g)?;
        reports.push(time_encoder("cgcnn", &mut Cgcnn::new(&CgcnnConfig::default(), a.embed_dim, 0)?, g, a.repeats, device)?);
    }
    drop(graphs);
    if want("dos") {
        let dos = ModalityBatch::Dos(dos_batch(a.dos_batch.unwrap_or(a.batch), a.dos_points, 2));
        dump_workload(&a, "dos", "dos", &dos)?;
        reset_peak_rss();
        reports.push(time_encoder("dos", &mut DosTransformer::new(&DosTransformerConfig::default(), a.embed_dim, 0)?, &dos, a.repeats, device)?);
    }
    if want("text") {
        let text = ModalityBatch::Text(text_batch(a.batch, 768, 3));
        dump_workload(&a, "text", "text", &text)?;
        reset_peak_rss();
        reports.push(time_encoder("text", &mut TextMlp::new(&TextMlpConfig::default(), a.embed_dim, 0)?, &text, a.repeats, device)?);
    }
    if want("resnext_small") {
        let dens = ModalityBatch::ChargeDensity(density_batch(a.batch, a.grid, 4));
        dump_workload(&a, "resnext_small", "charge_density", &dens)?;
        reset_peak_rss();
        reports.push(time_encoder("resnext_small", &mut ResNeXt3d::new(&ResNeXt3dConfig::small(), a.embed_dim, 0)?, &dens, a.repeats, device)?);
    }
    if want("resnext50") && a.resnext_full_batch > 0 {
        let dens = ModalityBatch::ChargeDensity(density_batch(a.resnext_full_batch, a.grid, 5));
        dump_workload(&a, "resnext50", "charge_density", &dens)?;
        reset_peak_rss();
        reports.push(time_encoder("resnext50", &mut ResNeXt3d::new(&ResNeXt3dConfig::default(), a.embed_dim, 0)?, &dens, a.repeats, device)?);
    }
    if want("full") {
        if a.full_batch == 0 {
            bail!("--only full needs --full-batch > 0");
        }
        let b = a.full_batch;
        let batches = vec![
            ModalityBatch::Crystal(graph_batch(b, GraphSizes::default(), 11)),
            ModalityBatch::Dos(dos_batch(b, a.dos_points, 12)),
            ModalityBatch::ChargeDensity(density_batch(b, a.grid, 13)),
            ModalityBatch::Text(text_batch(b, 768, 14)),
        ];
        let modalities = [Modality::Crystal, Modality::Dos, Modality::ChargeDensity, Modality::Text];
        if let Some(dir) = &a.dump_dir {
            let prefixes = ["full_crystal", "full_dos", "full_charge_density", "full_text"];
            for (batch, p) in batches.iter().zip(prefixes) {
                dump_batch(dir, p, batch)?;
            }
            let pairs: Vec<(&str, &str)> = modalities.iter().map(|m| m.name()).zip(prefixes).collect();
            dump_meta(dir, "full", b, a.embed_dim, &pairs)?;
        }
        let encoders = EncodersConfig { resnext3d: ResNeXt3dConfig::small(), ..EncodersConfig::default() };
        let mut model = MultiMatModel::new(&modalities, &encoders, &LossConfig::new(LossKind::AllPairsClip), a.embed_dim, 0)?;
        if device.is_gpu() {
            model.to_gpu(device, a.tf32)?;
        }
        reset_peak_rss();
        reports.push(time_full(&mut model, &batches, a.repeats, device)?);
    }
    if let Some(path) = &a.json_out {
        let json = serde_json::json!({
            "device": device.to_string(), "threads": rayon::current_num_threads(), "host_memory": crate::engine::host_memory::describe(),
            "sgemm": sgemm, "results": reports,
        });
        crate::atomic::write_bytes(path, serde_json::to_string_pretty(&json)?.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The .npy header is what numpy's format 1.0 reader demands: magic, version, a header
    /// length that makes the data start 64-byte aligned, and the data right after it.
    #[test]
    fn npy_header_is_aligned_and_describes_the_array() {
        let data: Vec<u8> = [1.5f32, -2.0, 3.25, 0.0, 7.0, 8.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        let b = npy_bytes("<f4", &[2, 3], &data);
        assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
        let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0, "data must start 64-byte aligned");
        let header = std::str::from_utf8(&b[10..10 + hlen]).unwrap();
        assert!(header.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"), "{header}");
        assert!(header.ends_with('\n'));
        assert_eq!(&b[10 + hlen..], &data[..]);
        // One-dimensional shapes need numpy's trailing comma.
        let one = npy_bytes("<i8", &[4], &[0u8; 32]);
        let h1 = std::str::from_utf8(&one[10..10 + u16::from_le_bytes([one[8], one[9]]) as usize]).unwrap();
        assert!(h1.contains("'shape': (4,)"), "{h1}");
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn unknown_workload_is_an_error_naming_it() {
        let args = EncodersBenchArgs {
            batch: 2, dos_batch: None, resnext_full_batch: 0, full_batch: 0, repeats: 1, embed_dim: 8, grid: 8,
            dos_points: 4, only: Some("potnett".into()), dump_dir: None, json_out: None, sgemm: 0,
            device: crate::cli::device::DeviceArgs { device: "cpu".into() }, tf32: false,
        };
        let err = run(args).unwrap_err().to_string();
        assert!(err.contains("potnett") && err.contains("potnet"), "{err}");
    }
}
