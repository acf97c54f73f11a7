//! `multimat bench encoders`: forward+backward throughput (materials/s) of each encoder on
//! generated batches (`model::synthetic`) in training mode, single process.

use super::cgcnn::{Cgcnn, CgcnnConfig};
use super::dos_transformer::{DosTransformer, DosTransformerConfig};
use super::potnet::{PotNet, PotNetConfig};
use super::resnext3d::{ResNeXt3d, ResNeXt3dConfig};
use super::synthetic::*;
use super::text_mlp::{TextMlp, TextMlpConfig};
use super::{Encoder, ModalityBatch, StepContext};
use crate::dist::Dist;
use crate::engine::Tensor;
use anyhow::Result;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct EncodersBenchArgs {
    /// Batch size for every encoder except the full ResNeXt-50.
    #[arg(long, default_value_t = 360)]
    pub batch: usize,
    /// Batch size of the full ResNeXt-50 (0 skips it).
    #[arg(long, default_value_t = 16)]
    pub resnext_full_batch: usize,
    /// Timed repeats after one warm-up step (best and mean are printed).
    #[arg(long, default_value_t = 2)]
    pub repeats: usize,
    /// Embedding width.
    #[arg(long, default_value_t = 128)]
    pub embed_dim: usize,
    /// Charge-density grid edge.
    #[arg(long, default_value_t = 32)]
    pub grid: usize,
    /// DOS points.
    #[arg(long, default_value_t = 601)]
    pub dos_points: usize,
    /// Only encoders whose name contains this.
    #[arg(long)]
    pub only: Option<String>,
}

fn time_encoder(name: &str, enc: &mut dyn Encoder, batch: &ModalityBatch, repeats: usize) -> Result<()> {
    let dist = Dist::single();
    let ctx = StepContext { train: true, dist: &dist, dropout_seed: 0 };
    let mut times = Vec::new();
    for r in 0..=repeats {
        let t0 = Instant::now();
        let y = enc.forward(batch, &ctx)?;
        let t1 = Instant::now();
        enc.backward(&Tensor::from_vec(&y.shape, vec![1.0 / y.numel() as f32; y.numel()]), &ctx)?;
        let t2 = Instant::now();
        if r > 0 {
            times.push(((t1 - t0).as_secs_f64(), (t2 - t1).as_secs_f64()));
        }
    }
    let b = batch.len() as f64;
    let best = times.iter().map(|(f, bw)| f + bw).fold(f64::INFINITY, f64::min);
    let mean_f = times.iter().map(|t| t.0).sum::<f64>() / times.len() as f64;
    let mean_b = times.iter().map(|t| t.1).sum::<f64>() / times.len() as f64;
    println!("{name:<28} B={:<4} fwd {:>8.3} s  bwd {:>8.3} s  best step {:>8.3} s  {:>9.1} materials/s",
        batch.len(), mean_f, mean_b, best, b / best);
    Ok(())
}

pub fn run(a: EncodersBenchArgs) -> Result<()> {
    let want = |n: &str| a.only.as_deref().is_none_or(|o| n.contains(o));
    println!("encoder forward+backward, training mode, {} threads (rayon), repeats {}", rayon::current_num_threads(), a.repeats);
    let graphs = ModalityBatch::Crystal(graph_batch(a.batch, GraphSizes::default(), 1));
    if let ModalityBatch::Crystal(g) = &graphs {
        println!("crystal batch: {} atoms, {} local, {} cgcnn, {} infinite edges", g.species.len(), g.local.src.len(), g.cgcnn.src.len(), g.infinite.src.len());
    }
    if want("potnet") {
        time_encoder("potnet", &mut PotNet::new(&PotNetConfig::default(), a.embed_dim, 0)?, &graphs, a.repeats)?;
    }
    if want("cgcnn") {
        time_encoder("cgcnn", &mut Cgcnn::new(&CgcnnConfig::default(), a.embed_dim, 0)?, &graphs, a.repeats)?;
    }
    if want("dos") {
        let dos = ModalityBatch::Dos(dos_batch(a.batch, a.dos_points, 2));
        time_encoder("dos_transformer", &mut DosTransformer::new(&DosTransformerConfig::default(), a.embed_dim, 0)?, &dos, a.repeats)?;
    }
    if want("text") {
        let text = ModalityBatch::Text(text_batch(a.batch, 768, 3));
        time_encoder("text_mlp", &mut TextMlp::new(&TextMlpConfig::default(), a.embed_dim, 0)?, &text, a.repeats)?;
    }
    if want("resnext_small") || want("resnext") {
        let dens = ModalityBatch::ChargeDensity(density_batch(a.batch, a.grid, 4));
        time_encoder("resnext3d small", &mut ResNeXt3d::new(&ResNeXt3dConfig::small(), a.embed_dim, 0)?, &dens, a.repeats)?;
    }
    if a.resnext_full_batch > 0 && want("resnext") {
        let dens = ModalityBatch::ChargeDensity(density_batch(a.resnext_full_batch, a.grid, 5));
        time_encoder("resnext3d-50 (full)", &mut ResNeXt3d::new(&ResNeXt3dConfig::default(), a.embed_dim, 0)?, &dens, a.repeats)?;
    }
    Ok(())
}
