//! VASP POSCAR/CONTCAR (VASP 5 and 6 layout, with the element-symbols line) and the POSCAR-style
//! header that CHGCAR/AECCAR files start with. Hand-written: the format is a few fixed lines and
//! no maintained Rust crate reads it.
//!
//! Layout: comment; scale (one number, negative = target cell volume in Å³, or three per-axis
//! factors); three lattice rows; element symbols (VASP 5+; POTCAR suffixes like `Fe_pv` or
//! VASP 6 hashes `Si/5c4a…` allowed); counts; optional `Selective dynamics`; `Direct` or
//! `Cartesian`; one line per atom (extra columns — selective flags, symbols — ignored).

use crate::elements::atomic_number;
use crate::material::Structure;
use anyhow::{bail, Context, Result};

/// Parse a POSCAR/CONTCAR. VASP 4 files (no element-symbols line) are rejected with an error
/// that says so, because the elements cannot be known without the POTCAR.
pub fn parse_poscar(text: &str, origin: &str) -> Result<Structure> {
    let lines: Vec<&str> = text.lines().collect();
    let header = parse_header(&lines, origin, false)?;
    let structure = Structure {
        lattice: header.lattice,
        species: header.species.expect("species required when allow_missing_species is false"),
        frac_coords: header.frac_coords,
    };
    super::validate_structure(&structure, origin)?;
    Ok(structure)
}

/// The POSCAR part of a file: the scaled lattice, species (None for a VASP 4 header when
/// allowed), fractional coordinates, and the index of the first line after the coordinates.
pub(crate) struct PoscarHeader {
    pub lattice: [[f64; 3]; 3],
    pub species: Option<Vec<u8>>,
    pub frac_coords: Vec<[f64; 3]>,
    pub next_line: usize,
}

fn line_at<'a>(lines: &[&'a str], i: usize, origin: &str, what: &str) -> Result<&'a str> {
    lines
        .get(i)
        .copied()
        .with_context(|| format!("{origin}: file ends at line {} where {what} was expected", i + 1))
}

fn floats(line: &str, n: usize, lineno: usize, origin: &str, what: &str) -> Result<Vec<f64>> {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    if tokens.len() < n {
        bail!("{origin}: line {lineno}: expected {n} numbers ({what}), found {:?}", line.trim());
    }
    tokens[..n]
        .iter()
        .map(|t| match super::parse_float(t) {
            Some(v) if v.is_finite() => Ok(v),
            _ => bail!("{origin}: line {lineno}: {what}: '{t}' is not a finite number"),
        })
        .collect()
}

