//! Optimiser, learning-rate schedule and gradient clipping.
//!
//! - [`AdamW`]: PyTorch's `torch.optim.AdamW` (decoupled weight decay p ← p·(1 − lr·λ), then the
//!   bias-corrected Adam step), defaults β = (0.9, 0.999), eps = 1e-8, λ = 0.01. Decay applies
//!   to every parameter when `decay_every_param` is set (as `torch.optim.AdamW(model.parameters())`
//!   does, and so the MultiMat reference code), else only to parameters with `decay == true`
//!   (weights: biases and normalisation parameters are excluded). Moments live in the optimiser, one pair per parameter in `visit_params` order,
//!   on the parameter's device, and are checked against the parameter names so a model/optimiser
//!   mismatch is an error.
//! - [`WarmupCosine`]: linear warm-up to the peak, then half-cosine decay to a floor.
//! - [`clip_grad_norm`]: global L2-norm clipping with PyTorch's `clip_grad_norm_` semantics;
//!   [`zero_grads`] clears every gradient.
//!
//! Devices: parameters on the CPU are updated by the loops below (the reference); parameters on
//! a GPU device are updated by ONE launch per device for all of them (`kernels/adamw.cu`, through
//! a cached chunk table), and so are the norm, the clip and the zeroing. The update and the clip
//! are bit-identical on both; the norm's f64 partial sums are added in a different order (a
//! relative difference of ~1e-16). Nothing here reads device memory except the norm's per-block
//! partials (one small download: the norm is a host decision and a logged metric).

use super::backend::{gpu, Gpu};
use super::gpu::adamw::{self as dev, AdamWStep, ParamAddrs, ParamChunks};
use super::gpu::device_ok;
use super::tensor::{Device, Module, Param, Storage, Tensor};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// AdamW hyper-parameters other than the learning rate (which comes from the schedule per step).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Decay every parameter (one parameter group, the reference's choice) instead of only those
    /// with `Param::decay` (weights, not biases or normalisation parameters).
    pub decay_every_param: bool,
}

impl Default for AdamWConfig {
    /// PyTorch's defaults; decay on weights only.
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, decay_every_param: false }
    }
}

/// Which parameters AdamW's weight decay applies to (a config choice of pre-training and
/// fine-tuning).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightDecayGroups {
    /// Every parameter: one group, as the reference code builds its optimiser.
    All,
    /// Weights only: biases and normalisation parameters are not decayed.
    WeightsOnly,
}

impl WeightDecayGroups {
    pub fn decay_every_param(self) -> bool {
        self == WeightDecayGroups::All
    }
}

/// One parameter's moments.
struct Moments {
    name: String,
    exp_avg: Tensor,     // m, same shape as the parameter
    exp_avg_sq: Tensor,  // v
}

pub struct AdamW {
    pub config: AdamWConfig,
    /// Number of steps taken (PyTorch's `state["step"]`; bias corrections use it).
    pub step: u64,
    state: Vec<Moments>,
}

impl AdamW {
    pub fn new(config: AdamWConfig) -> AdamW {
        AdamW { config, step: 0, state: Vec::new() }
    }

    /// Creates zero moments for every parameter of `module` if there are none yet (done by the
    /// first `step`; call it before loading moments from a checkpoint), else checks they match.
    /// Moments are created on (and, if the model moved since, copied to) each parameter's device.
    pub fn init_state(&mut self, module: &mut dyn Module) -> Result<()> {
        let mut problem = None;
        if self.state.is_empty() {
            module.visit_params(&mut |p| {
                let device = p.value.device();
                match (Tensor::zeros_on(&p.value.shape, device), Tensor::zeros_on(&p.value.shape, device)) {
                    (Ok(exp_avg), Ok(exp_avg_sq)) => self.state.push(Moments { name: p.name.clone(), exp_avg, exp_avg_sq }),
                    (Err(e), _) | (_, Err(e)) => {
                        problem.get_or_insert(format!("allocating the moments of {} on {device}: {e:#}", p.name));
                    }
                }
            });
            return match problem {
                Some(p) => bail!("AdamW: {p}"),
                None => Ok(()),
            };
        }
        let mut i = 0;
        module.visit_params(&mut |p| {
            if problem.is_none() {
                match self.state.get_mut(i) {
                    Some(s) if s.name == p.name && s.exp_avg.shape == p.value.shape => {
                        let device = p.value.device();
                        if s.exp_avg.device() != device {
                            match (s.exp_avg.to_device(device), s.exp_avg_sq.to_device(device)) {
                                (Ok(m), Ok(v)) => (s.exp_avg, s.exp_avg_sq) = (m, v),
                                (Err(e), _) | (_, Err(e)) => problem = Some(format!("moving the moments of {} to {device}: {e:#}", p.name)),
                            }
                        }
                    }
                    Some(s) => problem = Some(format!("parameter {i} is {} {:?}, optimiser state has {} {:?}", p.name, p.value.shape, s.name, s.exp_avg.shape)),
                    None => problem = Some(format!("parameter {} has no optimiser state", p.name)),
                }
            }
            i += 1;
        });
        if problem.is_none() && i != self.state.len() {
            problem = Some(format!("model has {i} parameters, optimiser state has {}", self.state.len()));
        }
        match problem {
            Some(p) => bail!("AdamW state does not match the model: {p}"),
            None => Ok(()),
        }
    }

