//! JARVIS-style JSON data sets: a JSON list of objects, each with an `atoms` dict in
//! jarvis-tools' `Atoms.to_dict()` form (`lattice_mat`: rows are the lattice vectors in Å;
//! `coords`; `elements`; optional `cartesian`, false when absent) and scalar properties beside
//! it. Two forms are read:
//! - JARVIS `dft_3d` (and the other JARVIS-DFT tables): id `jid`; every numeric field is a target
//!   under its own name; the string `"na"` (JARVIS's spelling of "not available") and `null`
//!   mean absent.
//! - SNUMAT's band-gap set as the MultiMat reference code reads it: id `SNUMAT_id`,
//!   `Band_gap_HSE` → target `band_gap_hse` (eV) and `Band_gap_GGA` → `band_gap_gga`; the rest
//!   as for `dft_3d`.
//!
//! Coordinates are fractional unless `cartesian` is `true` (the reference code treats them as
//! fractional; jarvis-tools writes the flag, so honouring it agrees with the reference on every
//! file that says `false` or nothing). Strings, booleans and lists other than `atoms` are not
//! targets (lists have a different length per material in JARVIS, e.g. `kpoint_length_unit`).
//! A record that fails becomes an `Err` naming `file#index (id)`; the batch goes on.

use crate::elements::atomic_number;
use crate::material::{MaterialRecord, Provenance, Structure};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Fields that name or describe the record rather than measure a property.
/// (`kpoint_length_unit` and `encut` are JARVIS's calculation settings.)
const NON_TARGET_FIELDS: &[&str] =
    &["jid", "SNUMAT_id", "id", "atoms", "nat", "natoms", "spg_number", "ICSD_id", "icsd_id", "kpoint_length_unit", "encut"];

/// SNUMAT's field names → target names (lower case, as the rest of the project names targets).
const RENAMED: &[(&str, &str)] = &[("Band_gap_HSE", "band_gap_hse"), ("Band_gap_GGA", "band_gap_gga")];

/// Read a JARVIS-style JSON list (plain or gzip). The outer `Result` fails only when the file is
/// unreadable or not a list of objects.
pub fn read_dataset(path: &Path) -> Result<Vec<Result<MaterialRecord>>> {
    let origin = path.display().to_string();
    let value = super::read_json(path)?;
    let Value::Array(items) = value else {
        bail!(
            "{origin}: not a JARVIS-style data set (expected a JSON list of objects with \"atoms\" and \"jid\" or \
             \"SNUMAT_id\"; got a JSON {})",
            json_kind(&value)
        );
    };
    Ok(items.iter().enumerate().map(|(i, item)| parse_item(item, &format!("{origin}#{i}"))).collect())
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

fn parse_item(item: &Value, record: &str) -> Result<MaterialRecord> {
    let obj = item.as_object().with_context(|| format!("{record}: entry is a JSON {}, not an object", json_kind(item)))?;
    let id = ["jid", "SNUMAT_id", "id"]
        .iter()
        .find_map(|k| match obj.get(*k) {
            Some(Value::String(s)) if !s.trim().is_empty() && s != "na" => Some(s.trim().to_string()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        })
        .with_context(|| format!("{record}: no id (fields \"jid\", \"SNUMAT_id\" and \"id\" are all missing or empty)"))?;
    let here = format!("{record} ({id})");
    let atoms = obj.get("atoms").filter(|v| !v.is_null()).with_context(|| format!("{here}: no \"atoms\""))?;
    let structure = atoms_to_structure(atoms, &here).context("field \"atoms\"")?;
    let mut targets = BTreeMap::new();
    for (name, v) in obj {
        if NON_TARGET_FIELDS.contains(&name.as_str()) {
            continue;
        }
        let Value::Number(n) = v else { continue }; // "na", null, text, lists: not a target value
        let x = n.as_f64().filter(|x| x.is_finite()).with_context(|| format!("{here}: field {name:?} is not a finite number: {n}"))?;
        let target = RENAMED.iter().find(|(from, _)| from == name).map_or(name.as_str(), |(_, to)| to);
        targets.insert(target.to_string(), vec![x]);
    }
    let mut provenance = Provenance::default();
    provenance.sources.insert("structure".into(), record.to_string());
    if !targets.is_empty() {
        provenance.sources.insert("targets".into(), record.to_string());
    }
    Ok(MaterialRecord { id, structure: Some(structure), targets, provenance, ..Default::default() })
}

fn number_rows(v: &Value, what: &str, origin: &str) -> Result<Vec<[f64; 3]>> {
    let rows = v.as_array().with_context(|| format!("{origin}: {what} is not a list"))?;
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            let r = row.as_array().filter(|r| r.len() == 3).with_context(|| format!("{origin}: {what}[{i}] is not a list of 3 numbers: {row}"))?;
            let mut out = [0.0; 3];
            for (k, x) in r.iter().enumerate() {
                out[k] = x.as_f64().filter(|x| x.is_finite()).with_context(|| format!("{origin}: {what}[{i}][{k}] is not a finite number: {x}"))?;
            }
            Ok(out)
        })
        .collect()
}

