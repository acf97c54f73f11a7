//! Shard format round trips: multimat writes, multimat and h5py read back the same values,
//! identical inputs give byte-identical files, and `validate` finds every injected corruption.

use multimat::crystal::{CrystalGraphs, EdgeList, InfiniteEdges};
use multimat::material::{ProcessedDos, Provenance, Structure, TextEmbedding};
use multimat::preprocess::PreprocessParams;
use multimat::shard::{validate, EmbeddingSpec, ShardData, ShardMeta, ShardRecord, ShardWriter, TargetSpec, Violation};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn python() -> PathBuf {
    match std::env::var_os("MULTIMAT_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/venv/bin/python"),
    }
}

fn run_python(script: &str, args: &[&Path]) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e} (set MULTIMAT_PYTHON to a python with h5py)", python().display()));
    assert!(out.status.success(), "python failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Small grids and DOS so the test is fast; the format takes them from the params.
fn params() -> PreprocessParams {
    PreprocessParams { dos_points: 51, density_grid: [4, 5, 6], ..PreprocessParams::default() }
}

fn meta() -> ShardMeta {
    let mut targets = BTreeMap::new();
    targets.insert("bulk_modulus".to_string(), TargetSpec { width: 1, units: "GPa".into() });
    targets.insert("elastic_tensor".to_string(), TargetSpec { width: 15, units: "GPa".into() });
    ShardMeta {
        preprocess: params(),
        targets,
        text_embedding: Some(EmbeddingSpec { model: "test-bert".into(), weights_sha256: "ab".repeat(32), dim: 8 }),
        ..ShardMeta::default()
    }
}

/// Records with a varied pattern of present/absent modalities; record 0 has everything.
fn records(n: usize, seed: u64) -> Vec<ShardRecord> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let p = params();
    (0..n)
        .map(|i| {
            let atoms = 1 + i % 4;
            let structure = (i % 5 != 3).then(|| Structure {
                lattice: [[3.0 + i as f64 * 0.1, 0.0, 0.0], [0.1, 4.0, 0.0], [0.0, 0.2, 5.0]],
                species: (0..atoms).map(|a| (1 + (i * 7 + a * 13) % 118) as u8).collect(),
                frac_coords: (0..atoms).map(|_| [rng.random(), rng.random(), rng.random()]).collect(),
            });
            let graphs = structure.as_ref().filter(|_| i % 3 != 1).map(|s| {
                let n = s.species.len() as u32;
                let edges = |k: u32| EdgeList {
                    src: (0..n * k).map(|e| e % n).collect(),
                    dst: (0..n * k).map(|e| e / k).collect(),
                    image: (0..n * k).map(|e| [e as i32 % 3 - 1, 0, 1]).collect(),
                    distance: (0..n * k).map(|e| 1.0 + e as f32 * 0.25).collect(),
                };
                CrystalGraphs {
                    local: edges(3),
                    cgcnn: edges(2),
                    infinite: InfiniteEdges {
                        src: (0..n * n).map(|e| e / n).collect(),
                        dst: (0..n * n).map(|e| e % n).collect(),
                        coulomb: (0..n * n).map(|e| 0.5 + e as f64).collect(),
                        london: (0..n * n).map(|e| 1e-3 * e as f64).collect(),
                        pauli: (0..n * n).map(|e| (-(e as f64)).exp()).collect(),
                    },
                }
            });
            let dos = (i % 4 != 2).then(|| ProcessedDos {
                energies: (0..p.dos_points).map(|k| -10.0 + k as f32 * 0.4).collect(),
                densities: (0..p.dos_points).map(|_| rng.random::<f32>() * 3.0).collect(),
                repaired_points: i % 3,
            });
            let g3: usize = p.density_grid.iter().product();
            let charge_density = (i % 6 != 5).then(|| (0..g3).map(|_| rng.random::<f32>() * 10.0).collect());
            let text = (i % 2 == 0).then(|| format!("Material {i} is a crystal with {atoms} sites, 3.5 Å bonds."));
            let text_embedding =
                (i % 7 != 6).then(|| TextEmbedding { vector: (0..8).map(|_| rng.random::<f32>() - 0.5).collect(), model: "test-bert".into() });
            let mut targets = BTreeMap::new();
            if i % 2 == 0 {
                targets.insert("bulk_modulus".to_string(), vec![100.0 + i as f64]);
            }
            if i % 3 == 0 {
                targets.insert("elastic_tensor".to_string(), (0..15).map(|k| k as f64 * 1.5 - 3.0).collect());
            }
            let mut provenance = Provenance::default();
            provenance.sources.insert("structure".into(), format!("structures/mp-{i}.json"));
            ShardRecord { id: format!("mp-{}", 1000 + i), structure, graphs, dos, charge_density, text, text_embedding, targets, provenance }
        })
        .collect()
}

