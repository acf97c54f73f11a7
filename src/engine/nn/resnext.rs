//! The 3-D ResNeXt bottleneck block of the charge-density encoder:
//!
//! ```text
//! x ─ conv1 1³ (C→mid) ─ BN ─ ReLU ─ conv2 3³/stride, groups = cardinality (mid→mid) ─ BN ─ ReLU
//!   ─ conv3 1³ (mid→out) ─ BN ─┬─ + ─ ReLU ─ y
//! x ─ [conv 1³/stride (C→out) ─ BN  when stride ≠ 1 or C ≠ out, else identity] ─┘
//! ```
//!
//! The layout is Hara et al.'s 3-D ResNeXt (the MultiMat reference's charge-density encoder):
//! stride on the grouped 3³ conv, "type B" projection shortcuts, convolutions without bias, and
//! for a stage of `planes` p: mid = cardinality·p/32, out = 2p (`ResNeXtBlockConfig::stage`).
//! Parameter names follow that model's PyTorch state dict (`conv1`, `bn1`, …, `downsample.0`,
//! `downsample.1`), visited in that order.
//!
//! Batch norm is SyncBN-ready: `forward_synced`/`backward_synced` pass an all-reduce to every BN.
//! Backward consumes the saved activations, accumulates (`+=`) parameter gradients and returns
//! the input gradient.

use super::activation::{Act, Activation};
use super::batchnorm::{BatchNorm, SyncSums};
use super::conv3d::{Conv3d, Conv3dConfig, ConvInit};
use super::{add, add_assign};
use crate::engine::ops::conv3d::Window3d;
use crate::engine::{Module, Param, Tensor};
use anyhow::Result;
use rand::Rng;

/// Channel counts, cardinality and stride of one block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResNeXtBlockConfig {
    pub in_channels: usize,
    /// Width of the grouped 3³ convolution.
    pub mid_channels: usize,
    pub out_channels: usize,
    /// Number of groups of the 3³ convolution.
    pub cardinality: usize,
    /// Stride of the 3³ convolution and of the projection shortcut.
    pub stride: usize,
}

impl ResNeXtBlockConfig {
    /// The reference's block for a stage of `planes` p: mid = cardinality·p/32, out = 2p.
    pub fn stage(in_channels: usize, planes: usize, cardinality: usize, stride: usize) -> ResNeXtBlockConfig {
        ResNeXtBlockConfig { in_channels, mid_channels: cardinality * planes / 32, out_channels: 2 * planes, cardinality, stride }
    }

    /// Whether the shortcut needs the 1³ projection (shape changes).
    pub fn needs_projection(&self) -> bool {
        self.stride != 1 || self.in_channels != self.out_channels
    }
}

pub struct ResNeXtBlock {
    pub config: ResNeXtBlockConfig,
    pub conv1: Conv3d,
    pub bn1: BatchNorm,
    relu1: Act,
    pub conv2: Conv3d,
    pub bn2: BatchNorm,
    relu2: Act,
    pub conv3: Conv3d,
    pub bn3: BatchNorm,
    /// Projection shortcut: 1³ conv with the block's stride, then BN.
    pub downsample: Option<(Conv3d, BatchNorm)>,
    relu_out: Act,
}

