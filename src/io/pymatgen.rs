//! pymatgen JSON: `Structure.as_dict()`, Materials Project API documents that wrap one
//! (`{"structure": …}`, `{"data": [{…, "structure": …}]}`), `Dos`/`CompleteDos.as_dict()`, and
//! `Chgcar`/`VolumetricData.as_dict()` (the charge densities MP's API hands out).
//! Parsed from `serde_json::Value` (serde_json is the JSON parser; this file only maps fields).

use crate::elements::atomic_number;
use crate::material::{ChargeDensity, Dos, Structure};
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
            if inner.get("energies").is_none() && inner.get("total").is_some() {
                // MP's electronic_structure documents summarise the DOS (gaps, band edges per
                // spin and element) without the curve itself.
                bail!(
                    "{origin}: an MP electronic-structure summary (band gaps and edges per spin/element), not a DOS \
                     curve; fetch the DOS itself (mp_api: MPRester().get_dos_by_material_id(id).as_dict()) and save that"
                );
            }
            return dos_from_json(inner, origin);
        }
        match value.get("@class").and_then(Value::as_str) {
            Some(class) => bail!("{origin}: a pymatgen {class}, not a Dos/CompleteDos (no \"energies\")"),
            None => bail!("{origin}: not a pymatgen Dos (no \"energies\")"),
        }
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

/// A charge density from pymatgen `Chgcar`/`VolumetricData.as_dict()` (what MP's API returns
/// for a charge density): `structure` (a `Structure` dict) and `data.total`, an (nx, ny, nz)
/// nested list or a monty numpy dict `{"@module": "numpy", "data": …}`. pymatgen keeps the
/// CHGCAR values as VASP wrote them, ρ·V_cell (its reader only reshapes them so that
/// `total[i][j][k]` is the point (i/nx, j/ny, k/nz)), which is this project's convention too:
/// the values are stored unchanged, flattened in C order. `data.diff` (the spin density) is
/// ignored as for CHGCAR files; LOCPOT/ELFCAR classes are refused.
pub fn charge_density_from_json(value: &Value, origin: &str) -> Result<ChargeDensity> {
    let class = value.get("@class").and_then(Value::as_str);
    if let Some(c) = class.filter(|c| !matches!(*c, "Chgcar" | "VolumetricData")) {
        bail!("{origin}: a pymatgen {c}, not a charge density (expected @class Chgcar or VolumetricData)");
    }
    let (Some(structure), Some(data)) = (value.get("structure"), value.get("data")) else {
        bail!("{origin}: not a pymatgen Chgcar (needs \"structure\" and \"data\": {{\"total\": [[[…]]]}})");
    };
    let structure = structure_dict(structure, origin).context("in field \"structure\"")?;
    let total = data.get("total").with_context(|| format!("{origin}: \"data\" has no \"total\" grid"))?;
    // monty serialises a numpy array as {"@module": "numpy", "@class": "array", "dtype", "data"}.
    let total = match total.get("@module").and_then(Value::as_str) {
        Some("numpy") => total.get("data").with_context(|| format!("{origin}: numpy array in data.total has no \"data\""))?,
        _ => total,
    };
    let grid_err = || format!("{origin}: data.total is not a 3-D list of numbers (nx × ny × nz)");
    let planes = total.as_array().filter(|a| !a.is_empty()).with_context(grid_err)?;
    let ny = planes[0].as_array().map_or(0, Vec::len);
    let nz = planes[0].as_array().and_then(|r| r.first()).and_then(Value::as_array).map_or(0, Vec::len);
    anyhow::ensure!(ny > 0 && nz > 0, grid_err());
    let grid = [planes.len(), ny, nz];
    let mut values = Vec::with_capacity(grid.iter().product());
    for (i, plane) in planes.iter().enumerate() {
        let rows = plane.as_array().filter(|r| r.len() == ny).with_context(|| format!("{origin}: data.total[{i}] does not have {ny} rows"))?;
        for (j, row) in rows.iter().enumerate() {
            let row = row.as_array().filter(|r| r.len() == nz).with_context(|| format!("{origin}: data.total[{i}][{j}] does not have {nz} values"))?;
            for (k, x) in row.iter().enumerate() {
                values.push(as_f64(x, &format!("data.total[{i}][{j}][{k}]"), origin)?);
            }
        }
    }
    Ok(ChargeDensity { lattice: structure.lattice, grid, values })
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
    fn chgcar_json_keeps_rho_times_v_in_c_order() {
        // total[i][j][k] = 100 i + 10 j + k: C order puts k fastest.
        let total: Vec<Vec<Vec<f64>>> =
            (0..2).map(|i| (0..3).map(|j| (0..4).map(|k| (100 * i + 10 * j + k) as f64).collect()).collect()).collect();
        let doc = json!({"@module": "pymatgen.io.vasp.outputs", "@class": "Chgcar", "structure": nacl(), "data": {"total": total, "diff": total}});
        let c = charge_density_from_json(&doc, "t").unwrap();
        assert_eq!(c.grid, [2, 3, 4]);
        assert_eq!(c.values[(1 * 3 + 2) * 4 + 3], 123.0);
        assert_eq!(c.lattice[0][0], 5.6);
        let numpy = json!({"@class": "Chgcar", "structure": nacl(), "data": {"total": {"@module": "numpy", "@class": "array", "dtype": "float64", "data": total}}});
        assert_eq!(charge_density_from_json(&numpy, "t").unwrap(), c);
        let locpot = json!({"@class": "Locpot", "structure": nacl(), "data": {"total": total}});
        assert!(format!("{:#}", charge_density_from_json(&locpot, "l.json").unwrap_err()).contains("Locpot, not a charge density"));
        let ragged = json!({"@class": "Chgcar", "structure": nacl(), "data": {"total": [[[1, 2], [3]]]}});
        assert!(format!("{:#}", charge_density_from_json(&ragged, "r.json").unwrap_err()).contains("data.total[0][1]"));
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
