//! Generated structure descriptions in the spirit of Robocrystallographer (Ganose & Jain, MRS
//! Communications 2019): formula, crystal system and space group, and for every
//! symmetry-inequivalent site its coordination environment, neighbours and bond lengths, plus the
//! dimensionality of the bonded network. Used as the text modality of the demo (labelled as
//! generated in the provenance) and of `multimat synth`.
//!
//! Rules (fixed, so the same structure always gives the same words):
//! - Symmetry: `moyo` (a maintained Rust port of spglib's algorithms) with [`SYMMETRY_TOLERANCE`]
//!   = 0.01 Å, Robocrystallographer's default `symprec`; moyo's own angle tolerance. Sites are
//!   inequivalent when moyo puts them in different orbits; they are described in the order of
//!   their first site in the input.
//! - Bonds: site i is bonded to every neighbour (periodic images included) within
//!   [`BOND_TOLERANCE`] × d_min(i), d_min(i) being i's shortest distance to any other atom. 1.1 lies
//!   below 2/√3 ≈ 1.155, the ratio of the second to the first shell of body-centred cubic, so
//!   bcc metals and CsCl count 8 neighbours (as Robocrystallographer says), not 14. A distorted
//!   polyhedron whose bonds spread by more than 10 % is under-counted: the price of a rule this
//!   simple (Robocrystallographer uses CrystalNN's Voronoi solid angles instead).
//! - Geometry from the coordination number n and the number t of near-linear (> 150°) bond
//!   pairs: 2 → linear (t = 1) or bent; 3 → trigonal planar (angles sum > 350°) or trigonal
//!   non-coplanar; 4 → square co-planar (t ≥ 2) or tetrahedral; 5 → square pyramidal (t ≥ 2) or
//!   trigonal bipyramidal (t = 1); 6 → octahedral (t = 3) or trigonal prismatic (t = 0); 8 →
//!   body-centered cubic (t = 4); 12 → cuboctahedral (t = 6); otherwise "n-coordinate". A named
//!   geometry whose bond lengths spread by more than 5 % is called "distorted".
//! - Dimensionality: the bonded network's periodicity, from the rank of the lattice
//!   translations that close cycles in the bond graph (the algorithm of Larsen et al., Phys.
//!   Rev. Materials 3, 034003 (2019), in its simplest form); the largest over connected components.

use crate::crystal::lattice::{self, Cell};
use crate::crystal::neighbors::{neighbors_within, Neighbor};
use crate::elements::symbol;
use crate::material::Structure;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// moyo's `symprec` in Å (Robocrystallographer's default).
pub const SYMMETRY_TOLERANCE: f64 = 0.01;
/// Bonds reach out to this multiple of a site's shortest distance.
pub const BOND_TOLERANCE: f64 = 1.1;
/// Closer than this (Å) two sites are taken to be one disordered site written twice.
pub const OVERLAP_DISTANCE: f64 = 0.5;
/// Bond-length spread (relative) above which a named polyhedron is "distorted".
const DISTORTION_SPREAD: f64 = 0.05;
/// A pair of bonds at more than this angle (degrees) counts as trans (near-linear).
const TRANS_ANGLE: f64 = 150.0;

/// The symmetry of a structure as the description states it.
#[derive(Clone, Debug, PartialEq)]
pub struct SymmetryInfo {
    /// International Tables number, 1..=230.
    pub number: i32,
    /// Short Hermann–Mauguin symbol without spaces, e.g. "Fm-3m", "P6_3mc".
    pub symbol: String,
    pub crystal_system: &'static str,
    /// `orbits[i]` = index of the first site symmetry-equivalent to site i.
    pub orbits: Vec<usize>,
}

/// One symmetry-inequivalent site's environment.
#[derive(Clone, Debug, PartialEq)]
pub struct SiteEnvironment {
    /// Index of the representative site in the input structure.
    pub site: usize,
    pub element: u8,
    /// Neighbours within the bond cut-off, sorted by (distance, src, image).
    pub bonds: Vec<Neighbor>,
    /// Geometry name, e.g. "octahedral", "8-coordinate".
    pub geometry: String,
}

/// Crystal system of a space-group number (International Tables ranges).
pub fn crystal_system(number: i32) -> &'static str {
    match number {
        1..=2 => "triclinic",
        3..=15 => "monoclinic",
        16..=74 => "orthorhombic",
        75..=142 => "tetragonal",
        143..=167 => "trigonal",
        168..=194 => "hexagonal",
        _ => "cubic",
    }
}

