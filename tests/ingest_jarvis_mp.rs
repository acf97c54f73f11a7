//! The data the paper used (issue 14, part 3): SNUMAT's band-gap set in the reference code's
//! JARVIS-style form, JARVIS dft_3d, Materials Project API documents (summary, DOS, Chgcar
//! JSON), modalities that cannot be computed left absent and counted, and the robocrys text
//! generator. The fixtures in tests/fixtures/ are hand-written (see its README), not real data.

use multimat::ingest::{run, Absent, Extras, IngestOptions, Source, TextGenerator};
use multimat::shard::{validate, ShardData, ShardRecord};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn records_by_id(out: &Path) -> (ShardData, BTreeMap<String, ShardRecord>) {
    let shard = out.join("shard-r000-00000.h5");
    assert!(validate(&shard).is_empty(), "{:?}", validate(&shard));
    let data = ShardData::load(&shard).unwrap();
    let by_id = data.records().into_iter().map(|r| (r.id.clone(), r)).collect();
    (data, by_id)
}

fn rejects(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("rejects.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn absent(out: &Path) -> Vec<Absent> {
    std::fs::read_to_string(out.join("absent.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn snumat_band_gap_set_in_the_reference_form() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let file = fixture("snumat_bandgap_handwritten.json");
    let s = run(&Source::Jarvis { file: file.clone() }, &Extras::default(), &IngestOptions::new(out.clone())).unwrap();
    assert_eq!((s.counts.records, s.rejects), (4, 2));
    let (data, recs) = records_by_id(&out);
    assert_eq!(recs.keys().collect::<Vec<_>>(), vec!["1001", "1002", "1003", "1004"]);
    assert_eq!(data.meta.targets["band_gap_hse"].units, "eV");
    // The first 1001 is kept; the repeat (gap 9.9) is a reject.
    assert_eq!(recs["1001"].targets["band_gap_hse"], vec![1.17]);
    assert_eq!(recs["1001"].targets["band_gap_gga"], vec![0.61]);
    // "na" is absent, not zero; the text field is not a target.
    assert!(!recs["1003"].targets.contains_key("band_gap_hse"));
    assert_eq!(recs["1003"].targets["band_gap_gga"], vec![0.5]);
    assert!(!recs["1001"].targets.keys().any(|k| k.contains("irect")));
    // NaCl's Cartesian Cl at (a/2, a/2, a/2) of the fcc primitive cell is fractional (½, ½, ½).
    let nacl = recs["1002"].structure.as_ref().unwrap();
    assert_eq!(nacl.species, vec![11, 17]);
    for x in nacl.frac_coords[1] {
        assert!((x - 0.5).abs() < 1e-9, "{:?}", nacl.frac_coords);
    }
    assert!(recs["1001"].graphs.is_some());
    let r = rejects(&out);
    let text = serde_json::to_string(&r).unwrap();
    assert!(text.contains("unknown element 'Xx'") && text.contains("(1005)"), "{text}");
    assert!(text.contains("duplicate material id") && text.contains("row 5 (1001)"), "{text}");
    assert!(r.iter().all(|x| x["file"].as_str().unwrap().ends_with("snumat_bandgap_handwritten.json")), "{text}");
    assert!(recs["1004"].provenance.sources["structure"].ends_with("snumat_bandgap_handwritten.json#3"));
}

#[test]
fn jarvis_dft3d_numeric_fields_are_targets_and_na_is_absent() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut opts = IngestOptions::new(out.clone());
    opts.build_graphs = false;
    let s = run(&Source::Jarvis { file: fixture("jarvis_dft3d_handwritten.json") }, &Extras::default(), &opts).unwrap();
    assert_eq!((s.counts.records, s.rejects), (2, 0));
    let (data, recs) = records_by_id(&out);
    let si = &recs["JVASP-1002"];
    assert_eq!(si.targets.keys().collect::<Vec<_>>(), vec!["bulk_modulus_kv", "formation_energy_peratom", "mbj_bandgap", "optb88vdw_bandgap"]);
    assert!(!recs["JVASP-23862"].targets.contains_key("mbj_bandgap"));
    assert_eq!(recs["JVASP-23862"].targets["hse_gap"], vec![6.3]);
    assert_eq!(data.meta.targets["optb88vdw_bandgap"].units, "eV");
    assert_eq!(data.meta.targets["bulk_modulus_kv"].units, "GPa");
}

#[test]
fn a_modality_that_cannot_be_computed_is_left_absent_and_counted() {
    // The tight-binding DOS has no parameters for Ce: CeO2 (1004) keeps its structure, graphs and
    // band gap, without a DOS; the others get theirs.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut opts = IngestOptions::new(out.clone());
    opts.approx_dos = Some(multimat::approx::tight_binding::TightBindingParams { kgrid: Some([2, 2, 2]), ..Default::default() });
    let source = Source::Jarvis { file: fixture("snumat_bandgap_handwritten.json") };
    let s = run(&source, &Extras::default(), &opts).unwrap();
    assert_eq!((s.counts.records, s.counts.dos, s.rejects), (4, 3, 2));
    assert_eq!(s.absent, BTreeMap::from([("dos".to_string(), 1)]));
    let (_, recs) = records_by_id(&out);
    let ceo2 = &recs["1004"];
    assert!(ceo2.dos.is_none() && ceo2.structure.is_some() && ceo2.graphs.is_some());
    assert_eq!(ceo2.targets["band_gap_hse"], vec![3.5]);
    assert!(recs["1001"].dos.is_some());
    let a = absent(&out);
    assert_eq!(a.len(), 1);
    assert_eq!((a[0].record.as_str(), a[0].modality.as_str()), ("1004", "dos"));
    assert!(a[0].reason.contains("Ce") && a[0].file.ends_with("snumat_bandgap_handwritten.json#3"), "{:?}", a[0]);
    // A resumed run reads the count back from the shard.
    let again = run(&source, &Extras::default(), &opts).unwrap();
    assert_eq!((again.shards_resumed, again.absent), (1, s.absent.clone()));
}

#[test]
fn materials_project_documents_summary_dos_and_chgcar_json() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut opts = IngestOptions::new(out.clone());
    opts.preprocess.density_grid = [4, 4, 4];
    let s = run(&Source::MpDocs { path: fixture("mp_docs") }, &Extras::default(), &opts).unwrap();
    assert_eq!((s.counts.records, s.counts.dos, s.counts.charge_density, s.counts.text, s.rejects), (2, 1, 2, 1, 2));
    let (data, recs) = records_by_id(&out);
    let si = &recs["mp-149"];
    assert_eq!(si.targets["band_gap"], vec![0.61]);
    assert_eq!(si.targets["bulk_modulus_vrh"], vec![88.0]);
    assert_eq!(si.targets["shear_modulus_vrh"], vec![62.5]);
    assert!(!si.targets.contains_key("nsites") && !si.targets.contains_key("is_metal"));
    assert_eq!(data.meta.targets["bulk_modulus_vrh"].units, "GPa");
    assert!(si.text.as_deref().unwrap().starts_with("Si is diamond structured"));
    assert!(si.provenance.sources["text"].contains("summary.json#0"));
    // Chgcar JSON holds ρ·V_cell like a CHGCAR: the mean over the grid is the electron count (8
    // valence electrons in Si₂ and in GaAs), kept through the 4³ → 4³ resampling.
    for id in ["mp-149", "mp-2534"] {
        let rho = recs[id].charge_density.as_ref().unwrap();
        let mean = rho.iter().map(|&v| v as f64).sum::<f64>() / rho.len() as f64;
        assert!((mean - 8.0).abs() < 1e-4, "{id}: {mean}");
    }
    // GaAs has no summary document: its structure comes from the Chgcar JSON.
    assert_eq!(recs["mp-2534"].structure.as_ref().unwrap().species, vec![31, 33]);
    let text = serde_json::to_string(&rejects(&out)).unwrap();
    assert!(text.contains("notes.txt") && text.contains("not an MP document"), "{text}");
    assert!(text.contains("mp-13.dos.json") && text.contains("electronic-structure summary"), "{text}");
}

#[test]
fn a_summary_file_holding_something_else_says_what_it_is() {
    let tmp = tempfile::tempdir().unwrap();
    let chgcar = tmp.path().join("density.json");
    std::fs::copy(fixture("mp_docs/mp-149.chgcar.json"), &chgcar).unwrap();
    let e = run(&Source::MpDocs { path: chgcar }, &Extras::default(), &IngestOptions::new(tmp.path().join("out"))).unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains("density.json") && e.contains("Chgcar") && e.contains("<material_id>.chgcar.json"), "{e}");
}

