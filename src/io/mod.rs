//! Readers for the files materials scientists have: structures (CIF, POSCAR, pymatgen JSON,
//! Materials Project documents), DOS (vasprun.xml, DOSCAR, pymatgen JSON), charge densities
//! (CHGCAR/AECCAR), texts, precomputed embeddings (npy) and labels (CSV, pandas "split" JSON).
//! Every reader accepts plain or gzipped input and names the file and line/record in its errors.
//!
//! Compression is detected from the gzip magic bytes (1f 8b), never from the extension, so a
//! `CHGCAR` that is secretly gzipped and a `.gz` that was already unpacked both read correctly.
//! The format is chosen from the file name with any `.gz` suffix removed (see `read_structure`,
//! `read_dos`, `read_charge_density`).

pub mod chgcar;
pub mod cif;
pub mod doscar;
pub mod extxyz;
pub mod jarvis;
pub mod labels;
pub mod matminer;
pub mod mp_docs;
pub mod npy;
pub mod poscar;
pub mod pymatgen;
pub mod space_group;
pub mod structure_dir;
pub mod text;
pub mod vasp_structure;
pub mod vasprun;

use crate::material::{ChargeDensity, Dos, Structure};
use anyhow::{bail, Context, Result};
use flate2::read::MultiGzDecoder;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A buffered reader over the decompressed content of `path` (plain or gzip, by magic bytes).
/// Use this for large files that are parsed as a stream (vasprun.xml can be hundreds of MB).
pub fn open_reader(path: &Path) -> Result<Box<dyn BufRead + Send>> {
    let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let head = reader.fill_buf().with_context(|| format!("{}: cannot read", path.display()))?;
    if head.len() >= 2 && head[..2] == GZIP_MAGIC {
        // MultiGzDecoder: concatenated gzip members (as `cat a.gz b.gz` or pigz produce) are one stream.
        Ok(Box::new(BufReader::with_capacity(1 << 16, MultiGzDecoder::new(reader))))
    } else {
        Ok(Box::new(reader))
    }
}

/// The whole decompressed content of `path` as bytes (plain or gzip, by magic bytes).
pub fn open_bytes(path: &Path) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    open_reader(path)?
        .read_to_end(&mut out)
        .with_context(|| format!("{}: cannot read (truncated or corrupt gzip?)", path.display()))?;
    Ok(out)
}

/// The whole decompressed content of `path` as text. Invalid UTF-8 (latin-1 comments in old CIFs)
/// is replaced by U+FFFD rather than rejected: no numeric field of any supported format can
/// contain such bytes, so the replacement cannot change a parsed value.
pub fn open_text(path: &Path) -> Result<String> {
    let bytes = open_bytes(path)?;
    Ok(match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// The whole decompressed content of `path` as text that must be valid UTF-8 (JSON, JSON lines,
/// CSV): stored strings (ids, descriptions, column names) must not be altered silently, so an
/// invalid byte is an error naming the line and byte.
pub fn open_utf8(path: &Path) -> Result<String> {
    utf8_or_error(open_bytes(path)?, &path.display().to_string())
}

/// `bytes` as a String, or an error naming `origin`, the line and the offending byte offset.
pub fn utf8_or_error(bytes: Vec<u8>, origin: &str) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        anyhow::anyhow!("{origin}: line {line}: invalid UTF-8 (byte 0x{:02x} at offset {at}); re-encode the file as UTF-8", bytes[at])
    })
}

/// Lower-case file name of `path` with one trailing `.gz` removed: the name that decides the format.
pub fn format_name(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    name.strip_suffix(".gz").map(str::to_string).unwrap_or(name)
}

/// Which structure format a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StructureFormat {
    Cif,
    Poscar,
    PymatgenJson,
    /// ASE extended XYZ (`*.xyz`, `*.extxyz`).
    Extxyz,
    /// The final structure of a `vasprun*.xml`.
    VasprunXml,
    /// The header of a VASP volumetric file (`CHGCAR*`, `AECCAR*`, `CHG`, `PARCHG*`).
    VaspVolumetric,
}

