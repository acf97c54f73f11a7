//! Contrastive temperatures, fixed or learnable, parameterised OpenCLIP-style as a raw
//! log-scale: logit_scale = exp(clamp(raw, ln min_scale, ln max_scale)), τ = 1/logit_scale.
//!
//! The clamp is applied in the forward pass (so the value used is always in range) and, for the
//! stored parameter, by `clamp_in_place` after each optimiser step (as OpenCLIP does with
//! `logit_scale.clamp_(0, ln 100)`). The gradient w.r.t. raw is d loss/d scale · scale inside
//! the range (bounds included, as torch.clamp) and 0 outside it. A fixed temperature is the same
//! object with `learnable = false`: it never accumulates a gradient and is not a parameter.
//!
//! The raw log-scale may live on a GPU device (a learnable temperature moves with the model's
//! parameters): the device losses then read it there (`raw_on`), its gradient is accumulated and
//! its clamp applied by kernels, and only `raw`/`logit_scale` (logging, the host losses) copy the
//! one value to the host.

use anyhow::{bail, Result};

use crate::engine::gpu::{self, device_ok};
use crate::engine::{Device, Param, Storage, Tensor};

#[derive(Clone, Debug)]
pub struct Temperature {
    /// The raw log-scale, shape [1]; named "loss.logit_scale_raw.<modalities>" in checkpoints.
    pub param: Param,
    pub learnable: bool,
    pub min_raw: f32,
    pub max_raw: f32,
}

impl Temperature {
    /// `tau` is the initial (or fixed) temperature; the logit scale 1/τ must lie within
    /// [min_scale, max_scale].
    pub fn new(name: &str, tau: f32, learnable: bool, min_scale: f32, max_scale: f32) -> Result<Temperature> {
        if !(min_scale > 0.0 && max_scale >= min_scale && max_scale.is_finite()) {
            bail!("loss: logit scale range [{min_scale}, {max_scale}] is not a positive, finite range");
        }
        if !(tau > 0.0 && tau.is_finite()) {
            bail!("loss: temperature must be positive and finite, got {tau}");
        }
        let scale = 1.0 / tau;
        // Small slack so that τ = 0.01 with max scale 100 is accepted despite rounding.
        if scale < min_scale * (1.0 - 1e-6) || scale > max_scale * (1.0 + 1e-6) {
            bail!(
                "loss: temperature {tau} gives logit scale {scale}, outside the allowed [{min_scale}, {max_scale}] \
                 (τ ∈ [{}, {}])",
                1.0 / max_scale,
                1.0 / min_scale
            );
        }
        let raw = scale.ln();
        let param = Param::new(
            format!("loss.logit_scale_raw.{name}"),
            Tensor::from_vec(&[1], vec![raw]),
            false,
        );
        Ok(Temperature {
            param,
            learnable,
            min_raw: min_scale.ln(),
            max_raw: max_scale.ln(),
        })
    }

    /// A fixed temperature with the default [1, 100] scale range (tests, simple callers).
    pub fn fixed(tau: f32) -> Result<Temperature> {
        Temperature::new("fixed", tau, false, 1.0, 100.0)
    }

    /// The raw log-scale on the host (one value copied back when it lives on a device).
    pub fn raw(&self) -> f32 {
        match &self.param.value.storage {
            Storage::Cpu(v) => v[0],
            Storage::Gpu(_) => device_ok(self.param.value.to_host(), "temperature")[0],
        }
    }

    /// The raw log-scale as a [1] tensor on `device`: the parameter itself when it lives there,
    /// else a copy (a fixed temperature stays on the host and is uploaded per use: 4 bytes).
    pub fn raw_on(&self, device: Device) -> Result<std::borrow::Cow<'_, Tensor>> {
        if self.param.value.device() == device {
            Ok(std::borrow::Cow::Borrowed(&self.param.value))
        } else {
            Ok(std::borrow::Cow::Owned(self.param.value.to_device(device)?))
        }
    }

    /// exp(clamp(raw)) — the factor multiplying cosine similarities.
    pub fn logit_scale(&self) -> f32 {
        self.raw().clamp(self.min_raw, self.max_raw).exp()
    }

    /// Chain rule through exp and the clamp: grad(raw) += d loss/d scale · scale (0 outside the
    /// clamp, and nothing at all for a fixed temperature).
    pub fn accumulate_scale_grad(&mut self, dscale: f64) {
        if !self.learnable {
            return;
        }
        if let Storage::Gpu(_) = &self.param.grad.storage {
            // The same rule, applied by a kernel that reads raw on the device.
            let device = self.param.grad.device();
            let raw = device_ok(self.raw_on(device), "temperature gradient").into_owned();
            let (lo, hi) = (self.min_raw, self.max_raw);
            if let Storage::Gpu(g) = &mut self.param.grad.storage {
                let dev = g.gpu().clone();
                device_ok(gpu::infonce::temperature_grad(&dev, g, raw.gpu_vec(), dscale, lo, hi), "temperature gradient");
            }
            return;
        }
        let raw = self.raw();
        if raw >= self.min_raw && raw <= self.max_raw {
            let g = dscale * self.logit_scale() as f64;
            self.param.grad.data_mut()[0] += g as f32;
        }
    }

    pub fn clamp_in_place(&mut self) {
        let (lo, hi) = (self.min_raw, self.max_raw);
        match &mut self.param.value.storage {
            Storage::Cpu(v) => v[0] = v[0].clamp(lo, hi),
            Storage::Gpu(v) => {
                let dev = v.gpu().clone();
                device_ok(gpu::infonce::clamp_log_scale(&dev, v, lo, hi), "temperature clamp")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_is_inverse_temperature_and_clamped() {
        let mut t = Temperature::new("x", 0.2, true, 1.0, 100.0).unwrap();
        assert!((t.logit_scale() - 5.0).abs() < 1e-5);
        t.param.value.data_mut()[0] = 10.0; // far past ln 100
        assert!((t.logit_scale() - 100.0).abs() < 1e-3);
        t.accumulate_scale_grad(1.0);
        assert_eq!(t.param.grad.data()[0], 0.0, "no gradient through an active clamp");
        t.clamp_in_place();
        assert!((t.raw() - 100f32.ln()).abs() < 1e-6);
        assert!(Temperature::new("x", 0.001, false, 1.0, 100.0).is_err());
        assert!(Temperature::new("x", -1.0, false, 1.0, 100.0).is_err());
    }

    #[test]
    fn raw_gradient_is_chain_rule_through_exp() {
        let mut t = Temperature::new("x", 0.5, true, 1.0, 100.0).unwrap();
        t.accumulate_scale_grad(3.0);
        // d/draw f(exp(raw)) = f'(scale)·scale = 3·2.
        assert!((t.param.grad.data()[0] - 6.0).abs() < 1e-5);
        let mut fixed = Temperature::fixed(0.5).unwrap();
        fixed.accumulate_scale_grad(3.0);
        assert_eq!(fixed.param.grad.data()[0], 0.0);
    }
}
