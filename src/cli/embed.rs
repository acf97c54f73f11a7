//! `multimat embed`: per-material embeddings of one modality from a pre-trained checkpoint,
//! written as an embeddings file (`data-specs/embeddings-v1.md`) that `multimat-screen` reads.

use crate::embeddings::{write_embeddings, EmbeddingsMeta};
use crate::eval::checkpoint_model::{embed_with_progress, LoadedModel, Split};
use crate::loss::Modality;
use crate::train::dataset::{shard_paths, Dataset};
use anyhow::{bail, Result};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
#[command(long_about = "Embed every material of the shards that has the chosen modality with that \
modality's pre-trained encoder, and write the L2-normalised 128-d vectors with their material ids \
to an HDF5 embeddings file (data-specs/embeddings-v1.md), tagged with the modality, a model id and \
the checkpoint's SHA-256 so multimat-screen only compares vectors of the same model.\n\n\
The model is rebuilt from the configuration stored in the checkpoint. Records lacking the modality \
are skipped and counted. --split selects the records pre-training trained on or held out (the \
checkpoint's seed and data.holdout_fraction), e.g. to screen held-out DOS against training crystals:\n  \
multimat embed --checkpoint runs/x --shards shards/ --modality dos --split holdout --out q.h5\n  \
multimat embed --checkpoint runs/x --shards shards/ --modality crystal --split train --out c.h5\n  \
multimat-screen --queries q.h5 --candidates c.h5 -k 10 --out hits.csv")]
pub struct Args {
    /// A checkpoint's step-*.json, or a pre-training run directory (its newest checkpoint).
    #[arg(long, value_name = "CKPT")]
    pub checkpoint: PathBuf,
    /// Shard files or directories of shards.
    #[arg(long, value_name = "SHARD", num_args = 1.., required = true)]
    pub shards: Vec<PathBuf>,
    /// Which encoder: crystal, dos, charge_density or text.
    #[arg(long, value_parser = Modality::parse)]
    pub modality: Modality,
    /// Output embeddings file (.h5), written atomically.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Records to embed, by the checkpoint's held-out rule.
    #[arg(long, value_enum, default_value = "all")]
    pub split: Split,
    /// Model id stored in the file (default: run directory name and checkpoint step).
    #[arg(long)]
    pub model_id: Option<String>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: Args) -> Result<()> {
    let t0 = Instant::now();
    let mut loaded = LoadedModel::load(&args.checkpoint)?;
    loaded.require(args.modality)?;
    let ds = Dataset::load(&shard_paths(&args.shards)?)?;
    let in_split = loaded.select(&ds, args.split);
    let records: Vec<usize> = in_split.iter().copied().filter(|&r| ds.has(args.modality, r)).collect();
    let lacking = in_split.len() - records.len();
    if records.is_empty() {
        bail!(
            "none of the {} record(s) of the {} split in {:?} has {} data; nothing to embed",
            in_split.len(),
            args.split.name(),
            args.shards,
            args.modality.name()
        );
    }
    let rows = embed_with_progress(&mut loaded.model, &ds, args.modality, &records, !args.quiet, args.modality.name())?;
    let ids: Vec<&str> = records.iter().map(|&r| ds.id(r)).collect();
    let meta = EmbeddingsMeta {
        modality: args.modality.name().to_string(),
        model_id: args.model_id.clone().unwrap_or_else(|| loaded.model_id()),
        checkpoint_sha256: loaded.tensors_sha256.clone(),
        normalised: true,
        producer: format!("multimat {} embed", env!("CARGO_PKG_VERSION")),
    };
    write_embeddings(&args.out, &meta, loaded.model.embed_dim, &ids, &rows)?;
    eprintln!(
        "embedded {} {} record(s) of the {} split ({} in the split lack {} data, skipped; {} outside the split) \
         with {} in {:.1} s → {}",
        records.len(),
        args.modality.name(),
        args.split.name(),
        lacking,
        args.modality.name(),
        ds.len() - in_split.len(),
        meta.model_id,
        t0.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}
