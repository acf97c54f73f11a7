//! Devices and device memory: the one boundary between the engine and the hardware.
//!
//! A tensor lives on a [`Device`]: the CPU (host `Vec<f32>`, the readable reference ops), a CUDA
//! GPU, or `cuda-sim` — the CPU executor of the very same GPU code. The two GPU kinds share one
//! [`Gpu`] type and therefore every line of host-side GPU code (launch configurations, kernel
//! names, GEMM descriptors, the caching allocator); only four primitives differ — allocate, copy,
//! launch a kernel, run a GEMM — and those are the two arms of [`GpuKind`]. That is what lets the
//! test suite, on machines without a GPU, execute every kernel's own CUDA source and every cuBLAS
//! descriptor and compare them with the CPU references. A fifth primitive, the 3-D convolution
//! (cuDNN on `cuda`, the CPU convolution on `cuda-sim`, from one [`ConvDesc`]), lives in
//! `cudnn.rs`.
//!
//! Memory on a GPU device is a [`GpuVec`]: a device address and a length. It has no host view;
//! the only ways in and out are [`Gpu::upload`] and [`Gpu::download`] (on `cuda-sim` too, although
//! its memory is host memory), so a forgotten host access in device code is a compile error or a
//! clear panic in a test, never a silent read of stale data.
//!
//! Kernel launches take cuLaunchKernel's argument convention — an array of pointers to each
//! argument's value ([`arg`]) — on both kinds; the simulator's exported entry points unpack the
//! same array (see `kernels/sim/`).

pub mod cuda;
pub mod cudnn;
pub mod gemm;
pub mod kernels;
pub mod nvrtc;
pub mod sim;
pub mod staging;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ffi::c_void;
use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};

pub use cudnn::{ConvDesc, ConvPass};
pub use gemm::GemmDesc;
pub use staging::StagingStats;

/// Where a tensor's storage lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Device {
    #[default]
    Cpu,
    /// CUDA device ordinal (a driver is needed at run time; the build needs no CUDA).
    Cuda(usize),
    /// The CPU executor of the CUDA backend: same host code, same kernel sources, host memory
    /// reachable only through explicit copies. For tests and for machines without a GPU.
    CudaSim,
}

impl Device {
    /// True for the devices that run the GPU code (CUDA and its simulator).
    pub fn is_gpu(self) -> bool {
        !matches!(self, Device::Cpu)
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
            Device::CudaSim => write!(f, "cuda-sim"),
        }
    }
}

impl FromStr for Device {
    type Err = anyhow::Error;
    /// `cpu`, `cuda` (= `cuda:0`), `cuda:N`, `cuda-sim`.
    fn from_str(s: &str) -> Result<Device> {
        match s.trim() {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            "cuda-sim" | "cuda_sim" => Ok(Device::CudaSim),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(Device::Cuda(n)),
                _ => bail!("unknown device {other:?}: expected cpu, cuda, cuda:N or cuda-sim"),
            },
        }
    }
}

/// The device a process of a multi-process job uses for `spec`: a bare `cuda` means this
/// process's node-local rank's GPU (one rank per GPU), `cuda:N` is taken as written.
pub fn device_for_local_rank(spec: &str, local_rank: usize) -> Result<Device> {
    match spec.trim() {
        "cuda" => Ok(Device::Cuda(local_rank)),
        other => other.parse(),
    }
}

/// Plain values that may live in device memory (bit-copyable, no padding).
pub trait DeviceValue: Copy + Default + Send + Sync + 'static {}
impl DeviceValue for f32 {}
impl DeviceValue for u32 {}
impl DeviceValue for i32 {}
impl DeviceValue for u8 {}

/// The two implementations of the GPU primitives.
pub enum GpuKind {
    /// Kernels run by the CPU executor of `kernels/*.cu`; GEMMs by the CPU GEMM from their
    /// descriptors. Memory is host memory behind device addresses.
    Sim(SimMemory),
    /// A CUDA device through cudarc (dynamic loading).
    Cuda(cuda::CudaGpu),
}

/// A GPU-like device and its caching allocator. Obtain one with [`gpu`].
pub struct Gpu {
    pub device: Device,
    pub kind: GpuKind,
    /// Free device blocks by rounded byte size, reused before new allocations (allocation on a
    /// real GPU synchronises and costs ~100 µs; a training step allocates thousands of buffers).
    pool: Mutex<HashMap<usize, Vec<u64>>>,
    /// TF32 tensor-core math for GEMMs (a no-op on the simulator, which computes in f32).
    tf32: std::sync::atomic::AtomicBool,
    /// Host staging buffers of batch uploads (pinned on `cuda`), see `staging.rs`.
    staging: staging::StagingPool,
}

