//! The cuda-sim executor: the CUDA execution model of `kernels/sim/cuda_sim.h` checked kernel by
//! kernel (`kernels/selftest.cu`: barriers over static and dynamic shared memory, every shuffle
//! kind with widths and partial warps, votes, atomics, 3-D indices, block reductions, deadlocks
//! reported as errors), launch-configuration errors, concurrent launches, and the activation
//! kernels of `kernels/activation.cu` against their CPU references.

use multimat::engine::backend::sim::{self, device_address, SimError};
use multimat::engine::ops::activation as act;
use multimat::engine::ops::gelu::{gelu_backward, gelu_forward, GeluKind};
use std::ffi::c_void;

/// One kernel argument, held by value so that `params[i]` can point at it.
#[derive(Clone, Copy, Debug)]
enum Arg {
    Ptr(u64),
    I32(i32),
    I64(i64),
    F32(f32),
}

fn ptr<T>(v: &[T]) -> Arg {
    Arg::Ptr(device_address(v.as_ptr()))
}
fn ptr_mut<T>(v: &mut [T]) -> Arg {
    Arg::Ptr(device_address(v.as_mut_ptr()))
}

/// Launches `kernel` with the cuLaunchKernel parameter convention.
fn launch(kernel: &str, grid: [u32; 3], block: [u32; 3], shared: u32, args: &[Arg]) -> anyhow::Result<()> {
    let mut values = args.to_vec();
    let mut params: Vec<*mut c_void> = values
        .iter_mut()
        .map(|a| match a {
            Arg::Ptr(v) => v as *mut u64 as *mut c_void,
            Arg::I32(v) => v as *mut i32 as *mut c_void,
            Arg::I64(v) => v as *mut i64 as *mut c_void,
            Arg::F32(v) => v as *mut f32 as *mut c_void,
        })
        .collect();
    // SAFETY: every test passes buffers sized for the launch and arguments of the kernel's types.
    unsafe { sim::launch(kernel, grid, block, shared, &mut params) }
}

fn sim_error(r: anyhow::Result<()>) -> SimError {
    let e = r.expect_err("the launch should have failed");
    e.downcast::<SimError>().expect("a SimError")
}

#[test]
fn static_shared_memory_is_one_copy_per_block_and_the_barrier_holds() {
    // Many blocks, so blocks run on several OS threads at once; the last block is partial.
    let (n, bs) = (64 * 256 - 100, 256usize);
    let inp: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let mut out = vec![f32::NAN; n];
    let grid = n.div_ceil(bs) as u32;
    launch("selftest_block_reverse", [grid, 1, 1], [bs as u32, 1, 1], 0, &[ptr_mut(&mut out), ptr(&inp), Arg::I32(n as i32)]).unwrap();
    for i in 0..n {
        let (base, t) = (i / bs * bs, i % bs);
        let from = base + bs - 1 - t;
        let want = if from < n { from as f32 } else { -1.0 };
        assert_eq!(out[i], want, "element {i}");
    }
}

#[test]
fn dynamic_shared_memory_tree_sum_over_barriers_in_a_loop() {
    let (n, bs) = (5000usize, 128usize);
    let inp: Vec<f32> = (0..n).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
    let grid = n.div_ceil(bs);
    let mut sums = vec![f32::NAN; grid];
    launch("selftest_dynamic_tree_sum", [grid as u32, 1, 1], [bs as u32, 1, 1], (bs * 4) as u32, &[ptr_mut(&mut sums), ptr(&inp), Arg::I32(n as i32)])
        .unwrap();
    for (b, &s) in sums.iter().enumerate() {
        let want: f32 = inp[b * bs..((b + 1) * bs).min(n)].iter().sum(); // small integers: exact
        assert_eq!(s, want, "block {b}");
    }
}

