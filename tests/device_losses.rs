//! TensorCLIP and 3-D BarlowTwins on the `cuda-sim` device (their CUDA kernels and cuBLAS
//! descriptors executed on the CPU) against the CPU reference losses:
//! - loss, embedding gradients and (TensorCLIP) d loss/d logit scale for several batch sizes,
//!   with rows absent from one or all modalities, fewer than two valid rows, and blocks of
//!   slices that do and do not divide the batch;
//! - distributed shares (owned rows) over a partition add up to the full loss and gradient;
//! - two runs give bit-identical results; the device gradients match finite differences of the
//!   device loss;
//! - a short pre-training run with each loss on cuda-sim follows the CPU run step by step.
//!
//! Tolerances (why not zero): the logits and the Gram/cross-correlation products are GEMMs that
//! cuBLAS (here the simulator's GEMM with column-major operands) sums in another order than the
//! CPU reference, and the GPU's expf is not libm's: losses agree to ~1e-7 relative, gradients
//! (values of O(1/n)) to 1e-6 absolute + 1e-4 relative.

mod common;
use common::losses;

use std::ops::Range;
use std::path::Path;
use std::process::Command;

use multimat::engine::gradcheck::random_vec;
use multimat::engine::{Device, Tensor};
use multimat::loss::barlow_twins::{barlow_twins_3d, barlow_twins_3d_device};
use multimat::loss::tensor_clip::{tensor_clip, tensor_clip_device, tensor_clip_device_blocked};

const SIM: Device = Device::CudaSim;
const LOSS_RTOL: f64 = 1e-5;
const GRAD_ATOL: f32 = 1e-6;
const GRAD_RTOL: f32 = 1e-4;

fn unit_rows(b: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut x = random_vec(b * d, seed, 1.0);
    for row in x.chunks_exact_mut(d) {
        let n = row.iter().map(|v| (v * v) as f64).sum::<f64>().sqrt() as f32;
        row.iter_mut().for_each(|v| *v /= n);
    }
    x
}

struct Case {
    b: usize,
    d: usize,
    x: Vec<Vec<f32>>,
    present: Vec<Vec<bool>>,
    dev: Vec<Tensor>,
}

impl Case {
    /// Three modalities, `absent(m, r)` rows missing; unit rows (TensorCLIP) or raw offsets.
    fn new(b: usize, d: usize, seed: u64, unit: bool, absent: impl Fn(usize, usize) -> bool) -> Case {
        let x: Vec<Vec<f32>> = (0..3)
            .map(|m| if unit { unit_rows(b, d, seed + m) } else { random_vec(b * d, seed + m, 2.0).iter().map(|v| v + 0.5 * m as f32).collect() })
            .collect();
        let present: Vec<Vec<bool>> = (0..3).map(|m| (0..b).map(|r| !absent(m, r)).collect()).collect();
        let dev = x.iter().map(|v| Tensor::from_vec(&[b, d], v.clone()).to_device(SIM).unwrap()).collect();
        Case { b, d, x, present, dev }
    }
    fn xs(&self) -> [&[f32]; 3] {
        [&self.x[0], &self.x[1], &self.x[2]]
    }
    fn ps(&self) -> [&[bool]; 3] {
        [&self.present[0], &self.present[1], &self.present[2]]
    }
    fn devs(&self) -> [&Tensor; 3] {
        [&self.dev[0], &self.dev[1], &self.dev[2]]
    }
    fn zero_grads(&self) -> Vec<Tensor> {
        (0..3).map(|_| Tensor::zeros_on(&[self.b, self.d], SIM).unwrap()).collect()
    }
}

fn host(ts: &[Tensor]) -> Vec<Vec<f32>> {
    ts.iter().map(|t| t.to_host().unwrap()).collect()
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= GRAD_ATOL + GRAD_RTOL * w.abs(), "{what}[{i}]: {g} on cuda-sim, {w} on the CPU");
    }
}

