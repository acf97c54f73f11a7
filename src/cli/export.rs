//! `multimat export`: a checkpoint's weights as one self-describing safetensors file for other
//! frameworks (`data-specs/checkpoint-v1.md`, "Exported weights"): the model's parameters and
//! BatchNorm buffers under their PyTorch-style names (the checkpoint's `param.`/`buffer.`
//! prefixes dropped), no optimiser state, and the checkpoint's metadata (configuration included)
//! in the safetensors `__metadata__`. `python/multimat_weights.py` reads it with numpy only.

use crate::atomic;
use crate::train::checkpoint::{self, Checkpoint};
use anyhow::{bail, Context, Result};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
#[command(long_about = "Write a checkpoint's weights (parameters and BatchNorm running statistics, \
no AdamW moments) to one safetensors file, tensors named as PyTorch state_dict keys \
(e.g. text.mlp.0.weight, shape (out, in)), with the run's configuration and metadata in the \
file's __metadata__ (data-specs/checkpoint-v1.md). python/multimat_weights.py loads it with numpy.\n\n\
Example:\n  multimat export --checkpoint runs/x --out model.safetensors")]
pub struct Args {
    /// A checkpoint's step-*.json, a pre-training run directory (its newest checkpoint) or a
    /// fine-tuning run directory (its best checkpoint).
    #[arg(long, value_name = "CKPT")]
    pub checkpoint: PathBuf,
    /// Output safetensors file, written atomically.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Value of `__metadata__["format"]` in an exported file.
pub const EXPORT_FORMAT: &str = "multimat-weights";

pub fn run(args: Args) -> Result<()> {
    let c = if args.checkpoint.is_dir() && args.checkpoint.join("best").is_dir() {
        checkpoint::latest(&args.checkpoint.join("best"))?
            .with_context(|| format!("no complete checkpoint in {}", args.checkpoint.join("best").display()))?
    } else {
        crate::eval::checkpoint_model::resolve_checkpoint(&args.checkpoint)?
    };
    let (n, bytes) = export(&c, &args.out)?;
    eprintln!("exported {n} tensor(s) of {} ({} bytes) → {}", c.json_path.display(), bytes, args.out.display());
    Ok(())
}

/// The weights of `c` renamed for export: `param.X` and `buffer.X` → `X`; optimiser state
/// (`adamw.*`) dropped. Any other name is an error (a checkpoint this version does not know).
pub fn export_tensors(c: &Checkpoint) -> Result<BTreeMap<String, (&[usize], &[f32])>> {
    let mut out = BTreeMap::new();
    for (name, (shape, values)) in &c.tensors {
        if name.starts_with("adamw.") {
            continue;
        }
        let Some(plain) = name.strip_prefix("param.").or_else(|| name.strip_prefix("buffer.")) else {
            bail!("{}: tensor {name:?} is neither a parameter, a buffer nor AdamW state", c.json_path.display());
        };
        if out.insert(plain.to_string(), (shape.as_slice(), values.as_slice())).is_some() {
            bail!("{}: {plain:?} is both a parameter and a buffer", c.json_path.display());
        }
    }
    if out.is_empty() {
        bail!("{}: the checkpoint holds no weights", c.json_path.display());
    }
    Ok(out)
}

/// The safetensors `__metadata__` of an export: every field of the checkpoint's JSON (strings as
/// they are, anything else as JSON text) except the tensors file name, plus `format` and
/// `source_checkpoint` (the JSON's file name).
pub fn export_metadata(c: &Checkpoint) -> Result<HashMap<String, String>> {
    let obj = c.meta.as_object().with_context(|| format!("{}: metadata is not a JSON object", c.json_path.display()))?;
    let mut meta: HashMap<String, String> = obj
        .iter()
        .filter(|(k, _)| k.as_str() != "tensors_file")
        .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string)))
        .collect();
    meta.insert("format".into(), EXPORT_FORMAT.into());
    meta.insert("source_checkpoint".into(), c.json_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    Ok(meta)
}

/// Write the export of `c` to `out` atomically; returns (tensor count, file size).
pub fn export(c: &Checkpoint, out: &Path) -> Result<(usize, usize)> {
    let tensors = export_tensors(c)?;
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> =
        tensors.iter().map(|(n, (s, v))| (n.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect(), s.to_vec())).collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(n, b, s)| TensorView::new(Dtype::F32, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("building tensor views: {e:?}"))?;
    let serialized = safetensors::tensor::serialize(views, &Some(export_metadata(c)?)).map_err(|e| anyhow::anyhow!("serialising {}: {e:?}", out.display()))?;
    atomic::write_bytes(out, &serialized).with_context(|| format!("writing {}", out.display()))?;
    Ok((tensors.len(), serialized.len()))
}
