//! Collectives on tensors where they live: the pre-training step's all-gather of embeddings and
//! all-reduces of d(embeddings), SyncBN's per-channel sums and parameter-gradient buckets,
//! whatever the device.
//!
//! - `cuda` with several ranks: an NCCL communicator (one rank per GPU, [`super::nccl`]),
//!   bootstrapped over MPI — rank 0 makes the unique id, [`Dist::broadcast_bytes`] hands it to
//!   every rank — and collectives on device memory, every one enqueued on the device's
//!   communication stream behind an event recorded on the compute stream (so it sees the values
//!   the kernels before it wrote). The blocking collectives make the compute stream wait for them
//!   and return once they completed; a parameter-gradient bucket
//!   ([`DeviceComm::start_grads_all_reduce`]) does not: it runs on the communication stream while
//!   the compute stream goes on with the next encoder's backward, and
//!   [`DeviceComm::finish_grads_all_reduce`] makes the compute stream wait for it and unpacks the
//!   sums.
//! - `cuda-sim`, `cpu`, or one rank: the MPI path of [`Dist`] (`cuda-sim`: download → MPI →
//!   upload), so the test suite runs every call site of the device path under `mpirun`. A
//!   gradient bucket is packed (copied) when it starts and reduced over MPI when it finishes,
//!   buckets in the order they started: the same MPI calls as a reduction at the start, and any
//!   code that wrote or read the gradients in between would show as a rank-count dependence in
//!   the multi-rank tests.
//!
//! Every call is counted in the same [`Dist`] counters as the host collectives, so the per-step
//! timing breakdown (`train::step_timing`) reads the same on either path. A blocking NCCL call is
//! timed to its completion (synchronised before the time is taken): the breakdown then shows
//! communication, not the microseconds of enqueueing it. A gradient bucket counts the time
//! between two events around its collective on the communication stream, read when it finishes.

use super::nccl::NcclComm;
use super::{Dist, GATHER, REDUCE_F32, REDUCE_F64};
use crate::engine::backend::cuda::{CudaGpu, Stream, StreamEvent};
use crate::engine::backend::{gpu, Device, Gpu, GpuKind};
use crate::engine::ops::batchnorm::{f64_to_words, words_to_f64, ChannelSums};
use crate::engine::tensor::Storage;
use crate::engine::{Module, Tensor};
use anyhow::{bail, Context, Result};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the collectives of one device run.
enum Path {
    /// Through [`Dist`]'s MPI (or single-process) collectives, copying through the host when the
    /// tensor is on a GPU device.
    Host,
    /// NCCL on the device's memory.
    Nccl { comm: NcclComm, gpu: Arc<Gpu> },
}

/// The collectives of one rank for tensors on one device. Create it once per run, on every rank
/// (creation is collective on `cuda`).
pub struct DeviceComm<'a> {
    dist: &'a Dist,
    device: Device,
    path: Path,
}

impl<'a> DeviceComm<'a> {
    /// On `cuda` with several ranks: loads NCCL and forms the communicator of all ranks (every
    /// rank must call this; a rank that fails stops every rank with its message). Elsewhere no
    /// setup.
    pub fn new(dist: &'a Dist, device: Device) -> Result<DeviceComm<'a>> {
        let Device::Cuda(_) = device else {
            return Ok(DeviceComm { dist, device, path: Path::Host });
        };
        if dist.world_size() == 1 {
            return Ok(DeviceComm { dist, device, path: Path::Host });
        }
        // Rank 0's id, or its error message prefixed by a marker byte, reaches every rank, so
        // no rank waits forever in ncclCommInitRank for a root that failed.
        let root = if dist.is_root() {
            match super::nccl::load().and_then(|n| n.unique_id()) {
                Ok(id) => [&[1u8][..], &id[..]].concat(),
                Err(e) => [&[0u8][..], format!("{e:#}").as_bytes()].concat(),
            }
        } else {
            Vec::new()
        };
        let root = dist.broadcast_bytes(root);
        match root.split_first() {
            Some((1, id)) => {
                let nccl = super::nccl::load().with_context(|| format!("rank {}", dist.rank()))?;
                let g = gpu(device)?;
                let GpuKind::Cuda(cu) = &g.kind else { bail!("{device} is not a CUDA device") };
                cu.bind_to_thread()?;
                let stream = cu.stream_handle(Stream::Comm)?;
                let comm = NcclComm::init(nccl, id, dist.rank(), dist.world_size(), stream as *mut std::ffi::c_void)?;
                if dist.is_root() {
                    eprintln!("NCCL {} communicator of {} ranks, one GPU each", nccl.version, dist.world_size());
                }
                Ok(DeviceComm { dist, device, path: Path::Nccl { comm, gpu: g } })
            }
            Some((_, msg)) => bail!("rank 0 could not set up NCCL: {}", String::from_utf8_lossy(msg)),
            None => bail!("rank 0 sent no NCCL id"),
        }
    }

    /// "nccl" or "mpi" (the host path; also a single process).
    pub fn backend_name(&self) -> &'static str {
        match self.path {
            Path::Host => "mpi",
            Path::Nccl { .. } => "nccl",
        }
    }

