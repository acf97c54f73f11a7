//! Optimiser, learning-rate schedule and gradient clipping.
//!
//! - [`AdamW`]: PyTorch's `torch.optim.AdamW` (decoupled weight decay p ← p·(1 − lr·λ), then the
//!   bias-corrected Adam step), defaults β = (0.9, 0.999), eps = 1e-8, λ = 0.01. Decay applies
//!   only to parameters with `decay == true` (the reference excludes biases and normalisation
//!   parameters). Moments live in the optimiser, one pair per parameter in `visit_params` order,
//!   and are checked against the parameter names so a model/optimiser mismatch is an error.
//! - [`WarmupCosine`]: linear warm-up to the peak, then half-cosine decay to a floor.
//! - [`clip_grad_norm`]: global L2-norm clipping with PyTorch's `clip_grad_norm_` semantics.

use super::tensor::{Module, Tensor};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// AdamW hyper-parameters other than the learning rate (which comes from the schedule per step).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// PyTorch's defaults.
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
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
    pub fn init_state(&mut self, module: &mut dyn Module) -> Result<()> {
        if self.state.is_empty() {
            module.visit_params(&mut |p| {
                self.state.push(Moments {
                    name: p.name.clone(),
                    exp_avg: Tensor::zeros(&p.value.shape),
                    exp_avg_sq: Tensor::zeros(&p.value.shape),
                })
            });
            return Ok(());
        }
        let mut problem = None;
        let mut i = 0;
        module.visit_params(&mut |p| {
            if problem.is_none() {
                match self.state.get(i) {
                    Some(s) if s.name == p.name && s.exp_avg.shape == p.value.shape => {}
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
        let AdamWConfig { beta1, beta2, eps, weight_decay } = self.config;
        let t = self.step as i32;
        let step_size = lr / (1.0 - beta1.powi(t));
        let bias_correction2_sqrt = (1.0 - beta2.powi(t)).sqrt();
        let (b1, b2) = (beta1 as f32, beta2 as f32);
        let mut i = 0;
        module.visit_params(&mut |p| {
            let s = &mut self.state[i];
            i += 1;
            let decay = if p.decay { (1.0 - lr * weight_decay) as f32 } else { 1.0 };
            let (value, grad) = (p.value.data_mut(), p.grad.data());
            for (((w, &g), m), v) in value.iter_mut().zip(grad).zip(s.exp_avg.data_mut()).zip(s.exp_avg_sq.data_mut()) {
                *w *= decay;
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                let denom = (*v as f64).sqrt() / bias_correction2_sqrt + eps;
                *w -= (step_size * *m as f64 / denom) as f32;
            }
        });
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

/// Global L2 norm of all gradients of `module` (f64 accumulation).
pub fn grad_norm(module: &mut dyn Module) -> f64 {
    let mut sq = 0.0f64;
    module.visit_params(&mut |p| sq += p.grad.data().iter().map(|&g| g as f64 * g as f64).sum::<f64>());
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
        module.visit_params(&mut |p| p.grad.data_mut().iter_mut().for_each(|g| *g *= c));
    }
    norm
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
