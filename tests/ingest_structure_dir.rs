//! The structure-folder source (`multimat ingest --structures DIR [--csv FILE --id-column NAME]`)
//! and VASP folders without a POSCAR: every format by name or content, ids from file stems,
//! a CIF with only a space-group symbol expanded, labels attached by id with every lost input in
//! rejects.jsonl naming its file and line, ALIGNN's id_prop.csv, and the exit status
//! (`--max-reject-fraction`, nothing written).

use multimat::ingest::{run, Extras, IngestOptions, Reject, Source, REJECTS_FILE};
use multimat::shard::ShardData;
use std::path::{Path, PathBuf};
use std::process::Command;

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data")
}

fn rejects(out: &Path) -> Vec<Reject> {
    std::fs::read_to_string(out.join(REJECTS_FILE)).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn all_records(out: &Path) -> ShardData {
    ShardData::load(&out.join("shard-r000-00000.h5")).unwrap()
}

/// Rutile with only its Hermann–Mauguin symbol (no symmetry operations): 2 Ti + 4 O after expansion.
const RUTILE_SYMBOL_ONLY: &str = "data_rutile
_symmetry_space_group_name_H-M 'P 42/m n m'
_cell_length_a 4.5937
_cell_length_b 4.5937
_cell_length_c 2.9587
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
Ti1 Ti 0 0 0
O1 O 0.3053 0.3053 0
";

/// What `ase.io.write(f, bulk("NaCl", "rocksalt", a=5.64), format="extxyz")` writes.
const NACL_EXTXYZ: &str = "2
Lattice=\"0.0 2.82 2.82 2.82 0.0 2.82 2.82 2.82 0.0\" Properties=species:S:1:pos:R:3 pbc=\"T T T\"
Na 0.0 0.0 0.0
Cl 2.82 2.82 2.82
";

/// A folder with one structure in each format, plus files that must be refused by name.
fn structure_folder(dir: &Path) -> PathBuf {
    let d = dir.join("structures");
    std::fs::create_dir_all(&d).unwrap();
    let mp = shared().join("mp-multimodal");
    std::fs::copy(mp.join("cif/mp-1000.cif"), d.join("mp-1000.cif")).unwrap();
    std::fs::copy(mp.join("structures/mp-10000.json"), d.join("mp-10000.json")).unwrap();
    std::fs::copy(mp.join("cif/mp-10003.cif"), d.join("mp-10003")).unwrap(); // no extension: sniffed
    std::fs::copy(shared().join("vasp-raw/Si_mp-149/CONTCAR.gz"), d.join("Si.vasp.gz")).unwrap();
    std::fs::write(d.join("nacl.extxyz"), NACL_EXTXYZ).unwrap();
    std::fs::write(d.join("rutile.cif"), RUTILE_SYMBOL_ONLY).unwrap();
    let two = format!("{}\n{}", std::fs::read_to_string(mp.join("cif/mp-1000.cif")).unwrap(), RUTILE_SYMBOL_ONLY);
    std::fs::write(d.join("two.cif"), two).unwrap();
    std::fs::write(d.join("notes.bin"), "\u{0}\u{1} not a crystal").unwrap();
    d
}

#[test]
fn every_format_is_read_and_every_lost_input_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = structure_folder(tmp.path());
    let csv = tmp.path().join("labels.csv");
    // Ids with or without the extension; mp-10000's K has two values where the others have one;
    // "ghost" has no structure file.
    std::fs::write(&csv, "formula,name,K_VRH\nBaTe,mp-1000.cif,25.5\nX,mp-10000,1 2\nTiO2,rutile,211\nNaCl,nacl,24\nX,ghost,1\n").unwrap();
    let out = tmp.path().join("out");
    let source = Source::Structures { dir: dir.clone(), labels: Some(csv.clone()), id_column: Some("name".into()) };
    let s = run(&source, &Extras::default(), &IngestOptions::new(out.clone())).unwrap();
    assert_eq!((s.counts.records, s.counts.graphs, s.rejects), (5, 5, 4), "{:#?}", rejects(&out));

    let data = all_records(&out);
    assert_eq!(data.ids, ["Si", "mp-1000", "mp-10003", "nacl", "rutile"], "ids are file stems");
    let formula = |id: &str| data.record(data.ids.iter().position(|i| i == id).unwrap()).structure.unwrap().formula();
    assert_eq!(formula("rutile"), "Ti2O4", "the space group's operations were applied");
    assert_eq!(formula("nacl"), "NaCl");
    assert_eq!(formula("Si"), "Si2");
    let rutile = data.record(data.ids.iter().position(|i| i == "rutile").unwrap());
    assert_eq!(rutile.targets["K_VRH"], [211.0]);
    assert_eq!(rutile.provenance.sources["targets"], format!("{}#line 4", csv.display()), "labels remember their CSV line");

    let rj = rejects(&out);
    let find = |what: &str| rj.iter().find(|r| r.file.ends_with(what) || r.record.contains(what)).unwrap_or_else(|| panic!("no reject for {what}: {rj:#?}"));
    let width = find("mp-10000");
    assert!(width.file.ends_with("labels.csv") && width.record == "line 3 (mp-10000)" && width.reason.contains("2 value(s)"), "the label row, not the structure, is blamed: {width:?}");
    let ghost = find("ghost");
    assert!(ghost.file.ends_with("labels.csv") && ghost.record.contains("line 6"), "{ghost:?}");
    assert!(find("two.cif").reason.contains("2 data blocks hold structures (data_BaTe, data_rutile)"), "{rj:#?}");
    assert!(find("notes.bin").reason.contains("not a structure file"), "{rj:#?}");
}

