//! pymatgen JSON: `Structure.as_dict()`, Materials Project API documents that wrap one
//! (`{"structure": …}`, `{"data": [{…, "structure": …}]}`), and `Dos`/`CompleteDos.as_dict()`.
//! Parsed from `serde_json::Value` (serde_json is the JSON parser; this file only maps fields).

use crate::elements::atomic_number;
use crate::material::{Dos, Structure};
use anyhow::{bail, Context, Result};
use serde_json::Value;

/// A structure from a pymatgen `Structure` dict or an MP API document holding exactly one.
/// Partially occupied or mixed sites are rejected, naming the site.
pub fn structure_from_json(value: &Value, origin: &str) -> Result<Structure> {
    let mut all = structures_from_json(value, origin)?;
    match all.len() {
        1 => Ok(all.pop().unwrap().1),
        0 => bail!("{origin}: no structure found (expected a pymatgen Structure dict or an MP document)"),
        n => bail!("{origin}: the document holds {n} structures; expected one (use structures_from_json)"),
    }
}

/// Every structure in a pymatgen `Structure` dict, an MP document `{"structure": …}` (with its
/// `material_id` when present), or an MP API response `{"data": [doc, …]}`, in order.
pub fn structures_from_json(value: &Value, origin: &str) -> Result<Vec<(Option<String>, Structure)>> {
    if is_structure_dict(value) {
        return Ok(vec![(None, structure_dict(value, origin)?)]);
    }
    if let Some(inner) = value.get("structure") {
        let id = value.get("material_id").and_then(material_id_string);
        let where_ = match &id {
            Some(id) => format!("{origin} ({id})"),
            None => origin.to_string(),
        };
        return Ok(vec![(id, structure_dict(inner, &where_).context("in field \"structure\"")?)]);
    }
    if let Some(Value::Array(docs)) = value.get("data") {
        let mut out = Vec::with_capacity(docs.len());
        for (i, doc) in docs.iter().enumerate() {
            let record = format!("{origin}#data[{i}]");
            let mut one = structures_from_json(doc, &record)?;
            if one.is_empty() {
                bail!("{record}: document has no \"structure\"");
            }
            out.append(&mut one);
        }
        return Ok(out);
    }
    bail!("{origin}: not a pymatgen Structure (no \"lattice\"/\"sites\") nor an MP document (no \"structure\" or \"data\")")
}

fn material_id_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn is_structure_dict(v: &Value) -> bool {
    v.get("lattice").is_some() && v.get("sites").is_some()
}

fn as_f64(v: &Value, what: &str, origin: &str) -> Result<f64> {
    v.as_f64()
        .filter(|x| x.is_finite())
        .with_context(|| format!("{origin}: {what} is not a finite number: {v}"))
}

fn vec3(v: &Value, what: &str, origin: &str) -> Result<[f64; 3]> {
    let arr = v.as_array().filter(|a| a.len() == 3).with_context(|| format!("{origin}: {what} is not a list of 3 numbers: {v}"))?;
    Ok([as_f64(&arr[0], what, origin)?, as_f64(&arr[1], what, origin)?, as_f64(&arr[2], what, origin)?])
}

