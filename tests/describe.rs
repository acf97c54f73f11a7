//! Generated structure descriptions (`approx::describe`) on textbook crystals whose space group,
//! coordination and bond lengths are known from their geometry, plus determinism and bad input.

use multimat::approx::describe::{describe, dimensionality, bonded_neighbors, reduced_formula, symmetry};
use multimat::material::Structure;

fn fcc(a: f64) -> [[f64; 3]; 3] {
    [[0.0, a / 2.0, a / 2.0], [a / 2.0, 0.0, a / 2.0], [a / 2.0, a / 2.0, 0.0]]
}

fn rocksalt_nacl(a: f64) -> Structure {
    Structure { lattice: fcc(a), species: vec![11, 17], frac_coords: vec![[0.0; 3], [0.5, 0.5, 0.5]] }
}

fn diamond_si(a: f64) -> Structure {
    Structure { lattice: fcc(a), species: vec![14, 14], frac_coords: vec![[0.0; 3], [0.25, 0.25, 0.25]] }
}

fn cscl(a: f64) -> Structure {
    let l = [[a, 0.0, 0.0], [0.0, a, 0.0], [0.0, 0.0, a]];
    Structure { lattice: l, species: vec![55, 17], frac_coords: vec![[0.0; 3], [0.5, 0.5, 0.5]] }
}

/// Wurtzite ZnO (a = 3.25 Å, c = 5.207 Å, u = 0.382; hexagonal axes).
fn wurtzite_zno() -> Structure {
    let (a, c, u) = (3.25, 5.207, 0.382);
    let l = [[a, 0.0, 0.0], [-a / 2.0, a * 3f64.sqrt() / 2.0, 0.0], [0.0, 0.0, c]];
    let (p, q) = (1.0 / 3.0, 2.0 / 3.0);
    Structure {
        lattice: l,
        species: vec![30, 30, 8, 8],
        frac_coords: vec![[p, q, 0.0], [q, p, 0.5], [p, q, u], [q, p, 0.5 + u]],
    }
}

/// Graphite-like AB stacking of honeycomb carbon sheets 3.35 Å apart: two-dimensional bonding.
fn graphite() -> Structure {
    let (a, c) = (2.46, 6.70);
    let l = [[a, 0.0, 0.0], [-a / 2.0, a * 3f64.sqrt() / 2.0, 0.0], [0.0, 0.0, c]];
    let (p, q) = (1.0 / 3.0, 2.0 / 3.0);
    Structure {
        lattice: l,
        species: vec![6; 4],
        frac_coords: vec![[0.0, 0.0, 0.25], [0.0, 0.0, 0.75], [p, q, 0.25], [q, p, 0.75]],
    }
}

#[test]
fn rock_salt_is_cubic_fm3m_with_octahedral_sodium_at_half_the_lattice_constant() {
    let a = 5.64;
    let text = describe(&rocksalt_nacl(a)).unwrap();
    assert!(text.starts_with("NaCl crystallizes in the cubic Fm-3m space group (No. 225"), "{text}");
    assert!(text.contains("Na is bonded in an octahedral geometry to six Cl atoms."), "{text}");
    assert!(text.contains("Cl is bonded in an octahedral geometry to six Na atoms."), "{text}");
    assert!(text.contains(&format!("All Na–Cl bond lengths are {:.2} Å.", a / 2.0)), "{text}");
    assert!(text.contains("two symmetry-inequivalent sites"), "{text}");
    assert!(text.contains("three-dimensional"), "{text}");
}

#[test]
fn diamond_silicon_is_fd3m_tetrahedral_at_a_sqrt3_over_4() {
    let a = 5.431;
    let text = describe(&diamond_si(a)).unwrap();
    assert!(text.starts_with("Si crystallizes in the cubic Fd-3m space group (No. 227"), "{text}");
    assert!(text.contains("one symmetry-inequivalent site."), "{text}");
    assert!(text.contains("Si is bonded in a tetrahedral geometry to four Si atoms."), "{text}");
    let bond = a * 3f64.sqrt() / 4.0; // 2.3517
    assert_eq!(format!("{bond:.2}"), "2.35");
    assert!(text.contains("All Si–Si bond lengths are 2.35 Å."), "{text}");
}

