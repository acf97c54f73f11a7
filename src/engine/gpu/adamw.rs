//! Launchers of `kernels/adamw.cu`: the AdamW update, the gradient norm's partial sums, gradient
//! clipping and zeroing, each ONE launch over every parameter of a model.
//!
//! Parameters are separate device buffers, so the kernels read a chunk table ([`ParamChunks`]):
//! every parameter is cut into chunks of at most [`ADAMW_CHUNK`] values, one table entry (the
//! addresses of value, gradient and moments, the length, the decay flag) per block. A table is
//! uploaded once and cached per process ([`ParamChunks::cached`]), keyed by its own contents, so
//! a hit is always the right table and a parameter that moved (reloaded, re-created) simply makes
//! a new one. (A flat buffer of all parameters would need every layer to hold views into it; the
//! table leaves the layers' tensors as they are, for one small upload per parameter set.)

use crate::engine::backend::{arg, Gpu, GpuVec, Kernel, LaunchConfig};
use crate::engine::gpu::checks::{compare, Comparison, OpCheck};
use crate::engine::gradcheck::random_vec;
use crate::engine::tensor::{Device, Module, Param, Tensor};
use anyhow::{bail, Result};
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

const fn k(name: &'static str) -> Kernel {
    Kernel { family: "adamw", name }
}

/// Values per block: 16 per thread at [`ADAMW_THREADS`], so a 10 M-parameter model is ~2 500
/// blocks (an H100 holds 132 × 8 of them at once) and each thread's loads stay coalesced.
pub const ADAMW_CHUNK: usize = 4096;
/// Threads per block (a power of two: the norm kernel reduces in a tree).
pub const ADAMW_THREADS: u32 = 256;
/// u32 words per table entry (six 64-bit fields, see `ParamChunk` in the kernel).
const ENTRY_WORDS: usize = 12;

/// One parameter as the kernels see it: device addresses (0 where a table does not use the
/// buffer), its length and whether weight decay applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamAddrs {
    pub value: u64,
    pub grad: u64,
    pub exp_avg: u64,
    pub exp_avg_sq: u64,
    pub len: usize,
    pub decay: bool,
}

/// A chunk table on the device: `entries` blocks; parameter `p` owns entries `ranges[p]`.
pub struct ParamChunks {
    table: GpuVec<u32>,
    entries: usize,
    pub ranges: Vec<Range<usize>>,
    key: Vec<ParamAddrs>,
}

impl ParamChunks {
    /// Cuts every parameter into chunks and uploads the table.
    pub fn build(g: &Arc<Gpu>, params: &[ParamAddrs]) -> Result<ParamChunks> {
        let mut words: Vec<u32> = Vec::new();
        let mut ranges = Vec::with_capacity(params.len());
        let mut entries = 0;
        for p in params {
            let start = entries;
            for off in (0..p.len).step_by(ADAMW_CHUNK) {
                let len = ADAMW_CHUNK.min(p.len - off);
                let at = |base: u64| if base == 0 { 0 } else { base + 4 * off as u64 };
                for v in [at(p.value), at(p.grad), at(p.exp_avg), at(p.exp_avg_sq), len as u64, p.decay as u64] {
                    words.extend_from_slice(&[v as u32, (v >> 32) as u32]);
                }
                entries += 1;
            }
            ranges.push(start..entries);
        }
        debug_assert_eq!(words.len(), entries * ENTRY_WORDS);
        if entries > i32::MAX as usize {
            bail!("{entries} parameter chunks exceed one CUDA grid");
        }
        // An empty table still needs a buffer to point at; no kernel is launched for it.
        let table = g.upload(if words.is_empty() { &[0u32] } else { &words })?;
        Ok(ParamChunks { table, entries, ranges, key: params.to_vec() })
    }

