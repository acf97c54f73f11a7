//! `multimat embed-text`: embed Robocrystallographer descriptions with a frozen BERT checkpoint
//! (MatBERT in the paper) and write one vector per material.
//!
//! Three ways in, two ways out:
//! - `--shards S…` with `--model`: the descriptions stored in the shards are embedded and the
//!   vectors written back into each shard's `text/embedding` with the model name and the sha256 of
//!   its weights (each shard rewritten atomically; a `manifest.json` beside them is rebuilt);
//! - `--shards S…` with `--precomputed PREFIX`: vectors from your own MatBERT pipeline
//!   (`PREFIX.npy` + `PREFIX.ids.txt`) are stored into the shards by material id instead;
//! - `--texts T.jsonl --out PREFIX` (`{"material_id", "description"}` per line): writes
//!   `PREFIX.npy`, `PREFIX.ids.txt` and `PREFIX.meta.json` (model, weights sha256, pooling, and per
//!   material the token count fed to the model and the untruncated count), each atomically.
//!
//! `--device cuda|cuda:N|cuda-sim` runs the BERT forward there (weights uploaded once; one
//! download of the last hidden state per batch); the vectors match the CPU's within the
//! tolerance `tests/text_bert.rs` states.

use crate::shard::manifest::{file_sha256, Manifest, MANIFEST_FILE};
use crate::shard::{EmbeddingSpec, ShardData, ShardWriter};
use crate::engine::Device;
use crate::text::{npy, Pooling, TextEncoder};
use anyhow::{bail, Context, Result};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory in the Hugging Face layout: config.json, tokenizer.json or vocab.txt,
    /// model.safetensors.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Shards whose descriptions are embedded (or which receive --precomputed vectors); each is
    /// rewritten in place, atomically.
    #[arg(long, value_name = "SHARD", num_args = 1.., conflicts_with_all = ["texts", "out"])]
    pub shards: Vec<PathBuf>,
    /// JSON-lines file with one {"material_id", "description"} object per line (with --out).
    #[arg(long, value_name = "FILE.jsonl", requires = "out")]
    pub texts: Option<PathBuf>,
    /// Output prefix for --texts: writes PREFIX.npy, PREFIX.ids.txt and PREFIX.meta.json.
    #[arg(long, value_name = "PREFIX", requires = "texts")]
    pub out: Option<PathBuf>,
    /// Store precomputed vectors PREFIX.npy + PREFIX.ids.txt into --shards instead of running a
    /// model (materials are matched by id).
    #[arg(long, value_name = "PREFIX", requires = "shards", conflicts_with = "model")]
    pub precomputed: Option<PathBuf>,
    /// Model name recorded with --precomputed vectors (default: the file name of PREFIX).
    #[arg(long, value_name = "NAME", requires = "precomputed")]
    pub precomputed_model: Option<String>,
    /// How a text's token vectors become one vector: the [CLS] position (the paper) or the mean
    /// over real tokens.
    #[arg(long, value_enum, default_value = "cls")]
    pub pooling: Pooling,
    /// Texts per forward pass (texts are sorted by length first, so padding stays small).
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Validate precomputed embeddings PREFIX.npy + PREFIX.ids.txt and print their size, then exit.
    #[arg(long, value_name = "PREFIX", conflicts_with_all = ["model", "texts", "out", "shards", "precomputed"])]
    pub check_precomputed: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub device: crate::cli::device::DeviceArgs,
}

/// One record of the texts file.
#[derive(Debug, Clone, PartialEq)]
pub struct TextRecord {
    pub material_id: String,
    pub description: String,
}

