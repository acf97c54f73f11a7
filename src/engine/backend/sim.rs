//! The `cuda-sim` executor: runs the project's own CUDA kernels (`kernels/*.cu`, compiled as
//! C++20 against `kernels/sim/cuda_sim.h` by build.rs) on the CPU, with the grid, block and
//! dynamic shared-memory size a GPU launch would use, so every kernel is tested where there is
//! no GPU.
//!
//! The contract with the kernels (binding for every `.cu`):
//! - each kernel is `extern "C" __global__ void NAME(args…)` and is listed after the kernels of
//!   its file as `MULTIMAT_EXPORT(NAME)`;
//! - the simulator entry point is `extern "C" int multimat_sim_NAME(const MultimatSimLaunch*,
//!   void** params)`: `params[i]` points to the value of argument i, exactly cuLaunchKernel's
//!   `kernelParams`; a device pointer argument is its 64-bit address (a `u64` holding the host
//!   address here, as a `CUdeviceptr` on a GPU);
//! - it returns 0 or an error code, with the message from `multimat_sim_last_error()` (per OS
//!   thread) naming the kernel, the block and what went wrong.
//!
//! Execution model (details in cuda_sim.h): blocks spread over up to `MULTIMAT_SIM_THREADS` OS
//! threads (default: the number of cores), the threads of a block as fibers on one OS thread
//! with real block and warp barriers, deterministic scheduling; a barrier that can never
//! release is reported as [`SimError::Deadlock`] instead of hanging.

use anyhow::Result;
use std::ffi::{c_char, c_void, CStr};

/// Launch configuration passed to a simulator entry point (C: `MultimatSimLaunch`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimLaunch {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
}

/// A simulator entry point, `multimat_sim_NAME`.
pub type SimEntry = unsafe extern "C" fn(*const SimLaunch, *mut *mut c_void) -> i32;

/// Threads per block that CUDA allows (every architecture since sm_20).
pub const MAX_THREADS_PER_BLOCK: u32 = 1024;
/// Largest dynamic shared memory per block (sm_90's 227 KiB opt-in maximum; sm_80 has 163 KiB).
pub const MAX_DYNAMIC_SHARED_BYTES: u32 = 227 * 1024;

extern "C" {
    fn multimat_sim_last_error() -> *const c_char;
}

/// Why a simulated launch failed. Each message names the kernel (and the block, where one is
/// at fault).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SimError {
    #[error("cuda-sim: no kernel named `{0}` is compiled in (kernels/*.cu export it with MULTIMAT_EXPORT)")]
    UnknownKernel(String),
    #[error("cuda-sim: kernel {kernel}: {given} parameter(s) given, the kernel takes {takes}")]
    WrongArity { kernel: String, given: usize, takes: usize },
    #[error("cuda-sim: {0}")]
    InvalidConfig(String),
    #[error("cuda-sim: {0}")]
    Deadlock(String),
    #[error("cuda-sim: {0}")]
    InvalidWarpOp(String),
    #[error("cuda-sim: {0}")]
    OutOfResources(String),
    #[error("cuda-sim: {0}")]
    Internal(String),
}

/// Checks a launch configuration the way the CUDA driver would, naming the kernel.
pub fn check_config(kernel: &str, grid: [u32; 3], block: [u32; 3], shared_bytes: u32) -> Result<(), SimError> {
    let threads = block.iter().map(|&b| b as u64).product::<u64>();
    let why = if grid.contains(&0) {
        Some("a grid dimension is 0".to_string())
    } else if block.contains(&0) {
        Some("a block dimension is 0".to_string())
    } else if threads > MAX_THREADS_PER_BLOCK as u64 {
        Some(format!("{threads} threads per block (at most {MAX_THREADS_PER_BLOCK})"))
    } else if block[2] > 64 {
        Some(format!("block z {} (at most 64)", block[2]))
    } else if grid[0] > i32::MAX as u32 || grid[1] > 65535 || grid[2] > 65535 {
        Some("grid exceeds (2^31-1, 65535, 65535)".to_string())
    } else if shared_bytes > MAX_DYNAMIC_SHARED_BYTES {
        Some(format!("{shared_bytes} bytes of dynamic shared memory (at most 227 KiB)"))
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(SimError::InvalidConfig(format!(
            "kernel {kernel}: invalid launch: grid ({},{},{}), block ({},{},{}): {why}",
            grid[0], grid[1], grid[2], block[0], block[1], block[2]
        ))),
    }
}

