//! `multimat bench loss`: forward+backward time of every loss at a given batch size and width,
//! with the Materials Project's missing-modality rates (DOS on 58 %, charge density on 79 % of
//! rows), and TensorCLIP's GEMM throughput against a plain sgemm of the same shape on this
//! machine. Prints; asserts nothing.

use std::time::Instant;

use anyhow::Result;

use crate::loss::{LossConfig, LossKind, Modality, ModalityEmbeddings, MultimodalLoss};
use crate::engine::gradcheck::random_vec;
use crate::engine::ops::matmul::sgemm;

#[derive(clap::Args, Debug)]
pub struct LossBenchArgs {
    /// Global batch size B.
    #[arg(long, default_value_t = 360)]
    pub batch: usize,
    /// Embedding width D.
    #[arg(long, default_value_t = 128)]
    pub dim: usize,
    /// Timing repeats (best of).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
}

pub fn run(args: LossBenchArgs) -> Result<()> {
    let (b, d) = (args.batch, args.dim);
    let present: Vec<Vec<bool>> = vec![
        vec![true; b],
        (0..b).map(|r| (r * 7919) % 100 < 58).collect(),
        (0..b).map(|r| (r * 104_729) % 100 < 79).collect(),
        vec![true; b],
    ];
    let data: Vec<Vec<f32>> = (0..4)
        .map(|m| {
            let mut x = random_vec(b * d, 100 + m as u64, 1.0);
            for row in x.chunks_exact_mut(d) {
                let n = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                row.iter_mut().for_each(|v| *v /= n);
            }
            x
        })
        .collect();
    let inputs: Vec<ModalityEmbeddings> = Modality::ALL
        .iter()
        .enumerate()
        .map(|(m, &modality)| ModalityEmbeddings {
            modality,
            data: &data[m],
            present: &present[m],
        })
        .collect();
    println!(
        "loss forward+backward, B = {b}, D = {d}, best of {} (DOS on 58 %, charge density on 79 % of rows)",
        args.repeats
    );
    let cases: [(LossKind, &[usize]); 5] = [
        (LossKind::Clip, &[0, 1]),
        (LossKind::AnchoredClip, &[0, 1, 2]),
        (LossKind::AllPairsClip, &[0, 1, 2, 3]),
        (LossKind::TensorClip, &[0, 1, 2]),
        (LossKind::BarlowTwins3d, &[0, 1, 2]),
    ];
    for (kind, mods) in cases {
        let ins: Vec<ModalityEmbeddings> = mods.iter().map(|&m| inputs[m]).collect();
        let modalities: Vec<Modality> = ins.iter().map(|e| e.modality).collect();
        let mut loss = MultimodalLoss::new(LossConfig::new(kind), &modalities)?;
        let mut best = f64::INFINITY;
        let mut value = 0.0;
        for _ in 0..args.repeats.max(1) {
            let t = Instant::now();
            value = loss.forward_backward(&ins, d, 0..b, true)?.loss;
            best = best.min(t.elapsed().as_secs_f64());
        }
        let names: Vec<&str> = modalities.iter().map(|m| m.name()).collect();
        println!(
            "  {:<16} {:<40} {:>10.2} ms   loss {value:.4}",
            format!("{kind:?}"),
            names.join("+"),
            best * 1e3
        );
        if kind == LossKind::TensorClip {
            // Rows present in crystal, DOS and charge density.
            let n = (0..b).filter(|&r| present[1][r] && present[2][r]).count();
            let flops = 8.0 * (n as f64).powi(3) * d as f64; // 4 GEMM passes of n³D multiply-adds
            let peak = sgemm_gflops(n, d);
            println!(
                "  {:<16} n = {n} valid rows: {:.1} GFLOP/s effective vs one logits-block sgemm ({n}×{d})·({d}×{}) \
                 at {peak:.1} GFLOP/s",
                "",
                flops / best / 1e9,
                crate::loss::tensor_clip::slices_per_block(n) * n
            );
        }
    }
    Ok(())
}

/// GFLOP/s of one sgemm shaped like TensorCLIP's logits block on this machine (best of 5).
fn sgemm_gflops(n: usize, d: usize) -> f64 {
    let width = crate::loss::tensor_clip::slices_per_block(n) * n;
    let a = random_vec(n * d, 1, 1.0);
    let w = random_vec(width * d, 2, 1.0);
    let mut c = vec![0.0f32; n * width];
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        sgemm(&mut c, &a, &w, n, width, d, false, true, 1.0, 0.0);
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (n * width * d) as f64 / best / 1e9
}
