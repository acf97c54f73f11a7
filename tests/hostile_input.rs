//! Regression tests of the hostile-input classes beyond single files: training refuses shards
//! that `validate` would reject (and names shard, dataset and record), graph building refuses
//! cells too extreme to search instead of hanging, rejects blame the file holding the bad value,
//! and configs with absurd sizes fail before allocating, naming the config file.

use multimat::approx::synth::{self, SizeModel, SynthOptions};
use multimat::ingest::{process_input_with_bounds, Input};
use multimat::material::{MaterialRecord, Structure};
use multimat::plausibility::Bounds;
use multimat::shard::{integrity, ShardMeta, ShardReader, LoadOptions, TargetSpec};
use multimat::train::dataset::Dataset;
use std::path::{Path, PathBuf};

/// One small valid shard with every modality (6 records).
fn small_shard(dir: &Path) -> PathBuf {
    let mut o = SynthOptions::new(6, dir.join("shards"));
    o.seed = 3;
    o.all_modalities = true;
    o.sizes = SizeModel { max_atoms: 6, ..SizeModel::default() };
    o.preprocess.dos_points = 16;
    o.preprocess.density_grid = [4, 4, 4];
    let summary = synth::run(&o).unwrap();
    summary.shards[0].clone()
}

fn err<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn training_load_checks_what_validate_checks_and_names_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let shard = small_shard(dir.path());
    Dataset::load(std::slice::from_ref(&shard)).expect("the valid shard loads");
    let loaded = || ShardReader::open(&shard).unwrap().load(LoadOptions::default()).unwrap();

    // Inconsistent offsets (used to panic with a slice index out of range).
    let mut d = loaded();
    d.atom_offsets.swap(2, 3);
    let e = err(integrity::check_loaded(&d));
    assert!(e.contains("shard-") && e.contains("/crystal/atom_offsets") && e.contains("record 2") && e.contains("decrease"), "{e}");
    let mut d = loaded();
    let last = d.local.offsets.len() - 1;
    d.local.offsets[last] += 5;
    assert!(err(integrity::check_loaded(&d)).contains("graphs/local/edge_offsets"));

    // Duplicate and empty ids.
    let mut d = loaded();
    d.ids[4] = d.ids[1].clone();
    let e = err(integrity::check_loaded(&d));
    assert!(e.contains("/ids") && e.contains("record 4") && e.contains("duplicate id (also record 1)"), "{e}");
    let mut d = loaded();
    d.ids[0].clear();
    assert!(err(integrity::check_loaded(&d)).contains("empty material id"));

    // Mask inconsistencies: a value that is not 0/1, a present DOS holding NaN, graphs without a structure.
    let mut d = loaded();
    d.masks[2][3] = 7;
    assert!(err(integrity::check_loaded(&d)).contains("/mask/dos: record 3"));
    let mut d = loaded();
    d.dos_densities[5 * 16 + 2] = f32::NAN;
    let e = err(integrity::check_loaded(&d));
    assert!(e.contains("/dos/densities") && e.contains("record 5") && e.contains("position 2"), "{e}");
    let mut d = loaded();
    d.masks[0][1] = 0;
    assert!(err(integrity::check_loaded(&d)).contains("graphs marked present without a structure"));
    // An edge pointing outside its record's atoms.
    let mut d = loaded();
    let r = d.infinite.offsets[1] as usize;
    d.infinite.src[r] = 999;
    assert!(err(integrity::check_loaded(&d)).contains("edge atom index"));
}

#[test]
fn training_load_verifies_checksums_and_refuses_missing_ones() {
    let dir = tempfile::tempdir().unwrap();
    let shard = small_shard(dir.path());
    multimat::shard::hdf5_without_file_locking();
    {
        // A value changed under its (now stale) checksum.
        let f = hdf5::File::open_rw(&shard).unwrap();
        let ds = f.dataset("dos/densities").unwrap();
        let mut v: Vec<f32> = ds.read_raw().unwrap();
        v[20] += 1.0;
        ds.write_raw(&v).unwrap();
    }
    let e = err(Dataset::load(std::slice::from_ref(&shard)));
    assert!(e.contains("dos/densities") && e.contains("checksum mismatch"), "{e}");

    let shard = small_shard(&dir.path().join("b"));
    {
        let f = hdf5::File::open_rw(&shard).unwrap();
        f.dataset("crystal/species").unwrap().delete_attr("sha256").unwrap();
    }
    let e = err(Dataset::load(std::slice::from_ref(&shard)));
    assert!(e.contains("crystal/species") && e.contains("missing sha256"), "{e}");
}