/// Space group and orbits of `structure` from moyo at [`SYMMETRY_TOLERANCE`].
pub fn symmetry(structure: &Structure) -> Result<SymmetryInfo> {
    use moyo::base::{AngleTolerance, Cell as MoyoCell, Lattice};
    use moyo::data::Setting;
    use nalgebra::{Matrix3, Vector3};
    let l = structure.lattice;
    let lattice = Lattice::new(Matrix3::from_row_slice(&[
        l[0][0], l[0][1], l[0][2], l[1][0], l[1][1], l[1][2], l[2][0], l[2][1], l[2][2],
    ]));
    let positions = structure.frac_coords.iter().map(|f| Vector3::new(f[0], f[1], f[2])).collect();
    let numbers = structure.species.iter().map(|&z| z as i32).collect();
    let cell = MoyoCell::new(lattice, positions, numbers);
    let ds = moyo::MoyoDataset::new(&cell, SYMMETRY_TOLERANCE, AngleTolerance::Default, Setting::Standard)
        .map_err(|e| anyhow!("symmetry search (moyo, symprec {SYMMETRY_TOLERANCE} Å) failed: {e:?}"))?;
    anyhow::ensure!((1..=230).contains(&ds.number), "moyo returned space group number {}", ds.number);
    anyhow::ensure!(ds.orbits.len() == structure.num_sites(), "moyo returned {} orbits for {} sites", ds.orbits.len(), structure.num_sites());
    Ok(SymmetryInfo {
        number: ds.number,
        symbol: ds.hm_symbol.split_whitespace().collect(),
        crystal_system: crystal_system(ds.number),
        orbits: ds.orbits,
    })
}

/// Every site's bonded neighbours per the module's rule (see the module doc). Errors on an empty
/// or invalid structure and on overlapping sites.
pub fn bonded_neighbors(structure: &Structure) -> Result<Vec<Vec<Neighbor>>> {
    let cell = Cell::new(structure)?;
    let n = cell.num_sites();
    // Grow the search radius until every site has a neighbour and its bond shell lies inside it.
    let mut radius = 4.0_f64;
    loop {
        let lists = neighbors_within(&cell, radius);
        let complete = lists.iter().all(|l| l.first().is_some_and(|nb| nb.distance * BOND_TOLERANCE < radius));
        if complete {
            let mut out = Vec::with_capacity(n);
            for (i, list) in lists.into_iter().enumerate() {
                let d_min = list[0].distance;
                if d_min < OVERLAP_DISTANCE {
                    bail!(
                        "sites {i} and {} are {d_min:.3} Å apart (closer than {OVERLAP_DISTANCE} Å): a disordered or duplicated site cannot be described",
                        list[0].src
                    );
                }
                let cutoff = d_min * BOND_TOLERANCE;
                out.push(list.into_iter().take_while(|nb| nb.distance <= cutoff).collect());
            }
            return Ok(out);
        }
        radius *= 1.5;
        if radius > 1e4 {
            bail!("no neighbours found within {radius:.0} Å");
        }
    }
}

/// Cartesian bond vector from site `centre` to neighbour `nb`.
fn bond_vector(structure: &Structure, centre: usize, nb: &Neighbor) -> [f64; 3] {
    let l = &structure.lattice;
    let f = structure.frac_coords[nb.src as usize];
    let g = structure.frac_coords[centre];
    let d = [0, 1, 2].map(|k| f[k] + nb.image[k] as f64 - g[k]);
    [0, 1, 2].map(|c| d[0] * l[0][c] + d[1] * l[1][c] + d[2] * l[2][c])
}

