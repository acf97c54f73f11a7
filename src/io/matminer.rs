//! matminer datasets as published: pandas DataFrames in "split" JSON
//! (`{"index": […], "columns": […], "data": [[…], …]}`, usually `.json.gz`), e.g.
//! `elastic_tensor_2015` and `dielectric_constant`.
//!
//! One `MaterialRecord` per row: id from `material_id` (else the pandas index); structure from
//! the `structure` column (pymatgen dict), falling back to `cif` then `poscar` text; targets:
//! every numeric scalar column (bools excluded) and every numeric matrix column flattened in row
//! order (numpy dicts `{"@module": "numpy", "data": …}`, nested lists, or strings holding a JSON
//! list such as the dielectric tensors `"[[…], …]"`). A row that fails becomes an `Err` entry
//! naming `file#row` and the batch goes on.

use crate::material::{MaterialRecord, Provenance};
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Columns that are never targets.
const NON_TARGET_COLUMNS: &[&str] = &["material_id", "structure", "cif", "poscar", "formula", "meta", "task_id"];

/// Read a pandas "split" JSON dataset (plain or gzip). The outer `Result` fails only when the
/// file itself is unreadable or not a "split" frame.
pub fn read_dataset(path: &Path) -> Result<Vec<Result<MaterialRecord>>> {
    let origin = path.display().to_string();
    let value = super::read_json(path)?;
    let columns: Vec<String> = value
        .get("columns")
        .and_then(Value::as_array)
        .with_context(|| format!("{origin}: not a pandas \"split\" frame (no \"columns\" list)"))?
        .iter()
        .map(|c| c.as_str().map(str::to_string).unwrap_or_else(|| c.to_string()))
        .collect();
    let data = value
        .get("data")
        .and_then(Value::as_array)
        .with_context(|| format!("{origin}: not a pandas \"split\" frame (no \"data\" list)"))?;
    let index = value.get("index").and_then(Value::as_array);
    Ok(data
        .par_iter()
        .enumerate()
        .map(|(row, cells)| {
            let record = format!("{origin}#{row}");
            parse_row(&columns, cells, index.and_then(|ix| ix.get(row)), &record)
        })
        .collect())
}

/// Flatten a numeric value: number, (nested) list of numbers, numpy dict, or a string holding a
/// JSON list. `None` when it is not numeric (text, bool, dict of other kind, list with nulls).
fn numeric_values(v: &Value) -> Option<Vec<f64>> {
    // A null (NaN in the file) inside a numeric list is kept as NaN so the row is rejected for
    // an incomplete target (see `parse_row`) instead of the target vanishing without a word.
    fn flatten(v: &Value, out: &mut Vec<f64>) -> bool {
        match v {
            Value::Number(n) => n.as_f64().filter(|x| x.is_finite()).map(|x| out.push(x)).is_some(),
            Value::Null => {
                out.push(f64::NAN);
                true
            }
            Value::Array(a) => a.iter().all(|x| flatten(x, out)),
            _ => false,
        }
    }
    let mut out = Vec::new();
    let ok = match v {
        Value::Number(_) | Value::Array(_) => flatten(v, &mut out),
        Value::Object(o) if o.get("@module").and_then(Value::as_str) == Some("numpy") => {
            o.get("data").is_some_and(|d| flatten(d, &mut out))
        }
        Value::String(s) if s.trim_start().starts_with('[') => {
            serde_json::from_str::<Value>(s).ok().is_some_and(|parsed| flatten(&parsed, &mut out))
        }
        _ => false,
    };
    (ok && out.iter().any(|x| x.is_finite())).then_some(out)
}