/// TensorCLIP on the device (blocks of `kb` slices, or the default with None) vs the CPU.
fn check_tensor_clip(c: &Case, scale: f32, rows: Range<usize>, kb: Option<usize>) -> (f64, Vec<Vec<f32>>) {
    let mut want_g = vec![vec![0.0f32; c.b * c.d]; 3];
    let [w0, w1, w2] = &mut want_g[..] else { unreachable!() };
    let want = tensor_clip(Some(w0), Some(w1), Some(w2), c.xs(), c.ps(), c.d, scale, rows.clone());
    let mut g = c.zero_grads();
    let [g0, g1, g2] = &mut g[..] else { unreachable!() };
    let got = match kb {
        Some(kb) => tensor_clip_device_blocked(Some([g0, g1, g2]), c.devs(), c.ps(), scale, rows.clone(), kb),
        None => tensor_clip_device(Some([g0, g1, g2]), c.devs(), c.ps(), scale, rows.clone()),
    }
    .unwrap();
    let ctx = format!("B={} D={} s={scale} rows {rows:?} kb {kb:?}", c.b, c.d);
    assert_eq!(got.valid_rows, want.valid_rows, "{ctx}");
    assert!((got.loss - want.loss).abs() <= LOSS_RTOL * want.loss.abs().max(1.0), "{ctx}: loss {} on cuda-sim, {} on the CPU", got.loss, want.loss);
    assert!((got.dscale - want.dscale).abs() <= 1e-5 * want.dscale.abs().max(1.0), "{ctx}: dscale {} vs {}", got.dscale, want.dscale);
    let gh = host(&g);
    for m in 0..3 {
        assert_close(&format!("{ctx} d{m}"), &gh[m], &want_g[m]);
    }
    (got.loss, gh)
}

#[test]
fn tensor_clip_on_cuda_sim_matches_the_cpu_reference() {
    // Several batch sizes; rows absent from one modality and from all; blocks that divide n and
    // blocks that leave a partial last block; the default block (one block here); a logit scale
    // above 40 (f64 exponentials).
    let c = Case::new(17, 8, 1, true, |m, r| r % (4 + m) == 1 || r == 6);
    for kb in [Some(1), Some(3), Some(5), None] {
        check_tensor_clip(&c, 5.0, 0..c.b, kb);
    }
    check_tensor_clip(&c, 60.0, 0..c.b, Some(4));
    let big = Case::new(40, 16, 7, true, |m, r| m == 2 && r % 9 == 0);
    check_tensor_clip(&big, 5.0, 0..big.b, Some(7));
    let small = Case::new(3, 5, 11, true, |_, _| false);
    check_tensor_clip(&small, 2.0, 0..3, None);
}

#[test]
fn tensor_clip_with_fewer_than_two_valid_rows_is_zero_on_cuda_sim() {
    for (b, absent) in [(1usize, 99usize), (4, 0), (4, 1)] {
        // B = 1; or every row but one missing text.
        let c = Case::new(b, 6, 3, true, |m, r| m == 2 && r != absent.min(b - 1) && b > 1);
        let mut g: Vec<Tensor> = (0..3).map(|_| Tensor::from_vec(&[b, 6], vec![9.0; b * 6]).to_device(SIM).unwrap()).collect();
        let [g0, g1, g2] = &mut g[..] else { unreachable!() };
        let r = tensor_clip_device(Some([g0, g1, g2]), c.devs(), c.ps(), 5.0, 0..b).unwrap();
        assert_eq!((r.loss, r.dscale, r.valid_rows), (0.0, 0.0, 1), "B={b}");
        assert!(host(&g).iter().flatten().all(|&v| v == 0.0), "gradients are written as zeros");
    }
}