/// What lane `lane` of a warp with `lanes` existing lanes reads for each shuffle kind, by the
/// CUDA programming guide's rules; -1 (the simulator's poison) for a lane that does not exist.
fn expected_shuffles(rank: usize, block: usize, arg: i32, width: usize) -> [i32; 5] {
    let (warp, lane) = (rank / 32, rank % 32);
    let lanes = (block - warp * 32).min(32);
    let seg = lane & !(width - 1);
    let read = |src: usize| if src < lanes { 1000 + (warp * 32 + src) as i32 } else { -1 };
    let idx = seg + (arg as usize & (width - 1));
    let up = if lane as i64 - arg as i64 >= seg as i64 { lane - arg as usize } else { lane };
    let down = if lane + (arg as usize) < seg + width { lane + arg as usize } else { lane };
    let xor = if (lane ^ (arg as usize & 31)) < seg + width { lane ^ (arg as usize & 31) } else { lane };
    let wide = if down < lanes { (warp * 32 + down) as i32 } else { -1 };
    [read(idx), read(up), read(down), read(xor), wide]
}

#[test]
fn every_shuffle_kind_with_widths_and_partial_warps() {
    for block in [32usize, 40, 64, 70] {
        for width in [32usize, 16, 8, 1] {
            for arg in [0i32, 1, 3, 5, 17] {
                let mut out = vec![i32::MIN; block * 5];
                launch("selftest_shuffles", [1, 1, 1], [block as u32, 1, 1], 0, &[ptr_mut(&mut out), Arg::I32(arg), Arg::I32(width as i32)]).unwrap();
                for rank in 0..block {
                    let want = expected_shuffles(rank, block, arg, width);
                    assert_eq!(&out[rank * 5..rank * 5 + 5], &want, "block {block} width {width} arg {arg} rank {rank} (idx, up, down, xor, 64-bit down)");
                }
            }
        }
    }
}

#[test]
fn reading_an_absent_lane_gives_poison_and_half_warps_shuffle_independently() {
    let mut out = vec![0i32; 40];
    launch("selftest_shuffle_absent_lane", [1, 1, 1], [40, 1, 1], 0, &[ptr_mut(&mut out)]).unwrap();
    for (r, &v) in out.iter().enumerate() {
        // Lane 31 reads past the warp (its own value); lane 7 of the 8-lane warp reads lane 8, which does not exist.
        let want = if r == 31 { 31 } else if r == 39 { -1 } else { r as i32 + 1 };
        assert_eq!(v, want, "rank {r}");
    }
    let mut out = vec![-7i32; 64];
    launch("selftest_half_warps", [1, 1, 1], [64, 1, 1], 0, &[ptr_mut(&mut out)]).unwrap();
    for (r, &v) in out.iter().enumerate() {
        let want = if r % 32 < 16 { r ^ 1 } else { r ^ 2 };
        assert_eq!(v, want as i32, "rank {r}");
    }
}

#[test]
fn ballot_any_all_over_existing_lanes() {
    let block = 40usize;
    let mut out = vec![0u32; block * 3];
    launch("selftest_votes", [1, 1, 1], [block as u32, 1, 1], 0, &[ptr_mut(&mut out)]).unwrap();
    for r in 0..block {
        let warp = r / 32;
        let lanes = (block - warp * 32).min(32);
        let ballot: u32 = (0..lanes).filter(|l| (warp * 32 + l) % 3 == 0).map(|l| 1u32 << l).sum();
        let all_pred = (0..lanes).all(|l| (warp * 32 + l) % 3 == 0) as u32;
        assert_eq!(out[r * 3], ballot, "ballot, rank {r}");
        assert_eq!(out[r * 3 + 1], (ballot != 0) as u32, "any, rank {r}");
        assert_eq!(out[r * 3 + 2], all_pred | 2, "all, rank {r}");
    }
}