    /// One AdamW update of every parameter of `module` from its accumulated gradient, at `lr`.
    pub fn step(&mut self, module: &mut dyn Module, lr: f64) -> Result<()> {
        self.init_state(module)?;
        self.step += 1;
        let AdamWConfig { beta1, beta2, eps, weight_decay, decay_every_param } = self.config;
        let t = self.step as i32;
        let step_size = lr / (1.0 - beta1.powi(t));
        let bias_correction2_sqrt = (1.0 - beta2.powi(t)).sqrt();
        let (b1, b2) = (beta1 as f32, beta2 as f32);
        let decay_factor = (1.0 - lr * weight_decay) as f32;
        let mut on_devices: Vec<(Device, Vec<ParamAddrs>)> = Vec::new();
        let mut problem = None;
        let mut i = 0;
        module.visit_params(&mut |p| {
            let s = &mut self.state[i];
            i += 1;
            let device = p.value.device();
            if let Some(other) = [&p.grad, &s.exp_avg, &s.exp_avg_sq].iter().map(|t| t.device()).find(|&d| d != device) {
                problem.get_or_insert(format!("parameter {} lives on {device} but its gradient or moments on {other}", p.name));
                return;
            }
            if device.is_gpu() {
                let addrs = ParamAddrs {
                    value: p.value.gpu_vec().ptr(),
                    grad: p.grad.gpu_vec().ptr(),
                    exp_avg: s.exp_avg.gpu_vec().ptr(),
                    exp_avg_sq: s.exp_avg_sq.gpu_vec().ptr(),
                    len: p.value.numel(),
                    decay: p.decay || decay_every_param,
                };
                group_for(&mut on_devices, device).push(addrs);
                return;
            }
            let decay = if p.decay || decay_every_param { decay_factor } else { 1.0 };
            let (value, grad) = (p.value.data_mut(), p.grad.data());
            for (((w, &g), m), v) in value.iter_mut().zip(grad).zip(s.exp_avg.data_mut()).zip(s.exp_avg_sq.data_mut()) {
                *w *= decay;
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                let denom = (*v as f64).sqrt() / bias_correction2_sqrt + eps;
                *w -= (step_size * *m as f64 / denom) as f32;
            }
        });
        if let Some(p) = problem {
            bail!("AdamW: {p}");
        }
        let hyper = AdamWStep { beta1: b1, beta2: b2, decay_factor, step_size, bias_correction2_sqrt, eps };
        for (device, params) in on_devices {
            let g = gpu(device)?;
            let table = ParamChunks::cached(&g, &params)?;
            dev::adamw(&g, &table, &hyper)?;
        }
        Ok(())
    }

    /// Visit the moments as named tensors (`<param>.exp_avg`, `<param>.exp_avg_sq`) for
    /// checkpoints, in parameter order.
    pub fn visit_state(&mut self, f: &mut dyn FnMut(&str, &mut Tensor)) {
        for s in &mut self.state {
            f(&format!("{}.exp_avg", s.name), &mut s.exp_avg);
            f(&format!("{}.exp_avg_sq", s.name), &mut s.exp_avg_sq);
        }
    }
}

/// Linear warm-up from peak/warmup to the peak over `warmup_steps`, then half-cosine decay to
/// `final_lr` at `total_steps` (constant after). Steps count from 0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WarmupCosine {
    pub peak_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub final_lr: f64,
}

