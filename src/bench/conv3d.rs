//! `multimat bench conv3d`: forward+backward wall and CPU time and GFLOP/s of the 3-D ResNeXt
//! convolutions (the 7³ stride-2 stem on 32³ and the grouped 3³ stage convs) against the sgemm
//! peak measured in the same run.

use anyhow::Result;
use std::time::Instant;
use crate::bench::process_cpu_seconds;

#[derive(clap::Args, Debug)]
pub struct Conv3dBenchArgs {
    /// Batch size.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Timed repetitions per measurement (the best wall time is reported, after one warm-up).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
}


/// Timing of one measured call: best wall time over the repetitions, and mean CPU time.
struct Timing {
    best_wall: f64,
    mean_cpu: Option<f64>,
}

/// Runs `f` once to warm up, then `reps` times.
fn measure(reps: usize, mut f: impl FnMut()) -> Timing {
    f();
    let reps = reps.max(1);
    let cpu0 = process_cpu_seconds();
    let mut best_wall = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        f();
        best_wall = best_wall.min(t.elapsed().as_secs_f64());
    }
    let mean_cpu = cpu0.zip(process_cpu_seconds()).map(|(a, b)| (b - a) / reps as f64);
    Timing { best_wall, mean_cpu }
}

pub fn run(args: Conv3dBenchArgs) -> Result<()> {
    use crate::engine::gradcheck::random_vec;
    use crate::engine::ops::conv3d::{conv3d_backward, conv3d_forward, Conv3dDims, Window3d};
    use crate::engine::ops::matmul::sgemm;

    anyhow::ensure!(args.batch > 0, "--batch must be positive");
    // Peer: square sgemm through the same GEMM the convolutions call.
    let m = 1024;
    let (a, b) = (random_vec(m * m, 1, 1.0), random_vec(m * m, 2, 1.0));
    let mut c = vec![0.0f32; m * m];
    let gemm_flops = 2.0 * (m * m * m) as f64;
    let sgemm_timing = measure(args.reps, || sgemm(&mut c, &a, &b, m, m, m, false, false, 1.0, 0.0));
    let peak = gemm_flops / sgemm_timing.best_wall / 1e9;
    // GFLOP per CPU-second of sgemm: the efficiency yardstick that survives a loaded machine.
    let peak_cpu = sgemm_timing.mean_cpu.map(|s| gemm_flops / s / 1e9);
    // "GFLOP per CPU-second (% of sgemm's)" for a measurement, or "-" without /proc.
    let cpu_eff = |flops: f64, cpu: Option<f64>| match (cpu, peak_cpu) {
        (Some(s), Some(pc)) if s > 0.0 => format!("{:.1} ({:.0}%)", flops / s / 1e9, 100.0 * flops / s / 1e9 / pc),
        _ => "-".to_string(),
    };
    let cpu_ms = |t: &Timing| t.mean_cpu.map_or("-".to_string(), |s| format!("{:.1}", s * 1e3));
    println!("sgemm {m}×{m}×{m}: {:.2} ms wall, {} ms CPU, {peak:.1} GFLOP/s (the peak below; {} rayon threads)",
        sgemm_timing.best_wall * 1e3, cpu_ms(&sgemm_timing), rayon::current_num_threads());
    println!("(wall: best of {} runs; CPU: mean per run over all threads, robust to other load;", args.reps);
    println!(" GF/CPU·s: GFLOP per CPU-second, in brackets as a share of sgemm's {})",
        peak_cpu.map_or("-".to_string(), |p| format!("{p:.1}")));
    println!();
    println!("{:<44} {:>9} {:>9} {:>9} {:>9} {:>8} {:>14}", format!("convolution (batch {})", args.batch),
        "pass", "wall ms", "CPU ms", "GFLOP/s", "% sgemm", "GF/CPU·s");

    let cases = [
        ("stem 1→64, 7³ s2 p3, 32³→16³", Conv3dDims { n: args.batch, c: 1, in_dims: [32; 3], oc: 64, groups: 1, window: Window3d::cube(7, 2, 3) }, false),
        ("stage-1 grouped 128→128, 3³ g32, 8³", Conv3dDims { n: args.batch, c: 128, in_dims: [8; 3], oc: 128, groups: 32, window: Window3d::cube(3, 1, 1) }, true),
        ("stage-2 grouped 256→256, 3³ g32 s2, 8³→4³", Conv3dDims { n: args.batch, c: 256, in_dims: [8; 3], oc: 256, groups: 32, window: Window3d::cube(3, 2, 1) }, true),
        ("stage-1 pointwise 128→256, 1³, 8³", Conv3dDims { n: args.batch, c: 128, in_dims: [8; 3], oc: 256, groups: 1, window: Window3d::cube(1, 1, 0) }, true),
    ];
    for (name, dims, want_dinp) in cases {
        let x = random_vec(dims.input_len(), 3, 1.0);
        let w = random_vec(dims.weight_len(), 4, 0.1);
        let dout = random_vec(dims.output_len(), 5, 1.0);
        let mut out = vec![0.0f32; dims.output_len()];
        let mut dx = vec![0.0f32; dims.input_len()];
        let mut dw = vec![0.0f32; dims.weight_len()];
        let flops = dims.forward_flops();
        let t_fwd = measure(args.reps, || conv3d_forward(&mut out, &x, &w, None, &dims));
        // The stem's input is data, so the model never asks for its input gradient.
        let t_bwd = measure(args.reps, || {
            conv3d_backward(want_dinp.then_some(&mut dx[..]), &mut dw, None, &dout, &x, &w, &dims)
        });
        let bwd_flops = if want_dinp { 2.0 * flops } else { flops };
        let row = |pass: &str, wall: f64, cpu: Option<f64>, f: f64| {
            let cpu_s = |c: Option<f64>| c.map_or("-".to_string(), |s| format!("{:.1}", s * 1e3));
            println!("{:<44} {:>9} {:>9.2} {:>9} {:>9.1} {:>7.0}% {:>14}", name, pass, wall * 1e3, cpu_s(cpu), f / wall / 1e9,
                100.0 * f / wall / 1e9 / peak, cpu_eff(f, cpu));
        };
        row("forward", t_fwd.best_wall, t_fwd.mean_cpu, flops);
        row(if want_dinp { "backward" } else { "bwd (dW)" }, t_bwd.best_wall, t_bwd.mean_cpu, bwd_flops);
        let sum_cpu = t_fwd.mean_cpu.zip(t_bwd.mean_cpu).map(|(a, b)| a + b);
        row("fwd+bwd", t_fwd.best_wall + t_bwd.best_wall, sum_cpu, flops + bwd_flops);
    }

    // A whole stage-1 bottleneck block (the first, with the projection shortcut), training mode.
    {
        use crate::engine::nn::conv3d::ConvInit;
        use crate::engine::nn::resnext::{ResNeXtBlock, ResNeXtBlockConfig};
        use crate::engine::{Module, Tensor};
        use rand::SeedableRng;
        let name = "ResNeXt block 64→(128, g32)→256, 8³";
        let cfg = ResNeXtBlockConfig::stage(64, 128, 32, 1);
        let mut block = ResNeXtBlock::new("layer1.0", cfg, ConvInit::KaimingNormalFanOut, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
        let x = Tensor::from_vec(&[args.batch, 64, 8, 8, 8], random_vec(args.batch * 64 * 512, 6, 1.0));
        let conv_flops = |c: usize, oc: usize, groups: usize, k: usize| {
            Conv3dDims { n: args.batch, c, in_dims: [8; 3], oc, groups, window: Window3d::cube(k, 1, k / 2) }.forward_flops()
        };
        // Convolutions only (BN, ReLU and the add are a few per cent of this); backward = 2× forward.
        let flops = 3.0 * (conv_flops(64, 128, 1, 1) + conv_flops(128, 128, 32, 3) + conv_flops(128, 256, 1, 1) + conv_flops(64, 256, 1, 1));
        let mut failure = None;
        let t = measure(args.reps, || {
            block.zero_grad();
            if let Err(e) = block.forward(&x).and_then(|y| block.backward(&Tensor::from_vec(&y.shape, vec![1e-3; y.numel()]))) {
                failure = Some(e);
            }
        });
        if let Some(e) = failure {
            return Err(e.context("ResNeXt block benchmark"));
        }
        let cpu = t.mean_cpu.map_or("-".to_string(), |s| format!("{:.1}", s * 1e3));
        println!("{:<44} {:>9} {:>9.2} {:>9} {:>9.1} {:>7.0}% {:>14}", name, "fwd+bwd", t.best_wall * 1e3, cpu,
            flops / t.best_wall / 1e9, 100.0 * flops / t.best_wall / 1e9 / peak, cpu_eff(flops, t.mean_cpu));
        println!("{:<44} {:>9} {:>9.2} {:>9}", "  per sample", "fwd+bwd", t.best_wall * 1e3 / args.batch as f64,
            t.mean_cpu.map_or("-".to_string(), |s| format!("{:.1}", s * 1e3 / args.batch as f64)));
    }
    Ok(())
}