/// Geometry name per the module's rule.
pub fn geometry_name(structure: &Structure, centre: usize, bonds: &[Neighbor]) -> String {
    let vecs: Vec<[f64; 3]> = bonds.iter().map(|nb| bond_vector(structure, centre, nb)).collect();
    let mut angles = Vec::new();
    for a in 0..vecs.len() {
        for b in a + 1..vecs.len() {
            let cos = lattice::dot(vecs[a], vecs[b]) / (lattice::norm(vecs[a]) * lattice::norm(vecs[b]));
            angles.push(cos.clamp(-1.0, 1.0).acos().to_degrees());
        }
    }
    let trans = angles.iter().filter(|&&a| a > TRANS_ANGLE).count();
    let n = bonds.len();
    let name = match (n, trans) {
        (1, _) => "single-bond",
        (2, 1) => "linear",
        (2, _) => "bent",
        (3, _) if angles.iter().sum::<f64>() > 350.0 => "trigonal planar",
        (3, _) => "trigonal non-coplanar",
        (4, t) if t >= 2 => "square co-planar",
        (4, _) => "tetrahedral",
        (5, t) if t >= 2 => "square pyramidal",
        (5, 1) => "trigonal bipyramidal",
        (6, 3) => "octahedral",
        (6, 0) => "trigonal prismatic",
        (8, 4) => "body-centered cubic",
        (12, 6) => "cuboctahedral",
        _ => return format!("{n}-coordinate"),
    };
    let (lo, hi) = bond_range(bonds);
    if n > 1 && (hi - lo) / lo > DISTORTION_SPREAD {
        format!("distorted {name}")
    } else {
        name.to_string()
    }
}

fn bond_range(bonds: &[Neighbor]) -> (f64, f64) {
    bonds.iter().fold((f64::INFINITY, 0.0_f64), |(lo, hi), nb| (lo.min(nb.distance), hi.max(nb.distance)))
}

