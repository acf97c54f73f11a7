//! The fifth GPU primitive: a 3-D convolution as one cuDNN call, described by a [`ConvDesc`]
//! (NCDHW input, filter (OC, C/groups, kD, kH, kW), NCDHW output; pads, strides, dilation,
//! groups) and a [`ConvPass`] (forward, backward-data, backward-filter).
//!
//! The descriptor is checked the way cuDNN checks it (`CUDNN_STATUS_BAD_PARAM` /
//! `NOT_SUPPORTED` cases of `cudnnSetTensorNdDescriptor`, `cudnnSetFilterNdDescriptor`,
//! `cudnnSetConvolutionNdDescriptor` + group count, and the output size rule of
//! `cudnnGetConvolutionNdForwardOutputDim`) before either arm runs it:
//! - on `cuda`, [`run_cuda`] builds the cuDNN descriptors, asks cuDNN's heuristics
//!   (`cudnnGet*Algorithm_v7`) for its ranked algorithms and takes the best one that reports
//!   `CUDNN_DETERMINISTIC` (resume must stay exact on a given GPU type), with a workspace from
//!   the device's caching allocator; the choice is cached per descriptor;
//! - on `cuda-sim`, [`run_on_host`] executes the same descriptor with the CPU convolution
//!   (`engine::ops::conv3d`, im2col + GEMM), so the translation from a layer's sizes to a
//!   descriptor and the operand roles of each pass are tested where there is no GPU.
//!
//! Operands are always named after the forward convolution: `x` the input (or dx), `w` the
//! filter (or dw), `y` the output (or dy). Forward writes y = conv(x, w); backward-data writes
//! dx = convᵀ(dy, w); backward-filter accumulates dw += corr(x, dy) (cuDNN's β = 1), matching
//! the engine's rule that parameter gradients accumulate and input gradients are written.
//!
//! Precision: fp32 data and compute. With TF32 off the convolution's math type is
//! `CUDNN_FMA_MATH` (no tensor-core rounding); with TF32 on, `CUDNN_DEFAULT_MATH` lets cuDNN
//! use TF32 tensor cores (results then agree with fp32 to ~1e-3 relative).

use super::GpuKind;
use crate::engine::ops::conv3d::{Conv3dDims, Window3d};
use anyhow::{bail, Result};

/// Which of the three convolution computations a call runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvPass {
    /// y = conv(x, w) (written).
    Forward,
    /// dx = convᵀ(dy, w) (written).
    BackwardData,
    /// dw += corr(x, dy) (accumulated).
    BackwardFilter,
}

/// One grouped 3-D cross-correlation (PyTorch's and cuDNN's `CROSS_CORRELATION` mode), NCDHW.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvDesc {
    /// Batch N.
    pub n: usize,
    /// Input channels C.
    pub c: usize,
    /// Input volume (D, H, W).
    pub in_dims: [usize; 3],
    /// Output channels OC.
    pub oc: usize,
    /// Filter extent (kD, kH, kW).
    pub kernel: [usize; 3],
    pub pad: [usize; 3],
    pub stride: [usize; 3],
    pub dilation: [usize; 3],
    pub groups: usize,
}

/// Largest element count cuDNN's Nd tensor and filter descriptors (int32 strides) address.
const MAX_ELEMENTS: usize = i32::MAX as usize;

impl ConvDesc {
    /// The descriptor of a layer's convolution (the engine's convolutions have no dilation).
    pub fn from_dims(d: &Conv3dDims) -> ConvDesc {
        ConvDesc {
            n: d.n,
            c: d.c,
            in_dims: d.in_dims,
            oc: d.oc,
            kernel: d.window.kernel,
            pad: d.window.padding,
            stride: d.window.stride,
            dilation: [1; 3],
            groups: d.groups,
        }
    }

    /// Output volume, per axis 1 + (in + 2·pad − ((k − 1)·dilation + 1)) / stride, as
    /// `cudnnGetConvolutionNdForwardOutputDim` computes it (0 where the dilated filter does not
    /// fit the padded input; [`ConvDesc::check`] refuses that).
    pub fn out_dims(&self) -> [usize; 3] {
        std::array::from_fn(|a| {
            let padded = self.in_dims[a] + 2 * self.pad[a];
            let span = (self.kernel[a].max(1) - 1) * self.dilation[a] + 1;
            if padded < span || self.stride[a] == 0 { 0 } else { (padded - span) / self.stride[a] + 1 }
        })
    }

