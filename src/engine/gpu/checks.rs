//! Op checks: every GPU op run once on a device and compared with its CPU reference on the same
//! random inputs. One list serves three callers — the test suite on `cuda-sim` (every kernel's
//! own CUDA source, executed on the CPU), `multimat doctor --device cuda|cuda-sim` (one line per
//! op with its largest error and tolerance), and `scripts/gpu-check.sh` on a real GPU.
//!
//! Each check runs twice on the device and the two device results must be bit-identical.
//!
//! Tolerances are |gpu − cpu| ≤ abs + rel·|cpu|, stated per check with the reason: exact for
//! copies and single adds; a few f32 ulps for transcendental functions (the GPU's expf/erff differ
//! from libm's by ≤ 2 ulp); GEMM-based ops ~1e-5 relative (cuBLAS and the CPU GEMM sum in
//! different orders; K ≤ 64 terms of O(1) here), 1e-2 with TF32.

use crate::engine::gradcheck::random_vec;
use crate::engine::ops;
use crate::engine::tensor::{Device, Tensor};
use anyhow::{bail, Result};

/// One op's check: its name, the kernels it exercises, and the comparison.
pub struct OpCheck {
    pub name: &'static str,
    pub kernels: &'static [&'static str],
    pub run: fn(Device) -> Result<Comparison>,
}

/// Largest error found, and the tolerance it was held to.
#[derive(Clone, Copy, Debug)]
pub struct Comparison {
    /// max over values of |gpu − cpu| / (abs + rel·|cpu|): ≤ 1 passes.
    pub worst_ratio: f64,
    pub max_abs_err: f64,
    pub abs: f64,
    pub rel: f64,
    /// Hash of every device result's bits: two runs of a deterministic op agree on it.
    pub device_hash: u64,
}

impl Comparison {
    pub fn passed(&self) -> bool {
        self.worst_ratio <= 1.0
    }

    /// The worse of two comparisons of one check (parts held to different tolerances); the
    /// device hash covers both parts' results.
    pub fn worst_of(self, other: Comparison) -> Comparison {
        let hash = self.device_hash.rotate_left(1) ^ other.device_hash;
        let worse = if other.worst_ratio > self.worst_ratio { other } else { self };
        Comparison { device_hash: hash, ..worse }
    }
}

/// Compares named device results with CPU ones; the worst value decides.
pub fn compare(pairs: &[(&str, &Tensor, &Tensor)], abs: f64, rel: f64) -> Result<Comparison> {
    let mut c = Comparison { worst_ratio: 0.0, max_abs_err: 0.0, abs, rel, device_hash: 0 };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (what, dev, cpu) in pairs {
        if dev.shape != cpu.shape {
            bail!("{what}: shape {:?} on the device, {:?} on the CPU", dev.shape, cpu.shape);
        }
        let d = dev.to_host()?;
        std::hash::Hash::hash(&d.iter().map(|v| v.to_bits()).collect::<Vec<u32>>(), &mut h);
        for (i, (&x, &y)) in d.iter().zip(cpu.data()).enumerate() {
            let err = (x as f64 - y as f64).abs();
            if !err.is_finite() && !(x.is_nan() && y.is_nan()) && x != y {
                bail!("{what}[{i}]: {x} on the device, {y} on the CPU");
            }
            let ratio = if err.is_finite() { err / (abs + rel * (y as f64).abs()) } else { 0.0 };
            c.max_abs_err = c.max_abs_err.max(if err.is_finite() { err } else { 0.0 });
            c.worst_ratio = c.worst_ratio.max(ratio);
        }
    }
    c.device_hash = std::hash::Hasher::finish(&h);
    Ok(c)
}

pub(crate) fn rand(shape: &[usize], seed: u64) -> Tensor {
    Tensor::from_vec(shape, random_vec(shape.iter().product(), seed, 1.0))
}

pub(crate) fn on(t: &Tensor, d: Device) -> Result<Tensor> {
    t.to_device(d)
}

fn check_elementwise(d: Device) -> Result<Comparison> {
    let (a, b) = (rand(&[37, 19], 1), rand(&[37, 19], 2));
    let (ga, gb) = (on(&a, d)?, on(&b, d)?);
    let sum = ops::add(&a, &b);
    let gsum = ops::add(&ga, &gb);
    let prod = crate::engine::ops::elementwise::mul(&a, &b);
    let gprod = crate::engine::ops::elementwise::mul(&ga, &gb);
    let (mut acc, mut gacc) = (a.clone(), ga.clone());
    ops::add_assign(&mut acc, &b);
    ops::add_assign(&mut gacc, &gb);
    let c = rand(&[37, 5], 3);
    let cat = ops::concat_last(&[&a, &c, &b]);
    let gcat = ops::concat_last(&[&ga, &on(&c, d)?, &gb]);
    let parts = ops::split_last(&cat, &[19, 5, 19]);
    let gparts = ops::split_last(&gcat, &[19, 5, 19]);
    let (mut f, mut gf) = (a.clone(), ga.clone());
    ops::fill(&mut f, 0.25);
    ops::fill(&mut gf, 0.25);
    // Exact: every output is one add or one copy.
    compare(
        &[("add", &gsum, &sum), ("mul", &gprod, &prod), ("add_assign", &gacc, &acc), ("concat_last", &gcat, &cat), ("split_last[1]", &gparts[1], &parts[1]), ("split_last[2]", &gparts[2], &parts[2]), ("fill", &gf, &f)],
        0.0,
        0.0,
    )
}

