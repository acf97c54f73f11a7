//! `validate`: check any file against the shard spec and report *every* violation with its
//! location (dataset path, and record index and id where the problem is in one record).
//!
//! Reading is tolerant: a missing or malformed dataset is reported and the checks that need it
//! are skipped, while every other dataset is still checked.

use super::checksum::LeBytes;
use super::read::{ParallelDecode, read_attr_str, read_ingest_info, read_numeric, read_root_attrs, read_strings, Checks};
use super::{paths, MODALITIES};
use hdf5::H5Type;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// One way a file departs from the spec.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Violation {
    pub file: PathBuf,
    /// Dataset path ("/dos/densities"), attribute ("/@schema_version") or "/" for the file.
    pub location: String,
    /// Record index and id when the problem is in one record (id "" when the ids are unreadable).
    pub record: Option<(usize, String)>,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.location)?;
        if let Some((i, id)) = &self.record {
            write!(f, " [record {i} {id}]")?;
        }
        write!(f, ": {}", self.message)
    }
}

struct Report<'a> {
    file: &'a Path,
    ids: Vec<String>,
    out: Vec<Violation>,
}

impl Report<'_> {
    fn at(&mut self, location: &str, message: impl Into<String>) {
        self.out.push(Violation {
            file: self.file.to_owned(),
            location: location.to_owned(),
            record: None,
            message: message.into(),
        });
    }

    fn rec(&mut self, location: &str, i: usize, message: impl Into<String>) {
        let id = self.ids.get(i).cloned().unwrap_or_default();
        self.out.push(Violation {
            file: self.file.to_owned(),
            location: location.to_owned(),
            record: Some((i, id)),
            message: message.into(),
        });
    }
}

const ALL_CHECKS: Checks = Checks { checksum: true, layout: true };

/// Check `path` against schema v1. An empty result means the file is a valid shard.
pub fn validate(path: &Path) -> Vec<Violation> {
    let mut rep = Report { file: path, ids: Vec::new(), out: Vec::new() };
    crate::shard::hdf5_without_file_locking();
    let file = match hdf5::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            rep.at("/", format!("cannot open as HDF5: {e}"));
            return rep.out;
        }
    };
    validate_open(&file, &mut rep);
    rep.out
}

/// Read a numeric dataset, turning problems into violations at its path.
fn get<T: H5Type + LeBytes + ParallelDecode>(
    file: &hdf5::File,
    rep: &mut Report,
    path: &str,
    shape: &[Option<usize>],
) -> Option<(Vec<T>, Vec<usize>)> {
    let loc = format!("/{path}");
    let mut problems = Vec::new();
    let result = read_numeric::<T>(file, path, shape, ALL_CHECKS, &mut problems);
    for p in problems {
        rep.at(&loc, p);
    }
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            rep.at(&loc, e);
            None
        }
    }
}

fn get_strings(file: &hdf5::File, rep: &mut Report, path: &str, n: Option<usize>) -> Option<Vec<String>> {
    let loc = format!("/{path}");
    let mut problems = Vec::new();
    let result = read_strings(file, path, n, ALL_CHECKS, &mut problems);
    for p in problems {
        rep.at(&loc, p);
    }
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            rep.at(&loc, e);
            None
        }
    }
}

/// Offsets (N+1,) must start at 0, never decrease and end at the flat length.
fn check_offsets(rep: &mut Report, loc: &str, offsets: &[i64], flat_len: usize) -> bool {
    let problems = super::integrity::offsets_problems(offsets, flat_len);
    let ok = problems.is_empty();
    for (record, msg) in problems {
        match record {
            Some(i) => rep.rec(loc, i, msg),
            None => rep.at(loc, msg),
        }
    }
    ok
}

fn all_nan<T: Copy + Into<f64>>(v: &[T]) -> bool {
    v.iter().all(|x| (*x).into().is_nan())
}