fn parse_row(columns: &[String], cells: &Value, index: Option<&Value>, record: &str) -> Result<MaterialRecord> {
    let cells = cells.as_array().with_context(|| format!("{record}: row is not a list"))?;
    if cells.len() != columns.len() {
        bail!("{record}: row has {} cells but there are {} columns", cells.len(), columns.len());
    }
    let get = |name: &str| columns.iter().position(|c| c == name).map(|i| &cells[i]).filter(|v| !v.is_null());
    let id = match get("material_id").or(index) {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => bail!("{record}: no material_id"),
    };
    let record = format!("{record} ({id})");
    let structure = if let Some(s) = get("structure") {
        super::pymatgen::structure_from_json(s, &record).context("column 'structure'")?
    } else if let Some(Value::String(cif)) = get("cif") {
        super::cif::parse_cif(cif, &record).context("column 'cif'")?
    } else if let Some(Value::String(poscar)) = get("poscar") {
        super::poscar::parse_poscar(poscar, &record).context("column 'poscar'")?
    } else {
        bail!("{record}: no structure (columns 'structure', 'cif' and 'poscar' are all missing or empty)");
    };
    let mut targets = BTreeMap::new();
    for (name, cell) in columns.iter().zip(cells) {
        if NON_TARGET_COLUMNS.contains(&name.as_str()) || cell.is_null() {
            continue;
        }
        if let Some(values) = numeric_values(cell) {
            if let Some(k) = values.iter().position(|x| !x.is_finite()) {
                bail!("{record}: column '{name}': element {k} of {} is NaN/null (a target must be complete)", values.len());
            }
            targets.insert(name.clone(), values);
        }
    }
    let mut provenance = Provenance::default();
    let source = record.split(" (").next().unwrap_or(&record).to_string();
    provenance.sources.insert("structure".into(), source.clone());
    provenance.sources.insert("targets".into(), source);
    Ok(MaterialRecord { id, structure: Some(structure), targets, provenance, ..Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numeric_value_shapes() {
        assert_eq!(numeric_values(&json!(1.5)), Some(vec![1.5]));
        assert_eq!(numeric_values(&json!({"@module": "numpy", "data": [[1, 2], [3, 4]]})), Some(vec![1.0, 2.0, 3.0, 4.0]));
        assert_eq!(numeric_values(&json!("[[1, 2], [3, 4.5]]")), Some(vec![1.0, 2.0, 3.0, 4.5]));
        assert_eq!(numeric_values(&json!(true)), None);
        assert_eq!(numeric_values(&json!("Fe2O3")), None);
        // An absent element stays visible as NaN, so the row is rejected with a reason later
        // instead of the target being dropped silently.
        let v = numeric_values(&json!([1, null])).unwrap();
        assert!(v[0] == 1.0 && v[1].is_nan());
    }

    #[test]
    fn bad_rows_are_errors_and_the_batch_continues() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("set.json");
        let good = json!({"lattice": {"matrix": [[3,0,0],[0,3,0],[0,0,3]]}, "sites": [{"species": [{"element": "Po", "occu": 1}], "abc": [0,0,0]}]});
        let bad = json!({"lattice": {"matrix": [[3,0,0],[0,3,0],[0,0,3]]}, "sites": [{"species": [{"element": "Po", "occu": 0.5}], "abc": [0,0,0]}]});
        let frame = json!({"index": [0, 1, 2], "columns": ["material_id", "structure", "K_VRH", "flag"],
                           "data": [["mp-1", good, 10.0, true], ["mp-2", bad, 11.0, false], ["mp-3", null, 12.0, true]]});
        std::fs::write(&p, frame.to_string()).unwrap();
        let rows = read_dataset(&p).unwrap();
        assert_eq!(rows.len(), 3);
        let first = rows[0].as_ref().unwrap();
        assert_eq!(first.targets.keys().collect::<Vec<_>>(), vec!["K_VRH"]);
        assert!(first.provenance.sources["structure"].ends_with("set.json#0"));
        let e1 = format!("{:#}", rows[1].as_ref().unwrap_err());
        assert!(e1.contains("set.json#1 (mp-2)") && e1.contains("partial occupancy"), "{e1}");
        let e2 = format!("{:#}", rows[2].as_ref().unwrap_err());
        assert!(e2.contains("#2 (mp-3)") && e2.contains("no structure"), "{e2}");
    }
}
