//! The CUDA arm of the GPU primitives, through cudarc with dynamic loading: the binary builds and
//! runs where no CUDA exists, and says so clearly when `--device cuda` is asked for there.
//!
//! One context per process and one compute stream: the context's default (legacy) stream, on
//! which every kernel, copy, GEMM, convolution and allocation is enqueued, so stream order alone
//! keeps them — and the caching allocator's reuse of freed blocks — correct. A second stream,
//! the communication stream, exists for one reason: the scaling model in ARCHITECTURE.md finds
//! the unoverlapped 121 MB parameter-gradient all-reduce the first communication limit, and on
//! one stream an all-reduce cannot run while the next encoder's backward computes. It is created
//! non-blocking (a blocking stream would implicitly synchronise with the legacy default stream and
//! serialise everything again), only when a multi-rank job asks for it, and it never touches
//! memory except through the events that order it against the compute stream ([`StreamEvent`],
//! [`Stream`]). No real GPU has measured the overlap yet. Kernels come from `kernels/*.cu`, compiled by NVRTC for
//! this device's architecture on first use of a family and cached for the process. GEMMs go to
//! cuBLAS (`cublasSgemmStridedBatched`) through cudarc's `cublas` sys bindings — the maintained
//! form of the `cublas-sys` crate, which is a 2016 release that links CUDA at build time.
//! 3-D convolutions go to cuDNN 9 (`libcudnn.so.9`, found by cudarc's loader on the library
//! path) through `cudnn.rs`; this file owns the handle (on our stream) and the cache of chosen
//! algorithms.

use super::cudnn::{check as check_cudnn, Algo};
use super::{ConvDesc, ConvPass, GemmDesc, Kernel, LaunchConfig};
use anyhow::{bail, Context, Result};
use cudarc::cublas::sys as cublas;
use cudarc::cudnn::sys as cudnn;
use cudarc::driver::{result as drv, sys, CudaContext, CudaStream};
use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::{Arc, Mutex};

/// Raw driver handles are plain pointers owned by the context; they are used under our locks or
/// by the one value that owns them (an event), so moving them between threads is sound.
#[derive(Clone, Copy)]
struct Handle<T>(T);
// SAFETY: see above — the handles are only dereferenced by the driver, under `CudaGpu`'s locks.
unsafe impl<T> Send for Handle<T> {}
unsafe impl<T> Sync for Handle<T> {}

/// The event recorded after the last copy out of a pinned staging buffer.
pub struct CopyEvent(Handle<sys::CUevent>);

/// One of the two streams of a CUDA device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// The engine's stream: every kernel, copy and allocation.
    Compute,
    /// Collectives only (NCCL), ordered against the compute stream by events.
    Comm,
}

/// A timing-enabled CUDA event recorded on one of the streams: another stream can wait on it,
/// and two of them on the same stream give the time between them. Destroyed on drop (the driver
/// releases an event still pending once it completes).
pub struct StreamEvent(Handle<sys::CUevent>);

impl Drop for StreamEvent {
    fn drop(&mut self) {
        // SAFETY: the event was created by `CudaGpu::record` and is destroyed once; a failure
        // means the context is gone at exit, with nothing left to release.
        let _ = unsafe { drv::event::destroy(self.0 .0) };
    }
}

pub struct CudaGpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    /// The communication stream, created on first use (`Stream::Comm`).
    comm_stream: Mutex<Option<Arc<CudaStream>>>,
    /// (major, minor) compute capability, for NVRTC's `--gpu-architecture=sm_XY`.
    pub compute_capability: (i32, i32),
    modules: Mutex<HashMap<&'static str, Handle<sys::CUmodule>>>,
    functions: Mutex<HashMap<Kernel, Handle<sys::CUfunction>>>,
    cublas: Mutex<Option<Handle<cublas::cublasHandle_t>>>,
    cudnn: Mutex<Option<Handle<cudnn::cudnnHandle_t>>>,
    /// cuDNN's deterministic algorithm (and workspace bytes) per convolution, pass and math mode:
    /// the heuristics query costs more than a small convolution.
    conv_algos: Mutex<HashMap<(ConvDesc, ConvPass, bool), (Algo, usize)>>,
}