/// The process-wide handle of a GPU device (created on first use, then shared).
pub fn gpu(device: Device) -> Result<Arc<Gpu>> {
    static REGISTRY: OnceLock<Mutex<HashMap<Device, Arc<Gpu>>>> = OnceLock::new();
    let mut reg = REGISTRY.get_or_init(Default::default).lock().unwrap();
    if let Some(g) = reg.get(&device) {
        return Ok(g.clone());
    }
    let kind = match device {
        Device::Cpu => bail!("the CPU is not a GPU device"),
        Device::CudaSim => GpuKind::Sim(SimMemory::default()),
        Device::Cuda(n) => GpuKind::Cuda(cuda::CudaGpu::new(n).with_context(|| format!("opening CUDA device {n}"))?),
    };
    let g = Arc::new(Gpu { device, kind, pool: Mutex::new(HashMap::new()), tf32: false.into(), staging: Default::default() });
    reg.insert(device, g.clone());
    Ok(g)
}

/// Bytes an allocation of `bytes` is rounded up to: 256-byte granules below 1 MiB, then 1 MiB
/// granules, so reuse is likely while waste stays below ~1 % for large buffers.
fn pool_size(bytes: usize) -> usize {
    let granule = if bytes < (1 << 20) { 256 } else { 1 << 20 };
    bytes.max(1).div_ceil(granule) * granule
}