/// A Python with a stand-in `robocrys` (and the two pymatgen classes the child uses) first on
/// its PYTHONPATH: it checks the plumbing (one child per slice, answers matched by id,
/// per-structure failures left absent), not robocrys itself, which this machine does not have.
const STANDIN_ROBOCRYS: &str = "__version__ = '0.0-standin'\n\
         class StructureCondenser:\n    def condense_structure(self, s):\n        return s\n\
         class StructureDescriber:\n    def describe(self, s):\n        if 'Ce' in s.species:\n            raise ValueError('stand-in refuses Ce')\n        \
         return 'stand-in description of ' + ''.join(s.species)\n";

/// One that fails to import, as where robocrys is not installed (whatever the machine has).
const MISSING_ROBOCRYS: &str = "raise ModuleNotFoundError(\"No module named 'robocrys'\")\n";

fn python_with(dir: &Path, robocrys: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("robocrys")).unwrap();
    std::fs::create_dir_all(dir.join("pymatgen")).unwrap();
    std::fs::write(dir.join("robocrys/__init__.py"), robocrys).unwrap();
    std::fs::write(dir.join("pymatgen/__init__.py"), "").unwrap();
    std::fs::write(
        dir.join("pymatgen/core.py"),
        "class Lattice:\n    def __init__(self, m):\n        self.m = m\n\
         class Structure:\n    def __init__(self, lattice, species, coords):\n        self.species = list(species)\n",
    )
    .unwrap();
    let py = dir.join("python");
    std::fs::write(&py, format!("#!/bin/sh\nPYTHONPATH='{}' exec python3 \"$@\"\n", dir.display())).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&py, std::fs::Permissions::from_mode(0o755)).unwrap();
    py
}