/// Whether the CUDA driver library can be loaded (cudarc panics on use otherwise).
pub fn driver_present() -> bool {
    // SAFETY: only probes whether the shared library loads.
    unsafe { sys::is_culib_present() }
}

impl CudaGpu {
    pub fn new(ordinal: usize) -> Result<CudaGpu> {
        if !driver_present() {
            bail!("no CUDA driver (libcuda.so) on this machine: use --device cpu, or --device cuda-sim to run the GPU code on the CPU");
        }
        let count = CudaContext::device_count().context("counting CUDA devices")?;
        if ordinal >= count.max(0) as usize {
            bail!("CUDA device {ordinal} does not exist: this machine has {count}");
        }
        let ctx = CudaContext::new(ordinal).context("creating the CUDA context")?;
        let stream = ctx.default_stream();
        let compute_capability = ctx.compute_capability()?;
        Ok(CudaGpu {
            ctx,
            stream,
            comm_stream: Mutex::new(None),
            compute_capability,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            cublas: Mutex::new(None),
            cudnn: Mutex::new(None),
            conv_algos: Mutex::new(HashMap::new()),
        })
    }

    /// Device name, e.g. "NVIDIA H100 80GB HBM3".
    pub fn name(&self) -> Result<String> {
        Ok(self.ctx.name()?)
    }

    pub fn alloc(&self, bytes: usize) -> Result<u64> {
        self.ctx.bind_to_thread()?;
        // SAFETY: the stream belongs to this context; the memory is only used on it.
        unsafe { drv::malloc_async(self.stream.cu_stream(), bytes) }.with_context(|| format!("allocating {bytes} B on the GPU"))
    }

    pub fn free(&self, ptr: u64) {
        // SAFETY: `ptr` came from `alloc` and is freed once (the caching pool owns it). A failure
        // here means the context is already gone at exit, when there is nothing left to do.
        let _ = unsafe { drv::free_async(ptr, self.stream.cu_stream()) };
    }

    pub fn memset_zero(&self, ptr: u64, bytes: usize) -> Result<()> {
        // SAFETY: `ptr` is a live allocation of at least `bytes` bytes.
        unsafe { drv::memset_d8_async(ptr, 0, bytes, self.stream.cu_stream()) }?;
        Ok(())
    }

    pub fn htod<T>(&self, dst: u64, src: &[T]) -> Result<()> {
        self.ctx.bind_to_thread()?;
        // SAFETY: the destination holds `src.len()` values; the copy is synchronous with respect
        // to `src` because we synchronise before returning (src may be pageable host memory).
        unsafe { drv::memcpy_htod_async(dst, src, self.stream.cu_stream()) }?;
        self.synchronize()
    }

    pub fn dtoh<T>(&self, dst: &mut [T], src: u64) -> Result<()> {
        self.ctx.bind_to_thread()?;
        // SAFETY: the source holds `dst.len()` values; we wait for the copy before returning.
        unsafe { drv::memcpy_dtoh_async(dst, src, self.stream.cu_stream()) }?;
        self.synchronize()
    }

    pub fn dtod(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        // SAFETY: both ranges were checked by the caller.
        unsafe { drv::memcpy_dtod_async(dst, src, bytes, self.stream.cu_stream()) }?;
        Ok(())
    }