/// The structure format of a file by its name (`.gz` ignored), or `None` if not recognised.
pub fn structure_format(path: &Path) -> Option<StructureFormat> {
    let name = format_name(path);
    if name.ends_with(".cif") {
        Some(StructureFormat::Cif)
    } else if name.starts_with("poscar")
        || name.starts_with("contcar")
        || name.ends_with(".vasp")
        || name.ends_with(".poscar")
        || name.ends_with(".contcar")
    {
        Some(StructureFormat::Poscar)
    } else if name.starts_with("vasprun") && name.ends_with(".xml") {
        Some(StructureFormat::VasprunXml)
    } else if name.ends_with(".json") {
        Some(StructureFormat::PymatgenJson)
    } else if name.ends_with(".xyz") || name.ends_with(".extxyz") {
        Some(StructureFormat::Extxyz)
    } else if name.starts_with("chgcar") || name.starts_with("aeccar") || name.starts_with("parchg") || name == "chg" {
        Some(StructureFormat::VaspVolumetric)
    } else {
        None
    }
}

/// Read a crystal structure, choosing the parser by file name: `*.cif` → CIF; `POSCAR*`,
/// `CONTCAR*`, `*.vasp`, `*.poscar` → POSCAR; `*.json` → pymatgen `Structure` dict or a Materials
/// Project API document; `*.xyz`, `*.extxyz` → extended XYZ; `vasprun*.xml` → its final
/// structure; `CHGCAR*`, `AECCAR*` → the volumetric file's header. Other names are recognised by
/// their content (`structure_dir::sniff_structure_format`). Each may be gzipped.
pub fn read_structure(path: &Path) -> Result<Structure> {
    let origin = path.display().to_string();
    let format = match structure_format(path) {
        Some(f) => f,
        None => structure_dir::sniff_structure_format(path)?.with_context(|| {
            format!(
                "{origin}: unknown structure format (expected *.cif, POSCAR*, CONTCAR*, *.vasp, *.poscar, *.json, \
                 *.xyz/*.extxyz, vasprun*.xml or CHGCAR*/AECCAR*, optionally .gz, or content in one of those formats)"
            )
        })?,
    };
    match format {
        StructureFormat::Cif => cif::parse_cif(&open_text(path)?, &origin),
        StructureFormat::Poscar => poscar::parse_poscar(&open_text(path)?, &origin),
        StructureFormat::PymatgenJson => {
            let value = read_json(path)?;
            pymatgen::structure_from_json(&value, &origin)
        }
        StructureFormat::Extxyz => extxyz::parse_extxyz(&open_text(path)?, &origin),
        StructureFormat::VasprunXml => vasp_structure::read_vasprun_structure(path),
        StructureFormat::VaspVolumetric => vasp_structure::read_volumetric_structure(path),
    }
}

/// Read a density of states: `vasprun*.xml` / `*.xml` → vasprun (streamed), `DOSCAR*` → DOSCAR
/// (E_F from its header), `*.json` → pymatgen `Dos`/`CompleteDos`. Each may be gzipped.
pub fn read_dos(path: &Path) -> Result<Dos> {
    let name = format_name(path);
    let origin = path.display().to_string();
    if name.ends_with(".xml") || name.starts_with("vasprun") {
        vasprun::read_vasprun_dos(path)
    } else if name.starts_with("doscar") || name.ends_with(".doscar") {
        doscar::parse_doscar(&open_text(path)?, &origin, None)
    } else if name.ends_with(".json") {
        pymatgen::dos_from_json(&read_json(path)?, &origin)
    } else {
        bail!("{origin}: unknown DOS format (expected vasprun*.xml, DOSCAR* or *.json, optionally .gz)")
    }
}

/// Read a charge density: `*.json` → pymatgen `Chgcar`/`VolumetricData` JSON (as MP's API
/// returns it); any other name → a VASP volumetric file (CHGCAR, AECCAR0/1/2, CHGCAR.nospin,
/// CHG, …): the first grid (total density for spin-polarised runs), reordered to C order.
pub fn read_charge_density(path: &Path) -> Result<ChargeDensity> {
    if format_name(path).ends_with(".json") {
        return pymatgen::charge_density_from_json(&read_json(path)?, &path.display().to_string());
    }
    chgcar::parse_chgcar(&open_text(path)?, &path.display().to_string())
}