/// Periodicity (0..=3) of the bonded network: the largest rank, over connected components, of
/// the lattice translations that close cycles.
pub fn dimensionality(bonds: &[Vec<Neighbor>]) -> usize {
    let n = bonds.len();
    // Undirected adjacency: i ↔ (j, image), both directions.
    let mut adj: Vec<Vec<(usize, [i64; 3])>> = vec![Vec::new(); n];
    for (i, list) in bonds.iter().enumerate() {
        for nb in list {
            let t = nb.image.map(|x| x as i64);
            adj[i].push((nb.src as usize, t));
            adj[nb.src as usize].push((i, t.map(|x| -x)));
        }
    }
    let mut offset: Vec<Option<[i64; 3]>> = vec![None; n];
    let mut best = 0;
    for start in 0..n {
        if offset[start].is_some() {
            continue;
        }
        offset[start] = Some([0; 3]);
        let mut basis: Vec<[f64; 3]> = Vec::new(); // orthonormalised cycle translations
        let mut stack = vec![start];
        while let Some(i) = stack.pop() {
            let oi = offset[i].expect("visited");
            for &(j, t) in &adj[i] {
                let want = [oi[0] + t[0], oi[1] + t[1], oi[2] + t[2]];
                match offset[j] {
                    None => {
                        offset[j] = Some(want);
                        stack.push(j);
                    }
                    Some(oj) if oj != want && basis.len() < 3 => {
                        // A cycle through a lattice translation: add it if independent (Gram–Schmidt).
                        let mut v = [0, 1, 2].map(|k| (want[k] - oj[k]) as f64);
                        for b in &basis {
                            let p = lattice::dot(v, *b);
                            v = [0, 1, 2].map(|k| v[k] - p * b[k]);
                        }
                        let norm = lattice::norm(v);
                        if norm > 1e-6 {
                            basis.push(v.map(|x| x / norm));
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        best = best.max(basis.len());
    }
    best
}

/// Elements ordered by Pauling electronegativity (then Z), as pymatgen's reduced formulae are.
fn electronegativity_order(z: u8) -> (i64, u8) {
    let x = crate::crystal::element_data::ELECTRONEGATIVITY.get(z as usize - 1).copied().flatten().unwrap_or(4.0);
    ((x * 100.0).round() as i64, z)
}

/// Reduced formula with elements in electronegativity order, e.g. "NaCl", "ZnO", "SiO2".
pub fn reduced_formula(structure: &Structure) -> String {
    let mut counts: BTreeMap<(i64, u8), usize> = BTreeMap::new();
    for &z in &structure.species {
        *counts.entry(electronegativity_order(z)).or_default() += 1;
    }
    let gcd = counts.values().fold(0, |g, &c| num_gcd(g, c));
    counts
        .iter()
        .map(|(&(_, z), &c)| {
            let c = c / gcd.max(1);
            if c == 1 { symbol(z).to_string() } else { format!("{}{c}", symbol(z)) }
        })
        .collect()
}

fn num_gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { num_gcd(b, a % b) }
}

const NUMBER_WORDS: [&str; 13] =
    ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"];

fn count_word(n: usize) -> String {
    NUMBER_WORDS.get(n).map(|s| s.to_string()).unwrap_or_else(|| n.to_string())
}

/// The environments of the symmetry-inequivalent sites, in order of their first site.
pub fn site_environments(structure: &Structure, sym: &SymmetryInfo, bonds: &[Vec<Neighbor>]) -> Vec<SiteEnvironment> {
    let mut reps: Vec<usize> = sym.orbits.clone();
    reps.sort_unstable();
    reps.dedup();
    reps.into_iter()
        .map(|site| SiteEnvironment {
            site,
            element: structure.species[site],
            bonds: bonds[site].clone(),
            geometry: geometry_name(structure, site, &bonds[site]),
        })
        .collect()
}

/// A Robocrystallographer-style description of `structure` (see the module doc for the rules).
/// Errors, naming the problem: no sites, invalid lattice or coordinates, unknown elements,
/// overlapping (disordered) sites, a failed symmetry search.
pub fn describe(structure: &Structure) -> Result<String> {
    if structure.num_sites() == 0 {
        bail!("cannot describe a structure with no sites");
    }
    let bonds = bonded_neighbors(structure).context("describing the structure")?;
    let sym = symmetry(structure).context("describing the structure")?;
    let envs = site_environments(structure, &sym, &bonds);
    let mut text = String::new();
    let _ = write!(
        text,
        "{} crystallizes in the {} {} space group (No. {}, symmetry tolerance {} Å).",
        reduced_formula(structure),
        sym.crystal_system,
        sym.symbol,
        sym.number,
        SYMMETRY_TOLERANCE
    );
    let dim = dimensionality(&bonds);
    let dim_word = ["zero", "one", "two", "three"][dim];
    let _ = write!(text, " The structure is {dim_word}-dimensional.");
    let k = envs.len();
    let _ = write!(text, " There {} {} symmetry-inequivalent site{}.", if k == 1 { "is" } else { "are" }, count_word(k), if k == 1 { "" } else { "s" });

    // Label sites "Zn(1)", "Zn(2)" only when an element has several inequivalent sites.
    let mut per_element: BTreeMap<u8, usize> = BTreeMap::new();
    for e in &envs {
        *per_element.entry(e.element).or_default() += 1;
    }
    let mut seen: BTreeMap<u8, usize> = BTreeMap::new();
    for env in &envs {
        let el = symbol(env.element);
        let idx = seen.entry(env.element).or_default();
        *idx += 1;
        let label = if per_element[&env.element] > 1 { format!("{el}({idx})") } else { el.to_string() };
        // Neighbour counts per element, most electronegative last (as Robocrystallographer lists).
        let mut by_element: BTreeMap<(i64, u8), Vec<f64>> = BTreeMap::new();
        for nb in &env.bonds {
            by_element.entry(electronegativity_order(structure.species[nb.src as usize])).or_default().push(nb.distance);
        }
        let parts: Vec<String> = by_element.iter().map(|(&(_, z), d)| format!("{} {}", count_word(d.len()), symbol(z))).collect();
        let list = match parts.len() {
            1 => parts[0].clone(),
            2 => format!("{} and {}", parts[0], parts[1]),
            _ => format!("{}, and {}", parts[..parts.len() - 1].join(", "), parts[parts.len() - 1]),
        };
        let noun = if env.bonds.len() == 1 { "atom" } else { "atoms" };
        let geometry = &env.geometry;
        let article = if geometry.starts_with(|c: char| "aeiou8".contains(c)) || geometry.starts_with("11-") || geometry.starts_with("18-") { "an" } else { "a" };
        let _ = write!(text, " {label} is bonded in {article} {geometry} geometry to {list} {noun}.");
        for (&(_, z), d) in &by_element {
            let pair = format!("{el}–{}", symbol(z));
            let lo = d.iter().cloned().fold(f64::INFINITY, f64::min);
            let hi = d.iter().cloned().fold(0.0, f64::max);
            let sentence = if d.len() == 1 {
                format!(" The {pair} bond length is {lo:.2} Å.")
            } else if format!("{lo:.2}") == format!("{hi:.2}") {
                format!(" All {pair} bond lengths are {lo:.2} Å.")
            } else {
                format!(" {pair} bond lengths range from {lo:.2} to {hi:.2} Å.")
            };
            text.push_str(&sentence);
        }
    }
    Ok(text)
}