    /// Every rank's `(rows_r, D)` rows in rank order, `(Σ rows_r, D)` on this device.
    /// `rows_per_rank[r]` is rank r's row count (known to every rank), `local` this rank's rows.
    pub fn all_gather_rows(&self, local: &Tensor, rows_per_rank: &[usize], d: usize) -> Result<Tensor> {
        let me = self.dist.rank();
        if rows_per_rank.len() != self.dist.world_size() || local.numel() != rows_per_rank[me] * d {
            bail!(
                "all_gather_rows: rank {me} holds {} values for {:?} rows of {d} over {} ranks",
                local.numel(), rows_per_rank, self.dist.world_size()
            );
        }
        let total: usize = rows_per_rank.iter().sum();
        match &self.path {
            Path::Host => {
                let host = local.to_host()?;
                let gathered = self.dist.all_gather_f32(&host);
                Tensor::from_vec(&[total, d], gathered).to_device(self.device)
            }
            Path::Nccl { comm, gpu } => {
                let t = Instant::now();
                // NCCL gathers equal counts: every rank sends its rows padded to the largest share,
                // and the padding is dropped while compacting into the (total, D) result.
                let most = rows_per_rank.iter().copied().max().unwrap_or(0);
                let world = rows_per_rank.len();
                let src = device_vec(local)?;
                let mut send = gpu.zeros::<f32>(most * d)?;
                gpu.copy(&mut send, 0, src, 0, rows_per_rank[me] * d)?;
                let recv = gpu.uninit::<f32>(world * most * d)?;
                // SAFETY: `send` holds most·D and `recv` world·most·D f32 on this device; both
                // outlive the collective (the compute stream waits for it before they are freed).
                run_on_comm_stream(gpu, || unsafe { comm.all_gather_f32(send.ptr(), recv.ptr(), most * d) })?;
                let mut out = Tensor::uninit_on(&[total, d], self.device)?;
                if let Storage::Gpu(o) = &mut out.storage {
                    let mut at = 0;
                    for (r, &rows) in rows_per_rank.iter().enumerate() {
                        gpu.copy(o, at * d, &recv, r * most * d, rows * d)?;
                        at += rows;
                    }
                }
                gpu.synchronize()?;
                self.dist.record(GATHER, t, total * d * 4);
                Ok(out)
            }
        }
    }

    /// In place: `t` summed element-wise over ranks (identical on every rank).
    pub fn all_reduce_sum(&self, t: &mut Tensor) -> Result<()> {
        match (&self.path, &mut t.storage) {
            (Path::Host, Storage::Cpu(v)) => self.dist.all_reduce_sum_f32(v),
            (Path::Host, Storage::Gpu(_)) => {
                let mut host = t.to_host()?;
                self.dist.all_reduce_sum_f32(&mut host);
                *t = Tensor::from_vec(&t.shape, host).to_device(self.device)?;
            }
            (Path::Nccl { comm, gpu }, Storage::Gpu(v)) => {
                let tm = Instant::now();
                // SAFETY: `v` is a live allocation of v.len() f32 on the communicator's device.
                run_on_comm_stream(gpu, || unsafe { comm.all_reduce_sum_f32(v.ptr(), v.len()) })?;
                gpu.synchronize()?;
                self.dist.record(REDUCE_F32, tm, v.len() * 4);
            }
            (Path::Nccl { .. }, Storage::Cpu(_)) => bail!("all_reduce_sum: a host tensor given to the NCCL communicator of {}", self.device),
        }
        Ok(())
    }

