//! Layers: each owns its `Param`s and the activations its backward needs, one file per layer.
//!
//! Conventions shared by every layer here:
//! - `forward(&mut self, x: &Tensor, …) -> Tensor` saves what the backward needs (a copy of the
//!   input, statistics); `backward(&mut self, dout: &Tensor) -> Tensor` consumes those saved
//!   activations (freeing them), *accumulates* (`+=`) parameter gradients and *returns* the input
//!   gradient. Calling backward without a forward is a bug and panics with the layer's name.
//! - Features are the last dimension; all leading dimensions are flattened into rows, so a Linear
//!   takes (N, C) or (B, T, C) alike. Batch norm is the exception: channels are dimension 1.
//! - Every compute call is a one-line `match x.device()`: the CPU arm calls the reference op in
//!   `engine::ops`; a CUDA arm slots in beside it when kernels exist (today it panics, because no
//!   CUDA storage can be constructed yet).
//! - `Module::visit_params` visits parameters in a fixed order under hierarchical names
//!   (`<prefix>.weight`); composite layers prefix their children (`block.attn.qkv.weight`).
//! - Initialisation follows PyTorch's defaults and draws from the caller's seeded RNG, so a model
//!   built twice from the same seed is bit-identical.

pub mod linear;
pub mod layernorm;
pub mod batchnorm;
pub mod activation;
pub mod mlp;
pub mod dropout;
pub mod embedding;
pub mod attention;
pub mod transformer;
pub mod conv3d;
pub mod resnext;

pub use activation::{Act, Activation};
pub use attention::MultiHeadAttention;
pub use batchnorm::{BatchNorm, SyncSums};
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use layernorm::LayerNorm;
pub use linear::Linear;
pub use mlp::Mlp;
pub use transformer::TransformerBlock;
pub use conv3d::{Conv3d, Conv3dConfig, ConvInit};
pub use resnext::{ResNeXtBlock, ResNeXtBlockConfig};

use super::tensor::Tensor;

/// (rows, features) of a tensor whose last dimension is the feature dimension.
pub(crate) fn rows_and_features(x: &Tensor, layer: &str, features: usize) -> usize {
    let last = *x.shape.last().unwrap_or_else(|| panic!("{layer}: scalar input"));
    assert_eq!(last, features, "{layer}: input {:?} must end in {features} features", x.shape);
    x.numel() / features.max(1)
}

pub use crate::engine::ops::elementwise::{add, add_assign, concat_last, split_last};

/// Take a layer's saved activation or panic naming the layer (backward without forward).
pub(crate) fn saved<T>(slot: &mut Option<T>, layer: &str) -> T {
    slot.take().unwrap_or_else(|| panic!("{layer}: backward called without a preceding forward"))
}

#[cfg(test)]
mod tests {
    use super::transformer::TransformerConfig;
    use super::*;
    use crate::engine::gradcheck::{check_module_gradients, random_vec};
    use crate::engine::ops::batchnorm::ChannelSums;
    use crate::engine::ops::gelu::GeluKind;
    use crate::engine::tensor::{Indices, Module};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use std::collections::HashSet;

    fn small_cfg() -> TransformerConfig {
        TransformerConfig {
            dim: 8,
            heads: 2,
            head_size: 3, // inner 6 ≠ dim: the DOS encoder's shape of problem
            ffn_dim: 12,
            activation: Activation::Gelu(GeluKind::Erf),
            ln_eps: 1e-5,
            qkv_bias: true,
            norm_first: true,
        }
    }

    // (B=3, T=4): sample 1 has one padded token, sample 2 is fully padded.
    const VALID: [bool; 12] = [true, true, true, true, true, true, true, false, false, false, false, false];

    #[test]
    fn transformer_block_gradients_match_finite_differences_with_padding() {
        for norm_first in [true, false] {
            let cfg = TransformerConfig { norm_first, ..small_cfg() };
            let mut block = TransformerBlock::new("blk", &cfg, &mut ChaCha8Rng::seed_from_u64(1));
            let x = Tensor::from_vec(&[3, 4, 8], random_vec(96, 2, 1.0));
            check_module_gradients(
                &format!("transformer block (norm_first = {norm_first})"), &mut block, &x,
                |m, x| m.forward(x, Some(&Indices::from_mask(&VALID))), |m, d| m.backward(d), 1e-2, 3e-3, 5e-3,
            );
        }
    }

