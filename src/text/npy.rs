//! Embeddings as a pair of files: `PREFIX.npy` (a 2-D little-endian float32 array, NumPy format
//! 1.0, C order, one row per material) and `PREFIX.ids.txt` (one material id per line, same
//! order) — the form in which users with their own MatBERT pipeline bring vectors
//! (`../shared/data/mp-multimodal/text/matbert_cls_768.*`). Written atomically; read with checks on
//! the header, the row count against the ids, duplicate ids and non-finite values.
//!
//! The NPY header is a few lines of Python-literal text; we write and parse only the 2-D `<f4`
//! case by hand rather than add a crate (ndarray-npy) for it.

use crate::atomic::write_with;
use anyhow::{bail, Context, Result};
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8] = b"\x93NUMPY";

/// `PREFIX.npy` and `PREFIX.ids.txt` for a prefix path.
pub fn embedding_paths(prefix: &Path) -> (PathBuf, PathBuf) {
    let s = prefix.as_os_str().to_string_lossy();
    let s = s.strip_suffix(".npy").unwrap_or(&s).to_string();
    (PathBuf::from(format!("{s}.npy")), PathBuf::from(format!("{s}.ids.txt")))
}

/// NPY 1.0 bytes of a (rows, cols) float32 array.
pub fn npy_bytes_f32(data: &[f32], rows: usize, cols: usize) -> Vec<u8> {
    assert_eq!(data.len(), rows * cols, "npy_bytes_f32: {} values for {rows}×{cols}", data.len());
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Header (magic 6 + version 2 + length 2 + dict + padding + '\n') is a multiple of 64 bytes.
    let unpadded = MAGIC.len() + 2 + 2 + dict.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    let header_len = dict.len() + pad + 1;
    let mut out = Vec::with_capacity(unpadded + pad + data.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header_len as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.extend(std::iter::repeat_n(b' ', pad));
    out.push(b'\n');
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Write vectors (all of one length) and their ids as `PREFIX.npy` + `PREFIX.ids.txt`, each
/// atomically (ids last, so a complete ids file implies a complete array).
pub fn write_embeddings(prefix: &Path, ids: &[String], vectors: &[Vec<f32>]) -> Result<(PathBuf, PathBuf)> {
    if ids.len() != vectors.len() {
        bail!("write_embeddings: {} ids for {} vectors", ids.len(), vectors.len());
    }
    if let Some(bad) = ids.iter().find(|id| id.is_empty() || id.contains(['\n', '\r'])) {
        bail!("material id {bad:?} cannot be written one per line");
    }
    let cols = vectors.first().map_or(0, |v| v.len());
    if let Some(i) = vectors.iter().position(|v| v.len() != cols) {
        bail!("vector for {} has {} values, the first has {cols}", ids[i], vectors[i].len());
    }
    let flat: Vec<f32> = vectors.iter().flatten().copied().collect();
    let (npy, idf) = embedding_paths(prefix);
    let bytes = npy_bytes_f32(&flat, vectors.len(), cols);
    write_with(&npy, |tmp| {
        let mut f = std::fs::File::create(tmp)?;
        f.write_all(&bytes)?;
        Ok(())
    })?;
    let mut text = String::new();
    for id in ids {
        text.push_str(id);
        text.push('\n');
    }
    crate::atomic::write_bytes(&idf, text.as_bytes())?;
    Ok((npy, idf))
}

/// Read a 2-D `<f4` NPY file: (rows, cols, data).
pub fn read_npy_f32(path: &Path) -> Result<(usize, usize, Vec<f32>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse_npy_f32(&bytes).with_context(|| format!("in NPY file {}", path.display()))
}

fn parse_npy_f32(bytes: &[u8]) -> Result<(usize, usize, Vec<f32>)> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        bail!("not an NPY file (bad magic)");
    }
    let (major, start) = (bytes[6], 10);
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, start),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => bail!("unsupported NPY version {v}"),
    };
    let header = bytes.get(start..start + header_len).context("NPY header runs past the end of the file")?;
    let header = std::str::from_utf8(header).context("NPY header is not text")?;
    let field = |key: &str| -> Result<&str> {
        let at = header.find(&format!("'{key}'")).with_context(|| format!("NPY header lacks '{key}': {header}"))?;
        let rest = header[at + key.len() + 2..].trim_start();
        Ok(rest.strip_prefix(':').context("malformed NPY header")?.trim_start())
    };
    let descr = field("descr")?;
    if !(descr.starts_with("'<f4'") || descr.starts_with("'float32'")) {
        bail!("NPY dtype is {}, expected little-endian float32 '<f4'", descr.split(',').next().unwrap_or(descr));
    }
    if !field("fortran_order")?.starts_with("False") {
        bail!("NPY array is in Fortran order; expected C order");
    }
    let shape = field("shape")?;
    let inner = shape.strip_prefix('(').and_then(|s| s.split(')').next()).context("malformed NPY shape")?;
    let dims: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().with_context(|| format!("bad NPY dimension {s:?}")))
        .collect::<Result<_>>()?;
    let (rows, cols) = match dims[..] {
        [r, c] => (r, c),
        _ => bail!("NPY array has shape {dims:?}; expected 2-D (materials, dimensions)"),
    };
    let payload = &bytes[start + header_len..];
    if payload.len() != rows * cols * 4 {
        bail!("NPY data holds {} bytes, shape ({rows}, {cols}) needs {}", payload.len(), rows * cols * 4);
    }
    let data = payload.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Ok((rows, cols, data))
}

