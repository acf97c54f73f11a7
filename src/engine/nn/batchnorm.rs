//! `BatchNorm` for (N, C) and (N, C, spatial…) inputs — BatchNorm1d and BatchNorm3d alike, with
//! channels on dimension 1 and statistics over every other dimension. PyTorch semantics: weight 1,
//! bias 0, running mean 0, running var 1, momentum 0.1, eps 1e-5; training uses batch statistics
//! and updates the running ones (unbiased variance); evaluation uses the running ones. Weight and
//! bias do not decay under AdamW. The running statistics are buffers (`visit_buffers`).
//!
//! SyncBN: `forward_synced` / `backward_synced` take an all-reduce ([`SyncSums`]) of the
//! per-channel sums where they live — on a GPU it may run on device memory (NCCL), or through the
//! host (MPI, [`ChannelSums::reduce_through_host`]) — so every rank normalises with the global
//! batch statistics; `forward` / `backward` are the same with no reduction. Backward accumulates
//! dweight, dbias.

use super::saved;
use crate::engine::ops::batchnorm::{self as bn, ChannelSums};
use crate::engine::tensor::{Module, Param, Tensor};
use anyhow::{bail, Context, Result};
use std::convert::Infallible;

struct Saved {
    input: Tensor,  // (N, C, S)
    mean: Tensor,   // (C) batch mean in training, running mean in evaluation
    rstd: Tensor,   // (C)
    count: usize,   // global elements per channel (training)
    training: bool,
}

/// SyncBN's all-reduce: sums in place across ranks the per-channel sums (2C f64 on the layer's
/// device) and, in the forward, the element count per channel (None in the backward). Every rank
/// calls it the same number of times, in the same order.
pub type SyncSums<'a> = dyn FnMut(&mut ChannelSums, Option<&mut usize>) -> Result<()> + 'a;

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

    /// Checks an input shape is (N, C) or (N, C, …).
    fn check_shape(&self, shape: &[usize]) -> Result<()> {
        let c = self.channels();
        if shape.len() < 2 || shape[1] != c {
            bail!("{}: input {shape:?} must be (N, {c}) or (N, {c}, …)", self.weight.name);
        }
        Ok(())
    }

    /// Single-process forward.
    pub fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, None)
    }

    /// Forward with `allreduce` summing, in place across ranks, [Σx (C), Σx² (C)] and the count.
    /// In training every rank must call it (and `backward_synced`), even with an empty local batch.
    pub fn forward_synced(&mut self, x: &Tensor, allreduce: &mut SyncSums) -> Result<Tensor> {
        self.forward_with(x, Some(allreduce))
    }

    fn forward_with(&mut self, x: &Tensor, allreduce: Option<&mut SyncSums>) -> Result<Tensor> {
        self.check_shape(&x.shape)?;
        let (n, _, s) = bn::ncs(&x.shape);
        let mut count = n * s;
        let (mean, rstd) = if self.training {
            let mut sums = bn::channel_sums(x);
            if let Some(reduce) = allreduce {
                reduce(&mut sums, Some(&mut count)).with_context(|| format!("{}: all-reducing the batch statistics", self.weight.name))?;
            }
            if count < 2 {
                bail!("{}: training needs more than one value per channel, got input {:?} (global count {count})", self.weight.name, x.shape);
            }
            let (mean, rstd, var) = bn::stats_from_sums(&sums, count, self.eps);
            bn::update_running(&mut self.running_mean, &mut self.running_var, &mean, &var, count, self.momentum);
            (mean, rstd)
        } else {
            (self.running_mean.clone(), bn::eval_rstd(&self.running_var, self.eps))
        };
        let out = bn::normalize(x, &self.weight.value, &self.bias.value, &mean, &rstd);
        self.saved = Some(Saved { input: x.clone(), mean, rstd, count, training: self.training });
        Ok(out)
    }

    /// Single-process backward.
    pub fn backward(&mut self, dout: &Tensor) -> Tensor {
        // No reduction: the local sums are the global ones, and nothing can fail.
        let Ok(dx) = self.backward_with(dout, |_| Ok::<_, Infallible>(None));
        dx
    }

    /// Backward with `allreduce` summing [Σdy (C), Σdy·x̂ (C)] across ranks (training mode only).
    pub fn backward_synced(&mut self, dout: &Tensor, allreduce: &mut SyncSums) -> Result<Tensor> {
        self.backward_with(dout, |local| -> Result<Option<ChannelSums>> {
            // grad_apply needs this rank's sums beside the global ones: reduce a copy.
            let mut global = local.try_clone()?;
            allreduce(&mut global, None)?;
            Ok(Some(global))
        })
        .with_context(|| format!("{}: all-reducing the gradient sums", self.weight.name))
    }

    /// `global` turns this rank's gradient sums into the global ones (None: they are the same).
    fn backward_with<E>(&mut self, dout: &Tensor, global: impl FnOnce(&ChannelSums) -> Result<Option<ChannelSums>, E>) -> Result<Tensor, E> {
        let sv = saved(&mut self.saved, &self.weight.name);
        assert_eq!(dout.shape, sv.input.shape, "{}: dout shape differs from the input's", self.weight.name);
        let (w, dw, db) = (&self.weight.value, &mut self.weight.grad, &mut self.bias.grad);
        if !sv.training {
            return Ok(bn::grad_eval(dout, &sv.input, w, &sv.mean, &sv.rstd, dw, db));
        }
        let local = bn::grad_channel_sums(dout, &sv.input, &sv.mean, &sv.rstd);
        let reduced = global(&local)?;
        let global = reduced.as_ref().unwrap_or(&local);
        Ok(bn::grad_apply(dout, &sv.input, w, &sv.mean, &sv.rstd, &local, global, sv.count, dw, db))
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