    pub fn input_len(&self) -> usize {
        self.n * self.c * self.in_dims.iter().product::<usize>()
    }

    pub fn output_len(&self) -> usize {
        self.n * self.oc * self.out_dims().iter().product::<usize>()
    }

    pub fn weight_len(&self) -> usize {
        self.oc * (self.c / self.groups.max(1)) * self.kernel.iter().product::<usize>()
    }

    /// cuDNN's argument checks, with the reason a GPU would refuse the call.
    pub fn check(&self) -> Result<()> {
        let dims = [self.n, self.c, self.in_dims[0], self.in_dims[1], self.in_dims[2]];
        if dims.contains(&0) {
            bail!("convolution input (N, C, D, H, W) = {dims:?}: every dimension must be positive (cuDNN: BAD_PARAM)");
        }
        if self.oc == 0 || self.kernel.contains(&0) {
            bail!("convolution filter ({}, ·, {:?}): output channels and kernel extents must be positive (cuDNN: BAD_PARAM)", self.oc, self.kernel);
        }
        if self.stride.contains(&0) || self.dilation.contains(&0) {
            bail!("convolution strides {:?} and dilations {:?} must be positive (cuDNN: BAD_PARAM)", self.stride, self.dilation);
        }
        if self.groups == 0 || self.c % self.groups != 0 || self.oc % self.groups != 0 {
            bail!("convolution groups {} must divide the input channels {} and output channels {} (cuDNN: BAD_PARAM)", self.groups, self.c, self.oc);
        }
        if self.out_dims().contains(&0) {
            bail!(
                "convolution output would be empty: input {:?}, padding {:?}, dilated kernel {:?} (cuDNN: BAD_PARAM)",
                self.in_dims,
                self.pad,
                std::array::from_fn::<usize, 3, _>(|a| (self.kernel[a] - 1) * self.dilation[a] + 1)
            );
        }
        let every = [self.n, self.c, self.oc, self.groups]
            .into_iter()
            .chain(self.in_dims)
            .chain(self.kernel)
            .chain(self.pad)
            .chain(self.stride)
            .chain(self.dilation);
        if every.into_iter().any(|v| v > i32::MAX as usize) {
            bail!("convolution {self:?}: a size exceeds cuDNN's int32 arguments");
        }
        for (what, len) in [("input", self.input_len()), ("output", self.output_len()), ("filter", self.weight_len())] {
            if len > MAX_ELEMENTS {
                bail!("convolution {what} has {len} elements: cuDNN's Nd descriptors address at most 2^31 − 1 (NOT_SUPPORTED); split the batch");
            }
        }
        Ok(())
    }

    /// The engine's convolution sizes of this descriptor (dilation 1 only: the CPU convolution,
    /// which executes descriptors on `cuda-sim`, has no dilation).
    pub fn conv3d_dims(&self) -> Result<Conv3dDims> {
        if self.dilation != [1; 3] {
            bail!("convolution dilation {:?}: cuda-sim executes convolutions with the CPU conv3d, which has no dilation", self.dilation);
        }
        Ok(Conv3dDims { n: self.n, c: self.c, in_dims: self.in_dims, oc: self.oc, groups: self.groups, window: Window3d::new(self.kernel, self.stride, self.pad) })
    }

    /// Element counts of the (x, w, y) operands.
    pub fn extents(&self) -> [usize; 3] {
        [self.input_len(), self.weight_len(), self.output_len()]
    }
}

