//! Precomputed embeddings: a 2-D `.npy` matrix (one row per material) plus a text file of ids,
//! one per line, in row order. The `.npy` header (v1/v2/v3, dtype, order) is read by the
//! well-kept `ndarray-npy` crate; we accept `<f4` and `<f8` (converted to f32) in C or Fortran order.

use anyhow::{bail, Context, Result};
use ndarray::Array2;
use ndarray_npy::ReadNpyExt;
use std::path::Path;

/// Read `(id, vector)` pairs. Errors: the row count differs from the id count, an id is empty
/// or repeated, a value is not finite (naming the row and id), or the array is not 2-D f32/f64.
pub fn read_embeddings(npy: &Path, ids: &Path) -> Result<Vec<(String, Vec<f32>)>> {
    let bytes = super::open_bytes(npy)?;
    let matrix: Array2<f32> = match Array2::<f32>::read_npy(std::io::Cursor::new(&bytes)) {
        Ok(m) => m,
        Err(first) => match Array2::<f64>::read_npy(std::io::Cursor::new(&bytes)) {
            Ok(m) => m.mapv(|v| v as f32),
            Err(_) => bail!("{}: not a 2-D little-endian float32/float64 .npy array: {first}", npy.display()),
        },
    };
    let id_text = super::open_text(ids)?;
    let mut id_list = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, line) in id_text.lines().enumerate() {
        let id = line.trim();
        if id.is_empty() {
            // Only a trailing blank line is harmless; a blank in the middle would shift every row.
            if id_text.lines().skip(i + 1).any(|l| !l.trim().is_empty()) {
                bail!("{}: line {}: empty id", ids.display(), i + 1);
            }
            continue;
        }
        if !seen.insert(id.to_string()) {
            bail!("{}: line {}: id {id} appears twice", ids.display(), i + 1);
        }
        id_list.push(id.to_string());
    }
    let (rows, dim) = matrix.dim();
    if rows != id_list.len() {
        bail!(
            "{} has {rows} rows but {} lists {} ids; they must match one to one",
            npy.display(),
            ids.display(),
            id_list.len()
        );
    }
    if dim == 0 {
        bail!("{}: embeddings have dimension 0", npy.display());
    }
    id_list
        .into_iter()
        .zip(matrix.outer_iter())
        .enumerate()
        .map(|(r, (id, row))| {
            let v: Vec<f32> = row.to_vec();
            if let Some(c) = v.iter().position(|x| !x.is_finite()) {
                bail!("{}: row {r} ({id}), column {c}: value {} is not finite", npy.display(), v[c]);
            }
            Ok((id, v))
        })
        .collect::<Result<Vec<_>>>()
        .with_context(|| format!("reading embeddings {}", npy.display()))
}
