//! CIF (Crystallographic Information File, 1.1 syntax; CIF 2 dotted tags accepted) → an ordered
//! `Structure`, with symmetry-operation expansion.
//!
//! Hand-written: no maintained Rust crate parses small-molecule/inorganic CIFs (the crates that
//! exist target mmCIF/PDB or are unmaintained). The tokenizer follows CIF 1.1: `#` comments,
//! `'…'`/`"…"` values (a quote only closes when followed by whitespace), `;`-delimited text
//! fields, `loop_`, `data_` blocks; tags are case-insensitive (we lower-case them and map `.` to
//! `_`, so `_space_group_symop.operation_xyz` ≡ `_space_group_symop_operation_xyz`).
//!
//! Structure rules:
//! - The data block with `_atom_site_fract_x` is used; a file with several such blocks is
//!   refused naming them (never silently cut to the first).
//! - Lattice from a, b, c, α, β, γ with pymatgen's convention (`Lattice.from_parameters`: c along
//!   z, a in the xz plane), so a pymatgen-written CIF and its JSON give the same lattice matrix.
//! - Symmetry operations from `_symmetry_equiv_pos_as_xyz` or `_space_group_symop_operation_xyz`
//!   (expressions like `-x+1/2, y, z+0.25`); each atom's orbit is wrapped into [0, 1) and
//!   positions within `DUPLICATE_TOLERANCE_ANGSTROM` of an existing site of the same element are
//!   merged. Without operations the space group must be P 1.
//! - Numbers may carry standard uncertainties, `1.234(5)`.
//! - `_atom_site_occupancy` below 0.99 is rejected naming the site: multimat models ordered crystals.

use crate::elements::atomic_number;
use crate::material::Structure;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;

/// Two symmetry images closer than this (Å) are the same site.
pub const DUPLICATE_TOLERANCE_ANGSTROM: f64 = 0.02;

/// Occupancies within this of 1 count as fully occupied (CIFs often write 0.999 or 1.00(1)).
const OCCUPANCY_TOLERANCE: f64 = 0.01;

#[derive(Clone, Debug)]
struct Token {
    text: String,
    line: usize,
    /// Quoted or text-field values are never keywords or tags.
    quoted: bool,
}

fn tokenize(text: &str, origin: &str) -> Result<Vec<Token>> {
    let mut tokens = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let lineno = i + 1;
        if let Some(rest) = line.strip_prefix(';') {
            // Text field: runs until a line starting with ';'.
            let mut value = rest.to_string();
            let mut j = i + 1;
            loop {
                let Some(l) = lines.get(j) else {
                    bail!("{origin}: line {lineno}: text field opened with ';' is never closed");
                };
                if l.starts_with(';') {
                    break;
                }
                value.push('\n');
                value.push_str(l);
                j += 1;
            }
            tokens.push(Token { text: value.trim().to_string(), line: lineno, quoted: true });
            i = j + 1;
            continue;
        }
        let bytes = line.as_bytes();
        let mut p = 0;
        while p < bytes.len() {
            let c = bytes[p];
            if c.is_ascii_whitespace() {
                p += 1;
                continue;
            }
            if c == b'#' {
                break;
            }
            if c == b'\'' || c == b'"' {
                // Closing quote: the same character followed by whitespace or end of line.
                let mut q = p + 1;
                loop {
                    if q >= bytes.len() {
                        bail!("{origin}: line {lineno}: unterminated quoted value starting {:?}", &line[p..]);
                    }
                    if bytes[q] == c && (q + 1 == bytes.len() || bytes[q + 1].is_ascii_whitespace()) {
                        break;
                    }
                    q += 1;
                }
                tokens.push(Token { text: line[p + 1..q].to_string(), line: lineno, quoted: true });
                p = q + 1;
                continue;
            }
            let start = p;
            while p < bytes.len() && !bytes[p].is_ascii_whitespace() {
                p += 1;
            }
            tokens.push(Token { text: line[start..p].to_string(), line: lineno, quoted: false });
        }
        i += 1;
    }
    Ok(tokens)
}

#[derive(Debug, Default)]
struct Loop {
    tags: Vec<String>,
    rows: Vec<Vec<Token>>,
    line: usize,
}

#[derive(Debug, Default)]
struct Block {
    name: String,
    items: HashMap<String, Token>,
    loops: Vec<Loop>,
}

