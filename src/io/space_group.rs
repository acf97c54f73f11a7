//! Symmetry operations of a space group named only by its symbol, for CIFs that give
//! `_symmetry_space_group_name_H-M` / `_space_group_name_H-M_alt`, a Hall symbol
//! (`_symmetry_space_group_name_Hall` / `_space_group_name_Hall`) or just the International
//! Tables number, but no operations. The tables are `moyo`'s (the symmetry crate the project
//! already uses): its 530 Hall-symbol settings with their Hermann–Mauguin symbols, and its Hall
//! symbol parser, which generates the operations.
//!
//! Choice of setting when a symbol has several: an explicit `:1`/`:2`/`:H`/`:R` suffix wins;
//! otherwise origin choice 2 (the International Tables' and most databases' default) and, for
//! rhombohedral groups, the hexagonal axes unless the cell is rhombohedral (a = b = c,
//! α = β = γ ≠ 90°).

use super::cif::SymOp;
use anyhow::{bail, Result};
use moyo::data::{hall_symbol_entry, HallSymbol, HallSymbolEntry};

/// Every one of moyo's Hall-symbol settings.
fn entries() -> impl Iterator<Item = HallSymbolEntry> {
    (1..=530).filter_map(hall_symbol_entry)
}

/// A symbol compared without spaces, underscores and case (`P 21/c` ≡ `P2_1/c`).
fn normalise(symbol: &str) -> String {
    symbol.chars().filter(|c| !c.is_whitespace() && *c != '_').flat_map(char::to_lowercase).collect()
}

/// The setting among `candidates` the module docs describe.
fn choose(candidates: Vec<HallSymbolEntry>, setting: Option<&str>, rhombohedral_cell: bool) -> Option<HallSymbolEntry> {
    if let Some(want) = setting {
        return candidates.into_iter().find(|e| e.setting.eq_ignore_ascii_case(want));
    }
    let preferred = |e: &HallSymbolEntry| match e.setting {
        "2" => 0,
        "H" if !rhombohedral_cell => 0,
        "R" if rhombohedral_cell => 0,
        "" => 0,
        _ => 1,
    };
    candidates.into_iter().min_by_key(|e| (preferred(e), e.hall_number))
}

/// The operations (with centring translations) of the space group given by a Hall symbol, else
/// a Hermann–Mauguin symbol (short or full, optional `:setting` suffix), else an International
/// Tables number; `cell` = (a, b, c, α, β, γ) decides between hexagonal and rhombohedral axes.
/// `what` names the source in errors.
pub fn operations_from_symbol(hall: Option<&str>, hm: Option<&str>, number: Option<u32>, cell: [f64; 6], what: &str) -> Result<Vec<SymOp>> {
    let rhombohedral_cell = (cell[0] - cell[1]).abs() < 1e-3
        && (cell[1] - cell[2]).abs() < 1e-3
        && (cell[3] - cell[4]).abs() < 1e-3
        && (cell[4] - cell[5]).abs() < 1e-3
        && (cell[3] - 90.0).abs() > 1e-3;
    let hall_text = if let Some(h) = hall {
        h.trim().to_string()
    } else if let Some(h) = hm {
        let (symbol, setting) = match h.split_once(':') {
            Some((s, set)) => (s, Some(set.trim())),
            None => (h, None),
        };
        let key = normalise(symbol);
        let found: Vec<HallSymbolEntry> = entries().filter(|e| normalise(e.hm_short) == key || normalise(e.hm_full) == key).collect();
        if found.is_empty() {
            bail!("{what}: space group {h:?} is not a Hermann–Mauguin symbol of the International Tables");
        }
        match choose(found, setting, rhombohedral_cell) {
            Some(e) => e.hall_symbol.to_string(),
            None => bail!("{what}: space group {h:?}: no setting {:?}", setting.unwrap_or("")),
        }
    } else if let Some(n) = number {
        let found: Vec<HallSymbolEntry> = entries().filter(|e| e.number == n as i32).collect();
        match choose(found, None, rhombohedral_cell) {
            Some(e) => e.hall_symbol.to_string(),
            None => bail!("{what}: space group number {n} is not in 1–230"),
        }
    } else {
        bail!("{what}: no space group given");
    };
    let group = match HallSymbol::new(&hall_text) {
        Some(g) => g,
        None => bail!("{what}: cannot read the Hall symbol {hall_text:?}"),
    };
    let mut ops = Vec::new();
    // moyo lists only the non-zero centring translations.
    let zero = moyo::base::Translation::zeros();
    for centring in std::iter::once(&zero).chain(&group.centering_translations) {
        for op in group.traverse() {
            let mut rotation = [[0.0; 3]; 3];
            for (i, row) in rotation.iter_mut().enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = op.rotation[(i, j)] as f64;
                }
            }
            let translation = [0, 1, 2].map(|k| (op.translation[k] + centring[k]).rem_euclid(1.0));
            ops.push(SymOp { rotation, translation });
        }
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_counts_of_familiar_groups() {
        let cubic = [5.0, 5.0, 5.0, 90.0, 90.0, 90.0];
        let hex = [3.0, 3.0, 5.0, 90.0, 90.0, 120.0];
        for (hall, hm, number, cell, count) in [
            (None, Some("F m -3 m"), None, cubic, 192),   // rock salt: 48 × 4 centrings
            (None, Some("Fm-3m"), None, cubic, 192),
            (None, Some("P 42/m n m"), None, cubic, 16), // rutile
            (None, Some("P2_1/c"), None, cubic, 4),
            (Some("-P 2ybc"), None, None, cubic, 4),
            (None, None, Some(225), cubic, 192),
            (None, Some("R -3 m"), None, hex, 36), // hexagonal axes: 12 × 3 centrings
            (None, Some("R -3 m"), None, [5.0, 5.0, 5.0, 60.0, 60.0, 60.0], 12),
            (None, Some("F d -3 m:1"), None, cubic, 192),
        ] {
            let ops = operations_from_symbol(hall, hm, number, cell, "t").unwrap();
            assert_eq!(ops.len(), count, "{hall:?} {hm:?} {number:?}");
            assert!(ops.contains(&SymOp { rotation: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], translation: [0.0; 3] }));
        }
        let err = format!("{:#}", operations_from_symbol(None, Some("Q 7"), None, cubic, "x.cif").unwrap_err());
        assert!(err.contains("x.cif") && err.contains("\"Q 7\""), "{err}");
    }
}