/// Parse one pymatgen `Structure.as_dict()`.
fn structure_dict(v: &Value, origin: &str) -> Result<Structure> {
    if !is_structure_dict(v) {
        bail!("{origin}: not a pymatgen Structure dict (needs \"lattice\" and \"sites\")");
    }
    let lattice_value = &v["lattice"];
    // Structure.as_dict: {"matrix": [[…]×3], "a": …}; some documents store the bare matrix.
    let matrix = lattice_value.get("matrix").unwrap_or(lattice_value);
    let rows = matrix.as_array().filter(|r| r.len() == 3).with_context(|| format!("{origin}: lattice matrix is not 3×3"))?;
    let mut lattice = [[0.0; 3]; 3];
    for (k, row) in rows.iter().enumerate() {
        lattice[k] = vec3(row, &format!("lattice vector {}", k + 1), origin)?;
    }
    let inverse = super::inverse3(&lattice).with_context(|| format!("{origin}: lattice is singular: {lattice:?}"))?;
    let sites = v["sites"].as_array().with_context(|| format!("{origin}: \"sites\" is not a list"))?;
    let mut species = Vec::with_capacity(sites.len());
    let mut frac_coords = Vec::with_capacity(sites.len());
    for (i, site) in sites.iter().enumerate() {
        let label = site.get("label").and_then(Value::as_str).unwrap_or("");
        let name = format!("site {i}{}", if label.is_empty() { String::new() } else { format!(" ({label})") });
        let sp = site
            .get("species")
            .and_then(Value::as_array)
            .with_context(|| format!("{origin}: {name} has no \"species\" list"))?;
        if sp.len() != 1 {
            let names: Vec<String> = sp
                .iter()
                .map(|s| format!("{}:{}", s.get("element").and_then(Value::as_str).unwrap_or("?"), s.get("occu").unwrap_or(&Value::Null)))
                .collect();
            bail!(
                "{origin}: {name} is disordered ({}); partial occupancy is not supported — order the \
                 structure first (e.g. pymatgen OrderDisorderedStructureTransformation)",
                names.join(", ")
            );
        }
        let element = sp[0]
            .get("element")
            .and_then(Value::as_str)
            .with_context(|| format!("{origin}: {name} species has no \"element\""))?;
        let z = atomic_number(element).with_context(|| format!("{origin}: {name}: unknown element '{element}'"))?;
        let occu = match sp[0].get("occu") {
            None | Some(Value::Null) => 1.0,
            Some(o) => as_f64(o, &format!("{name} occupancy"), origin)?,
        };
        if (occu - 1.0).abs() > 1e-6 {
            bail!(
                "{origin}: {name} ({element}) has occupancy {occu}; partial occupancy is not supported — \
                 order the structure first"
            );
        }
        let frac = if let Some(abc) = site.get("abc") {
            vec3(abc, &format!("{name} fractional coordinates"), origin)?
        } else if let Some(xyz) = site.get("xyz") {
            super::cart_to_frac(vec3(xyz, &format!("{name} cartesian coordinates"), origin)?, &inverse)
        } else {
            bail!("{origin}: {name} has neither \"abc\" nor \"xyz\" coordinates");
        };
        species.push(z);
        frac_coords.push(frac);
    }
    let s = Structure { lattice, species, frac_coords };
    super::validate_structure(&s, origin)?;
    Ok(s)
}