#[test]
fn tensor_clip_shares_on_cuda_sim_add_up_to_the_full_value() {
    let c = Case::new(21, 8, 21, true, |m, r| r % (5 + m) == 2);
    let (full, gfull) = check_tensor_clip(&c, 5.0, 0..c.b, Some(4));
    let (mut total, mut gsum) = (0.0, vec![vec![0.0f32; c.b * c.d]; 3]);
    for rows in [0..6, 6..13, 13..21] {
        let (l, g) = check_tensor_clip(&c, 5.0, rows, Some(4));
        total += l;
        for (acc, part) in gsum.iter_mut().zip(&g) {
            acc.iter_mut().zip(part).for_each(|(a, p)| *a += p);
        }
    }
    assert!((total - full).abs() <= 1e-12 * full.abs(), "shares add up to {total}, full loss {full}");
    for m in 0..3 {
        // f32 sums of three shares against one f32 accumulation: a few ulps.
        assert_close(&format!("summed share d{m}"), &gsum[m], &gfull[m]);
    }
}

#[test]
fn tensor_clip_on_cuda_sim_is_deterministic_and_matches_finite_differences() {
    let c = Case::new(7, 4, 31, true, |m, r| m == 1 && r == 3);
    let run = |x: [&Tensor; 3]| {
        let mut g = c.zero_grads();
        let [g0, g1, g2] = &mut g[..] else { unreachable!() };
        let r = tensor_clip_device_blocked(Some([g0, g1, g2]), x, c.ps(), 3.0, 0..c.b, 2).unwrap();
        (r.loss, host(&g))
    };
    let (l1, g1) = run(c.devs());
    let (l2, g2) = run(c.devs());
    assert_eq!(l1.to_bits(), l2.to_bits(), "loss differs between two runs");
    assert_eq!(g1, g2, "gradients differ between two runs");
    // Central differences of the device loss in f64 around each of a's values (the loss is f64
    // from f32 logits: h = 1e-2 keeps the logit rounding far below the difference).
    let h = 1e-2f32;
    for i in 0..c.b * c.d {
        if !c.present[0][i / c.d] || !c.present[1][i / c.d] {
            assert_eq!(g1[0][i], 0.0, "row {} is not valid: zero gradient", i / c.d);
            continue;
        }
        let shifted = |delta: f32| {
            let mut a = c.x[0].clone();
            a[i] += delta;
            let t = Tensor::from_vec(&[c.b, c.d], a).to_device(SIM).unwrap();
            tensor_clip_device_blocked(None, [&t, &c.dev[1], &c.dev[2]], c.ps(), 3.0, 0..c.b, 2).unwrap().loss
        };
        let num = (shifted(h) - shifted(-h)) / (2.0 * h as f64);
        assert!((g1[0][i] as f64 - num).abs() <= 2e-4 + 2e-3 * num.abs(), "da[{i}]: {} analytic, {num} numeric", g1[0][i]);
    }
}

/// BarlowTwins on the device vs the CPU.
fn check_barlow(c: &Case, standardize: bool, rows: Range<usize>) -> (f64, Vec<Vec<f32>>) {
    let lambda = 0.0051;
    let mut want_g = vec![vec![0.0f32; c.b * c.d]; 3];
    let [w0, w1, w2] = &mut want_g[..] else { unreachable!() };
    let want = barlow_twins_3d(Some(w0), Some(w1), Some(w2), c.xs(), c.ps(), c.d, lambda, standardize, rows.clone());
    let mut g = c.zero_grads();
    let [g0, g1, g2] = &mut g[..] else { unreachable!() };
    let got = barlow_twins_3d_device(Some([g0, g1, g2]), c.devs(), c.ps(), lambda, standardize, rows.clone()).unwrap();
    let ctx = format!("B={} D={} standardize {standardize} rows {rows:?}", c.b, c.d);
    assert_eq!(got.valid_rows, want.valid_rows, "{ctx}");
    assert!((got.loss - want.loss).abs() <= LOSS_RTOL * want.loss.abs().max(1.0), "{ctx}: loss {} on cuda-sim, {} on the CPU", got.loss, want.loss);
    let gh = host(&g);
    for m in 0..3 {
        assert_close(&format!("{ctx} d{m}"), &gh[m], &want_g[m]);
    }
    (got.loss, gh)
}