impl ResNeXtBlock {
    /// A block named `name`; panics if the cardinality does not divide the middle width
    /// (a model-definition error).
    pub fn new(name: &str, config: ResNeXtBlockConfig, init: ConvInit, rng: &mut impl Rng) -> ResNeXtBlock {
        let ResNeXtBlockConfig { in_channels, mid_channels, out_channels, cardinality, stride } = config;
        assert!(stride > 0 && cardinality > 0 && mid_channels % cardinality == 0,
            "ResNeXt block {name}: cardinality {cardinality} must divide the width {mid_channels}, stride > 0");
        let conv = |suffix: &str, c: usize, oc: usize, window: Window3d, groups: usize, rng: &mut _| {
            Conv3d::new(&format!("{name}.{suffix}"), Conv3dConfig { in_channels: c, out_channels: oc, window, groups, bias: false }, init, rng)
        };
        let conv1 = conv("conv1", in_channels, mid_channels, Window3d::cube(1, 1, 0), 1, rng);
        let conv2 = conv("conv2", mid_channels, mid_channels, Window3d::cube(3, stride, 1), cardinality, rng);
        let conv3 = conv("conv3", mid_channels, out_channels, Window3d::cube(1, 1, 0), 1, rng);
        let downsample = config.needs_projection().then(|| {
            (
                conv("downsample.0", in_channels, out_channels, Window3d::cube(1, stride, 0), 1, rng),
                BatchNorm::new(&format!("{name}.downsample.1"), out_channels),
            )
        });
        ResNeXtBlock {
            config,
            conv1,
            bn1: BatchNorm::new(&format!("{name}.bn1"), mid_channels),
            relu1: Act::new(Activation::Relu),
            conv2,
            bn2: BatchNorm::new(&format!("{name}.bn2"), mid_channels),
            relu2: Act::new(Activation::Relu),
            conv3,
            bn3: BatchNorm::new(&format!("{name}.bn3"), out_channels),
            downsample,
            relu_out: Act::new(Activation::Relu),
        }
    }

    /// x (N, C, D, H, W) → y (N, out, D', H', W'), single process.
    pub fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        self.forward_synced(x, &mut |_, _| Ok(()))
    }

    /// Forward with batch-norm statistics all-reduced across ranks by `allreduce`.
    pub fn forward_synced(&mut self, x: &Tensor, allreduce: &mut SyncSums) -> Result<Tensor> {
        let h = self.conv1.forward(x);                    // (N, mid, D, H, W)
        let h = self.bn1.forward_synced(&h, allreduce)?;
        let h = self.relu1.forward(&h);
        let h = self.conv2.forward(&h);                   // (N, mid, D', H', W')
        let h = self.bn2.forward_synced(&h, allreduce)?;
        let h = self.relu2.forward(&h);
        let h = self.conv3.forward(&h);                   // (N, out, D', H', W')
        let h = self.bn3.forward_synced(&h, allreduce)?;
        let shortcut = match self.downsample.as_mut() {
            Some((conv, bn)) => bn.forward_synced(&conv.forward(x), allreduce)?, // (N, out, D', H', W')
            None => x.clone(),
        };
        Ok(self.relu_out.forward(&add(&h, &shortcut)))
    }

    /// dy (N, out, D', H', W') → dx (N, C, D, H, W), single process.
    pub fn backward(&mut self, dy: &Tensor) -> Result<Tensor> {
        self.backward_synced(dy, &mut |_, _| Ok(()))
    }

    /// Backward with batch-norm gradient sums all-reduced across ranks by `allreduce`.
    pub fn backward_synced(&mut self, dy: &Tensor, allreduce: &mut SyncSums) -> Result<Tensor> {
        let dsum = self.relu_out.backward(dy);            // (N, out, D', H', W'), to both branches
        let d = self.bn3.backward_synced(&dsum, allreduce)?;
        let d = self.conv3.backward(&d);
        let d = self.relu2.backward(&d);
        let d = self.bn2.backward_synced(&d, allreduce)?;
        let d = self.conv2.backward(&d);
        let d = self.relu1.backward(&d);
        let d = self.bn1.backward_synced(&d, allreduce)?;
        let mut dx = self.conv1.backward(&d);             // (N, C, D, H, W)
        match self.downsample.as_mut() {
            Some((conv, bn)) => {
                let ds = bn.backward_synced(&dsum, allreduce)?;
                add_assign(&mut dx, &conv.backward(&ds));
            }
            None => add_assign(&mut dx, &dsum),
        }
        Ok(dx)
    }
}

