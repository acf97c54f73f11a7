//! Checkpoints: tensors in safetensors (readable from PyTorch), metadata in JSON beside them.
//!
//! A checkpoint `step-00000120` is `step-00000120.safetensors` (the weights: parameters and
//! buffers), `step-00000120.optim.safetensors` (the optimiser state, `adamw.*` tensors, only when
//! there is any) and `step-00000120.json`, each written atomically; the JSON is written *last*,
//! so a checkpoint is complete exactly when its JSON exists and names the SHA-256 of its files.
//! The weights file holds weights only, so its hash (`tensors_sha256`) identifies the model
//! whatever the optimiser state, and a user who wants the weights copies one file. A rank killed
//! mid-write leaves at most a `.partial` temporary, never a corrupt checkpoint; `latest` skips
//! anything incomplete or whose hashes do not match. Checkpoints written before the split (AdamW
//! moments inside the weights file) load unchanged.

use crate::atomic;
use crate::engine::optim::AdamW;
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

/// AdamW's moments as `adamw.NAME.exp_avg` / `adamw.NAME.exp_avg_sq`, copied to the host.
pub fn optimizer_tensors(adam: &mut AdamW) -> Result<NamedTensors> {
    let mut t = NamedTensors::new();
    let mut err: Option<anyhow::Error> = None;
    adam.visit_state(&mut |name, s| match s.to_host() {
        Ok(v) => {
            t.insert(format!("{OPTIMIZER_PREFIX}{name}"), (s.shape.clone(), v));
        }
        Err(e) => {
            err.get_or_insert(e.context(format!("copying AdamW moment {name} to the host")));
        }
    });
    err.map_or(Ok(t), Err)
}

/// Puts the moments saved by [`optimizer_tensors`] back into `adam` (whose state must already
/// exist, `init_state`), each on its parameter's device; shapes checked, a missing one an error
/// naming the checkpoint.
pub fn set_optimizer_tensors(adam: &mut AdamW, c: &Checkpoint) -> Result<()> {
    let mut err: Option<anyhow::Error> = None;
    adam.visit_state(&mut |name, s| {
        if err.is_none() {
            match c.tensor(&format!("{OPTIMIZER_PREFIX}{name}"), &s.shape.clone()).and_then(|v| Tensor::from_vec(&s.shape, v.to_vec()).to_device(s.device())) {
                Ok(v) => *s = v,
                Err(e) => err = Some(e),
            }
        }
    });
    err.map_or(Ok(()), Err)
}

/// File stem of the checkpoint at `step`.
pub fn stem(step: u64) -> String {
    format!("step-{step:08}")
}

/// Name prefix of optimiser-state tensors; they go to the `.optim.safetensors` file.
pub const OPTIMIZER_PREFIX: &str = "adamw.";