impl Gpu {
    /// Turns TF32 tensor-core GEMMs on or off (CUDA only; results then agree with f32 to ~1e-3
    /// relative, see `gemm.rs`).
    pub fn set_tf32(&self, on: bool) {
        self.tf32.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn tf32(&self) -> bool {
        self.tf32.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn raw_alloc(&self, bytes: usize) -> Result<u64> {
        if let Some(p) = self.pool.lock().unwrap().get_mut(&bytes).and_then(Vec::pop) {
            return Ok(p);
        }
        match &self.kind {
            GpuKind::Sim(m) => Ok(m.alloc(bytes)),
            GpuKind::Cuda(c) => c.alloc(bytes),
        }
    }

    fn raw_free(&self, ptr: u64, bytes: usize) {
        self.pool.lock().unwrap().entry(bytes).or_default().push(ptr);
    }

    /// Returns every cached free block to the device (e.g. before a large allocation fails).
    pub fn empty_cache(&self) {
        let blocks: Vec<(usize, Vec<u64>)> = self.pool.lock().unwrap().drain().collect();
        for (bytes, ptrs) in blocks {
            for p in ptrs {
                match &self.kind {
                    GpuKind::Sim(m) => m.free(p, bytes),
                    GpuKind::Cuda(c) => c.free(p),
                }
            }
        }
    }

    /// `n` zeroed values on the device.
    pub fn zeros<T: DeviceValue>(self: &Arc<Self>, n: usize) -> Result<GpuVec<T>> {
        let bytes = pool_size(n * std::mem::size_of::<T>());
        let ptr = self.raw_alloc(bytes)?;
        let v = GpuVec { gpu: self.clone(), ptr, len: n, bytes, _t: PhantomData };
        self.memset_zero(ptr, bytes)?;
        Ok(v)
    }

    /// `n` values on the device whose contents the caller overwrites completely before reading.
    pub fn uninit<T: DeviceValue>(self: &Arc<Self>, n: usize) -> Result<GpuVec<T>> {
        let bytes = pool_size(n * std::mem::size_of::<T>());
        let ptr = self.raw_alloc(bytes)?;
        Ok(GpuVec { gpu: self.clone(), ptr, len: n, bytes, _t: PhantomData })
    }

    fn memset_zero(&self, ptr: u64, bytes: usize) -> Result<()> {
        match &self.kind {
            GpuKind::Sim(_) => {
                // SAFETY: `ptr` is a live simulator allocation of at least `bytes` bytes.
                unsafe { std::ptr::write_bytes(ptr as *mut u8, 0, bytes) };
                Ok(())
            }
            GpuKind::Cuda(c) => c.memset_zero(ptr, bytes),
        }
    }

    /// Host values → a new device buffer.
    pub fn upload<T: DeviceValue>(self: &Arc<Self>, host: &[T]) -> Result<GpuVec<T>> {
        let v = self.uninit::<T>(host.len())?;
        match &self.kind {
            // SAFETY: the destination holds at least `host.len()` values of T.
            GpuKind::Sim(_) => unsafe { std::ptr::copy_nonoverlapping(host.as_ptr(), v.ptr as *mut T, host.len()) },
            GpuKind::Cuda(c) => c.htod(v.ptr, host)?,
        }
        Ok(v)
    }

    /// A device buffer → host values (waits for the work queued before it).
    pub fn download<T: DeviceValue>(&self, v: &GpuVec<T>) -> Result<Vec<T>> {
        let mut host = vec![T::default(); v.len];
        match &self.kind {
            // SAFETY: the source holds `v.len` values of T.
            GpuKind::Sim(_) => unsafe { std::ptr::copy_nonoverlapping(v.ptr as *const T, host.as_mut_ptr(), v.len) },
            GpuKind::Cuda(c) => c.dtoh(&mut host, v.ptr)?,
        }
        Ok(host)
    }

    /// Device-to-device copy of `n` values from `src[src_off..]` to `dst[dst_off..]`.
    pub fn copy<T: DeviceValue>(&self, dst: &mut GpuVec<T>, dst_off: usize, src: &GpuVec<T>, src_off: usize, n: usize) -> Result<()> {
        if dst_off + n > dst.len || src_off + n > src.len {
            bail!("device copy of {n} values out of range (dst {dst_off}/{}, src {src_off}/{})", dst.len, src.len);
        }
        let size = std::mem::size_of::<T>();
        let (d, s) = (dst.ptr + (dst_off * size) as u64, src.ptr + (src_off * size) as u64);
        match &self.kind {
            // SAFETY: both ranges were checked against their buffers' lengths above.
            GpuKind::Sim(_) => unsafe { std::ptr::copy(s as *const u8, d as *mut u8, n * size) },
            GpuKind::Cuda(c) => c.dtod(d, s, n * size)?,
        }
        Ok(())
    }

    /// Launches `kernel` with `cfg`; `args` holds a pointer to each argument's value in the
    /// kernel's parameter order (use [`arg`]). Device buffers are passed by their address
    /// ([`GpuVec::ptr`]), i.e. a `u64`.
    pub fn launch(&self, kernel: Kernel, cfg: LaunchConfig, args: &mut [*mut c_void]) -> Result<()> {
        cfg.check(kernel)?;
        // The registry knows every exported kernel's parameter count: a launcher that passes a
        // different number of arguments is refused on either kind, before anything runs.
        let entry = kernels::find(kernel.name).with_context(|| format!("no kernel {} is compiled into this build", kernel.name))?;
        if entry.source != kernel.family || entry.arity() != args.len() {
            bail!("kernel {} lives in kernels/{}.cu and takes {} arguments; the launcher says kernels/{}.cu and passes {}", kernel.name, entry.source, entry.arity(), kernel.family, args.len());
        }
        if let GpuKind::Sim(m) = &self.kind {
            m.launched.lock().unwrap().insert(kernel.name);
        }
        match &self.kind {
            // SAFETY: the launchers in engine::gpu pass, per kernel parameter, a pointer to a value
            // of that parameter's type, and device addresses of live buffers sized for the launch.
            GpuKind::Sim(_) => unsafe { sim::launch(kernel.name, cfg.grid, cfg.block, cfg.shared_bytes, args) },
            GpuKind::Cuda(c) => c.launch(kernel, cfg, args),
        }
        .with_context(|| format!("kernel {}::{} on {}", kernel.family, kernel.name, self.device))
    }

    /// C = α·op(A)·op(B) + β·C as cuBLAS reads it (column-major, see [`GemmDesc`]).
    pub fn gemm(&self, d: &GemmDesc, a: u64, b: u64, c: u64) -> Result<()> {
        d.check()?;
        match &self.kind {
            GpuKind::Sim(m) => {
                m.check_range(a, d.a_extent() * 4, "A")?;
                m.check_range(b, d.b_extent() * 4, "B")?;
                m.check_range(c, d.c_extent() * 4, "C")?;
                // SAFETY: every element the descriptor touches lies inside a live allocation (checked).
                unsafe { d.run_on_host(a as *const f32, b as *const f32, c as *mut f32) };
                Ok(())
            }
            GpuKind::Cuda(cu) => cu.gemm(d, a, b, c, self.tf32()),
        }
        .with_context(|| format!("GEMM {d:?} on {}", self.device))
    }

    /// One pass of a 3-D convolution (cuDNN on `cuda`, the CPU convolution on `cuda-sim`):
    /// `x`, `w`, `y` are the device addresses of the input, filter and output (or their
    /// gradients, see [`ConvPass`]), each holding the descriptor's element count.
    pub fn conv(self: &Arc<Self>, d: &ConvDesc, pass: ConvPass, x: u64, w: u64, y: u64) -> Result<()> {
        cudnn::dispatch(self, d, pass, x, w, y).with_context(|| format!("convolution {pass:?} {d:?} on {}", self.device))
    }

    /// Waits until every queued operation has finished.
    pub fn synchronize(&self) -> Result<()> {
        match &self.kind {
            GpuKind::Sim(_) => Ok(()),
            GpuKind::Cuda(c) => c.synchronize(),
        }
    }
}

/// A pointer to one kernel argument's value, for [`Gpu::launch`].
pub fn arg<T>(v: &T) -> *mut c_void {
    v as *const T as *mut c_void
}

/// A kernel: the `.cu` file (family) it lives in and its exported name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Kernel {
    pub family: &'static str,
    pub name: &'static str,
}

/// Grid, block and dynamic shared memory of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
}