impl WarmupCosine {
    /// Learning rate for optimiser step `step` (0-based).
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.peak_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
        self.final_lr + (self.peak_lr - self.final_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// The group of `device` in a per-device list (created on first use; visit order kept).
fn group_for<T>(groups: &mut Vec<(Device, Vec<T>)>, device: Device) -> &mut Vec<T> {
    let k = match groups.iter().position(|(d, _)| *d == device) {
        Some(k) => k,
        None => {
            groups.push((device, Vec::new()));
            groups.len() - 1
        }
    };
    &mut groups[k].1
}

/// Every gradient of `module`: host ones are passed to `cpu` with their parameter index, device
/// ones are returned as one chunk table per device with the indices of its parameters.
fn visit_grads(module: &mut dyn Module, cpu: &mut dyn FnMut(usize, &mut Param)) -> Vec<(Arc<Gpu>, Arc<ParamChunks>, Vec<usize>)> {
    let mut groups: Vec<(Device, Vec<(usize, ParamAddrs)>)> = Vec::new();
    let mut i = 0;
    module.visit_params(&mut |p| {
        match &p.grad.storage {
            Storage::Cpu(_) => cpu(i, p),
            Storage::Gpu(g) => {
                let addrs = ParamAddrs { value: 0, grad: g.ptr(), exp_avg: 0, exp_avg_sq: 0, len: g.len(), decay: false };
                group_for(&mut groups, g.gpu().device).push((i, addrs));
            }
        }
        i += 1;
    });
    groups
        .into_iter()
        .map(|(device, members)| {
            let g = device_ok(gpu(device), "gradient table");
            let addrs: Vec<ParamAddrs> = members.iter().map(|m| m.1).collect();
            let table = device_ok(ParamChunks::cached(&g, &addrs), "gradient table");
            (g, table, members.into_iter().map(|m| m.0).collect())
        })
        .collect()
}

/// Global L2 norm of all gradients of `module` (f64 accumulation: per parameter, then over the
/// parameters in visiting order).
pub fn grad_norm(module: &mut dyn Module) -> f64 {
    let mut sums: Vec<f64> = Vec::new();
    let mut cpu = |i: usize, p: &mut Param| {
        sums.resize(sums.len().max(i + 1), 0.0);
        sums[i] = p.grad.data().iter().map(|&g| g as f64 * g as f64).sum::<f64>();
    };
    let devices = visit_grads(module, &mut cpu);
    for (g, table, members) in devices {
        let per_param = device_ok(dev::grad_sumsq(&g, &table), "grad_norm");
        for (i, s) in members.into_iter().zip(per_param) {
            sums.resize(sums.len().max(i + 1), 0.0);
            sums[i] = s;
        }
    }
    let mut sq = 0.0f64;
    for s in sums {
        sq += s;
    }
    sq.sqrt()
}

/// Scale all gradients so their global norm is at most `max_norm` (coefficient
/// max_norm/(norm + 1e-6), applied only when below 1, as PyTorch). Returns the norm before
/// clipping; a non-finite norm leaves the gradients untouched for the caller to report.
pub fn clip_grad_norm(module: &mut dyn Module, max_norm: f64) -> f64 {
    let norm = grad_norm(module);
    let coef = max_norm / (norm + 1e-6);
    if norm.is_finite() && coef < 1.0 {
        let c = coef as f32;
        for (g, table, _) in visit_grads(module, &mut |_, p| p.grad.data_mut().iter_mut().for_each(|g| *g *= c)) {
            device_ok(dev::grad_scale(&g, &table, c), "clip_grad_norm");
        }
    }
    norm
}

/// Sets every gradient of `module` to zero: host ones in place, device ones with one launch per
/// device (rather than one per parameter, as `Module::zero_grad` does).
pub fn zero_grads(module: &mut dyn Module) {
    for (g, table, _) in visit_grads(module, &mut |_, p| p.grad.fill(0.0)) {
        device_ok(dev::grad_fill(&g, &table, 0.0), "zero_grads");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tensor::Param;

    struct Two {
        w: Param,
        b: Param,
    }
    impl Module for Two {
        fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
            f(&mut self.w);
            f(&mut self.b);
        }
    }

    fn two() -> Two {
        Two {
            w: Param::new("w", Tensor::from_vec(&[2], vec![1.0, -2.0]), true),
            b: Param::new("b", Tensor::from_vec(&[1], vec![0.5]), false),
        }
    }

    #[test]
    fn adamw_two_steps_match_hand_computation() {
        // lr 0.1, λ 0.1, β (0.9, 0.999), eps 1e-8. Gradients: step 1 w:(0.5, −1), b:2;
        // step 2 w:(−0.25, 0.5), b:1.
        // Step 1: m̂ = g, v̂ = g², so the step is lr·sign(g) (to 1e-8):
        //   w0 = 1·(1 − 0.01) − 0.1 = 0.89; w1 = −2·0.99 + 0.1 = −1.88; b = 0.5 − 0.1 = 0.4 (no decay).
        // Step 2 for w0: m = 0.9·0.05 + 0.1·(−0.25) = 0.02, m̂ = 0.02/0.19 = 0.1052632;
        //   v = 0.999·0.00025 + 0.001·0.0625 = 0.00031225, v̂ = v/0.001999 = 0.1562031, √v̂ = 0.3952254;
        //   w0 = 0.89·0.99 − 0.1·0.1052632/0.3952254 = 0.8811 − 0.0266337 = 0.8544663.
        // Likewise w1 = −1.8345663 and b = 0.3067820 (same arithmetic, no decay for b).
        let mut m = two();
        let mut opt = AdamW::new(AdamWConfig { weight_decay: 0.1, ..AdamWConfig::default() });
        m.w.grad.data_mut().copy_from_slice(&[0.5, -1.0]);
        m.b.grad.data_mut().copy_from_slice(&[2.0]);
        opt.step(&mut m, 0.1).unwrap();
        let close = |a: f32, b: f64| (a as f64 - b).abs() < 2e-6;
        assert!(close(m.w.value.data()[0], 0.89) && close(m.w.value.data()[1], -1.88) && close(m.b.value.data()[0], 0.4));
        m.w.grad.data_mut().copy_from_slice(&[-0.25, 0.5]);
        m.b.grad.data_mut().copy_from_slice(&[1.0]);
        opt.step(&mut m, 0.1).unwrap();
        let (w, b) = (m.w.value.data(), m.b.value.data());
        assert!(close(w[0], 0.854_466_3), "w0 {}", w[0]);
        assert!(close(w[1], -1.834_566_3), "w1 {}", w[1]);
        assert!(close(b[0], 0.306_782_0), "b {}", b[0]);
        let mut names = Vec::new();
        opt.visit_state(&mut |n, _| names.push(n.to_string()));
        assert_eq!(names, ["w.exp_avg", "w.exp_avg_sq", "b.exp_avg", "b.exp_avg_sq"]);
    }

    #[test]
    fn decay_every_param_also_decays_biases() {
        // One step with zero gradients moves a parameter only through the decay: w ← w·(1 − lr·λ).
        let factor = (1.0 - 0.1f64 * 0.1) as f32;
        for (every, b_after) in [(false, 0.5f32), (true, 0.5 * factor)] {
            let mut m = two();
            let mut opt = AdamW::new(AdamWConfig { weight_decay: 0.1, decay_every_param: every, ..AdamWConfig::default() });
            opt.step(&mut m, 0.1).unwrap();
            assert_eq!(m.w.value.data(), &[factor, -2.0 * factor], "weights always decay");
            assert_eq!(m.b.value.data(), &[b_after], "bias with decay_every_param = {every}");
        }
    }

    #[test]
    fn adamw_rejects_a_model_that_does_not_match_its_state() {
        let mut opt = AdamW::new(AdamWConfig::default());
        opt.step(&mut two(), 0.1).unwrap();
        let mut other = two();
        other.b.name = "bias".into();
        let err = opt.step(&mut other, 0.1).unwrap_err().to_string();
        assert!(err.contains("bias") && err.contains("does not match"), "{err}");
    }

    #[test]
    fn warmup_cosine_schedule_shape() {
        let s = WarmupCosine { peak_lr: 1e-3, warmup_steps: 10, total_steps: 110, final_lr: 1e-5 };
        assert!((s.lr(0) - 1e-4).abs() < 1e-12);
        assert!((s.lr(9) - 1e-3).abs() < 1e-12 && (s.lr(10) - 1e-3).abs() < 1e-12);
        // Halfway through the decay the cosine factor is ½: final + (peak − final)/2.
        assert!((s.lr(60) - (1e-5 + 0.5 * (1e-3 - 1e-5))).abs() < 1e-12);
        assert!((s.lr(110) - 1e-5).abs() < 1e-15 && (s.lr(10_000) - 1e-5).abs() < 1e-15);
        assert!((1..110).all(|t| t <= 10 || s.lr(t) <= s.lr(t - 1)), "monotone after warm-up");
    }

    #[test]
    fn clipping_scales_to_max_norm_only_when_above() {
        let mut m = two();
        m.w.grad.data_mut().copy_from_slice(&[3.0, 0.0]);
        m.b.grad.data_mut().copy_from_slice(&[4.0]);
        assert!((clip_grad_norm(&mut m, 10.0) - 5.0).abs() < 1e-12);
        assert_eq!(m.w.grad.data(), &[3.0, 0.0], "below the limit: untouched");
        assert!((clip_grad_norm(&mut m, 1.0) - 5.0).abs() < 1e-12);
        assert!((grad_norm(&mut m) - 1.0).abs() < 1e-5);
        m.b.grad.data_mut()[0] = f32::NAN;
        assert!(clip_grad_norm(&mut m, 1.0).is_nan());
    }
}
