//! `multimat bench engine`: how fast the engine's hot paths run on this machine.
//!
//! Prints sgemm GFLOP/s at a few square and model-shaped sizes, each as a fraction of this
//! machine's sgemm peak (the best square result of the same run — the peer is the GEMM
//! itself), then forward+backward throughput of Transformer blocks at the DOS-encoder shape and a
//! BERT-base shape, with the GFLOP/s they reach. Nothing is asserted; numbers vary ±20 % on shared
//! machines, so every figure is the best of `--repeats` runs.

use crate::engine::gradcheck::random_vec;
use crate::engine::nn::transformer::{TransformerBlock, TransformerConfig};
use crate::engine::nn::Activation;
use crate::engine::ops::gelu::GeluKind;
use crate::engine::ops::matmul::sgemm;
use crate::engine::tensor::{Indices, Module, Tensor};
use anyhow::Result;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Instant;
use crate::bench::process_cpu_seconds;

#[derive(clap::Args, Debug)]
pub struct EngineBenchArgs {
    /// Timed runs per measurement (the best is reported).
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Batch size of the Transformer-block benchmarks.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Sequence length of the DOS-shaped block (601 energy points in the reference).
    #[arg(long, default_value_t = 601)]
    pub dos_len: usize,
    /// Sequence length of the BERT-shaped block.
    #[arg(long, default_value_t = 128)]
    pub bert_len: usize,
    /// Skip the GEMM table (the Transformer-block figures then omit the fraction of peak).
    #[arg(long)]
    pub blocks_only: bool,
}


/// Best wall time and mean CPU time (seconds) of `repeats` calls after one warm-up call.
fn best_time(repeats: usize, mut f: impl FnMut()) -> (f64, Option<f64>) {
    f();
    let repeats = repeats.max(1);
    let cpu0 = process_cpu_seconds();
    let wall = (0..repeats)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    // Below 0.1 s of CPU the 10 ms ticks are too coarse to report.
    let cpu = cpu0.zip(process_cpu_seconds()).map(|(a, b)| b - a).filter(|&total| total >= 0.1).map(|total| total / repeats as f64);
    (wall, cpu)
}

/// GFLOP/s from wall time, and "per-thread CPU-time GFLOP/s × threads": what the run would reach
/// on an otherwise idle machine if the threads were never descheduled (robust to other load).
fn rates(flops: f64, wall: f64, cpu: Option<f64>) -> (f64, Option<f64>) {
    let threads = rayon::current_num_threads() as f64;
    (flops / wall / 1e9, cpu.filter(|&c| c > 0.0).map(|c| flops / c * threads / 1e9))
}

fn gemm_gflops(m: usize, n: usize, k: usize, repeats: usize) -> (f64, Option<f64>) {
    let a = random_vec(m * k, 1, 1.0);
    let b = random_vec(k * n, 2, 1.0);
    let mut c = vec![0.0f32; m * n];
    let (wall, cpu) = best_time(repeats, || sgemm(&mut c, &a, &b, m, n, k, false, false, 1.0, 0.0));
    rates(2.0 * (m * n * k) as f64, wall, cpu)
}

/// FLOPs of one block forward+backward: linear layers 3× their forward (dX and dW), attention
/// 2 GEMMs forward and 5 backward (Q·Kᵀ recomputed, dV, dP, dQ, dK), each 2·B·H·T²·hs.
fn block_flops(cfg: &TransformerConfig, b: usize, t: usize) -> f64 {
    let (c, i, f) = (cfg.dim as f64, (cfg.heads * cfg.head_size) as f64, cfg.ffn_dim as f64);
    let rows = (b * t) as f64;
    let linear = 2.0 * rows * (c * 3.0 * i + i * c + c * f + f * c);
    let attn_gemm = 2.0 * (b * cfg.heads) as f64 * (t * t) as f64 * cfg.head_size as f64;
    3.0 * linear + 7.0 * attn_gemm
}

/// The machine's sgemm peak of this run, by wall time and by CPU time.
#[derive(Clone, Copy)]
struct Peak {
    wall: f64,
    cpu: Option<f64>,
}

impl Peak {
    /// "GFLOP/s (x % of peak)  CPU-time GFLOP/s (y % of peak)" for one measurement.
    fn describe(&self, (g, cg): (f64, Option<f64>)) -> String {
        let cpu = match (cg, self.cpu) {
            (Some(c), Some(p)) => format!("{c:>6.1} GFLOP/s ({:>3.0} %)", 100.0 * c / p),
            (Some(c), None) => format!("{c:>6.1} GFLOP/s", ),
            _ => "     - GFLOP/s".to_string(),
        };
        format!("wall {g:>6.1} GFLOP/s ({:>3.0} %)   CPU-time {cpu}", 100.0 * g / self.wall)
    }
}

