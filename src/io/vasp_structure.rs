//! Crystal structures from VASP outputs that are not POSCAR files, for folders that lack a
//! POSCAR/CONTCAR: the final structure of a `vasprun.xml` (`<structure name="finalpos">`, species
//! from `<atominfo>`), and the POSCAR-style header of a volumetric file (CHGCAR, CHGCAR.*,
//! AECCAR0/1/2, CHG, PARCHG).
//!
//! vasprun.xml is streamed with `quick-xml` (files reach hundreds of MB; only the atom list and
//! the final structure are kept). A volumetric file is read only up to the blank line that ends
//! its header, so a 60³ CHGCAR costs a few lines, not its grid.

use crate::elements::atomic_number;
use crate::material::Structure;
use anyhow::{bail, Context, Result};
use quick_xml::events::Event;
use std::io::BufRead;
use std::path::Path;

/// The structure at the end of a VASP run (`finalpos`) in a vasprun.xml (plain or gzip).
pub fn read_vasprun_structure(path: &Path) -> Result<Structure> {
    parse_vasprun_structure(super::open_reader(path)?, &path.display().to_string())
}

/// [`read_vasprun_structure`] on any buffered reader over vasprun.xml text.
pub fn parse_vasprun_structure<R: BufRead>(reader: R, origin: &str) -> Result<Structure> {
    let mut xml = quick_xml::Reader::from_reader(reader);
    xml.config_mut().trim_text(true);
    let mut buf = Vec::with_capacity(1 << 12);
    let mut species: Vec<u8> = Vec::new();
    let (mut in_atoms, mut in_rc, mut cell_in_rc) = (false, false, 0usize);
    let mut in_final = false;
    let mut varray: Option<String> = None; // name of the <varray> being read inside finalpos
    let mut in_v = false;
    let (mut basis, mut positions): (Vec<[f64; 3]>, Vec<[f64; 3]>) = (Vec::new(), Vec::new());
    let mut found_final = false;
    let mut text = String::new();
    loop {
        buf.clear();
        let event = xml.read_event_into(&mut buf).map_err(|e| {
            anyhow::anyhow!("{origin}: malformed XML near byte {}: {e} (truncated file?)", xml.buffer_position())
        })?;
        let name_attr = |e: &quick_xml::events::BytesStart| -> Option<String> {
            e.try_get_attribute("name").ok().flatten().map(|a| String::from_utf8_lossy(&a.value).into_owned())
        };
        match event {
            Event::Start(e) => match e.name().as_ref() {
                b"array" if name_attr(&e).as_deref() == Some("atoms") => in_atoms = true,
                b"rc" if in_atoms => {
                    in_rc = true;
                    cell_in_rc = 0;
                }
                b"c" if in_rc => text.clear(),
                b"structure" if name_attr(&e).as_deref() == Some("finalpos") => {
                    in_final = true;
                    found_final = true;
                }
                b"varray" if in_final => varray = name_attr(&e),
                b"v" if varray.is_some() => {
                    in_v = true;
                    text.clear();
                }
                _ => {}
            },
            Event::Text(t) if (in_rc && cell_in_rc == 0) || in_v => {
                text.push_str(&t.unescape().map_err(|e| anyhow::anyhow!("{origin}: {e}"))?);
            }
            Event::End(e) => match e.name().as_ref() {
                b"array" => in_atoms = false,
                b"rc" => in_rc = false,
                b"c" if in_rc => {
                    if cell_in_rc == 0 {
                        let symbol = text.trim();
                        let z = atomic_number(symbol)
                            .with_context(|| format!("{origin}: <atominfo>: unknown element '{symbol}' (atom {})", species.len() + 1))?;
                        species.push(z);
                    }
                    cell_in_rc += 1;
                }
                b"v" if in_v => {
                    in_v = false;
                    let target = match varray.as_deref() {
                        Some("basis") => &mut basis,
                        Some("positions") => &mut positions,
                        _ => continue, // rec_basis, selective flags, velocities: not needed
                    };
                    let values: Vec<f64> = text.split_whitespace().filter_map(super::parse_float).collect();
                    let row: [f64; 3] = values
                        .get(..3)
                        .filter(|_| values.len() == 3 && values.iter().all(|v| v.is_finite()))
                        .and_then(|v| v.try_into().ok())
                        .with_context(|| format!("{origin}: finalpos: <v> row {:?} is not three finite numbers", text.trim()))?;
                    target.push(row);
                }
                b"varray" => varray = None,
                b"structure" if in_final => break,
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    if !found_final {
        bail!("{origin}: no final structure (<structure name=\"finalpos\">): the run did not finish, or this is not a vasprun.xml");
    }
    if basis.len() != 3 {
        bail!("{origin}: finalpos has {} lattice vectors, expected 3", basis.len());
    }
    if species.len() != positions.len() {
        bail!("{origin}: <atominfo> lists {} atoms but finalpos has {} positions", species.len(), positions.len());
    }
    let s = Structure { lattice: [basis[0], basis[1], basis[2]], species, frac_coords: positions };
    super::validate_structure(&s, origin)?;
    Ok(s)
}

/// The structure in the POSCAR-style header of a VASP volumetric file (CHGCAR, AECCAR*, …;
/// plain or gzip). The header must name the elements (VASP 5+).
pub fn read_volumetric_structure(path: &Path) -> Result<Structure> {
    let origin = path.display().to_string();
    let mut header = String::new();
    // The header ends at the first blank line after the lattice (line 6 on): read no further.
    for (i, line) in super::open_reader(path)?.lines().enumerate() {
        let line = line.with_context(|| format!("{origin}: cannot read (truncated or corrupt gzip?)"))?;
        if i >= 6 && line.trim().is_empty() {
            break;
        }
        header.push_str(&line);
        header.push('\n');
    }
    super::poscar::parse_poscar(&header, &origin).context("reading the structure from a volumetric file's header")
}

#[cfg(test)]
mod tests {
    use super::*;

    const VASPRUN: &str = r#"<?xml version="1.0"?>
<modeling>
 <atominfo>
  <array name="atoms" >
   <set>
    <rc><c>Na</c><c>   1</c></rc>
    <rc><c>Cl</c><c>   2</c></rc>
   </set>
  </array>
 </atominfo>
 <structure name="initialpos" >
  <crystal>
   <varray name="basis" >
    <v> 9 0 0 </v>
    <v> 0 9 0 </v>
    <v> 0 0 9 </v>
   </varray>
  </crystal>
  <varray name="positions" >
   <v> 0 0 0 </v>
   <v> 0.5 0.5 0.5 </v>
  </varray>
 </structure>
 <structure name="finalpos" >
  <crystal>
   <varray name="basis" >
    <v> 5.6 0 0 </v>
    <v> 0 5.6 0 </v>
    <v> 0 0 5.6 </v>
   </varray>
   <varray name="rec_basis" >
    <v> 0.17 0 0 </v>
    <v> 0 0.17 0 </v>
    <v> 0 0 0.17 </v>
   </varray>
  </crystal>
  <varray name="positions" >
   <v> 0 0 0 </v>
   <v> 0.5 0.5 0.5 </v>
  </varray>
 </structure>
</modeling>
"#;

    #[test]
    fn final_structure_not_the_initial_one() {
        let s = parse_vasprun_structure(VASPRUN.as_bytes(), "v.xml").unwrap();
        assert_eq!(s.species, vec![11, 17]);
        assert_eq!(s.lattice[0], [5.6, 0.0, 0.0], "finalpos, not initialpos");
        assert_eq!(s.frac_coords[1], [0.5, 0.5, 0.5]);
    }

    #[test]
    fn unfinished_runs_and_mismatches_are_named() {
        let unfinished = VASPRUN.replace("finalpos", "somewhere");
        let err = format!("{:#}", parse_vasprun_structure(unfinished.as_bytes(), "v.xml").unwrap_err());
        assert!(err.contains("v.xml") && err.contains("finalpos"), "{err}");
        let extra_atom = VASPRUN.replace("<rc><c>Cl</c><c>   2</c></rc>", "<rc><c>Cl</c><c>   2</c></rc><rc><c>Cl</c><c>2</c></rc>");
        let err = format!("{:#}", parse_vasprun_structure(extra_atom.as_bytes(), "v.xml").unwrap_err());
        assert!(err.contains("3 atoms but finalpos has 2 positions"), "{err}");
    }
}
