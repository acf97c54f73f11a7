//! Streamed training data (issue 14, part 1): a dataset that reads every per-record column
//! (charge densities, DOS rows, text embeddings, atoms, edge lists) from its HDF5 chunks per batch
//! gives bit-for-bit the batches of one loaded whole — also when records straddle chunks, and when
//! an old shard's column cannot be streamed and stays in memory — keeps a bounded number of
//! decoded densities resident, holds only the per-record metadata the API reports, and still
//! refuses corrupt data — at load, and on a lazy read long after it, naming the shard, dataset
//! and record.

use multimat::approx::synth::{self, SizeModel, SynthOptions};
use multimat::material::Modality;
use multimat::model::ModalityBatch;
use multimat::train::data_order::{batches_per_epoch, epoch_permutation, global_batch};
use multimat::train::dataset::Dataset;
use std::path::{Path, PathBuf};

const GRID: [usize; 3] = [6, 5, 4];

/// 30 synthetic records in 3 shards; densities on MP's share of them (so some records lack one).
fn shards(dir: &Path) -> Vec<PathBuf> {
    let mut o = SynthOptions::new(30, dir.join("shards"));
    o.seed = 11;
    o.records_per_shard = 10;
    o.sizes = SizeModel { max_atoms: 6, ..SizeModel::default() };
    o.preprocess.dos_points = 16;
    o.preprocess.density_grid = GRID;
    synth::run(&o).unwrap().shards
}

/// Every value of a batch, bit for bit (Debug prints f32/f64 round-trip exactly).
fn fingerprint(b: &ModalityBatch) -> String {
    format!("{b:?}")
}

fn err<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn streamed_batches_equal_in_memory_batches_and_residency_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let paths = shards(dir.path());
    let whole = Dataset::load_in_memory(&paths).unwrap();
    let cap = 4;
    let streamed = Dataset::load_streamed(&paths, cap).unwrap();
    assert!(streamed.streams_density() && !whole.streams_density());
    assert_eq!(streamed.fingerprint, whole.fingerprint);
    assert_eq!(streamed.len(), 30);
    let with_density = streamed.count(Modality::ChargeDensity);
    assert!(with_density >= 5 && with_density < 30, "synth gives a share of records a density: {with_density}");

    // Two epochs of batches of 6 in the training order, every modality, as pre-training draws them.
    let bsz = 6;
    for epoch in 0..2 {
        let perm = epoch_permutation(streamed.len(), 5, epoch);
        for b in 0..batches_per_epoch(streamed.len(), bsz) {
            let batch = global_batch(&perm, bsz, b);
            for m in Modality::ALL {
                let recs: Vec<usize> = batch.iter().copied().filter(|&r| whole.has(m, r)).collect();
                if recs.is_empty() {
                    continue;
                }
                let (a, s) = (whole.assemble(m, &recs).unwrap(), streamed.assemble(m, &recs).unwrap());
                assert_eq!(fingerprint(&a), fingerprint(&s), "epoch {epoch} batch {b} {}", m.name());
                if let (ModalityBatch::ChargeDensity(a), ModalityBatch::ChargeDensity(s)) = (&a, &s) {
                    assert_eq!(s.values.len(), recs.len() * GRID.iter().product::<usize>());
                    assert!(a.values.iter().zip(&s.values).all(|(x, y)| x.to_bits() == y.to_bits()));
                }
            }
        }
    }
    // The cache never held more than its bound, and every density was really read from disk
    // (two epochs through a cache of 4 cannot serve them all from memory).
    let c = streamed.density_cache();
    assert_eq!(c.capacity, cap);
    assert!(c.peak_resident <= cap && c.resident <= cap, "{c:?}");
    assert!(c.rows_read as usize > with_density, "{c:?}");

    // What stays in memory: everything but the per-record columns, plus their chunk index.
    let n = streamed.len();
    assert!(streamed.resident_columns().is_empty(), "{:?}", streamed.resident_columns());
    assert!(whole.resident_columns().iter().any(|c| c == "graphs/infinite/coulomb"), "{:?}", whole.resident_columns());
    let column_bytes: usize = whole.shards.iter().flat_map(|s| s.per_record_columns()).map(|(_, b)| b).sum();
    let g3: usize = GRID.iter().product();
    assert!(column_bytes >= with_density * g3 * 4, "the densities are among them");
    // Descriptions and provenance are not kept either (no training path reads them).
    assert!(streamed.shards.iter().all(|s| s.descriptions.is_empty() && s.provenance.is_empty()));
    assert!(whole.shards.iter().all(|s| s.descriptions.len() == s.len()));
    assert!(streamed.resident_bytes() < whole.resident_bytes() - column_bytes + streamed.chunk_index_bytes());
    // One index entry per record for each of the four one-record-per-chunk columns (density,
    // DOS energies and densities, embedding) plus a few for the ragged columns' chunks.
    let per_record_index = streamed.chunk_index_bytes() as f64 / n as f64;
    assert!((4.0 * 48.0..=6.0 * 48.0).contains(&per_record_index), "{per_record_index} B/record of chunk index");
    // No cache at all still works (every read goes to disk).
    let uncached = Dataset::load_streamed(&paths, 0).unwrap();
    let recs: Vec<usize> = (0..n).filter(|&r| whole.has(Modality::ChargeDensity, r)).collect();
    assert_eq!(fingerprint(&uncached.assemble(Modality::ChargeDensity, &recs).unwrap()), fingerprint(&whole.assemble(Modality::ChargeDensity, &recs).unwrap()));
    assert_eq!(uncached.density_cache().peak_resident, 0);
}

