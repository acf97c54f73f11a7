//! Labels: a CSV keyed by material id (`material_id` column, else the first column), parsed
//! with BurntSushi's `csv` crate (RFC 4180 quoting, which JSON-array cells need).
//!
//! Cell rules: a number is a scalar; `[1, 2, [3]]` (JSON array, nested arrays flattened) or
//! `1 2 3` (whitespace-separated, as in `materials.csv`'s elastic_tensor) is a vector; empty,
//! `nan`, `NA`, `None`, `null` mean absent. A column with at least one numeric cell is numeric, and
//! a non-numeric cell in it rejects that row (line and column named); a column with no numeric
//! cell (formula, notes) is text and skipped.
//!
//! A bad row (empty id, a duplicated id, a wrong number of fields, text in a numeric column) is
//! returned as a [`RejectedRow`] and the rest of the file is still read, so one typo in a
//! 100k-row label file costs one material, not the ingest. A duplicated id rejects every row with
//! that id: which one is right cannot be known. Only an unreadable header fails the whole file.

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// Targets per material, in file order.
pub type Labels = Vec<(String, BTreeMap<String, Vec<f64>>)>;

/// A row that could not be used, with its 1-based line and why.
#[derive(Clone, Debug, PartialEq)]
pub struct RejectedRow {
    pub line: u64,
    /// The row's material id, empty if it has none.
    pub id: String,
    pub reason: String,
}

/// The usable rows and the rejected ones of a labels CSV.
#[derive(Clone, Debug, Default)]
pub struct ParsedLabels {
    pub labels: Labels,
    /// 1-based line of each entry of `labels` (so a later problem with a row can name it).
    pub lines: Vec<u64>,
    pub rejected: Vec<RejectedRow>,
}

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
pub(crate) fn line_of(text: &str, byte: u64) -> u64 {
    let bytes = text.as_bytes();
    let mut b = (byte as usize).min(bytes.len());
    while b < bytes.len() && (bytes[b] == b'\r' || bytes[b] == b'\n') {
        b += 1;
    }
    bytes[..b].iter().filter(|&&c| c == b'\n').count() as u64 + 1
}

/// Read a labels CSV (plain or gzip). See the module docs for the cell rules.
pub fn read_csv(path: &Path) -> Result<ParsedLabels> {
    let text = super::open_utf8(path)?;
    parse_csv(&text, &path.display().to_string())
}

/// `read_csv` on text in memory; `origin` names it in errors.
pub fn parse_csv(text: &str, origin: &str) -> Result<ParsedLabels> {
    parse_csv_keyed(text, origin, None)
}

/// [`read_csv`] with the ids in column `id_column` (by header name) instead of `material_id`
/// or the first column.
pub fn read_csv_keyed(path: &Path, id_column: Option<&str>) -> Result<ParsedLabels> {
    parse_csv_keyed(&super::open_text(path)?, &path.display().to_string(), id_column)
}