/// Read a JSON-lines texts file. Stricter than `io::text::read_descriptions_jsonl` on purpose:
/// a line that is not valid UTF-8 is an error naming the record (not replaced lossily — the
/// embedding would silently differ), and an empty description is allowed (it embeds as
/// [CLS] [SEP]). Blank lines are skipped; every other line must be an object with
/// string `material_id` and `description`. Errors name the file, the line and (when readable) the
/// material id: invalid UTF-8, malformed JSON, missing fields, duplicate ids.
pub fn read_texts_jsonl(path: &Path) -> Result<Vec<TextRecord>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading texts file {}", path.display()))?;
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = i + 1;
        let at = || format!("{} line {line_no}", path.display());
        let line = match std::str::from_utf8(raw) {
            Ok(s) => s,
            Err(e) => {
                // Name the record even though the line cannot be decoded: the id usually can.
                let lossy = String::from_utf8_lossy(raw);
                let id = serde_json::from_str::<serde_json::Value>(&lossy)
                    .ok()
                    .and_then(|v| v.get("material_id").and_then(|m| m.as_str()).map(str::to_string));
                bail!(
                    "{}{}: text is not valid UTF-8 (invalid byte at offset {} of the line)",
                    at(),
                    id.map(|id| format!(" (material {id})")).unwrap_or_default(),
                    e.valid_up_to()
                );
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{}: not valid JSON", at()))?;
        let id = v
            .get("material_id")
            .and_then(|m| m.as_str())
            .with_context(|| format!("{}: missing string field material_id", at()))?;
        let description = match v.get("description") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(_) => bail!("{} (material {id}): description is not a string", at()),
            None => match v.get("error") {
                Some(err) => bail!("{} (material {id}): record has no description, only error {err}", at()),
                None => bail!("{} (material {id}): missing field description", at()),
            },
        };
        if id.is_empty() {
            bail!("{}: material_id is empty", at());
        }
        if !seen.insert(id.to_string()) {
            bail!("{} (material {id}): material id appears twice", at());
        }
        out.push(TextRecord { material_id: id.to_string(), description });
    }
    Ok(out)
}

pub fn run(args: Args) -> Result<()> {
    if let Some(prefix) = &args.check_precomputed {
        let (ids, vectors) = npy::read_embeddings(prefix)?;
        println!(
            "{}: {} materials × {} dimensions, all finite, ids unique",
            prefix.display(),
            ids.len(),
            vectors.first().map_or(0, |v| v.len())
        );
        return Ok(());
    }
    let device = args.device.resolve(0)?;
    if !args.shards.is_empty() {
        if let Some(prefix) = &args.precomputed {
            return store_precomputed(&args.shards, prefix, args.precomputed_model.as_deref());
        }
        let model = args.model.as_ref().context("--shards needs --model DIR (or --precomputed PREFIX)")?;
        return embed_shards(&args.shards, model, args.pooling, args.batch_size, args.quiet, device);
    }
    match (&args.model, &args.texts, &args.out) {
        (Some(m), Some(t), Some(o)) => embed_jsonl(m, t, o, args.pooling, args.batch_size, args.quiet, device),
        _ => bail!("give --model DIR with either --shards SHARD… or --texts FILE.jsonl --out PREFIX"),
    }
}

fn load_encoder(model_dir: &Path, device: Device) -> Result<TextEncoder> {
    let t0 = Instant::now();
    let encoder = TextEncoder::load(model_dir)?.to_device(device)?;
    eprintln!(
        "model {} ({} layers, hidden {}, max {} tokens) on {device}, weights sha256 {} — loaded in {:.1} s",
        encoder.name,
        encoder.model.config.num_hidden_layers,
        encoder.dim(),
        encoder.tokenizer.max_len,
        encoder.weights_hash(),
        t0.elapsed().as_secs_f64()
    );
    Ok(encoder)
}