/// `tensors` as one safetensors file (sorted by name, so equal tensors give equal bytes) and its
/// hex SHA-256.
fn serialize(tensors: &[(&String, &(Vec<usize>, Vec<f32>))]) -> Result<(Vec<u8>, String)> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(name, (shape, values))| {
            let b: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            ((*name).clone(), b, shape.clone())
        })
        .collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(n, b, s)| Ok((n.clone(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<_, safetensors::SafeTensorError>>()
        .map_err(|e| anyhow::anyhow!("building tensor views: {e:?}"))?;
    let serialized = safetensors::tensor::serialize(views, &None).map_err(|e| anyhow::anyhow!("serialising checkpoint: {e:?}"))?;
    let sha = hex::encode(Sha256::digest(&serialized));
    Ok((serialized, sha))
}

/// Write a checkpoint into `dir`; returns the JSON path. Tensors named `adamw.*` go to the
/// optimiser file, the rest to the weights file. `meta` gets `step`, `tensors_file`,
/// `tensors_sha256` (and `optimizer_file`, `optimizer_sha256` when there is optimiser state)
/// added. Keeps the newest `keep_last` complete checkpoints (0 = keep all).
pub fn save(dir: &Path, step: u64, tensors: &NamedTensors, mut meta: serde_json::Value, keep_last: usize) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating checkpoint directory {}", dir.display()))?;
    let file_stem = stem(step);
    let st_path = dir.join(format!("{file_stem}.safetensors"));
    let optim_path = dir.join(format!("{file_stem}.optim.safetensors"));
    let json_path = dir.join(format!("{file_stem}.json"));

    let (optim, weights): (Vec<_>, Vec<_>) = tensors.iter().partition(|(name, _)| name.starts_with(OPTIMIZER_PREFIX));
    let (serialized, sha) = serialize(&weights)?;
    atomic::write_bytes(&st_path, &serialized)?;
    let obj = meta.as_object_mut().context("checkpoint metadata must be a JSON object")?;
    if optim.is_empty() {
        // A stale optimiser file of an earlier save at this step would not be named: remove it.
        let _ = std::fs::remove_file(&optim_path);
    } else {
        let (serialized, sha) = serialize(&optim)?;
        atomic::write_bytes(&optim_path, &serialized)?;
        obj.insert("optimizer_file".into(), format!("{file_stem}.optim.safetensors").into());
        obj.insert("optimizer_sha256".into(), sha.into());
    }
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
            let _ = std::fs::remove_file(dir.join(format!("{st}.optim.safetensors")));
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

/// Load the checkpoint whose JSON is at `json_path`, verifying its files' hashes; the optimiser
/// state (if the checkpoint has any) is merged into `tensors` under its `adamw.*` names.
pub fn load(json_path: &Path) -> Result<Checkpoint> {
    let text = std::fs::read_to_string(json_path).with_context(|| format!("reading checkpoint {}", json_path.display()))?;
    let meta: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parsing checkpoint metadata {}", json_path.display()))?;
    let dir = json_path.parent().unwrap_or(Path::new("."));
    let file = meta["tensors_file"].as_str().with_context(|| format!("{}: no tensors_file", json_path.display()))?;
    let mut tensors = NamedTensors::new();
    read_tensor_file(&dir.join(file), meta["tensors_sha256"].as_str(), &mut tensors)?;
    if let Some(optim) = meta.get("optimizer_file").and_then(|v| v.as_str()) {
        read_tensor_file(&dir.join(optim), meta["optimizer_sha256"].as_str(), &mut tensors)?;
    }
    Ok(Checkpoint { json_path: json_path.to_path_buf(), meta, tensors })
}

/// Read one safetensors file of a checkpoint into `into`, refusing a hash other than `sha256`
/// and any tensor that is not F32.
fn read_tensor_file(path: &Path, sha256: Option<&str>, into: &mut NamedTensors) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let sha = hex::encode(Sha256::digest(&bytes));
    if Some(sha.as_str()) != sha256 {
        bail!("{}: checksum mismatch (file corrupt or from another checkpoint)", path.display());
    }
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| anyhow::anyhow!("{}: {e:?}", path.display()))?;
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            bail!("{}: tensor {name} has dtype {:?}, expected F32", path.display(), view.dtype());
        }
        let values: Vec<f32> = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        into.insert(name, (view.shape().to_vec(), values));
    }
    Ok(())
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

/// Refuses to resume from the checkpoint at `json_path` when the config it recorded (`recorded`;
/// null for checkpoints of the first format, which recorded none) differs from `now` (the config
/// as JSON) in any key other than `resumable` (a key or a section prefix), naming every such key
/// with both values: a resume under another config would silently mix two runs.
pub fn refuse_config_change(json_path: &Path, recorded: &serde_json::Value, now: &serde_json::Value, resumable: &[&str]) -> Result<()> {
    if recorded.is_null() {
        return Ok(());
    }
    let mut was = BTreeMap::new();
    let mut is = BTreeMap::new();
    flatten_json("", recorded, &mut was);
    flatten_json("", now, &mut is);
    let keys: std::collections::BTreeSet<&String> = was.keys().chain(is.keys()).collect();
    let differ: Vec<String> = keys
        .into_iter()
        .filter(|k| !resumable.iter().any(|r| k.as_str() == *r || k.starts_with(&format!("{r}."))))
        .filter(|k| was.get(*k) != is.get(*k))
        .map(|k| {
            let show = |v: Option<&serde_json::Value>| v.map_or("(absent)".to_string(), |v| v.to_string());
            format!("{k}: {} in the checkpoint, {} now", show(was.get(k)), show(is.get(k)))
        })
        .collect();
    if !differ.is_empty() {
        bail!(
            "{}: this checkpoint was trained with a different config, so resuming would mix two runs:\n  {}\n\
             use the checkpoint's config (config.resolved.toml beside it), or choose another run.out_dir; \
             only {} may change on resume",
            json_path.display(),
            differ.join("\n  "),
            resumable.join(", ")
        );
    }
    Ok(())
}