#[test]
fn atomics_from_every_thread_of_a_parallel_grid() {
    let (grid, block) = (24u32, 96u32);
    let n = (grid * block) as i64;
    let mut ints = vec![0i32; 5];
    ints[4] = -1;
    let mut uints = vec![0u32; 2];
    let mut floats = vec![0f32; 1];
    launch("selftest_atomics", [grid, 1, 1], [block, 1, 1], 0, &[ptr_mut(&mut ints), ptr_mut(&mut uints), ptr_mut(&mut floats)]).unwrap();
    assert_eq!(ints[0] as i64, n, "atomicAdd count");
    assert_eq!(ints[1] as i64, n - 1, "atomicMax");
    assert_eq!(ints[2] as i64, -(n - 1), "atomicMin");
    assert_eq!(ints[3] as i64, 2 * n, "atomicCAS loop");
    assert!((0..n).contains(&(ints[4] as i64)), "atomicExch left {}", ints[4]);
    assert_eq!(uints[0] as i64, n * (n - 1) / 2, "unsigned atomicAdd");
    assert_eq!(uints[1] as i64, n - 1, "unsigned atomicMax");
    assert_eq!(floats[0], n as f32 * 0.5, "float atomicAdd of 0.5 (exact)");
}

#[test]
fn three_dimensional_grids_and_blocks() {
    let (g, b) = ([3u32, 2, 2], [4u32, 2, 3]);
    let (nx, ny, nz) = ((g[0] * b[0]) as usize, (g[1] * b[1]) as usize, (g[2] * b[2]) as usize);
    let mut out = vec![u32::MAX; nx * ny * nz];
    launch("selftest_indices", g, b, 0, &[ptr_mut(&mut out)]).unwrap();
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let (bx, by, bz) = (x as u32 / b[0], y as u32 / b[1], z as u32 / b[2]);
                let (tx, ty, tz) = (x as u32 % b[0], y as u32 % b[1], z as u32 % b[2]);
                let want = bx | by << 4 | bz << 8 | tx << 12 | ty << 16 | tz << 20 | (g[0] * g[1] * g[2]) << 24;
                assert_eq!(out[x + nx * (y + ny * z)], want, "thread at ({x},{y},{z})");
            }
        }
    }
}

#[test]
fn block_reductions_of_common_cuh_for_any_block_shape() {
    let (blocks, len) = (5usize, 777usize);
    let inp: Vec<f32> = (0..blocks * len).map(|i| ((i * 2654435761usize) % 21) as f32 - 10.0).collect();
    for shape in [[1u32, 1, 1], [31, 1, 1], [40, 1, 1], [256, 1, 1], [1000, 1, 1], [8, 4, 3]] {
        let (mut sums, mut maxes) = (vec![f32::NAN; blocks], vec![f32::NAN; blocks]);
        launch("selftest_block_reduce", [blocks as u32, 1, 1], shape, 0, &[ptr_mut(&mut sums), ptr_mut(&mut maxes), ptr(&inp), Arg::I32(len as i32)])
            .unwrap();
        for b in 0..blocks {
            let row = &inp[b * len..(b + 1) * len];
            assert_eq!(sums[b], row.iter().sum::<f32>(), "block shape {shape:?}, block {b}: sum of small integers is exact");
            assert_eq!(maxes[b], row.iter().cloned().fold(f32::MIN, f32::max), "block shape {shape:?}, block {b}: max");
        }
    }
}

#[test]
fn deadlocks_are_errors_that_name_kernel_block_and_barrier() {
    let mut out = vec![0f32; 1024];
    let e = sim_error(launch("selftest_deadlock_exit", [4, 1, 1], [64, 1, 1], 0, &[ptr_mut(&mut out)]));
    let SimError::Deadlock(msg) = &e else { panic!("not a deadlock: {e}") };
    assert!(msg.contains("selftest_deadlock_exit") && msg.contains("block (0,0,0)") && msg.contains("exited") && msg.contains("selftest.cu:"), "{msg}");

    let e = sim_error(launch("selftest_deadlock_divergent", [2, 1, 1], [64, 1, 1], 0, &[ptr_mut(&mut out)]));
    let SimError::Deadlock(msg) = &e else { panic!("not a deadlock: {e}") };
    assert!(msg.contains("divergent __syncthreads") && msg.contains("block (0,0,0)"), "{msg}");

    // Only block 1 deadlocks; blocks run in parallel, yet the report names block 1.
    let e = sim_error(launch("selftest_deadlock_warp", [8, 1, 1], [64, 1, 1], 0, &[ptr_mut(&mut out)]));
    let SimError::Deadlock(msg) = &e else { panic!("not a deadlock: {e}") };
    assert!(msg.contains("block (1,0,0)") && msg.contains("__syncwarp") && msg.contains("__syncthreads"), "{msg}");
    assert!(e.to_string().starts_with("cuda-sim: kernel selftest_deadlock_warp"), "{e}");

    // The executor is usable after a deadlock.
    let inp: Vec<f32> = (0..256).map(|i| i as f32).collect();
    let mut rev = vec![0f32; 256];
    launch("selftest_block_reverse", [1, 1, 1], [256, 1, 1], 0, &[ptr_mut(&mut rev), ptr(&inp), Arg::I32(256)]).unwrap();
    assert_eq!(rev[0], 255.0);
}

