//! Chemical element symbols and atomic numbers (H … Og). Property tables used by the models
//! live next to their users (e.g. `crystal::features`); this file is only the naming.

/// Element symbols indexed by atomic number − 1.
pub const SYMBOLS: [&str; 118] = [
    "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg", "Al", "Si", "P", "S", "Cl",
    "Ar", "K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga", "Ge", "As",
    "Se", "Br", "Kr", "Rb", "Sr", "Y", "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd", "In",
    "Sn", "Sb", "Te", "I", "Xe", "Cs", "Ba", "La", "Ce", "Pr", "Nd", "Pm", "Sm", "Eu", "Gd", "Tb",
    "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W", "Re", "Os", "Ir", "Pt", "Au", "Hg", "Tl",
    "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac", "Th", "Pa", "U", "Np", "Pu", "Am", "Cm", "Bk",
    "Cf", "Es", "Fm", "Md", "No", "Lr", "Rf", "Db", "Sg", "Bh", "Hs", "Mt", "Ds", "Rg", "Cn", "Nh",
    "Fl", "Mc", "Lv", "Ts", "Og",
];

/// Atomic number of an element symbol. Accepts the forms found in real files: exact case
/// ("Fe"), any case ("FE", "fe"), and oxidation-state or label suffixes ("Fe2+", "Fe3", "O1-",
/// "Fe_pv" as in POTCAR titles). Returns `None` for anything that is not an element.
pub fn atomic_number(symbol: &str) -> Option<u8> {
    let s = symbol.trim();
    // Keep the leading alphabetic run, at most two letters ("Fe2+" → "Fe", "Fe_pv" → "Fe").
    let letters: String = s.chars().take_while(|c| c.is_ascii_alphabetic()).take(2).collect();
    if letters.is_empty() {
        return None;
    }
    let canon = |l: &str| -> String {
        let mut c = l.chars();
        match c.next() {
            Some(f) => f.to_ascii_uppercase().to_string() + &c.as_str().to_ascii_lowercase(),
            None => String::new(),
        }
    };
    // Two-letter match first ("Co" before "C"), then one letter, but only if the second letter
    // was not part of the symbol (e.g. "Cx" is not carbon).
    let two = canon(&letters);
    if let Some(i) = SYMBOLS.iter().position(|&e| e == two) {
        return Some(i as u8 + 1);
    }
    if letters.len() == 2 {
        // "CO" in an all-caps file is cobalt, handled above; a lowercase second letter that is not
        // a valid two-letter symbol means the token is not an element.
        let second = letters.chars().nth(1).unwrap();
        if second.is_ascii_lowercase() {
            return None;
        }
    }
    let one = canon(&letters[..1]);
    SYMBOLS.iter().position(|&e| e == one).map(|i| i as u8 + 1)
}

/// Symbol of an atomic number (1-based). Panics never; returns "X" for out-of-range values.
pub fn symbol(z: u8) -> &'static str {
    if (1..=118).contains(&z) {
        SYMBOLS[z as usize - 1]
    } else {
        "X"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_round_trip_and_real_file_spellings() {
        for z in 1..=118u8 {
            assert_eq!(atomic_number(symbol(z)), Some(z));
        }
        assert_eq!(atomic_number("Fe2+"), Some(26));
        assert_eq!(atomic_number("O2-"), Some(8));
        assert_eq!(atomic_number("Fe_pv"), Some(26));
        assert_eq!(atomic_number("CO"), Some(27));
        assert_eq!(atomic_number("Xx"), None);
        assert_eq!(atomic_number("Cx"), None);
        assert_eq!(atomic_number("123"), None);
        assert_eq!(atomic_number(""), None);
    }
}
