//! VASP volumetric files: CHGCAR, AECCAR0/1/2, CHGCAR.nospin, CHG, PARCHG. Hand-written (no
//! maintained Rust crate reads them; the format is a POSCAR header plus numbers).
//!
//! Layout: a POSCAR-style header (VASP 4 headers without element symbols accepted — only the
//! lattice is kept), a blank line, the grid `nx ny nz`, then nx·ny·nz values of ρ·V_cell with x
//! fastest (Fortran order), 5 or 10 per line. What follows the first grid is ignored: PAW
//! `augmentation occupancies` blocks and, for spin-polarised runs, an optional line of per-atom
//! moments and a second grid (the magnetisation ρ↑ − ρ↓). The first grid is always the total
//! density ρ↑ + ρ↓, which is what multimat uses. Values are reordered to C order
//! (`(ix·ny + iy)·nz + iz`, as `material.rs` documents).

use crate::material::ChargeDensity;
use anyhow::{bail, Context, Result};

/// Parse the first (total-density) grid of a VASP volumetric file.
pub fn parse_chgcar(text: &str, origin: &str) -> Result<ChargeDensity> {
    let lines: Vec<&str> = text.lines().collect();
    let header = super::poscar::parse_header(&lines, origin, true)?;
    let mut i = header.next_line;
    // Skip the blank separator line(s) before the grid dimensions.
    while i < lines.len() && lines[i].trim().is_empty() {
        i += 1;
    }
    let grid_line = lines
        .get(i)
        .with_context(|| format!("{origin}: file ends at line {} where the grid size 'nx ny nz' was expected", i + 1))?;
    let dims: Vec<usize> = grid_line
        .split_whitespace()
        .map(|t| t.parse::<usize>())
        .collect::<Result<_, _>>()
        .ok()
        .filter(|d: &Vec<usize>| d.len() == 3 && d.iter().all(|&n| n > 0))
        .with_context(|| {
            format!("{origin}: line {}: expected the grid size 'nx ny nz' (three positive integers), found {:?}", i + 1, grid_line.trim())
        })?;
    let (nx, ny, nz) = (dims[0], dims[1], dims[2]);
    let total = nx
        .checked_mul(ny)
        .and_then(|v| v.checked_mul(nz))
        .with_context(|| format!("{origin}: line {}: grid {nx}×{ny}×{nz} overflows", i + 1))?;
    // Every value needs at least a digit and a separator: refuse a grid the file cannot hold
    // before reserving memory for it.
    super::check_declared_count(total, super::bytes_from_line(text, &lines, i + 1) / 2, &format!("grid values ({nx}×{ny}×{nz})"), origin, i + 1)?;
    i += 1;

    // (nx·ny·nz) in file order: x fastest.
    let mut file_order: Vec<f64> = Vec::with_capacity(total);
    while file_order.len() < total {
        let Some(line) = lines.get(i) else {
            bail!(
                "{origin}: file ends at line {} after {} of the {total} values a {nx}×{ny}×{nz} grid needs (truncated file?)",
                lines.len(),
                file_order.len()
            );
        };
        if line.trim_start().starts_with("augmentation") {
            bail!(
                "{origin}: line {}: 'augmentation occupancies' after only {} of the {total} values a {nx}×{ny}×{nz} grid needs",
                i + 1,
                file_order.len()
            );
        }
        for token in line.split_whitespace() {
            if file_order.len() == total {
                bail!(
                    "{origin}: line {}: more values than the {nx}×{ny}×{nz} grid holds (extra '{token}')",
                    i + 1
                );
            }
            match super::parse_float(token) {
                Some(v) if v.is_finite() => file_order.push(v),
                _ => bail!(
                    "{origin}: line {}: '{token}' is not a finite number (value {} of the {nx}×{ny}×{nz} grid)",
                    i + 1,
                    file_order.len() + 1
                ),
            }
        }
        i += 1;
    }
    check_after_grid(&lines, i, &dims, header.frac_coords.len(), origin)?;

    // Reorder: file index ix + nx·(iy + ny·iz) → C index (ix·ny + iy)·nz + iz.
    let mut values = vec![0.0f64; total]; // (nx, ny, nz) C order
    for iz in 0..nz {
        for iy in 0..ny {
            let file_row = nx * (iy + ny * iz);
            for ix in 0..nx {
                values[(ix * ny + iy) * nz + iz] = file_order[file_row + ix];
            }
        }
    }
    Ok(ChargeDensity { lattice: header.lattice, grid: [nx, ny, nz], values })
}

