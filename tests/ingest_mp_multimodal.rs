//! `multimat ingest` on the real mp-multimodal data: valid shards with every modality counted,
//! values that match the source files, a manifest that checks out, byte-identical re-runs and
//! resume after a damaged shard.

use multimat::ingest::{run, Extras, IngestOptions, Source, REJECTS_FILE};
use multimat::shard::manifest::{check_manifest, Manifest};
use multimat::shard::{validate, ShardData};
use std::path::{Path, PathBuf};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mp-multimodal")
}

fn texts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/text/mp-multimodal-robocrys.jsonl")
}

fn options(out: &Path, per_shard: usize) -> IngestOptions {
    let mut o = IngestOptions::new(out.to_owned());
    o.records_per_shard = per_shard;
    o.build_graphs = false; // graphs are checked in the first test; re-run tests skip them for speed
    o
}

fn shard_paths(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "h5"))
        .collect();
    v.sort();
    v
}

#[test]
fn mp_multimodal_ingest_gives_valid_shards_with_every_modality() {
    let out = tempfile::tempdir().unwrap();
    let extras = Extras { texts: Some(texts()), ..Default::default() };
    let mut opts = options(out.path(), 32);
    opts.build_graphs = true;
    let s = run(&Source::MpMultimodal { dir: data() }, &extras, &opts).unwrap();
    let c = &s.counts;
    assert_eq!((s.inputs, c.records, s.rejects), (85, 85, 0));
    assert_eq!((c.structure, c.dos, c.charge_density, c.text, c.text_embedding, c.graphs), (85, 84, 85, 85, 85, 85));
    // materials.csv: 46 materials with elastic data; metadata columns are not targets.
    assert_eq!(c.targets.get("bulk_modulus"), Some(&46));
    assert_eq!(c.targets.get("elastic_tensor"), Some(&46));
    assert!(!c.targets.contains_key("nsites") && !c.targets.contains_key("has_dos"));
    assert_eq!(std::fs::read_to_string(out.path().join(REJECTS_FILE)).unwrap(), "");

    let shards = shard_paths(out.path());
    assert_eq!(shards.len(), 3, "85 records at 32 per shard");
    for p in &shards {
        let v = validate(p);
        assert!(v.is_empty(), "{}: {v:#?}", p.display());
    }
    let manifest_path = out.path().join("manifest.json");
    assert!(check_manifest(&manifest_path).is_empty(), "{:#?}", check_manifest(&manifest_path));
    let m = Manifest::read(&manifest_path).unwrap();
    assert_eq!(m.records.len(), 85);
    let r = m.records.iter().find(|r| r.id == "mp-1001612").unwrap();
    assert!(!r.modalities.contains(&"dos".to_string()), "mp-1001612 has no DOS file");
    assert!(r.sources["charge_density"].ends_with("chgcar/mp-1001612.CHGCAR.gz"));

    // Values against the source files, read independently by the io readers.
    let first = ShardData::load(&shards[0]).unwrap();
    let i = first.ids.iter().position(|id| id == "mp-1000").unwrap();
    let rec = first.record(i);
    let chg = multimat::io::read_charge_density(&data().join("chgcar/mp-1000.CHGCAR.gz")).unwrap();
    let stored: f64 = rec.charge_density.as_ref().unwrap().iter().map(|&x| x as f64).sum::<f64>() / 32768.0;
    assert!((stored - chg.electron_count()).abs() < 1e-3 * chg.electron_count(), "{stored} vs {}", chg.electron_count());
    let dos = multimat::io::read_dos(&data().join("dos/mp-1000.json")).unwrap();
    let d = rec.dos.as_ref().unwrap();
    assert_eq!(d.energies.len(), 601);
    assert!((d.energies[0] as f64 - (dos.energies[0] - dos.efermi)).abs() < 1e-4);
    assert!((d.energies[600] as f64 - (dos.energies.last().unwrap() - dos.efermi)).abs() < 1e-4);
    let s = multimat::io::read_structure(&data().join("structures/mp-1000.json")).unwrap();
    assert_eq!(rec.structure.as_ref().unwrap(), &s);
    assert!(rec.text.as_ref().unwrap().starts_with("BaTe is Halite"));
    assert_eq!(rec.text_embedding.as_ref().unwrap().vector.len(), 768);
    assert_eq!(first.meta.text_embedding.as_ref().unwrap().model, "matbert_cls_768");
    let graphs = multimat::crystal::build_graphs(&s, &first.meta.graph_params).unwrap();
    assert_eq!(rec.graphs.as_ref().unwrap(), &graphs, "stored graphs are what crystal::build_graphs gives");
}

/// A small copy of the mp-multimodal layout (structures, DOS, CHGCARs, labels) for re-run tests.
fn small_copy(dir: &Path, ids: &[&str]) {
    for sub in ["structures", "dos", "chgcar"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    for id in ids {
        for (sub, name) in [("structures", format!("{id}.json")), ("dos", format!("{id}.json")), ("chgcar", format!("{id}.CHGCAR.gz"))] {
            let src = data().join(sub).join(&name);
            if src.exists() {
                std::fs::copy(&src, dir.join(sub).join(&name)).unwrap();
            }
        }
    }
    std::fs::copy(data().join("materials.csv"), dir.join("materials.csv")).unwrap();
}

#[test]
fn rerun_is_byte_identical_and_resumes_only_damaged_shards() {
    let src = tempfile::tempdir().unwrap();
    small_copy(src.path(), &["mp-1000", "mp-10000", "mp-10255", "mp-1001612", "mp-1029446"]);
    let source = Source::MpMultimodal { dir: src.path().to_owned() };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = run(&source, &Extras::default(), &options(a.path(), 2)).unwrap();
    assert_eq!((first.shards_written, first.shards_resumed, first.counts.records), (3, 0, 5));
    run(&source, &Extras::default(), &options(b.path(), 2)).unwrap();
    let bytes = |dir: &Path| shard_paths(dir).iter().map(|p| std::fs::read(p).unwrap()).collect::<Vec<_>>();
    assert_eq!(bytes(a.path()), bytes(b.path()), "two runs on the same inputs give identical shards");
    let manifest_a = std::fs::read(a.path().join("manifest.json")).unwrap();

    // Re-run on complete outputs: nothing is rewritten.
    let again = run(&source, &Extras::default(), &options(a.path(), 2)).unwrap();
    assert_eq!((again.shards_written, again.shards_resumed), (0, 3));
    assert_eq!(std::fs::read(a.path().join("manifest.json")).unwrap(), manifest_a);

    // Damage one shard: only that one is rewritten, back to the same bytes.
    let victim = &shard_paths(a.path())[1];
    let len = std::fs::metadata(victim).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(victim).unwrap().set_len(len / 2).unwrap();
    let resumed = run(&source, &Extras::default(), &options(a.path(), 2)).unwrap();
    assert_eq!((resumed.shards_written, resumed.shards_resumed), (1, 2));
    assert_eq!(bytes(a.path()), bytes(b.path()));

    // Changed inputs change the fingerprint: the affected shard is redone.
    std::fs::remove_file(src.path().join("dos/mp-1000.json")).unwrap();
    let changed = run(&source, &Extras::default(), &options(a.path(), 2)).unwrap();
    assert_eq!((changed.shards_written, changed.counts.dos), (1, 3));
}