impl Block {
    /// Column `tag` of the loop holding it: (loop, column index).
    fn column(&self, tag: &str) -> Option<(&Loop, usize)> {
        self.loops.iter().find_map(|l| l.tags.iter().position(|t| t == tag).map(|c| (l, c)))
    }
    fn has(&self, tag: &str) -> bool {
        self.items.contains_key(tag) || self.column(tag).is_some()
    }
}

fn normalize_tag(tag: &str) -> String {
    tag.to_ascii_lowercase().replace('.', "_")
}

fn is_reserved(t: &Token) -> bool {
    if t.quoted {
        return false;
    }
    let l = t.text.to_ascii_lowercase();
    t.text.starts_with('_') || l == "loop_" || l.starts_with("data_") || l.starts_with("save_") || l == "stop_" || l == "global_"
}

fn parse_blocks(tokens: &[Token], origin: &str) -> Result<Vec<Block>> {
    let mut blocks: Vec<Block> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        let lower = t.text.to_ascii_lowercase();
        if !t.quoted && lower.starts_with("data_") {
            blocks.push(Block { name: t.text[5..].to_string(), ..Default::default() });
            i += 1;
            continue;
        }
        if !t.quoted && (lower.starts_with("save_") || lower == "global_") {
            i += 1;
            continue;
        }
        let Some(block) = blocks.last_mut() else {
            bail!("{origin}: line {}: '{}' before any data_ block header", t.line, t.text);
        };
        if !t.quoted && lower == "loop_" {
            let mut lp = Loop { line: t.line, ..Default::default() };
            i += 1;
            while i < tokens.len() && !tokens[i].quoted && tokens[i].text.starts_with('_') {
                lp.tags.push(normalize_tag(&tokens[i].text));
                i += 1;
            }
            if lp.tags.is_empty() {
                bail!("{origin}: line {}: loop_ without tags", lp.line);
            }
            let mut values = Vec::new();
            while i < tokens.len() && !is_reserved(&tokens[i]) {
                values.push(tokens[i].clone());
                i += 1;
            }
            if values.len() % lp.tags.len() != 0 {
                bail!(
                    "{origin}: line {}: loop_ with {} tags ({}…) has {} values, not a multiple of {} (a row is incomplete; \
                     unquoted value with spaces?)",
                    lp.line,
                    lp.tags.len(),
                    lp.tags[0],
                    values.len(),
                    lp.tags.len()
                );
            }
            lp.rows = values.chunks(lp.tags.len()).map(|c| c.to_vec()).collect();
            block.loops.push(lp);
            continue;
        }
        if !t.quoted && t.text.starts_with('_') {
            let value = tokens
                .get(i + 1)
                .filter(|v| !is_reserved(v))
                .with_context(|| format!("{origin}: line {}: tag {} has no value", t.line, t.text))?;
            block.items.insert(normalize_tag(&t.text), value.clone());
            i += 2;
            continue;
        }
        bail!("{origin}: line {}: unexpected value '{}' outside a loop", t.line, t.text);
    }
    Ok(blocks)
}

/// A CIF number: `1.234`, `1.234(5)` (standard uncertainty dropped). `?`/`.` → None.
fn cif_number(token: &Token, what: &str, origin: &str) -> Result<Option<f64>> {
    let s = token.text.trim();
    if s == "?" || s == "." {
        return Ok(None);
    }
    let bare = match s.find('(') {
        Some(p) if s.ends_with(')') => &s[..p],
        _ => s,
    };
    match super::parse_float(bare) {
        Some(v) if v.is_finite() => Ok(Some(v)),
        _ => bail!("{origin}: line {}: {what} '{s}' is not a number", token.line),
    }
}

fn required_number(block: &Block, tag: &str, origin: &str) -> Result<f64> {
    let token = block.items.get(tag).with_context(|| format!("{origin}: data_{}: missing {tag}", block.name))?;
    cif_number(token, tag, origin)?.with_context(|| format!("{origin}: line {}: {tag} is unknown ('{}')", token.line, token.text))
}

