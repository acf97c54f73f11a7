//! 92-d CGCNN-style atom features: nine element properties, each one-hot encoded into
//! categories or bins, as in CGCNN (Xie & Grossman, PRL 120, 145301 (2018), Table S2) and its
//! `atom_init.json`. Computed from `element_data` (sources named there); not copied from
//! `atom_init.json`, so where the property tables differ from CGCNN's sources a value can land in
//! a neighbouring bin.
//!
//! Two encodings ([`AtomFeatureEncoding`]) differ only in two conventions:
//! - `cgcnn` (the default; the conventions of `atom_init.json`, which PotNet and the MultiMat
//!   reference read): the group block has index 0 for the f series (La–Yb, Ac–No) and index g for
//!   group g; the f series counts 2 valence electrons. Checked against CGCNN's published
//!   `atom_init.json` (H … Fm, 100 rows): period, first ionisation energy and block agree for
//!   100 elements, group 100, valence electrons 99 (Pd: the file has 12), electronegativity 80,
//!   electron affinity 89, molar volume 81, covalent radius 42 (our Cordero radii differ from
//!   CGCNN's source, often by one bin); 25 of the 100 rows agree in all 92 entries.
//! - `legacy` (multimat before it followed the reference): group g at index g − 1 and the f
//!   series at index 18; the f series counts 3 valence electrons.
//!
//! Layout (offset, width), `cgcnn` encoding:
//!
//! | property                     | offset | width | encoding                                        |
//! |------------------------------|--------|-------|-------------------------------------------------|
//! | group                        | 0      | 19    | La–Yb and Ac–No, then groups 1–18               |
//! | period                       | 19     | 7     | 1–7                                             |
//! | electronegativity (Pauling)  | 26     | 10    | linear bins on [0.5, 4.0]                       |
//! | covalent radius (pm)         | 36     | 10    | linear bins on [25, 250]                        |
//! | valence electrons            | 46     | 12    | 1–12                                            |
//! | first ionisation energy (eV) | 58     | 10    | bins of ln(E) on [1.3, 3.3]                     |
//! | electron affinity (eV)       | 68     | 10    | linear bins on [−3, 3.7]                        |
//! | block                        | 78     | 4     | s, p, d, f                                      |
//! | molar volume (cm³/mol)       | 82     | 10    | bins of ln(V) on [1.5, 4.3]                     |
//!
//! Values outside a bin range go to the end bins. A property with no tabulated value (e.g. the
//! electronegativity of He) leaves its block all zero. Conventions where chemistry is ambiguous:
//! Lu and Lr are group 3 (d block); La–Yb and Ac–No are the f series (block f, the extra group
//! category); valence electrons are the group number for groups 1–12, group − 10 for groups 13–18
//! (He: 2), and for the f series 2 (`cgcnn`) or 3 (`legacy`).

use super::element_data::*;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

pub const ATOM_FEATURE_DIM: usize = 92;

/// Which conventions the group and valence blocks follow (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AtomFeatureEncoding {
    /// CGCNN's `atom_init.json` conventions (the reference's features).
    Cgcnn,
    /// multimat's earlier conventions.
    Legacy,
}

/// Offsets of each property block in the feature vector (see the module table).
pub mod offsets {
    pub const GROUP: usize = 0;
    pub const PERIOD: usize = 19;
    pub const ELECTRONEGATIVITY: usize = 26;
    pub const COVALENT_RADIUS: usize = 36;
    pub const VALENCE: usize = 46;
    pub const IONIZATION: usize = 58;
    pub const ELECTRON_AFFINITY: usize = 68;
    pub const BLOCK: usize = 78;
    pub const VOLUME: usize = 82;
}

/// Period (1–7) of element Z.
pub fn period(z: u8) -> u8 {
    match z {
        0..=2 => 1,
        3..=10 => 2,
        11..=18 => 3,
        19..=36 => 4,
        37..=54 => 5,
        55..=86 => 6,
        _ => 7,
    }
}

/// Group 1–18, or `None` for the f series (La–Yb, Ac–No).
pub fn group(z: u8) -> Option<u8> {
    let p = period(z);
    let start = [0u8, 0, 2, 10, 18, 36, 54, 86][p as usize];
    let o = z - start; // position in the period, 1-based
    Some(match p {
        1 => if z == 1 { 1 } else { 18 },
        2 | 3 => if o <= 2 { o } else { o + 10 },
        4 | 5 => o,
        _ => match o {
            1 | 2 => o,
            3..=16 => return None,
            17 => 3,
            _ => o - 14,
        },
    })
}

