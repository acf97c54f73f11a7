//! A folder of structure files, one material per file, in any format `read_structure` reads:
//! which files are structures (by name, else by content), and each file's material id (its name
//! with `.gz` and the structure extension removed, as `pymatgen`/ALIGNN users name files).

use super::StructureFormat;
use anyhow::{Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Extensions removed from a file name to make its id (after `.gz`).
const STRUCTURE_EXTENSIONS: [&str; 7] = [".cif", ".vasp", ".poscar", ".contcar", ".json", ".extxyz", ".xyz"];

/// Files in a structure folder that are never structures and are skipped without a reject:
/// labels, notes, descriptions.
const NOT_STRUCTURES: [&str; 6] = [".csv", ".md", ".txt", ".jsonl", ".tsv", ".log"];

/// The material id of a structure file: its name without `.gz` and without a structure
/// extension (`mp-149.cif.gz` → `mp-149`, `POSCAR-JVASP-1002` → itself).
pub fn structure_id(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let strip = |s: &str, suffix: &str| -> Option<String> {
        (s.len() > suffix.len() && s.to_ascii_lowercase().ends_with(suffix)).then(|| s[..s.len() - suffix.len()].to_string())
    };
    let name = strip(&name, ".gz").unwrap_or(name);
    STRUCTURE_EXTENSIONS.iter().find_map(|e| strip(&name, e)).unwrap_or(name)
}

/// The structure format of a file from its first 4 KiB (plain or gzip), for names that say
/// nothing: a CIF starts (after comments) with `data_`; pymatgen JSON with `{`; extended XYZ is
/// an atom count then a line with `Lattice=`; a POSCAR has a scale line then three lattice rows.
/// `None` when it looks like none of them.
pub fn sniff_structure_format(path: &Path) -> Result<Option<StructureFormat>> {
    let mut head = Vec::with_capacity(4096);
    super::open_reader(path)?
        .take(4096)
        .read_to_end(&mut head)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let text = String::from_utf8_lossy(&head);
    let lines: Vec<&str> = text.lines().collect();
    let first = lines.iter().map(|l| l.trim()).find(|l| !l.is_empty() && !l.starts_with('#'));
    let numbers = |l: Option<&&str>| -> Option<usize> {
        let t: Vec<&str> = l?.split_whitespace().collect();
        t.iter().all(|x| super::parse_float(x).is_some_and(f64::is_finite)).then_some(t.len())
    };
    Ok(if first.is_some_and(|l| l.to_ascii_lowercase().starts_with("data_")) {
        Some(StructureFormat::Cif)
    } else if text.trim_start().starts_with('{') {
        Some(StructureFormat::PymatgenJson)
    } else if lines.first().is_some_and(|l| l.trim().parse::<usize>().is_ok())
        && lines.get(1).is_some_and(|l| l.to_ascii_lowercase().contains("lattice="))
    {
        Some(StructureFormat::Extxyz)
    } else if matches!(numbers(lines.get(1)), Some(1 | 3)) && (2..5).all(|i| numbers(lines.get(i)) == Some(3)) {
        Some(StructureFormat::Poscar)
    } else {
        None
    })
}

/// One file of a structure folder.
#[derive(Clone, Debug, PartialEq)]
pub struct StructureFile {
    pub id: String,
    pub path: PathBuf,
}

/// What a structure folder holds: its structure files sorted by id, and the files that are
/// neither structures nor obviously something else (each with the reason), which the caller
/// reports. Hidden files, folders, and labels/notes (`*.csv`, `*.md`, `*.txt`, …) are skipped.
/// Two files with the same id (`a.cif` and `a.vasp`) are both refused: which is meant cannot be
/// known.
pub fn list_structure_files(dir: &Path) -> Result<(Vec<StructureFile>, Vec<(PathBuf, String)>)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("listing {}", dir.display()))?;
    paths.sort();
    let mut files: Vec<StructureFile> = Vec::new();
    let mut refused = Vec::new();
    for path in paths {
        let name = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
        if name.starts_with('.') || !path.is_file() || NOT_STRUCTURES.iter().any(|e| name.trim_end_matches(".gz").ends_with(e)) {
            continue;
        }
        let known = super::structure_format(&path).is_some() || matches!(sniff_structure_format(&path), Ok(Some(_)));
        if known {
            files.push(StructureFile { id: structure_id(&path), path });
        } else {
            refused.push((path, "not a structure file in a format multimat reads (CIF, POSCAR/CONTCAR, pymatgen JSON, extended XYZ, vasprun.xml, CHGCAR)".to_string()));
        }
    }
    files.sort_by(|a, b| a.id.cmp(&b.id).then(a.path.cmp(&b.path)));
    let mut kept = Vec::with_capacity(files.len());
    for group in files.chunk_by(|a, b| a.id == b.id) {
        if group.len() == 1 {
            kept.push(group[0].clone());
        } else {
            let names: Vec<String> = group.iter().map(|f| f.path.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect();
            for f in group {
                refused.push((f.path.clone(), format!("material id {:?} comes from {} files ({}); keep one", f.id, group.len(), names.join(", "))));
            }
        }
    }
    Ok((kept, refused))
}

/// One row of an ALIGNN-style `id_prop.csv`: no header, a structure file name, then the
/// target value(s) (further columns, or several numbers in one cell, make a vector).
#[derive(Clone, Debug, PartialEq)]
pub struct IdPropRow {
    /// 1-based line in the file.
    pub line: u64,
    pub file: String,
    pub values: Vec<f64>,
}