fn embed_jsonl(model_dir: &Path, texts_path: &Path, out: &Path, pooling: Pooling, batch_size: usize, quiet: bool, device: Device) -> Result<()> {
    let records = read_texts_jsonl(texts_path)?;
    if records.is_empty() {
        bail!("{}: no records", texts_path.display());
    }
    let encoder = load_encoder(model_dir, device)?;
    let texts: Vec<&str> = records.iter().map(|r| r.description.as_str()).collect();
    let tokens = encoder
        .tokenize_all(&texts)
        .with_context(|| format!("tokenising {}", texts_path.display()))?;
    let t1 = Instant::now();
    let embedded = encoder.embed_tokens(&tokens, pooling, batch_size, !quiet)?;
    let secs = t1.elapsed().as_secs_f64();
    let n_truncated = embedded.iter().filter(|e| e.untruncated_len > e.n_tokens).count();

    let ids: Vec<String> = records.iter().map(|r| r.material_id.clone()).collect();
    let meta = serde_json::json!({
        "model": encoder.name,
        "model_dir": model_dir.display().to_string(),
        "weights_sha256": encoder.weights_hash(),
        "pooling": pooling.name(),
        "dim": encoder.dim(),
        "max_tokens": encoder.tokenizer.max_len,
        "texts": texts_path.display().to_string(),
        "records": records.iter().zip(&embedded).map(|(r, e)| serde_json::json!({
            "material_id": r.material_id, "tokens": e.n_tokens, "untruncated_tokens": e.untruncated_len,
        })).collect::<Vec<_>>(),
    });
    let (npy_path, _) = npy::embedding_paths(out);
    let meta_path = npy_path.with_extension("meta.json");
    crate::atomic::write_bytes(&meta_path, serde_json::to_string_pretty(&meta)?.as_bytes())?;
    let vectors: Vec<Vec<f32>> = embedded.into_iter().map(|e| e.vector).collect();
    let (npy_path, ids_path) = npy::write_embeddings(out, &ids, &vectors)?;
    eprintln!(
        "embedded {} texts in {:.1} s ({:.1} texts/s), {} truncated to {} tokens; wrote {}, {}, {}",
        ids.len(),
        secs,
        ids.len() as f64 / secs.max(1e-9),
        n_truncated,
        encoder.tokenizer.max_len,
        npy_path.display(),
        ids_path.display(),
        meta_path.display()
    );
    Ok(())
}

/// Embed every shard's stored descriptions and write the vectors back. Records without a
/// description get no embedding (any older one, from another model, is dropped: a shard holds
/// one embedding model).
fn embed_shards(shards: &[PathBuf], model_dir: &Path, pooling: Pooling, batch_size: usize, quiet: bool, device: Device) -> Result<()> {
    let encoder = load_encoder(model_dir, device)?;
    let spec = EmbeddingSpec {
        model: encoder.name.clone(),
        weights_sha256: encoder.weights_hash().to_string(),
        dim: encoder.dim(),
    };
    for path in shards {
        let data = ShardData::load(path)?;
        let mut records = data.records();
        let with_text: Vec<usize> = (0..records.len()).filter(|&i| records[i].text.is_some()).collect();
        let texts: Vec<&str> = with_text.iter().map(|&i| records[i].text.as_deref().unwrap_or("")).collect();
        let tokens = encoder.tokenize_all(&texts).with_context(|| format!("tokenising descriptions of {}", path.display()))?;
        let t0 = Instant::now();
        let embedded = encoder
            .embed_tokens(&tokens, pooling, batch_size, !quiet)
            .with_context(|| format!("embedding descriptions of {}", path.display()))?;
        for r in records.iter_mut() {
            r.text_embedding = None;
        }
        for (&i, e) in with_text.iter().zip(embedded) {
            records[i].text_embedding = Some(crate::material::TextEmbedding { vector: e.vector, model: spec.model.clone() });
        }
        let mut meta = data.meta.clone();
        meta.text_embedding = Some(spec.clone());
        ShardWriter::new(meta).write(path, &records)?;
        let truncated = tokens.iter().filter(|t| t.truncated()).count();
        eprintln!(
            "{}: embedded {} of {} records in {:.1} s ({truncated} truncated to {} tokens)",
            path.display(),
            with_text.len(),
            records.len(),
            t0.elapsed().as_secs_f64(),
            encoder.tokenizer.max_len
        );
    }
    rebuild_manifests(shards)
}

