//! Grouped 3-D convolution over (N, C, D, H, W) volumes, PyTorch layout and semantics: weight
//! (OC, C/groups, kD, kH, kW), optional bias (OC), per-axis stride and zero padding, no dilation.
//!
//! Two implementations of the same call:
//! - `conv3d_forward_reference` / `conv3d_backward_reference`: the direct seven-deep loops with
//!   f64 accumulation — the readable definition every faster path is tested against;
//! - `conv3d_forward` / `conv3d_backward`: im2col + `sgemm`. A chunk of samples is unfolded into
//!   col (C/g·K, Nc·P) per group (K = kD·kH·kW taps, P = OD·OH·OW outputs; row = input channel ×
//!   tap, column = sample × output voxel), so each group is one GEMM over the whole chunk,
//!   W_g (OC/g, C/g·K) · col_g — far better shaped than one GEMM per sample when P is small (the
//!   deep ResNeXt stages run on 4³…1³ volumes). The batch is cut into chunks to keep a group's
//!   col about L2-sized. Backward: dW_g += dout_g · colT_g (the same unfolding stored
//!   voxel-major, see `im2col_transposed`), dcol_g = W_gᵀ · dout_g, and col2im folds dcol back
//!   onto the input. The unfold is a precomputed list of copy runs per tap (`UnfoldPlan`).
//!
//!   Parallelism: with groups = 1 the GEMMs are large and threaded inside `matrixmultiply`, and
//!   rayon runs the unfold/fold over (sample, channel) planes. With groups > 1 (cardinality 32 in
//!   ResNeXt: GEMMs of 4…32 rows) rayon runs the groups in parallel and every GEMM call is kept
//!   small enough that `matrixmultiply` does not start its own threads (see `INLINE_GEMM_SIZE`):
//!   3× less CPU time than threading each tiny GEMM.
//!
//! Determinism: every sum has a fixed order that depends on the shapes only (chunks are
//! accumulated in batch order, each group's dW by one task in column order, col2im folds taps in
//! a fixed order per input plane), never on the thread count, so repeated runs give
//! bit-identical gradients.
//!
//! Backward accumulates (`+=`) into dweight and dbias and writes (`=`) dinp.
//!
//! The tensor-level ops [`conv3d`] and [`conv3d_grad`] match the storage once: CPU arm = the
//! im2col path above, GPU arm = the backend's convolution primitive (one
//! [`ConvDesc`](crate::engine::backend::ConvDesc) per call: cuDNN on `cuda`, this file's CPU
//! convolution executing the descriptor on `cuda-sim`).

use super::matmul::{sgemm, sgemm_strided};
use crate::engine::gpu::{self, device_ok, gpu_of, gpu_vec_mut};
use crate::engine::{Storage, Tensor};
use rayon::prelude::*;

/// Floats the im2col buffer of one (sample chunk, group) may hold: 1 MiB, about one core's L2,
/// so the unfolded columns are still in cache when the GEMM packs them (64 MiB chunks of all
/// groups at once were measured slower on the grouped ResNeXt convs). At least one sample.
const COL_BUDGET_FLOATS: usize = 256 << 10;

/// A sliding window over a 3-D volume: kernel size, stride and zero padding per axis (D, H, W).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window3d {
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
    pub padding: [usize; 3],
}

impl Window3d {
    pub fn new(kernel: [usize; 3], stride: [usize; 3], padding: [usize; 3]) -> Window3d {
        assert!(kernel.iter().all(|&k| k > 0) && stride.iter().all(|&s| s > 0),
            "Window3d: kernel and stride must be positive, got kernel {kernel:?} stride {stride:?}");
        Window3d { kernel, stride, padding }
    }

    /// Same kernel, stride and padding on all three axes.
    pub fn cube(kernel: usize, stride: usize, padding: usize) -> Window3d {
        Window3d::new([kernel; 3], [stride; 3], [padding; 3])
    }

    /// Output size per axis, ⌊(in + 2p − k)/s⌋ + 1 (0 if the kernel does not fit).
    pub fn out_dims(&self, in_dims: [usize; 3]) -> [usize; 3] {
        std::array::from_fn(|a| {
            let padded = in_dims[a] + 2 * self.padding[a];
            if padded < self.kernel[a] { 0 } else { (padded - self.kernel[a]) / self.stride[a] + 1 }
        })
    }

    /// Number of taps K = kD·kH·kW.
    pub fn volume(&self) -> usize {
        self.kernel.iter().product()
    }

    /// For output index `o` on axis `a`: the first input coordinate of the window (may be
    /// negative) and the range of kernel offsets that land inside 0..in.
    fn axis_span(&self, a: usize, o: usize, len: usize) -> (isize, std::ops::Range<usize>) {
        let start = (o * self.stride[a]) as isize - self.padding[a] as isize;
        let lo = (-start).max(0) as usize;
        let hi = (len as isize - start).clamp(0, self.kernel[a] as isize) as usize;
        (start, lo.min(hi)..hi)
    }

    /// Input coordinates (z, y, x) of the in-volume taps of the window at output `out_at`,
    /// in (d, h, w) scan order; padded taps are skipped.
    pub fn taps(&self, out_at: [usize; 3], in_dims: [usize; 3]) -> impl Iterator<Item = (usize, usize, usize)> {
        let (sz, rz) = self.axis_span(0, out_at[0], in_dims[0]);
        let (sy, ry) = self.axis_span(1, out_at[1], in_dims[1]);
        let (sx, rx) = self.axis_span(2, out_at[2], in_dims[2]);
        rz.flat_map(move |kz| {
            let ry = ry.clone();
            let rx = rx.clone();
            ry.flat_map(move |ky| {
                rx.clone().map(move |kx| {
                    ((sz + kz as isize) as usize, (sy + ky as isize) as usize, (sx + kx as isize) as usize)
                })
            })
        })
    }
}

