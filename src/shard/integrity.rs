//! Integrity checks of shard data as it is loaded for training: the cheap part of what
//! [`super::validate()`] checks, on the arrays actually read, so a corrupt shard stops a run with
//! the shard, dataset and record named instead of panicking on a slice index or being trained on.
//!
//! Checked: ids non-empty and unique; masks 0/1 and graphs only with a structure; every offsets
//! array starts at 0, never decreases and ends at its flat length; edge endpoints inside their
//! record's atoms and the infinite graph holding atoms² edges; present rows finite where training
//! reads them (for a streamed charge density, `super::stream::StreamedColumn::open` checks its rows
//! in the same way). Dataset checksums are verified by the reader itself (`LoadOptions::verify_checksums`,
//! which a training load sets): a missing `sha256` attribute or a value changed under a stale
//! checksum fails the load.

use super::{paths, EdgeColumns, ShardData, MODALITIES};
use anyhow::{bail, Result};
use std::collections::HashMap;

/// Problems of an offsets array (N+1,) over a flat array of `flat_len` items: `(record, message)`
/// pairs, `record` `None` for the array as a whole. Shared with `validate`.
pub(crate) fn offsets_problems(offsets: &[i64], flat_len: usize) -> Vec<(Option<usize>, String)> {
    let mut out = Vec::new();
    if offsets.first() != Some(&0) {
        out.push((None, format!("first offset is {:?}, expected 0", offsets.first())));
    }
    for (i, w) in offsets.windows(2).enumerate() {
        if w[1] < w[0] {
            out.push((Some(i), format!("offsets decrease ({} → {})", w[0], w[1])));
        }
    }
    if let Some(&last) = offsets.last() {
        if last != flat_len as i64 {
            out.push((None, format!("last offset {last} ≠ flat length {flat_len}")));
        }
    }
    out
}

/// Check a shard loaded for training; the error names the file, dataset and record (index and id).
pub fn check_loaded(data: &ShardData) -> Result<()> {
    check(data, true)
}

/// [`check_loaded`] for a shard loaded by `ShardReader::load_streamed` whose charge density is
/// streamed: its rows were checked (finite where present, checksum) by `StreamedColumn::open`, and
/// `data.charge_density` is empty.
pub fn check_loaded_streamed(data: &ShardData) -> Result<()> {
    check(data, false)
}