fn bench_block(label: &str, cfg: &TransformerConfig, b: usize, t: usize, repeats: usize, peak: Peak) {
    let mut block = TransformerBlock::new("bench", cfg, &mut ChaCha8Rng::seed_from_u64(0));
    let x = Tensor::from_vec(&[b, t, cfg.dim], random_vec(b * t * cfg.dim, 3, 1.0));
    let dy = Tensor::from_vec(&[b, t, cfg.dim], random_vec(b * t * cfg.dim, 4, 1.0));
    // The last tenth of every sequence is padding, as in a ragged batch.
    let valid = Indices::from_mask(&(0..b * t).map(|i| i % t < t - t / 10).collect::<Vec<bool>>());
    let (fwd, _) = best_time(repeats, || {
        block.forward(&x, Some(&valid));
    });
    let (step, step_cpu) = best_time(repeats, || {
        block.forward(&x, Some(&valid));
        block.backward(&dy);
        block.zero_grad();
    });
    let threads = rayon::current_num_threads() as f64;
    let cpu_tokens = step_cpu.map_or("-".to_string(), |c| format!("{:.0}", (b * t) as f64 / (c / threads)));
    println!("{label}  B={b} T={t}");
    println!(
        "    fwd {:.1} ms, fwd+bwd {:.1} ms wall; {:.0} tokens/s wall, {cpu_tokens} tokens/s CPU-time",
        fwd * 1e3,
        step * 1e3,
        (b * t) as f64 / step,
    );
    println!("    {}", peak.describe(rates(block_flops(cfg, b, t), step, step_cpu)));
}

pub fn run(args: EngineBenchArgs) -> Result<()> {
    let threads = rayon::current_num_threads();
    println!("engine benchmark: {threads} rayon threads; wall = best of {} runs, CPU-time = flops / (CPU seconds / threads),", args.repeats);
    println!("which other processes' load barely affects; percentages are of the sgemm peak measured the same way\n");
    let peak = if args.blocks_only { Peak { wall: f64::NAN, cpu: None } } else { gemm_table(&args) };
    println!("Transformer block forward+backward (padding mask, exact GELU; DOS pre-LN, BERT post-LN)");
    let dos = TransformerConfig::dos_reference();
    bench_block("DOS block (128, 8×64 heads, FFN 512)", &dos, args.batch, args.dos_len, args.repeats, peak);
    let bert = TransformerConfig {
        dim: 768,
        heads: 12,
        head_size: 64,
        ffn_dim: 3072,
        activation: Activation::Gelu(GeluKind::Erf),
        ln_eps: 1e-12,
        qkv_bias: true,
        norm_first: false,
    };
    bench_block("BERT-base block (768, 12×64, 3072)", &bert, args.batch, args.bert_len, args.repeats, peak);
    Ok(())
}

/// Prints the sgemm table and returns the peak (best square, by wall and by CPU time).
fn gemm_table(args: &EngineBenchArgs) -> Peak {
    println!("sgemm (matrixmultiply, threaded), C = A·B, f32");
    let squares: Vec<(usize, (f64, Option<f64>))> =
        [256usize, 512, 1024, 2048].iter().map(|&s| (s, gemm_gflops(s, s, s, args.repeats))).collect();
    let peak = Peak {
        wall: squares.iter().map(|r| r.1 .0).fold(0.0, f64::max),
        cpu: squares.iter().filter_map(|r| r.1 .1).reduce(f64::max),
    };
    for (s, r) in &squares {
        println!("  {:<32} {}", format!("{s}³"), peak.describe(*r));
    }
    // Model-shaped GEMMs (rows, out, in): the DOS encoder's FFN and qkv at B=16, T=601; BERT-base.
    for (label, m, n, k) in [
        ("DOS FFN in    (9616, 512, 128)", 9616, 512, 128),
        ("DOS qkv       (9616, 1536, 128)", 9616, 1536, 128),
        ("BERT FFN in   (2048, 3072, 768)", 2048, 3072, 768),
        ("attention QKᵀ (601, 601, 64)", 601, 601, 64),
    ] {
        println!("  {label:<32} {}", peak.describe(gemm_gflops(m, n, k, args.repeats)));
    }
    println!(
        "  peak (best square): wall {:.1} GFLOP/s, CPU-time {} GFLOP/s\n",
        peak.wall,
        peak.cpu.map_or("-".to_string(), |c| format!("{c:.1}"))
    );
    peak
}