    /// The table for `params`, from the process-wide cache when the same parameter set was seen
    /// recently (the AdamW table and the gradient-only table of a model alternate every step).
    pub fn cached(g: &Arc<Gpu>, params: &[ParamAddrs]) -> Result<Arc<ParamChunks>> {
        /// Tables kept per process: a model's AdamW and gradient tables, with room for a second
        /// model (fine-tuning beside a pre-trained encoder, tests).
        const KEEP: usize = 4;
        static CACHE: OnceLock<Mutex<Vec<(Device, Arc<ParamChunks>)>>> = OnceLock::new();
        let mut cache = CACHE.get_or_init(Default::default).lock().unwrap();
        if let Some(pos) = cache.iter().position(|(d, t)| *d == g.device && t.key == params) {
            let hit = cache.remove(pos);
            cache.push(hit.clone());
            return Ok(hit.1);
        }
        let t = Arc::new(ParamChunks::build(g, params)?);
        if cache.len() >= KEEP {
            cache.remove(0);
        }
        cache.push((g.device, t.clone()));
        Ok(t)
    }

    fn cfg(&self) -> LaunchConfig {
        LaunchConfig { grid: [self.entries as u32, 1, 1], block: [ADAMW_THREADS, 1, 1], shared_bytes: 0 }
    }
}

/// AdamW hyper-parameters of one step, already in the precisions the reference uses.
#[derive(Clone, Copy, Debug)]
pub struct AdamWStep {
    pub beta1: f32,
    pub beta2: f32,
    /// 1 − lr·λ rounded to f32.
    pub decay_factor: f32,
    /// lr / (1 − β1ᵗ)
    pub step_size: f64,
    /// √(1 − β2ᵗ)
    pub bias_correction2_sqrt: f64,
    pub eps: f64,
}

/// One AdamW update of every parameter in `chunks` (value, gradient and both moments).
pub fn adamw(g: &Gpu, chunks: &ParamChunks, s: &AdamWStep) -> Result<()> {
    if chunks.entries == 0 {
        return Ok(());
    }
    let table = chunks.table.ptr();
    // (1 − β) in f32, as the reference computes `1.0 - b1` on f32 values.
    let (omb1, omb2) = (1.0f32 - s.beta1, 1.0f32 - s.beta2);
    g.launch(
        k("adamw_f32"),
        chunks.cfg(),
        &mut [
            arg(&table), arg(&s.beta1), arg(&s.beta2), arg(&omb1), arg(&omb2), arg(&s.decay_factor),
            arg(&s.step_size), arg(&s.bias_correction2_sqrt), arg(&s.eps),
        ],
    )
}

/// Σ g² of every parameter in `chunks`, one f64 per parameter (its chunks' partials added in
/// order on the host: the fixed-order final sum).
pub fn grad_sumsq(g: &Arc<Gpu>, chunks: &ParamChunks) -> Result<Vec<f64>> {
    if chunks.entries == 0 {
        return Ok(vec![0.0; chunks.ranges.len()]);
    }
    let partials = g.uninit::<u32>(2 * chunks.entries)?;
    let (table, out) = (chunks.table.ptr(), partials.ptr());
    g.launch(k("grad_sumsq_f32"), chunks.cfg(), &mut [arg(&table), arg(&out)])?;
    let words = g.download(&partials)?;
    let part: Vec<f64> = words.chunks_exact(2).map(|w| f64::from_bits(w[0] as u64 | (w[1] as u64) << 32)).collect();
    Ok(chunks.ranges.iter().map(|r| part[r.clone()].iter().sum()).collect())
}

/// g *= coef for every gradient in `chunks`.
pub fn grad_scale(g: &Gpu, chunks: &ParamChunks, coef: f32) -> Result<()> {
    if chunks.entries == 0 {
        return Ok(());
    }
    let table = chunks.table.ptr();
    g.launch(k("grad_scale_f32"), chunks.cfg(), &mut [arg(&table), arg(&coef)])
}

/// g = value for every gradient in `chunks`.
pub fn grad_fill(g: &Gpu, chunks: &ParamChunks, value: f32) -> Result<()> {
    if chunks.entries == 0 {
        return Ok(());
    }
    let table = chunks.table.ptr();
    g.launch(k("grad_fill_f32"), chunks.cfg(), &mut [arg(&table), arg(&value)])
}

// ---------------------------------------------------------------------------------------------
// Checks: the optimiser on a device against the CPU optimiser on the same parameters.

/// Parameters of awkward sizes: one spanning three chunks with a ragged tail, a bias (no decay),
/// a scalar and an empty one.
struct CheckModel {
    params: Vec<Param>,
}

impl Module for CheckModel {
    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        self.params.iter_mut().for_each(f);
    }
}

