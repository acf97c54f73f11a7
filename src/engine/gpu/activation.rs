//! Launchers of `kernels/activation.cu` (ReLU, sigmoid, SiLU, softplus, GELU erf/tanh; forward
//! and backward, grid-stride over the flattened tensor).

use super::checks::{compare, on, rand, Comparison, OpCheck};
use super::ELEMENTWISE_THREADS;
use crate::engine::backend::{arg, Gpu, GpuVec, Kernel, LaunchConfig};
use crate::engine::ops::activation::{activate, activate_grad, Activation};
use crate::engine::ops::gelu::GeluKind;
use crate::engine::tensor::{Device, Tensor};
use anyhow::{bail, Result};

const fn k(name: &'static str) -> Kernel {
    Kernel { family: "activation", name }
}

/// The (forward, backward) kernels of an activation, and its softplus parameters if any.
fn kernels(kind: Activation) -> Result<(Kernel, Kernel, Option<(f32, f32)>)> {
    Ok(match kind {
        Activation::Relu => (k("relu_forward"), k("relu_backward"), None),
        Activation::Sigmoid => (k("sigmoid_forward"), k("sigmoid_backward"), None),
        Activation::Silu => (k("silu_forward"), k("silu_backward"), None),
        Activation::Gelu(GeluKind::Erf) => (k("gelu_erf_forward"), k("gelu_erf_backward"), None),
        Activation::Gelu(GeluKind::Tanh) => (k("gelu_tanh_forward"), k("gelu_tanh_backward"), None),
        Activation::Softplus { beta, threshold } => (k("softplus_forward"), k("softplus_backward"), Some((beta, threshold))),
        Activation::Identity => bail!("the identity has no kernel (the op returns its input)"),
    })
}

/// out = act(inp).
pub fn forward(g: &Gpu, kind: Activation, out: &mut GpuVec<f32>, inp: &GpuVec<f32>) -> Result<()> {
    let n = inp.len();
    if n == 0 {
        return Ok(());
    }
    let (fwd, _, softplus) = kernels(kind)?;
    let (po, pi, nn) = (out.ptr(), inp.ptr(), n as i64);
    let cfg = LaunchConfig::elementwise(n, ELEMENTWISE_THREADS);
    match softplus {
        Some((beta, threshold)) => g.launch(fwd, cfg, &mut [arg(&po), arg(&pi), arg(&nn), arg(&beta), arg(&threshold)]),
        None => g.launch(fwd, cfg, &mut [arg(&po), arg(&pi), arg(&nn)]),
    }
}

/// dinp = act'(inp) · dout (written).
pub fn backward(g: &Gpu, kind: Activation, dinp: &mut GpuVec<f32>, dout: &GpuVec<f32>, inp: &GpuVec<f32>) -> Result<()> {
    let n = inp.len();
    if n == 0 {
        return Ok(());
    }
    let (_, bwd, softplus) = kernels(kind)?;
    let (pd, pg, pi, nn) = (dinp.ptr(), dout.ptr(), inp.ptr(), n as i64);
    let cfg = LaunchConfig::elementwise(n, ELEMENTWISE_THREADS);
    match softplus {
        Some((beta, threshold)) => g.launch(bwd, cfg, &mut [arg(&pd), arg(&pg), arg(&pi), arg(&nn), arg(&beta), arg(&threshold)]),
        None => g.launch(bwd, cfg, &mut [arg(&pd), arg(&pg), arg(&pi), arg(&nn)]),
    }
}

/// Every activation on 3 000 inputs spread over ±12 (both tails, softplus's threshold region).
/// The CPU evaluates exp with a polynomial (≤ 2 ulp) and GELU-erf in double; the kernels use
/// expf/erfcf in float (≤ 2 ulp each), and formulas with a few more roundings: 2e-6 absolute
/// (values that cancel near 0) + 1e-5 relative. ReLU and identity are exact anyway.
fn check_activations(d: Device) -> Result<Comparison> {
    let n = 3000;
    let x = Tensor::from_vec(&[n], rand(&[n], 71).data().iter().map(|v| 12.0 * v).collect());
    let dy = rand(&[n], 72);
    let (gx, gdy) = (on(&x, d)?, on(&dy, d)?);
    let kinds = [
        Activation::Identity,
        Activation::Relu,
        Activation::Sigmoid,
        Activation::Silu,
        Activation::Gelu(GeluKind::Erf),
        Activation::Gelu(GeluKind::Tanh),
        Activation::SOFTPLUS,
        Activation::Softplus { beta: 2.0, threshold: 5.0 },
    ];
    let mut worst: Option<Comparison> = None;
    for kind in kinds {
        let (y, gy) = (activate(kind, &x), activate(kind, &gx));
        let (dx, gdx) = (activate_grad(kind, &dy, &x), activate_grad(kind, &gdy, &gx));
        let c = compare(&[("y", &gy, &y), ("dx", &gdx, &dx)], 2e-6, 1e-5).map_err(|e| e.context(format!("{kind:?}")))?;
        worst = Some(worst.map_or(c, |w| w.worst_of(c)));
    }
    Ok(worst.expect("at least one activation"))
}

pub fn checks() -> Vec<OpCheck> {
    vec![OpCheck {
        name: "activations (relu, sigmoid, silu, gelu erf/tanh, softplus)",
        kernels: &[
            "relu_forward", "relu_backward", "sigmoid_forward", "sigmoid_backward", "silu_forward", "silu_backward", "gelu_erf_forward",
            "gelu_erf_backward", "gelu_tanh_forward", "gelu_tanh_backward", "softplus_forward", "softplus_backward",
        ],
        run: check_activations,
    }]
}