fn check(data: &ShardData, density_in_memory: bool) -> Result<()> {
    let file = data.path.display();
    let n = data.ids.len();
    let at = |dataset: &str, i: usize, msg: String| -> anyhow::Error {
        let id = data.ids.get(i).map(String::as_str).unwrap_or("?");
        anyhow::anyhow!("{file}: /{dataset}: record {i} ({id}): {msg}")
    };
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(n);
    for (i, id) in data.ids.iter().enumerate() {
        if id.is_empty() {
            return Err(at(paths::IDS, i, "empty material id".into()));
        }
        if let Some(j) = seen.insert(id, i) {
            return Err(at(paths::IDS, i, format!("duplicate id (also record {j})")));
        }
    }
    for (m, name) in MODALITIES.iter().enumerate() {
        let mask = &data.masks[m];
        if mask.len() != n {
            bail!("{file}: /mask/{name}: {} entries for {n} records", mask.len());
        }
        if let Some(i) = mask.iter().position(|&b| b > 1) {
            return Err(at(&format!("mask/{name}"), i, format!("mask value {}, expected 0 or 1", mask[i])));
        }
    }
    if let Some(i) = (0..n).find(|&i| data.has(1, i) && !data.has(0, i)) {
        return Err(at("mask/graphs", i, "graphs marked present without a structure".into()));
    }

    let whole = |dataset: &str, problems: Vec<(Option<usize>, String)>| -> Result<()> {
        match problems.into_iter().next() {
            Some((Some(i), msg)) => Err(at(dataset, i, msg)),
            Some((None, msg)) => bail!("{file}: /{dataset}: {msg}"),
            None => Ok(()),
        }
    };
    whole(paths::ATOM_OFFSETS, offsets_problems(&data.atom_offsets, data.species.len()))?;
    if data.atom_offsets.len() != n + 1 || data.frac_coords.len() != 3 * data.species.len() || data.lattice.len() != 9 * n {
        bail!("{file}: /crystal: array lengths disagree with {n} records");
    }
    for i in 0..n {
        let atoms = data.atoms(i).len();
        let structure = data.has(0, i);
        if structure != (atoms > 0) {
            let msg = if structure { "structure marked present but has no atoms" } else { "structure marked absent but has atoms" };
            return Err(at(paths::ATOM_OFFSETS, i, msg.into()));
        }
        if structure && data.lattice[9 * i..9 * i + 9].iter().any(|x| !x.is_finite()) {
            return Err(at(paths::LATTICE, i, "NaN/inf in a present lattice".into()));
        }
    }

    let lists: [(&str, &EdgeColumns); 2] = [(paths::EDGE_LISTS[0], &data.local), (paths::EDGE_LISTS[1], &data.cgcnn)];
    for (group, c) in lists {
        let e = c.src.len();
        if c.dst.len() != e || c.image.len() != 3 * e || c.distance.len() != e || c.offsets.len() != n + 1 {
            bail!("{file}: /{group}: src, dst, image, distance and offsets disagree in length");
        }
        check_edges(data, group, &c.offsets, &c.src, &c.dst, &at, |r| {
            c.distance[r].iter().position(|d| !(d.is_finite() && *d >= 0.0)).map(|k| format!("edge {k}: distance negative or non-finite"))
        })?;
    }
    let inf = &data.infinite;
    let e = inf.src.len();
    if inf.dst.len() != e || inf.coulomb.len() != e || inf.london.len() != e || inf.pauli.len() != e || inf.offsets.len() != n + 1 {
        bail!("{file}: /{}: arrays disagree in length", paths::INFINITE);
    }
    check_edges(data, paths::INFINITE, &inf.offsets, &inf.src, &inf.dst, &at, |r| {
        let sums = [&inf.coulomb[r.clone()], &inf.london[r.clone()], &inf.pauli[r]];
        sums.iter().any(|s| s.iter().any(|x| !x.is_finite())).then(|| "non-finite lattice sum".to_string())
    })?;
    for i in 0..n {
        if data.has(1, i) {
            let atoms = data.atoms(i).len();
            let edges = (inf.offsets[i + 1] - inf.offsets[i]) as usize;
            if edges != atoms * atoms {
                return Err(at(paths::INFINITE, i, format!("{edges} infinite edges, expected {atoms}² = {}", atoms * atoms)));
            }
        }
    }

    // Dense per-record rows: lengths, and present rows finite.
    let p = data.meta.preprocess.dos_points;
    let g3: usize = data.meta.preprocess.density_grid.iter().product();
    let dim = data.meta.text_embedding.as_ref().map_or(0, |s| s.dim);
    let dense: [(&str, usize, usize, &[f32]); 4] = [
        (paths::DOS_ENERGIES, 2, p, &data.dos_energies),
        (paths::DOS_DENSITIES, 2, p, &data.dos_densities),
        (paths::CHARGE_DENSITY, 3, g3, &data.charge_density),
        (paths::EMBEDDING, 5, dim, &data.text_embedding),
    ];
    for (dataset, mask, width, values) in dense {
        if dataset == paths::CHARGE_DENSITY && !density_in_memory {
            continue;
        }
        if values.len() != n * width {
            bail!("{file}: /{dataset}: {} values, expected {n} × {width}", values.len());
        }
        for i in (0..n).filter(|&i| data.has(mask, i)) {
            if let Some(k) = values[i * width..(i + 1) * width].iter().position(|x| !x.is_finite()) {
                return Err(at(dataset, i, format!("NaN/inf at position {k} of a present row")));
            }
        }
    }
    for (name, spec) in &data.meta.targets {
        let values = data.targets.get(name).map_or(&[][..], Vec::as_slice);
        if values.len() != n * spec.width {
            bail!("{file}: /targets/{name}: {} values, expected {n} × {}", values.len(), spec.width);
        }
    }
    Ok(())
}

/// Offsets of one edge list, no edges for a record without graphs, endpoints inside the record's
/// atoms, plus a list-specific check of the record's edge range.
fn check_edges(
    data: &ShardData,
    group: &str,
    offsets: &[i64],
    src: &[u32],
    dst: &[u32],
    at: &dyn Fn(&str, usize, String) -> anyhow::Error,
    extra: impl Fn(std::ops::Range<usize>) -> Option<String>,
) -> Result<()> {
    let dataset = format!("{group}/edge_offsets");
    if let Some((record, msg)) = offsets_problems(offsets, src.len()).into_iter().next() {
        return Err(match record {
            Some(i) => at(&dataset, i, msg),
            None => anyhow::anyhow!("{}: /{dataset}: {msg}", data.path.display()),
        });
    }
    for i in 0..data.ids.len() {
        let r = offsets[i] as usize..offsets[i + 1] as usize;
        if !data.has(1, i) {
            if !r.is_empty() {
                return Err(at(group, i, format!("graphs marked absent but {} edges stored", r.len())));
            }
            continue;
        }
        let atoms = data.atoms(i).len() as u32;
        if src[r.clone()].iter().chain(&dst[r.clone()]).any(|&a| a >= atoms) {
            return Err(at(group, i, format!("edge atom index ≥ the record's {atoms} atoms")));
        }
        if let Some(msg) = extra(r) {
            return Err(at(group, i, msg));
        }
    }
    Ok(())
}
