//! `BatchNorm` for (N, C) and (N, C, spatial…) inputs — BatchNorm1d and BatchNorm3d alike, with
//! channels on dimension 1 and statistics over every other dimension. PyTorch semantics: weight 1,
//! bias 0, running mean 0, running var 1, momentum 0.1, eps 1e-5; training uses batch statistics
//! and updates the running ones (unbiased variance); evaluation uses the running ones. Weight and
//! bias do not decay under AdamW. The running statistics are buffers (`visit_buffers`).
//!
//! SyncBN: `forward_synced` / `backward_synced` take an all-reduce (sum in place across ranks) and
//! apply it to the per-channel sums, so every rank normalises with the global batch statistics;
//! `forward` / `backward` are the same with no reduction. Backward accumulates dweight, dbias.

use super::{no_cuda_kernel, saved};
use crate::engine::ops::batchnorm::*;
use crate::engine::tensor::{Device, Module, Param, Tensor};
use anyhow::{bail, Result};

struct Saved {
    input: Tensor,   // (N, C, S)
    mean: Vec<f32>,  // (C) batch mean in training, running mean in evaluation
    rstd: Vec<f32>,  // (C)
    count: usize,    // global elements per channel (training)
    training: bool,
}

pub struct BatchNorm {
    pub weight: Param,         // (C)
    pub bias: Param,           // (C)
    pub running_mean: Tensor,  // (C)
    pub running_var: Tensor,   // (C)
    pub eps: f32,
    pub momentum: f32,
    pub training: bool,
    running_mean_name: String,
    running_var_name: String,
    saved: Option<Saved>,
}

impl BatchNorm {
    pub fn new(name: &str, channels: usize) -> BatchNorm {
        BatchNorm {
            weight: Param::new(format!("{name}.weight"), Tensor::from_vec(&[channels], vec![1.0; channels]), false),
            bias: Param::new(format!("{name}.bias"), Tensor::zeros(&[channels]), false),
            running_mean: Tensor::zeros(&[channels]),
            running_var: Tensor::from_vec(&[channels], vec![1.0; channels]),
            eps: 1e-5,
            momentum: 0.1,
            training: true,
            running_mean_name: format!("{name}.running_mean"),
            running_var_name: format!("{name}.running_var"),
            saved: None,
        }
    }

    pub fn channels(&self) -> usize {
        self.weight.value.numel()
    }

    /// (N, C, S) view of an input shape.
    fn dims(&self, shape: &[usize]) -> Result<(usize, usize, usize)> {
        let c = self.channels();
        if shape.len() < 2 || shape[1] != c {
            bail!("{}: input {shape:?} must be (N, {c}) or (N, {c}, …)", self.weight.name);
        }
        Ok((shape[0], c, shape[2..].iter().product()))
    }

    /// Single-process forward.
    pub fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        self.forward_synced(x, &mut |_| {})
    }

    /// Forward with `allreduce` summing, in place across ranks, a vector [Σx (C), Σx² (C), count].
    /// In training every rank must call it (and `backward_synced`), even with an empty local batch.
    pub fn forward_synced(&mut self, x: &Tensor, allreduce: &mut dyn FnMut(&mut [f64])) -> Result<Tensor> {
        let (n, c, s) = self.dims(&x.shape)?;
        let mut out = Tensor::zeros(&x.shape);
        let (mut mean, mut rstd) = (vec![0.0f32; c], vec![0.0f32; c]);
        let mut count = n * s;
        match x.device() {
            Device::Cpu => {
                if self.training {
                    let mut sums = vec![0.0f64; 2 * c + 1];
                    batchnorm_local_sums(&mut sums[..2 * c], x.data(), n, c, s);
                    sums[2 * c] = count as f64;
                    allreduce(&mut sums);
                    count = sums[2 * c].round() as usize;
                    if count < 2 {
                        bail!("{}: training needs more than one value per channel, got input {:?} (global count {count})", self.weight.name, x.shape);
                    }
                    let mut var = vec![0.0f32; c];
                    batchnorm_stats_from_sums(&mut mean, &mut rstd, &mut var, &sums[..2 * c], count, self.eps);
                    batchnorm_update_running(self.running_mean.data_mut(), self.running_var.data_mut(), &mean, &var, count, self.momentum);
                } else {
                    mean.copy_from_slice(self.running_mean.data());
                    batchnorm_eval_rstd(&mut rstd, self.running_var.data(), self.eps);
                }
                batchnorm_normalize(out.data_mut(), x.data(), self.weight.value.data(), self.bias.value.data(), &mean, &rstd, n, c, s);
            }
            Device::Cuda(_) | Device::CudaSim => no_cuda_kernel("BatchNorm"),
        }
        self.saved = Some(Saved { input: x.clone(), mean, rstd, count, training: self.training });
        Ok(out)
    }

    /// Single-process backward.
    pub fn backward(&mut self, dout: &Tensor) -> Tensor {
        self.backward_synced(dout, &mut |_| {})
    }

    /// Backward with `allreduce` summing [Σdy (C), Σdy·x̂ (C)] across ranks (training mode only).
    pub fn backward_synced(&mut self, dout: &Tensor, allreduce: &mut dyn FnMut(&mut [f64])) -> Tensor {
        let sv = saved(&mut self.saved, &self.weight.name);
        let (n, c, s) = self.dims(&sv.input.shape).expect("shape checked in forward");
        assert_eq!(dout.shape, sv.input.shape, "{}: dout shape differs from the input's", self.weight.name);
        let mut dx = Tensor::zeros(&dout.shape);
        let (w, dw, db) = (self.weight.value.data(), self.weight.grad.data_mut(), self.bias.grad.data_mut());
        match dout.device() {
            Device::Cpu if sv.training => {
                let mut local = vec![0.0f64; 2 * c];
                batchnorm_backward_local_sums(&mut local, dout.data(), sv.input.data(), &sv.mean, &sv.rstd, n, c, s);
                let mut global = local.clone();
                allreduce(&mut global);
                batchnorm_backward_apply(
                    dx.data_mut(), dw, db, dout.data(), sv.input.data(), w, &sv.mean, &sv.rstd, &local, &global, sv.count, n, c, s,
                );
            }
            Device::Cpu => batchnorm_backward_eval(dx.data_mut(), dw, db, dout.data(), sv.input.data(), w, &sv.mean, &sv.rstd, n, c, s),
            Device::Cuda(_) | Device::CudaSim => no_cuda_kernel("BatchNorm"),
        }
        dx
    }
}

impl Module for BatchNorm {
    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        f(&mut self.weight);
        f(&mut self.bias);
    }
    fn visit_buffers(&mut self, f: &mut dyn FnMut(&str, &mut Tensor)) {
        f(&self.running_mean_name, &mut self.running_mean);
        f(&self.running_var_name, &mut self.running_var);
    }
    fn set_training(&mut self, training: bool) {
        self.training = training;
    }
}