/// [`parse_csv`] with an explicit id column (see [`read_csv_keyed`]).
pub fn parse_csv_keyed(text: &str, origin: &str, id_column: Option<&str>) -> Result<ParsedLabels> {
    // `flexible` so a row with the wrong number of fields is our row-level reject, not a
    // reader error that would end the file.
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(true).trim(csv::Trim::All).from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .with_context(|| format!("{origin}: cannot read the CSV header"))?
        .iter()
        .map(str::to_string)
        .collect();
    if headers.len() < 2 {
        bail!("{origin}: line 1: need an id column and at least one label column, found {headers:?}");
    }
    // An unclosed quote swallows the rest of the file into one header cell: say so instead of
    // reading zero rows.
    if let Some(h) = headers.iter().find(|h| h.contains(['\n', '\r'])) {
        let shown: String = h.chars().take(40).collect();
        bail!("{origin}: line 1: header cell {shown:?}… spans several lines (an unclosed quote in the header?)");
    }
    let mut names = HashSet::new();
    for (c, h) in headers.iter().enumerate() {
        if h.is_empty() || h.contains(['/', '\0']) {
            bail!("{origin}: line 1: column {} has the name {h:?}; a label column needs a non-empty name without '/' or NUL", c + 1);
        }
        if !names.insert(h.as_str()) {
            bail!("{origin}: line 1: column name {h:?} appears twice");
        }
    }
    let id_col = match id_column {
        Some(name) => headers
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("{origin}: line 1: no column {name:?} for the ids; the columns are {headers:?}"))?,
        None => headers.iter().position(|h| h.eq_ignore_ascii_case("material_id")).unwrap_or(0),
    };
    let mut rejected = Vec::new();
    let mut rows: Vec<(u64, csv::StringRecord)> = Vec::new();
    for record in reader.records() {
        match record {
            Ok(record) => {
                let line = line_of(text, record.position().map(|p| p.byte()).unwrap_or(0));
                if record.len() != headers.len() {
                    let id = record.get(id_col).unwrap_or("").trim().to_string();
                    rejected.push(RejectedRow { line, id, reason: format!("{} fields, the header has {}", record.len(), headers.len()) });
                    continue;
                }
                rows.push((line, record));
            }
            Err(e) => {
                // Invalid UTF-8 or I/O: the reader cannot resynchronise reliably, so stop here
                // but keep what was read, and say where it stopped.
                let line = line_of(text, e.position().map(|p| p.byte()).unwrap_or(0));
                rejected.push(RejectedRow { line, id: String::new(), reason: format!("unreadable from here on: {e}") });
                break;
            }
        }
    }
    let mut id_count: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (_, r) in &rows {
        *id_count.entry(r.get(id_col).unwrap_or("").trim().to_string()).or_default() += 1;
    }
    // Classify every cell, then decide per column.
    let cells: Vec<Vec<Cell>> = rows.iter().map(|(_, r)| r.iter().map(classify).collect()).collect();
    let numeric: Vec<bool> = (0..headers.len())
        .map(|c| c != id_col && cells.iter().any(|row| matches!(row.get(c), Some(Cell::Numbers(_)))))
        .collect();
    let mut labels = Vec::with_capacity(rows.len());
    let mut lines = Vec::with_capacity(rows.len());
    let mut seen = HashSet::new();
    'rows: for ((line, record), row_cells) in rows.iter().zip(cells) {
        let id = record.get(id_col).unwrap_or("").trim().to_string();
        let mut reject = |reason: String| rejected.push(RejectedRow { line: *line, id: id.clone(), reason });
        if id.is_empty() {
            reject(format!("empty material id in column '{}'", headers[id_col]));
            continue;
        }
        if id_count[&id] > 1 {
            let first = !seen.contains(&id);
            seen.insert(id.clone());
            reject(format!("material id {id} appears {} times{}", id_count[&id], if first { "; every row with it is rejected" } else { "" }));
            continue;
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
                Cell::Text => {
                    reject(format!("column '{}': '{}' is not a number in a numeric column", headers[c], record.get(c).unwrap_or("")));
                    continue 'rows;
                }
            }
        }
        labels.push((id, targets));
        lines.push(*line);
    }
    rejected.sort_by_key(|r| r.line);
    Ok(ParsedLabels { labels, lines, rejected })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_vectors_missing_and_text_columns() {
        let text = "name,material_id,K,tensor,C\nFe,mp-13,170.5,\"[1, [2, 3]]\",1 2 3\nCu,mp-30,nan,,\n";
        let parsed = parse_csv(text, "t").unwrap();
        assert!(parsed.rejected.is_empty());
        let labels = parsed.labels;
        assert_eq!(labels.len(), 2);
        assert_eq!(labels[0].0, "mp-13");
        assert_eq!(labels[0].1["K"], vec![170.5]);
        assert_eq!(labels[0].1["tensor"], vec![1.0, 2.0, 3.0]);
        assert_eq!(labels[0].1["C"], vec![1.0, 2.0, 3.0]);
        assert!(labels[1].1.is_empty(), "NaN and empty cells are absent");
        assert!(!labels[0].1.contains_key("name"), "text column skipped");
    }

    #[test]
    fn bad_rows_are_rejected_with_line_and_column_and_the_rest_is_kept() {
        let text = "material_id,K\nmp-1,1.0\nmp-2,abc\nmp-3,3.0\n";
        let p = parse_csv(text, "l.csv").unwrap();
        assert_eq!(p.labels.iter().map(|l| l.0.as_str()).collect::<Vec<_>>(), ["mp-1", "mp-3"]);
        assert_eq!(p.rejected.len(), 1);
        assert_eq!((p.rejected[0].line, p.rejected[0].id.as_str()), (3, "mp-2"));
        assert!(p.rejected[0].reason.contains("column 'K': 'abc'"), "{:?}", p.rejected);
        // A duplicated id rejects all its rows; the others survive.
        let p = parse_csv("material_id,K\nmp-1,1\nmp-2,2\nmp-1,3\n", "l.csv").unwrap();
        assert_eq!(p.labels.len(), 1);
        assert_eq!(p.rejected.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 4]);
        assert!(p.rejected[0].reason.contains("appears 2 times"));
        // CRLF line numbers are right.
        let p = parse_csv("material_id,K\r\nmp-1,1.0\r\nmp-2,abc\r\n", "l.csv").unwrap();
        assert_eq!(p.rejected[0].line, 3);
        // Wrong field count and empty id are row rejects.
        let p = parse_csv("material_id,K\nmp-1,1,5\n,2\nmp-9,9\n", "l.csv").unwrap();
        assert_eq!(p.labels.len(), 1);
        assert_eq!(p.rejected.len(), 2);
        assert!(p.rejected[0].reason.contains("3 fields"));
        assert!(p.rejected[1].reason.contains("empty material id"));
        // A header without label columns fails the whole file, naming it.
        let err = format!("{:#}", parse_csv("material_id\nmp-1\n", "l.csv").unwrap_err());
        assert!(err.contains("l.csv: line 1"), "{err}");
    }
}