/// Most blocks a grid-stride elementwise launch uses: enough to fill an H100 (132 SMs × 16
/// resident blocks of 128 threads), few enough that the simulator's per-block cost stays small.
pub const MAX_ELEMENTWISE_BLOCKS: usize = 2048;

impl LaunchConfig {
    /// One-dimensional grid-stride launch over `n` elements with `threads` per block.
    pub fn elementwise(n: usize, threads: u32) -> LaunchConfig {
        let blocks = n.div_ceil(threads as usize).clamp(1, MAX_ELEMENTWISE_BLOCKS) as u32;
        LaunchConfig { grid: [blocks, 1, 1], block: [threads, 1, 1], shared_bytes: 0 }
    }

    /// One block of `threads` per row, `rows` rows (`rows` must fit the grid's x dimension).
    pub fn per_row(rows: usize, threads: u32, shared_bytes: u32) -> LaunchConfig {
        LaunchConfig { grid: [rows.max(1) as u32, 1, 1], block: [threads, 1, 1], shared_bytes }
    }

    /// The limits every CUDA device since sm_70 enforces, checked before launching so the
    /// simulator refuses what a GPU would refuse.
    fn check(&self, k: Kernel) -> Result<()> {
        let threads: u64 = self.block.iter().map(|&v| v as u64).product();
        if threads == 0 || threads > 1024 || self.block[2] > 64 {
            bail!("kernel {}: block {:?} is not a valid CUDA block (1..=1024 threads, z ≤ 64)", k.name, self.block);
        }
        if self.grid.contains(&0) || self.grid[1] > 65535 || self.grid[2] > 65535 || self.grid[0] > i32::MAX as u32 {
            bail!("kernel {}: grid {:?} is not a valid CUDA grid", k.name, self.grid);
        }
        if self.shared_bytes > 227 * 1024 {
            bail!("kernel {}: {} B of dynamic shared memory exceed the 227 KiB of an sm_90 block", k.name, self.shared_bytes);
        }
        Ok(())
    }
}

/// Device memory: `len` values of `T` at a device address, freed into its device's cache on drop.
pub struct GpuVec<T: DeviceValue> {
    gpu: Arc<Gpu>,
    ptr: u64,
    len: usize,
    bytes: usize,
    _t: PhantomData<T>,
}

impl<T: DeviceValue> GpuVec<T> {
    /// The device address, as kernels and cuBLAS receive it.
    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// A new buffer with the same contents (device-to-device copy).
    pub fn try_clone(&self) -> Result<GpuVec<T>> {
        let mut v = self.gpu.uninit::<T>(self.len)?;
        self.gpu.copy(&mut v, 0, self, 0, self.len)?;
        Ok(v)
    }
}

impl<T: DeviceValue> Clone for GpuVec<T> {
    fn clone(&self) -> Self {
        self.try_clone().unwrap_or_else(|e| panic!("copying a device buffer of {} values: {e:#}", self.len))
    }
}

impl<T: DeviceValue> Drop for GpuVec<T> {
    fn drop(&mut self) {
        self.gpu.raw_free(self.ptr, self.bytes);
    }
}

impl<T: DeviceValue> fmt::Debug for GpuVec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GpuVec<{}>({} values on {})", std::any::type_name::<T>(), self.len, self.gpu.device)
    }
}