#[test]
fn robocrys_text_generator() {
    let tmp = tempfile::tempdir().unwrap();
    let source = Source::Jarvis { file: fixture("snumat_bandgap_handwritten.json") };
    // Without robocrys: a clear error before anything is written.
    let mut opts = IngestOptions::new(tmp.path().join("none"));
    opts.generated_text = true;
    opts.text_generator = TextGenerator::Robocrys { python: python_with(&tmp.path().join("missing"), MISSING_ROBOCRYS) };
    let e = format!("{:#}", run(&source, &Extras::default(), &opts).unwrap_err());
    assert!(e.contains("cannot import robocrys") && e.contains("--text-generator approx"), "{e}");
    assert!(!tmp.path().join("none/manifest.json").exists());
    // With a (stand-in) robocrys: its text, labelled with its version; a failure leaves the text absent.
    let out = tmp.path().join("out");
    let mut opts = IngestOptions::new(out.clone());
    opts.build_graphs = false;
    opts.generated_text = true;
    opts.text_generator = TextGenerator::Robocrys { python: python_with(&tmp.path().join("py"), STANDIN_ROBOCRYS) };
    let s = run(&source, &Extras::default(), &opts).unwrap();
    assert_eq!((s.counts.records, s.counts.text), (4, 3));
    assert_eq!(s.absent, BTreeMap::from([("text".to_string(), 1)]));
    let (_, recs) = records_by_id(&out);
    assert_eq!(recs["1002"].text.as_deref(), Some("stand-in description of NaCl"));
    assert!(recs["1002"].provenance.sources["text"].starts_with("generated:robocrys 0.0-standin"));
    assert!(recs["1004"].text.is_none());
    assert!(absent(&out)[0].reason.contains("stand-in refuses Ce"));
    // The same robocrys resumes; robocrys's version is in the fingerprint.
    assert_eq!(run(&source, &Extras::default(), &opts).unwrap().shards_resumed, 1);
}

#[test]
fn the_help_examples_run() {
    let exe = env!("CARGO_BIN_EXE_multimat");
    let help = std::process::Command::new(exe).args(["ingest", "--help"]).output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let examples: Vec<&str> = help.lines().map(str::trim).filter(|l| l.starts_with("multimat ingest ")).collect();
    assert_eq!(examples.len(), 3, "{help}");
    let tmp = tempfile::tempdir().unwrap();
    for (k, line) in examples.iter().enumerate() {
        let mut args: Vec<String> = line.split_whitespace().skip(1).map(str::to_string).collect();
        let o = args.iter().position(|a| a == "--out").unwrap();
        args[o + 1] = tmp.path().join(format!("ex{k}")).display().to_string();
        args.push("--quiet".into());
        let run = std::process::Command::new(exe).args(&args).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(run.status.success(), "{line}\n{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
        assert!(stdout.contains("records in 1 shards"), "{line}\n{stdout}");
    }
}
