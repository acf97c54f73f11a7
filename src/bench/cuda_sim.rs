//! `multimat bench cuda-sim`: what a launch on the cuda-sim executor costs — per-launch overhead,
//! an elementwise kernel (one thread per element) and common.cuh's block reduction — against
//! plain Rust loops doing the same arithmetic (the peer), so test suites that run GPU code on the
//! simulator can be sized. Each kernel's result is checked against the peer's.

use super::process_cpu_seconds;
use crate::engine::backend::sim::{device_address, launch};
use anyhow::Result;
use std::ffi::c_void;

/// Arguments of `multimat bench cuda-sim`.
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

/// Best wall time and mean CPU time of `f` over `reps` runs after a warm-up.
fn time_it(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<(f64, f64)> {
    f()?;
    let reps = reps.max(1);
    let (mut best, cpu0) = (f64::INFINITY, process_cpu_seconds().unwrap_or(f64::NAN));
    for _ in 0..reps {
        let t = std::time::Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok((best, (process_cpu_seconds().unwrap_or(f64::NAN) - cpu0) / reps as f64))
}

/// Runs the measurements and prints them; each kernel's result is checked against the peer's.
pub fn run(args: SimBenchArgs) -> Result<()> {
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
