//! ASE's extended XYZ (`ase.io.write(f, atoms, format="extxyz")`): one crystal per file.
//!
//! Layout: the atom count; a comment line of `key=value` pairs — `Lattice="ax ay az bx by bz cx cy
//! cz"` (rows = lattice vectors, Å), `Properties=name:type:ncols:…` (default
//! `species:S:1:pos:R:3`), optional `pbc="T T T"`; values bare, `"quoted"` (with `\"` escapes) or
//! `{…}`/`[…]` arrays — then one line per atom with the columns `Properties` declares. Species
//! come from a `species` column (symbols) or a `Z` column (atomic numbers); positions are
//! Cartesian (Å).
//!
//! Hand-written: of the Rust crates, `extxyz` 0.2 (built on winnow 0.5 and grep-reader, ~300k
//! lines of dependencies for a comment-line tokenizer) and `extxyz-ng` 0.0.2 (a pre-release) were
//! looked at; the subset a crystal needs is ~150 lines here. Files with several frames, a missing
//! `Lattice` (a molecule) or a non-periodic axis are refused with the reason, never cut to the
//! first frame.

use crate::elements::atomic_number;
use crate::material::Structure;
use anyhow::{bail, Context, Result};

/// `key=value` pairs of an extxyz comment line, keys lower-cased, quotes removed.
fn comment_pairs(line: &str, origin: &str) -> Result<Vec<(String, String)>> {
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    let skip_space = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_space(&mut i);
        if i >= chars.len() {
            return Ok(out);
        }
        let start = i;
        while i < chars.len() && chars[i] != '=' && !chars[i].is_whitespace() {
            i += 1;
        }
        let key: String = chars[start..i].iter().collect();
        skip_space(&mut i);
        if i >= chars.len() || chars[i] != '=' {
            out.push((key.to_lowercase(), "T".to_string())); // a bare key is a true flag
            continue;
        }
        i += 1;
        skip_space(&mut i);
        let mut value = String::new();
        match chars.get(i) {
            Some('"') => {
                i += 1;
                loop {
                    match chars.get(i) {
                        None => bail!("{origin}: line 2: the value of {key} has no closing quote"),
                        Some('\\') if i + 1 < chars.len() => {
                            value.push(chars[i + 1]);
                            i += 2;
                        }
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some(&c) => {
                            value.push(c);
                            i += 1;
                        }
                    }
                }
            }
            Some(&open @ ('{' | '[')) => {
                let close = if open == '{' { '}' } else { ']' };
                i += 1;
                while i < chars.len() && chars[i] != close {
                    value.push(if chars[i] == ',' { ' ' } else { chars[i] });
                    i += 1;
                }
                if i >= chars.len() {
                    bail!("{origin}: line 2: the value of {key} has no closing '{close}'");
                }
                i += 1;
            }
            _ => {
                while i < chars.len() && !chars[i].is_whitespace() {
                    value.push(chars[i]);
                    i += 1;
                }
            }
        }
        out.push((key.to_lowercase(), value));
    }
}

