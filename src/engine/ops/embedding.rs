//! Embedding lookup: out[i] = table[ids[i]]. Backward scatter-adds rows of dout into the table
//! gradient (+=); ids have no gradient. An out-of-range id is an error naming its position, not
//! a panic: ids come from tokenisers and data files.

use anyhow::{bail, Result};

/// Checks every id against the vocabulary size.
fn check_ids(ids: &[u32], vocab: usize) -> Result<()> {
    if let Some((pos, &id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
        bail!("embedding: id {id} at position {pos} is outside the table of {vocab} rows");
    }
    Ok(())
}

/// out (N, C) = table (V, C) [ids (N)].
pub fn embedding_forward(out: &mut [f32], ids: &[u32], table: &[f32], c: usize, vocab: usize) -> Result<()> {
    let n = ids.len();
    assert!(out.len() >= n * c && table.len() >= vocab * c, "embedding_forward: short buffers");
    check_ids(ids, vocab)?;
    for (row, &id) in out[..n * c].chunks_exact_mut(c).zip(ids) {
        let id = id as usize;
        row.copy_from_slice(&table[id * c..(id + 1) * c]);
    }
    Ok(())
}

/// dtable (V, C) [ids[i]] += dout (N, C) [i] (accumulated; repeated ids add up).
pub fn embedding_backward(dtable: &mut [f32], dout: &[f32], ids: &[u32], c: usize, vocab: usize) -> Result<()> {
    let n = ids.len();
    assert!(dout.len() >= n * c && dtable.len() >= vocab * c, "embedding_backward: short buffers");
    check_ids(ids, vocab)?;
    for (g, &id) in dout[..n * c].chunks_exact(c).zip(ids) {
        let id = id as usize;
        for (d, v) in dtable[id * c..(id + 1) * c].iter_mut().zip(g) {
            *d += v;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::{check_gradient, dot, random_vec};

    #[test]
    fn embedding_gathers_rows_and_rejects_bad_ids() {
        let table: Vec<f32> = (0..12).map(|v| v as f32).collect(); // (4, 3)
        let mut out = vec![0.0; 6];
        embedding_forward(&mut out, &[3, 0], &table, 3, 4).unwrap();
        assert_eq!(out, vec![9.0, 10.0, 11.0, 0.0, 1.0, 2.0]);
        let err = embedding_forward(&mut out, &[1, 4], &table, 3, 4).unwrap_err().to_string();
        assert!(err.contains("id 4 at position 1"), "{err}");
    }

    #[test]
    fn embedding_gradient_scatter_adds_repeated_ids() {
        let (v, c) = (5, 4);
        let ids = [2u32, 0, 2, 4, 2];
        let table = random_vec(v * c, 1, 1.0);
        let proj = random_vec(ids.len() * c, 2, 1.0);
        let mut dtable = vec![0.0; v * c];
        embedding_backward(&mut dtable, &proj, &ids, c, v).unwrap();
        assert!(dtable[c..2 * c].iter().all(|&g| g == 0.0), "unused row 1 gets no gradient");
        check_gradient("embedding dtable", &table, &dtable, |t| {
            let mut out = vec![0.0; ids.len() * c];
            embedding_forward(&mut out, &ids, t, c, v).unwrap();
            dot(&proj, &out)
        }, 1e-2, 1e-4, 1e-4);
    }
}
