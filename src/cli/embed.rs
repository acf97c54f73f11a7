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
A fine-tuning run (`multimat finetune`'s run directory or its best/ checkpoint) is accepted too: \
its fine-tuned crystal encoder gives the crystal embeddings (--modality crystal, --split all).\n\n\
The model is rebuilt from the configuration stored in the checkpoint. Records lacking the modality \
are skipped and counted. --split selects the records pre-training trained on or held out (the \
checkpoint's seed and data.holdout_fraction), e.g. to screen held-out DOS against training crystals:\n  \
multimat embed --checkpoint runs/x --shards shards/ --modality dos --split holdout --out q.h5\n  \
multimat embed --checkpoint runs/x --shards shards/ --modality crystal --split train --out c.h5\n  \
multimat-screen --queries q.h5 --candidates c.h5 -k 10 --out hits.csv")]
pub struct Args {
    /// A checkpoint's step-*.json, a pre-training run directory (its newest checkpoint), or a
    /// fine-tuning run directory (its best checkpoint: crystal embeddings of the fine-tuned encoder).
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
    #[command(flatten)]
    pub device: crate::cli::device::DeviceArgs,
}

pub fn run(args: Args) -> Result<()> {
    if crate::finetune::predict::names_finetune_checkpoint(&args.checkpoint) {
        return run_finetuned(args);
    }
    let t0 = Instant::now();
    let mut loaded = LoadedModel::load(&args.checkpoint)?;
    loaded.require(args.modality)?;
    loaded.place_on(args.device.resolve(0)?)?;
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

/// `embed` with a fine-tuning checkpoint: crystal embeddings of its fine-tuned encoder.
fn run_finetuned(args: Args) -> Result<()> {
    let t0 = Instant::now();
    let mut model = crate::finetune::predict::FinetunedModel::load(&args.checkpoint)?;
    model.to_device(args.device.resolve(0)?)?;
    let at = model.json_path.display().to_string();
    if args.modality != Modality::Crystal {
        bail!("{at}: a fine-tuning checkpoint has only a crystal encoder; --modality {} needs a pre-training checkpoint", args.modality.name());
    }
    if args.split != Split::All {
        bail!("{at}: --split {} follows a pre-training run's held-out rule; with a fine-tuning checkpoint use --split all", args.split.name());
    }
    let ds = Dataset::load(&shard_paths(&args.shards)?)?;
    if ds.shards[0].meta.graph_params != model.graph_params {
        bail!("{}: its crystal graphs were built with other settings than {at} trained on; re-ingest the structures", ds.shards[0].path.display());
    }
    let records: Vec<usize> = (0..ds.len()).filter(|&r| ds.has(Modality::Crystal, r)).collect();
    if records.is_empty() {
        bail!("none of the {} record(s) in {:?} has a crystal graph; nothing to embed", ds.len(), args.shards);
    }
    let single = crate::dist::Dist::single();
    let rows = model.embed(&ds, &records, 64, &single, &mut |_| {})?;
    let ids: Vec<&str> = records.iter().map(|&r| ds.id(r)).collect();
    let meta = EmbeddingsMeta {
        modality: Modality::Crystal.name().to_string(),
        model_id: args.model_id.clone().unwrap_or_else(|| model.model_id()),
        checkpoint_sha256: model.tensors_sha256.clone(),
        normalised: true,
        producer: format!("multimat {} embed (fine-tuned {})", env!("CARGO_PKG_VERSION"), model.target),
    };
    write_embeddings(&args.out, &meta, model.config.model.embed_dim, &ids, &rows)?;
    eprintln!(
        "embedded {} crystal record(s) ({} without a crystal graph, skipped) with the fine-tuned encoder {} in {:.1} s → {}",
        records.len(),
        ds.len() - records.len(),
        meta.model_id,
        t0.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}