    /// A page-locked host buffer of `bytes` bytes (its host address) and the event that will mark
    /// the end of each copy out of it. Both live for the process, as the staging pool keeps them.
    pub fn alloc_pinned(&self, bytes: usize) -> Result<(u64, CopyEvent)> {
        self.ctx.bind_to_thread()?;
        // SAFETY: plain allocation; the memory is only written before a copy is enqueued and
        // after the previous copy's event completed (staging.rs).
        let host = unsafe { drv::malloc_host(bytes, 0) }.with_context(|| format!("allocating {bytes} B of pinned host memory"))?;
        let event = drv::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING).context("creating a CUDA event")?;
        Ok((host as u64, CopyEvent(Handle(event))))
    }

    /// Enqueues the copy of `bytes` bytes from the pinned buffer at `host` to `dst` on our stream
    /// and records `event` behind it; returns without waiting.
    pub fn htod_pinned(&self, dst: u64, host: u64, bytes: usize, event: &CopyEvent) -> Result<()> {
        self.ctx.bind_to_thread()?;
        // SAFETY: `host` is a pinned buffer of at least `bytes` bytes that nobody writes until
        // `event` completes; `dst` is a live device allocation of at least `bytes` bytes.
        unsafe {
            let src = std::slice::from_raw_parts(host as *const u8, bytes);
            drv::memcpy_htod_async(dst, src, self.stream.cu_stream())?;
            drv::event::record(event.0 .0, self.stream.cu_stream())?;
        }
        Ok(())
    }

    /// Whether every copy recorded on `event` has finished.
    pub fn event_done(&self, event: &CopyEvent) -> Result<bool> {
        self.ctx.bind_to_thread()?;
        // SAFETY: the event was created by `alloc_pinned` and is never destroyed.
        match unsafe { drv::event::query(event.0 .0) } {
            Ok(()) => Ok(true),
            Err(drv::DriverError(sys::CUresult::CUDA_ERROR_NOT_READY)) => Ok(false),
            Err(e) => Err(e).context("querying a copy's CUDA event"),
        }
    }

    /// Waits until the copies recorded on `event` have finished.
    pub fn wait_event(&self, event: &CopyEvent) -> Result<()> {
        self.ctx.bind_to_thread()?;
        // SAFETY: as in `event_done`.
        unsafe { drv::event::synchronize(event.0 .0) }.context("waiting for a copy's CUDA event")
    }

    /// The raw handle of `stream`, for libraries that enqueue on it (NCCL in `dist::nccl`); the
    /// communication stream is created (non-blocking) on first use.
    pub fn stream_handle(&self, stream: Stream) -> Result<sys::CUstream> {
        match stream {
            Stream::Compute => Ok(self.stream.cu_stream()),
            Stream::Comm => {
                let mut comm = self.comm_stream.lock().unwrap();
                if let Some(s) = comm.as_ref() {
                    return Ok(s.cu_stream());
                }
                // cudarc's new_stream creates it with CU_STREAM_NON_BLOCKING: no implicit
                // synchronisation with the legacy default stream our compute work runs on.
                let s = self.ctx.new_stream().context("creating the CUDA communication stream")?;
                let raw = s.cu_stream();
                *comm = Some(s);
                Ok(raw)
            }
        }
    }

    /// A new timing-enabled event recorded on `stream` behind everything enqueued there so far.
    pub fn record(&self, stream: Stream) -> Result<StreamEvent> {
        self.ctx.bind_to_thread()?;
        let on = self.stream_handle(stream)?;
        let event = StreamEvent(Handle(drv::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT).context("creating a CUDA event")?));
        // SAFETY: a live event of this context and a live stream of it.
        unsafe { drv::event::record(event.0 .0, on) }.with_context(|| format!("recording a CUDA event on the {stream:?} stream"))?;
        Ok(event)
    }

    /// Makes `stream` wait, without blocking the host, until `event` has completed: work
    /// enqueued on `stream` afterwards runs after the work recorded before `event`.
    pub fn wait(&self, stream: Stream, event: &StreamEvent) -> Result<()> {
        self.ctx.bind_to_thread()?;
        let on = self.stream_handle(stream)?;
        // SAFETY: both the stream and the event are live (the event is owned by the caller).
        unsafe { drv::stream::wait_event(on, event.0 .0, sys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT) }
            .with_context(|| format!("making the {stream:?} stream wait for a CUDA event"))
    }

    /// Blocks the host until `end` has completed, then the milliseconds between `start` and
    /// `end` (both recorded on the same stream, `start` first).
    pub fn elapsed_ms(&self, start: &StreamEvent, end: &StreamEvent) -> Result<f32> {
        self.ctx.bind_to_thread()?;
        // SAFETY: both events are live, timing-enabled and recorded; `start` precedes `end`.
        unsafe {
            drv::event::synchronize(end.0 .0).context("waiting for a CUDA event")?;
            drv::event::elapsed(start.0 .0, end.0 .0).context("reading the time between two CUDA events")
        }
    }

    /// Makes this device's context current on the calling thread (NCCL's initialisation and
    /// collectives find the device through it).
    pub fn bind_to_thread(&self) -> Result<()> {
        self.ctx.bind_to_thread().context("making the CUDA context current")
    }

    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().context("waiting for the GPU")
    }

    /// The compiled function of `kernel`, compiling its family's source on first use.
    fn function(&self, kernel: Kernel) -> Result<sys::CUfunction> {
        if let Some(f) = self.functions.lock().unwrap().get(&kernel) {
            return Ok(f.0);
        }
        let module = {
            let mut modules = self.modules.lock().unwrap();
            match modules.get(kernel.family) {
                Some(m) => m.0,
                None => {
                    let (major, minor) = self.compute_capability;
                    let image = super::nvrtc::load()?.compile(kernel.family, &format!("sm_{major}{minor}"))?.image;
                    self.ctx.bind_to_thread()?;
                    // SAFETY: `image` is a complete cubin produced by NVRTC for this architecture.
                    let m = unsafe { drv::module::load_data(image.as_ptr() as *const c_void) }
                        .with_context(|| format!("loading the compiled kernels/{}.cu", kernel.family))?;
                    modules.insert(kernel.family, Handle(m));
                    m
                }
            }
        };
        // SAFETY: the module is live for the process (never unloaded).
        let f = unsafe { drv::module::get_function(module, CString::new(kernel.name)?) }
            .with_context(|| format!("kernel {} not found in kernels/{}.cu", kernel.name, kernel.family))?;
        self.functions.lock().unwrap().insert(kernel, Handle(f));
        Ok(f)
    }

    pub fn launch(&self, kernel: Kernel, cfg: LaunchConfig, args: &mut [*mut c_void]) -> Result<()> {
        let f = self.function(kernel)?;
        self.ctx.bind_to_thread()?;
        let g = cfg.grid;
        let b = cfg.block;
        // SAFETY: `args` holds one pointer per kernel parameter, to values of the kernel's
        // parameter types (the launchers in engine::gpu build them next to the kernel's signature);
        // the driver copies the values at launch.
        unsafe { drv::launch_kernel(f, (g[0], g[1], g[2]), (b[0], b[1], b[2]), cfg.shared_bytes, self.stream.cu_stream(), args) }?;
        Ok(())
    }

    fn cublas_handle(&self) -> Result<cublas::cublasHandle_t> {
        let mut h = self.cublas.lock().unwrap();
        if let Some(h) = *h {
            return Ok(h.0);
        }
        // SAFETY: probing the library before the first call, which would panic if it is absent.
        if !unsafe { cublas::is_culib_present() } {
            bail!("cuBLAS (libcublas.so) not found: put the CUDA libraries on LD_LIBRARY_PATH");
        }
        let mut handle = std::ptr::null_mut();
        self.ctx.bind_to_thread()?;
        // SAFETY: creating a handle and binding it to our stream.
        unsafe {
            check_cublas(cublas::cublasCreate_v2(&mut handle), "cublasCreate")?;
            check_cublas(cublas::cublasSetStream_v2(handle, self.stream.cu_stream() as cublas::cudaStream_t), "cublasSetStream")?;
        }
        *h = Some(Handle(handle));
        Ok(handle)
    }

    pub fn gemm(&self, d: &GemmDesc, a: u64, b: u64, c: u64, tf32: bool) -> Result<()> {
        let h = self.cublas_handle()?;
        let op = |t: bool| if t { cublas::cublasOperation_t::CUBLAS_OP_T } else { cublas::cublasOperation_t::CUBLAS_OP_N };
        let math = if tf32 { cublas::cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH } else { cublas::cublasMath_t::CUBLAS_DEFAULT_MATH };
        // SAFETY: the descriptor was checked; a, b, c are device addresses of live buffers that
        // the launcher sized from the same descriptor.
        unsafe {
            check_cublas(cublas::cublasSetMathMode(h, math), "cublasSetMathMode")?;
            check_cublas(
                cublas::cublasSgemmStridedBatched(
                    h, op(d.trans_a), op(d.trans_b), d.m as i32, d.n as i32, d.k as i32, &d.alpha,
                    a as *const f32, d.lda as i32, d.stride_a as i64, b as *const f32, d.ldb as i32, d.stride_b as i64,
                    &d.beta, c as *mut f32, d.ldc as i32, d.stride_c as i64, d.batch as i32,
                ),
                "cublasSgemmStridedBatched",
            )
        }
    }

    /// The process's cuDNN handle on our stream, created on first use.
    pub(super) fn cudnn_handle(&self) -> Result<cudnn::cudnnHandle_t> {
        let mut h = self.cudnn.lock().unwrap();
        if let Some(h) = *h {
            return Ok(h.0);
        }
        // SAFETY: probing the library before the first call, which would panic if it is absent.
        if !unsafe { cudnn::is_culib_present() } {
            bail!("cuDNN (libcudnn.so.9) not found: put its directory (e.g. the nvidia-cudnn-cu13 wheel's nvidia/cudnn/lib) on LD_LIBRARY_PATH");
        }
        let mut handle = std::ptr::null_mut();
        self.ctx.bind_to_thread()?;
        // SAFETY: creating a handle and binding it to our stream.
        unsafe {
            check_cudnn(cudnn::cudnnCreate(&mut handle), "cudnnCreate")?;
            check_cudnn(cudnn::cudnnSetStream(handle, self.stream.cu_stream() as cudnn::cudaStream_t), "cudnnSetStream")?;
        }
        *h = Some(Handle(handle));
        Ok(handle)
    }

    /// The cached algorithm choice for `key`, or `choose()`'s, remembered.
    pub(super) fn cached_conv_algo(&self, key: (ConvDesc, ConvPass, bool), choose: impl FnOnce() -> Result<(Algo, usize)>) -> Result<(Algo, usize)> {
        if let Some(v) = self.conv_algos.lock().unwrap().get(&key) {
            return Ok(*v);
        }
        let v = choose()?;
        self.conv_algos.lock().unwrap().insert(key, v);
        Ok(v)
    }

    /// cuDNN library version (e.g. 91300), if the library loads.
    pub fn cudnn_version(&self) -> Option<usize> {
        // SAFETY: probing, then a call without arguments.
        unsafe { cudnn::is_culib_present().then(|| cudnn::cudnnGetVersion()) }
    }

    /// cuBLAS library version (e.g. 130001).
    pub fn cublas_version(&self) -> Result<i32> {
        let h = self.cublas_handle()?;
        let mut v = 0;
        // SAFETY: valid handle, output pointer to a local.
        unsafe { check_cublas(cublas::cublasGetVersion_v2(h, &mut v), "cublasGetVersion")? };
        Ok(v)
    }
}

fn check_cublas(s: cublas::cublasStatus_t, what: &str) -> Result<()> {
    if s == cublas::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
        Ok(())
    } else {
        bail!("{what} failed: {s:?}")
    }
}

/// The driver's CUDA version as (major, minor), if a driver is present.
pub fn driver_version() -> Option<(i32, i32)> {
    if !driver_present() {
        return None;
    }
    let mut v = 0;
    // SAFETY: output pointer to a local; the library is present.
    let ok = unsafe { sys::cuDriverGetVersion(&mut v) } == sys::CUresult::CUDA_SUCCESS;
    ok.then_some((v / 1000, (v % 1000) / 10))
}