/// Runs kernel `kernel` on the simulator and waits for it.
///
/// `params[i]` points to the value of the kernel's argument i (cuLaunchKernel's convention); a
/// device pointer is passed as a `u64` address.
///
/// # Safety
/// Each `params[i]` must point to a live value of exactly the type of the kernel's argument i,
/// and every address among them must be valid for every access the kernel makes with this
/// configuration — as on a GPU, the simulator cannot check either.
pub unsafe fn launch(kernel: &str, grid: [u32; 3], block: [u32; 3], shared_bytes: u32, params: &mut [*mut c_void]) -> Result<()> {
    let entry = super::kernels::find(kernel).ok_or_else(|| SimError::UnknownKernel(kernel.to_string()))?;
    let takes = entry.arity();
    if params.len() != takes {
        return Err(SimError::WrongArity { kernel: kernel.to_string(), given: params.len(), takes }.into());
    }
    if params.iter().any(|p| p.is_null()) {
        return Err(SimError::InvalidConfig(format!("kernel {kernel}: a parameter pointer is null")).into());
    }
    check_config(kernel, grid, block, shared_bytes)?;
    let cfg = SimLaunch { grid, block, shared_bytes };
    let code = (entry.sim)(&cfg, params.as_mut_ptr());
    if code == 0 {
        return Ok(());
    }
    let message = CStr::from_ptr(multimat_sim_last_error()).to_string_lossy().into_owned();
    Err(match code {
        1 => SimError::InvalidConfig(message),
        2 => SimError::Deadlock(message),
        3 => SimError::InvalidWarpOp(message),
        4 => SimError::OutOfResources(message),
        _ => SimError::Internal(format!("{message} (code {code})")),
    }
    .into())
}

/// A device pointer as the kernels receive it: the buffer's address as a 64-bit value.
pub fn device_address<T>(p: *const T) -> u64 {
    p as usize as u64
}

/// `multimat bench cuda-sim`: what a simulated launch costs, against plain Rust loops doing the
/// same arithmetic (the peer), so a test suite that runs GPU code on the simulator can be sized.
#[derive(clap::Args, Debug, Clone)]
pub struct SimBenchArgs {
    /// Elements of the elementwise kernel (y = a·x + y, one thread per element, 256 per block).
    #[arg(long, default_value_t = 1 << 20)]
    pub elements: usize,
    /// Blocks of the reduction kernel (256 threads, 1024 values each; ~16 barriers or shuffles per thread).
    #[arg(long, default_value_t = 1000)]
    pub blocks: usize,
    /// Launches of a 1-block, 32-thread kernel for the per-launch overhead.
    #[arg(long, default_value_t = 2000)]
    pub launches: usize,
    /// Timed repetitions of the two larger kernels (best wall time reported, after one warm-up).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
}