#[test]
fn bad_launches_are_clear_errors() {
    let mut out = vec![0f32; 8];
    let args = [ptr_mut(&mut out)];
    let cases: [([u32; 3], [u32; 3], u32, &str); 5] = [
        ([1, 1, 1], [1025, 1, 1], 0, "1025 threads per block"),
        ([1, 1, 1], [32, 32, 2], 0, "2048 threads per block"),
        ([1, 1, 1], [32, 1, 1], 227 * 1024 + 1, "dynamic shared memory"),
        ([0, 1, 1], [32, 1, 1], 0, "grid dimension is 0"),
        ([1, 70000, 1], [32, 1, 1], 0, "grid exceeds"),
    ];
    for (grid, block, shared, what) in cases {
        let e = sim_error(launch("selftest_deadlock_exit", grid, block, shared, &args));
        assert!(matches!(e, SimError::InvalidConfig(_)) && e.to_string().contains(what) && e.to_string().contains("selftest_deadlock_exit"), "{e}");
    }
    let e = sim_error(launch("no_such_kernel", [1, 1, 1], [1, 1, 1], 0, &args));
    assert_eq!(e, SimError::UnknownKernel("no_such_kernel".into()));
    let e = sim_error(launch("selftest_axpy", [1, 1, 1], [1, 1, 1], 0, &args));
    assert!(matches!(e, SimError::WrongArity { given: 1, takes: 4, .. }), "{e}");
}

#[test]
fn concurrent_launches_from_several_threads() {
    std::thread::scope(|s| {
        for t in 0..4 {
            s.spawn(move || {
                let n = 40 * 128;
                let inp: Vec<f32> = (0..n).map(|i| (i + t * 1000) as f32).collect();
                for _ in 0..10 {
                    let mut out = vec![0f32; n];
                    launch("selftest_block_reverse", [40, 1, 1], [128, 1, 1], 0, &[ptr_mut(&mut out), ptr(&inp), Arg::I32(n as i32)]).unwrap();
                    for i in (0..n).step_by(97) {
                        assert_eq!(out[i], inp[i / 128 * 128 + 127 - i % 128]);
                    }
                }
            });
        }
    });
}

// ---------------------------------------------------------------------------------------------
// kernels/activation.cu against src/engine/ops/activation.rs and gelu.rs.