fn first_non_finite<T: Copy + Into<f64>>(v: &[T]) -> Option<usize> {
    v.iter().position(|x| !(*x).into().is_finite())
}

fn validate_open(file: &hdf5::File, rep: &mut Report) {
    let mut attr_problems = Vec::new();
    let attrs = read_root_attrs(file, &mut attr_problems);
    for (loc, msg) in attr_problems {
        rep.at(&loc, msg);
    }
    // Params may be unreadable; fall back to what the datasets say so the other checks still run.
    let params = attrs.as_ref().map(|a| a.preprocess.clone());

    let ids = get_strings(file, rep, paths::IDS, None);
    let n = match (&ids, &attrs) {
        (Some(ids), Some(a)) => {
            if ids.len() as u64 != a.num_records {
                rep.at("/@num_records", format!("num_records {} ≠ {} ids", a.num_records, ids.len()));
            }
            ids.len()
        }
        (Some(ids), None) => ids.len(),
        (None, Some(a)) => a.num_records as usize,
        (None, None) => {
            rep.at("/", "record count unknown (no ids, no num_records); record checks skipped");
            return;
        }
    };
    if let Some(ids) = ids {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, id) in ids.iter().enumerate() {
            if id.is_empty() {
                rep.out.push(Violation { file: rep.file.into(), location: "/ids".into(), record: Some((i, String::new())), message: "empty material id".into() });
            } else if let Some(j) = seen.insert(id, i) {
                rep.out.push(Violation { file: rep.file.into(), location: "/ids".into(), record: Some((i, id.clone())), message: format!("duplicate id (also record {j})") });
            }
        }
        rep.ids = ids;
    }
    if let Some(prov) = get_strings(file, rep, paths::PROVENANCE, Some(n)) {
        for (i, s) in prov.iter().enumerate() {
            if serde_json::from_str::<std::collections::BTreeMap<String, String>>(s).is_err() {
                rep.rec("/provenance", i, "not a JSON object of strings");
            }
        }
    }

    // Masks.
    let mut masks: [Option<Vec<u8>>; 6] = Default::default();
    for (m, name) in MODALITIES.iter().enumerate() {
        let path = format!("mask/{name}");
        if let Some((v, _)) = get::<u8>(file, rep, &path, &[Some(n)]) {
            for (i, &b) in v.iter().enumerate() {
                if b > 1 {
                    rep.rec(&format!("/{path}"), i, format!("mask value {b}, expected 0 or 1"));
                }
            }
            masks[m] = Some(v);
        }
    }
    let has = |m: usize, i: usize| masks[m].as_ref().map(|v| v[i] != 0);

    // Crystal.
    let lattice = get::<f64>(file, rep, paths::LATTICE, &[Some(n), Some(3), Some(3)]).map(|x| x.0);
    let offsets = get::<i64>(file, rep, paths::ATOM_OFFSETS, &[Some(n + 1)]).map(|x| x.0);
    let species = get::<u8>(file, rep, paths::SPECIES, &[None]).map(|x| x.0);
    let frac = match &species {
        Some(s) => get::<f64>(file, rep, paths::FRAC_COORDS, &[Some(s.len()), Some(3)]).map(|x| x.0),
        None => get::<f64>(file, rep, paths::FRAC_COORDS, &[None, Some(3)]).map(|x| x.0),
    };
    let mut atom_counts: Option<Vec<usize>> = None;
    if let (Some(off), Some(sp)) = (&offsets, &species) {
        if check_offsets(rep, "/crystal/atom_offsets", off, sp.len()) {
            atom_counts = Some(off.windows(2).map(|w| (w[1] - w[0]) as usize).collect());
            for i in 0..n {
                let atoms = off[i] as usize..off[i + 1] as usize;
                let present = has(0, i);
                if present == Some(true) && atoms.is_empty() {
                    rep.rec("/crystal/atom_offsets", i, "structure marked present but has no atoms");
                }
                if present == Some(false) && !atoms.is_empty() {
                    rep.rec("/crystal/atom_offsets", i, "structure marked absent but has atoms");
                }
                if let Some(z) = sp[atoms.clone()].iter().find(|z| !(1..=118).contains(*z)) {
                    rep.rec("/crystal/species", i, format!("atomic number {z} out of range 1..=118"));
                }
                if let Some(fr) = &frac {
                    if let Some(k) = first_non_finite(&fr[atoms.start * 3..atoms.end * 3]) {
                        rep.rec("/crystal/frac_coords", i, format!("non-finite coordinate at atom {}", atoms.start + k / 3));
                    }
                }
            }
        }
    }
    if let Some(lat) = &lattice {
        for i in 0..n {
            let row = &lat[i * 9..i * 9 + 9];
            match has(0, i) {
                Some(true) if first_non_finite(row).is_some() => rep.rec("/crystal/lattice", i, "NaN/inf in a present lattice"),
                Some(true) => {
                    let m = nalgebra::Matrix3::from_row_slice(row);
                    if m.determinant().abs() < 1e-6 {
                        rep.rec("/crystal/lattice", i, "degenerate lattice (volume ≈ 0)");
                    }
                }
                Some(false) if !all_nan(row) => rep.rec("/crystal/lattice", i, "absent structure but lattice row is not NaN"),
                _ => {}
            }
        }
    }

    // Graphs.
    for g in paths::EDGE_LISTS {
        let off = get::<i64>(file, rep, &format!("{g}/edge_offsets"), &[Some(n + 1)]).map(|x| x.0);
        let src = get::<u32>(file, rep, &format!("{g}/src"), &[None]).map(|x| x.0);
        let e = src.as_ref().map(|s| s.len());
        let dst = get::<u32>(file, rep, &format!("{g}/dst"), &[e]).map(|x| x.0);
        let _image = get::<i32>(file, rep, &format!("{g}/image"), &[e, Some(3)]);
        let dist = get::<f32>(file, rep, &format!("{g}/distance"), &[e]).map(|x| x.0);
        if let (Some(off), Some(src)) = (&off, &src) {
            if check_offsets(rep, &format!("/{g}/edge_offsets"), off, src.len()) {
                check_graph_records(rep, g, n, off, src, dst.as_deref(), &atom_counts, &masks, |i| {
                    let d = dist.as_ref()?;
                    let r = off[i] as usize..off[i + 1] as usize;
                    d[r].iter().position(|x| !(x.is_finite() && *x >= 0.0)).map(|k| format!("distance {} is negative or non-finite", d[off[i] as usize + k]))
                });
            }
        }
    }
    {
        let g = paths::INFINITE;
        let off = get::<i64>(file, rep, &format!("{g}/edge_offsets"), &[Some(n + 1)]).map(|x| x.0);
        let src = get::<u32>(file, rep, &format!("{g}/src"), &[None]).map(|x| x.0);
        let e = src.as_ref().map(|s| s.len());
        let dst = get::<u32>(file, rep, &format!("{g}/dst"), &[e]).map(|x| x.0);
        let sums: Vec<Option<Vec<f64>>> = ["coulomb", "london", "pauli"]
            .iter()
            .map(|s| get::<f64>(file, rep, &format!("{g}/{s}"), &[e]).map(|x| x.0))
            .collect();
        if let (Some(off), Some(src)) = (&off, &src) {
            if check_offsets(rep, &format!("/{g}/edge_offsets"), off, src.len()) {
                check_graph_records(rep, g, n, off, src, dst.as_deref(), &atom_counts, &masks, |i| {
                    let r = off[i] as usize..off[i + 1] as usize;
                    let atoms = atom_counts.as_ref()?[i];
                    if r.len() != atoms * atoms {
                        return Some(format!("{} infinite edges, expected {atoms}² = {}", r.len(), atoms * atoms));
                    }
                    sums.iter().flatten().find_map(|s| first_non_finite(&s[r.clone()]).map(|_| "non-finite lattice sum".to_string()))
                });
            }
        }
    }

    // DOS.
    let p = params.as_ref().map(|p| p.dos_points);
    let energies = get::<f32>(file, rep, paths::DOS_ENERGIES, &[Some(n), p]);
    let densities = get::<f32>(file, rep, paths::DOS_DENSITIES, &[Some(n), p]);
    let repaired = get::<u32>(file, rep, paths::DOS_REPAIRED, &[Some(n)]).map(|x| x.0);
    for (loc, data) in [("/dos/energies", &energies), ("/dos/densities", &densities)] {
        let Some((v, shape)) = data else { continue };
        let p = shape[1];
        for i in 0..n {
            let row = &v[i * p..(i + 1) * p];
            match has(2, i) {
                Some(true) => {
                    if let Some(k) = first_non_finite(row) {
                        rep.rec(loc, i, format!("NaN/inf at point {k} of a present DOS"));
                    } else if loc == "/dos/energies" && row.windows(2).any(|w| w[1] <= w[0]) {
                        rep.rec(loc, i, "energies are not strictly increasing");
                    }
                }
                Some(false) if !all_nan(row) => rep.rec(loc, i, "absent DOS but the row is not NaN"),
                _ => {}
            }
        }
    }
    if let Some(rp) = &repaired {
        for (i, &c) in rp.iter().enumerate() {
            if has(2, i) == Some(false) && c != 0 {
                rep.rec("/dos/repaired_points", i, "absent DOS with a non-zero repaired count");
            }
            if let Some(p) = p {
                if c as usize > p {
                    rep.rec("/dos/repaired_points", i, format!("{c} repaired points > {p} points"));
                }
            }
        }
    }

    // Charge density.
    let grid = params.as_ref().map(|p| p.density_grid);
    let cd_shape = [Some(n), grid.map(|g| g[0]), grid.map(|g| g[1]), grid.map(|g| g[2])];
    if let Some((v, shape)) = get::<f32>(file, rep, paths::CHARGE_DENSITY, &cd_shape) {
        let g3: usize = shape[1..].iter().product();
        let loc = "/charge_density/values";
        for i in 0..n {
            let row = &v[i * g3..(i + 1) * g3];
            match has(3, i) {
                Some(true) => {
                    if let Some(k) = first_non_finite(row) {
                        rep.rec(loc, i, format!("NaN/inf at grid point {k} of a present charge density"));
                    }
                }
                Some(false) if !all_nan(row) => rep.rec(loc, i, "absent charge density but the values are not NaN"),
                _ => {}
            }
        }
        if let Ok(ds) = file.dataset(paths::CHARGE_DENSITY) {
            if ds.is_chunked() && ds.chunk().is_some_and(|c| c.first() != Some(&1)) {
                rep.at(loc, format!("chunk shape {:?}, expected one record per chunk", ds.chunk()));
            }
        }
    }

    // Text.
    if let Some(desc) = get_strings(file, rep, paths::DESCRIPTIONS, Some(n)) {
        for (i, d) in desc.iter().enumerate() {
            match has(4, i) {
                Some(true) if d.is_empty() => rep.rec("/text/description", i, "description marked present but empty"),
                Some(false) if !d.is_empty() => rep.rec("/text/description", i, "description marked absent but not empty"),
                _ => {}
            }
        }
    }
    if let Some((v, shape)) = get::<f32>(file, rep, paths::EMBEDDING, &[Some(n), None]) {
        let d = shape[1];
        let loc = "/text/embedding";
        if let Ok(ds) = file.dataset(paths::EMBEDDING) {
            for a in ["model", "weights_sha256"] {
                if let Err(e) = read_attr_str(&ds, a) {
                    rep.at(loc, format!("{e:#}"));
                }
            }
            if d > 0 && read_attr_str(&ds, "model").is_ok_and(|m| m.is_empty()) {
                rep.at(loc, "embeddings stored but attribute model is empty");
            }
        }
        for i in 0..n {
            let row = &v[i * d..(i + 1) * d];
            match has(5, i) {
                Some(true) if d == 0 => rep.rec(loc, i, "embedding marked present but the width is 0"),
                Some(true) if first_non_finite(row).is_some() => rep.rec(loc, i, "NaN/inf in a present embedding"),
                Some(false) if !all_nan(row) => rep.rec(loc, i, "absent embedding but the row is not NaN"),
                _ => {}
            }
        }
    }

    // Targets.
    match file.group("targets") {
        Err(_) => rep.at("/targets", "group is missing"),
        Ok(g) => {
            for name in g.member_names().unwrap_or_default() {
                let path = format!("targets/{name}");
                let loc = format!("/{path}");
                let Some((v, shape)) = get::<f64>(file, rep, &path, &[Some(n), None]) else { continue };
                if let Ok(ds) = file.dataset(&path) {
                    if let Err(e) = read_attr_str(&ds, "units") {
                        rep.at(&loc, format!("{e:#}"));
                    }
                }
                let w = shape[1];
                if w == 0 {
                    rep.at(&loc, "target width is 0");
                    continue;
                }
                for i in 0..n {
                    let row = &v[i * w..(i + 1) * w];
                    if !all_nan(row) && first_non_finite(row).is_some() {
                        rep.rec(&loc, i, "row mixes NaN/inf with values (a target is all present or all NaN)");
                    }
                }
            }
        }
    }

    // Ingest bookkeeping (optional group).
    match read_ingest_info(file, ALL_CHECKS) {
        Ok(Some(info)) => {
            if info.input_end < info.input_start {
                rep.at("/ingest", "input_end < input_start");
            }
            for (k, line) in info.rejects.iter().enumerate() {
                if !serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v.is_object()) {
                    rep.at("/ingest/rejects", format!("entry {k} is not a JSON object"));
                }
            }
        }
        Ok(None) => {}
        Err(e) => rep.at("/ingest", e),
    }
}