#[test]
fn round_trip_is_exact_and_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let recs = records(23, 1);
    let writer = ShardWriter::new(meta());
    let a = dir.path().join("a.h5");
    let b = dir.path().join("b.h5");
    let sums = writer.write(&a, &recs).unwrap();
    writer.write(&b, &recs).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "identical records must give identical bytes");

    let data = ShardData::load(&a).unwrap();
    assert_eq!(data.len(), 23);
    assert_eq!(data.meta.targets, meta().targets);
    assert_eq!(data.meta.text_embedding, meta().text_embedding);
    for (i, r) in recs.iter().enumerate() {
        let back = data.record(i);
        assert_eq!(&back, r, "record {i} differs after the round trip");
        assert_eq!(back.checksum(), sums[i]);
    }
    let v = validate(&a);
    assert!(v.is_empty(), "fresh shard has violations: {v:#?}");

    // One changed value changes the file.
    let mut changed = recs.clone();
    changed[5].dos.as_mut().unwrap().densities[3] += 1.0;
    writer.write(&b, &changed).unwrap();
    assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

#[test]
fn writer_refuses_records_that_break_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let writer = ShardWriter::new(meta());
    let path = dir.path().join("bad.h5");
    let cases: Vec<(&str, Box<dyn Fn(&mut ShardRecord)>)> = vec![
        ("non-finite", Box::new(|r| r.dos.as_mut().unwrap().densities[0] = f32::NAN)),
        ("atomic number", Box::new(|r| r.structure.as_mut().unwrap().species[0] = 0)),
        ("values, expected", Box::new(|r| r.charge_density.as_mut().unwrap().pop().map(|_| ()).unwrap())),
        ("not in the shard's target list", Box::new(|r| { r.targets.insert("made_up".into(), vec![1.0]); })),
        ("atom index", Box::new(|r| r.graphs.as_mut().unwrap().local.src[0] = 99)),
        ("model", Box::new(|r| r.text_embedding.as_mut().unwrap().model = "other".into())),
    ];
    for (expect, corrupt) in cases {
        let mut recs = records(3, 2);
        corrupt(&mut recs[0]);
        let err = format!("{:#}", writer.write(&path, &recs).unwrap_err());
        assert!(err.contains(expect) && err.contains("mp-1000"), "expected {expect:?} naming the record, got: {err}");
        assert!(!path.exists(), "a refused shard must leave no file");
    }
    let mut dup = records(3, 2);
    dup[2].id = dup[0].id.clone();
    assert!(format!("{:#}", writer.write(&path, &dup).unwrap_err()).contains("duplicate id"));
}

#[test]
fn empty_shard_round_trips_and_validates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.h5");
    ShardWriter::new(meta()).write(&path, &[]).unwrap();
    assert!(validate(&path).is_empty(), "{:#?}", validate(&path));
    assert_eq!(ShardData::load(&path).unwrap().len(), 0);
}