fn cell(c: f64) -> Structure {
    Structure { lattice: [[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, c]], species: vec![14], frac_coords: vec![[0.0; 3]] }
}

#[test]
fn graph_building_refuses_extreme_cells_with_the_limit_instead_of_hanging() {
    let params = multimat::crystal::GraphParams::default();
    for c in [2147483648.0, 1e9, 1e5] {
        let e = err(multimat::crystal::build_graphs(&cell(c), &params));
        assert!(e.contains("lattice vector c") && e.contains("1000 Å"), "{e}");
    }
    // A long but accepted cell still builds (the limit is not hit by real slabs).
    multimat::crystal::build_graphs(&cell(60.0), &params).unwrap();
}

#[test]
fn rejects_blame_the_file_that_holds_the_bad_value() {
    let dir = tempfile::tempdir().unwrap();
    let poscar = dir.path().join("POSCAR");
    std::fs::write(&poscar, "Si2\n1.0\n3.867422 0 0\n1.933711 3.349287 0\n0 -2.232856 3.157737\nSi\n2\nDirect\n0 0 0\n0.75 0.5 0.75\n").unwrap();
    let mut meta = ShardMeta::default();
    meta.targets.insert("elastic_tensor".into(), TargetSpec { width: 15, units: "GPa".into() });
    let input = |record: MaterialRecord| {
        let mut i = Input { id: "mp-149".into(), record, ..Default::default() };
        i.files.structure = Some(poscar.clone());
        i
    };

    // A label of the wrong width: the labels CSV is at fault, not the structure.
    let mut rec = MaterialRecord { id: "mp-149".into(), ..Default::default() };
    rec.targets.insert("elastic_tensor".into(), vec![1.0; 14]);
    rec.provenance.sources.insert("targets".into(), "labels.csv#mp-149".into());
    let r = process_input_with_bounds(&input(rec.clone()), &meta, false, &Bounds::default()).unwrap_err();
    assert_eq!(r.file, "labels.csv", "{r:?}");
    assert!(r.reason.contains("14 values") && r.reason.contains("15"), "{r:?}");

    // An implausible target (1e308 GPa).
    rec.targets.insert("elastic_tensor".into(), vec![1e308; 15]);
    let r = process_input_with_bounds(&input(rec), &meta, false, &Bounds::default()).unwrap_err();
    assert_eq!(r.file, "labels.csv");
    assert!(r.reason.contains("plausible range"), "{r:?}");

    // A NUL in a description: the texts file is at fault.
    let mut rec = MaterialRecord { id: "mp-149".into(), text: Some("Si is\0 diamond".into()), ..Default::default() };
    rec.provenance.sources.insert("text".into(), "texts.jsonl#3".into());
    let r = process_input_with_bounds(&input(rec), &ShardMeta::default(), false, &Bounds::default()).unwrap_err();
    assert_eq!(r.file, "texts.jsonl");

    // The structure file for an implausible structure; an override accepts it.
    std::fs::write(&poscar, "Si\n1.0\n3 0 0\n0 3 0\n0 0 3\nSi\n1\nDirect\n0 -99999 0\n").unwrap();
    let plain = MaterialRecord { id: "mp-149".into(), ..Default::default() };
    let r = process_input_with_bounds(&input(plain.clone()), &ShardMeta::default(), false, &Bounds::default()).unwrap_err();
    assert!(r.file.ends_with("POSCAR") && r.reason.contains("max_abs_frac_coord"), "{r:?}");
    let loose = Bounds { max_abs_frac_coord: 1e6, ..Bounds::default() };
    process_input_with_bounds(&input(plain), &ShardMeta::default(), false, &loose).unwrap();
}

#[test]
fn absurd_config_sizes_fail_before_allocating_and_name_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    let base = "[data]\nshards = [\"s\"]\nmodalities = [\"crystal\", \"dos\"]\n[loss]\nkind = \"clip\"\n";
    for (extra, want) in [
        ("[model.encoders.potnet]\nhidden = 100000\n", "potnet.hidden = 100000"),
        ("[model.encoders.dos_transformer]\nheads = 1073741824\n", "dos_transformer.heads"),
        ("[model]\nembed_dim = 4000000000\n", "model.embed_dim"),
        ("[model.encoders.potnet]\nhidden = 60000\n", "GiB to train"),
        ("[run]\nout_dir = \"\"\n", "run.out_dir is empty"),
    ] {
        std::fs::write(&p, format!("{base}{extra}")).unwrap();
        let e = err(multimat::train::config::PretrainConfig::load(&p, &[]));
        assert!(e.contains("c.toml") && e.contains(want), "wanted {want:?}: {e}");
    }
}