/// A DOS from pymatgen `Dos`/`CompleteDos.as_dict()` (or an MP document holding one under
/// `"dos"`): `energies`, `densities` {"1": up, "-1": down}, `efermi`. Projected DOS is ignored.
/// A `null` density (Python's NaN) is kept as NaN so preprocessing can repair and count it; a
/// `null` energy is an error.
pub fn dos_from_json(value: &Value, origin: &str) -> Result<Dos> {
    if value.get("energies").is_none() {
        if let Some(inner) = value.get("dos") {
            return dos_from_json(inner, origin);
        }
        bail!("{origin}: not a pymatgen Dos (no \"energies\")");
    }
    let energies_v = value["energies"].as_array().with_context(|| format!("{origin}: \"energies\" is not a list"))?;
    let mut energies = Vec::with_capacity(energies_v.len());
    for (i, e) in energies_v.iter().enumerate() {
        let x = as_f64(e, &format!("energies[{i}]"), origin)?;
        if let Some(&prev) = energies.last() {
            if x <= prev {
                bail!("{origin}: energies[{i}] = {x} does not increase (previous {prev})");
            }
        }
        energies.push(x);
    }
    if energies.len() < 2 {
        bail!("{origin}: DOS has {} energies; at least 2 are needed", energies.len());
    }
    let efermi = as_f64(value.get("efermi").unwrap_or(&Value::Null), "\"efermi\"", origin)?;
    let densities = value
        .get("densities")
        .and_then(Value::as_object)
        .with_context(|| format!("{origin}: \"densities\" is not an object {{\"1\": […], \"-1\": […]}}"))?;
    let channel = |keys: &[&str]| -> Result<Option<Vec<f64>>> {
        let Some((key, v)) = keys.iter().find_map(|k| densities.get(*k).map(|v| (*k, v))) else {
            return Ok(None);
        };
        let arr = v.as_array().with_context(|| format!("{origin}: densities[\"{key}\"] is not a list"))?;
        if arr.len() != energies.len() {
            bail!("{origin}: densities[\"{key}\"] has {} values but there are {} energies", arr.len(), energies.len());
        }
        arr.iter()
            .enumerate()
            .map(|(i, x)| match x {
                Value::Null => Ok(f64::NAN),
                _ => x.as_f64().with_context(|| format!("{origin}: densities[\"{key}\"][{i}] is not a number: {x}")),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    };
    let up = channel(&["1", "Spin.up", "up"])?.with_context(|| format!("{origin}: no spin-up densities (key \"1\")"))?;
    let down = channel(&["-1", "Spin.down", "down"])?;
    Ok(Dos { energies, densities_up: up, densities_down: down, efermi })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nacl() -> Value {
        json!({"@class": "Structure", "lattice": {"matrix": [[5.6,0,0],[0,5.6,0],[0,0,5.6]]},
               "sites": [{"species": [{"element": "Na", "occu": 1}], "abc": [0,0,0], "label": "Na"},
                         {"species": [{"element": "Cl", "occu": 1.0}], "xyz": [2.8,2.8,2.8], "label": "Cl"}]})
    }

    #[test]
    fn structure_and_documents() {
        let s = structure_from_json(&nacl(), "t").unwrap();
        assert_eq!(s.species, vec![11, 17]);
        assert!((s.frac_coords[1][0] - 0.5).abs() < 1e-12);
        let doc = json!({"material_id": "mp-22862", "structure": nacl()});
        assert_eq!(structure_from_json(&doc, "t").unwrap(), s);
        let resp = json!({"data": [doc.clone(), doc]});
        let all = structures_from_json(&resp, "t").unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].0.as_deref(), Some("mp-22862"));
        assert!(structure_from_json(&resp, "t").is_err());
    }

    #[test]
    fn partial_occupancy_and_unknown_elements_are_rejected_naming_the_site() {
        let mut v = nacl();
        v["sites"][1]["species"] = json!([{"element": "Cl", "occu": 0.5}, {"element": "Br", "occu": 0.5}]);
        let err = format!("{:#}", structure_from_json(&v, "x.json").unwrap_err());
        assert!(err.contains("site 1 (Cl)") && err.contains("partial occupancy"), "{err}");
        let mut v = nacl();
        v["sites"][0]["species"][0]["occu"] = json!(0.9);
        let err = format!("{:#}", structure_from_json(&v, "x.json").unwrap_err());
        assert!(err.contains("site 0 (Na)") && err.contains("0.9"), "{err}");
        let mut v = nacl();
        v["sites"][0]["species"][0]["element"] = json!("Qq");
        let err = format!("{:#}", structure_from_json(&v, "x.json").unwrap_err());
        assert!(err.contains("unknown element 'Qq'"), "{err}");
    }

    #[test]
    fn dos_with_null_density_and_bad_shapes() {
        let v = json!({"efermi": 1.0, "energies": [0.0, 1.0, 2.0], "densities": {"1": [0.0, null, 2.0], "-1": [1, 1, 1]}});
        let d = dos_from_json(&v, "t").unwrap();
        assert!(d.densities_up[1].is_nan());
        assert_eq!(d.densities_down, Some(vec![1.0, 1.0, 1.0]));
        let v = json!({"efermi": 1.0, "energies": [0.0, 1.0, 2.0], "densities": {"1": [0.0, 2.0]}});
        assert!(format!("{:#}", dos_from_json(&v, "d.json").unwrap_err()).contains("has 2 values but there are 3"));
        let v = json!({"efermi": 1.0, "energies": [0.0, null, 2.0], "densities": {"1": [0.0, 1.0, 2.0]}});
        assert!(format!("{:#}", dos_from_json(&v, "d.json").unwrap_err()).contains("energies[1]"));
    }
}