/// Per-record checks shared by the three edge lists: edges only for records with graphs, graphs
/// only with a structure, atom indices inside the record's atoms, plus a list-specific check.
#[allow(clippy::too_many_arguments)]
fn check_graph_records(
    rep: &mut Report,
    group: &str,
    n: usize,
    off: &[i64],
    src: &[u32],
    dst: Option<&[u32]>,
    atom_counts: &Option<Vec<usize>>,
    masks: &[Option<Vec<u8>>; 6],
    extra: impl Fn(usize) -> Option<String>,
) {
    let loc = format!("/{group}");
    for i in 0..n {
        let r = off[i] as usize..off[i + 1] as usize;
        let graphs = masks[1].as_ref().map(|m| m[i] != 0);
        let structure = masks[0].as_ref().map(|m| m[i] != 0);
        if graphs == Some(true) && structure == Some(false) {
            rep.rec(&loc, i, "graphs marked present without a structure");
        }
        if graphs == Some(false) && !r.is_empty() {
            rep.rec(&loc, i, format!("graphs marked absent but {} edges stored", r.len()));
            continue;
        }
        if graphs != Some(true) {
            continue;
        }
        if let Some(counts) = atom_counts {
            let atoms = counts[i] as u32;
            let bad_src = src[r.clone()].iter().any(|&a| a >= atoms);
            let bad_dst = dst.is_some_and(|d| d[r.clone()].iter().any(|&a| a >= atoms));
            if bad_src || bad_dst {
                rep.rec(&loc, i, format!("edge atom index ≥ {atoms} atoms of the record"));
            }
        }
        if let Some(msg) = extra(i) {
            rep.rec(&loc, i, msg);
        }
    }
}