/// Inputs covering both tails, zero, tiny values, softplus's threshold and random values.
fn activation_inputs() -> Vec<f32> {
    let mut x: Vec<f32> = (0..=6000).map(|i| -30.0 + i as f32 * 0.01).collect();
    let mut state = 0x2545f4914f6cdd1du64;
    for _ in 0..4000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        x.push(((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 16.0);
    }
    x.extend([0.0, -0.0, 1e-30, -1e-30, 1e-6, -1e-6, 19.99, 20.0, 20.01, 25.0, 60.0, -60.0, 87.0, -87.0, -100.0, 100.0]);
    x
}

/// Largest error in units of the tolerance
/// |sim − ref(x)| ≤ spread + rtol·ε·|ref(x)| + atol·ε·|dout|·(1 + |x|) + MIN_POSITIVE,
/// where spread = max |ref(x') − ref(x)| over x' = x·(1 ± 4ε): the kernel may equal the reference
/// at an input a few ulp away (ill-conditioned tails, e.g. GELU's exp(−x²/2), magnify any f32
/// rounding of the argument by ~x², on a GPU as here); `floor`·(1 + |dout|) is added for a
/// reference whose own absolute accuracy is limited.
fn worst_ratio(sim: &[f32], reference: [&[f32]; 3], x: &[f32], dout: Option<&[f32]>, rtol: f32, atol: f32, floor: f32) -> (f32, usize) {
    let eps = f32::EPSILON;
    let [at_x, below, above] = reference;
    let mut worst = (0.0f32, 0usize);
    for i in 0..sim.len() {
        let g = dout.map_or(0.0, |d| d[i].abs()) * (1.0 + x[i].abs());
        let spread = (below[i] - at_x[i]).abs().max((above[i] - at_x[i]).abs());
        let tol = spread + rtol * eps * at_x[i].abs() + atol * eps * g + floor * (1.0 + dout.map_or(0.0, |d| d[i].abs())) + f32::MIN_POSITIVE;
        let r = (sim[i] - at_x[i]).abs() / tol;
        assert!(!r.is_nan(), "element {i}: sim {} ref {}", sim[i], at_x[i]);
        if r > worst.0 {
            worst = (r, i);
        }
    }
    worst
}

type Fwd = Box<dyn Fn(&mut [f32], &[f32])>;
/// Absolute floor of the GELU-tanh reference: it forms ½x(1 + tanh u) in f64, and 1 + tanh u
/// cancels to 0 once σ(2u) < f64 ε (x < −7); up to x ≈ −10, where the f32 result underflows, its
/// error stays below ~6e-15·|dout| — 1e-13 is that with margin, and 10⁶ times below f32 ε.
const GELU_TANH_REFERENCE_FLOOR: f32 = 1e-13;
type Bwd = Box<dyn Fn(&mut [f32], &[f32], &[f32])>;

#[test]
fn activation_kernels_match_the_cpu_references() {
    let report = check_activations(&|kernel, grid, block, args, bufs| {
        let mut ptrs: Vec<Arg> = bufs.iter_mut().map(|b| ptr_mut(b.as_mut_slice())).collect();
        ptrs.extend(args);
        launch(kernel, grid, block, 0, &ptrs).unwrap();
    });
    println!("cuda-sim vs CPU reference:\n{}", report.join("\n"));
}

/// Runs `kernel` on some device: `bufs` are the pointer arguments (in order, uploaded and
/// downloaded by the launcher), `args` the scalars after them.
type Launcher<'a> = dyn Fn(&str, [u32; 3], [u32; 3], &[Arg], &mut [&mut Vec<f32>]) + 'a;

/// Every activation kernel, forward and backward, against its CPU reference; returns the worst
/// error of each as a fraction of its tolerance.
fn check_activations(run: &Launcher) -> Vec<String> {
    // Tolerance (see worst_ratio), in units of f32 ε: the references compute e^x with a polynomial (fast_exp, a
    // few ulp) and GELU in f64; the kernels use expf/erfcf/log1pf (≤ 2 ulp each), so forward
    // values agree to a few ε relative. Backward: the references form σ' as s·(1 − s), which
    // loses up to ε/2 absolute where s → 1, and SiLU's x·(1 − s) multiplies that by |x|, so the
    // bound also has an ε·|dout|·(1 + |x|) term; the kernels use σ(x)σ(−x), accurate in both
    // tails, so the difference is the reference's rounding, not the kernel's.
    let x = activation_inputs();
    let n = x.len();
    let dout: Vec<f32> = (0..n).map(|i| ((i * 37) % 101) as f32 / 25.0 - 2.0).collect();
    let cases: Vec<(&str, Vec<Arg>, Fwd, Bwd)> = vec![
        ("relu", vec![], Box::new(|o, x| act::relu_forward(o, x)), Box::new(|d, g, x| act::relu_backward(d, g, x))),
        ("sigmoid", vec![], Box::new(|o, x| act::sigmoid_forward(o, x)), Box::new(|d, g, x| act::sigmoid_backward(d, g, x))),
        ("silu", vec![], Box::new(|o, x| act::silu_forward(o, x)), Box::new(|d, g, x| act::silu_backward(d, g, x))),
        (
            "softplus",
            vec![Arg::F32(1.0), Arg::F32(20.0)],
            Box::new(|o, x| act::softplus_forward(o, x, 1.0, 20.0)),
            Box::new(|d, g, x| act::softplus_backward(d, g, x, 1.0, 20.0)),
        ),
        ("gelu_erf", vec![], Box::new(|o, x| gelu_forward(o, x, GeluKind::Erf)), Box::new(|d, g, x| gelu_backward(d, g, x, GeluKind::Erf))),
        ("gelu_tanh", vec![], Box::new(|o, x| gelu_forward(o, x, GeluKind::Tanh)), Box::new(|d, g, x| gelu_backward(d, g, x, GeluKind::Tanh))),
    ];
    // A grid smaller than n/256 so the grid-stride loop runs several rounds.
    let (grid, block) = ([16u32, 1, 1], [256u32, 1, 1]);
    let mut report = Vec::new();
    let x_below: Vec<f32> = x.iter().map(|v| v * (1.0 - 4.0 * f32::EPSILON)).collect();
    let x_above: Vec<f32> = x.iter().map(|v| v * (1.0 + 4.0 * f32::EPSILON)).collect();
    let three = |f: &dyn Fn(&mut [f32], &[f32])| -> [Vec<f32>; 3] {
        [&x, &x_below, &x_above].map(|input| {
            let mut out = vec![0f32; n];
            f(&mut out, input);
            out
        })
    };
    for (name, extra, fwd, bwd) in &cases {
        let floor = if *name == "gelu_tanh" { GELU_TANH_REFERENCE_FLOOR } else { 0.0 };
        let want = three(&|o: &mut [f32], i: &[f32]| fwd(o, i));
        let mut got = vec![f32::NAN; n];
        let mut args = vec![Arg::I64(n as i64)];
        args.extend(extra);
        run(&format!("{name}_forward"), grid, block, &args, &mut [&mut got, &mut x.clone()]);
        let (r, i) = worst_ratio(&got, [&want[0], &want[1], &want[2]], &x, None, 8.0, 0.0, floor);
        report.push(format!("{name}_forward: worst {r:.3} of tolerance at x = {}", x[i]));
        assert!(r <= 1.0, "{name}_forward at x = {}: sim {} ref {}", x[i], got[i], want[0][i]);

        let want = three(&|o: &mut [f32], i: &[f32]| bwd(o, &dout, i));
        let mut got = vec![f32::NAN; n];
        let mut args = vec![Arg::I64(n as i64)];
        args.extend(extra);
        run(&format!("{name}_backward"), grid, block, &args, &mut [&mut got, &mut dout.clone(), &mut x.clone()]);
        let (r, i) = worst_ratio(&got, [&want[0], &want[1], &want[2]], &x, Some(&dout), 8.0, 1.0, floor);
        report.push(format!("{name}_backward: worst {r:.3} of tolerance at x = {}", x[i]));
        assert!(r <= 1.0, "{name}_backward at x = {} (dout {}): sim {} ref {}", x[i], dout[i], got[i], want[0][i]);
    }
    report
}

// ---------------------------------------------------------------------------------------------
// The same kernels on a real GPU, where there is one: the simulator's results must be the GPU's.

/// The CUDA device, or None when this machine has no driver/GPU. With MULTIMAT_REQUIRE_GPU=1
/// (scripts for the GPU machines) a missing GPU is a failure.
fn gpu() -> Option<std::sync::Arc<cudarc::driver::CudaContext>> {
    let required = std::env::var("MULTIMAT_REQUIRE_GPU").is_ok_and(|v| v == "1");
    // SAFETY: only tries to open the driver library.
    let ctx = if unsafe { cudarc::driver::sys::is_culib_present() } { cudarc::driver::CudaContext::new(0).ok() } else { None };
    if ctx.is_none() {
        assert!(!required, "MULTIMAT_REQUIRE_GPU=1 but no CUDA driver or GPU is usable");
        println!("no CUDA driver or GPU here: the GPU comparison did not run (it runs on the GPU machines)");
    }
    ctx
}

/// Launches on the GPU with the same cuLaunchKernel parameter convention as the simulator:
/// buffers are uploaded, the kernel (NVRTC-compiled for this GPU) runs, buffers come back.
fn gpu_launcher(ctx: &std::sync::Arc<cudarc::driver::CudaContext>) -> impl Fn(&str, [u32; 3], [u32; 3], u32, &[Arg], &mut [&mut Vec<u32>]) + '_ {
    use cudarc::driver::result as cu;
    use multimat::engine::backend::{kernels, nvrtc};
    let (major, minor) = ctx.compute_capability().unwrap();
    let arch = format!("sm_{major}{minor}");
    let nvrtc = nvrtc::load().unwrap_or_else(|e| panic!("{e:#}"));
    println!("GPU {} ({arch}), {}", ctx.name().unwrap(), nvrtc.describe());
    let modules = std::sync::Mutex::new(std::collections::HashMap::new());
    move |kernel, grid, block, shared, scalars, bufs| {
        let stem = kernels::find(kernel).unwrap_or_else(|| panic!("no kernel {kernel}")).source;
        let module = modules
            .lock()
            .unwrap()
            .entry(stem)
            .or_insert_with(|| {
                let cubin = nvrtc.compile(stem, &arch).unwrap_or_else(|e| panic!("{e:#}"));
                ctx.load_module(cudarc::nvrtc::Ptx::from_binary(cubin.image)).unwrap()
            })
            .clone();
        let function = module.load_function(kernel).unwrap();
        ctx.bind_to_thread().unwrap();
        // SAFETY: device buffers sized as the host ones; parameters of the kernel's types.
        unsafe {
            let mut dev: Vec<u64> = bufs.iter().map(|b| cu::malloc_sync(b.len().max(1) * 4).unwrap()).collect();
            for (d, b) in dev.iter().zip(bufs.iter()) {
                cu::memcpy_htod_sync(*d, &b[..]).unwrap();
            }
            let mut values: Vec<Arg> = dev.iter().map(|&d| Arg::Ptr(d)).chain(scalars.iter().copied()).collect();
            let mut params: Vec<*mut c_void> = values
                .iter_mut()
                .map(|a| match a {
                    Arg::Ptr(v) => v as *mut u64 as *mut c_void,
                    Arg::I32(v) => v as *mut i32 as *mut c_void,
                    Arg::I64(v) => v as *mut i64 as *mut c_void,
                    Arg::F32(v) => v as *mut f32 as *mut c_void,
                })
                .collect();
            let stream = ctx.default_stream();
            cu::launch_kernel(function.cu_function(), (grid[0], grid[1], grid[2]), (block[0], block[1], block[2]), shared, stream.cu_stream(), &mut params)
                .unwrap_or_else(|e| panic!("{kernel}: {e:?}"));
            stream.synchronize().unwrap_or_else(|e| panic!("{kernel}: {e:?}"));
            for (d, b) in dev.iter_mut().zip(bufs.iter_mut()) {
                cu::memcpy_dtoh_sync(&mut b[..], *d).unwrap();
                cu::free_sync(*d).unwrap();
            }
        }
    }
}