fn check_model(device: Device) -> Result<CheckModel> {
    let shapes: [(&str, Vec<usize>, bool); 4] =
        [("w", vec![3, ADAMW_CHUNK - 5], true), ("b", vec![37], false), ("s", vec![1], true), ("e", vec![0], true)];
    let mut params = Vec::new();
    for (i, (name, shape, decay)) in shapes.into_iter().enumerate() {
        let n = shape.iter().product();
        let mut p = Param::new(name, Tensor::from_vec(&shape, random_vec(n, 40 + i as u64, 1.0)), decay);
        p.value = p.value.to_device(device)?;
        p.grad = Tensor::zeros_on(&shape, device)?;
        params.push(p);
    }
    Ok(CheckModel { params })
}

fn set_grads(m: &mut CheckModel, seed: u64, scale: f32) -> Result<()> {
    for (i, p) in m.params.iter_mut().enumerate() {
        let n = p.value.numel();
        p.grad = Tensor::from_vec(&p.value.shape, random_vec(n, seed + i as u64, scale)).to_device(p.value.device())?;
    }
    Ok(())
}

fn check_adamw(d: Device) -> Result<Comparison> {
    use crate::engine::optim::{clip_grad_norm, grad_norm, zero_grads, AdamW, AdamWConfig};
    let (mut cpu, mut dev) = (check_model(Device::Cpu)?, check_model(d)?);
    let cfg = AdamWConfig { weight_decay: 0.1, ..AdamWConfig::default() };
    let (mut opt_cpu, mut opt_dev) = (AdamW::new(cfg.clone()), AdamW::new(cfg));
    for step in 0..3u64 {
        // Steps 0 and 2 clip (norm ≈ 30 > 1), step 1 does not (norm ≈ 0.06); step 2 then zeroes
        // the gradients (an update with g = 0 still moves w through the moments).
        let scale = if step == 1 { 1e-3 } else { 0.5 };
        set_grads(&mut cpu, 100 * step, scale)?;
        set_grads(&mut dev, 100 * step, scale)?;
        let (nc, nd) = (clip_grad_norm(&mut cpu, 1.0), clip_grad_norm(&mut dev, 1.0));
        // The norm sums in a different order (per-block f64 partials): f64 rounding only.
        if (nc - nd).abs() > 1e-12 * nc.max(1.0) {
            bail!("gradient norm {nd} on {d}, {nc} on the CPU");
        }
        if step == 2 {
            zero_grads(&mut dev);
            if grad_norm(&mut dev) != 0.0 {
                bail!("zero_grads left a non-zero gradient on {d}");
            }
            zero_grads(&mut cpu);
        }
        opt_cpu.step(&mut cpu, 1e-2)?;
        opt_dev.step(&mut dev, 1e-2)?;
    }
    let mut pairs: Vec<(String, Tensor, Tensor)> = Vec::new();
    for (pc, pd) in cpu.params.iter().zip(&dev.params) {
        pairs.push((format!("{}.value", pc.name), pd.value.clone(), pc.value.clone()));
    }
    let (mut sc, mut sd) = (Vec::new(), Vec::new());
    opt_cpu.visit_state(&mut |n, t| sc.push((n.to_string(), t.clone())));
    opt_dev.visit_state(&mut |_, t| sd.push(t.clone()));
    for ((n, c), dv) in sc.into_iter().zip(sd) {
        if dv.device() != d {
            bail!("moment {n} lives on {}, its parameter on {d}", dv.device());
        }
        pairs.push((n, dv, c));
    }
    let refs: Vec<(&str, &Tensor, &Tensor)> = pairs.iter().map(|(n, a, b)| (n.as_str(), a, b)).collect();
    // Exact: the update and the clip are per-element maps computed in the reference's precisions
    // and order (no FMA contraction), and the clip coefficient agrees because the norms do to
    // 1e-12 and the coefficient is rounded to f32.
    compare(&refs, 0.0, 0.0)
}

/// The checks of `kernels/adamw.cu`.
pub fn checks() -> Vec<OpCheck> {
    vec![OpCheck {
        name: "AdamW + grad norm/clip + zero_grads (fused, all parameters)",
        kernels: &["adamw_f32", "grad_sumsq_f32", "grad_scale_f32", "grad_fill_f32"],
        run: check_adamw,
    }]
}