#[test]
fn wurtzite_zno_is_hexagonal_p6_3mc_with_tetrahedral_sites() {
    let s = wurtzite_zno();
    let sym = symmetry(&s).unwrap();
    assert_eq!((sym.number, sym.symbol.as_str(), sym.crystal_system), (186, "P6_3mc", "hexagonal"));
    let text = describe(&s).unwrap();
    assert!(text.starts_with("ZnO crystallizes in the hexagonal P6_3mc space group (No. 186"), "{text}");
    // Wurtzite's tetrahedron has one axial bond (u·c = 1.99 Å) and three basal ones (1.97 Å).
    assert!(text.contains("Zn is bonded in a tetrahedral geometry to four O atoms."), "{text}");
    let axial = 0.382 * 5.207;
    assert!(text.contains(&format!("to {axial:.2} Å.")), "{text}");
}

#[test]
fn cesium_chloride_is_pm3m_and_8_coordinate() {
    let a = 4.12;
    let text = describe(&cscl(a)).unwrap();
    assert!(text.starts_with("CsCl crystallizes in the cubic Pm-3m space group (No. 221"), "{text}");
    assert!(text.contains("Cs is bonded in a body-centered cubic geometry to eight Cl atoms."), "{text}");
    assert!(text.contains(&format!("All Cs–Cl bond lengths are {:.2} Å.", a * 3f64.sqrt() / 2.0)), "{text}");
}

#[test]
fn layered_graphite_is_two_dimensional_and_rock_salt_three() {
    let g = graphite();
    assert_eq!(dimensionality(&bonded_neighbors(&g).unwrap()), 2);
    let text = describe(&g).unwrap();
    assert!(text.contains("two-dimensional"), "{text}");
    assert!(text.contains("trigonal planar"), "{text}");
    assert_eq!(dimensionality(&bonded_neighbors(&rocksalt_nacl(5.64)).unwrap()), 3);
}

#[test]
fn a_random_low_symmetry_cell_is_triclinic_and_the_text_is_deterministic() {
    let s = Structure {
        lattice: [[5.1, 0.0, 0.0], [0.7, 6.3, 0.0], [-0.4, 1.1, 7.2]],
        species: vec![8, 26, 8, 15, 3],
        frac_coords: vec![[0.03, 0.11, 0.07], [0.41, 0.27, 0.33], [0.78, 0.61, 0.12], [0.19, 0.83, 0.58], [0.62, 0.09, 0.81]],
    };
    let text = describe(&s).unwrap();
    assert!(text.contains("triclinic P1 space group (No. 1"), "{text}");
    assert!(text.contains("five symmetry-inequivalent sites"), "{text}");
    assert_eq!(reduced_formula(&s), "LiFePO2");
    assert_eq!(text, describe(&s).unwrap());
    // The same crystal with its sites listed in another order and shifted by a lattice vector
    // has the same symmetry and formula.
    let mut shuffled = s.clone();
    shuffled.species.reverse();
    shuffled.frac_coords.reverse();
    shuffled.frac_coords[0][1] += 1.0;
    assert!(describe(&shuffled).unwrap().starts_with("LiFePO2 crystallizes in the triclinic P1"));
}

#[test]
fn empty_disordered_and_invalid_structures_are_clear_errors() {
    let empty = Structure { lattice: fcc(5.0), species: vec![], frac_coords: vec![] };
    assert!(format!("{:#}", describe(&empty).unwrap_err()).contains("no sites"));
    // A disordered site written as two species on (almost) the same position.
    let mut disordered = rocksalt_nacl(5.64);
    disordered.species.push(19);
    disordered.frac_coords.push([0.01, 0.0, 0.0]);
    let e = format!("{:#}", describe(&disordered).unwrap_err());
    assert!(e.contains("disordered") && (e.contains("sites 0 and 2") || e.contains("sites 2 and 0")), "{e}");
    let bad_element = Structure { lattice: fcc(5.0), species: vec![0], frac_coords: vec![[0.0; 3]] };
    assert!(format!("{:#}", describe(&bad_element).unwrap_err()).contains("unknown element"));
    let flat = Structure { lattice: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]], species: vec![14], frac_coords: vec![[0.0; 3]] };
    assert!(describe(&flat).is_err());
}