/// Every size of one grouped 3-D convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv3dDims {
    /// Batch size N.
    pub n: usize,
    /// Input channels C.
    pub c: usize,
    /// Input volume (D, H, W).
    pub in_dims: [usize; 3],
    /// Output channels OC.
    pub oc: usize,
    pub groups: usize,
    pub window: Window3d,
}

impl Conv3dDims {
    /// Panics (a model-construction error, not a data error) unless groups divide C and OC.
    pub fn validate(&self) {
        assert!(self.groups > 0 && self.c % self.groups == 0 && self.oc % self.groups == 0,
            "conv3d: groups {} must divide in channels {} and out channels {}", self.groups, self.c, self.oc);
    }
    pub fn out_dims(&self) -> [usize; 3] {
        self.window.out_dims(self.in_dims)
    }
    /// Input channels per group.
    pub fn cg(&self) -> usize {
        self.c / self.groups
    }
    /// Output channels per group.
    pub fn ocg(&self) -> usize {
        self.oc / self.groups
    }
    /// Voxels of one input plane, D·H·W.
    pub fn in_plane(&self) -> usize {
        self.in_dims.iter().product()
    }
    /// Voxels of one output plane, P = OD·OH·OW.
    pub fn out_plane(&self) -> usize {
        self.out_dims().iter().product()
    }
    pub fn input_len(&self) -> usize {
        self.n * self.c * self.in_plane()
    }
    pub fn output_len(&self) -> usize {
        self.n * self.oc * self.out_plane()
    }
    pub fn weight_len(&self) -> usize {
        self.oc * self.cg() * self.window.volume()
    }
    /// Multiply-adds of one forward pass ×2: the FLOP count benchmarks divide by.
    pub fn forward_flops(&self) -> f64 {
        2.0 * (self.n * self.oc * self.out_plane()) as f64 * (self.cg() * self.window.volume()) as f64
    }
    fn assert_buffers(&self, op: &str, inp: usize, weight: usize, out: usize) {
        self.validate();
        assert!(inp >= self.input_len() && weight >= self.weight_len() && out >= self.output_len(),
            "{op}: buffer too small for {self:?}");
    }
}

/// Direct-loop reference: out (N, OC, OD, OH, OW) = bias + Σ_{c in group, taps} w · inp.
pub fn conv3d_forward_reference(
    out: &mut [f32],         // (N, OC, OD, OH, OW)
    inp: &[f32],             // (N, C, D, H, W)
    weight: &[f32],          // (OC, C/groups, kD, kH, kW)
    bias: Option<&[f32]>,    // (OC)
    dims: &Conv3dDims,
) {
    dims.assert_buffers("conv3d_forward_reference", inp.len(), weight.len(), out.len());
    let (cg, ocg, k) = (dims.cg(), dims.ocg(), dims.window.volume());
    let [_, h, w] = dims.in_dims;
    let [kd, kh, kw] = dims.window.kernel;
    let [od, oh, ow] = dims.out_dims();
    let (plane, oplane) = (dims.in_plane(), dims.out_plane());
    for n in 0..dims.n {
        for o in 0..dims.oc {
            let g = o / ocg;
            for z in 0..od {
                for y in 0..oh {
                    for x in 0..ow {
                        let mut acc = bias.map_or(0.0, |b| b[o] as f64);
                        for ci in 0..cg {
                            let ichan = &inp[(n * dims.c + g * cg + ci) * plane..][..plane];
                            let wchan = &weight[(o * cg + ci) * k..][..k];
                            for tz in 0..kd {
                                for ty in 0..kh {
                                    for tx in 0..kw {
                                        let iz = (z * dims.window.stride[0] + tz) as isize - dims.window.padding[0] as isize;
                                        let iy = (y * dims.window.stride[1] + ty) as isize - dims.window.padding[1] as isize;
                                        let ix = (x * dims.window.stride[2] + tx) as isize - dims.window.padding[2] as isize;
                                        if iz < 0 || iy < 0 || ix < 0 || iz >= dims.in_dims[0] as isize || iy >= h as isize || ix >= w as isize {
                                            continue;
                                        }
                                        let v = ichan[(iz as usize * h + iy as usize) * w + ix as usize];
                                        acc += v as f64 * wchan[(tz * kh + ty) * kw + tx] as f64;
                                    }
                                }
                            }
                        }
                        out[(n * dims.oc + o) * oplane + (z * oh + y) * ow + x] = acc as f32;
                    }
                }
            }
        }
    }
}