/// Lattice vectors (rows) from cell parameters, pymatgen's `Lattice.from_parameters` convention.
pub fn lattice_from_parameters(a: f64, b: f64, c: f64, alpha: f64, beta: f64, gamma: f64) -> [[f64; 3]; 3] {
    let (ar, br, gr) = (alpha.to_radians(), beta.to_radians(), gamma.to_radians());
    let val = ((ar.cos() * br.cos() - gr.cos()) / (ar.sin() * br.sin())).clamp(-1.0, 1.0);
    let gamma_star = val.acos();
    [
        [a * br.sin(), 0.0, a * br.cos()],
        [-b * ar.sin() * gamma_star.cos(), b * ar.sin() * gamma_star.sin(), b * ar.cos()],
        [0.0, 0.0, c],
    ]
}

/// A symmetry operation f' = R·f + t in fractional coordinates.
#[derive(Clone, Debug, PartialEq)]
pub struct SymOp {
    pub rotation: [[f64; 3]; 3],
    pub translation: [f64; 3],
}

impl SymOp {
    pub fn apply(&self, f: [f64; 3]) -> [f64; 3] {
        let mut out = [0.0; 3];
        for (k, o) in out.iter_mut().enumerate() {
            *o = self.rotation[k][0] * f[0] + self.rotation[k][1] * f[1] + self.rotation[k][2] * f[2] + self.translation[k];
        }
        out
    }
}

/// Parse `x,y,z`-style operations: `-x+1/2, y, z`, `1/2+x,-y,z+0.25`, `x-y,x,z+2/3`.
pub fn parse_symop(expr: &str) -> Option<SymOp> {
    let parts: Vec<&str> = expr.split(',').collect();
    if parts.len() != 3 {
        return None;
    }
    let mut op = SymOp { rotation: [[0.0; 3]; 3], translation: [0.0; 3] };
    for (k, part) in parts.iter().enumerate() {
        let s: Vec<char> = part.chars().filter(|c| !c.is_whitespace()).map(|c| c.to_ascii_lowercase()).collect();
        if s.is_empty() {
            return None;
        }
        let mut p = 0;
        while p < s.len() {
            let mut sign = 1.0;
            if s[p] == '+' || s[p] == '-' {
                if s[p] == '-' {
                    sign = -1.0;
                }
                p += 1;
            }
            // optional number (integer, decimal or fraction)
            let start = p;
            while p < s.len() && (s[p].is_ascii_digit() || s[p] == '.' || s[p] == '/') {
                p += 1;
            }
            let number: Option<f64> = if p > start {
                let txt: String = s[start..p].iter().collect();
                Some(match txt.split_once('/') {
                    Some((n, d)) => n.parse::<f64>().ok()? / d.parse::<f64>().ok().filter(|d| *d != 0.0)?,
                    None => txt.parse::<f64>().ok()?,
                })
            } else {
                None
            };
            if p < s.len() && s[p] == '*' {
                p += 1;
            }
            if p < s.len() && matches!(s[p], 'x' | 'y' | 'z') {
                let axis = (s[p] as u8 - b'x') as usize;
                op.rotation[k][axis] += sign * number.unwrap_or(1.0);
                p += 1;
            } else {
                op.translation[k] += sign * number?;
            }
        }
    }
    Some(op)
}

fn wrap_unit(x: f64) -> f64 {
    let w = x - x.floor();
    if w >= 1.0 - 1e-10 { 0.0 } else { w }
}

