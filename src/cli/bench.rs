//! `multimat bench`: benchmarks against peers measured in the same run, one subcommand each.
//! Each benchmark lives next to the code it measures; this file only dispatches.

use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub what: Bench,
}

#[derive(clap::Subcommand, Debug)]
pub enum Bench {
    /// sgemm GFLOP/s vs this machine's peak, and Transformer-block forward+backward throughput.
    Engine(crate::engine::bench::EngineBenchArgs),
    /// Forward+backward time and GFLOP/s of the 3-D ResNeXt convolutions vs the sgemm peak.
    Conv3d(crate::engine::bench_conv3d::Conv3dBenchArgs),
    /// Ingest throughput (parse + preprocess) and shard read throughput.
    Ingest(crate::ingest::bench::IngestArgs),
    /// PotNet lattice sums: pairs/s for a 40-atom cell and a structure directory, 1 thread and
    /// all cores, and the extrapolation to an MP-sized ingest.
    LatticeSums(crate::crystal::throughput::LatticeSumBenchArgs),
    /// Pre-training step (fwd + bwd + AdamW) materials/s per encoder and full model; dumps batches for benches/encoders_torch.py.
    Encoders(crate::model::bench::EncodersBenchArgs),
    /// Frozen BERT text encoder: texts/s and GFLOP/s vs the sgemm peak, peak memory.
    Text(crate::text::bench::Args),
    /// Forward+backward time of every contrastive loss at batch 360 with MP-like masks.
    Loss(crate::loss::bench::LossBenchArgs),
    /// cuda-sim: launch overhead, elementwise and block-reduction kernel throughput vs plain loops.
    CudaSim(crate::engine::backend::sim::SimBenchArgs),
}


pub fn run(args: Args) -> Result<()> {
    match args.what {
        Bench::Engine(a) => crate::engine::bench::run(a),
        Bench::Conv3d(a) => crate::engine::bench_conv3d::run(a),
        Bench::Ingest(a) => crate::ingest::bench::run(a),
        Bench::Encoders(a) => crate::model::bench::run(a),
        Bench::Text(a) => crate::text::bench::run(a),
        Bench::LatticeSums(a) => crate::crystal::throughput::run(a),
        Bench::Loss(a) => crate::loss::bench::run(a),
        Bench::CudaSim(a) => crate::engine::backend::sim::bench(a),
    }
}
