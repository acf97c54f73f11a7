//! The paper's Table 1 assembled from sweeps (`multimat table1`): each sweep's `table.csv`
//! (one target = one column) gives, per variant (= row), the test MAE mean ± std at the learning
//! rate chosen on validation, set beside the paper's number for the same row and column.
//!
//! Rows are matched by variant name against the paper's row labels ([`PAPER_ROWS`], the names
//! `configs/paper/sweep-*.toml` use); columns by the sweep's target ([`PAPER_COLUMNS`]). Rows and
//! columns the paper does not have are kept, after the paper's, with no paper number. A sweep
//! with an external test set (`data.test_shards`) adds its external MAE beside the column.

use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Table 1's columns: heading and the shard target the `configs/paper` sweeps fine-tune.
pub const PAPER_COLUMNS: [(&str, &str); 4] =
    [("Bulk modulus", "K_VRH"), ("Shear modulus", "G_VRH"), ("Elastic tensor", "elastic_tensor"), ("Band gap (SNUMAT)", "band_gap_hse")];

/// Table 1 of the paper (/work/shared/paper/multimat-paper.txt, "Detailed results for crystal
/// property prediction"): row label, section, test MAE mean and std over three seeds per column
/// of [`PAPER_COLUMNS`] (GPa for the moduli and the elastic tensor, eV for the band gap).
pub const PAPER_ROWS: [(&str, &str, [(f64, f64); 4]); 13] = [
    ("CGCNN", "Without MultiMat", [(11.069, 0.106), (18.508, 0.182), (13.299, 0.027), (0.495, 0.008)]),
    ("PotNet", "Without MultiMat", [(9.618, 0.237), (17.845, 0.475), (11.947, 0.175), (0.441, 0.005)]),
    ("Crystal, DOS", "Two-modality MultiMat", [(8.757, 0.050), (16.143, 0.171), (11.538, 0.089), (0.390, 0.000)]),
    ("Crystal, charge density", "Two-modality MultiMat", [(8.932, 0.164), (16.466, 0.221), (11.619, 0.050), (0.407, 0.002)]),
    ("Crystal, text", "Two-modality MultiMat", [(8.738, 0.133), (16.694, 0.372), (11.588, 0.113), (0.409, 0.003)]),
    ("Crystal, DOS, charge density / AllPairsCLIP", "Three-modality MultiMat", [(8.652, 0.110), (16.253, 0.239), (11.476, 0.104), (0.391, 0.002)]),
    ("Crystal, DOS, text / AllPairsCLIP", "Three-modality MultiMat", [(8.708, 0.095), (16.571, 0.520), (11.525, 0.048), (0.397, 0.002)]),
    ("Crystal, charge density, text / AllPairsCLIP", "Three-modality MultiMat", [(8.541, 0.169), (16.318, 0.358), (11.382, 0.052), (0.405, 0.004)]),
    ("Crystal, DOS, charge density / AnchoredCLIP", "Three-modality MultiMat", [(8.531, 0.097), (16.045, 0.123), (11.424, 0.013), (0.396, 0.002)]),
    ("Crystal, DOS, text / AnchoredCLIP", "Three-modality MultiMat", [(8.631, 0.058), (16.218, 0.108), (11.543, 0.041), (0.396, 0.000)]),
    ("Crystal, charge density, text / AnchoredCLIP", "Three-modality MultiMat", [(8.814, 0.091), (16.555, 0.144), (11.469, 0.021), (0.399, 0.001)]),
    ("Crystal, DOS, charge density, text / AllPairsCLIP", "Four-modality MultiMat", [(8.639, 0.116), (16.368, 0.285), (11.421, 0.015), (0.397, 0.002)]),
    ("Crystal, DOS, charge density, text / AnchoredCLIP", "Four-modality MultiMat", [(8.760, 0.115), (15.994, 0.229), (11.407, 0.051), (0.397, 0.004)]),
];

/// The chosen-learning-rate row of one variant in one sweep's `table.csv`.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepRow {
    pub variant: String,
    pub lr: f64,
    pub seeds: usize,
    pub test_mae: (f64, f64),
    /// External test set MAE (mean, std), when the sweep had one.
    pub external_mae: Option<(f64, f64)>,
}

/// One sweep's table: its target, units and chosen rows in file order.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepTable {
    pub source: PathBuf,
    pub target: String,
    pub units: String,
    pub external_n: Option<usize>,
    pub rows: Vec<SweepRow>,
}