fn ingest_cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_multimat")).arg("ingest").arg("--quiet").args(args).output().unwrap()
}

#[test]
fn exit_status_follows_the_reject_fraction_and_empty_outputs_fail() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = structure_folder(tmp.path());
    let d = dir.to_str().unwrap();
    let out = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    // 6 records, 2 rejects (two.cif, notes.bin): accepted by default, refused above 0.2.
    let ok = ingest_cli(&["--structures", d, "--out", &out("a")]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let strict_share = ingest_cli(&["--structures", d, "--max-reject-fraction", "0.2", "--out", &out("b")]);
    assert!(!strict_share.status.success());
    let err = String::from_utf8_lossy(&strict_share.stderr);
    assert!(err.contains("2 of 8 inputs (25.0%) were rejected") && err.contains("rejects.jsonl"), "{err}");
    assert!(Path::new(&out("b")).join("manifest.json").is_file(), "what was written is kept");
    // A folder with nothing readable: non-zero, saying nothing was written.
    let junk = tmp.path().join("junk");
    std::fs::create_dir(&junk).unwrap();
    std::fs::write(junk.join("a.cif"), "data_a\n").unwrap();
    let none = ingest_cli(&["--structures", junk.to_str().unwrap(), "--out", &out("c")]);
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("no record was written"), "{}", String::from_utf8_lossy(&none.stderr));
}

#[test]
fn alignn_id_prop_csv_in_the_folder_labels_the_structures() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("alignn");
    std::fs::create_dir(&d).unwrap();
    let contcar = shared().join("vasp-raw/Si_mp-149/CONTCAR.gz");
    std::fs::copy(&contcar, d.join("POSCAR-1")).unwrap();
    std::fs::copy(&contcar, d.join("POSCAR-2")).unwrap();
    std::fs::write(d.join("id_prop.csv"), "POSCAR-1,1.5\nPOSCAR-2,2.5\nPOSCAR-9,3\n").unwrap();
    let out = tmp.path().join("out");
    let s = run(&Source::Structures { dir: d.clone(), labels: None, id_column: None }, &Extras::default(), &IngestOptions::new(out.clone())).unwrap();
    assert_eq!((s.counts.records, s.rejects), (2, 1));
    let data = all_records(&out);
    assert_eq!(data.ids, ["POSCAR-1", "POSCAR-2"]);
    assert_eq!(data.targets["target"], [1.5, 2.5]);
    assert!(rejects(&out)[0].record.contains("line 3 (POSCAR-9)"), "{:?}", rejects(&out));
}

#[test]
fn vasp_folders_without_poscar_take_the_structure_from_vasprun_or_chgcar() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("vasp");
    std::fs::create_dir(&d).unwrap();
    for name in ["Ge", "Li_bcc", "YPO4"] {
        std::os::unix::fs::symlink(shared().join("vasp-raw").join(name), d.join(name)).unwrap();
    }
    let out = tmp.path().join("out");
    let mut opts = IngestOptions::new(out.clone());
    opts.preprocess.density_grid = [8, 8, 8];
    let s = run(&Source::VaspDirs { dir: d }, &Extras::default(), &opts).unwrap();
    assert_eq!((s.counts.records, s.counts.structure, s.counts.graphs, s.rejects), (3, 3, 3, 0), "{:#?}", rejects(&out));
    let data = all_records(&out);
    let rec = |id: &str| data.record(data.ids.iter().position(|i| i == id).unwrap());
    let ge = rec("Ge");
    assert_eq!(ge.structure.as_ref().unwrap().species, [32, 32]);
    assert!(ge.provenance.sources["structure"].ends_with("Ge/vasprun.xml.gz"));
    // The final (relaxed) positions, not the initial ones.
    assert!((ge.structure.unwrap().frac_coords[0][0] - 0.00844599).abs() < 1e-9);
    let li = rec("Li_bcc");
    assert!(li.charge_density.is_some() && li.provenance.sources["charge_density"].ends_with("CHGCAR.nospin.gz"), "{:?}", li.provenance);
    assert!(li.provenance.sources["structure"].ends_with("CHGCAR.nospin.gz"), "structure from the CHGCAR header");
    let ypo4 = rec("YPO4");
    assert!(ypo4.provenance.sources["structure"].ends_with("vasprun.xml.gz") && ypo4.charge_density.is_none(), "AECCAR2 is not used as the charge density");
}