const H5PY_READ: &str = r#"
import sys, json, hashlib, h5py, numpy as np
f = h5py.File(sys.argv[1], "r")
ids = [s.decode() for s in f["ids"][...]]
off = f["crystal/atom_offsets"][...]
i = 2
out = {
  "schema_version": int(f.attrs["schema_version"]),
  "dos_points": json.loads(f.attrs["preprocess_params"])["dos_points"],
  "ids": ids,
  "lattice_2": f["crystal/lattice"][i].tolist(),
  "species_2": f["crystal/species"][off[i]:off[i+1]].tolist(),
  "frac_2": f["crystal/frac_coords"][off[i]:off[i+1]].tolist(),
  "dos_mask": f["mask/dos"][...].tolist(),
  "dos_densities_0": f["dos/densities"][0].astype(float).tolist(),
  "dos_absent_all_nan": bool(np.isnan(f["dos/densities"][2]).all()),
  "charge_sum_1": float(f["charge_density/values"][1].astype(np.float64).sum()),
  "charge_chunks": list(f["charge_density/values"].chunks),
  "charge_compression": f["charge_density/values"].compression,
  "description_0": f["text/description"][0].decode(),
  "embedding_model": f["text/embedding"].attrs["model"],
  "embedding_0": f["text/embedding"][0].astype(float).tolist(),
  "bulk_units": f["targets/bulk_modulus"].attrs["units"],
  "bulk": [None if np.isnan(x) else x for x in f["targets/bulk_modulus"][:, 0].tolist()],
  "local_edges_0": int(f["graphs/local/edge_offsets"][1] - f["graphs/local/edge_offsets"][0]),
}
# Every numeric dataset's sha256 attribute equals the sha256 of its little-endian bytes.
bad = []
def visit(name, obj):
    if isinstance(obj, h5py.Dataset) and obj.dtype.kind != "O":
        a = obj[...]
        le = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        if hashlib.sha256(le).hexdigest() != obj.attrs["sha256"]:
            bad.append(name)
    elif isinstance(obj, h5py.Dataset):
        h = hashlib.sha256()
        for s in obj[...]:
            h.update(len(s).to_bytes(8, "little")); h.update(s)
        if h.hexdigest() != obj.attrs["sha256"]:
            bad.append(name)
f.visititems(visit)
out["bad_checksums"] = bad
print(json.dumps(out))
"#;

#[test]
fn h5py_reads_the_values_multimat_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.h5");
    let recs = records(9, 3);
    ShardWriter::new(meta()).write(&path, &recs).unwrap();
    let out: serde_json::Value = serde_json::from_str(&run_python(H5PY_READ, &[&path])).unwrap();

    assert_eq!(out["schema_version"], 1);
    assert_eq!(out["dos_points"], 51);
    let ids: Vec<String> = recs.iter().map(|r| r.id.clone()).collect();
    assert_eq!(out["ids"], serde_json::json!(ids));
    let s2 = recs[2].structure.as_ref().unwrap();
    assert_eq!(out["lattice_2"], serde_json::json!(s2.lattice));
    assert_eq!(out["species_2"], serde_json::json!(s2.species));
    assert_eq!(out["frac_2"], serde_json::json!(s2.frac_coords));
    let mask: Vec<u8> = recs.iter().map(|r| r.dos.is_some() as u8).collect();
    assert_eq!(out["dos_mask"], serde_json::json!(mask));
    let d0: Vec<f64> = recs[0].dos.as_ref().unwrap().densities.iter().map(|&x| x as f64).collect();
    assert_eq!(out["dos_densities_0"], serde_json::json!(d0));
    assert_eq!(out["dos_absent_all_nan"], true, "record 2 has no DOS: its row must be NaN");
    let sum1: f64 = recs[1].charge_density.as_ref().unwrap().iter().map(|&x| x as f64).sum();
    assert!((out["charge_sum_1"].as_f64().unwrap() - sum1).abs() < 1e-9 * sum1.abs().max(1.0));
    assert_eq!(out["charge_chunks"], serde_json::json!([1, 4, 5, 6]));
    assert_eq!(out["charge_compression"], "gzip");
    assert_eq!(out["description_0"], recs[0].text.as_deref().unwrap());
    assert_eq!(out["embedding_model"], "test-bert");
    let e0: Vec<f64> = recs[0].text_embedding.as_ref().unwrap().vector.iter().map(|&x| x as f64).collect();
    assert_eq!(out["embedding_0"], serde_json::json!(e0));
    assert_eq!(out["bulk_units"], "GPa");
    let bulk: Vec<Option<f64>> = recs.iter().map(|r| r.targets.get("bulk_modulus").map(|v| v[0])).collect();
    assert_eq!(out["bulk"], serde_json::json!(bulk));
    assert_eq!(out["local_edges_0"], recs[0].graphs.as_ref().unwrap().local.src.len());
    assert_eq!(out["bad_checksums"], serde_json::json!([]), "h5py recomputes every sha256 attribute as the spec says");
}

/// Each corruption is applied by h5py to its own copy of a good shard; `sha` keeps the checksum
/// attribute consistent so only the intended violation shows.
const H5PY_CORRUPT: &str = r#"
import sys, shutil, hashlib, h5py, numpy as np
src, out = sys.argv[1], sys.argv[2]
def sha(ds):
    a = ds[...]
    ds.attrs["sha256"] = hashlib.sha256(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()).hexdigest()