#[test]
fn corrupt_density_fails_at_load_and_on_a_lazy_read_naming_shard_dataset_and_record() {
    multimat::shard::hdf5_without_file_locking();
    let dir = tempfile::tempdir().unwrap();
    let paths = shards(dir.path());
    let ds = Dataset::load(&paths).unwrap();
    let r = (0..ds.len()).find(|&r| ds.has(Modality::ChargeDensity, r)).unwrap();
    let (shard, row) = (&paths[r / 10], r % 10);
    let id = ds.id(r).to_string();

    // The shard changes on disk after the load: one byte of the record's compressed chunk.
    let addr = {
        let f = hdf5::File::open(shard).unwrap();
        f.dataset("charge_density/values").unwrap().chunk_info(row).unwrap().addr
    };
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().read(true).write(true).open(shard).unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, addr + 5).unwrap();
        f.write_all_at(&[b[0] ^ 0x5a], addr + 5).unwrap();
    }
    let e = err(ds.assemble(Modality::ChargeDensity, &[r]));
    let name = shard.file_name().unwrap().to_string_lossy().into_owned();
    assert!(e.contains(&name) && e.contains("/charge_density/values") && e.contains(&format!("record {row} ({id})")), "{e}");
    // Other records still read.
    let other = (0..ds.len()).find(|&q| q != r && ds.has(Modality::ChargeDensity, q)).unwrap();
    ds.assemble(Modality::ChargeDensity, &[other]).unwrap();

    // A fresh load refuses the shard (the corrupt chunk is found by the load-time pass).
    let e = err(Dataset::load(&paths));
    assert!(e.contains(&name) && e.contains("/charge_density/values"), "{e}");

    // A value changed under a stale dataset checksum (valid compressed data): refused at load.
    let paths = shards(&dir.path().join("b"));
    {
        let f = hdf5::File::open_rw(&paths[1]).unwrap();
        let d = f.dataset("charge_density/values").unwrap();
        let mut v: Vec<f32> = d.read_raw().unwrap();
        let k = v.iter().position(|x| x.is_finite()).unwrap();
        v[k] += 1.0;
        d.write_raw(&v).unwrap();
    }
    let e = err(Dataset::load(&paths));
    assert!(e.contains("charge_density/values") && e.contains("checksum mismatch"), "{e}");
    // …and so does the whole-load path, as before.
    let e = err(Dataset::load_in_memory(&paths));
    assert!(e.contains("charge_density/values") && e.contains("checksum mismatch"), "{e}");
}