/// Parse a JSON file (plain or gzip). Python's non-standard `NaN`, `Infinity` and `-Infinity`
/// tokens (written by `json.dump` by default) are read as `null`; the caller decides what a
/// null means (a missing DOS value is repaired later, a missing coordinate is an error).
pub fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = open_utf8(path)?;
    parse_json_text(&text, &path.display().to_string())
}

/// Parse JSON text as `read_json` does; errors name `origin` and the line/column.
pub fn parse_json_text(text: &str, origin: &str) -> Result<serde_json::Value> {
    let cleaned = replace_python_nonfinite(text);
    serde_json::from_str(&cleaned).map_err(|e| {
        anyhow::anyhow!("{origin}: invalid JSON at line {} column {}: {e}", e.line(), e.column())
    })
}

/// Replace bare `NaN`, `Infinity`, `-Infinity` tokens outside strings by `null`, keeping every
/// other byte (so serde_json's line numbers stay exact).
fn replace_python_nonfinite(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("NaN") && !text.contains("Infinity") {
        return std::borrow::Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut in_string = false;
    let mut start = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            if b == b'\\' {
                i += 2;
                continue;
            }
            if b == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        if b == b'"' {
            in_string = true;
            i += 1;
            continue;
        }
        let mut matched = false;
        for token in ["-Infinity", "Infinity", "NaN"] {
            if bytes[i..].starts_with(token.as_bytes()) {
                out.push_str(&text[start..i]);
                out.push_str("null");
                i += token.len();
                start = i;
                matched = true;
                break;
            }
        }
        if !matched {
            i += 1;
        }
    }
    out.push_str(&text[start..]);
    std::borrow::Cow::Owned(out)
}

/// Parse a Fortran/C floating-point token: `1.5`, `-.16E+00`, `0.1D+01` (Fortran double
/// exponent). Returns `None` for anything else, including Fortran overflow (`*****`).
/// Non-finite spellings (`NaN`, `inf`) parse to non-finite values; callers decide if that is allowed.
pub fn parse_float(token: &str) -> Option<f64> {
    if let Ok(v) = token.parse::<f64>() {
        return Some(v);
    }
    if token.contains(['D', 'd']) {
        return token.replace(['D', 'd'], "E").parse::<f64>().ok();
    }
    None
}

/// Refuse a count a file declares (atoms, grid points, DOS points) that the rest of the file
/// cannot hold, before anything is allocated for it: a flipped digit in a header must give an
/// error, not an 8 GB reservation. `available` is an upper bound on how many items the remaining
/// content can contain (e.g. its remaining lines, or half its remaining bytes for numbers that
/// need a digit and a separator each).
pub fn check_declared_count(declared: usize, available: usize, what: &str, origin: &str, line: usize) -> Result<()> {
    if declared > available {
        bail!(
            "{origin}: line {line}: the header declares {declared} {what}, but the rest of the file can hold at \
             most {available} (corrupt header or truncated file)"
        );
    }
    Ok(())
}

/// Bytes of `text` from the start of `lines[i]` to the end (0 past the last line); `lines` must
/// be slices of `text` (as `text.lines()` gives).
pub fn bytes_from_line(text: &str, lines: &[&str], i: usize) -> usize {
    match lines.get(i) {
        Some(l) => text.len() - (l.as_ptr() as usize - text.as_ptr() as usize),
        None => 0,
    }
}

/// Check that a structure is usable: at least one site, finite lattice and coordinates, and a
/// non-degenerate cell (|V| > 1e-6 Å³).
pub fn validate_structure(structure: &Structure, origin: &str) -> Result<()> {
    if structure.species.is_empty() {
        bail!("{origin}: structure has no sites");
    }
    if structure.species.len() != structure.frac_coords.len() {
        bail!("{origin}: {} species but {} coordinates", structure.species.len(), structure.frac_coords.len());
    }
    if structure.lattice.iter().flatten().any(|v| !v.is_finite()) {
        bail!("{origin}: lattice has non-finite entries: {:?}", structure.lattice);
    }
    let volume = structure.volume();
    if volume.abs() < 1e-6 {
        bail!("{origin}: lattice is degenerate (cell volume {volume:.3e} Å³): {:?}", structure.lattice);
    }
    for (i, c) in structure.frac_coords.iter().enumerate() {
        if c.iter().any(|v| !v.is_finite()) {
            bail!("{origin}: site {} has non-finite coordinates {c:?}", i + 1);
        }
    }
    Ok(())
}

