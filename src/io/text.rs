//! Text descriptions: Robocrystallographer output as JSON lines
//! (`{"material_id": …, "description": …}`, one object per line) or a plain-text file per material.

use anyhow::{bail, Context, Result};
use std::path::Path;

/// Read `(material_id, description)` pairs from a JSON-lines file (plain or gzip). Blank lines
/// are skipped. A line whose generation failed (`"error"` present) or that lacks a description
/// is an error naming the line and the material.
pub fn read_descriptions_jsonl(path: &Path) -> Result<Vec<(String, String)>> {
    let text = super::open_utf8(path)?;
    parse_descriptions_jsonl(&text, &path.display().to_string())
}

/// `read_descriptions_jsonl` on text already in memory; `origin` names it in errors.
pub fn parse_descriptions_jsonl(text: &str, origin: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("{origin}: line {lineno}: invalid JSON: {e}"))?;
        let id = v
            .get("material_id")
            .and_then(|x| x.as_str())
            .with_context(|| format!("{origin}: line {lineno}: no string \"material_id\""))?;
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            bail!("{origin}: line {lineno}: description generation failed for {id}: {err}");
        }
        let description = v
            .get("description")
            .and_then(|x| x.as_str())
            .with_context(|| format!("{origin}: line {lineno}: {id} has no string \"description\""))?;
        if description.trim().is_empty() {
            bail!("{origin}: line {lineno}: {id} has an empty description");
        }
        if id.trim().is_empty() || id.contains(|c: char| c.is_control()) {
            bail!("{origin}: line {lineno}: material id {id:?} is empty or holds a control character");
        }
        if let Some(c) = description.chars().find(|c| c.is_control() && !c.is_whitespace()) {
            bail!("{origin}: line {lineno}: the description of {id} holds the control character {c:?}");
        }
        if !seen.insert(id.to_string()) {
            bail!("{origin}: line {lineno}: material {id} appears twice");
        }
        out.push((id.to_string(), description.to_string()));
    }
    Ok(out)
}

/// A plain-text description (whole file, trimmed; plain or gzip). Empty → error.
pub fn read_description_txt(path: &Path) -> Result<String> {
    let text = super::open_utf8(path)?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        bail!("{}: description file is empty", path.display());
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_line() {
        let ok = "{\"material_id\": \"mp-1\", \"description\": \"Fe is bcc.\"}\n\n";
        assert_eq!(parse_descriptions_jsonl(ok, "t").unwrap(), vec![("mp-1".into(), "Fe is bcc.".into())]);
        for (text, want) in [
            (format!("{ok}{{\"material_id\": \"mp-2\", \"error\": \"boom\"}}\n"), "line 3: description generation failed for mp-2"),
            (format!("{ok}{{\"material_id\": \"mp-2\"}}\n"), "line 3: mp-2 has no string"),
            (format!("{ok}{{not json\n"), "line 3: invalid JSON"),
            (format!("{ok}{ok}"), "line 3: material mp-1 appears twice"),
        ] {
            let err = format!("{:#}", parse_descriptions_jsonl(&text, "d.jsonl").unwrap_err());
            assert!(err.contains("d.jsonl") && err.contains(want), "wanted {want:?} in {err}");
        }
    }
}