/// Parse a CIF into an ordered structure (see the module docs for the rules).
pub fn parse_cif(text: &str, origin: &str) -> Result<Structure> {
    let tokens = tokenize(text, origin)?;
    let blocks = parse_blocks(&tokens, origin)?;
    if blocks.is_empty() {
        bail!("{origin}: no data_ block (not a CIF?)");
    }
    let with_sites: Vec<&Block> = blocks.iter().filter(|b| b.has("_atom_site_fract_x")).collect();
    if with_sites.len() > 1 {
        let names: Vec<String> = with_sites.iter().map(|b| format!("data_{}", b.name)).collect();
        bail!("{origin}: {} data blocks hold structures ({}); multimat reads one structure per file: split the file", names.len(), names.join(", "));
    }
    let block = match with_sites.first() {
        Some(b) => *b,
        None if blocks.iter().any(|b| b.has("_atom_site_cartn_x")) => {
            bail!("{origin}: atom sites are given only as Cartesian coordinates (_atom_site_Cartn_x); fractional coordinates are required")
        }
        None => bail!("{origin}: no data block has atom sites (_atom_site_fract_x)"),
    };
    let cell: Vec<f64> = ["_cell_length_a", "_cell_length_b", "_cell_length_c", "_cell_angle_alpha", "_cell_angle_beta", "_cell_angle_gamma"]
        .iter()
        .map(|t| required_number(block, t, origin))
        .collect::<Result<_>>()?;
    if cell[..3].iter().any(|&l| l <= 0.0) || cell[3..].iter().any(|&a| a <= 0.0 || a >= 180.0) {
        bail!("{origin}: data_{}: impossible cell parameters {cell:?}", block.name);
    }
    let lattice = lattice_from_parameters(cell[0], cell[1], cell[2], cell[3], cell[4], cell[5]);

    let ops = symmetry_operations(block, [cell[0], cell[1], cell[2], cell[3], cell[4], cell[5]], origin)?;

    // Atom sites, either a loop or single items (one-atom CIFs).
    let site_tags = ["_atom_site_fract_x", "_atom_site_fract_y", "_atom_site_fract_z"];
    let rows: Vec<HashMap<&str, Token>> = if let Some((lp, _)) = block.column("_atom_site_fract_x") {
        lp.rows
            .iter()
            .map(|row| lp.tags.iter().map(String::as_str).zip(row.iter().cloned()).collect())
            .collect()
    } else {
        vec![block.items.iter().filter(|(k, _)| k.starts_with("_atom_site_")).map(|(k, v)| (k.as_str(), v.clone())).collect()]
    };
    let inverse_free_cart = |d: [f64; 3]| -> f64 {
        let mut c = [0.0; 3];
        for k in 0..3 {
            c[k] = d[0] * lattice[0][k] + d[1] * lattice[1][k] + d[2] * lattice[2][k];
        }
        (c[0] * c[0] + c[1] * c[1] + c[2] * c[2]).sqrt()
    };
    let mut species: Vec<u8> = Vec::new();
    let mut frac_coords: Vec<[f64; 3]> = Vec::new();
    let mut site_labels: Vec<String> = Vec::new();
    for row in &rows {
        let any = row.values().next().map(|t| t.line).unwrap_or(0);
        let label = row.get("_atom_site_label").map(|t| t.text.clone()).unwrap_or_default();
        let symbol_token = row.get("_atom_site_type_symbol").or_else(|| row.get("_atom_site_label")).with_context(|| {
            format!("{origin}: line {any}: atom site has neither _atom_site_type_symbol nor _atom_site_label")
        })?;
        let name = if label.is_empty() { symbol_token.text.clone() } else { label.clone() };
        let z = atomic_number(&symbol_token.text).with_context(|| {
            format!("{origin}: line {}: site {name}: unknown element '{}'", symbol_token.line, symbol_token.text)
        })?;
        if let Some(occ_token) = row.get("_atom_site_occupancy") {
            if let Some(occ) = cif_number(occ_token, &format!("site {name} occupancy"), origin)? {
                if occ < 1.0 - OCCUPANCY_TOLERANCE {
                    bail!(
                        "{origin}: line {}: site {name} has partial occupancy {occ}; multimat needs an ordered \
                         crystal (order the structure first, e.g. with pymatgen OrderDisorderedStructureTransformation)",
                        occ_token.line
                    );
                }
                if occ > 1.0 + OCCUPANCY_TOLERANCE {
                    bail!("{origin}: line {}: site {name} has occupancy {occ} > 1", occ_token.line);
                }
            }
        }
        let mut f = [0.0; 3];
        for (k, tag) in site_tags.iter().enumerate() {
            let token = row.get(tag).with_context(|| format!("{origin}: line {any}: site {name} has no {tag}"))?;
            f[k] = cif_number(token, &format!("site {name} {tag}"), origin)?
                .with_context(|| format!("{origin}: line {}: site {name}: {tag} is unknown ('{}')", token.line, token.text))?;
        }
        for op in &ops {
            let g = op.apply(f);
            let g = [wrap_unit(g[0]), wrap_unit(g[1]), wrap_unit(g[2])];
            let mut duplicate = false;
            for (j, existing) in frac_coords.iter().enumerate() {
                let mut d = [g[0] - existing[0], g[1] - existing[1], g[2] - existing[2]];
                for x in d.iter_mut() {
                    *x -= x.round();
                }
                if inverse_free_cart(d) < DUPLICATE_TOLERANCE_ANGSTROM {
                    if species[j] != z {
                        bail!(
                            "{origin}: line {}: site {name} ({}) falls on site {} ({}) under the symmetry operations — \
                             a disordered or inconsistent structure",
                            symbol_token.line,
                            crate::elements::symbol(z),
                            site_labels[j],
                            crate::elements::symbol(species[j])
                        );
                    }
                    duplicate = true;
                    break;
                }
            }
            if !duplicate {
                species.push(z);
                frac_coords.push(g);
                site_labels.push(name.clone());
            }
        }
    }
    let s = Structure { lattice, species, frac_coords };
    super::validate_structure(&s, origin)?;
    Ok(s)
}

