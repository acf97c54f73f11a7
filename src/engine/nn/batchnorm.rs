//! `BatchNorm` for (N, C) and (N, C, spatial…) inputs — BatchNorm1d and BatchNorm3d alike, with
//! channels on dimension 1 and statistics over every other dimension. PyTorch semantics: weight 1,
//! bias 0, running mean 0, running var 1, momentum 0.1, eps 1e-5; training uses batch statistics
//! and updates the running ones (unbiased variance); evaluation uses the running ones. Weight and
//! bias do not decay under AdamW. The running statistics are buffers (`visit_buffers`).
//!
//! SyncBN: `forward_synced` / `backward_synced` take an all-reduce (sum in place across ranks) and
//! apply it to the per-channel sums, so every rank normalises with the global batch statistics;
//! `forward` / `backward` are the same with no reduction. Backward accumulates dweight, dbias.

use super::saved;
use crate::engine::ops::batchnorm::{self as bn, ChannelSums};
use crate::engine::tensor::{Module, Param, Tensor};
use anyhow::{bail, Result};

struct Saved {
    input: Tensor,  // (N, C, S)
    mean: Tensor,   // (C) batch mean in training, running mean in evaluation
    rstd: Tensor,   // (C)
    count: usize,   // global elements per channel (training)
    training: bool,
}

/// An all-reduce (sum in place across ranks) of SyncBN's f64 payloads; None in one process.
type AllReduce<'a, 'b> = Option<&'a mut (dyn FnMut(&mut [f64]) + 'b)>;

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

    /// Forward with `allreduce` summing, in place across ranks, a vector [Σx (C), Σx² (C), count].
    /// In training every rank must call it (and `backward_synced`), even with an empty local batch.
    pub fn forward_synced(&mut self, x: &Tensor, allreduce: &mut dyn FnMut(&mut [f64])) -> Result<Tensor> {
        self.forward_with(x, Some(allreduce))
    }

    fn forward_with(&mut self, x: &Tensor, allreduce: AllReduce) -> Result<Tensor> {
        self.check_shape(&x.shape)?;
        let (n, c, s) = bn::ncs(&x.shape);
        let mut count = n * s;
        let (mean, rstd) = if self.training {
            let mut sums = bn::channel_sums(x);
            if let Some(reduce) = allreduce {
                // The all-reduce boundary: the 2C sums and the count travel through the host.
                let mut payload = sums.to_host();
                payload.push(count as f64);
                reduce(&mut payload);
                count = payload[2 * c].round() as usize;
                sums = ChannelSums::from_host(&payload[..2 * c], x.device());
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
        self.backward_with(dout, None)
    }

    /// Backward with `allreduce` summing [Σdy (C), Σdy·x̂ (C)] across ranks (training mode only).
    pub fn backward_synced(&mut self, dout: &Tensor, allreduce: &mut dyn FnMut(&mut [f64])) -> Tensor {
        self.backward_with(dout, Some(allreduce))
    }

    fn backward_with(&mut self, dout: &Tensor, allreduce: AllReduce) -> Tensor {
        let sv = saved(&mut self.saved, &self.weight.name);
        assert_eq!(dout.shape, sv.input.shape, "{}: dout shape differs from the input's", self.weight.name);
        let (w, dw, db) = (&self.weight.value, &mut self.weight.grad, &mut self.bias.grad);
        if !sv.training {
            return bn::grad_eval(dout, &sv.input, w, &sv.mean, &sv.rstd, dw, db);
        }
        let local = bn::grad_channel_sums(dout, &sv.input, &sv.mean, &sv.rstd);
        let reduced;
        let global = match allreduce {
            Some(reduce) => {
                let mut payload = local.to_host();
                reduce(&mut payload);
                reduced = ChannelSums::from_host(&payload, dout.device());
                &reduced
            }
            None => &local,
        };
        bn::grad_apply(dout, &sv.input, w, &sv.mean, &sv.rstd, &local, global, sv.count, dw, db)
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