/// What follows the first grid must be one of the known continuations; anything else means the
/// grid size in the header does not match the data (a wrong-shape file). Known: end of file;
/// `augmentation occupancies`; or a spin block, which starts with the same `nx ny nz` line,
/// optionally preceded by the per-atom moments (`natoms` numbers, possibly over several lines).
fn check_after_grid(lines: &[&str], start: usize, dims: &[usize], natoms: usize, origin: &str) -> Result<()> {
    let rest: Vec<(usize, &str)> =
        lines.iter().enumerate().skip(start).filter(|(_, l)| !l.trim().is_empty()).map(|(i, l)| (i, l.trim())).take(64).collect();
    let Some(&(first_idx, first)) = rest.first() else {
        return Ok(()); // end of file: AECCAR/CHG-style file without augmentation
    };
    if first.starts_with("augmentation") {
        return Ok(());
    }
    let is_dims = |l: &str| {
        let v: Vec<usize> = l.split_whitespace().filter_map(|t| t.parse().ok()).collect();
        v == dims && l.split_whitespace().count() == 3
    };
    let mut moments = 0usize;
    for &(_, line) in &rest {
        if is_dims(line) {
            if moments == 0 || moments == natoms {
                return Ok(());
            }
            break;
        }
        let n = line.split_whitespace().count();
        if !line.split_whitespace().all(|t| super::parse_float(t).is_some()) {
            break;
        }
        moments += n;
        if moments > natoms {
            break;
        }
    }
    bail!(
        "{origin}: line {}: unexpected content after the {}×{}×{} density grid: {:?} — the grid size in the header \
         does not match the number of values",
        first_idx + 1,
        dims[0],
        dims[1],
        dims[2],
        first.chars().take(60).collect::<String>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(values: &str) -> String {
        format!(
            "tiny\n1.0\n2 0 0\n0 3 0\n0 0 4\nH\n1\nDirect\n0 0 0\n\n 2 3 1\n{values}augmentation occupancies 1 1\n 0.1\n"
        )
    }

    #[test]
    fn reorders_x_fastest_to_c_order() {
        // file order: (ix,iy) = (0,0) (1,0) (0,1) (1,1) (0,2) (1,2)
        let d = parse_chgcar(&tiny(" 1 2 3 4 5\n 6\n"), "t").unwrap();
        assert_eq!(d.grid, [2, 3, 1]);
        // C order (ix, iy): (0,0)=1 (0,1)=3 (0,2)=5 (1,0)=2 (1,1)=4 (1,2)=6
        assert_eq!(d.values, vec![1.0, 3.0, 5.0, 2.0, 4.0, 6.0]);
        assert!((d.electron_count() - 3.5).abs() < 1e-12);
    }

    #[test]
    fn spin_block_after_the_grid_is_skipped() {
        let text = "tiny\n1.0\n2 0 0\n0 3 0\n0 0 4\nH\n1\nDirect\n0 0 0\n\n 2 3 1\n 1 2 3 4 5\n 6\n 0.6\n 2 3 1\n 0 0 0 0 0\n 0\n";
        assert_eq!(parse_chgcar(text, "t").unwrap().values.len(), 6);
        let no_moments = text.replace(" 0.6\n", "");
        assert_eq!(parse_chgcar(&no_moments, "t").unwrap().values.len(), 6);
    }

    #[test]
    fn bad_grids_are_errors_naming_the_line() {
        let cases = [
            (tiny(" 1 2 3 4 5\n"), "after only 5 of the 6"),
            (tiny(" 1 2 3 4 5\n 6 7\n"), "more values"),
            (tiny(" 1 2 3 x 5\n 6\n"), "line 12: 'x' is not a finite number"),
            (tiny(" 1 2 3 NaN 5\n 6\n"), "'NaN' is not a finite number"),
            (tiny(" 1 2 3 4 5\n 6\n").replace(" 2 3 1\n", " 2 3\n"), "line 11"),
            ("tiny\n1.0\n2 0 0\n0 3 0\n0 0 4\nH\n1\nDirect\n0 0 0\n\n 2 3 1\n 1 2\n".to_string(), "truncated"),
            (tiny(" 1 2 3 4 5\n 6\n").replace(" 2 3 1\n", " 5 1 1\n"), "line 13: unexpected content after the 5×1×1"),
        ];
        for (text, want) in cases {
            let err = format!("{:#}", parse_chgcar(&text, "CHGCAR").unwrap_err());
            assert!(err.contains("CHGCAR") && err.contains(want), "wanted {want:?} in {err}");
        }
    }
}