/// The block's symmetry operations: those listed, else the operations of the space group its
/// Hall or Hermann–Mauguin symbol or number names (`space_group`), else the identity.
fn symmetry_operations(block: &Block, cell: [f64; 6], origin: &str) -> Result<Vec<SymOp>> {
    for tag in ["_symmetry_equiv_pos_as_xyz", "_space_group_symop_operation_xyz"] {
        let tokens: Vec<&Token> = if let Some((lp, col)) = block.column(tag) {
            lp.rows.iter().map(|r| &r[col]).collect()
        } else if let Some(t) = block.items.get(tag) {
            vec![t]
        } else {
            continue;
        };
        let mut ops = Vec::with_capacity(tokens.len());
        for t in tokens {
            ops.push(parse_symop(&t.text).with_context(|| {
                format!("{origin}: line {}: cannot read symmetry operation '{}'", t.line, t.text)
            })?);
        }
        if ops.is_empty() {
            bail!("{origin}: {tag} loop is empty");
        }
        return Ok(ops);
    }
    // No operations listed: expand from the space group's symbol, if there is one.
    let given = |tags: &[&str]| {
        tags.iter().find_map(|t| block.items.get(*t)).map(|t| t.text.trim().to_string()).filter(|s| !s.is_empty() && s != "?" && s != ".")
    };
    let hall = given(&["_symmetry_space_group_name_hall", "_space_group_name_hall"]);
    let hm = given(&["_symmetry_space_group_name_h-m", "_space_group_name_h-m_alt"]);
    let number = given(&["_symmetry_int_tables_number", "_space_group_it_number"]).and_then(|t| t.parse::<u32>().ok());
    if hall.is_none() && hm.is_none() && number.is_none() {
        return Ok(vec![parse_symop("x,y,z").unwrap()]); // no symmetry information: P 1
    }
    super::space_group::operations_from_symbol(hall.as_deref(), hm.as_deref(), number, cell, &format!("{origin}: data_{}", block.name))
        .context("the CIF lists no symmetry operations, so they were generated from its space group")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rutile TiO2, P4_2/mnm (No. 136), the 16 operations of the International Tables, Ti on 2a
    /// and O on 4f: the conventional cell holds Ti2O4.
    const RUTILE: &str = "data_TiO2
_cell_length_a 4.5937(3)
_cell_length_b 4.5937(3)
_cell_length_c 2.9587(2)
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90.0
_space_group_name_H-M_alt 'P 42/m n m'
loop_
_space_group_symop.id
_space_group_symop.operation_xyz
1 'x, y, z'
2 '-x, -y, z'
3 '-y+1/2, x+1/2, z+1/2'
4 'y+1/2, -x+1/2, z+1/2'
5 '-x+1/2, y+1/2, -z+1/2'
6 'x+1/2, -y+1/2, -z+1/2'
7 'y, x, -z'
8 '-y, -x, -z'
9 '-x, -y, -z'
10 'x, y, -z'
11 'y+1/2, -x+1/2, -z+1/2'
12 '-y+1/2, x+1/2, -z+1/2'
13 'x+1/2, -y+1/2, z+1/2'
14 '-x+1/2, y+1/2, z+1/2'
15 '-y, -x, z'
16 'y, x, z'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
Ti1 Ti4+ 0 0 0 1
O1 O2- 0.3053(4) 0.3053(4) 0 1.0
";

    #[test]
    fn rutile_expands_to_ti2o4() {
        let s = parse_cif(RUTILE, "rutile.cif").unwrap();
        assert_eq!(s.formula(), "Ti2O4");
        assert!((s.volume() - 4.5937 * 4.5937 * 2.9587).abs() < 1e-9);
        // Ti at the body centre, O at (1-x, 1-x, 0) and (1/2±x, 1/2∓x, 1/2).
        let has = |z: u8, p: [f64; 3]| {
            s.species.iter().zip(&s.frac_coords).any(|(&zz, f)| zz == z && (0..3).all(|k| (f[k] - p[k]).abs() < 1e-9))
        };
        assert!(has(22, [0.5, 0.5, 0.5]));
        assert!(has(8, [1.0 - 0.3053, 1.0 - 0.3053, 0.0]));
        assert!(has(8, [0.5 + 0.3053, 0.5 - 0.3053, 0.5]));
    }

    #[test]
    fn symop_expressions() {
        let op = parse_symop("1/2+x, -y+0.25, x-y").unwrap();
        let got = op.apply([0.1, 0.2, 0.3]);
        for (g, want) in got.iter().zip([0.6, 0.05, -0.1]) {
            assert!((g - want).abs() < 1e-12, "{got:?}");
        }
        assert!(parse_symop("x, y").is_none());
        assert!(parse_symop("x, y, q").is_none());
    }

    #[test]
    fn quoted_values_text_fields_and_comments() {
        let text = "# comment\ndata_x\n_chemical_name_common 'it''s  two words'\n_journal_title\n;\nA long\n title\n;\n\
                    _cell_length_a 3 _cell_length_b 3 _cell_length_c 3\n_cell_angle_alpha 90 _cell_angle_beta 90 _cell_angle_gamma 90\n\
                    loop_ _atom_site_label _atom_site_fract_x _atom_site_fract_y _atom_site_fract_z\n\
                    'Po 1' 0 0 0 # polonium\n";
        let s = parse_cif(text, "t").unwrap();
        assert_eq!(s.species, vec![84]);
    }

    #[test]
    fn bad_inputs_name_line_and_problem() {
        let partial = RUTILE.replace("O1 O2- 0.3053(4) 0.3053(4) 0 1.0", "O1 O2- 0.3053(4) 0.3053(4) 0 0.5");
        let unknown = RUTILE.replace("Ti1 Ti4+", "Ti1 Zz");
        let nonnum = RUTILE.replace("0.3053(4) 0.3053(4) 0 1.0", "0.3053(4) abc 0 1.0");
        let short = RUTILE.replace("Ti1 Ti4+ 0 0 0 1", "Ti1 Ti4+ 0 0 0");
        let no_ops = RUTILE.replace("_space_group_symop.operation_xyz", "_space_group_symop.other").replace("'P 42/m n m'", "'P 42/m x m'");
        let two_blocks = format!("{RUTILE}\n{}", RUTILE.replace("data_TiO2", "data_again"));
        let badop = RUTILE.replace("'y, x, z'", "'y, x, w'");
        let cases = [
            (partial, "site O1 has partial occupancy 0.5"),
            (unknown, "unknown element 'Zz'"),
            (nonnum, "line 36: site O1 _atom_site_fract_y 'abc' is not a number"),
            (short, "not a multiple of 6"),
            (no_ops, "space group \"P 42/m x m\" is not a Hermann–Mauguin symbol"),
            (two_blocks, "2 data blocks hold structures (data_TiO2, data_again)"),
            (badop, "line 27: cannot read symmetry operation"),
        ];
        for (text, want) in cases {
            let err = format!("{:#}", parse_cif(&text, "x.cif").unwrap_err());
            assert!(err.contains("x.cif") && err.contains(want), "wanted {want:?} in {err}");
        }
    }

    #[test]
    fn a_space_group_symbol_alone_expands_as_the_listed_operations_do() {
        let listed = parse_cif(RUTILE, "rutile.cif").unwrap();
        let no_ops = RUTILE.replace("_space_group_symop.operation_xyz", "_space_group_symop.other");
        for text in [no_ops.clone(), no_ops.replace("_space_group_name_H-M_alt 'P 42/m n m'", "_space_group_IT_number 136")] {
            let s = parse_cif(&text, "rutile.cif").unwrap();
            assert_eq!(s.formula(), "Ti2O4");
            let mut a: Vec<(u8, [i64; 3])> = s.species.iter().zip(&s.frac_coords).map(|(&z, f)| (z, f.map(|x| (x * 1e6).round() as i64 % 1_000_000))).collect();
            let mut b: Vec<(u8, [i64; 3])> = listed.species.iter().zip(&listed.frac_coords).map(|(&z, f)| (z, f.map(|x| (x * 1e6).round() as i64 % 1_000_000))).collect();
            a.sort();
            b.sort();
            assert_eq!(a, b, "the same sites as with the International Tables' listed operations");
        }
    }
}
