//! Checkpoints: tensors in safetensors (readable from PyTorch), metadata in JSON beside them.
//!
//! A checkpoint `step-00000120` is two files, `step-00000120.safetensors` and
//! `step-00000120.json`, both written atomically; the JSON is written *last*, so a checkpoint is
//! complete exactly when its JSON exists and names the SHA-256 of its safetensors file. A rank
//! killed mid-write leaves at most a `.partial` temporary, never a corrupt checkpoint; `latest`
//! skips anything incomplete or whose hash does not match.

use crate::atomic;
use crate::engine::{Module, Tensor};
use anyhow::{bail, Context, Result};
use safetensors::tensor::{Dtype, TensorView};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Named f32 tensors: name → (shape, values). BTreeMap so the file layout is deterministic.
pub type NamedTensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Every parameter (`param.NAME`) and buffer (`buffer.NAME`) of `module`, copied to the host
/// from whatever device it lives on.
pub fn module_tensors<M: Module + ?Sized>(module: &mut M) -> Result<NamedTensors> {
    let mut t = NamedTensors::new();
    let mut err: Option<anyhow::Error> = None;
    module.visit_params(&mut |p| match p.value.to_host() {
        Ok(v) => {
            t.insert(format!("param.{}", p.name), (p.value.shape.clone(), v));
        }
        Err(e) => {
            err.get_or_insert(e.context(format!("copying parameter {} to the host", p.name)));
        }
    });
    module.visit_buffers(&mut |name, b| match b.to_host() {
        Ok(v) => {
            t.insert(format!("buffer.{name}"), (b.shape.clone(), v));
        }
        Err(e) => {
            err.get_or_insert(e.context(format!("copying buffer {name} to the host")));
        }
    });
    err.map_or(Ok(t), Err)
}

/// Puts tensors named as [`module_tensors`] names them back into `module`, each on the device its
/// parameter or buffer lives on (shapes checked; a missing name is an error).
pub fn set_module_tensors<M: Module + ?Sized>(module: &mut M, t: &NamedTensors) -> Result<()> {
    let mut err: Option<anyhow::Error> = None;
    let mut put = |key: String, dst: &mut Tensor| {
        if err.is_some() {
            return;
        }
        let r = match t.get(&key) {
            Some((shape, v)) if *shape == dst.shape => Tensor::from_vec(shape, v.clone()).to_device(dst.device()),
            Some((shape, _)) => Err(anyhow::anyhow!("{key} has shape {shape:?}, the model expects {:?}", dst.shape)),
            None => Err(anyhow::anyhow!("no tensor {key}")),
        };
        match r {
            Ok(v) => *dst = v,
            Err(e) => err = Some(e),
        }
    };
    module.visit_params(&mut |p| put(format!("param.{}", p.name), &mut p.value));
    module.visit_buffers(&mut |name, b| put(format!("buffer.{name}"), b));
    err.map_or(Ok(()), Err)
}

/// File stem of the checkpoint at `step`.
pub fn stem(step: u64) -> String {
    format!("step-{step:08}")
}

/// Write a checkpoint into `dir`; returns the JSON path. `meta` gets `step`, `tensors_file` and
/// `tensors_sha256` added. Keeps the newest `keep_last` complete checkpoints (0 = keep all).
pub fn save(dir: &Path, step: u64, tensors: &NamedTensors, mut meta: serde_json::Value, keep_last: usize) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating checkpoint directory {}", dir.display()))?;
    let file_stem = stem(step);
    let st_path = dir.join(format!("{file_stem}.safetensors"));
    let json_path = dir.join(format!("{file_stem}.json"));

    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(name, (shape, values))| {
            let b: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), b, shape.clone())
        })
        .collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(n, b, s)| Ok((n.clone(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<_, safetensors::SafeTensorError>>()
        .map_err(|e| anyhow::anyhow!("building tensor views: {e:?}"))?;
    let serialized = safetensors::tensor::serialize(views, &None).map_err(|e| anyhow::anyhow!("serialising checkpoint: {e:?}"))?;
    let sha = hex::encode(Sha256::digest(&serialized));
    atomic::write_bytes(&st_path, &serialized)?;

    let obj = meta.as_object_mut().context("checkpoint metadata must be a JSON object")?;
    obj.insert("step".into(), step.into());
    obj.insert("tensors_file".into(), format!("{file_stem}.safetensors").into());
    obj.insert("tensors_sha256".into(), sha.into());
    atomic::write_bytes(&json_path, serde_json::to_string_pretty(&meta)?.as_bytes())?;

    if keep_last > 0 {
        let mut steps = complete_steps(dir)?;
        steps.sort_unstable();
        let drop = steps.len().saturating_sub(keep_last);
        for s in &steps[..drop] {
            let st = stem(*s);
            // JSON first, so a crash in between leaves an incomplete (ignored) checkpoint.
            let _ = std::fs::remove_file(dir.join(format!("{st}.json")));
            let _ = std::fs::remove_file(dir.join(format!("{st}.safetensors")));
        }
    }
    Ok(json_path)
}

/// Steps of checkpoints in `dir` whose JSON exists (hash not yet verified).
fn complete_steps(dir: &Path) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Some(num) = name.strip_prefix("step-").and_then(|r| r.strip_suffix(".json")) {
            if let Ok(s) = num.parse::<u64>() {
                out.push(s);
            }
        }
    }
    Ok(out)
}