/// Rewrite dataset `name` of the shard at `path` with `chunk_rows` rows per chunk (shuffle +
/// deflate), or contiguous (`None`) — the layout of shards written by other writers or before
/// the streamed layout — keeping its values and attributes.
fn relayout<T: hdf5::H5Type + Copy>(path: &Path, name: &str, chunk_rows: Option<usize>) {
    use hdf5::types::VarLenUnicode;
    let f = hdf5::File::open_rw(path).unwrap();
    let ds = f.dataset(name).unwrap();
    let shape = ds.shape();
    let values: Vec<T> = ds.read_raw().unwrap();
    let attrs: Vec<(String, VarLenUnicode)> = ds.attr_names().unwrap().into_iter().map(|a| {
        let v = ds.attr(&a).unwrap().read_scalar::<VarLenUnicode>().unwrap();
        (a, v)
    }).collect();
    drop(ds);
    f.unlink(name).unwrap();
    let view = ndarray::ArrayViewD::from_shape(ndarray::IxDyn(&shape), &values).unwrap();
    let mut b = f.new_dataset_builder().with_data(view);
    if let Some(rows) = chunk_rows {
        let mut chunk = shape.clone();
        chunk[0] = rows;
        b = b.chunk(chunk).shuffle().deflate(4);
    }
    let ds = b.create(name).unwrap();
    for (a, v) in attrs {
        ds.new_attr::<VarLenUnicode>().create(a.as_str()).unwrap().write_scalar(&v).unwrap();
    }
}

/// Two epochs of every modality's batches, compared bit for bit between two datasets.
fn assert_same_batches(a: &Dataset, b: &Dataset) {
    for epoch in 0..2 {
        let perm = epoch_permutation(a.len(), 9, epoch);
        for k in 0..batches_per_epoch(a.len(), 7) {
            let batch = global_batch(&perm, 7, k);
            for m in Modality::ALL {
                let recs: Vec<usize> = batch.iter().copied().filter(|&r| a.has(m, r)).collect();
                if !recs.is_empty() {
                    assert_eq!(fingerprint(&a.assemble(m, &recs).unwrap()), fingerprint(&b.assemble(m, &recs).unwrap()), "epoch {epoch} batch {k} {}", m.name());
                }
            }
        }
    }
}

#[test]
fn records_straddling_chunks_and_unstreamable_old_layouts_give_the_same_batches() {
    multimat::shard::hdf5_without_file_locking();
    let dir = tempfile::tempdir().unwrap();
    let paths = shards(dir.path());
    let whole = Dataset::load_in_memory(&paths).unwrap();
    // Ragged columns in chunks of 7 atoms/edges: most records' ranges straddle two or more
    // chunks (the writer's 16 KiB chunks hold a whole test shard). DOS in chunks of 3 records.
    for p in &paths {
        relayout::<u8>(p, "crystal/species", Some(7));
        relayout::<u32>(p, "graphs/local/src", Some(7));
        relayout::<f32>(p, "graphs/cgcnn/distance", Some(5));
        relayout::<f64>(p, "graphs/infinite/pauli", Some(7));
        relayout::<f32>(p, "dos/densities", Some(3));
    }
    // A contiguous (unchunked) column cannot be read per record: it stays in memory.
    relayout::<f32>(&paths[1], "dos/energies", None);
    relayout::<f32>(&paths[2], "text/embedding", None);
    let streamed = Dataset::load(&paths).unwrap();
    assert!(streamed.streams("crystal/species") && streamed.streams("graphs/infinite/pauli") && streamed.streams("dos/densities"));
    assert_eq!(streamed.resident_columns(), vec!["dos/energies".to_string(), "text/embedding".to_string()]);
    assert_same_batches(&whole, &streamed);
}