/// Parse a single-frame extended XYZ file into a structure.
pub fn parse_extxyz(text: &str, origin: &str) -> Result<Structure> {
    let lines: Vec<&str> = text.lines().collect();
    let count_line = lines.first().map(|l| l.trim()).unwrap_or("");
    let n: usize = count_line.parse().ok().filter(|&n| n > 0).with_context(|| {
        format!("{origin}: line 1: expected the number of atoms (a positive integer), found {count_line:?}")
    })?;
    let comment = lines.get(1).with_context(|| format!("{origin}: file ends before the comment line (line 2)"))?;
    let pairs = comment_pairs(comment, origin)?;
    let get = |k: &str| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());

    let lattice_text = get("lattice").with_context(|| {
        format!("{origin}: line 2: no Lattice=\"…\" (a molecule or a plain XYZ file; multimat needs a periodic crystal)")
    })?;
    let l: Vec<f64> = lattice_text.split_whitespace().map(super::parse_float).collect::<Option<_>>().unwrap_or_default();
    if l.len() != 9 || l.iter().any(|v| !v.is_finite()) {
        bail!("{origin}: line 2: Lattice needs 9 finite numbers, found {lattice_text:?}");
    }
    let lattice = [[l[0], l[1], l[2]], [l[3], l[4], l[5]], [l[6], l[7], l[8]]];
    if let Some(pbc) = get("pbc") {
        let flags: Vec<&str> = pbc.split_whitespace().collect();
        if flags.len() != 3 || flags.iter().any(|f| !matches!(f.to_ascii_uppercase().as_str(), "T" | "TRUE" | "1")) {
            bail!("{origin}: line 2: pbc=\"{pbc}\": multimat needs a crystal periodic along all three axes");
        }
    }

    // Properties: name:type:ncols triples → the columns of species (or Z) and pos.
    let props = get("properties").unwrap_or("species:S:1:pos:R:3");
    let fields: Vec<&str> = props.split(':').collect();
    if fields.len() % 3 != 0 {
        bail!("{origin}: line 2: Properties={props:?} is not a list of name:type:columns triples");
    }
    let (mut col, mut species_col, mut z_col, mut pos_col) = (0usize, None, None, None);
    for t in fields.chunks(3) {
        let width: usize = t[2].parse().with_context(|| format!("{origin}: line 2: Properties: column count {:?} of {} is not a number", t[2], t[0]))?;
        match (t[0].to_lowercase().as_str(), t[1].to_ascii_uppercase().as_str(), width) {
            ("species", "S", 1) => species_col = Some(col),
            ("z", "I", 1) => z_col = Some(col),
            ("pos", "R", 3) => pos_col = Some(col),
            _ => {}
        }
        col += width;
    }
    let pos_col = pos_col.with_context(|| format!("{origin}: line 2: Properties={props:?} has no pos:R:3 column"))?;
    if species_col.is_none() && z_col.is_none() {
        bail!("{origin}: line 2: Properties={props:?} has neither species:S:1 nor Z:I:1");
    }

    let inverse = super::inverse3(&lattice).with_context(|| format!("{origin}: line 2: the lattice is singular"))?;
    let (mut species, mut frac_coords) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for k in 0..n {
        let lineno = k + 3;
        let line = lines.get(k + 2).with_context(|| format!("{origin}: file ends at line {lineno}, but line 1 announces {n} atoms"))?;
        let tokens: Vec<&str> = line.split_whitespace().collect();
        if tokens.len() < col {
            bail!("{origin}: line {lineno}: {} columns, Properties declares {col}", tokens.len());
        }
        let z = match (species_col, z_col) {
            (Some(c), _) => atomic_number(tokens[c]).with_context(|| format!("{origin}: line {lineno}: unknown element '{}'", tokens[c]))?,
            (None, Some(c)) => tokens[c]
                .parse::<u8>()
                .ok()
                .filter(|z| (1..=118).contains(z))
                .with_context(|| format!("{origin}: line {lineno}: Z '{}' is not an atomic number", tokens[c]))?,
            (None, None) => unreachable!("checked above"),
        };
        let mut cart = [0.0; 3];
        for (a, c) in cart.iter_mut().enumerate() {
            *c = super::parse_float(tokens[pos_col + a])
                .filter(|v| v.is_finite())
                .with_context(|| format!("{origin}: line {lineno}: position '{}' is not a finite number", tokens[pos_col + a]))?;
        }
        species.push(z);
        frac_coords.push(super::cart_to_frac(cart, &inverse));
    }
    if let Some(extra) = lines[(n + 2).min(lines.len())..].iter().position(|l| !l.trim().is_empty()) {
        bail!(
            "{origin}: line {}: more content after the {n} atoms of the first frame: files with several frames are not split; write one structure per file",
            n + 3 + extra
        );
    }
    let s = Structure { lattice, species, frac_coords };
    super::validate_structure(&s, origin)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As ASE 3.22 writes rock salt (`ase.io.write(f, bulk("NaCl", "rocksalt", a=5.64), "extxyz")`).
    const NACL: &str = "2
Lattice=\"0.0 2.82 2.82 2.82 0.0 2.82 2.82 2.82 0.0\" Properties=species:S:1:pos:R:3 pbc=\"T T T\"
Na       0.00000000       0.00000000       0.00000000
Cl       2.82000000       2.82000000       2.82000000
";

    #[test]
    fn ase_rock_salt() {
        let s = parse_extxyz(NACL, "nacl.xyz").unwrap();
        assert_eq!(s.species, vec![11, 17]);
        assert_eq!(s.lattice[1], [2.82, 0.0, 2.82]);
        for (a, b) in s.frac_coords[1].iter().zip([0.5, 0.5, 0.5]) {
            assert!((a - b).abs() < 1e-12, "{:?}", s.frac_coords);
        }
    }

    #[test]
    fn extra_columns_atomic_numbers_and_quoted_info() {
        let text = "1\nenergy=-3.2 config_type=\"bulk \\\"Si\\\"\" Properties=Z:I:1:forces:R:3:pos:R:3 Lattice=\"5 0 0 0 5 0 0 0 5\"\n14 0.1 0.2 0.3 1.0 2.5 0.0\n";
        let s = parse_extxyz(text, "si.extxyz").unwrap();
        assert_eq!(s.species, vec![14]);
        assert!((s.frac_coords[0][1] - 0.5).abs() < 1e-12, "pos follows the forces columns: {:?}", s.frac_coords);
    }

    #[test]
    fn molecules_slabs_and_trajectories_are_refused_with_the_reason() {
        for (text, want) in [
            ("1\nProperties=species:S:1:pos:R:3\nH 0 0 0\n", "no Lattice"),
            (&NACL.replace("T T T", "T T F"), "periodic along all three axes"),
            (&format!("{NACL}{NACL}"), "line 5: more content after the 2 atoms"),
            (&NACL.replace("Cl ", "Xx "), "line 4: unknown element 'Xx'"),
            ("3\nLattice=\"5 0 0 0 5 0 0 0 5\"\nH 0 0 0\n", "file ends at line 4, but line 1 announces 3 atoms"),
        ] {
            let err = format!("{:#}", parse_extxyz(text, "f.xyz").unwrap_err());
            assert!(err.contains("f.xyz") && err.contains(want), "{want}: {err}");
        }
    }
}