/// The same launch on the simulator, with buffers of 32-bit words.
fn sim_launch_words(kernel: &str, grid: [u32; 3], block: [u32; 3], shared: u32, scalars: &[Arg], bufs: &mut [&mut Vec<u32>]) {
    let mut args: Vec<Arg> = bufs.iter_mut().map(|b| ptr_mut(b.as_mut_slice())).collect();
    args.extend(scalars);
    launch(kernel, grid, block, shared, &args).unwrap();
}

#[test]
fn on_a_real_gpu_the_kernels_give_the_simulators_results() {
    let Some(ctx) = gpu() else { return };
    let on_gpu = gpu_launcher(&ctx);
    let f = |v: f32| v.to_bits();
    // (kernel, grid, block, shared bytes, scalars, buffers, words where the GPU may differ:
    // reads of absent lanes, which CUDA leaves undefined and the simulator poisons; atomicExch's winner)
    type Case = (&'static str, [u32; 3], [u32; 3], u32, Vec<Arg>, Vec<Vec<u32>>);
    let n = 2000usize;
    let inp: Vec<u32> = (0..n).map(|i| f(((i * 7919) % 13) as f32 - 6.0)).collect();
    let mut cases: Vec<Case> = vec![
        ("selftest_block_reverse", [8, 1, 1], [256, 1, 1], 0, vec![Arg::I32(n as i32)], vec![vec![0; n], inp.clone()]),
        ("selftest_dynamic_tree_sum", [16, 1, 1], [128, 1, 1], 512, vec![Arg::I32(n as i32)], vec![vec![0; 16], inp.clone()]),
        ("selftest_half_warps", [1, 1, 1], [64, 1, 1], 0, vec![], vec![vec![0; 64]]),
        ("selftest_votes", [1, 1, 1], [40, 1, 1], 0, vec![], vec![vec![0; 120]]),
        ("selftest_indices", [3, 2, 2], [4, 2, 3], 0, vec![], vec![vec![0; 12 * 4 * 6]]),
        ("selftest_atomics", [24, 1, 1], [96, 1, 1], 0, vec![], vec![vec![0, 0, 0, 0, u32::MAX], vec![0; 2], vec![0; 1]]),
        ("selftest_block_reduce", [2, 1, 1], [40, 1, 1], 0, vec![Arg::I32(1000)], vec![vec![0; 2], vec![0; 2], inp.clone()]),
        ("selftest_block_reduce", [2, 1, 1], [8, 4, 3], 0, vec![Arg::I32(1000)], vec![vec![0; 2], vec![0; 2], inp.clone()]),
    ];
    for block in [40u32, 64] {
        for width in [32, 16, 8] {
            for arg in [1, 3, 17] {
                cases.push(("selftest_shuffles", [1, 1, 1], [block, 1, 1], 0, vec![Arg::I32(arg), Arg::I32(width)], vec![vec![0; block as usize * 5]]));
            }
        }
    }
    for (kernel, grid, block, shared, scalars, bufs) in cases {
        let mut sim_bufs = bufs.clone();
        let mut gpu_bufs = bufs;
        sim_launch_words(kernel, grid, block, shared, &scalars, &mut sim_bufs.iter_mut().collect::<Vec<_>>());
        on_gpu(kernel, grid, block, shared, &scalars, &mut gpu_bufs.iter_mut().collect::<Vec<_>>());
        for (b, (s, g)) in sim_bufs.iter().zip(&gpu_bufs).enumerate() {
            for (i, (&sv, &gv)) in s.iter().zip(g).enumerate() {
                let undefined = sv == u32::MAX && kernel == "selftest_shuffles" || kernel == "selftest_atomics" && b == 0 && i == 4;
                assert!(undefined || sv == gv, "{kernel} {grid:?}×{block:?} {scalars:?}: buffer {b}[{i}]: simulator {sv:#x}, GPU {gv:#x}");
            }
        }
    }
    println!("selftest kernels: GPU results equal the simulator's");
    let report = check_activations(&|kernel, grid, block, args, bufs| {
        let mut words: Vec<Vec<u32>> = bufs.iter().map(|b| b.iter().map(|v| v.to_bits()).collect()).collect();
        on_gpu(kernel, grid, block, 0, args, &mut words.iter_mut().collect::<Vec<_>>());
        for (b, w) in bufs.iter_mut().zip(words) {
            **b = w.into_iter().map(f32::from_bits).collect();
        }
    });
    println!("GPU vs CPU reference:\n{}", report.join("\n"));
}

#[test]
fn the_benchmark_runs_and_checks_its_results_on_tiny_sizes() {
    use multimat::bench::cuda_sim::{run, SimBenchArgs};
    run(SimBenchArgs { elements: 3000, blocks: 3, launches: 5, reps: 1 }).unwrap();
}