/// Whether `csv` is in the headerless ALIGNN form for the structures in `dir`: it is named
/// `id_prop.csv`, or its first cell names a file in `dir`.
pub fn is_id_prop(csv: &Path, dir: &Path) -> Result<bool> {
    if csv.file_name().is_some_and(|n| n.eq_ignore_ascii_case("id_prop.csv")) {
        return Ok(true);
    }
    let text = super::open_text(csv)?;
    let first = text.lines().next().and_then(|l| l.split(',').next()).map(|c| c.trim().trim_matches('"')).unwrap_or("");
    Ok(!first.is_empty() && dir.join(first).is_file())
}

/// Read an `id_prop.csv`; rows that cannot be used come back as rejected rows (line named).
pub fn read_id_prop(csv: &Path) -> Result<(Vec<IdPropRow>, Vec<super::labels::RejectedRow>)> {
    use super::labels::RejectedRow;
    let text = super::open_text(csv)?;
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).trim(csv::Trim::All).from_reader(text.as_bytes());
    let (mut rows, mut rejected) = (Vec::new(), Vec::new());
    for (k, record) in reader.records().enumerate() {
        let byte = match &record {
            Ok(r) => r.position().map(|p| p.byte()),
            Err(e) => e.position().map(|p| p.byte()),
        };
        let line = byte.map(|b| super::labels::line_of(&text, b)).unwrap_or(k as u64 + 1);
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                rejected.push(RejectedRow { line, id: String::new(), reason: format!("unreadable from here on: {e}") });
                break;
            }
        };
        let file = record.get(0).unwrap_or("").to_string();
        if file.is_empty() && record.len() <= 1 {
            continue; // a blank line
        }
        let cells: Vec<&str> = record.iter().skip(1).flat_map(str::split_whitespace).collect();
        let values: Option<Vec<f64>> = cells.iter().map(|c| c.parse::<f64>().ok().filter(|v| v.is_finite())).collect();
        match values {
            _ if file.is_empty() => rejected.push(RejectedRow { line, id: String::new(), reason: "no structure file name in the first column".into() }),
            Some(v) if !v.is_empty() => rows.push(IdPropRow { line, file, values: v }),
            _ => rejected.push(RejectedRow {
                line,
                id: file.clone(),
                reason: format!("the value(s) {:?} after the file name are not finite numbers", cells.join(" ")),
            }),
        }
    }
    Ok((rows, rejected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_drop_gz_and_structure_extensions_only() {
        for (name, id) in [
            ("mp-149.cif", "mp-149"),
            ("mp-149.CIF.gz", "mp-149"),
            ("JVASP-1002.vasp", "JVASP-1002"),
            ("POSCAR-JVASP-1002", "POSCAR-JVASP-1002"),
            ("Si.2.extxyz", "Si.2"),
            ("mp-1.json.gz", "mp-1"),
            ("odd.name", "odd.name"),
        ] {
            assert_eq!(structure_id(Path::new(name)), id, "{name}");
        }
    }

    #[test]
    fn formats_are_sniffed_from_content_and_folders_listed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a"), "# from a database\ndata_a\n_cell_length_a 5\n").unwrap();
        std::fs::write(d.join("b"), "Si\n1.0\n5 0 0\n0 5 0\n0 0 5\nSi\n1\nDirect\n0 0 0\n").unwrap();
        std::fs::write(d.join("c"), "1\nLattice=\"5 0 0 0 5 0 0 0 5\"\nSi 0 0 0\n").unwrap();
        std::fs::write(d.join("d"), "  {\"lattice\": {}}").unwrap();
        std::fs::write(d.join("e.bin"), "\u{1}\u{2}garbage").unwrap();
        std::fs::write(d.join("labels.csv"), "id,K\n").unwrap();
        std::fs::write(d.join("x.cif"), "data_x\n").unwrap();
        std::fs::write(d.join("x.vasp"), "x\n").unwrap();
        let want = [Some(StructureFormat::Cif), Some(StructureFormat::Poscar), Some(StructureFormat::Extxyz), Some(StructureFormat::PymatgenJson), None];
        for (name, f) in ["a", "b", "c", "d", "e.bin"].iter().zip(want) {
            assert_eq!(sniff_structure_format(&d.join(name)).unwrap(), f, "{name}");
        }
        let (files, refused) = list_structure_files(d).unwrap();
        assert_eq!(files.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(), ["a", "b", "c", "d"]);
        let refused: Vec<String> = refused.iter().map(|(p, r)| format!("{} {r}", p.file_name().unwrap().to_string_lossy())).collect();
        assert_eq!(refused.len(), 3, "{refused:?}");
        assert!(refused[0].starts_with("e.bin not a structure file"), "{refused:?}");
        assert!(refused[1].contains("material id \"x\" comes from 2 files (x.cif, x.vasp)"), "{refused:?}");
    }

    #[test]
    fn alignn_id_prop_rows_and_rejects_with_lines() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("id_prop.csv");
        std::fs::write(&csv, "POSCAR-1,1.5
POSCAR-2,abc

JVASP-3.vasp,1 2 3
,4
").unwrap();
        let (rows, rejected) = read_id_prop(&csv).unwrap();
        assert_eq!(rows, vec![
            IdPropRow { line: 1, file: "POSCAR-1".into(), values: vec![1.5] },
            IdPropRow { line: 4, file: "JVASP-3.vasp".into(), values: vec![1.0, 2.0, 3.0] },
        ]);
        assert_eq!(rejected.iter().map(|r| (r.line, r.id.as_str())).collect::<Vec<_>>(), [(2, "POSCAR-2"), (5, "")]);
        let other = dir.path().join("labels.csv");
        std::fs::write(&other, "POSCAR-1,2.0
").unwrap();
        assert!(!is_id_prop(&other, dir.path()).unwrap(), "POSCAR-1 is not a file in the folder yet");
        std::fs::write(dir.path().join("POSCAR-1"), "x").unwrap();
        assert!(is_id_prop(&other, dir.path()).unwrap());
    }
}