impl Module for ResNeXtBlock {
    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        self.conv1.visit_params(f);
        self.bn1.visit_params(f);
        self.conv2.visit_params(f);
        self.bn2.visit_params(f);
        self.conv3.visit_params(f);
        self.bn3.visit_params(f);
        if let Some((conv, bn)) = self.downsample.as_mut() {
            conv.visit_params(f);
            bn.visit_params(f);
        }
    }

    fn visit_buffers(&mut self, f: &mut dyn FnMut(&str, &mut Tensor)) {
        self.bn1.visit_buffers(f);
        self.bn2.visit_buffers(f);
        self.bn3.visit_buffers(f);
        if let Some((_, bn)) = self.downsample.as_mut() {
            bn.visit_buffers(f);
        }
    }

    fn set_training(&mut self, training: bool) {
        self.bn1.set_training(training);
        self.bn2.set_training(training);
        self.bn3.set_training(training);
        if let Some((_, bn)) = self.downsample.as_mut() {
            bn.set_training(training);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::{dot, random_vec};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn block(config: ResNeXtBlockConfig, seed: u64) -> ResNeXtBlock {
        ResNeXtBlock::new("layer1.0", config, ConvInit::PytorchDefault, &mut ChaCha8Rng::seed_from_u64(seed))
    }

    #[test]
    fn stage_config_matches_the_reference_widths() {
        // ResNeXt-50 stage 1 after the 64-channel stem: planes 128, cardinality 32.
        let c = ResNeXtBlockConfig::stage(64, 128, 32, 1);
        assert_eq!((c.mid_channels, c.out_channels), (128, 256));
        assert!(c.needs_projection());
        assert!(!ResNeXtBlockConfig::stage(256, 128, 32, 1).needs_projection());
        assert!(ResNeXtBlockConfig::stage(256, 256, 32, 2).needs_projection());
    }

    #[test]
    fn parameters_follow_the_reference_state_dict_order() {
        let mut b = block(ResNeXtBlockConfig { in_channels: 4, mid_channels: 4, out_channels: 8, cardinality: 2, stride: 2 }, 1);
        let names = b.param_names();
        assert_eq!(names, [
            "layer1.0.conv1.weight", "layer1.0.bn1.weight", "layer1.0.bn1.bias",
            "layer1.0.conv2.weight", "layer1.0.bn2.weight", "layer1.0.bn2.bias",
            "layer1.0.conv3.weight", "layer1.0.bn3.weight", "layer1.0.bn3.bias",
            "layer1.0.downsample.0.weight", "layer1.0.downsample.1.weight", "layer1.0.downsample.1.bias",
        ]);
        assert_eq!(b.conv2.weight.value.shape, [4, 2, 3, 3, 3], "grouped: C/groups = 2 input channels per filter");
        let mut buffers = vec![];
        b.visit_buffers(&mut |n, _| buffers.push(n.to_string()));
        assert_eq!(buffers.len(), 8);
        assert_eq!(buffers[0], "layer1.0.bn1.running_mean");
    }

    /// Finite-difference check of the whole block, for loss = Σ w·y, of the input gradient and
    /// every parameter gradient. A block is piecewise smooth: batch norm couples every voxel, so
    /// nudging one value moves every ReLU's input a little, and at a step of 1e-2 some ReLU
    /// almost always crosses zero and spoils a central difference (the engine's plain
    /// `check_module_gradients` fails on every seed tried for that reason, with correct
    /// gradients). So each coordinate compares the two one-sided differences first: if they
    /// disagree, a kink lies inside the step, and the step shrinks 10× (to 1e-4); a coordinate
    /// still kinked there is skipped. At most a quarter of the coordinates may be skipped, and
    /// every other one must match.
    fn check_block_gradients(name: &str, block: &mut ResNeXtBlock, x: &Tensor) {
        let y = block.forward(x).unwrap();
        let w = random_vec(y.numel(), 0x5eed, 1.0);
        block.zero_grad();
        let dx = block.backward(&Tensor::from_vec(&y.shape, w.clone())).unwrap();
        let (atol, rtol) = (5e-3, 1e-2);
        // Visits up to 40 evenly spaced coordinates of `value`, with `loss(v)` at a perturbed copy.
        let check = |what: &str, value: &[f32], analytic: &[f32], loss: &mut dyn FnMut(&[f32]) -> f64| {
            let (mut checked, mut skipped) = (0, 0);
            let mut v = value.to_vec();
            for i in (0..v.len()).step_by((v.len() / 40).max(1)) {
                let mut numeric = None;
                for eps in [1e-3f32, 1e-4] {
                    let l0 = loss(&v);
                    v[i] = value[i] + eps;
                    let lp = loss(&v);
                    v[i] = value[i] - eps;
                    let lm = loss(&v);
                    v[i] = value[i];
                    let (fwd, bwd) = ((lp - l0) / eps as f64, (l0 - lm) / eps as f64);
                    let central = 0.5 * (fwd + bwd);
                    // f32 rounding of the loss, divided by the step, bounds how well the
                    // one-sided slopes can agree on a smooth stretch.
                    let noise = 2e-6 * l0.abs().max(1.0) / eps as f64;
                    if (fwd - bwd).abs() <= atol + noise + rtol * central.abs() {
                        numeric = Some((central, noise));
                        break;
                    }
                }
                let Some((numeric, noise)) = numeric else {
                    skipped += 1;
                    continue;
                };
                checked += 1;
                let a = analytic[i] as f64;
                assert!((a - numeric).abs() <= atol + noise + rtol * numeric.abs(),
                    "{name} {what}[{i}]: analytic {a:.6e} vs numeric {numeric:.6e}");
            }
            assert!(skipped * 4 <= checked + skipped, "{name} {what}: {skipped} of {} coordinates had a kink at every step", checked + skipped);
        };
        check("d(input)", x.data(), dx.data(), &mut |xv| {
            dot(&w, block.forward(&Tensor::from_vec(&x.shape, xv.to_vec())).unwrap().data())
        });
        let mut params: Vec<(String, Vec<f32>, Vec<f32>)> = Vec::new();
        block.visit_params(&mut |p| params.push((p.name.clone(), p.value.data().to_vec(), p.grad.data().to_vec())));
        for (k, (pname, value, grad)) in params.iter().enumerate() {
            let set = |b: &mut ResNeXtBlock, v: &[f32]| {
                let mut j = 0;
                b.visit_params(&mut |p| {
                    if j == k {
                        p.value.data_mut().copy_from_slice(v);
                    }
                    j += 1;
                });
            };
            check(&format!("d({pname})"), value, grad, &mut |pv| {
                set(block, pv);
                let l = dot(&w, block.forward(x).unwrap().data());
                set(block, value);
                l
            });
        }
    }

    #[test]
    fn block_with_projection_shortcut_gradients_match_finite_differences() {
        // Stride 2, channels 4 → 8: the projection branch is exercised.
        let cfg = ResNeXtBlockConfig { in_channels: 4, mid_channels: 4, out_channels: 8, cardinality: 2, stride: 2 };
        let mut b = block(cfg, 2);
        let x = Tensor::from_vec(&[2, 4, 4, 4, 3], random_vec(2 * 4 * 48, 3, 1.0));
        let y = b.forward(&x).unwrap();
        assert_eq!(y.shape, [2, 8, 2, 2, 2]);
        check_block_gradients("resnext block (projection)", &mut b, &x);
    }

    #[test]
    fn block_with_identity_shortcut_gradients_match_finite_differences() {
        let cfg = ResNeXtBlockConfig { in_channels: 8, mid_channels: 4, out_channels: 8, cardinality: 4, stride: 1 };
        let mut b = block(cfg, 4);
        assert!(b.downsample.is_none());
        let x = Tensor::from_vec(&[2, 8, 3, 3, 3], random_vec(2 * 8 * 27, 5, 1.0));
        check_block_gradients("resnext block (identity)", &mut b, &x);
    }

    #[test]
    fn eval_mode_uses_running_statistics_and_is_deterministic() {
        let cfg = ResNeXtBlockConfig { in_channels: 4, mid_channels: 4, out_channels: 8, cardinality: 2, stride: 1 };
        let mut b = block(cfg, 6);
        let x = Tensor::from_vec(&[2, 4, 3, 3, 3], random_vec(2 * 4 * 27, 7, 1.0));
        b.forward(&x).unwrap(); // one training step moves the running statistics
        b.set_training(false);
        let y1 = b.forward(&x).unwrap();
        // In eval mode a sample's output does not depend on the rest of the batch.
        let first = Tensor::from_vec(&[1, 4, 3, 3, 3], x.data()[..4 * 27].to_vec());
        let y_single = b.forward(&first).unwrap();
        assert_eq!(&y1.data()[..8 * 27], y_single.data());
        assert!(y1.data().iter().all(|v| v.is_finite() && *v >= 0.0), "ReLU output");
    }
}