    /// SyncBN, in place: the per-channel sums (2C f64, where they live) and, in the forward, the
    /// element count summed over ranks. On the NCCL path the sums never leave the device: the
    /// count joins them as one more f64 in a device buffer [sums (2C), count], one collective
    /// reduces both, and only the count's 8 bytes come back to the host (the layer needs it
    /// there). The host path is `Dist::all_reduce_sum_f64` of the same payload.
    pub fn all_reduce_channel_sums(&self, sums: &mut ChannelSums, count: Option<&mut usize>) -> Result<()> {
        let (comm, gpu) = match &self.path {
            Path::Host => return sums.reduce_through_host(count, |v| self.dist.all_reduce_sum_f64(v)),
            Path::Nccl { comm, gpu } => (comm, gpu),
        };
        let ChannelSums::Gpu(words) = sums else {
            bail!("all_reduce_channel_sums: host sums given to the NCCL communicator of {}", self.device)
        };
        let t = Instant::now();
        let values = words.len() / 2; // 2C f64, two u32 words each
        let Some(count) = count else {
            // SAFETY: `words` is a live allocation of 2·values u32 = values f64 on this device.
            run_on_comm_stream(gpu, || unsafe { comm.all_reduce_sum_f64(words.ptr(), values) })?;
            gpu.synchronize()?;
            self.dist.record(REDUCE_F64, t, values * 8);
            return Ok(());
        };
        let mut tail = gpu.upload(&f64_to_words(&[*count as f64]))?;
        let mut payload = gpu.uninit::<u32>(words.len() + 2)?;
        gpu.copy(&mut payload, 0, words, 0, words.len())?;
        gpu.copy(&mut payload, words.len(), &tail, 0, 2)?;
        // SAFETY: `payload` is a live allocation of 2·(values + 1) u32 = values + 1 f64.
        run_on_comm_stream(gpu, || unsafe { comm.all_reduce_sum_f64(payload.ptr(), values + 1) })?;
        gpu.copy(words, 0, &payload, 0, words.len())?;
        gpu.copy(&mut tail, 0, &payload, words.len(), 2)?;
        // The download waits for the stream: the collective and the copies have completed.
        *count = words_to_f64(&gpu.download(&tail)?)[0].round() as usize;
        self.dist.record(REDUCE_F64, t, (values + 1) * 8);
        Ok(())
    }

    /// Starts summing the gradients of every parameter of `module` (one bucket) over ranks and
    /// returns without waiting for it; [`DeviceComm::finish_grads_all_reduce`] with the same
    /// module writes the sums back. The device-resident gradients are packed into one flat device
    /// buffer (on the compute stream, so the packing sees the finished backward); gradients a
    /// module keeps on the host (an encoder left on the CPU) are copied into a second, host
    /// bucket. On NCCL the device bucket's all-reduce is enqueued on the communication stream
    /// here; on the host path every reduction happens at the finish. The gradients themselves are
    /// not touched until the finish, and nothing reads the packed copies but the collective.
    /// Every rank has the same parameters, so the collectives match across ranks as long as every
    /// rank starts its buckets in the same order.
    pub fn start_grads_all_reduce(&self, module: &mut dyn Module) -> Result<PendingGrads> {
        let mut pending = PendingGrads { host: None, device: None };
        if self.dist.world_size() == 1 {
            return Ok(pending);
        }
        let (on_device, on_host) = grad_counts(module);
        if on_host > 0 {
            let mut flat = Vec::with_capacity(on_host);
            module.visit_params(&mut |p| {
                if let Storage::Cpu(v) = &p.grad.storage {
                    flat.extend_from_slice(v);
                }
            });
            pending.host = Some(flat);
        }
        if on_device > 0 {
            let g = gpu(self.device)?;
            // (Σ numel) f32: every device gradient of the module, in visiting order.
            let mut flat = Tensor::uninit_on(&[on_device], self.device)?;
            let mut err = None;
            {
                let Storage::Gpu(f) = &mut flat.storage else { bail!("{} is not a GPU device", self.device) };
                let mut at = 0;
                module.visit_params(&mut |p| {
                    if let Storage::Gpu(v) = &p.grad.storage {
                        if let Err(e) = g.copy(f, at, v, 0, v.len()) {
                            err.get_or_insert(e.context(format!("packing the gradient of {}", p.name)));
                        }
                        at += v.len();
                    }
                });
            }
            if let Some(e) = err {
                return Err(e);
            }
            let in_flight = match &self.path {
                Path::Host => None,
                Path::Nccl { comm, gpu } => {
                    let f = device_vec(&flat)?;
                    // SAFETY: `f` is a live allocation of f.len() f32 on the communicator's
                    // device, kept alive by the pending bucket until the compute stream has
                    // waited for the collective (`InFlight`'s drop, or the finish).
                    let (start, done) = on_comm_stream(cuda(gpu)?, || unsafe { comm.all_reduce_sum_f32(f.ptr(), f.len()) })?;
                    Some(InFlight { gpu: Arc::clone(gpu), start, done, waited: false })
                }
            };
            pending.device = Some(DeviceBucket { in_flight, flat });
        }
        Ok(pending)
    }