/// `cuda-sim`: runs `pass` of `d` on the host with the CPU convolution.
///
/// # Safety
/// `x`, `w`, `y` must be host addresses of at least [`ConvDesc::extents`] f32 values each (the
/// caller checks them against the simulator's live allocations), not overlapping the written one.
pub unsafe fn run_on_host(d: &ConvDesc, pass: ConvPass, x: u64, w: u64, y: u64) -> Result<()> {
    use crate::engine::ops::conv3d::{conv3d_backward, conv3d_forward};
    let dims = d.conv3d_dims()?;
    let [xl, wl, yl] = d.extents();
    let (xp, wp, yp) = (x as *mut f32, w as *mut f32, y as *mut f32);
    match pass {
        ConvPass::Forward => {
            let out = std::slice::from_raw_parts_mut(yp, yl);
            conv3d_forward(out, std::slice::from_raw_parts(xp, xl), std::slice::from_raw_parts(wp, wl), None, &dims);
        }
        ConvPass::BackwardData => {
            // The CPU backward computes dW alongside dx; a scratch dW takes it (the simulator
            // trades that time for reusing the reference's exact dx).
            let mut scratch = vec![0.0f32; wl];
            let dx = std::slice::from_raw_parts_mut(xp, xl);
            conv3d_backward(Some(dx), &mut scratch, None, std::slice::from_raw_parts(yp, yl), &vec![0.0f32; xl], std::slice::from_raw_parts(wp, wl), &dims);
        }
        ConvPass::BackwardFilter => {
            let dw = std::slice::from_raw_parts_mut(wp, wl);
            // The input is only read by the dW GEMM; the weight only by dx, which is not asked for.
            conv3d_backward(None, dw, None, std::slice::from_raw_parts(yp, yl), std::slice::from_raw_parts(xp, xl), &vec![0.0f32; wl], &dims);
        }
    }
    Ok(())
}

/// Which kind runs a checked descriptor (kept here so the GPU boundary in `mod.rs` stays one
/// match per primitive).
pub(super) fn dispatch(g: &std::sync::Arc<super::Gpu>, d: &ConvDesc, pass: ConvPass, x: u64, w: u64, y: u64) -> Result<()> {
    d.check()?;
    let [xl, wl, yl] = d.extents();
    match &g.kind {
        GpuKind::Sim(m) => {
            m.check_range(x, xl * 4, "x")?;
            m.check_range(w, wl * 4, "w")?;
            m.check_range(y, yl * 4, "y")?;
            // SAFETY: every operand lies inside a live allocation of its descriptor's size (checked).
            unsafe { run_on_host(d, pass, x, w, y) }
        }
        GpuKind::Cuda(cu) => run_cuda(g, cu, d, pass, x, w, y),
    }
}

/// `cuda`: one cuDNN call (descriptors, a deterministic algorithm, a pooled workspace).
fn run_cuda(g: &std::sync::Arc<super::Gpu>, cu: &super::cuda::CudaGpu, d: &ConvDesc, pass: ConvPass, x: u64, w: u64, y: u64) -> Result<()> {
    use cudarc::cudnn::sys as dnn;
    let handle = cu.cudnn_handle()?;
    let tf32 = g.tf32();
    let descs = Descriptors::new(d, tf32)?;
    let (algo, workspace_bytes) = cu.cached_conv_algo((*d, pass, tf32), || descs.choose(handle, pass))?;
    let workspace = g.uninit::<u8>(workspace_bytes.max(1))?;
    let ws = workspace.ptr() as *mut std::ffi::c_void;
    let (zero, one) = (0.0f32, 1.0f32);
    let (xp, wp, yp) = (x as *mut std::ffi::c_void, w as *mut std::ffi::c_void, y as *mut std::ffi::c_void);
    let one_p = &one as *const f32 as *const std::ffi::c_void;
    let zero_p = &zero as *const f32 as *const std::ffi::c_void;
    // SAFETY: the descriptors describe the operands, which are live device buffers of the
    // descriptor's sizes (the launchers size them from the same ConvDesc); the workspace is at
    // least the size cuDNN asked for and lives until the call is queued — it returns to the pool
    // afterwards, and every later use of that block is queued behind this call on the one stream.
    let status = unsafe {
        match (pass, algo) {
            (ConvPass::Forward, Algo::Fwd(a)) => dnn::cudnnConvolutionForward(handle, one_p, descs.x, xp, descs.w, wp, descs.conv, a, ws, workspace_bytes, zero_p, descs.y, yp),
            (ConvPass::BackwardData, Algo::Data(a)) => dnn::cudnnConvolutionBackwardData(handle, one_p, descs.w, wp, descs.y, yp, descs.conv, a, ws, workspace_bytes, zero_p, descs.x, xp),
            (ConvPass::BackwardFilter, Algo::Filter(a)) => dnn::cudnnConvolutionBackwardFilter(handle, one_p, descs.x, xp, descs.y, yp, descs.conv, a, ws, workspace_bytes, one_p, descs.w, wp),
            _ => bail!("internal: cached algorithm {algo:?} does not belong to {pass:?}"),
        }
    };
    drop(workspace);
    check(status, "cudnnConvolution")
}