/// Read `table.csv` of a sweep directory (or the CSV file itself), as `sweep::aggregate` writes it.
pub fn read_sweep_table(path: &Path) -> Result<SweepTable> {
    let file = if path.is_dir() { path.join("table.csv") } else { path.to_path_buf() };
    let text = crate::io::open_utf8(&file)
        .with_context(|| format!("{}: no sweep table (run `multimat sweep` or `multimat sweep --aggregate` first)", file.display()))?;
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let headers = r.headers().with_context(|| format!("{}: reading the header", file.display()))?.clone();
    let col = |name: &str| -> Result<usize> {
        headers.iter().position(|h| h == name).with_context(|| {
            format!("{}: no column {name:?} (a table from an older multimat? re-run `multimat sweep --aggregate`)", file.display())
        })
    };
    let (c_var, c_lr, c_chosen, c_seeds, c_mean, c_std, c_units, c_target) =
        (col("variant")?, col("lr")?, col("chosen")?, col("seeds")?, col("test_mae_mean")?, col("test_mae_std")?, col("units")?, col("target")?);
    let (c_en, c_emean, c_estd) = (col("external_n")?, col("external_mae_mean")?, col("external_mae_std")?);
    let mut t = SweepTable { source: file.clone(), target: String::new(), units: String::new(), external_n: None, rows: Vec::new() };
    for (k, rec) in r.records().enumerate() {
        let line = k + 2;
        let rec = rec.with_context(|| format!("{}: line {line}", file.display()))?;
        let field = |c: usize| rec.get(c).unwrap_or("");
        let num = |c: usize, what: &str| -> Result<f64> {
            let s = field(c);
            if s.is_empty() {
                return Ok(f64::NAN); // a std over one seed is written empty
            }
            s.parse::<f64>().map_err(|_| anyhow::anyhow!("{}: line {line}: {what} {s:?} is not a number", file.display()))
        };
        if k == 0 {
            t.target = field(c_target).to_string();
            t.units = field(c_units).to_string();
            t.external_n = if field(c_en).is_empty() { None } else { Some(field(c_en).parse().map_err(|_| anyhow::anyhow!("{}: line {line}: external_n {:?} is not a count", file.display(), field(c_en)))?) };
        } else if field(c_target) != t.target {
            bail!("{}: line {line}: target {:?} differs from line 2's {:?}", file.display(), field(c_target), t.target);
        }
        if field(c_chosen) != "true" {
            continue;
        }
        let seeds = field(c_seeds).parse().map_err(|_| anyhow::anyhow!("{}: line {line}: seeds {:?} is not a count", file.display(), field(c_seeds)))?;
        let external_mae = if t.external_n.is_some() { Some((num(c_emean, "external_mae_mean")?, num(c_estd, "external_mae_std")?)) } else { None };
        t.rows.push(SweepRow {
            variant: field(c_var).to_string(),
            lr: num(c_lr, "lr")?,
            seeds,
            test_mae: (num(c_mean, "test_mae_mean")?, num(c_std, "test_mae_std")?),
            external_mae,
        });
    }
    if t.rows.is_empty() {
        bail!("{}: no chosen rows (an empty or unfinished sweep table)", file.display());
    }
    Ok(t)
}

/// Table 1 in the paper's layout: rows × columns, ours beside the paper's.
pub struct Table1 {
    /// (heading, target, paper column index) in order: the paper's columns first.
    pub columns: Vec<(String, SweepTable, Option<usize>)>,
    /// (row label, section, paper row index).
    pub rows: Vec<(String, String, Option<usize>)>,
}