/// Direct-loop reference backward: dinp written, dweight and dbias accumulated.
#[allow(clippy::too_many_arguments)]
pub fn conv3d_backward_reference(
    dinp: Option<&mut [f32]>,  // (N, C, D, H, W)
    dweight: &mut [f32],       // (OC, C/groups, kD, kH, kW)
    dbias: Option<&mut [f32]>, // (OC)
    dout: &[f32],              // (N, OC, OD, OH, OW)
    inp: &[f32],               // (N, C, D, H, W)
    weight: &[f32],            // (OC, C/groups, kD, kH, kW)
    dims: &Conv3dDims,
) {
    dims.assert_buffers("conv3d_backward_reference", inp.len(), weight.len(), dout.len());
    let (cg, ocg, k) = (dims.cg(), dims.ocg(), dims.window.volume());
    let [_, h, w] = dims.in_dims;
    let [kd, kh, kw] = dims.window.kernel;
    let [od, oh, ow] = dims.out_dims();
    let (plane, oplane) = (dims.in_plane(), dims.out_plane());
    let mut dinp64 = vec![0.0f64; dims.input_len()];       // (N, C, D, H, W)
    let mut dw64 = vec![0.0f64; dims.weight_len()];        // (OC, C/groups, kD, kH, kW)
    let mut db64 = vec![0.0f64; dims.oc];                  // (OC)
    for n in 0..dims.n {
        for o in 0..dims.oc {
            let g = o / ocg;
            for z in 0..od {
                for y in 0..oh {
                    for x in 0..ow {
                        let gout = dout[(n * dims.oc + o) * oplane + (z * oh + y) * ow + x] as f64;
                        db64[o] += gout;
                        for ci in 0..cg {
                            let ibase = (n * dims.c + g * cg + ci) * plane;
                            let wbase = (o * cg + ci) * k;
                            for tz in 0..kd {
                                for ty in 0..kh {
                                    for tx in 0..kw {
                                        let iz = (z * dims.window.stride[0] + tz) as isize - dims.window.padding[0] as isize;
                                        let iy = (y * dims.window.stride[1] + ty) as isize - dims.window.padding[1] as isize;
                                        let ix = (x * dims.window.stride[2] + tx) as isize - dims.window.padding[2] as isize;
                                        if iz < 0 || iy < 0 || ix < 0 || iz >= dims.in_dims[0] as isize || iy >= h as isize || ix >= w as isize {
                                            continue;
                                        }
                                        let at = ibase + (iz as usize * h + iy as usize) * w + ix as usize;
                                        let wat = wbase + (tz * kh + ty) * kw + tx;
                                        dinp64[at] += gout * weight[wat] as f64;
                                        dw64[wat] += gout * inp[at] as f64;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    if let Some(dinp) = dinp {
        for (d, v) in dinp.iter_mut().zip(&dinp64) {
            *d = *v as f32;
        }
    }
    for (d, v) in dweight.iter_mut().zip(&dw64) {
        *d += *v as f32;
    }
    if let Some(db) = dbias {
        for (d, v) in db.iter_mut().zip(&db64) {
            *d += *v as f32;
        }
    }
}

/// Samples per im2col chunk: as many as keep one group's columns within the budget, at least one.
fn chunk_samples(dims: &Conv3dDims) -> usize {
    let per_sample = dims.cg() * dims.window.volume() * dims.out_plane();
    (COL_BUDGET_FLOATS / per_sample.max(1)).clamp(1, dims.n.max(1))
}

/// For each tap, the copies that move one input plane's in-volume values into that tap's col
/// row segment of P; padded taps are not covered. A run reads `len` inputs from `src` every `step`
/// (the x stride) and writes them contiguously at `dst`. Stride-1 runs that continue each other
/// in both buffers are merged (a 3³ stride-1 conv's centre-x taps copy whole slabs). Computed
/// once per call and shared by every (sample, channel), so the unfold loop is just copies.
struct UnfoldPlan {
    runs: Vec<Vec<Run>>, // (K) × runs
}

#[derive(Clone, Copy)]
struct Run {
    src: usize,
    dst: usize,
    len: usize,
    step: usize,
}

impl UnfoldPlan {
    fn new(dims: &Conv3dDims) -> UnfoldPlan {
        let [d, h, w] = dims.in_dims;
        let [kd, kh, kw] = dims.window.kernel;
        let [od, oh, ow] = dims.out_dims();
        let win = dims.window;
        let mut runs = Vec::with_capacity(kd * kh * kw);
        for tap in 0..kd * kh * kw {
            let (tz, ty, tx) = (tap / (kh * kw), (tap / kw) % kh, tap % kw);
            let (x_lo, x_hi) = valid_out_range(tx, win.stride[2], win.padding[2], w, ow);
            let mut tap_runs: Vec<Run> = Vec::new();
            let step = win.stride[2];
            let mut push = |src: usize, dst: usize, len: usize| match tap_runs.last_mut() {
                Some(last) if step == 1 && last.src + last.len == src && last.dst + last.len == dst => last.len += len,
                _ => tap_runs.push(Run { src, dst, len, step }),
            };
            for z in 0..od {
                let iz = (z * win.stride[0] + tz) as isize - win.padding[0] as isize;
                if iz < 0 || iz >= d as isize {
                    continue;
                }
                for y in 0..oh {
                    let iy = (y * win.stride[1] + ty) as isize - win.padding[1] as isize;
                    if iy < 0 || iy >= h as isize || x_lo >= x_hi {
                        continue;
                    }
                    let src_row = (iz as usize * h + iy as usize) * w;
                    let dst_row = (z * oh + y) * ow;
                    push(src_row + x_lo * step + tx - win.padding[2], dst_row + x_lo, x_hi - x_lo);
                }
            }
            runs.push(tap_runs);
        }
        UnfoldPlan { runs }
    }
}

/// Unfold the channels c0..c0+cn of samples n0..n0+nb into col (cn·K, nb·P).
/// Precondition: col is zero wherever the plan writes nothing (the padded taps) — true for a
/// zero-filled buffer that has only been unfolded into with the same (dims, nb) since, because
/// every unfold writes exactly the same positions.
fn im2col(
    col: &mut [f32],  // (cn·K, nb·P)
    inp: &[f32],      // (N, C, D, H, W)
    dims: &Conv3dDims,
    plan: &UnfoldPlan,
    (c0, cn): (usize, usize),
    (n0, nb): (usize, usize),
) {
    let k = dims.window.volume();
    let (plane, p) = (dims.in_plane(), dims.out_plane());
    col[..cn * k * nb * p].par_chunks_mut(nb * p).enumerate().for_each(|(row, crow)| {
        let (ci, tap) = (c0 + row / k, row % k);
        for b in 0..nb {
            let ichan = &inp[((n0 + b) * dims.c + ci) * plane..][..plane];
            let cplane = &mut crow[b * p..(b + 1) * p];
            for r in &plan.runs[tap] {
                if r.step == 1 {
                    cplane[r.dst..r.dst + r.len].copy_from_slice(&ichan[r.src..r.src + r.len]);
                } else {
                    let from = &ichan[r.src..r.src + (r.len - 1) * r.step + 1];
                    for (o, v) in cplane[r.dst..r.dst + r.len].iter_mut().zip(from.iter().step_by(r.step)) {
                        *o = *v;
                    }
                }
            }
        }
    });
}

/// Unfold channels c0..c0+cn of samples n0..n0+nb into the transposed layout colT (nb·P, cn·K):
/// one row per output voxel holding its receptive field. The weight gradient contracts over
/// voxels, and `matrixmultiply` packs its right operand fast only when that operand is
/// contiguous along the output dimension (here cn·K); with col (cn·K, nb·P) used transposed it
/// falls back to element-wise packing, which made dW 3–4× slower than the forward GEMM.
fn im2col_transposed(
    col_t: &mut [f32],  // (nb·P, cn·K)
    inp: &[f32],        // (N, C, D, H, W)
    dims: &Conv3dDims,
    (c0, cn): (usize, usize),
    (n0, nb): (usize, usize),
) {
    let k = dims.window.volume();
    let [_, h, w] = dims.in_dims;
    let [_, kh, kw] = dims.window.kernel;
    let [_, oh, ow] = dims.out_dims();
    let (plane, p) = (dims.in_plane(), dims.out_plane());
    let win = dims.window;
    col_t[..nb * p * cn * k].par_chunks_mut(cn * k).enumerate().for_each(|(voxel, row)| {
        let (b, v) = (voxel / p, voxel % p);
        let (z, y, x) = (v / (oh * ow), (v / ow) % oh, v % ow);
        let (sz, rz) = win.axis_span(0, z, dims.in_dims[0]);
        let (sy, ry) = win.axis_span(1, y, dims.in_dims[1]);
        let (sx, rx) = win.axis_span(2, x, dims.in_dims[2]);
        let full = rz.len() * ry.len() * rx.len() == k;
        if !full {
            row.fill(0.0);
        }
        for ci in 0..cn {
            let ichan = &inp[((n0 + b) * dims.c + c0 + ci) * plane..][..plane];
            let taps = &mut row[ci * k..(ci + 1) * k];
            for tz in rz.clone() {
                let iz = (sz + tz as isize) as usize;
                for ty in ry.clone() {
                    let iy = (sy + ty as isize) as usize;
                    let irow = &ichan[(iz * h + iy) * w..][..w];
                    let ix0 = (sx + rx.start as isize) as usize;
                    let t0 = (tz * kh + ty) * kw;
                    taps[t0 + rx.start..t0 + rx.end].copy_from_slice(&irow[ix0..ix0 + rx.len()]);
                }
            }
        }
    });
}

/// Outputs x in lo..hi read the in-range input x·s + t − pad ∈ 0..len.
fn valid_out_range(t: usize, s: usize, pad: usize, len: usize, out_len: usize) -> (usize, usize) {
    // x·s + t ≥ pad  ⇔  x ≥ ceil((pad − t)/s);  x·s + t − pad < len  ⇔  x < ceil((len + pad − t)/s).
    let lo = if pad > t { (pad - t).div_ceil(s) } else { 0 };
    let hi = if len + pad > t { (len + pad - t).div_ceil(s) } else { 0 };
    (lo.min(out_len), hi.clamp(lo.min(out_len), out_len))
}

/// Fold dcol (cn·K, nb·P) into dst (nb, cn, D·H·W): the input-gradient planes of channels
/// c0..c0+cn of samples n0..n0+nb, which receive contributions from these rows only (written).
/// Runs the unfold plan backwards: each copy becomes an add, taps in a fixed order.
fn col2im(
    dst: &mut [f32],   // (nb, cn, D, H, W)
    dcol: &[f32],      // (cn·K, nb·P)
    dims: &Conv3dDims,
    plan: &UnfoldPlan,
    cn: usize,
    nb: usize,
) {
    let k = dims.window.volume();
    let (plane, p) = (dims.in_plane(), dims.out_plane());
    dst[..nb * cn * plane].par_chunks_mut(plane).enumerate().for_each(|(bc, dplane)| {
        let (b, ci) = (bc / cn, bc % cn);
        dplane.fill(0.0);
        for (tap, runs) in plan.runs.iter().enumerate() {
            let crow = &dcol[(ci * k + tap) * nb * p + b * p..][..p];
            for r in runs {
                let to = &mut dplane[r.src..r.src + (r.len - 1) * r.step + 1];
                for (d, g) in to.iter_mut().step_by(r.step).zip(&crow[r.dst..r.dst + r.len]) {
                    *d += g;
                }
            }
        }
    });
}

/// `matrixmultiply` 0.3 threads a GEMM (on its own spin-waiting pool) once m·k + k·n reaches
/// 2·2¹⁴; below that it runs on the calling thread. The grouped path runs its groups in parallel
/// on rayon and keeps each GEMM call under this size, because on a shared machine the pool's
/// spin-yielding cost more CPU than the small GEMMs themselves (measured: half the process CPU
/// time of the stage-1 grouped conv was `sched_yield`).
const INLINE_GEMM_SIZE: usize = 2 << 14;

/// C (m×n, row stride rsc) (= or +=) A (m×k, strides rsa, csa) · B (k×n, row-major, row stride
/// rsb), cut into column blocks small enough to run on the calling thread.
#[allow(clippy::too_many_arguments)]
fn sgemm_inline_columns(
    c: &mut [f32], rsc: usize,
    a: &[f32], rsa: usize, csa: usize,
    b: &[f32], rsb: usize,
    m: usize, n: usize, k: usize,
    beta: f32,
) {
    let block = (INLINE_GEMM_SIZE.saturating_sub(m * k) / k.max(1)).max(8) / 8 * 8;
    let mut j = 0;
    while j < n {
        let nb = block.min(n - j);
        sgemm_strided(&mut c[j..], rsc, a, rsa, csa, &b[j..], rsb, 1, m, nb, k, 1.0, beta);
        j += nb;
    }
}

/// C (m×n) += A (m×k, row stride rsa) · B (k×n, row-major), cut along k into blocks small enough
/// to run on the calling thread, accumulated in order (deterministic).
#[allow(clippy::too_many_arguments)]
fn sgemm_inline_depth(
    c: &mut [f32],
    a: &[f32], rsa: usize,
    b: &[f32],
    m: usize, n: usize, k: usize,
) {
    let block = (INLINE_GEMM_SIZE / (m + n).max(1)).max(8);
    let mut p = 0;
    while p < k {
        let kb = block.min(k - p);
        sgemm_strided(c, n, &a[p..], rsa, 1, &b[p * n..], n, 1, m, n, kb, 1.0, 1.0);
        p += kb;
    }
}

/// im2col + GEMM forward: out (N, OC, OD, OH, OW) = conv(inp, weight) + bias.
pub fn conv3d_forward(
    out: &mut [f32],         // (N, OC, OD, OH, OW)
    inp: &[f32],             // (N, C, D, H, W)
    weight: &[f32],          // (OC, C/groups, kD, kH, kW)
    bias: Option<&[f32]>,    // (OC)
    dims: &Conv3dDims,
) {
    dims.assert_buffers("conv3d_forward", inp.len(), weight.len(), out.len());
    let (cg, ocg, k, p, oc) = (dims.cg(), dims.ocg(), dims.window.volume(), dims.out_plane(), dims.oc);
    if dims.n == 0 || p == 0 || oc == 0 {
        return;
    }
    let chunk = chunk_samples(dims);
    let plan = UnfoldPlan::new(dims);
    let mut col = vec![0.0f32; if dims.groups == 1 { cg * k * chunk * p } else { 0 }]; // (C·K, nb·P)
    let mut tmp = vec![0.0f32; oc * chunk * p];      // (OC, nb·P)
    let mut n0 = 0;
    while n0 < dims.n {
        let nb = chunk.min(dims.n - n0);
        let cols = nb * p;
        if dims.groups == 1 {
            // One large GEMM, threaded inside matrixmultiply.
            if nb != chunk {
                col.fill(0.0); // the last, shorter chunk lays rows out differently (precondition)
            }
            im2col(&mut col, inp, dims, &plan, (0, cg), (n0, nb));
            sgemm(&mut tmp[..oc * cols], &weight[..oc * cg * k], &col[..cg * k * cols], oc, cols, cg * k, false, false, 1.0, 0.0);
        } else {
            // Groups in parallel, each unfolding its channels into its own (zeroed) buffer.
            tmp[..oc * cols].par_chunks_mut(ocg * cols).enumerate().for_each_init(
                || vec![0.0f32; cg * k * cols], // (C/g·K, nb·P)
                |col, (g, tmp_g)| {
                    im2col(col, inp, dims, &plan, (g * cg, cg), (n0, nb));
                    // tmp_g (OC/g, nb·P) = W_g (OC/g, C/g·K) · col
                    let w_g = &weight[g * ocg * cg * k..(g + 1) * ocg * cg * k];
                    sgemm_inline_columns(tmp_g, cols, w_g, cg * k, 1, col, cols, ocg, cols, cg * k, 0.0);
                },
            );
        }
        // (OC, nb·P) → (nb, OC, P) with the bias added.
        out[n0 * oc * p..(n0 + nb) * oc * p].par_chunks_mut(p).enumerate().for_each(|(bo, orow)| {
            let (b, o) = (bo / oc, bo % oc);
            let src = &tmp[o * cols + b * p..][..p];
            let bias_o = bias.map_or(0.0, |bb| bb[o]);
            for (dst, s) in orow.iter_mut().zip(src) {
                *dst = s + bias_o;
            }
        });
        n0 += nb;
    }
}

/// im2col + GEMM backward: dinp written (if wanted), dweight and dbias accumulated.
#[allow(clippy::too_many_arguments)]
pub fn conv3d_backward(
    mut dinp: Option<&mut [f32]>,  // (N, C, D, H, W)
    dweight: &mut [f32],           // (OC, C/groups, kD, kH, kW)
    mut dbias: Option<&mut [f32]>, // (OC)
    dout: &[f32],                  // (N, OC, OD, OH, OW)
    inp: &[f32],                   // (N, C, D, H, W)
    weight: &[f32],                // (OC, C/groups, kD, kH, kW)
    dims: &Conv3dDims,
) {
    dims.assert_buffers("conv3d_backward", inp.len(), weight.len(), dout.len());
    assert!(dweight.len() >= dims.weight_len(), "conv3d_backward: dweight too small");
    let (cg, ocg, k, p, oc) = (dims.cg(), dims.ocg(), dims.window.volume(), dims.out_plane(), dims.oc);
    if dims.n == 0 || oc == 0 {
        return;
    }
    if p == 0 {
        // No outputs: nothing flows back, but dinp is still written.
        if let Some(d) = dinp {
            d[..dims.input_len()].fill(0.0);
        }
        return;
    }
    let chunk = chunk_samples(dims);
    let plan = UnfoldPlan::new(dims);
    let plane = dims.in_plane();
    let mut dtmp = vec![0.0f32; oc * chunk * p];       // (OC, nb·P)
    // groups == 1: one buffer each, large GEMMs threaded inside matrixmultiply.
    let (mut col_t, mut dcol) = if dims.groups == 1 {
        (vec![0.0f32; chunk * p * cg * k], vec![0.0f32; if dinp.is_some() { cg * k * chunk * p } else { 0 }])
    } else {
        (Vec::new(), Vec::new())
    };
    // groups > 1: each group folds its input gradient into its own (nb, C/g, D·H·W) block.
    let mut dx_groups = vec![0.0f32; if dims.groups > 1 && dinp.is_some() { chunk * dims.c * plane } else { 0 }];
    let mut n0 = 0;
    while n0 < dims.n {
        let nb = chunk.min(dims.n - n0);
        let cols = nb * p;
        // (nb, OC, P) → (OC, nb·P)
        dtmp[..oc * cols].par_chunks_mut(cols).enumerate().for_each(|(o, drow)| {
            for b in 0..nb {
                drow[b * p..(b + 1) * p].copy_from_slice(&dout[((n0 + b) * oc + o) * p..][..p]);
            }
        });
        if let Some(db) = dbias.as_deref_mut() {
            for (o, d) in db[..oc].iter_mut().enumerate() {
                *d += dtmp[o * cols..(o + 1) * cols].iter().sum::<f32>();
            }
        }
        if dims.groups == 1 {
            im2col_transposed(&mut col_t, inp, dims, (0, cg), (n0, nb));
            // dW (OC, C·K) += dout (OC, nb·P) · colT (nb·P, C·K)
            sgemm(&mut dweight[..oc * cg * k], &dtmp[..oc * cols], &col_t[..cols * cg * k], oc, cg * k, cols, false, false, 1.0, 1.0);
            if let Some(dinp) = dinp.as_deref_mut() {
                // dcol (C·K, nb·P) = Wᵀ · dout, folded straight into this chunk's dinp planes.
                sgemm(&mut dcol[..cg * k * cols], &weight[..oc * cg * k], &dtmp[..oc * cols], cg * k, cols, oc, true, false, 1.0, 0.0);
                col2im(&mut dinp[n0 * dims.c * plane..(n0 + nb) * dims.c * plane], &dcol, dims, &plan, cg, nb);
            }
        } else {
            let want_dinp = dinp.is_some();
            let dtmp = &dtmp;
            let dx_blocks: Vec<&mut [f32]> = if want_dinp {
                dx_groups[..nb * dims.c * plane].chunks_mut(nb * cg * plane).collect()
            } else {
                Vec::new()
            };
            let mut dx_iter = dx_blocks.into_iter();
            // One job per group: (group, its dW block, its input-gradient block if wanted).
            type GroupJob<'a> = (usize, &'a mut [f32], Option<&'a mut [f32]>);
            let jobs: Vec<GroupJob> = dweight[..oc * cg * k]
                .chunks_mut(ocg * cg * k)
                .enumerate()
                .map(|(g, dw_g)| (g, dw_g, if want_dinp { dx_iter.next() } else { None }))
                .collect();
            jobs.into_par_iter().for_each_init(
                || (vec![0.0f32; cols * cg * k], vec![0.0f32; if want_dinp { cg * k * cols } else { 0 }]),
                |(col_t, dcol), (g, dw_g, dx_g)| {
                    let w_g = &weight[g * ocg * cg * k..(g + 1) * ocg * cg * k]; // (OC/g, C/g·K)
                    let dout_g = &dtmp[g * ocg * cols..(g + 1) * ocg * cols];    // (OC/g, nb·P)
                    im2col_transposed(col_t, inp, dims, (g * cg, cg), (n0, nb));
                    // dW_g (OC/g, C/g·K) += dout_g · colT (nb·P, C/g·K)
                    sgemm_inline_depth(dw_g, dout_g, cols, col_t, ocg, cg * k, cols);
                    if let Some(dx_g) = dx_g {
                        // dcol (C/g·K, nb·P) = W_gᵀ · dout_g, folded into this group's planes.
                        sgemm_inline_columns(dcol, cols, w_g, 1, cg * k, dout_g, cols, cg * k, cols, ocg, 0.0);
                        col2im(dx_g, dcol, dims, &plan, cg, nb);
                    }
                },
            );
            if let Some(dinp) = dinp.as_deref_mut() {
                // (groups, nb, C/g, D·H·W) → (nb, C, D·H·W)
                dinp[n0 * dims.c * plane..(n0 + nb) * dims.c * plane]
                    .par_chunks_mut(cg * plane)
                    .enumerate()
                    .for_each(|(bg, dst)| {
                        let (b, g) = (bg / dims.groups, bg % dims.groups);
                        dst.copy_from_slice(&dx_groups[(g * nb + b) * cg * plane..][..cg * plane]);
                    });
            }
        }
        n0 += nb;
    }
}


/// The GPU convolutions have no bias (cuDNN's convolution calls have none, and every
/// convolution of the charge-density ResNeXt is bias-free).
fn no_device_bias(has_bias: bool, x: &Tensor) {
    assert!(!has_bias, "conv3d: a convolution bias on {} is not supported (the ResNeXt convolutions are bias-free); build the layer with bias = false", x.device());
}

/// out (N, OC, OD, OH, OW) = conv(x (N, C, D, H, W), weight) + bias, on x's device.
pub fn conv3d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, dims: &Conv3dDims) -> Tensor {
    dims.validate();
    assert_eq!(x.shape, [dims.n, dims.c, dims.in_dims[0], dims.in_dims[1], dims.in_dims[2]], "conv3d: input shape for {dims:?}");
    assert_eq!(weight.numel(), dims.weight_len(), "conv3d: weight size for {dims:?}");
    let [od, oh, ow] = dims.out_dims();
    let shape = [dims.n, dims.oc, od, oh, ow];
    match &x.storage {
        Storage::Cpu(xd) => {
            let mut out = vec![0.0f32; dims.output_len()];
            conv3d_forward(&mut out, xd, weight.data(), bias.map(|b| b.data()), dims);
            Tensor::from_vec(&shape, out)
        }
        Storage::Gpu(xd) => {
            no_device_bias(bias.is_some(), x);
            let g = gpu_of(x).clone();
            let mut out = device_ok(Tensor::uninit_on(&shape, x.device()), "conv3d");
            device_ok(gpu::conv3d::forward(&g, gpu_vec_mut(&mut out, "conv3d"), xd, weight.gpu_vec(), dims), "conv3d");
            out
        }
    }
}

/// Backward of [`conv3d`]: dweight (and dbias) accumulated (`+=`); dinp (N, C, D, H, W)
/// returned (written) when `want_dinp`.
#[allow(clippy::too_many_arguments)]
pub fn conv3d_grad(
    dout: &Tensor,
    x: &Tensor,
    weight: &Tensor,
    dweight: &mut Tensor,
    dbias: Option<&mut Tensor>,
    want_dinp: bool,
    dims: &Conv3dDims,
) -> Option<Tensor> {
    let [od, oh, ow] = dims.out_dims();
    assert_eq!(dout.shape, [dims.n, dims.oc, od, oh, ow], "conv3d_grad: dout shape for {dims:?}");
    match &dout.storage {
        Storage::Cpu(dd) => {
            let mut dinp = want_dinp.then(|| vec![0.0f32; dims.input_len()]);
            conv3d_backward(dinp.as_deref_mut(), dweight.data_mut(), dbias.map(|b| b.data_mut()), dd, x.data(), weight.data(), dims);
            dinp.map(|v| Tensor::from_vec(&x.shape, v))
        }
        Storage::Gpu(dd) => {
            no_device_bias(dbias.is_some(), x);
            let g = gpu_of(dout).clone();
            device_ok(gpu::conv3d::backward_filter(&g, gpu_vec_mut(dweight, "conv3d_grad"), dd, x.gpu_vec(), dims), "conv3d_grad");
            want_dinp.then(|| {
                let mut dinp = device_ok(Tensor::uninit_on(&x.shape, x.device()), "conv3d_grad");
                device_ok(gpu::conv3d::backward_data(&g, gpu_vec_mut(&mut dinp, "conv3d_grad"), dd, weight.gpu_vec(), dims), "conv3d_grad");
                dinp
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::{check_gradient, dot, random_vec};

    fn assert_close(name: &str, a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len(), "{name}: length");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{name}[{i}]: {x} vs {y}");
        }
    }

    #[test]
    fn window_output_sizes_match_pytorch_formula() {
        // ResNeXt stem: 7³, stride 2, pad 3 on 32³ → 16³; max pool 3³ s2 p1 on 16³ → 8³.
        assert_eq!(Window3d::cube(7, 2, 3).out_dims([32; 3]), [16; 3]);
        assert_eq!(Window3d::cube(3, 2, 1).out_dims([16; 3]), [8; 3]);
        assert_eq!(Window3d::new([3, 1, 2], [2, 1, 3], [1, 0, 0]).out_dims([5, 4, 7]), [3, 4, 2]);
        assert_eq!(Window3d::cube(5, 1, 0).out_dims([3; 3]), [0; 3]);
    }

    #[test]
    fn single_tap_convolution_by_hand() {
        // 1×1×3×3×3 input, 3³ kernel of ones at centre only, pad 1: output = input.
        let inp: Vec<f32> = (0..27).map(|v| v as f32).collect();
        let mut weight = vec![0.0; 27];
        weight[13] = 2.0;
        let dims = Conv3dDims { n: 1, c: 1, in_dims: [3; 3], oc: 1, groups: 1, window: Window3d::cube(3, 1, 1) };
        let mut out = vec![0.0; 27];
        conv3d_forward(&mut out, &inp, &weight, Some(&[0.5]), &dims);
        let expect: Vec<f32> = inp.iter().map(|v| 2.0 * v + 0.5).collect();
        assert_eq!(out, expect);
        // A kernel of all ones at the corner voxel (0,0,0) sums the 2×2×2 in-volume block.
        let ones = vec![1.0; 27];
        conv3d_forward(&mut out, &inp, &ones, None, &dims);
        let corner: f32 = [0, 1, 3, 4, 9, 10, 12, 13].iter().map(|&i| inp[i]).sum();
        assert_eq!(out[0], corner);
    }

    /// Shapes exercising groups, anisotropic stride and padding, partial windows, and a batch
    /// large enough to need several im2col chunks in one case.
    fn cases() -> Vec<Conv3dDims> {
        vec![
            Conv3dDims { n: 2, c: 3, in_dims: [5, 6, 7], oc: 4, groups: 1, window: Window3d::cube(3, 1, 1) },
            Conv3dDims { n: 3, c: 4, in_dims: [6, 5, 5], oc: 6, groups: 2, window: Window3d::cube(3, 2, 1) },
            Conv3dDims { n: 2, c: 8, in_dims: [4, 4, 4], oc: 8, groups: 4, window: Window3d::new([3, 2, 1], [1, 2, 2], [1, 0, 0]) },
            Conv3dDims { n: 2, c: 2, in_dims: [9, 9, 9], oc: 3, groups: 1, window: Window3d::cube(7, 2, 3) },
            Conv3dDims { n: 4, c: 6, in_dims: [3, 3, 3], oc: 6, groups: 1, window: Window3d::cube(1, 2, 0) },
            // 4 samples per chunk: two chunks, the second partial.
            Conv3dDims { n: 5, c: 8, in_dims: [8, 8, 8], oc: 4, groups: 2, window: Window3d::cube(3, 1, 1) },
        ]
    }

    #[test]
    fn im2col_gemm_forward_matches_direct_loops() {
        for (i, dims) in cases().into_iter().enumerate() {
            let x = random_vec(dims.input_len(), 10 + i as u64, 1.0);
            let w = random_vec(dims.weight_len(), 20 + i as u64, 1.0);
            let b = random_vec(dims.oc, 30 + i as u64, 1.0);
            let (mut fast, mut slow) = (vec![f32::NAN; dims.output_len()], vec![f32::NAN; dims.output_len()]);
            conv3d_forward(&mut fast, &x, &w, Some(&b), &dims);
            conv3d_forward_reference(&mut slow, &x, &w, Some(&b), &dims);
            assert_close(&format!("case {i} forward"), &fast, &slow, 1e-5);
        }
    }

    #[test]
    fn im2col_gemm_backward_matches_direct_loops() {
        for (i, dims) in cases().into_iter().enumerate() {
            let x = random_vec(dims.input_len(), 40 + i as u64, 1.0);
            let w = random_vec(dims.weight_len(), 50 + i as u64, 1.0);
            let g = random_vec(dims.output_len(), 60 + i as u64, 1.0);
            // Start weight/bias grads non-zero to check they accumulate.
            let dw0 = random_vec(dims.weight_len(), 70 + i as u64, 1.0);
            let db0 = random_vec(dims.oc, 80 + i as u64, 1.0);
            let (mut dx_f, mut dw_f, mut db_f) = (vec![f32::NAN; x.len()], dw0.clone(), db0.clone());
            let (mut dx_r, mut dw_r, mut db_r) = (vec![f32::NAN; x.len()], dw0.clone(), db0.clone());
            conv3d_backward(Some(&mut dx_f), &mut dw_f, Some(&mut db_f), &g, &x, &w, &dims);
            conv3d_backward_reference(Some(&mut dx_r), &mut dw_r, Some(&mut db_r), &g, &x, &w, &dims);
            assert_close(&format!("case {i} dinp"), &dx_f, &dx_r, 1e-5);
            assert_close(&format!("case {i} dweight"), &dw_f, &dw_r, 1e-4);
            assert_close(&format!("case {i} dbias"), &db_f, &db_r, 1e-4);
        }
    }

    #[test]
    fn chunked_batches_give_the_same_result_as_one_chunk() {
        // A batch whose col buffer exceeds the budget is processed in several chunks; compare a
        // large batch against the per-sample results of the same op.
        let dims = Conv3dDims { n: 9, c: 4, in_dims: [8; 3], oc: 2, groups: 1, window: Window3d::cube(3, 1, 1) };
        assert!(chunk_samples(&dims) < dims.n, "test must span several chunks");
        let x = random_vec(dims.input_len(), 1, 1.0);
        let w = random_vec(dims.weight_len(), 2, 1.0);
        let mut out = vec![0.0; dims.output_len()];
        conv3d_forward(&mut out, &x, &w, None, &dims);
        let one = Conv3dDims { n: 1, ..dims };
        for s in 0..dims.n {
            let mut o1 = vec![0.0; one.output_len()];
            conv3d_forward(&mut o1, &x[s * one.input_len()..(s + 1) * one.input_len()], &w, None, &one);
            assert_eq!(&out[s * one.output_len()..(s + 1) * one.output_len()], &o1[..], "sample {s}");
        }
    }

    #[test]
    fn results_are_bit_identical_for_any_thread_count() {
        // Exact --resume relies on this: grouped and dense paths, several chunks.
        for dims in [
            Conv3dDims { n: 5, c: 8, in_dims: [8, 8, 8], oc: 8, groups: 4, window: Window3d::cube(3, 1, 1) },
            Conv3dDims { n: 9, c: 4, in_dims: [8, 8, 8], oc: 6, groups: 1, window: Window3d::cube(3, 2, 1) },
        ] {
            let x = random_vec(dims.input_len(), 1, 1.0);
            let w = random_vec(dims.weight_len(), 2, 1.0);
            let g = random_vec(dims.output_len(), 3, 1.0);
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| {
                    let mut out = vec![0.0; dims.output_len()];
                    conv3d_forward(&mut out, &x, &w, None, &dims);
                    let (mut dx, mut dw) = (vec![0.0; x.len()], vec![0.0; w.len()]);
                    conv3d_backward(Some(&mut dx), &mut dw, None, &g, &x, &w, &dims);
                    (out, dx, dw)
                })
            };
            let one = run(1);
            for threads in [2, 3, 5] {
                assert!(run(threads) == one, "{dims:?}: results differ with {threads} threads");
            }
        }
    }

    fn gradient_check(dims: Conv3dDims, seed: u64) {
        let x = random_vec(dims.input_len(), seed, 1.0);
        let w = random_vec(dims.weight_len(), seed + 1, 1.0);
        let b = random_vec(dims.oc, seed + 2, 1.0);
        let proj = random_vec(dims.output_len(), seed + 3, 1.0);
        let loss = |x: &[f32], w: &[f32], b: &[f32]| {
            let mut out = vec![0.0; dims.output_len()];
            conv3d_forward(&mut out, x, w, Some(b), &dims);
            dot(&proj, &out)
        };
        let (mut dx, mut dw, mut db) = (vec![f32::NAN; x.len()], vec![0.0; w.len()], vec![0.0; dims.oc]);
        conv3d_backward(Some(&mut dx), &mut dw, Some(&mut db), &proj, &x, &w, &dims);
        let tag = format!("conv3d groups={} stride={:?}", dims.groups, dims.window.stride);
        check_gradient(&format!("{tag} dinp"), &x, &dx, |x| loss(x, &w, &b), 1e-2, 1e-3, 1e-3);
        check_gradient(&format!("{tag} dweight"), &w, &dw, |w| loss(&x, w, &b), 1e-2, 1e-3, 1e-3);
        check_gradient(&format!("{tag} dbias"), &b, &db, |b| loss(&x, &w, b), 1e-2, 1e-3, 1e-3);
    }

    #[test]
    fn conv3d_gradients_match_finite_differences() {
        gradient_check(Conv3dDims { n: 2, c: 2, in_dims: [4, 5, 4], oc: 3, groups: 1, window: Window3d::cube(3, 2, 1) }, 100);
        gradient_check(Conv3dDims { n: 2, c: 4, in_dims: [5, 4, 4], oc: 6, groups: 2, window: Window3d::cube(3, 2, 1) }, 200);
        gradient_check(Conv3dDims { n: 1, c: 4, in_dims: [3, 4, 5], oc: 4, groups: 4, window: Window3d::new([3, 3, 3], [1, 1, 2], [1, 1, 1]) }, 300);
    }
}