/// Inverse of a 3×3 matrix (rows = lattice vectors); `None` when singular.
#[allow(clippy::needless_range_loop)] // cofactor index arithmetic reads clearer with indices
pub(crate) fn inverse3(m: &[[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    if !det.is_finite() || det.abs() < 1e-12 {
        return None;
    }
    let inv_det = 1.0 / det;
    let mut inv = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            // cofactor (j, i) for the adjugate
            let (r0, r1) = ((j + 1) % 3, (j + 2) % 3);
            let (c0, c1) = ((i + 1) % 3, (i + 2) % 3);
            inv[i][j] = (m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0]) * inv_det;
        }
    }
    Some(inv)
}

/// Fractional coordinates of a Cartesian position for a lattice with vectors as rows:
/// cart = frac · L  ⇒  frac = cart · L⁻¹.
pub(crate) fn cart_to_frac(cart: [f64; 3], inv_lattice: &[[f64; 3]; 3]) -> [f64; 3] {
    let mut f = [0.0; 3];
    for (k, fk) in f.iter_mut().enumerate() {
        *fk = cart[0] * inv_lattice[0][k] + cart[1] * inv_lattice[1][k] + cart[2] * inv_lattice[2][k];
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn gzip_is_detected_by_magic_bytes_not_extension() {
        let dir = tempfile::tempdir().unwrap();
        let plain_named_gz = dir.path().join("a.txt.gz");
        std::fs::write(&plain_named_gz, "hello\n").unwrap();
        assert_eq!(open_text(&plain_named_gz).unwrap(), "hello\n");
        let gz_named_plain = dir.path().join("b.txt");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(b"zipped\n").unwrap();
        std::fs::write(&gz_named_plain, enc.finish().unwrap()).unwrap();
        assert_eq!(open_text(&gz_named_plain).unwrap(), "zipped\n");
    }

    #[test]
    fn truncated_gzip_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("CHGCAR.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&vec![b'1'; 100_000]).unwrap();
        let bytes = enc.finish().unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        let err = format!("{:#}", open_text(&p).unwrap_err());
        assert!(err.contains("CHGCAR.gz"), "{err}");
    }

    #[test]
    fn python_nonfinite_tokens_become_null_outside_strings() {
        let v = parse_json_text(r#"{"a": [1, NaN, -Infinity, Infinity], "s": "NaN here"}"#, "t").unwrap();
        assert_eq!(v["a"], serde_json::json!([1, null, null, null]));
        assert_eq!(v["s"], "NaN here");
        let err = format!("{:#}", parse_json_text("{\n\"a\": [1, 2,,]}", "f.json").unwrap_err());
        assert!(err.contains("f.json") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn fortran_floats() {
        assert_eq!(parse_float("-.16E+00"), Some(-0.16));
        assert_eq!(parse_float("0.1D+01"), Some(1.0));
        assert_eq!(parse_float("1.0"), Some(1.0));
        assert_eq!(parse_float("*******"), None);
        assert_eq!(parse_float("abc"), None);
    }

    #[test]
    fn structure_format_by_name() {
        use StructureFormat::*;
        for (name, f) in [
            ("x.cif", Some(Cif)),
            ("X.CIF.gz", Some(Cif)),
            ("POSCAR", Some(Poscar)),
            ("CONTCAR.relax2.gz", Some(Poscar)),
            ("Si.vasp", Some(Poscar)),
            ("mp-1.json.gz", Some(PymatgenJson)),
            ("nacl.extxyz", Some(Extxyz)),
            ("vasprun.xml.gz", Some(VasprunXml)),
            ("CHGCAR.nospin.gz", Some(VaspVolumetric)),
            ("AECCAR2", Some(VaspVolumetric)),
            ("notes.txt", None),
        ] {
            assert_eq!(structure_format(Path::new(name)), f, "{name}");
        }
    }
}