/// Parse the POSCAR-format header starting at line 0 of `lines`.
pub(crate) fn parse_header(lines: &[&str], origin: &str, allow_missing_species: bool) -> Result<PoscarHeader> {
    line_at(lines, 0, origin, "the comment line")?;
    let scale_line = line_at(lines, 1, origin, "the scale factor")?;
    let scale_tokens = scale_line.split_whitespace().count();
    let scale = if scale_tokens >= 3 && floats(scale_line, 3, 2, origin, "scale").is_ok() {
        floats(scale_line, 3, 2, origin, "per-axis scale factors")?
    } else {
        floats(scale_line, 1, 2, origin, "scale factor")?
    };
    let mut lattice = [[0.0; 3]; 3];
    for (k, row) in lattice.iter_mut().enumerate() {
        let line = line_at(lines, 2 + k, origin, "a lattice vector")?;
        let v = floats(line, 3, 3 + k, origin, "lattice vector")?;
        row.copy_from_slice(&v);
    }
    // Scale: one positive factor multiplies everything; a negative one is the target volume.
    let factors: [f64; 3] = if scale.len() == 3 {
        if scale.iter().any(|&s| s <= 0.0) {
            bail!("{origin}: line 2: per-axis scale factors must be positive, found {scale:?}");
        }
        [scale[0], scale[1], scale[2]]
    } else if scale[0] < 0.0 {
        let raw = Structure { lattice, species: vec![], frac_coords: vec![] }.volume().abs();
        if raw < 1e-12 {
            bail!("{origin}: lattice is degenerate (zero volume)");
        }
        let f = (-scale[0] / raw).cbrt();
        [f, f, f]
    } else if scale[0] == 0.0 {
        bail!("{origin}: line 2: scale factor is zero");
    } else {
        [scale[0]; 3]
    };
    for row in lattice.iter_mut() {
        for (x, f) in row.iter_mut().zip(factors) {
            *x *= f;
        }
    }

    // Line 6: element symbols (VASP 5+) or, in VASP 4, directly the counts.
    let mut i = 5;
    let symbols_line = line_at(lines, i, origin, "the element symbols (VASP 5) or counts")?;
    let first = symbols_line.split_whitespace().next().unwrap_or("");
    let species_symbols: Option<Vec<(u8, String)>> = if first.parse::<i64>().is_ok() {
        if !allow_missing_species {
            bail!(
                "{origin}: line 6: VASP 4 format (counts without an element-symbols line) is not \
                 supported: the elements are unknown without the POTCAR; add a line with the \
                 element symbols above the counts"
            );
        }
        None
    } else {
        let mut out = Vec::new();
        for token in symbols_line.split_whitespace() {
            // VASP 6 writes "Si/5c4a…" (POTCAR hash); "Fe_pv" is a POTCAR variant name.
            let bare = token.split('/').next().unwrap_or(token);
            let z = atomic_number(bare).with_context(|| {
                format!("{origin}: line 6: '{token}' is not a chemical element symbol")
            })?;
            out.push((z, token.to_string()));
        }
        i += 1;
        Some(out)
    };
    let counts_line = line_at(lines, i, origin, "the atom counts")?;
    let counts: Vec<usize> = counts_line
        .split_whitespace()
        .map(|t| {
            t.parse::<usize>()
                .with_context(|| format!("{origin}: line {}: atom count '{t}' is not a non-negative integer", i + 1))
        })
        .collect::<Result<_>>()?;
    if counts.is_empty() {
        bail!("{origin}: line {}: no atom counts", i + 1);
    }
    if let Some(sym) = &species_symbols {
        if sym.len() != counts.len() {
            bail!(
                "{origin}: line {}: {} element symbols but {} counts",
                i + 1,
                sym.len(),
                counts.len()
            );
        }
    }
    let total = counts
        .iter()
        .try_fold(0usize, |acc, &c| acc.checked_add(c))
        .with_context(|| format!("{origin}: line {}: atom counts {counts:?} overflow", i + 1))?;
    if total == 0 {
        bail!("{origin}: line {}: the cell has no atoms", i + 1);
    }
    // One line per atom follows the mode line(s): a count the file cannot hold is a corrupt header.
    super::check_declared_count(total, lines.len().saturating_sub(i + 2), "atoms", origin, i + 1)?;
    i += 1;
    let mut mode_line = line_at(lines, i, origin, "'Direct' or 'Cartesian'")?.trim();
    if mode_line.starts_with(['s', 'S']) {
        i += 1;
        mode_line = line_at(lines, i, origin, "'Direct' or 'Cartesian'")?.trim();
    }
    let cartesian = match mode_line.chars().next() {
        Some('c' | 'C' | 'k' | 'K') => true,
        Some('d' | 'D') => false,
        _ => bail!(
            "{origin}: line {}: expected 'Direct' or 'Cartesian', found {:?}",
            i + 1,
            mode_line
        ),
    };
    i += 1;
    let inverse = super::inverse3(&lattice).with_context(|| format!("{origin}: lattice is singular"))?;
    let mut frac_coords = Vec::with_capacity(total);
    for atom in 0..total {
        let line = line_at(lines, i, origin, &format!("the position of atom {} of {total}", atom + 1))?;
        let v = floats(line, 3, i + 1, origin, "atomic position")?;
        let p = [v[0], v[1], v[2]];
        frac_coords.push(if cartesian {
            let cart = [p[0] * factors[0], p[1] * factors[1], p[2] * factors[2]];
            super::cart_to_frac(cart, &inverse)
        } else {
            p
        });
        i += 1;
    }
    let species = species_symbols.map(|sym| {
        sym.iter().zip(&counts).flat_map(|((z, _), &n)| std::iter::repeat_n(*z, n)).collect()
    });
    Ok(PoscarHeader { lattice, species, frac_coords, next_line: i })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SI: &str = "Si2\n1.0\n3.867422 0 0\n1.933711 3.349287 0\n0 -2.232856 3.157737\nSi\n2\nDirect\n0 0 0\n0.75 0.5 0.75\n";

    #[test]
    fn vasp5_direct() {
        let s = parse_poscar(SI, "t").unwrap();
        assert_eq!(s.species, vec![14, 14]);
        assert_eq!(s.frac_coords[1], [0.75, 0.5, 0.75]);
    }

    #[test]
    fn negative_scale_is_target_volume_and_cartesian_is_scaled() {
        let text = "cubic\n-64.0\n1 0 0\n0 1 0\n0 0 1\nNa Cl\n1 1\nSelective dynamics\nCartesian\n0 0 0 T T T\n0.5 0.5 0.5 F F F\n";
        let s = parse_poscar(text, "t").unwrap();
        assert!((s.volume() - 64.0).abs() < 1e-9);
        // cartesian (0.5,0.5,0.5) scaled by 4 → 2 Å in a 4 Å cube → fractional 0.5
        for k in 0..3 {
            assert!((s.frac_coords[1][k] - 0.5).abs() < 1e-12);
        }
        assert_eq!(s.species, vec![11, 17]);
    }

    #[test]
    fn vasp4_is_a_clear_error() {
        let text = "Si\n1.0\n1 0 0\n0 1 0\n0 0 1\n2\nDirect\n0 0 0\n0.5 0.5 0.5\n";
        let err = format!("{:#}", parse_poscar(text, "POSCAR").unwrap_err());
        assert!(err.contains("POSCAR: line 6") && err.contains("VASP 4"), "{err}");
    }

    #[test]
    fn bad_inputs_name_the_line() {
        let cases = [
            (SI.replace("Si\n2", "Xq\n2"), "line 6"),
            (SI.replace("0.75 0.5 0.75", "0.75 abc 0.75"), "line 10"),
            // A missing atom line is caught by the declared-size check before any parsing.
            (SI.replace("0.75 0.5 0.75\n", ""), "declares 2 atoms, but the rest of the file can hold at most 1"),
            (SI.replace("Direct", "0 0 0"), "line 8"),
            (SI.replace("1.933711 3.349287 0", "nan 3.3 0"), "line 4"),
        ];
        for (text, want) in cases {
            let err = format!("{:#}", parse_poscar(&text, "POSCAR").unwrap_err());
            assert!(err.contains(want), "wanted {want:?} in {err}");
        }
    }
}