#[test]
fn barlow_twins_on_cuda_sim_matches_the_cpu_reference() {
    for (b, d, seed) in [(2usize, 3usize, 41u64), (13, 7, 43), (36, 20, 47)] {
        let c = Case::new(b, d, seed, false, |m, r| b > 2 && (r % (5 + m) == 3 || r == 1));
        for standardize in [true, false] {
            check_barlow(&c, standardize, 0..b);
        }
    }
    // Fewer than two valid rows: zero, with zero gradients written.
    let one = Case::new(5, 4, 51, false, |m, r| m == 0 && r != 2);
    let mut g: Vec<Tensor> = (0..3).map(|_| Tensor::from_vec(&[5, 4], vec![9.0; 20]).to_device(SIM).unwrap()).collect();
    let [g0, g1, g2] = &mut g[..] else { unreachable!() };
    let r = barlow_twins_3d_device(Some([g0, g1, g2]), one.devs(), one.ps(), 0.0051, true, 0..5).unwrap();
    assert_eq!((r.loss, r.valid_rows), (0.0, 1));
    assert!(host(&g).iter().flatten().all(|&v| v == 0.0));
}

#[test]
fn barlow_twins_shares_on_cuda_sim_add_up_and_repeat_bit_for_bit() {
    let c = Case::new(19, 6, 61, false, |m, r| r % (4 + m) == 0);
    for standardize in [true, false] {
        let (full, gfull) = check_barlow(&c, standardize, 0..c.b);
        let (again, gagain) = check_barlow(&c, standardize, 0..c.b);
        assert_eq!(full.to_bits(), again.to_bits(), "loss differs between two runs");
        assert_eq!(gfull, gagain, "gradients differ between two runs");
        let (mut total, mut gsum) = (0.0, vec![vec![0.0f32; c.b * c.d]; 3]);
        for rows in [0..5, 5..12, 12..19] {
            let (l, g) = check_barlow(&c, standardize, rows);
            total += l;
            for (acc, part) in gsum.iter_mut().zip(&g) {
                acc.iter_mut().zip(part).for_each(|(a, p)| *a += p);
            }
        }
        assert!((total - full).abs() <= 1e-10 * full.abs().max(1.0), "shares add up to {total}, full loss {full}");
        for m in 0..3 {
            assert_close(&format!("summed share d{m} (standardize {standardize})"), &gsum[m], &gfull[m]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pre-training with each three-way loss, cuda-sim against the CPU.

fn pretrain(dir: &Path, out: &Path, kind: &str, device: &str) -> Vec<f64> {
    let cfg = common::write_config_with_modalities(dir, out, r#""crystal", "dos", "text""#, "max_steps = 2");
    // The three-way loss, and 12 materials per step (the suite's time: two steps on two devices
    // for each loss).
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(r#"kind = "all_pairs_clip""#, &format!("kind = {kind:?}"))
        .replace("batch_size = 24", "batch_size = 12");
    assert!(text.contains(&format!("kind = {kind:?}")) && text.contains("batch_size = 12"), "the test config changed shape");
    std::fs::write(&cfg, text).unwrap();
    let o = Command::new(common::bin()).args(["pretrain", "--quiet", "--device", device, "--config"]).arg(&cfg).output().unwrap();
    assert!(o.status.success(), "pretrain {kind} on {device} failed: {}", String::from_utf8_lossy(&o.stderr));
    losses(out)
}

#[test]
fn pretraining_with_tensor_clip_and_barlow_twins_on_cuda_sim_follows_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    for kind in ["tensor_clip", "barlow_twins3d"] {
        let cpu = pretrain(&dir.path().join(format!("c-cpu-{kind}")), &dir.path().join(format!("cpu-{kind}")), kind, "cpu");
        let sim = pretrain(&dir.path().join(format!("c-sim-{kind}")), &dir.path().join(format!("sim-{kind}")), kind, "cuda-sim");
        assert_eq!((cpu.len(), sim.len()), (2, 2), "{kind}: two steps each");
        // Step 2's loss is taken after one update from step 1's gradients: it checks those too.
        for (step, (a, b)) in cpu.iter().zip(&sim).enumerate() {
            assert!(a.is_finite() && (a - b).abs() <= 1e-4 * a.abs(), "{kind} step {}: loss {b} on cuda-sim vs {a} on the CPU", step + 1);
        }
        assert_ne!(cpu[0], cpu[1], "{kind}: the first step changed the weights");
    }
}

/// The loss API's inputs: tensors with their modality and presence mask.
fn labelled<'a>(ts: &'a [Tensor], present: &'a [Vec<bool>], mods: &[multimat::loss::Modality]) -> Vec<multimat::loss::ModalityTensor<'a>> {
    (0..3).map(|m| multimat::loss::ModalityTensor { modality: mods[m], data: &ts[m], present: &present[m] }).collect()
}

#[test]
fn the_loss_api_on_cuda_sim_keeps_the_input_order_and_refuses_bad_rows_by_name() {
    use multimat::loss::{LossConfig, LossKind, Modality, MultimodalLoss};
    let (b, d) = (9, 6);
    let c = Case::new(b, d, 71, true, |m, r| m == 1 && r == 4);
    // Inputs in reverse canonical order: gradients come back in that order.
    let mods = [Modality::Text, Modality::Dos, Modality::Crystal];
    for kind in [LossKind::TensorClip, LossKind::BarlowTwins3d] {
        let mut cpu = MultimodalLoss::new(LossConfig::new(kind), &mods).unwrap();
        let mut sim = cpu.clone();
        let host_t: Vec<Tensor> = c.x.iter().map(|v| Tensor::from_vec(&[b, d], v.clone())).collect();
        let want = cpu.forward_backward_tensors(&labelled(&host_t, &c.present, &mods), 0..b, true).unwrap();
        let got = sim.forward_backward_tensors(&labelled(&c.dev, &c.present, &mods), 0..b, true).unwrap();
        assert!((got.loss - want.loss).abs() <= LOSS_RTOL * want.loss.abs().max(1.0), "{kind:?}: {} vs {}", got.loss, want.loss);
        assert_eq!(got.terms[0].name, want.terms[0].name);
        assert_eq!(got.terms[0].valid_rows, want.terms[0].valid_rows);
        for (m, (g, w)) in got.grads.iter().zip(&want.grads).enumerate() {
            assert_eq!(g.device(), SIM, "gradients stay on the device");
            assert_close(&format!("{kind:?} input {m}"), &g.to_host().unwrap(), w.data());
        }
        // A NaN in a present row is refused, naming the modality and the batch row.
        let mut bad = c.x[2].clone();
        bad[3 * d + 2] = f32::NAN;
        let bad_t = Tensor::from_vec(&[b, d], bad).to_device(SIM).unwrap();
        let mut inputs = labelled(&c.dev, &c.present, &mods);
        inputs[2].data = &bad_t;
        let err = format!("{:#}", sim.forward_backward_tensors(&inputs, 0..b, true).unwrap_err());
        assert!(err.contains("crystal") && err.contains("batch row 3") && err.contains("non-finite"), "{kind:?}: {err}");
    }
    // TensorCLIP needs L2-normalised rows; BarlowTwins takes raw ones.
    let raw = Case::new(b, d, 73, false, |_, _| false);
    let inputs = labelled(&raw.dev, &raw.present, &mods);
    let mut tclip = MultimodalLoss::new(LossConfig::new(LossKind::TensorClip), &mods).unwrap();
    let err = format!("{:#}", tclip.forward_backward_tensors(&inputs, 0..b, true).unwrap_err());
    assert!(err.contains("L2 norm"), "{err}");
    let mut barlow = MultimodalLoss::new(LossConfig::new(LossKind::BarlowTwins3d), &mods).unwrap();
    assert!(barlow.forward_backward_tensors(&inputs, 0..b, true).unwrap().loss.is_finite());
}