/// `a.b.c` → leaf value, arrays kept whole (they are compared as one value).
fn flatten_json(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, serde_json::Value>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten_json(&key, x, out);
            }
        }
        _ => {
            out.insert(prefix.to_string(), v.clone());
        }
    }
}

/// Keeps the lines of a JSON-lines log (`metrics.jsonl`) whose integer field `key` is `<= last`
/// (rewritten atomically) and returns how many were removed; an unparsable line (a write cut by
/// a kill) is removed too. A resumed run calls it so the log holds exactly the work behind the
/// state it continues from.
pub fn truncate_jsonl_after(path: &Path, key: &str, last: u64) -> Result<usize> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut kept = String::with_capacity(text.len());
    let mut dropped = 0;
    for line in text.lines() {
        let value = serde_json::from_str::<serde_json::Value>(line).ok().and_then(|v| v[key].as_u64());
        match value {
            Some(s) if s <= last => {
                kept.push_str(line);
                kept.push('\n');
            }
            _ => dropped += 1,
        }
    }
    if dropped > 0 {
        atomic::write_bytes(path, kept.as_bytes())?;
    }
    Ok(dropped)
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

    #[test]
    fn optimiser_state_has_its_own_file_and_the_weights_hash_ignores_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = sample(1.0);
        t.insert("adamw.a.bias.exp_avg".into(), (vec![2], vec![0.5, 0.25]));
        save(&dir.path().join("x"), 1, &t, serde_json::json!({}), 0).unwrap();
        let mut t2 = sample(1.0);
        t2.insert("adamw.a.bias.exp_avg".into(), (vec![2], vec![9.0, 9.0]));
        save(&dir.path().join("y"), 1, &t2, serde_json::json!({}), 0).unwrap();
        let x = load(&dir.path().join("x/step-00000001.json")).unwrap();
        let y = load(&dir.path().join("y/step-00000001.json")).unwrap();
        assert_eq!(x.meta["tensors_sha256"], y.meta["tensors_sha256"], "same weights, same weights hash");
        assert_ne!(x.meta["optimizer_sha256"], y.meta["optimizer_sha256"]);
        assert_eq!(x.tensors, t, "weights and optimiser state come back together");
        // The weights file alone holds no optimiser tensor.
        let bytes = std::fs::read(dir.path().join("x/step-00000001.safetensors")).unwrap();
        let names: Vec<String> = safetensors::SafeTensors::deserialize(&bytes).unwrap().names().into_iter().cloned().collect();
        assert!(names.iter().all(|n| !n.starts_with(OPTIMIZER_PREFIX)), "{names:?}");
        // A damaged optimiser file makes the checkpoint unusable, named.
        let optim = dir.path().join("x/step-00000001.optim.safetensors");
        let mut b = std::fs::read(&optim).unwrap();
        let n = b.len();
        b[n - 1] ^= 0xff;
        std::fs::write(&optim, b).unwrap();
        let e = load(&dir.path().join("x/step-00000001.json")).err().unwrap();
        assert!(format!("{e:#}").contains("step-00000001.optim.safetensors: checksum mismatch"), "{e:#}");
        // Retention removes the optimiser file with its checkpoint.
        save(&dir.path().join("y"), 2, &t2, serde_json::json!({}), 1).unwrap();
        assert!(!dir.path().join("y/step-00000001.optim.safetensors").exists());
        assert!(dir.path().join("y/step-00000002.optim.safetensors").exists());
    }

    #[test]
    fn checkpoints_with_the_moments_inside_the_weights_file_still_load() {
        // The layout before the optimiser file existed: one safetensors file with everything.
        let dir = tempfile::tempdir().unwrap();
        let mut t = sample(2.0);
        t.insert("adamw.a.bias.exp_avg_sq".into(), (vec![2], vec![1.0, 4.0]));
        let all: Vec<_> = t.iter().collect();
        let (bytes, sha) = serialize(&all).unwrap();
        std::fs::write(dir.path().join("step-00000003.safetensors"), bytes).unwrap();
        let meta = serde_json::json!({"step": 3, "tensors_file": "step-00000003.safetensors", "tensors_sha256": sha});
        std::fs::write(dir.path().join("step-00000003.json"), meta.to_string()).unwrap();
        let c = latest(dir.path()).unwrap().unwrap();
        assert_eq!(c.tensors, t);
    }
}