#[test]
fn corrupt_dos_and_edge_chunks_fail_on_a_lazy_read_naming_shard_dataset_and_record() {
    multimat::shard::hdf5_without_file_locking();
    let dir = tempfile::tempdir().unwrap();
    let paths = shards(dir.path());
    let ds = Dataset::load(&paths).unwrap();
    let flip = |shard: &Path, dataset: &str, chunk: usize| {
        use std::os::unix::fs::FileExt;
        let addr = hdf5::File::open(shard).unwrap().dataset(dataset).unwrap().chunk_info(chunk).unwrap().addr;
        let f = std::fs::OpenOptions::new().read(true).write(true).open(shard).unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, addr + 3).unwrap();
        f.write_all_at(&[b[0] ^ 0x5a], addr + 3).unwrap();
    };
    // DOS: one record per chunk.
    let r = (0..ds.len()).find(|&r| ds.has(Modality::Dos, r)).unwrap();
    let (shard, row) = (&paths[r / 10], r % 10);
    flip(shard, "dos/densities", row);
    let e = err(ds.assemble(Modality::Dos, &[r]));
    let name = shard.file_name().unwrap().to_string_lossy().into_owned();
    assert!(e.contains(&name) && e.contains("/dos/densities") && e.contains(&format!("record {row} ({})", ds.id(r))), "{e}");
    // Edges: the whole (small) shard's coulomb sums are one chunk; a crystal batch of that
    // shard fails naming the record being assembled, other shards still read.
    let q = (20..30).find(|&q| ds.has(Modality::Crystal, q)).unwrap();
    flip(&paths[2], "graphs/infinite/coulomb", 0);
    let e = err(ds.assemble(Modality::Crystal, &[q]));
    assert!(e.contains("/graphs/infinite/coulomb") && e.contains(&format!("record {} ({})", q - 20, ds.id(q))) && e.contains("shard-"), "{e}");
    let other = (0..10).find(|&q| ds.has(Modality::Crystal, q)).unwrap();
    ds.assemble(Modality::Crystal, &[other]).unwrap();
    // A fresh load refuses both shards' corrupt chunks.
    let e = err(Dataset::load(&paths));
    assert!(e.contains("/dos/densities") || e.contains("/graphs/infinite/coulomb"), "{e}");
}

/// The benchmark (`multimat bench stream`) at a tiny size: it generates its sets, runs both
/// modes in their own processes and tabulates them; the streamed rank holds fewer bytes per
/// record and its cache stays within its bound. No time or RSS is asserted.
#[test]
fn stream_bench_runs_both_modes_at_a_tiny_size() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_multimat"))
        .args(["bench", "stream", "--records", "24,48", "--grid", "8", "--batch", "8", "--steps", "3", "--compute-ms", "1", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let row = |n: &str, mode: &str| -> Vec<f64> {
        let line = text.lines().find(|l| l.split_whitespace().take(2).eq([n, mode])).unwrap_or_else(|| panic!("no row {n} {mode}:\n{text}"));
        line.split_whitespace().skip(2).map(|f| f.parse().unwrap()).collect()
    };
    for n in ["24", "48"] {
        let (s, m) = (row(n, "streamed"), row(n, "in-memory"));
        // Columns: load_s step_ms step_max io_wait_ms peak_rss_MiB resident_B/record cache_peak.
        assert!(s[3] >= 0.0 && m[3] >= 0.0, "{text}");
        assert!(s[4] > 1.0 && m[4] > 1.0, "{text}");
        assert!(s[5] > 0.0 && s[5] < m[5], "streamed keeps fewer bytes per record:\n{text}");
        assert!(s[6] >= 1.0 && s[6] <= 64.0 && m[6] == 0.0, "{text}");
    }
    assert!(text.contains("streamed: peak RSS slope") && text.contains("in-memory: peak RSS slope"), "{text}");
}