    #[test]
    fn transformer_block_outputs_ignore_padded_tokens_and_stay_finite() {
        let mut block = TransformerBlock::new("blk", &small_cfg(), &mut ChaCha8Rng::seed_from_u64(1));
        let x = Tensor::from_vec(&[3, 4, 8], random_vec(96, 2, 1.0));
        let y1 = block.forward(&x, Some(&Indices::from_mask(&VALID)));
        let mut x2 = x.clone();
        // Change the padded token of sample 1 (t = 3); real tokens of sample 1 must not move.
        x2.data_mut()[(4 + 3) * 8..(4 + 4) * 8].iter_mut().for_each(|v| *v += 5.0);
        let y2 = block.forward(&x2, Some(&Indices::from_mask(&VALID)));
        assert_eq!(&y1.data()[32..56], &y2.data()[32..56]);
        assert!(y1.data().iter().all(|v| v.is_finite()));
        let dx = block.backward(&Tensor::from_vec(&[3, 4, 8], vec![1.0; 96]));
        assert!(dx.data().iter().all(|v| v.is_finite()));
    }

    #[test]
    fn block_and_batchnorm_results_are_bit_identical_for_any_thread_count() {
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let mut block = TransformerBlock::new("blk", &small_cfg(), &mut ChaCha8Rng::seed_from_u64(1));
                // 70 tokens: more than one layer-norm task of 32 rows.
                let x = Tensor::from_vec(&[5, 14, 8], random_vec(560, 2, 1.0));
                let y = block.forward(&x, None);
                let dx = block.backward(&y);
                let mut bn = BatchNorm::new("bn", 8);
                let z = bn.forward(&x.clone().reshape(&[70, 8])).unwrap();
                let dz = bn.backward(&z);
                let mut grads = Vec::new();
                block.visit_params(&mut |p| grads.extend_from_slice(p.grad.data()));
                bn.visit_params(&mut |p| grads.extend_from_slice(p.grad.data()));
                (y.into_vec(), dx.into_vec(), dz.into_vec(), grads)
            })
        };
        assert!(run(1) == run(3), "results differ between 1 and 3 threads");
    }

    #[test]
    fn attention_layer_equals_linear_attention_linear_composition() {
        use crate::engine::ops::attention::{attention_backward, attention_forward, AttnDims};
        use crate::engine::ops::linear::{linear_backward, linear_forward};
        let mut mha = MultiHeadAttention::new("attn", 8, 2, 3, true, &mut ChaCha8Rng::seed_from_u64(3));
        let x = Tensor::from_vec(&[3, 4, 8], random_vec(96, 4, 1.0));
        let dy = Tensor::from_vec(&[3, 4, 8], random_vec(96, 5, 1.0));
        let y = mha.forward(&x, Some(&Indices::from_mask(&VALID)));
        mha.zero_grad();
        let dx = mha.backward(&dy);
        let d = AttnDims { b: 3, t: 4, h: 2, hs: 3 };
        let (wq, bq) = (mha.qkv.weight.value.data().to_vec(), mha.qkv.bias.as_ref().unwrap().value.data().to_vec());
        let (wp, bp) = (mha.proj.weight.value.data().to_vec(), mha.proj.bias.as_ref().unwrap().value.data().to_vec());
        let mut qkv = vec![0.0; 12 * 18];
        linear_forward(&mut qkv, x.data(), &wq, Some(&bq), 12, 8, 18);
        let (mut att, mut lse) = (vec![0.0; 12 * 6], vec![0.0; 24]);
        attention_forward(&mut att, &mut lse, &qkv, Some(&VALID), d);
        let mut want = vec![0.0; 96];
        linear_forward(&mut want, &att, &wp, Some(&bp), 12, 6, 8);
        assert_eq!(y.data(), &want[..]);
        let (mut datt, mut dwp, mut dbp) = (vec![0.0; 72], vec![0.0; 48], vec![0.0; 8]);
        linear_backward(Some(&mut datt), &mut dwp, Some(&mut dbp), dy.data(), &att, &wp, 12, 6, 8);
        let mut dqkv = vec![0.0; 12 * 18];
        attention_backward(&mut dqkv, &datt, &qkv, &lse, Some(&VALID), d);
        let (mut wdx, mut dwq, mut dbq) = (vec![0.0; 96], vec![0.0; 144], vec![0.0; 18]);
        linear_backward(Some(&mut wdx), &mut dwq, Some(&mut dbq), &dqkv, x.data(), &wq, 12, 8, 18);
        assert_eq!(dx.data(), &wdx[..]);
        assert_eq!(mha.qkv.weight.grad.data(), &dwq[..]);
        assert_eq!(mha.proj.weight.grad.data(), &dwp[..]);
    }

    #[test]
    fn mlp_and_layernorm_gradients_match_finite_differences() {
        let mut mlp = Mlp::new("mlp", &[5, 7, 4], Activation::Silu, true, true, &mut ChaCha8Rng::seed_from_u64(4));
        let x = Tensor::from_vec(&[3, 5], random_vec(15, 5, 1.0));
        check_module_gradients("mlp", &mut mlp, &x, |m, x| m.forward(x), |m, d| m.backward(d), 1e-2, 2e-3, 2e-3);
        let mut ln = LayerNorm::new("ln", 5, 1e-5);
        ln.weight.value = Tensor::from_vec(&[5], random_vec(5, 6, 2.0));
        check_module_gradients("layernorm", &mut ln, &x, |m, x| m.forward(x), |m, d| m.backward(d), 1e-2, 2e-3, 2e-3);
    }

    #[test]
    fn batchnorm_layer_gradients_match_finite_differences_in_both_modes() {
        let x = Tensor::from_vec(&[4, 3, 2, 2], random_vec(48, 7, 2.0)); // a 3-d-ish (N, C, spatial) input
        let mut bn = BatchNorm::new("bn", 3);
        bn.weight.value = Tensor::from_vec(&[3], random_vec(3, 8, 2.0));
        check_module_gradients("batchnorm train", &mut bn, &x, |m, x| m.forward(x).unwrap(), |m, d| m.backward(d), 1e-2, 3e-3, 3e-3);
        bn.set_training(false);
        check_module_gradients("batchnorm eval", &mut bn, &x, |m, x| m.forward(x).unwrap(), |m, d| m.backward(d), 1e-2, 2e-3, 2e-3);
    }

    #[test]
    fn syncbn_over_two_threads_equals_batchnorm_on_the_whole_batch() {
        use std::sync::{Barrier, Mutex};
        let (n, c, s) = (6, 3, 4);
        let x = Tensor::from_vec(&[n, c, s], random_vec(n * c * s, 9, 2.0));
        let dy = Tensor::from_vec(&[n, c, s], random_vec(n * c * s, 10, 1.0));
        let mut whole = BatchNorm::new("bn", c);
        let y_whole = whole.forward(&x).unwrap();
        let dx_whole = whole.backward(&dy);
        // Two "ranks" with an all-reduce built from a mutex and a barrier.
        let acc = Mutex::new(Vec::<f64>::new());
        let barrier = Barrier::new(2);
        let allreduce = |v: &mut [f64]| {
            {
                let mut a = acc.lock().unwrap();
                if a.len() != v.len() {
                    *a = vec![0.0; v.len()];
                }
                a.iter_mut().zip(v.iter()).for_each(|(x, y)| *x += y);
            }
            barrier.wait();
            v.copy_from_slice(&acc.lock().unwrap());
            if barrier.wait().is_leader() {
                acc.lock().unwrap().clear();
            }
            barrier.wait();
        };
        let half = n / 2 * c * s;
        type RankResult = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>); // y, dx, dweight, running var
        let results: Vec<RankResult> = std::thread::scope(|scope| {
            let hs: Vec<_> = (0..2)
                .map(|r| {
                    let (xr, dyr) = (&x.data()[r * half..(r + 1) * half], &dy.data()[r * half..(r + 1) * half]);
                    let allreduce = &allreduce;
                    scope.spawn(move || {
                        let mut bn = BatchNorm::new("bn", c);
                        let mut sync = |sums: &mut ChannelSums, count: Option<&mut usize>| sums.reduce_through_host(count, allreduce);
                        let y = bn.forward_synced(&Tensor::from_vec(&[n / 2, c, s], xr.to_vec()), &mut sync).unwrap();
                        let dx = bn.backward_synced(&Tensor::from_vec(&[n / 2, c, s], dyr.to_vec()), &mut sync).unwrap();
                        (y.into_vec(), dx.into_vec(), bn.weight.grad.data().to_vec(), bn.running_var.data().to_vec())
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let y: Vec<f32> = [results[0].0.clone(), results[1].0.clone()].concat();
        let dx: Vec<f32> = [results[0].1.clone(), results[1].1.clone()].concat();
        let dw: Vec<f32> = results[0].2.iter().zip(&results[1].2).map(|(a, b)| a + b).collect();
        for (a, b) in y.iter().zip(y_whole.data()).chain(dx.iter().zip(dx_whole.data())).chain(dw.iter().zip(whole.weight.grad.data())) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        assert_eq!(results[0].3, results[1].3, "ranks agree on running stats");
        for (a, b) in results[0].3.iter().zip(whole.running_var.data()) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn dropout_layer_is_identity_in_eval_and_a_function_of_seed_and_stream() {
        let x = Tensor::from_vec(&[100], vec![1.0; 100]);
        let (mut a, mut b, mut other) = (Dropout::new(0.5, 1), Dropout::new(0.5, 1), Dropout::new(0.5, 2));
        let ya = a.forward(&x, 42);
        assert_eq!(ya.data(), b.forward(&x, 42).data(), "same seed and stream, same mask");
        assert_ne!(ya.data(), b.forward(&x, 43).data(), "next step's seed, new mask");
        assert_ne!(ya.data(), other.forward(&x, 42).data(), "another layer, another mask");
        assert!(ya.data().iter().all(|&v| v == 0.0 || v == 2.0));
        let dx = a.backward(&x);
        assert_eq!(dx.data(), ya.data(), "backward applies the same mask and scale");
        a.set_training(false);
        assert_eq!(a.forward(&x, 42).data(), x.data());
    }

    #[test]
    fn empty_batches_pass_through_linear_and_batchnorm() {
        // A rank whose local batch lacks a modality still runs the layers (SyncBN collectives).
        let mut lin = Linear::new("fc", 4, 3, true, &mut ChaCha8Rng::seed_from_u64(0));
        let y = lin.forward(&Tensor::zeros(&[0, 4]));
        assert_eq!(y.shape, vec![0, 3]);
        lin.backward(&y);
        assert!(lin.weight.grad.data().iter().all(|&g| g == 0.0));
        let mut bn = BatchNorm::new("bn", 3);
        let mut calls = 0;
        // Pretend the other ranks contributed 4 samples of value 1 per channel.
        let y = bn
            .forward_synced(&Tensor::zeros(&[0, 3]), &mut |sums, count| {
                calls += 1;
                sums.reduce_through_host(count, |v| {
                    v[..3].iter_mut().for_each(|s| *s += 4.0);
                    v[3..6].iter_mut().for_each(|s| *s += 4.0);
                    v[6] += 4.0;
                })
            })
            .unwrap();
        assert_eq!((y.shape.clone(), calls), (vec![0, 3], 1));
        bn.backward_synced(&y, &mut |_, count| {
            calls += 1;
            assert!(count.is_none(), "the backward reduces no count");
            Ok(())
        })
        .unwrap();
        assert_eq!(calls, 2, "the rank joined both collectives");
        assert!((bn.running_mean.data()[0] - 0.1).abs() < 1e-6);
    }

    #[test]
    fn a_small_transformer_regressor_learns_with_adamw_schedule_and_clipping() {
        use crate::engine::ops::masked_mean::{masked_mean_backward, masked_mean_forward};
        use crate::engine::ops::mse::{mse_backward, mse_forward};
        use crate::engine::optim::{clip_grad_norm, AdamW, AdamWConfig, WarmupCosine};
        use crate::engine::tensor::Param;
        struct Model {
            embed: Linear,
            block: TransformerBlock,
            head: Linear,
        }
        impl Module for Model {
            fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
                self.embed.visit_params(f);
                self.block.visit_params(f);
                self.head.visit_params(f);
            }
        }
        let (b, t, c, d) = (16, 6, 3, 8);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let cfg = TransformerConfig { dim: d, heads: 2, head_size: 4, ffn_dim: 16, ..small_cfg() };
        let mut model = Model {
            embed: Linear::new("embed", c, d, true, &mut rng),
            block: TransformerBlock::new("block", &cfg, &mut rng),
            head: Linear::new("head", d, 1, true, &mut rng),
        };
        // Target: mean over the valid tokens of x₀·x₁ — needs the FFN, the mask and the pooling.
        let x = Tensor::from_vec(&[b, t, c], random_vec(b * t * c, 12, 1.0));
        let valid: Vec<bool> = (0..b * t).map(|i| i % t < 2 + (i / t) % (t - 1)).collect();
        let target: Vec<f32> = (0..b)
            .map(|bi| {
                let rows: Vec<usize> = (0..t).filter(|&ti| valid[bi * t + ti]).collect();
                rows.iter().map(|&ti| x.data()[(bi * t + ti) * c] * x.data()[(bi * t + ti) * c + 1]).sum::<f32>() / rows.len() as f32
            })
            .collect();
        let valid_idx = Indices::from_mask(&valid);
        let mut opt = AdamW::new(AdamWConfig { weight_decay: 1e-4, ..AdamWConfig::default() });
        let schedule = WarmupCosine { peak_lr: 1e-2, warmup_steps: 20, total_steps: 300, final_lr: 1e-4 };
        let mut losses = Vec::new();
        for step in 0..300 {
            let h = model.embed.forward(&x);
            let h = model.block.forward(&h, Some(&valid_idx));
            let mut pooled = Tensor::zeros(&[b, d]);
            masked_mean_forward(pooled.data_mut(), h.data(), Some(&valid), b, t, d);
            let pred = model.head.forward(&pooled);
            losses.push(mse_forward(pred.data(), &target));
            let mut dpred = Tensor::zeros(&[b, 1]);
            mse_backward(dpred.data_mut(), pred.data(), &target, 1.0);
            model.zero_grad();
            let dpooled = model.head.backward(&dpred);
            let mut dh = Tensor::zeros(&[b, t, d]);
            masked_mean_backward(dh.data_mut(), dpooled.data(), Some(&valid), b, t, d);
            let dh = model.block.backward(&dh);
            model.embed.backward(&dh);
            assert!(clip_grad_norm(&mut model, 1.0).is_finite());
            opt.step(&mut model, schedule.lr(step)).unwrap();
        }
        let (first, last) = (losses[0], *losses.last().unwrap());
        assert!(last < 0.01 * first, "loss {first} → {last}");
    }

    #[test]
    fn concat_then_split_round_trips() {
        let a = Tensor::from_vec(&[2, 1], vec![1.0, 2.0]);
        let b = Tensor::from_vec(&[2, 2], vec![3.0, 4.0, 5.0, 6.0]);
        let c = concat_last(&[&a, &b]);
        assert_eq!(c.shape, vec![2, 3]);
        assert_eq!(c.data(), &[1.0, 3.0, 4.0, 2.0, 5.0, 6.0]);
        let parts = split_last(&c, &[1, 2]);
        assert_eq!(parts[0].data(), a.data());
        assert_eq!(parts[1].data(), b.data());
    }

    #[test]
    fn param_names_are_unique_and_hierarchical() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut block = TransformerBlock::new("dos.blocks.0", &TransformerConfig::dos_reference(), &mut rng);
        let names = block.param_names();
        let unique: HashSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "duplicate names in {names:?}");
        assert_eq!(names[0], "dos.blocks.0.ln1.weight");
        assert!(names.contains(&"dos.blocks.0.attn.qkv.weight".to_string()));
        assert!(names.iter().all(|n| n.starts_with("dos.blocks.0.")));
        // 2·128 + 128·1536 + 512·128 + 128 + 2·128 + 128·512 + 512 + 512·128 + 128 (reference shapes)
        assert_eq!(block.num_params(), 256 + 128 * 1536 + 512 * 128 + 128 + 256 + 128 * 512 + 512 + 512 * 128 + 128);
        let mut mlp = Mlp::new("text", &[768, 512, 512, 128], Activation::Relu, false, true, &mut rng);
        let names = mlp.param_names();
        assert_eq!(names, ["text.0.weight", "text.0.bias", "text.1.weight", "text.1.bias", "text.2.weight", "text.2.bias"]);
        let mut bn = BatchNorm::new("bn", 4);
        let mut bufs = Vec::new();
        bn.visit_buffers(&mut |n, _| bufs.push(n.to_string()));
        assert_eq!(bufs, ["bn.running_mean", "bn.running_var"]);
    }
}
