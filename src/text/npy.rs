//! Embeddings as a pair of files: `PREFIX.npy` (a 2-D little-endian float32 array, C order, one row
//! per material) and `PREFIX.ids.txt` (one material id per line, same order) — the form in which
//! users with their own MatBERT pipeline bring vectors (`../shared/data/mp-multimodal/text/`).
//! Writing goes through `ndarray-npy` (the crate `io::npy` already uses to read) inside an atomic
//! temp-file + rename; reading is `io::npy::read_embeddings`, with its row/id/finite checks.

use crate::atomic::write_with;
use anyhow::{bail, Context, Result};
use ndarray::Array2;
use ndarray_npy::WriteNpyExt;
use std::path::{Path, PathBuf};

/// `PREFIX.npy` and `PREFIX.ids.txt` for a prefix path (a trailing `.npy` is ignored).
pub fn embedding_paths(prefix: &Path) -> (PathBuf, PathBuf) {
    let s = prefix.as_os_str().to_string_lossy();
    let s = s.strip_suffix(".npy").unwrap_or(&s).to_string();
    (PathBuf::from(format!("{s}.npy")), PathBuf::from(format!("{s}.ids.txt")))
}

/// Write vectors (all of one length) and their ids as `PREFIX.npy` + `PREFIX.ids.txt`, each
/// atomically, the array first (so a complete ids file implies a complete array).
pub fn write_embeddings(prefix: &Path, ids: &[String], vectors: &[Vec<f32>]) -> Result<(PathBuf, PathBuf)> {
    if ids.len() != vectors.len() {
        bail!("write_embeddings: {} ids for {} vectors", ids.len(), vectors.len());
    }
    if let Some(bad) = ids.iter().find(|id| id.trim().is_empty() || id.contains(['\n', '\r']) || id.trim() != id.as_str()) {
        bail!("material id {bad:?} cannot be written one per line");
    }
    let cols = vectors.first().map_or(0, |v| v.len());
    if let Some(i) = vectors.iter().position(|v| v.len() != cols) {
        bail!("vector for {} has {} values, the first has {cols}", ids[i], vectors[i].len());
    }
    let flat: Vec<f32> = vectors.iter().flatten().copied().collect();
    let matrix = Array2::from_shape_vec((vectors.len(), cols), flat).context("shaping the embeddings matrix")?;
    let (npy, idf) = embedding_paths(prefix);
    write_with(&npy, |tmp| {
        let f = std::io::BufWriter::new(std::fs::File::create(tmp)?);
        matrix.write_npy(f).context("encoding .npy")?;
        Ok(())
    })?;
    let text: String = ids.iter().map(|id| format!("{id}\n")).collect();
    crate::atomic::write_bytes(&idf, text.as_bytes())?;
    Ok((npy, idf))
}

/// Read `PREFIX.npy` + `PREFIX.ids.txt` (checked by `io::npy::read_embeddings`).
pub fn read_embeddings(prefix: &Path) -> Result<(Vec<String>, Vec<Vec<f32>>)> {
    let (npy, idf) = embedding_paths(prefix);
    Ok(crate::io::npy::read_embeddings(&npy, &idf)?.into_iter().unzip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_embeddings_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let ids = vec!["mp-1".to_string(), "mp-2".to_string()];
        let vecs = vec![vec![1.0, -2.5, 3.25], vec![0.0, 1e-30, -7.0]];
        let (npy, idf) = write_embeddings(&dir.path().join("emb"), &ids, &vecs).unwrap();
        assert!(npy.ends_with("emb.npy") && idf.ends_with("emb.ids.txt"));
        let bytes = std::fs::read(&npy).unwrap();
        assert_eq!(&bytes[..6], b"\x93NUMPY");
        assert_eq!(read_embeddings(&dir.path().join("emb.npy")).unwrap(), (ids, vecs));
        // Only the two files: no temporaries left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn ragged_vectors_and_unwritable_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e");
        assert!(write_embeddings(&p, &["a".into(), "b".into()], &[vec![1.0], vec![1.0, 2.0]]).is_err());
        assert!(write_embeddings(&p, &["a\nb".into()], &[vec![1.0]]).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written on refusal");
    }
}