/// A chosen cuDNN algorithm of one pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algo {
    Fwd(cudarc::cudnn::sys::cudnnConvolutionFwdAlgo_t),
    Data(cudarc::cudnn::sys::cudnnConvolutionBwdDataAlgo_t),
    Filter(cudarc::cudnn::sys::cudnnConvolutionBwdFilterAlgo_t),
}

pub(super) fn check(s: cudarc::cudnn::sys::cudnnStatus_t, what: &str) -> Result<()> {
    if s == cudarc::cudnn::sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS {
        Ok(())
    } else {
        bail!("{what} failed: {s:?}")
    }
}

/// The cuDNN descriptors of one [`ConvDesc`], destroyed on drop.
struct Descriptors {
    x: cudarc::cudnn::sys::cudnnTensorDescriptor_t,
    y: cudarc::cudnn::sys::cudnnTensorDescriptor_t,
    w: cudarc::cudnn::sys::cudnnFilterDescriptor_t,
    conv: cudarc::cudnn::sys::cudnnConvolutionDescriptor_t,
}

/// Fully packed NCDHW strides of `dims`.
fn packed_strides(dims: [i32; 5]) -> [i32; 5] {
    let mut s = [1i32; 5];
    for a in (0..4).rev() {
        s[a] = s[a + 1] * dims[a + 1];
    }
    s
}

impl Descriptors {
    fn new(d: &ConvDesc, tf32: bool) -> Result<Descriptors> {
        use cudarc::cudnn::sys as dnn;
        let i = |v: usize| v as i32; // every size was checked against i32 by ConvDesc::check
        let xd = [i(d.n), i(d.c), i(d.in_dims[0]), i(d.in_dims[1]), i(d.in_dims[2])];
        let o = d.out_dims();
        let yd = [i(d.n), i(d.oc), i(o[0]), i(o[1]), i(o[2])];
        let wd = [i(d.oc), i(d.c / d.groups), i(d.kernel[0]), i(d.kernel[1]), i(d.kernel[2])];
        let pad = d.pad.map(i);
        let stride = d.stride.map(i);
        let dilation = d.dilation.map(i);
        let mut s = Descriptors { x: std::ptr::null_mut(), y: std::ptr::null_mut(), w: std::ptr::null_mut(), conv: std::ptr::null_mut() };
        // SAFETY: creating and filling descriptors from local arrays of the stated lengths; a
        // failure leaves `s` with the handles created so far, which Drop destroys.
        unsafe {
            check(dnn::cudnnCreateTensorDescriptor(&mut s.x), "cudnnCreateTensorDescriptor")?;
            check(dnn::cudnnCreateTensorDescriptor(&mut s.y), "cudnnCreateTensorDescriptor")?;
            check(dnn::cudnnCreateFilterDescriptor(&mut s.w), "cudnnCreateFilterDescriptor")?;
            check(dnn::cudnnCreateConvolutionDescriptor(&mut s.conv), "cudnnCreateConvolutionDescriptor")?;
            let f32t = dnn::cudnnDataType_t::CUDNN_DATA_FLOAT;
            check(dnn::cudnnSetTensorNdDescriptor(s.x, f32t, 5, xd.as_ptr(), packed_strides(xd).as_ptr()), "cudnnSetTensorNdDescriptor(x)")?;
            check(dnn::cudnnSetTensorNdDescriptor(s.y, f32t, 5, yd.as_ptr(), packed_strides(yd).as_ptr()), "cudnnSetTensorNdDescriptor(y)")?;
            check(dnn::cudnnSetFilterNdDescriptor(s.w, f32t, dnn::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW, 5, wd.as_ptr()), "cudnnSetFilterNdDescriptor")?;
            check(
                dnn::cudnnSetConvolutionNdDescriptor(s.conv, 3, pad.as_ptr(), stride.as_ptr(), dilation.as_ptr(), dnn::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION, f32t),
                "cudnnSetConvolutionNdDescriptor",
            )?;
            check(dnn::cudnnSetConvolutionGroupCount(s.conv, i(d.groups)), "cudnnSetConvolutionGroupCount")?;
            let math = if tf32 { dnn::cudnnMathType_t::CUDNN_DEFAULT_MATH } else { dnn::cudnnMathType_t::CUDNN_FMA_MATH };
            check(dnn::cudnnSetConvolutionMathType(s.conv, math), "cudnnSetConvolutionMathType")?;
        }
        Ok(s)
    }