fn check_linear(d: Device) -> Result<Comparison> {
    let (c, oc) = (33, 17);
    let (x, w, b, dy) = (rand(&[3, 15, c], 4), rand(&[oc, c], 5), rand(&[oc], 6), rand(&[3, 15, oc], 7));
    let (gx, gw, gb, gdy) = (on(&x, d)?, on(&w, d)?, on(&b, d)?, on(&dy, d)?);
    let y = ops::linear(&x, &w, Some(&b));
    let gy = ops::linear(&gx, &gw, Some(&gb));
    // Gradients accumulate into non-zero buffers, as across micro-steps.
    let (mut dw, mut db) = (rand(&[oc, c], 8), rand(&[oc], 9));
    let (mut gdw, mut gdb) = (on(&dw, d)?, on(&db, d)?);
    let dx = ops::linear_grad(&dy, &x, &w, &mut dw, Some(&mut db), true).unwrap();
    let gdx = ops::linear_grad(&gdy, &gx, &gw, &mut gdw, Some(&mut gdb), true).unwrap();
    // GEMMs sum ≤ 45 products of O(1) terms in a different order than the CPU's GEMM: 1e-5
    // relative plus 1e-5 absolute for values that cancel to near zero.
    compare(&[("y", &gy, &y), ("dx", &gdx, &dx), ("dW", &gdw, &dw), ("db", &gdb, &db)], 1e-5, 1e-5)
}

/// The checks of this file's ops (each kernel family's launcher file has a `checks()` like it).
fn core_checks() -> Vec<OpCheck> {
    vec![
        OpCheck { name: "elementwise (fill, add, add_assign, concat/split)", kernels: &["fill_f32", "add_f32", "mul_f32", "axpy_f32", "copy_columns_f32"], run: check_elementwise },
        OpCheck { name: "linear (cuBLAS GEMMs + bias)", kernels: &["add_bias_rows_f32", "bias_grad_f32"], run: check_linear },
    ]
}

/// Runs every check on `device` twice — the device results must be bit-identical between the
/// runs (determinism) — catching a panicking op so one broken kernel cannot hide the others.
pub fn run_all(device: Device) -> Vec<(&'static str, Result<Comparison>)> {
    let once = |c: &OpCheck| {
        std::panic::catch_unwind(|| (c.run)(device)).unwrap_or_else(|p| {
            let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
            Err(anyhow::anyhow!("panicked: {}", msg.unwrap_or_default()))
        })
    };
    all()
        .into_iter()
        .map(|c| {
            let r = once(&c).and_then(|first| {
                let second = once(&c)?;
                if second.device_hash != first.device_hash {
                    bail!("not deterministic: two runs with the same inputs gave different device results");
                }
                Ok(first)
            });
            (c.name, r)
        })
        .collect()
}

/// Every op check, in the order `doctor` prints them: one line per family's `checks()`.
#[allow(unused_mut)]
pub fn all() -> Vec<OpCheck> {
    let mut v = core_checks();
    // Each kernel family appends its own, one line each: v.extend(super::<family>::checks());
    v.extend(super::layernorm::checks());
    v.extend(super::attention::checks());
    v.extend(super::masked_mean::checks());
    v.extend(super::dropout::checks());
    v.extend(super::embedding::checks());
    v.extend(super::activation::checks());
    v.extend(super::batchnorm::checks());
    v.extend(super::gather::checks());
    v.extend(super::rbf::checks());
    v.extend(super::segment::checks());
    v.extend(super::adamw::checks());
    v.extend(super::l2norm::checks());
    v.extend(super::mse::checks());
    v.extend(super::infonce::checks());
    v.extend(super::topk::checks());
    v.extend(super::tensor_clip::checks());
    v.extend(super::barlow_twins::checks());
    v.extend(super::conv3d::checks());
    v.extend(super::pool3d::checks());
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::backend::{gpu, kernels, GpuKind};

    /// Every op's GPU code — launchers, launch configurations and each kernel's own CUDA source —
    /// runs on the simulator and matches the CPU reference within its stated tolerance, twice with
    /// identical device results; and every kernel compiled into the build has run.
    #[test]
    fn every_gpu_op_matches_its_cpu_reference_on_cuda_sim() {
        let failures: Vec<String> = run_all(Device::CudaSim)
            .into_iter()
            .filter_map(|(name, r)| match r {
                Ok(c) if c.passed() => None,
                Ok(c) => Some(format!("{name}: {c:?}")),
                Err(e) => Some(format!("{name}: {e:#}")),
            })
            .collect();
        assert!(failures.is_empty(), "GPU ops differing from the CPU reference on cuda-sim:\n{}", failures.join("\n"));
        let g = gpu(Device::CudaSim).unwrap();
        let GpuKind::Sim(mem) = &g.kind else { unreachable!() };
        let launched = mem.launched_kernels();
        // The simulator's own self-test kernels are exercised by its tests (engine::backend::sim).
        let never: Vec<&str> = kernels::KERNELS.iter().filter(|k| k.source != "selftest" && !launched.contains(k.name)).map(|k| k.name).collect();
        assert!(never.is_empty(), "kernels no op check runs (add them to a family's checks()): {never:?}");
    }
}