    /// Completes a bucket started by [`DeviceComm::start_grads_all_reduce`] on the same module:
    /// the host bucket is all-reduced over MPI, then the device bucket (on the host path
    /// downloaded, all-reduced over MPI and uploaded; on NCCL the compute stream waits for the
    /// collective), and the sums are unpacked into the gradients. Finish the buckets in the order
    /// they were started, on every rank. Counted as f32 all-reduces; on NCCL the time is the
    /// collective's own on the communication stream, read once it has completed (which blocks
    /// the host until then — the caller needs the gradients next anyway).
    pub fn finish_grads_all_reduce(&self, pending: PendingGrads, module: &mut dyn Module) -> Result<()> {
        let PendingGrads { host, device } = pending;
        let (on_device, on_host) = grad_counts(module);
        if let Some(mut flat) = host {
            if flat.len() != on_host {
                bail!("the module's host gradients hold {on_host} values, the bucket started with {}", flat.len());
            }
            self.dist.all_reduce_sum_f32(&mut flat);
            let mut at = 0;
            module.visit_params(&mut |p| {
                if let Storage::Cpu(v) = &mut p.grad.storage {
                    let k = v.len();
                    v.copy_from_slice(&flat[at..at + k]);
                    at += k;
                }
            });
        }
        let Some(mut bucket) = device else { return Ok(()) };
        if bucket.flat.numel() != on_device {
            bail!("the module's device gradients hold {on_device} values, the bucket started with {}", bucket.flat.numel());
        }
        match &mut bucket.in_flight {
            None => self.all_reduce_sum(&mut bucket.flat)?,
            Some(f) => {
                cuda(&f.gpu)?.wait(Stream::Compute, &f.done)?;
                f.waited = true;
            }
        }
        let g = gpu(self.device)?;
        let Storage::Gpu(flat) = &bucket.flat.storage else { bail!("the reduced bucket left {}", self.device) };
        let mut at = 0;
        let mut err = None;
        module.visit_params(&mut |p| {
            if let Storage::Gpu(v) = &mut p.grad.storage {
                let k = v.len();
                if let Err(e) = g.copy(v, 0, flat, at, k) {
                    err.get_or_insert(e.context(format!("unpacking the gradient of {}", p.name)));
                }
                at += k;
            }
        });
        if let Some(e) = err {
            return Err(e);
        }
        if let Some(f) = &bucket.in_flight {
            let ms = cuda(&f.gpu)?.elapsed_ms(&f.start, &f.done)?;
            self.dist.record_duration(REDUCE_F32, Duration::from_secs_f64(f64::from(ms.max(0.0)) * 1e-3), on_device * 4);
        }
        Ok(())
    }
}

/// One module's gradients on their way through an all-reduce: made by
/// [`DeviceComm::start_grads_all_reduce`], consumed by [`DeviceComm::finish_grads_all_reduce`].
/// Dropped unfinished (a step that failed), it releases its device buffer safely and the sums
/// are lost.
#[must_use = "the sums reach the gradients only through DeviceComm::finish_grads_all_reduce"]
pub struct PendingGrads {
    /// The host-resident gradients as they were at the start, in visiting order.
    host: Option<Vec<f32>>,
    /// The device-resident gradients, packed at the start.
    device: Option<DeviceBucket>,
}

/// The packed device gradients and, on NCCL, their collective in flight.
struct DeviceBucket {
    // Declared before `flat` so that it drops first: the compute stream must wait for the
    // collective before the buffer returns to the caching allocator, whose next user is the
    // compute stream.
    in_flight: Option<InFlight>,
    /// (Σ numel) f32 on the device: the collective's input and, in place, its output.
    flat: Tensor,
}

/// A bucket's NCCL all-reduce on the communication stream, between two events.
struct InFlight {
    gpu: Arc<Gpu>,
    start: StreamEvent,
    done: StreamEvent,
    /// Whether the compute stream already waits for `done`.
    waited: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.waited {
            return;
        }
        // An unfinished bucket (its step failed): order the buffer's release behind the
        // collective. If even that fails, the context is broken and nothing runs after it.
        if let Ok(cu) = cuda(&self.gpu) {
            let _ = cu.wait(Stream::Compute, &self.done);
        }
    }
}

