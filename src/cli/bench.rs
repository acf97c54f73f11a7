//! `multimat bench`: benchmarks against peers measured in the same run. One subcommand per
//! benchmark; each prints its numbers next to a peer timed in the same process.

use anyhow::Result;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub which: Bench,
}

#[derive(clap::Subcommand, Debug)]
pub enum Bench {
    /// Forward+backward time and GFLOP/s of the 3-D ResNeXt convolutions (7³ stride-2 stem on
    /// 32³, the grouped 3³ stage-1 conv) against the sgemm peak measured in the same run.
    Conv3d(Conv3dArgs),
}

#[derive(clap::Args, Debug)]
pub struct Conv3dArgs {
    /// Batch size.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Timed repetitions per measurement (the best is reported, after one warm-up).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
}

pub fn run(args: Args) -> Result<()> {
    match args.which {
        Bench::Conv3d(a) => conv3d(a),
    }
}

/// Best wall time of `reps` runs after one warm-up, in seconds.
fn best_time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn conv3d(args: Conv3dArgs) -> Result<()> {
    use crate::engine::gradcheck::random_vec;
    use crate::engine::ops::conv3d::{conv3d_backward, conv3d_forward, Conv3dDims, Window3d};
    use crate::engine::ops::matmul::sgemm;

    anyhow::ensure!(args.batch > 0, "--batch must be positive");
    // Peer: square sgemm through the same GEMM the convolutions call.
    let m = 1024;
    let (a, b) = (random_vec(m * m, 1, 1.0), random_vec(m * m, 2, 1.0));
    let mut c = vec![0.0f32; m * m];
    let t = best_time(args.reps, || sgemm(&mut c, &a, &b, m, m, m, false, false, 1.0, 0.0));
    let peak = 2.0 * (m * m * m) as f64 / t / 1e9;
    println!("sgemm {m}×{m}×{m}: {:.2} ms, {peak:.1} GFLOP/s (peak reference, {} rayon threads)",
        t * 1e3, rayon::current_num_threads());
    println!();
    println!("{:<44} {:>10} {:>10} {:>9} {:>9}", "convolution (batch {b})".replace("{b}", &args.batch.to_string()),
        "pass", "ms", "GFLOP/s", "% sgemm");

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
        let t_fwd = best_time(args.reps, || conv3d_forward(&mut out, &x, &w, None, &dims));
        // The stem's input is data, so the model never asks for its input gradient.
        let t_bwd = best_time(args.reps, || {
            conv3d_backward(want_dinp.then_some(&mut dx[..]), &mut dw, None, &dout, &x, &w, &dims)
        });
        let bwd_flops = if want_dinp { 2.0 * flops } else { flops };
        let row = |pass: &str, t: f64, f: f64| {
            println!("{:<44} {:>10} {:>10.2} {:>9.1} {:>8.0}%", name, pass, t * 1e3, f / t / 1e9, 100.0 * f / t / 1e9 / peak);
        };
        row("forward", t_fwd, flops);
        row(if want_dinp { "backward" } else { "bwd (dW)" }, t_bwd, bwd_flops);
        row("fwd+bwd", t_fwd + t_bwd, flops + bwd_flops);
    }
    Ok(())
}