/// A loaded checkpoint.
pub struct Checkpoint {
    pub json_path: PathBuf,
    pub meta: serde_json::Value,
    pub tensors: NamedTensors,
}

impl Checkpoint {
    pub fn step(&self) -> u64 {
        self.meta["step"].as_u64().unwrap_or(0)
    }

    /// A tensor by name with the expected shape, or an error naming the checkpoint.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<&[f32]> {
        match self.tensors.get(name) {
            None => bail!("{}: no tensor {name:?} in checkpoint", self.json_path.display()),
            Some((s, v)) if s.as_slice() == shape => Ok(v),
            Some((s, _)) => bail!("{}: tensor {name:?} has shape {s:?}, model expects {shape:?}", self.json_path.display()),
        }
    }
}

/// Load the checkpoint whose JSON is at `json_path`, verifying the tensors' hash.
pub fn load(json_path: &Path) -> Result<Checkpoint> {
    let text = std::fs::read_to_string(json_path).with_context(|| format!("reading checkpoint {}", json_path.display()))?;
    let meta: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parsing checkpoint metadata {}", json_path.display()))?;
    let file = meta["tensors_file"].as_str().with_context(|| format!("{}: no tensors_file", json_path.display()))?;
    let st_path = json_path.parent().unwrap_or(Path::new(".")).join(file);
    let bytes = std::fs::read(&st_path).with_context(|| format!("reading {}", st_path.display()))?;
    let sha = hex::encode(Sha256::digest(&bytes));
    if Some(sha.as_str()) != meta["tensors_sha256"].as_str() {
        bail!("{}: checksum mismatch (file corrupt or from another checkpoint)", st_path.display());
    }
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| anyhow::anyhow!("{}: {e:?}", st_path.display()))?;
    let mut tensors = NamedTensors::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            bail!("{}: tensor {name} has dtype {:?}, expected F32", st_path.display(), view.dtype());
        }
        let values: Vec<f32> = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        tensors.insert(name, (view.shape().to_vec(), values));
    }
    Ok(Checkpoint { json_path: json_path.to_path_buf(), meta, tensors })
}

/// Whether `dir` holds any checkpoint (complete or damaged).
pub fn any(dir: &Path) -> Result<bool> {
    Ok(!complete_steps(dir)?.is_empty())
}

/// The newest complete, hash-valid checkpoint in `dir`; `None` when there is none at all.
/// Damaged ones are reported on stderr and skipped (an older good one is better than none);
/// when every checkpoint is damaged that is an error naming each — never a silent fresh start.
pub fn latest(dir: &Path) -> Result<Option<Checkpoint>> {
    let mut steps = complete_steps(dir)?;
    steps.sort_unstable_by(|a, b| b.cmp(a));
    let mut damaged = Vec::new();
    for s in steps {
        let p = dir.join(format!("{}.json", stem(s)));
        match load(&p) {
            Ok(c) => return Ok(Some(c)),
            Err(e) => {
                eprintln!("warning: skipping damaged checkpoint: {e:#}");
                damaged.push(format!("{e:#}"));
            }
        }
    }
    if !damaged.is_empty() {
        bail!(
            "{} holds {} checkpoint(s) and none is usable:\n  {}\nmove them away to start over, or restore them from a backup",
            dir.display(),
            damaged.len(),
            damaged.join("\n  ")
        );
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(v: f32) -> NamedTensors {
        let mut t = NamedTensors::new();
        t.insert("a.weight".into(), (vec![2, 3], (0..6).map(|i| i as f32 * v).collect()));
        t.insert("a.bias".into(), (vec![2], vec![v, -v]));
        t
    }

    #[test]
    fn round_trip_retention_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        for step in 1..=4u64 {
            save(dir.path(), step, &sample(step as f32), serde_json::json!({"epoch": step}), 2).unwrap();
        }
        let c = latest(dir.path()).unwrap().unwrap();
        assert_eq!(c.step(), 4);
        assert_eq!(c.tensor("a.bias", &[2]).unwrap(), &[4.0, -4.0]);
        assert!(c.tensor("a.bias", &[3]).is_err());
        assert!(!dir.path().join("step-00000001.json").exists(), "retention keeps only the last 2");
        assert!(dir.path().join("step-00000003.json").exists());
        // Corrupt the newest: latest falls back to step 3.
        let st = dir.path().join("step-00000004.safetensors");
        let mut b = std::fs::read(&st).unwrap();
        let n = b.len();
        b[n - 1] ^= 0xff;
        std::fs::write(&st, b).unwrap();
        assert!(load(&dir.path().join("step-00000004.json")).is_err());
        assert_eq!(latest(dir.path()).unwrap().unwrap().step(), 3);
    }

    #[test]
    fn tensors_without_json_are_not_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), 5, &sample(1.0), serde_json::json!({}), 0).unwrap();
        std::fs::remove_file(dir.path().join("step-00000005.json")).unwrap();
        assert!(latest(dir.path()).unwrap().is_none());
    }
}
