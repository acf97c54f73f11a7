//! Materials Project API documents as users save them (`mp_api`'s `MPRester`, `doc.model_dump()`
//! or the REST response written to JSON):
//! - summary documents (`materials/summary`): one document, a list of them, or the REST
//!   response `{"data": [doc, …]}`. Per document: `material_id` → id, `structure` (a pymatgen
//!   `Structure` dict) → structure, `description` (MP's Robocrystallographer text) → text, and
//!   numeric properties → targets: every finite numeric top-level field except bookkeeping
//!   counts ([`NON_TARGET_FIELDS`]), plus the moduli dicts `bulk_modulus`/`shear_modulus`
//!   (`{"voigt", "reuss", "vrh"}` → `bulk_modulus_vrh`, …). Strings, booleans, lists and other
//!   dicts (composition, symmetry, origins) are not targets.
//! - DOS documents (`CompleteDos`/`Dos.as_dict()`, `get_dos_by_material_id`) and charge
//!   densities (`Chgcar.as_dict()`, `get_charge_density_from_material_id`) are per-material
//!   files read by `io::read_dos` / `io::read_charge_density` (see `pymatgen.rs`); a folder of
//!   documents names them `<id>.dos.json` / `<id>.chgcar.json` (see [`classify`]).
//!
//! A summary file that holds a DOS or a charge density instead (or an MP electronic-structure
//! summary, which has no DOS curve) is an error saying so and how to name it.

use crate::material::{MaterialRecord, Provenance};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Numeric summary fields that count or index rather than measure a property.
pub const NON_TARGET_FIELDS: &[&str] = &["nsites", "nelements", "material_id", "task_id", "formula_anonymous", "chemsys"];

/// Summary fields holding `{"voigt", "reuss", "vrh"}` moduli (GPa), flattened to `<name>_<key>`.
const MODULI_FIELDS: &[&str] = &["bulk_modulus", "shear_modulus"];

/// What a file in a folder of MP documents holds, by its name (`.gz` ignored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DocFile {
    /// `<id>.dos.json` or `<id>_dos.json`: a pymatgen DOS.
    Dos(String),
    /// `<id>.chgcar.json` or `<id>_chgcar.json`: a pymatgen Chgcar.
    Chgcar(String),
    /// Any other `*.json`: summary documents (ids inside).
    Summary,
}

/// The kind of a file in a folder of MP documents, or `None` when it is not JSON.
pub fn classify(path: &Path) -> Option<DocFile> {
    let original = path.file_name()?.to_string_lossy().into_owned();
    // ASCII lower-casing keeps every byte offset, so the id can be cut from the original name.
    let lower = original.to_ascii_lowercase();
    let base = lower.strip_suffix(".gz").unwrap_or(&lower);
    let stem = base.strip_suffix(".json")?;
    for (suffix, dos) in [(".dos", true), ("_dos", true), (".chgcar", false), ("_chgcar", false)] {
        if stem.len() > suffix.len() && stem.ends_with(suffix) {
            let id = original[..stem.len() - suffix.len()].to_string();
            return Some(if dos { DocFile::Dos(id) } else { DocFile::Chgcar(id) });
        }
    }
    Some(DocFile::Summary)
}

/// Read a file of MP summary documents (plain or gzip). The outer `Result` fails when the file
/// is unreadable or holds something else (a DOS, a charge density, an unknown form); each
/// document that fails is an `Err` naming `file#i (id)`.
pub fn read_summary_docs(path: &Path) -> Result<Vec<Result<MaterialRecord>>> {
    let origin = path.display().to_string();
    let value = super::read_json(path)?;
    let docs: Vec<&Value> = match &value {
        Value::Array(a) => a.iter().collect(),
        Value::Object(o) if o.contains_key("material_id") => vec![&value],
        Value::Object(o) => match o.get("data") {
            Some(Value::Array(a)) => a.iter().collect(),
            _ => bail!("{origin}: {}", not_summary(&value)),
        },
        _ => bail!("{origin}: not MP summary documents (expected a document, a list of them or {{\"data\": […]}})"),
    };
    Ok(docs.into_iter().enumerate().map(|(i, d)| summary_doc(d, &format!("{origin}#{i}"))).collect())
}