/// Block index: 0 = s, 1 = p, 2 = d, 3 = f.
pub fn block(z: u8) -> usize {
    match group(z) {
        None => 3,
        Some(_) if z == 2 => 0,
        Some(g) if g <= 2 => 0,
        Some(g) if g <= 12 => 2,
        Some(_) => 1,
    }
}

/// Valence electron count per the module's convention.
pub fn valence_electrons(z: u8) -> u8 {
    match group(z) {
        None => 3,
        Some(_) if z == 2 => 2,
        Some(g) if g <= 12 => g,
        Some(g) => g - 10,
    }
}

fn bin(value: f64, lo: f64, hi: f64, n: usize) -> usize {
    let t = ((value - lo) / (hi - lo) * n as f64).floor();
    t.clamp(0.0, (n - 1) as f64) as usize
}

/// The 92-d one-hot feature vector of element `z` (1 ≤ z ≤ 103) in the `cgcnn` encoding.
pub fn atom_features(z: u8) -> Result<[f32; ATOM_FEATURE_DIM]> {
    atom_features_encoded(z, AtomFeatureEncoding::Cgcnn)
}

/// The 92-d one-hot feature vector of element `z` (1 ≤ z ≤ 103) in `encoding`.
pub fn atom_features_encoded(z: u8, encoding: AtomFeatureEncoding) -> Result<[f32; ATOM_FEATURE_DIM]> {
    if z == 0 || z as usize > NUM_ELEMENTS {
        bail!("no atom features for atomic number {z} (tables cover H … Lr, Z = 1 … {NUM_ELEMENTS})");
    }
    let i = z as usize - 1;
    let mut f = [0f32; ATOM_FEATURE_DIM];
    let (group_index, valence) = match encoding {
        AtomFeatureEncoding::Cgcnn => (group(z).map_or(0, |g| g as usize), if group(z).is_none() { 2 } else { valence_electrons(z) }),
        AtomFeatureEncoding::Legacy => (group(z).map_or(18, |g| g as usize - 1), valence_electrons(z)),
    };
    f[offsets::GROUP + group_index] = 1.0;
    f[offsets::PERIOD + period(z) as usize - 1] = 1.0;
    if let Some(x) = ELECTRONEGATIVITY[i] {
        f[offsets::ELECTRONEGATIVITY + bin(x, 0.5, 4.0, 10)] = 1.0;
    }
    if let Some(x) = COVALENT_RADIUS_PM[i] {
        f[offsets::COVALENT_RADIUS + bin(x, 25.0, 250.0, 10)] = 1.0;
    }
    f[offsets::VALENCE + valence as usize - 1] = 1.0;
    if let Some(x) = FIRST_IONIZATION_EV[i] {
        f[offsets::IONIZATION + bin(x.ln(), 1.3, 3.3, 10)] = 1.0;
    }
    if let Some(x) = ELECTRON_AFFINITY_EV[i] {
        f[offsets::ELECTRON_AFFINITY + bin(x, -3.0, 3.7, 10)] = 1.0;
    }
    f[offsets::BLOCK + block(z)] = 1.0;
    if let Some(x) = MOLAR_VOLUME_CM3[i] {
        f[offsets::VOLUME + bin(x.ln(), 1.5, 4.3, 10)] = 1.0;
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hot(f: &[f32; 92]) -> Vec<usize> {
        (0..92).filter(|&k| f[k] == 1.0).collect()
    }

    #[test]
    fn periodic_table_positions() {
        // (Z, group, period, block, valence) from the periodic table.
        for &(z, g, p, b, v) in &[
            (1u8, Some(1u8), 1u8, 0usize, 1u8),
            (2, Some(18), 1, 0, 2),
            (6, Some(14), 2, 1, 4),
            (10, Some(18), 2, 1, 8),
            (26, Some(8), 4, 2, 8),
            (30, Some(12), 4, 2, 12),
            (31, Some(13), 4, 1, 3),
            (57, None, 6, 3, 3),
            (71, Some(3), 6, 2, 3),
            (72, Some(4), 6, 2, 4),
            (82, Some(14), 6, 1, 4),
            (86, Some(18), 6, 1, 8),
            (92, None, 7, 3, 3),
            (103, Some(3), 7, 2, 3),
        ] {
            assert_eq!((group(z), period(z), block(z), valence_electrons(z)), (g, p, b, v), "Z = {z}");
        }
    }

    #[test]
    fn iron_features_by_hand() {
        // Fe: group 8 → 7; period 4 → 19+3; χ 1.83 → bin ⌊(1.83−0.5)/0.35⌋ = 3 → 29;
        // r 152 pm → ⌊(152−25)/22.5⌋ = 5 → 41; valence 8 → 46+7 = 53;
        // ln 7.902 = 2.067 → ⌊(2.067−1.3)/0.2⌋ = 3 → 61; EA 0.151 → ⌊3.151/0.67⌋ = 4 → 72;
        // block d → 80; ln 7.09 = 1.959 → ⌊0.459/0.28⌋ = 1 → 83.
        let f = atom_features_encoded(26, AtomFeatureEncoding::Legacy).unwrap();
        assert_eq!(hot(&f), vec![7, 22, 29, 41, 53, 61, 72, 80, 83]);
        // The cgcnn encoding puts group 8 at index 8 (index 0 is the f series); the rest is equal.
        assert_eq!(hot(&atom_features(26).unwrap()), vec![8, 22, 29, 41, 53, 61, 72, 80, 83]);
    }

    #[test]
    fn cgcnn_conventions_for_the_f_series_and_groups() {
        // La (f series): group index 0, 2 valence electrons (index 46 + 1); legacy: 18 and 3.
        let la = hot(&atom_features(57).unwrap());
        assert!(la.contains(&0) && la.contains(&47), "{la:?}");
        let la_legacy = hot(&atom_features_encoded(57, AtomFeatureEncoding::Legacy).unwrap());
        assert!(la_legacy.contains(&18) && la_legacy.contains(&48), "{la_legacy:?}");
        // H: group 1 at index 1; He: group 18 at index 18, 2 valence electrons in both encodings.
        assert_eq!(hot(&atom_features(1).unwrap())[0], 1);
        let he = hot(&atom_features(2).unwrap());
        assert!(he.contains(&18) && he.contains(&47), "{he:?}");
        // Every other block is the same in both encodings.
        for z in 1..=103u8 {
            let (a, b) = (atom_features(z).unwrap(), atom_features_encoded(z, AtomFeatureEncoding::Legacy).unwrap());
            assert_eq!(a[offsets::PERIOD..offsets::VALENCE], b[offsets::PERIOD..offsets::VALENCE], "Z = {z}");
            assert_eq!(a[offsets::IONIZATION..], b[offsets::IONIZATION..], "Z = {z}");
        }
    }

    #[test]
    fn every_supported_element_has_one_hot_blocks_and_distinct_vectors() {
        let mut seen = std::collections::HashSet::new();
        for z in 1..=103u8 {
            let f = atom_features(z).unwrap();
            // Every block has at most one hot entry; group, period, valence and block always one.
            let blocks = [(0, 19), (19, 7), (26, 10), (36, 10), (46, 12), (58, 10), (68, 10), (78, 4), (82, 10)];
            for (o, w) in blocks {
                let s: f32 = f[o..o + w].iter().sum();
                assert!(s <= 1.0, "Z = {z}: block at {o} has {s} hot entries");
            }
            for o in [0, 19, 46, 78] {
                let w = blocks.iter().find(|b| b.0 == o).unwrap().1;
                assert_eq!(f[o..o + w].iter().sum::<f32>(), 1.0, "Z = {z}");
            }
            seen.insert(hot(&f));
        }
        // Common elements must be distinguishable.
        assert!(seen.len() > 90, "only {} distinct vectors", seen.len());
    }

    #[test]
    fn unknown_atomic_numbers_are_errors() {
        assert!(atom_features(0).unwrap_err().to_string().contains("atomic number 0"));
        assert!(atom_features(104).is_err());
        assert!(atom_features(118).is_err());
    }

    #[test]
    fn spot_check_tabulated_facts() {
        // Textbook values: F is the most electronegative element, Cs has the lowest first
        // ionisation energy among stable elements, Cl the largest electron affinity.
        let max_en = (0..NUM_ELEMENTS).filter_map(|i| ELECTRONEGATIVITY[i].map(|x| (x, i))).fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a });
        assert_eq!(max_en.1 + 1, 9);
        let min_ie = (0..86).filter_map(|i| FIRST_IONIZATION_EV[i].map(|x| (x, i))).fold((99.0, 0), |a, b| if b.0 < a.0 { b } else { a });
        assert_eq!(min_ie.1 + 1, 55);
        let max_ea = (0..NUM_ELEMENTS).filter_map(|i| ELECTRON_AFFINITY_EV[i].map(|x| (x, i))).fold((-9.0, 0), |a, b| if b.0 > a.0 { b } else { a });
        assert_eq!(max_ea.1 + 1, 17);
        assert_eq!(FIRST_IONIZATION_EV[1], Some(24.587)); // He, NIST
        assert_eq!(COVALENT_RADIUS_PM[5], Some(76.0)); // C sp3, Cordero
    }
}