/// Arrange the sweeps' tables: one column per target (two sweeps of one target are an error).
pub fn assemble(tables: Vec<SweepTable>) -> Result<Table1> {
    let mut cols: Vec<(String, SweepTable, Option<usize>)> = Vec::new();
    for t in tables {
        if let Some((_, other, _)) = cols.iter().find(|(_, o, _)| o.target == t.target) {
            bail!("{} and {} are both sweeps of target {:?}; give one sweep per column", other.source.display(), t.source.display(), t.target);
        }
        let paper = PAPER_COLUMNS.iter().position(|(_, target)| *target == t.target);
        let heading = match paper {
            Some(i) => PAPER_COLUMNS[i].0.to_string(),
            None => t.target.clone(),
        };
        cols.push((heading, t, paper));
    }
    // The paper's columns in its order, then the others in the order given.
    cols.sort_by_key(|(_, _, p)| p.unwrap_or(usize::MAX));
    let mut rows: Vec<(String, String, Option<usize>)> = Vec::new();
    for (i, (label, section, _)) in PAPER_ROWS.iter().enumerate() {
        if cols.iter().any(|(_, t, _)| t.rows.iter().any(|r| r.variant == *label)) {
            rows.push((label.to_string(), section.to_string(), Some(i)));
        }
    }
    for (_, t, _) in &cols {
        for r in &t.rows {
            if !rows.iter().any(|(l, _, _)| *l == r.variant) {
                rows.push((r.variant.clone(), "Not in the paper".to_string(), None));
            }
        }
    }
    Ok(Table1 { columns: cols, rows })
}

fn pm(v: (f64, f64), digits: usize) -> String {
    if !v.0.is_finite() {
        "—".to_string()
    } else if v.1.is_finite() {
        format!("{:.*} ± {:.*}", digits, v.0, digits, v.1)
    } else {
        format!("{:.*}", digits, v.0)
    }
}

/// Decimals for a column: the paper's three, or more for values below 1 (eV band gaps).
fn digits(t: &SweepTable) -> usize {
    if t.rows.iter().all(|r| r.test_mae.0.abs() < 1.0) { 4 } else { 3 }
}

impl Table1 {
    pub fn markdown(&self) -> String {
        let mut s = String::from("# Table 1: crystal property prediction, test MAE\n\n");
        s.push_str(
            "Ours: mean ± sample std over seeds at the learning rate with the lowest mean validation MAE \
(`multimat sweep`). Paper: Table 1 of the MultiMat paper (mean ± std over three seeds). \
— = no such row in that sweep or in the paper.\n\n",
        );
        for (heading, t, _) in &self.columns {
            let units = if t.units.is_empty() { String::new() } else { format!(", {}", t.units) };
            let ext = t.external_n.map(|n| format!("; external test set of {n} records")).unwrap_or_default();
            let _ = writeln!(s, "- {heading}: target `{}`{units}, from {}{ext}", t.target, t.source.display());
        }
        s.push('\n');
        let mut head = String::from("| Section | Row |");
        let mut rule = String::from("|---|---|");
        for (heading, t, _) in &self.columns {
            let _ = write!(head, " {heading} (ours) | {heading} (paper) |");
            rule.push_str("---|---|");
            if t.external_n.is_some() {
                let _ = write!(head, " {heading} (ours, external) |");
                rule.push_str("---|");
            }
        }
        let _ = writeln!(s, "{head}\n{rule}");
        for (label, section, paper_row) in &self.rows {
            let _ = write!(s, "| {section} | {label} |");
            for (_, t, paper_col) in &self.columns {
                let d = digits(t);
                let ours = t.rows.iter().find(|r| r.variant == *label);
                let paper = match (paper_row, paper_col) {
                    (Some(r), Some(c)) => pm(PAPER_ROWS[*r].2[*c], 3),
                    _ => "—".to_string(),
                };
                let _ = write!(s, " {} | {paper} |", ours.map(|r| pm(r.test_mae, d)).unwrap_or_else(|| "—".into()));
                if t.external_n.is_some() {
                    let _ = write!(s, " {} |", ours.and_then(|r| r.external_mae).map(|e| pm(e, d)).unwrap_or_else(|| "—".into()));
                }
            }
            s.push('\n');
        }
        s
    }
}

/// Read the sweeps, assemble Table 1 and write it as Markdown to `out` (atomically).
pub fn write(sweeps: &[PathBuf], out: &Path) -> Result<Table1> {
    if sweeps.is_empty() {
        bail!("no sweeps given");
    }
    let tables = sweeps.iter().map(|p| read_sweep_table(p)).collect::<Result<Vec<_>>>()?;
    let t = assemble(tables)?;
    crate::atomic::write_bytes(out, t.markdown().as_bytes())?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_rows_are_distinct_and_match_the_paper_configs_names() {
        let mut names: Vec<&str> = PAPER_ROWS.iter().map(|r| r.0).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PAPER_ROWS.len());
        // Spot checks against the paper's text (Table 1).
        assert_eq!(PAPER_ROWS[1].2[0], (9.618, 0.237));
        assert_eq!(PAPER_ROWS[12].2[1], (15.994, 0.229));
    }
}
