//! Labels: a CSV keyed by material id (`material_id` column, else the first column), parsed
//! with BurntSushi's `csv` crate (RFC 4180 quoting, which JSON-array cells need).
//!
//! Cell rules: a number is a scalar; `[1, 2, [3]]` (JSON array, nested arrays flattened) or
//! `1 2 3` (whitespace-separated, as in `materials.csv`'s elastic_tensor) is a vector; empty,
//! `nan`, `NA`, `None`, `null` mean absent. A column with at least one numeric cell is numeric, and
//! a non-numeric cell in it is an error naming the line and column; a column with no numeric
//! cell (formula, notes) is text and skipped.

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// Targets per material, in file order.
pub type Labels = Vec<(String, BTreeMap<String, Vec<f64>>)>;

enum Cell {
    Missing,
    Numbers(Vec<f64>),
    Text,
}

fn flatten_json(v: &serde_json::Value, out: &mut Vec<f64>) -> bool {
    match v {
        serde_json::Value::Number(n) => n.as_f64().map(|x| out.push(x)).is_some(),
        serde_json::Value::Array(a) => a.iter().all(|x| flatten_json(x, out)),
        _ => false,
    }
}

fn classify(cell: &str) -> Cell {
    let s = cell.trim();
    if s.is_empty() || ["nan", "na", "n/a", "none", "null"].contains(&s.to_ascii_lowercase().as_str()) {
        return Cell::Missing;
    }
    if s.starts_with('[') {
        let mut out = Vec::new();
        return match serde_json::from_str::<serde_json::Value>(s) {
            Ok(v) if flatten_json(&v, &mut out) && !out.is_empty() => Cell::Numbers(out),
            _ => Cell::Text,
        };
    }
    let parsed: Option<Vec<f64>> = s.split_whitespace().map(|t| t.parse::<f64>().ok()).collect();
    match parsed {
        Some(v) if v.iter().all(|x| x.is_finite()) => Cell::Numbers(v),
        _ => Cell::Text,
    }
}

/// 1-based line of a record starting at byte `byte`. The csv crate's own line counter (and its
/// record start on CRLF files, which points at the previous line's '\n') is off by one on CRLF
/// files such as `materials.csv`, so we count ourselves after skipping line terminators.
fn line_of(text: &str, byte: u64) -> u64 {
    let bytes = text.as_bytes();
    let mut b = (byte as usize).min(bytes.len());
    while b < bytes.len() && (bytes[b] == b'\r' || bytes[b] == b'\n') {
        b += 1;
    }
    bytes[..b].iter().filter(|&&c| c == b'\n').count() as u64 + 1
}

/// Read a labels CSV (plain or gzip). See the module docs for the cell rules.
pub fn read_csv(path: &Path) -> Result<Labels> {
    let text = super::open_text(path)?;
    parse_csv(&text, &path.display().to_string())
}

/// `read_csv` on text in memory; `origin` names it in errors.
pub fn parse_csv(text: &str, origin: &str) -> Result<Labels> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).trim(csv::Trim::All).from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .with_context(|| format!("{origin}: cannot read the CSV header"))?
        .iter()
        .map(str::to_string)
        .collect();
    if headers.len() < 2 {
        bail!("{origin}: line 1: need an id column and at least one label column, found {headers:?}");
    }
    let id_col = headers.iter().position(|h| h.eq_ignore_ascii_case("material_id")).unwrap_or(0);
    let mut rows: Vec<(u64, csv::StringRecord)> = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = line_of(text, e.position().map(|p| p.byte()).unwrap_or(0));
            anyhow::anyhow!("{origin}: line {line}: {e}")
        })?;
        let line = line_of(text, record.position().map(|p| p.byte()).unwrap_or(0));
        rows.push((line, record));
    }
    // Classify every cell, then decide per column.
    let cells: Vec<Vec<Cell>> = rows.iter().map(|(_, r)| r.iter().map(classify).collect()).collect();
    let numeric: Vec<bool> = (0..headers.len())
        .map(|c| c != id_col && cells.iter().any(|row| matches!(row.get(c), Some(Cell::Numbers(_)))))
        .collect();
    let mut out = Vec::with_capacity(rows.len());
    let mut seen = HashSet::new();
    for ((line, record), row_cells) in rows.iter().zip(cells) {
        let id = record.get(id_col).unwrap_or("").trim().to_string();
        if id.is_empty() {
            bail!("{origin}: line {line}: empty material id in column '{}'", headers[id_col]);
        }
        if !seen.insert(id.clone()) {
            bail!("{origin}: line {line}: material id {id} appears twice");
        }
        let mut targets = BTreeMap::new();
        for (c, cell) in row_cells.into_iter().enumerate() {
            if !numeric[c] {
                continue;
            }
            match cell {
                Cell::Missing => {}
                Cell::Numbers(v) => {
                    targets.insert(headers[c].clone(), v);
                }
                Cell::Text => bail!(
                    "{origin}: line {line}, column '{}': '{}' is not a number in a numeric column",
                    headers[c],
                    record.get(c).unwrap_or("")
                ),
            }
        }
        out.push((id, targets));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_vectors_missing_and_text_columns() {
        let text = "name,material_id,K,tensor,C\nFe,mp-13,170.5,\"[1, [2, 3]]\",1 2 3\nCu,mp-30,nan,,\n";
        let labels = parse_csv(text, "t").unwrap();
        assert_eq!(labels.len(), 2);
        assert_eq!(labels[0].0, "mp-13");
        assert_eq!(labels[0].1["K"], vec![170.5]);
        assert_eq!(labels[0].1["tensor"], vec![1.0, 2.0, 3.0]);
        assert_eq!(labels[0].1["C"], vec![1.0, 2.0, 3.0]);
        assert!(labels[1].1.is_empty(), "NaN and empty cells are absent");
        assert!(!labels[0].1.contains_key("name"), "text column skipped");
    }

    #[test]
    fn non_numeric_in_numeric_column_names_line_and_column() {
        let text = "material_id,K\nmp-1,1.0\nmp-2,abc\n";
        let err = format!("{:#}", parse_csv(text, "l.csv").unwrap_err());
        assert!(err.contains("l.csv: line 3, column 'K': 'abc'"), "{err}");
        let err = format!("{:#}", parse_csv("material_id,K\nmp-1,1\nmp-1,2\n", "l.csv").unwrap_err());
        assert!(err.contains("line 3") && err.contains("twice"), "{err}");
        let crlf = "material_id,K\r\nmp-1,1.0\r\nmp-2,abc\r\n";
        let err = format!("{:#}", parse_csv(crlf, "l.csv").unwrap_err());
        assert!(err.contains("l.csv: line 3, column 'K'"), "{err}");
        let err = format!("{:#}", parse_csv("material_id,K\nmp-1,1,5\n", "l.csv").unwrap_err());
        assert!(err.contains("l.csv: line 2"), "{err}");
    }
}