/// The simulator's memory: host allocations behind "device addresses", with a registry of live
/// blocks so that a GEMM descriptor reaching outside its buffers is an error, as it would be a
/// fault on a GPU.
#[derive(Default)]
pub struct SimMemory {
    live: Mutex<std::collections::BTreeMap<u64, usize>>,
    /// Every kernel launched so far: the test suite checks that each kernel compiled into the
    /// build has run under the simulator at least once.
    launched: Mutex<std::collections::BTreeSet<&'static str>>,
}

impl SimMemory {
    /// Names of the kernels launched on the simulator so far in this process.
    pub fn launched_kernels(&self) -> std::collections::BTreeSet<&'static str> {
        self.launched.lock().unwrap().clone()
    }
}

const SIM_ALIGN: usize = 256;

impl SimMemory {
    fn alloc(&self, bytes: usize) -> u64 {
        let layout = std::alloc::Layout::from_size_align(bytes.max(1), SIM_ALIGN).expect("allocation layout");
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { std::alloc::alloc(layout) };
        if p.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        self.live.lock().unwrap().insert(p as u64, bytes.max(1));
        p as u64
    }

    fn free(&self, ptr: u64, bytes: usize) {
        self.live.lock().unwrap().remove(&ptr);
        let layout = std::alloc::Layout::from_size_align(bytes.max(1), SIM_ALIGN).expect("allocation layout");
        // SAFETY: `ptr` came from `alloc` with this layout and is freed once (the pool owns it).
        unsafe { std::alloc::dealloc(ptr as *mut u8, layout) };
    }

    /// Host memory standing in for a pinned staging buffer (not device memory: it is not in
    /// `live`, so no kernel or GEMM operand may point into it). Kept for the process.
    fn alloc_host(&self, bytes: usize) -> u64 {
        let layout = std::alloc::Layout::from_size_align(bytes.max(1), SIM_ALIGN).expect("allocation layout");
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { std::alloc::alloc(layout) };
        if p.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        p as u64
    }

    /// `bytes` from `ptr` lie inside one live allocation.
    fn check_range(&self, ptr: u64, bytes: usize, what: &str) -> Result<()> {
        let live = self.live.lock().unwrap();
        match live.range(..=ptr).next_back() {
            Some((&start, &len)) if ptr + bytes as u64 <= start + len as u64 => Ok(()),
            _ => bail!("operand {what}: {bytes} bytes at {ptr:#x} reach outside every device allocation"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse_and_print() {
        for (s, d) in [("cpu", Device::Cpu), ("cuda", Device::Cuda(0)), ("cuda:3", Device::Cuda(3)), ("cuda-sim", Device::CudaSim)] {
            assert_eq!(s.parse::<Device>().unwrap(), d);
        }
        assert_eq!(Device::Cuda(3).to_string(), "cuda:3");
        let e = "gpu".parse::<Device>().unwrap_err().to_string();
        assert!(e.contains("cpu, cuda, cuda:N or cuda-sim"), "{e}");
    }

    #[test]
    fn sim_memory_round_trips_and_reuses_freed_blocks() {
        let g = gpu(Device::CudaSim).unwrap();
        let v = g.upload(&[1.0f32, 2.0, 3.0]).unwrap();
        assert_eq!(g.download(&v).unwrap(), vec![1.0, 2.0, 3.0]);
        let p = v.ptr();
        drop(v);
        let z = g.zeros::<f32>(3).unwrap();
        assert_eq!(z.ptr(), p, "a freed block of the same size class is reused");
        assert_eq!(g.download(&z).unwrap(), vec![0.0; 3], "zeros() clears a reused block");
        let mut w = g.upload(&[7u32, 8, 9, 10]).unwrap();
        let src = g.upload(&[1u32, 2]).unwrap();
        g.copy(&mut w, 1, &src, 0, 2).unwrap();
        assert_eq!(g.download(&w).unwrap(), vec![7, 1, 2, 10]);
        assert!(g.copy(&mut w, 3, &src, 0, 2).is_err(), "out-of-range copies are refused");
    }

    #[test]
    fn invalid_launch_configurations_are_refused_as_a_gpu_would() {
        let k = Kernel { family: "none", name: "none" };
        assert!(LaunchConfig { grid: [1, 1, 1], block: [1025, 1, 1], shared_bytes: 0 }.check(k).is_err());
        assert!(LaunchConfig { grid: [0, 1, 1], block: [32, 1, 1], shared_bytes: 0 }.check(k).is_err());
        assert!(LaunchConfig { grid: [1, 1, 1], block: [32, 1, 1], shared_bytes: 300 * 1024 }.check(k).is_err());
        assert!(LaunchConfig::elementwise(10_000_000, 256).check(k).is_ok());
    }
}
