//! `multimat bench engine`: how fast the engine's hot paths run on this machine.
//!
//! Prints sgemm GFLOP/s at a few square and model-shaped sizes, each as a fraction of this
//! machine's sgemm peak (the best square result of the same run — the peer is the GEMM
//! itself), then forward+backward throughput of Transformer blocks at the DOS-encoder shape and a
//! BERT-base shape, with the GFLOP/s they reach. Nothing is asserted; numbers vary ±20 % on shared
//! machines, so every figure is the best of `--repeats` runs.

use super::gradcheck::random_vec;
use super::nn::transformer::{TransformerBlock, TransformerConfig};
use super::nn::Activation;
use super::ops::gelu::GeluKind;
use super::ops::matmul::sgemm;
use super::tensor::{Module, Tensor};
use anyhow::Result;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

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

/// Best wall time in seconds of `repeats` calls after one warm-up call.
fn best_time(repeats: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..repeats.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn gemm_gflops(m: usize, n: usize, k: usize, repeats: usize) -> f64 {
    let a = random_vec(m * k, 1, 1.0);
    let b = random_vec(k * n, 2, 1.0);
    let mut c = vec![0.0f32; m * n];
    let t = best_time(repeats, || sgemm(&mut c, &a, &b, m, n, k, false, false, 1.0, 0.0));
    2.0 * (m * n * k) as f64 / t / 1e9
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

fn bench_block(label: &str, cfg: &TransformerConfig, b: usize, t: usize, repeats: usize, peak: f64) {
    let mut block = TransformerBlock::new("bench", cfg, &mut ChaCha8Rng::seed_from_u64(0));
    let x = Tensor::from_vec(&[b, t, cfg.dim], random_vec(b * t * cfg.dim, 3, 1.0));
    let dy = Tensor::from_vec(&[b, t, cfg.dim], random_vec(b * t * cfg.dim, 4, 1.0));
    // The last tenth of every sequence is padding, as in a ragged batch.
    let valid: Vec<bool> = (0..b * t).map(|i| i % t < t - t / 10).collect();
    let fwd = best_time(repeats, || {
        block.forward(&x, Some(&valid));
    });
    let step = best_time(repeats, || {
        block.forward(&x, Some(&valid));
        block.backward(&dy);
        block.zero_grad();
    });
    let flops = block_flops(cfg, b, t);
    println!(
        "{label:<34} B={b:<4} T={t:<4} fwd {:>8.1} ms  fwd+bwd {:>8.1} ms  {:>9.0} tokens/s  {:>6.1} GFLOP/s ({:.0} % of peak)",
        fwd * 1e3,
        step * 1e3,
        (b * t) as f64 / step,
        flops / step / 1e9,
        100.0 * flops / step / 1e9 / peak
    );
}

pub fn run(args: EngineBenchArgs) -> Result<()> {
    let threads = rayon::current_num_threads();
    println!("engine benchmark: {threads} rayon threads, best of {} runs\n", args.repeats);
    let peak = if args.blocks_only { f64::NAN } else { gemm_table(&args) };
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

/// Prints the sgemm table and returns the peak GFLOP/s.
fn gemm_table(args: &EngineBenchArgs) -> f64 {
    println!("sgemm (matrixmultiply, threaded), C = A·B, f32");
    let squares = [256usize, 512, 1024, 2048];
    let square_results: Vec<(usize, f64)> = squares.iter().map(|&s| (s, gemm_gflops(s, s, s, args.repeats))).collect();
    let peak = square_results.iter().map(|r| r.1).fold(0.0, f64::max);
    for (s, g) in &square_results {
        println!("  {s:>5}³                          {g:>7.1} GFLOP/s  {:>5.1} % of peak", 100.0 * g / peak);
    }
    // Model-shaped GEMMs: (rows, out, in) of the DOS encoder's FFN and qkv at B=16, T=601, and of BERT-base.
    for (label, m, n, k) in [
        ("DOS FFN in   (9616, 512, 128)", 9616, 512, 128),
        ("DOS qkv      (9616, 1536, 128)", 9616, 1536, 128),
        ("BERT FFN in  (2048, 3072, 768)", 2048, 3072, 768),
        ("attention QKᵀ (601, 601, 64)", 601, 601, 64),
    ] {
        let g = gemm_gflops(m, n, k, args.repeats);
        println!("  {label:<31} {g:>7.1} GFLOP/s  {:>5.1} % of peak", 100.0 * g / peak);
    }
    println!("  peak (best square above): {peak:.1} GFLOP/s\n");
    peak
}