    /// The best-ranked deterministic algorithm of cuDNN's heuristics for `pass`, and its
    /// workspace size.
    fn choose(&self, h: cudarc::cudnn::sys::cudnnHandle_t, pass: ConvPass) -> Result<(Algo, usize)> {
        use cudarc::cudnn::sys as dnn;
        const REQUESTED: usize = 16;
        let mut count = 0i32;
        let deterministic = dnn::cudnnDeterminism_t::CUDNN_DETERMINISTIC;
        let ok = dnn::cudnnStatus_t::CUDNN_STATUS_SUCCESS;
        // SAFETY: the perf arrays hold REQUESTED entries and cuDNN writes at most that many;
        // the workspace queries write one usize each.
        unsafe {
            let pick = match pass {
                ConvPass::Forward => {
                    let mut perf: [dnn::cudnnConvolutionFwdAlgoPerf_t; REQUESTED] = std::mem::zeroed();
                    check(dnn::cudnnGetConvolutionForwardAlgorithm_v7(h, self.x, self.w, self.conv, self.y, REQUESTED as i32, &mut count, perf.as_mut_ptr()), "cudnnGetConvolutionForwardAlgorithm_v7")?;
                    perf[..count.max(0) as usize].iter().find(|p| p.status == ok && p.determinism == deterministic).map(|p| (Algo::Fwd(p.algo), p.mathType))
                }
                ConvPass::BackwardData => {
                    let mut perf: [dnn::cudnnConvolutionBwdDataAlgoPerf_t; REQUESTED] = std::mem::zeroed();
                    check(dnn::cudnnGetConvolutionBackwardDataAlgorithm_v7(h, self.w, self.y, self.conv, self.x, REQUESTED as i32, &mut count, perf.as_mut_ptr()), "cudnnGetConvolutionBackwardDataAlgorithm_v7")?;
                    perf[..count.max(0) as usize].iter().find(|p| p.status == ok && p.determinism == deterministic).map(|p| (Algo::Data(p.algo), p.mathType))
                }
                ConvPass::BackwardFilter => {
                    let mut perf: [dnn::cudnnConvolutionBwdFilterAlgoPerf_t; REQUESTED] = std::mem::zeroed();
                    check(dnn::cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, self.x, self.y, self.conv, self.w, REQUESTED as i32, &mut count, perf.as_mut_ptr()), "cudnnGetConvolutionBackwardFilterAlgorithm_v7")?;
                    perf[..count.max(0) as usize].iter().find(|p| p.status == ok && p.determinism == deterministic).map(|p| (Algo::Filter(p.algo), p.mathType))
                }
            };
            let Some((algo, math)) = pick else {
                bail!("cuDNN's heuristics offer no deterministic algorithm for the {pass:?} pass of this convolution ({count} candidates)");
            };
            // The algorithm was ranked for this math type (as PyTorch does, the descriptor takes it).
            check(dnn::cudnnSetConvolutionMathType(self.conv, math), "cudnnSetConvolutionMathType")?;
            let mut bytes = 0usize;
            let st = match algo {
                Algo::Fwd(a) => dnn::cudnnGetConvolutionForwardWorkspaceSize(h, self.x, self.w, self.conv, self.y, a, &mut bytes),
                Algo::Data(a) => dnn::cudnnGetConvolutionBackwardDataWorkspaceSize(h, self.w, self.y, self.conv, self.x, a, &mut bytes),
                Algo::Filter(a) => dnn::cudnnGetConvolutionBackwardFilterWorkspaceSize(h, self.x, self.y, self.conv, self.w, a, &mut bytes),
            };
            check(st, "cudnnGetConvolution*WorkspaceSize")?;
            Ok((algo, bytes))
        }
    }
}