/// Read precomputed embeddings `PREFIX.npy` + `PREFIX.ids.txt`: ids and one vector per id.
pub fn read_embeddings(prefix: &Path) -> Result<(Vec<String>, Vec<Vec<f32>>)> {
    let (npy, idf) = embedding_paths(prefix);
    let (rows, cols, data) = read_npy_f32(&npy)?;
    let text = std::fs::read(&idf).with_context(|| format!("reading {}", idf.display()))?;
    let text = String::from_utf8(text).map_err(|e| {
        let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()].iter().filter(|&&b| b == b'\n').count();
        anyhow::anyhow!("{}: line {line} is not valid UTF-8", idf.display())
    })?;
    let ids: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    if ids.len() != rows {
        bail!("{} lists {} ids but {} has {rows} rows", idf.display(), ids.len(), npy.display());
    }
    let mut seen = HashSet::new();
    for (i, id) in ids.iter().enumerate() {
        if id.is_empty() {
            bail!("{}: line {} is empty", idf.display(), i + 1);
        }
        if !seen.insert(id.as_str()) {
            bail!("{}: id {id} appears twice (again on line {})", idf.display(), i + 1);
        }
    }
    let vectors: Vec<Vec<f32>> = data.chunks_exact(cols.max(1)).take(rows).map(|r| r[..cols].to_vec()).collect();
    for (id, v) in ids.iter().zip(&vectors) {
        if let Some(j) = v.iter().position(|x| !x.is_finite()) {
            bail!("{}: the vector of {id} holds a non-finite value at dimension {j}", npy.display());
        }
    }
    Ok((ids, vectors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_round_trip_and_header_is_aligned() {
        let dir = tempfile::tempdir().unwrap();
        let ids = vec!["mp-1".to_string(), "mp-2".to_string()];
        let vecs = vec![vec![1.0, -2.5, 3.25], vec![0.0, 1e-30, -7.0]];
        let (npy, _) = write_embeddings(&dir.path().join("emb"), &ids, &vecs).unwrap();
        let bytes = std::fs::read(&npy).unwrap();
        let hl = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + hl) % 64, 0);
        let (ids2, vecs2) = read_embeddings(&dir.path().join("emb")).unwrap();
        assert_eq!((ids2, vecs2), (ids, vecs));
    }

    #[test]
    fn reads_the_real_matbert_vectors() {
        let prefix = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mp-multimodal/text/matbert_cls_768");
        let (ids, vecs) = read_embeddings(&prefix).unwrap();
        assert_eq!((ids.len(), vecs[0].len()), (85, 768));
        assert_eq!(ids[0], "mp-1000");
    }

    #[test]
    fn mismatched_ids_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e");
        write_embeddings(&p, &["a".into(), "b".into()], &[vec![1.0], vec![f32::NAN]]).unwrap();
        let e = format!("{:#}", read_embeddings(&p).unwrap_err());
        assert!(e.contains("non-finite") && e.contains(" b "), "{e}");
        std::fs::write(dir.path().join("e.ids.txt"), "a\n").unwrap();
        let e = format!("{:#}", read_embeddings(&p).unwrap_err());
        assert!(e.contains("1 ids") && e.contains("2 rows"), "{e}");
    }
}
