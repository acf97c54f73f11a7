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
    Engine(crate::bench::engine::EngineBenchArgs),
    /// Forward+backward time and GFLOP/s of the 3-D ResNeXt convolutions vs the sgemm peak.
    Conv3d(crate::bench::conv3d::Conv3dBenchArgs),
    /// Ingest throughput (parse + preprocess) and shard read throughput.
    Ingest(crate::bench::ingest::IngestArgs),
    /// PotNet lattice sums: pairs/s for a 40-atom cell and a structure directory, 1 thread and
    /// all cores, and the extrapolation to an MP-sized ingest.
    LatticeSums(crate::bench::lattice_sums::LatticeSumBenchArgs),
    /// Pre-training step (fwd + bwd + AdamW) materials/s per encoder and full model; dumps batches for benches/encoders_torch.py.
    Encoders(crate::bench::encoders::EncodersBenchArgs),
    /// Frozen BERT text encoder: texts/s and GFLOP/s vs the sgemm peak, peak memory.
    Text(crate::bench::text::Args),
    /// Forward+backward time of every contrastive loss at batch 360 with MP-like masks.
    Loss(crate::bench::loss::LossBenchArgs),
    /// cuda-sim: launch overhead, elementwise and block-reduction kernel throughput vs plain loops.
    CudaSim(crate::bench::cuda_sim::SimBenchArgs),
    /// Streamed vs in-memory training data: peak RSS per rank, step-assembly time and resident
    /// bytes per record on `multimat synth` sets.
    Stream(crate::bench::stream::StreamBenchArgs),
}


pub fn run(args: Args) -> Result<()> {
    match args.what {
        Bench::Engine(a) => crate::bench::engine::run(a),
        Bench::Conv3d(a) => crate::bench::conv3d::run(a),
        Bench::Ingest(a) => crate::bench::ingest::run(a),
        Bench::Encoders(a) => crate::bench::encoders::run(a),
        Bench::Text(a) => crate::bench::text::run(a),
        Bench::LatticeSums(a) => crate::bench::lattice_sums::run(a),
        Bench::Loss(a) => crate::bench::loss::run(a),
        Bench::CudaSim(a) => crate::bench::cuda_sim::run(a),
        Bench::Stream(a) => crate::bench::stream::run(a),
    }
}