/// CPU seconds (user + system) of this process, from getrusage.
fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 * 1e-6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// Best wall time and mean CPU time of `f` over `reps` runs after a warm-up.
fn time_it(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<(f64, f64)> {
    f()?;
    let reps = reps.max(1);
    let (mut best, cpu0) = (f64::INFINITY, process_cpu_seconds());
    for _ in 0..reps {
        let t = std::time::Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok((best, (process_cpu_seconds() - cpu0) / reps as f64))
}

/// Runs the measurements and prints them; each kernel's result is checked against the peer's.
pub fn bench(args: SimBenchArgs) -> Result<()> {
    anyhow::ensure!(args.elements > 0 && args.blocks > 0 && args.launches > 0, "sizes must be positive");
    let threads = std::env::var("MULTIMAT_SIM_THREADS").unwrap_or_else(|_| "all cores".into());
    println!("cuda-sim benchmark (blocks on {threads} OS threads; MULTIMAT_SIM_THREADS sets it)");
    fn p<T>(v: &mut T) -> *mut c_void {
        v as *mut T as *mut c_void
    }

    // 1. Launch overhead.
    let (x32, mut y32) = (vec![1.0f32; 32], vec![0.0f32; 32]);
    let (mut yp, mut xp, mut a, mut n) = (device_address(y32.as_mut_ptr()), device_address(x32.as_ptr()), 1.0f32, 32i64);
    let t = std::time::Instant::now();
    for _ in 0..args.launches {
        let mut params = [p(&mut yp), p(&mut xp), p(&mut a), p(&mut n)];
        // SAFETY: the parameters are the kernel's (f32*, const f32*, f32, i64) over 32-element buffers.
        unsafe { launch("selftest_axpy", [1, 1, 1], [32, 1, 1], 0, &mut params)? };
    }
    let per_launch = t.elapsed().as_secs_f64() / args.launches as f64;
    anyhow::ensure!(y32.iter().all(|&v| v == args.launches as f32), "axpy overhead kernel computed a wrong result");
    println!("launch overhead (1 block × 32 threads): {:.2} µs per launch", per_launch * 1e6);

    // 2. Elementwise, one thread per element.
    let len = args.elements;
    let x: Vec<f32> = (0..len).map(|i| (i % 17) as f32).collect();
    let mut y = vec![0.0f32; len];
    let (mut yp, mut xp, mut a, mut n) = (device_address(y.as_mut_ptr()), device_address(x.as_ptr()), 0.5f32, len as i64);
    let grid = len.div_ceil(256) as u32;
    let (wall, cpu) = time_it(args.reps, || {
        let mut params = [p(&mut yp), p(&mut xp), p(&mut a), p(&mut n)];
        // SAFETY: as above, over `len` elements, one thread each.
        unsafe { launch("selftest_axpy", [grid, 1, 1], [256, 1, 1], 0, &mut params) }
    })?;
    let mut peer_y = vec![0.0f32; len];
    let (peer, _) = time_it(args.reps, || {
        for (y, x) in peer_y.iter_mut().zip(&x) {
            *y = 0.5 * x + *y;
        }
        std::hint::black_box(&mut peer_y);
        Ok(())
    })?;
    anyhow::ensure!(y == peer_y, "axpy kernel and peer loop disagree");
    println!(
        "elementwise y = a·x + y, {len} elements ({grid} blocks × 256): {:.2} ms wall, {:.2} ms CPU, {:.1} ns per thread; \
         plain Rust loop (1 core) {:.3} ms: the simulator is {:.0}× slower",
        wall * 1e3,
        cpu * 1e3,
        wall * 1e9 / len as f64,
        peer * 1e3,
        wall / peer
    );

    // 3. Block reduction (common.cuh's mm_block_sum + mm_block_max), 256 threads per block.
    let (blocks, row) = (args.blocks, 1024usize);
    let inp: Vec<f32> = (0..blocks * row).map(|i| ((i * 7) % 23) as f32 - 11.0).collect();
    let (mut sums, mut maxes) = (vec![0.0f32; blocks], vec![0.0f32; blocks]);
    let (mut sp, mut mp, mut ip, mut rl) = (device_address(sums.as_mut_ptr()), device_address(maxes.as_mut_ptr()), device_address(inp.as_ptr()), row as i32);
    let (wall, cpu) = time_it(args.reps, || {
        let mut params = [p(&mut sp), p(&mut mp), p(&mut ip), p(&mut rl)];
        // SAFETY: (f32*, f32*, const f32*, i32) with `blocks` outputs and blocks·row inputs.
        unsafe { launch("selftest_block_reduce", [blocks as u32, 1, 1], [256, 1, 1], 0, &mut params) }
    })?;
    let mut peer_sums = vec![0.0f32; blocks];
    let (peer, _) = time_it(args.reps, || {
        for (s, r) in peer_sums.iter_mut().zip(inp.chunks(row)) {
            *s = r.iter().sum();
        }
        std::hint::black_box(&mut peer_sums);
        Ok(())
    })?;
    anyhow::ensure!(sums == peer_sums, "reduction kernel and peer loop disagree (small integers: both exact)");
    println!(
        "block reduction, {blocks} blocks × 256 threads × {row} values: {:.2} ms wall, {:.2} ms CPU, {:.2} µs per block; \
         plain Rust sums {:.3} ms: {:.0}× slower",
        wall * 1e3,
        cpu * 1e3,
        wall * 1e6 / blocks as f64,
        peer * 1e3,
        wall / peer
    );
    Ok(())
}