impl Drop for Descriptors {
    fn drop(&mut self) {
        use cudarc::cudnn::sys as dnn;
        // SAFETY: each non-null handle was created by the matching cudnnCreate* and is destroyed
        // once; the calls that used them have been queued (cuDNN copies descriptor contents).
        unsafe {
            if !self.x.is_null() {
                dnn::cudnnDestroyTensorDescriptor(self.x);
            }
            if !self.y.is_null() {
                dnn::cudnnDestroyTensorDescriptor(self.y);
            }
            if !self.w.is_null() {
                dnn::cudnnDestroyFilterDescriptor(self.w);
            }
            if !self.conv.is_null() {
                dnn::cudnnDestroyConvolutionDescriptor(self.conv);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::backend::{gpu, Device};
    use crate::engine::gradcheck::random_vec;
    use crate::engine::ops::conv3d::{conv3d_backward_reference, conv3d_forward_reference};

    fn desc() -> ConvDesc {
        ConvDesc { n: 2, c: 4, in_dims: [5, 4, 6], oc: 6, kernel: [3, 3, 1], pad: [1, 0, 0], stride: [2, 1, 2], dilation: [1; 3], groups: 2 }
    }

    #[test]
    fn descriptors_are_refused_where_cudnn_refuses_them() {
        assert!(desc().check().is_ok());
        assert_eq!(desc().out_dims(), [3, 2, 3]);
        let bad = |f: fn(&mut ConvDesc), needle: &str| {
            let mut d = desc();
            f(&mut d);
            let e = d.check().unwrap_err().to_string();
            assert!(e.contains(needle), "{d:?}: {e}");
        };
        bad(|d| d.groups = 3, "groups 3 must divide");
        bad(|d| d.oc = 5, "groups 2 must divide");
        bad(|d| d.stride[1] = 0, "strides");
        bad(|d| d.dilation[0] = 0, "dilations");
        bad(|d| d.n = 0, "must be positive");
        bad(|d| d.kernel = [8, 3, 1], "output would be empty");
        bad(|d| d.n = 1 << 28, "2^31 − 1");
        // Dilation stretches the filter: 3 taps at dilation 2 span 5, as cuDNN computes it.
        let mut d = desc();
        d.dilation = [2, 1, 1];
        assert_eq!(d.out_dims(), [2, 2, 3]);
        assert!(d.conv3d_dims().unwrap_err().to_string().contains("no dilation"));
    }

    /// Every pass of a strided, padded, grouped descriptor on cuda-sim equals the direct-loop
    /// reference (f64 sums) within 1e-5 (the im2col path sums ≤ 18 products in f32).
    #[test]
    fn the_simulator_executes_each_pass_of_a_descriptor() {
        let d = desc();
        let dims = d.conv3d_dims().unwrap();
        let g = gpu(Device::CudaSim).unwrap();
        let [xl, wl, yl] = d.extents();
        let (x, w, dy) = (random_vec(xl, 1, 1.0), random_vec(wl, 2, 1.0), random_vec(yl, 3, 1.0));
        let (gx, gw, gdy) = (g.upload(&x).unwrap(), g.upload(&w).unwrap(), g.upload(&dy).unwrap());
        let close = |a: &[f32], b: &[f32], what: &str| {
            for (i, (p, q)) in a.iter().zip(b).enumerate() {
                assert!((p - q).abs() <= 1e-5 * (1.0 + q.abs()), "{what}[{i}]: {p} vs {q}");
            }
        };
        let gy = g.zeros::<f32>(yl).unwrap();
        g.conv(&d, ConvPass::Forward, gx.ptr(), gw.ptr(), gy.ptr()).unwrap();
        let mut y = vec![0.0; yl];
        conv3d_forward_reference(&mut y, &x, &w, None, &dims);
        close(&g.download(&gy).unwrap(), &y, "y");

        let (mut dx, mut dw) = (vec![0.0; xl], vec![0.5; wl]);
        conv3d_backward_reference(Some(&mut dx), &mut dw, None, &dy, &x, &w, &dims);
        let gdx = g.upload(&vec![9.0f32; xl]).unwrap();
        g.conv(&d, ConvPass::BackwardData, gdx.ptr(), gw.ptr(), gdy.ptr()).unwrap();
        close(&g.download(&gdx).unwrap(), &dx, "dx (written over the 9s)");
        let gdw = g.upload(&vec![0.5f32; wl]).unwrap();
        g.conv(&d, ConvPass::BackwardFilter, gx.ptr(), gdw.ptr(), gdy.ptr()).unwrap();
        close(&g.download(&gdw).unwrap(), &dw, "dw (accumulated onto 0.5)");

        // An operand too short for its descriptor is a fault the simulator reports.
        let short = g.zeros::<f32>(yl / 2).unwrap(); // below the 256-byte pool granule of y
        let e = g.conv(&d, ConvPass::Forward, gx.ptr(), gw.ptr(), short.ptr()).unwrap_err();
        assert!(format!("{e:#}").contains("operand y"), "{e:#}");
    }
}