/// Store precomputed vectors into shards by material id.
fn store_precomputed(shards: &[PathBuf], prefix: &Path, model: Option<&str>) -> Result<()> {
    let (ids, vectors) = npy::read_embeddings(prefix)?;
    let dim = vectors.first().map_or(0, |v| v.len());
    let model = model.map(str::to_string).unwrap_or_else(|| {
        let (npy_path, _) = npy::embedding_paths(prefix);
        npy_path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "precomputed".into())
    });
    // Weights of an outside pipeline are unknown: the spec records "" then.
    let spec = EmbeddingSpec { model: model.clone(), weights_sha256: String::new(), dim };
    let by_id: HashMap<&str, &Vec<f32>> = ids.iter().map(String::as_str).zip(&vectors).collect();
    let mut used = 0;
    for path in shards {
        let data = ShardData::load(path)?;
        let mut records = data.records();
        let mut hits = 0;
        for r in records.iter_mut() {
            r.text_embedding = by_id
                .get(r.id.as_str())
                .map(|v| crate::material::TextEmbedding { vector: (*v).clone(), model: model.clone() });
            hits += r.text_embedding.is_some() as usize;
        }
        let mut meta = data.meta.clone();
        meta.text_embedding = Some(spec.clone());
        ShardWriter::new(meta).write(path, &records)?;
        used += hits;
        eprintln!("{}: stored {hits} of {} records' vectors from {}", path.display(), records.len(), prefix.display());
    }
    eprintln!("{used} of {} precomputed vectors matched a shard record", ids.len());
    rebuild_manifests(shards)
}

/// Rebuild `manifest.json` in every directory of `shards` that has one (shard sha256s and record
/// checksums changed), from the shards it lists.
fn rebuild_manifests(shards: &[PathBuf]) -> Result<()> {
    let dirs: HashSet<PathBuf> = shards
        .iter()
        .map(|p| p.parent().map(Path::to_path_buf).unwrap_or_default())
        .collect();
    for dir in dirs {
        let path = dir.join(MANIFEST_FILE);
        if !path.is_file() {
            continue;
        }
        let old = Manifest::read(&path)?;
        let mut new = Manifest::new(old.preprocess_params.clone(), old.graph_params.clone());
        new.rejects = old.rejects;
        for s in &old.shards {
            let shard = dir.join(&s.file);
            let data = ShardData::load(&shard).with_context(|| format!("rebuilding {}", path.display()))?;
            new.add_shard(&s.file, &data, file_sha256(&shard)?);
        }
        new.write(&path)?;
        eprintln!("rebuilt {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_errors_name_the_line_and_material() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.jsonl");
        let mut bytes = b"{\"material_id\": \"mp-1\", \"description\": \"ok\"}\n\n".to_vec();
        bytes.extend_from_slice(b"{\"material_id\": \"mp-2\", \"description\": \"bad \xff byte\"}\n");
        std::fs::write(&p, &bytes).unwrap();
        let e = format!("{:#}", read_texts_jsonl(&p).unwrap_err());
        assert!(e.contains("line 3") && e.contains("mp-2") && e.contains("UTF-8"), "{e}");

        std::fs::write(&p, "{\"material_id\": \"mp-1\", \"description\": \"\"}\n{\"material_id\": \"mp-1\", \"description\": \"x\"}\n").unwrap();
        let e = format!("{:#}", read_texts_jsonl(&p).unwrap_err());
        assert!(e.contains("line 2") && e.contains("twice"), "{e}");

        std::fs::write(&p, "{\"material_id\": \"mp-9\", \"error\": \"robocrys failed\"}\n").unwrap();
        let e = format!("{:#}", read_texts_jsonl(&p).unwrap_err());
        assert!(e.contains("line 1") && e.contains("mp-9") && e.contains("robocrys failed"), "{e}");
    }

    #[test]
    fn reads_the_real_robocrys_descriptions() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/text/mp-multimodal-robocrys.jsonl");
        let recs = read_texts_jsonl(&p).unwrap();
        assert_eq!(recs.len(), 85);
        assert_eq!(recs[0].material_id, "mp-1000");
        assert!(recs[0].description.contains("Fm̅3m"));
    }
}