/// Why an object is not a summary document, naming what it is when that is recognisable.
fn not_summary(v: &Value) -> String {
    let class = v.get("@class").and_then(Value::as_str);
    if matches!(class, Some("Chgcar" | "VolumetricData")) || (v.get("structure").is_some() && v.pointer("/data/total").is_some()) {
        return "a pymatgen Chgcar (charge density), not summary documents: name the file <material_id>.chgcar.json \
                so its material id is known"
            .into();
    }
    if matches!(class, Some("CompleteDos" | "Dos" | "LobsterCompleteDos")) || v.get("energies").is_some() {
        return "a pymatgen DOS, not summary documents: name the file <material_id>.dos.json so its material id is known".into();
    }
    if v.get("dos").is_some_and(|d| d.get("total").is_some()) {
        return "an MP electronic-structure summary (no DOS curve); fetch the DOS with \
                MPRester().get_dos_by_material_id(id) and save it as <material_id>.dos.json"
            .into();
    }
    "not MP summary documents (no \"material_id\", not a list, no \"data\" list)".into()
}

fn summary_doc(doc: &Value, record: &str) -> Result<MaterialRecord> {
    let obj = doc.as_object().with_context(|| format!("{record}: document is not a JSON object"))?;
    let id = match obj.get("material_id") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        _ => bail!("{record}: {}", not_summary(doc)),
    };
    let here = format!("{record} ({id})");
    let structure = match obj.get("structure") {
        Some(s) if !s.is_null() => super::pymatgen::structure_from_json(s, &here).context("field \"structure\"")?,
        _ => bail!("{here}: the document has no \"structure\" (request it: MPRester().materials.summary.search(..., fields=[\"material_id\", \"structure\", …]))"),
    };
    let mut targets = BTreeMap::new();
    for (name, v) in obj {
        if NON_TARGET_FIELDS.contains(&name.as_str()) {
            continue;
        }
        match v {
            Value::Number(n) => {
                if let Some(x) = n.as_f64().filter(|x| x.is_finite()) {
                    targets.insert(name.clone(), vec![x]);
                }
            }
            Value::Object(m) if MODULI_FIELDS.contains(&name.as_str()) => {
                for (key, x) in m {
                    if let Some(x) = x.as_f64().filter(|x| x.is_finite()) {
                        targets.insert(format!("{name}_{key}"), vec![x]);
                    }
                }
            }
            _ => {}
        }
    }
    let text = obj.get("description").and_then(Value::as_str).map(str::trim).filter(|t| !t.is_empty()).map(str::to_string);
    let mut provenance = Provenance::default();
    provenance.sources.insert("structure".into(), record.to_string());
    if !targets.is_empty() {
        provenance.sources.insert("targets".into(), record.to_string());
    }
    if text.is_some() {
        provenance.sources.insert("text".into(), format!("{record} (description)"));
    }
    Ok(MaterialRecord { id, structure: Some(structure), targets, text, provenance, ..Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_kinds_by_name() {
        assert_eq!(classify(Path::new("d/mp-149.dos.json.gz")), Some(DocFile::Dos("mp-149".into())));
        assert_eq!(classify(Path::new("mp-149_chgcar.json")), Some(DocFile::Chgcar("mp-149".into())));
        assert_eq!(classify(Path::new("summary.json")), Some(DocFile::Summary));
        assert_eq!(classify(Path::new(".dos.json")), Some(DocFile::Summary));
        assert_eq!(classify(Path::new("notes.txt")), None);
        assert_eq!(classify(Path::new("MP-Ünï.DOS.JSON")), Some(DocFile::Dos("MP-Ünï".into())));
    }
}