/// (device-resident, host-resident) gradient values of `module`.
fn grad_counts(module: &mut dyn Module) -> (usize, usize) {
    let (mut on_device, mut on_host) = (0usize, 0usize);
    module.visit_params(&mut |p| match p.grad.storage {
        Storage::Gpu(_) => on_device += p.grad.numel(),
        Storage::Cpu(_) => on_host += p.grad.numel(),
    });
    (on_device, on_host)
}

fn cuda(g: &Gpu) -> Result<&CudaGpu> {
    match &g.kind {
        GpuKind::Cuda(cu) => Ok(cu),
        GpuKind::Sim(_) => bail!("{} is not a CUDA device", g.device),
    }
}

/// Enqueues `collective` (an NCCL call, which enqueues on the communication stream) behind
/// everything enqueued on the compute stream so far; returns the events around it on the
/// communication stream (start, done). The compute stream does not wait for it.
fn on_comm_stream(cu: &CudaGpu, collective: impl FnOnce() -> Result<()>) -> Result<(StreamEvent, StreamEvent)> {
    let inputs_written = cu.record(Stream::Compute)?;
    cu.wait(Stream::Comm, &inputs_written)?;
    let start = cu.record(Stream::Comm)?;
    collective()?;
    let done = cu.record(Stream::Comm)?;
    Ok((start, done))
}

/// `collective` on the communication stream, with the compute stream waiting for it: whatever
/// the compute stream runs next (a kernel reading the result, the buffers' release) comes after.
fn run_on_comm_stream(g: &Gpu, collective: impl FnOnce() -> Result<()>) -> Result<()> {
    let cu = cuda(g)?;
    let (_, done) = on_comm_stream(cu, collective)?;
    cu.wait(Stream::Compute, &done)
}

/// `multimat doctor --device cuda`'s NCCL check: a communicator of one rank on `device`, and an
/// in-place sum all-reduce of a small f32 and a small f64 buffer on the device (on the
/// communication stream, the compute stream waiting for it) — over one rank
/// the sum is the input, bit for bit, so the values that come back must equal those sent. The
/// line to print, or why NCCL cannot be used (not loadable, or a call failed or was wrong).
pub fn nccl_self_check(device: Device) -> Result<String> {
    const N: usize = 1000;
    let nccl = super::nccl::load()?;
    let version = super::nccl_version_string(nccl.version);
    let g = gpu(device)?;
    let GpuKind::Cuda(cu) = &g.kind else { bail!("{device} is not a CUDA device: NCCL is not used there") };
    cu.bind_to_thread()?;
    let t = Instant::now();
    // On the communication stream, as in training: the check covers the second stream and the
    // events that order it against the compute stream.
    let comm = NcclComm::init(nccl, &nccl.unique_id()?, 0, 1, cu.stream_handle(Stream::Comm)? as *mut std::ffi::c_void)?;
    // Values whose every bit matters: any arithmetic on them (a wrong type, a scaled sum) shows.
    let f32s: Vec<f32> = (0..N).map(|i| (i as f32 * 0.37 - 100.0) / 3.0).collect();
    let f64s: Vec<f64> = (0..N).map(|i| (i as f64 + 0.5).sqrt() * 1e10 / 7.0).collect();
    let a = g.upload(&f32s)?;
    let b = g.upload(&f64_to_words(&f64s))?;
    // SAFETY: `a` holds N f32 and `b` 2N u32 = N f64, both live on this communicator's device
    // until the downloads below, which the compute stream runs after the collectives.
    run_on_comm_stream(&g, || unsafe {
        comm.all_reduce_sum_f32(a.ptr(), N)?;
        comm.all_reduce_sum_f64(b.ptr(), N)
    })?;
    let (back32, back64) = (g.download(&a)?, words_to_f64(&g.download(&b)?));
    let elapsed = t.elapsed().as_secs_f64();
    let wrong32 = back32.iter().zip(&f32s).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
    let wrong64 = back64.iter().zip(&f64s).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
    if wrong32 + wrong64 > 0 {
        bail!("NCCL {version}: a one-rank sum all-reduce on {device} changed its input ({wrong32} of {N} f32 and {wrong64} of {N} f64 values differ)");
    }
    Ok(format!(
        "NCCL {version}: one-rank communicator on {device}, in-place sum all-reduce of {N} f32 and {N} f64 returned the input exactly ({:.1} ms with setup)",
        elapsed * 1e3
    ))
}

fn device_vec(t: &Tensor) -> Result<&crate::engine::backend::GpuVec<f32>> {
    match &t.storage {
        Storage::Gpu(v) => Ok(v),
        Storage::Cpu(_) => bail!("a host tensor where a device tensor was expected"),
    }
}