/// A structure from jarvis-tools' `Atoms.to_dict()`: `lattice_mat` rows are lattice vectors (Å),
/// `coords` fractional unless `cartesian` is true (then Å), `elements` chemical symbols.
pub fn atoms_to_structure(atoms: &Value, origin: &str) -> Result<Structure> {
    let lattice_rows = number_rows(atoms.get("lattice_mat").unwrap_or(&Value::Null), "lattice_mat", origin)?;
    let lattice: [[f64; 3]; 3] =
        lattice_rows.try_into().map_err(|rows: Vec<[f64; 3]>| anyhow::anyhow!("{origin}: lattice_mat has {} rows, expected 3", rows.len()))?;
    let coords = number_rows(atoms.get("coords").unwrap_or(&Value::Null), "coords", origin)?;
    let elements = atoms.get("elements").and_then(Value::as_array).with_context(|| format!("{origin}: \"elements\" is not a list"))?;
    if elements.len() != coords.len() {
        bail!("{origin}: {} elements but {} coordinates", elements.len(), coords.len());
    }
    let cartesian = match atoms.get("cartesian") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => bail!("{origin}: \"cartesian\" is not true/false: {other}"),
    };
    let mut species = Vec::with_capacity(elements.len());
    for (i, e) in elements.iter().enumerate() {
        let symbol = e.as_str().with_context(|| format!("{origin}: elements[{i}] is not a string: {e}"))?;
        // atomic_number tolerates suffixes ("Fe2+"); a JARVIS symbol is exact, so demand the match.
        let z = atomic_number(symbol)
            .filter(|&z| crate::elements::symbol(z) == symbol.trim())
            .with_context(|| format!("{origin}: elements[{i}]: unknown element '{symbol}'"))?;
        species.push(z);
    }
    let frac_coords = if cartesian {
        let inverse = super::inverse3(&lattice).with_context(|| format!("{origin}: lattice is singular: {lattice:?}"))?;
        coords.into_iter().map(|c| super::cart_to_frac(c, &inverse)).collect()
    } else {
        coords
    };
    let s = Structure { lattice, species, frac_coords };
    super::validate_structure(&s, origin)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cartesian_and_fractional_give_the_same_structure() {
        let l = [[0.0, 2.7, 2.7], [2.7, 0.0, 2.7], [2.7, 2.7, 0.0]];
        let frac = json!({"lattice_mat": l, "coords": [[0, 0, 0], [0.25, 0.25, 0.25]], "elements": ["Si", "Si"]});
        let cart = json!({"lattice_mat": l, "coords": [[0, 0, 0], [1.35, 1.35, 1.35]], "elements": ["Si", "Si"], "cartesian": true});
        let a = atoms_to_structure(&frac, "t").unwrap();
        let b = atoms_to_structure(&cart, "t").unwrap();
        for (x, y) in a.frac_coords.iter().flatten().zip(b.frac_coords.iter().flatten()) {
            assert!((x - y).abs() < 1e-12, "{x} vs {y}");
        }
        let bad = json!({"lattice_mat": l, "coords": [[0, 0, 0]], "elements": ["Sx"]});
        assert!(format!("{:#}", atoms_to_structure(&bad, "f.json#3").unwrap_err()).contains("unknown element 'Sx'"));
    }
}