def copy(name):
    p = f"{out}/{name}.h5"; shutil.copy(src, p); return h5py.File(p, "r+")
with copy("truncated") as f:           # species dataset shorter than the offsets say
    a = f["crystal/species"][...][:-2]; del f["crystal/species"]
    f.create_dataset("crystal/species", data=a, chunks=True, compression="gzip"); sha(f["crystal/species"])
with copy("flipped") as f:             # a value changed behind the checksum's back
    f["dos/densities"][0, 3] += 1.0
with copy("version") as f:
    f.attrs.modify("schema_version", np.uint32(2))
with copy("nan_present") as f:         # NaN inside a record marked present
    f["charge_density/values"][1, 0, 0, 0] = np.nan; sha(f["charge_density/values"])
with copy("offsets") as f:
    o = f["crystal/atom_offsets"]; a = o[...]; a[3] = a[4] + 1; o[...] = a; sha(o)
with copy("species") as f:
    s = f["crystal/species"]; a = s[...]; a[0] = 119; s[...] = a; sha(s)
with copy("mask") as f:                # DOS marked present for a record whose row is NaN
    m = f["mask/dos"]; a = m[...]; a[2] = 1; m[...] = a; sha(m)
with copy("missing") as f:
    del f["text/embedding"]
p = f"{out}/chunkflip.h5"; shutil.copy(src, p)   # bytes flipped inside a compressed chunk on disk
with h5py.File(p, "r") as f:
    info = f["charge_density/values"].id.get_chunk_info_by_coord((1, 0, 0, 0))
with open(p, "r+b") as fh:
    at = info.byte_offset + info.size // 2
    fh.seek(at); b = fh.read(8); fh.seek(at); fh.write(bytes(x ^ 0xFF for x in b))
with copy("shape") as f:               # DOS with the wrong number of points
    a = f["dos/energies"][...][:, :-1]; del f["dos/energies"]
    f.create_dataset("dos/energies", data=a, chunks=True, compression="gzip"); sha(f["dos/energies"])
"#;

fn has(v: &[Violation], location: &str, record: Option<usize>, text: &str) -> bool {
    v.iter().any(|x| x.location == location && x.record.as_ref().map(|r| r.0) == record && x.message.contains(text))
}

#[test]
fn validate_reports_each_injected_corruption_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.h5");
    let recs = records(9, 4);
    ShardWriter::new(meta()).write(&good, &recs).unwrap();
    run_python(H5PY_CORRUPT, &[&good, dir.path()]);
    let check = |name: &str, location: &str, record: Option<usize>, text: &str| {
        let v = validate(&dir.path().join(format!("{name}.h5")));
        assert!(has(&v, location, record, text), "{name}: expected {location} {record:?} {text:?}, got:\n{}",
            v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("\n"));
        v
    };
    check("truncated", "/crystal/atom_offsets", None, "last offset");
    check("truncated", "/crystal/frac_coords", None, "shape");
    let v = check("flipped", "/dos/densities", None, "checksum mismatch");
    assert_eq!(v.len(), 1, "only the checksum is wrong: {v:#?}");
    check("version", "/@schema_version", None, "schema version 2");
    let v = check("nan_present", "/charge_density/values", Some(1), "NaN/inf");
    assert_eq!(v[0].record.as_ref().unwrap().1, "mp-1001", "violation names the record id");
    check("offsets", "/crystal/atom_offsets", Some(3), "offsets decrease"); // record 3 ends before it starts
    check("species", "/crystal/species", Some(0), "out of range");
    check("mask", "/dos/densities", Some(2), "NaN/inf");
    check("missing", "/text/embedding", None, "missing");
    check("shape", "/dos/energies", None, "shape");
    check("chunkflip", "/charge_density/values", None, "");
    // The bulk loader refuses the damaged chunk too (it decodes chunks outside HDF5, in parallel).
    assert!(ShardData::load(&dir.path().join("chunkflip.h5")).is_err());

    // Not HDF5 at all, and a file cut short.
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.h5");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert!(!validate(&cut).is_empty());
    let junk = dir.path().join("junk.h5");
    std::fs::write(&junk, b"not a shard").unwrap();
    assert!(has(&validate(&junk), "/", None, "cannot open"));
}
