//! VASP DOSCAR: the total DOS block (projected blocks after it are ignored). Hand-written (a
//! handful of fixed lines; no maintained Rust crate reads it).
//!
//! Layout: 5 header lines, then `Emax Emin NEDOS Efermi weight` on line 6, then NEDOS lines of
//! `E dos int` (ISPIN=1) or `E dos↑ dos↓ int↑ int↓` (ISPIN=2).

use crate::material::Dos;
use anyhow::{bail, Context, Result};

/// Parse the total DOS of a DOSCAR. `efermi_override` replaces the header's E_F (e.g. the value
/// from a vasprun.xml or OUTCAR of a better-converged run).
pub fn parse_doscar(text: &str, origin: &str, efermi_override: Option<f64>) -> Result<Dos> {
    let lines: Vec<&str> = text.lines().collect();
    let header = lines
        .get(5)
        .with_context(|| format!("{origin}: file ends before line 6 (the 'Emax Emin NEDOS Efermi' header)"))?;
    let tokens: Vec<&str> = header.split_whitespace().collect();
    if tokens.len() < 4 {
        bail!("{origin}: line 6: expected 'Emax Emin NEDOS Efermi weight', found {:?}", header.trim());
    }
    let nedos: usize = tokens[2]
        .parse()
        .ok()
        .filter(|&n| n >= 2)
        .with_context(|| format!("{origin}: line 6: NEDOS '{}' is not an integer ≥ 2", tokens[2]))?;
    // One line per DOS point follows the header: refuse a NEDOS the file cannot hold before reserving it.
    super::check_declared_count(nedos, lines.len() - 6, "DOS points (NEDOS)", origin, 6)?;
    let header_efermi = super::parse_float(tokens[3])
        .filter(|v| v.is_finite())
        .with_context(|| format!("{origin}: line 6: E_F '{}' is not a finite number", tokens[3]))?;
    let efermi = efermi_override.unwrap_or(header_efermi);

    let mut energies = Vec::with_capacity(nedos);
    let mut up = Vec::with_capacity(nedos);
    let mut down: Vec<f64> = Vec::new();
    let mut columns = 0usize;
    for k in 0..nedos {
        let lineno = 7 + k;
        let line = lines.get(6 + k).with_context(|| {
            format!("{origin}: file ends at line {} after {k} of the {nedos} DOS points the header announces (truncated file?)", lines.len())
        })?;
        let row: Vec<f64> = line
            .split_whitespace()
            .map(|t| super::parse_float(t).with_context(|| format!("{origin}: line {lineno}: '{t}' is not a number")))
            .collect::<Result<_>>()?;
        if k == 0 {
            columns = row.len();
            if columns != 3 && columns != 5 {
                bail!("{origin}: line {lineno}: expected 3 (ISPIN=1) or 5 (ISPIN=2) columns, found {columns}");
            }
        } else if row.len() != columns {
            bail!("{origin}: line {lineno}: expected {columns} columns like the first DOS line, found {}", row.len());
        }
        if !row[0].is_finite() {
            bail!("{origin}: line {lineno}: energy is not finite");
        }
        if let Some(&prev) = energies.last() {
            if row[0] <= prev {
                bail!("{origin}: line {lineno}: energy {} does not increase (previous {prev})", row[0]);
            }
        }
        energies.push(row[0]);
        up.push(row[1]);
        if columns == 5 {
            down.push(row[2]);
        }
    }
    Ok(Dos { energies, densities_up: up, densities_down: (columns == 5).then_some(down), efermi })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "1 1 1 0\n x\n x\n CAR\n sys\n 1.0 -1.0 3 0.25 1.0\n";

    #[test]
    fn spin_polarised_and_override() {
        let text = format!("{HEAD} -1.0 0.1 0.2 0 0\n 0.0 0.3 0.4 0 0\n 1.0 0.5 0.6 0 0\n");
        let d = parse_doscar(&text, "t", None).unwrap();
        assert_eq!(d.efermi, 0.25);
        assert_eq!(d.densities_down.as_deref(), Some(&[0.2, 0.4, 0.6][..]));
        assert_eq!(parse_doscar(&text, "t", Some(0.5)).unwrap().efermi, 0.5);
    }

    #[test]
    fn bad_inputs() {
        let cases = [
            (format!("{HEAD} -1.0 0.1 0\n 0.0 0.3 0\n"), "truncated"),
            (format!("{HEAD} -1.0 0.1 0\n 0.0 x 0\n 1.0 0.5 0\n"), "line 8: 'x'"),
            (format!("{HEAD} -1.0 0.1 0\n -2.0 0.3 0\n 1.0 0.5 0\n"), "does not increase"),
            (format!("{HEAD} -1.0 0.1 0\n 0.0 0.3\n 1.0 0.5 0\n"), "line 8: expected 3 columns"),
        ];
        for (text, want) in cases {
            let err = format!("{:#}", parse_doscar(&text, "DOSCAR", None).unwrap_err());
            assert!(err.contains("DOSCAR") && err.contains(want), "wanted {want:?} in {err}");
        }
    }
}
