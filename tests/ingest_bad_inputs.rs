//! Bad inputs never stop an ingest: truncated, non-numeric, NaN-laden, wrong-shape and
//! unknown-element files each end in rejects.jsonl with the file and a reason while the good
//! records land in valid shards; `--strict` stops at the first.

use multimat::ingest::{run, Extras, IngestOptions, Reject, Source, REJECTS_FILE};
use multimat::shard::{validate, ShardData};
use std::io::Read;
use std::path::{Path, PathBuf};

const SI_POSCAR: &str = "Si2
1.0
  3.867422 0.000000 0.000000
  1.933711 3.349287 0.000000
  0.000000 -2.232856 3.157737
Si
2
Direct
0.00 0.00 0.00
0.75 0.50 0.75
";

fn li_chgcar_text() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/vasp-raw/Li_bcc/CHGCAR.nospin.gz");
    let mut s = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(p).unwrap()).read_to_string(&mut s).unwrap();
    s
}

/// One folder per case; returns the source directory.
fn make_inputs(root: &Path) -> PathBuf {
    let dir = root.join("vasp");
    let put = |case: &str, file: &str, text: &str| {
        std::fs::create_dir_all(dir.join(case)).unwrap();
        std::fs::write(dir.join(case).join(file), text).unwrap();
    };
    let chg = li_chgcar_text();
    // Good: structure only, and structure + CHGCAR.
    put("good-Si", "POSCAR", SI_POSCAR);
    let li_poscar: String = chg.lines().take(8).map(|l| format!("{l}\n")).collect::<String>() + "0 0 0\n";
    put("good-Li", "POSCAR", &li_poscar);
    put("good-Li", "CHGCAR", &chg);
    // Truncated: CHGCAR cut in the middle of its grid.
    put("truncated", "POSCAR", &li_poscar);
    put("truncated", "CHGCAR", &chg[..chg.len() / 2]);
    // Non-numeric coordinate.
    put("non-numeric", "POSCAR", &SI_POSCAR.replace("0.75 0.50 0.75", "0.75 abc 0.75"));
    // NaN in the lattice.
    put("nan-laden", "POSCAR", &SI_POSCAR.replace("3.867422", "NaN"));
    // Wrong shape: two atoms declared, one coordinate line.
    put("wrong-shape", "POSCAR", &SI_POSCAR.replace("0.75 0.50 0.75\n", ""));
    // Unknown element.
    put("unknown-element", "POSCAR", &SI_POSCAR.replace("\nSi\n", "\nXx\n"));
    dir
}

fn options(out: &Path) -> IngestOptions {
    let mut o = IngestOptions::new(out.to_owned());
    o.build_graphs = true;
    o
}

#[test]
fn bad_files_become_rejects_and_good_records_land() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = make_inputs(tmp.path());
    let out = tmp.path().join("out");
    let s = run(&Source::VaspDirs { dir: dir.clone() }, &Extras::default(), &options(&out)).unwrap();
    assert_eq!((s.inputs, s.counts.records, s.rejects), (7, 2, 5), "{s:?}");
    assert_eq!((s.counts.charge_density, s.counts.graphs), (1, 2));

    let rejects: Vec<Reject> = std::fs::read_to_string(out.join(REJECTS_FILE))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let expect = [
        ("truncated", "CHGCAR", "truncated"),
        ("non-numeric", "POSCAR", "'abc' is not a finite number"),
        ("nan-laden", "POSCAR", "'NaN' is not a finite number"),
        ("wrong-shape", "POSCAR", "declares 2 atoms, but the rest of the file can hold at most 1"),
        ("unknown-element", "POSCAR", "'Xx' is not a chemical element"),
    ];
    for (case, file, why) in expect {
        let r = rejects.iter().find(|r| r.record == case).unwrap_or_else(|| panic!("no reject for {case}: {rejects:#?}"));
        assert!(r.file.ends_with(&format!("{case}/{file}")), "{case}: reject names {}", r.file);
        assert!(r.reason.contains(why), "{case}: reason {:?} should say {why:?}", r.reason);
    }
    let shard = out.join("shard-r000-00000.h5");
    assert!(validate(&shard).is_empty(), "{:#?}", validate(&shard));
    let data = ShardData::load(&shard).unwrap();
    assert_eq!(data.ids, ["good-Li", "good-Si"]);
    let li = data.record(0);
    assert!((li.charge_density.unwrap().iter().map(|&x| x as f64).sum::<f64>() / 32768.0 - 1.0).abs() < 1e-3, "Li CHGCAR (1 valence electron) keeps its electron count");

    // --strict stops at the first bad record and names it.
    let mut strict = options(&tmp.path().join("strict"));
    strict.strict = true;
    let err = format!("{:#}", run(&Source::VaspDirs { dir }, &Extras::default(), &strict).unwrap_err());
    assert!(err.contains("--strict") && err.contains("nan-laden"), "{err}");
}
