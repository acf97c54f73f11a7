//! `multimat synth` / `approx::synth`: the size distribution it claims, valid shards and
//! manifest, physically sane structures, determinism across thread counts, and clear errors.

use multimat::approx::synth::{self, record_rng, synth_structure, SizeModel, SynthOptions, SYNTHETIC_EMBEDDING_MODEL};
use multimat::crystal::lattice::Cell;
use multimat::crystal::neighbors::neighbors_within;
use multimat::shard::{manifest::check_manifest, validate, ShardData};
use std::path::Path;
use std::process::Command;

fn small_options(n: usize, out: &Path) -> SynthOptions {
    let mut o = SynthOptions::new(n, out.to_path_buf());
    o.seed = 7;
    o.records_per_shard = 5;
    o.all_modalities = true;
    // Small cells keep the lattice sums quick in the test build; the size model itself is
    // tested on its own below.
    o.sizes = SizeModel { max_atoms: 16, ..SizeModel::default() };
    o
}

#[test]
fn atoms_per_cell_follow_the_stated_log_normal_and_atoms_keep_their_distance() {
    let sizes = SizeModel::default();
    let mut counts = Vec::new();
    let mut elements = 0usize;
    for i in 0..500 {
        let s = synth_structure(&mut record_rng(3, i), &sizes);
        let cell = Cell::new(&s).unwrap();
        // No two atoms (images included) closer than 1 Å.
        let close = neighbors_within(&cell, 0.999);
        assert!(close.iter().all(|l| l.is_empty()), "record {i}: atoms closer than 1 Å");
        let mut distinct = s.species.clone();
        distinct.sort_unstable();
        distinct.dedup();
        elements += distinct.len();
        counts.push(s.num_sites());
    }
    counts.sort_unstable();
    let median = counts[counts.len() / 2];
    let above_50 = counts.iter().filter(|&&n| n > 50).count() as f64 / counts.len() as f64;
    let ln: Vec<f64> = counts.iter().map(|&n| (n as f64).ln()).collect();
    let mean_ln = ln.iter().sum::<f64>() / ln.len() as f64;
    let sd_ln = (ln.iter().map(|x| (x - mean_ln).powi(2)).sum::<f64>() / ln.len() as f64).sqrt();
    // Median 10, σ(ln n) = 1: P(n > 50) = P(z > ln 5) = 5.4 %.
    assert!((8..=12).contains(&median), "median atoms/cell {median}");
    assert!((0.025..0.09).contains(&above_50), "share above 50 atoms {above_50}");
    assert!((0.85..1.15).contains(&sd_ln), "σ(ln n) = {sd_ln}");
    assert!(*counts.last().unwrap() <= sizes.max_atoms && counts[0] >= 1);
    assert!(*counts.last().unwrap() > 60, "no tail: max {}", counts.last().unwrap());
    // Ternaries dominate: 2/20/45/25/8 % shares give a mean of 3.2 elements (fewer in tiny cells).
    let mean_elements = elements as f64 / 500.0;
    assert!((2.6..3.5).contains(&mean_elements), "mean elements per material {mean_elements}");
}

#[test]
fn shards_validate_and_hold_sane_modalities() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("synth");
    let summary = synth::run(&small_options(12, &out)).unwrap();
    assert_eq!(summary.records, 12);
    assert_eq!(summary.shards.len(), 3);
    for shard in &summary.shards {
        let v = validate(shard);
        assert!(v.is_empty(), "{}: {v:?}", shard.display());
    }
    assert!(check_manifest(&summary.manifest).is_empty(), "{:?}", check_manifest(&summary.manifest));
    let data = ShardData::load(&summary.shards[0]).unwrap();
    assert_eq!(data.len(), 5);
    for i in 0..data.len() {
        let r = data.record(i);
        let s = r.structure.as_ref().unwrap();
        let electrons: f64 = s.species.iter().map(|&z| multimat::crystal::features::valence_electrons(z) as f64).sum();
        let rho = r.charge_density.as_ref().unwrap();
        assert_eq!(rho.len(), 32 * 32 * 32);
        let mean = rho.iter().map(|&x| x as f64).sum::<f64>() / rho.len() as f64;
        assert!((mean - electrons).abs() / electrons < 1e-4, "{}: density holds {mean} electrons, not {electrons}", r.id);
        assert!(rho.iter().all(|&x| x > 0.0));
        let dos = r.dos.as_ref().unwrap();
        assert_eq!(dos.energies.len(), 601);
        let step = (dos.energies[600] - dos.energies[0]) as f64 / 600.0;
        let below: f64 = dos.energies.iter().zip(&dos.densities).filter(|(e, _)| **e <= 0.0).map(|(_, d)| *d as f64 * step).sum();
        assert!((below - electrons / 2.0).abs() / electrons < 1e-3, "{}: {below} states below E_F", r.id);
        let text = r.text.as_ref().unwrap();
        // Random positions in a random cell: P1, or P-1 for a one-atom cell (a lattice point is
        // an inversion centre).
        let expected = if s.num_sites() == 1 { "triclinic P-1 space group" } else { "triclinic P1 space group" };
        assert!(text.contains(expected), "{text}");
        let emb = r.text_embedding.as_ref().unwrap();
        assert_eq!((emb.vector.len(), emb.model.as_str()), (768, SYNTHETIC_EMBEDDING_MODEL));
        let norm: f32 = emb.vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
        assert!(r.provenance.sources.values().all(|v| v.starts_with("synthetic:")));
        let g = r.graphs.as_ref().unwrap();
        assert_eq!(g.infinite.src.len(), s.num_sites() * s.num_sites());
    }
}

#[test]
fn same_seed_gives_byte_identical_shards_at_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let run_with = |threads: usize, name: &str, seed: u64| {
        let mut o = small_options(7, &dir.path().join(name));
        o.seed = seed;
        o.all_modalities = false; // MP's DOS/density shares: presence must be deterministic too
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| synth::run(&o)).unwrap()
    };
    let a = run_with(1, "a", 11);
    let b = run_with(2, "b", 11);
    let c = run_with(2, "c", 12);
    assert_eq!(a.shards.len(), 2);
    for (x, y) in a.shards.iter().zip(&b.shards) {
        assert_eq!(std::fs::read(x).unwrap(), std::fs::read(y).unwrap(), "{} differs from {}", x.display(), y.display());
    }
    assert_eq!(std::fs::read(&a.manifest).unwrap(), std::fs::read(&b.manifest).unwrap());
    assert_ne!(std::fs::read(&a.shards[0]).unwrap(), std::fs::read(&c.shards[0]).unwrap(), "another seed must give other records");
}

#[test]
fn switching_a_modality_off_leaves_the_other_modalities_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let mut with = small_options(3, &dir.path().join("with"));
    with.all_modalities = false;
    let mut without = small_options(3, &dir.path().join("without"));
    without.density = false;
    for i in 0..3 {
        let (a, b) = (synth::synth_record(&with, i).unwrap(), synth::synth_record(&without, i).unwrap());
        assert!(b.charge_density.is_none());
        assert_eq!((&a.structure, &a.text, &a.text_embedding), (&b.structure, &b.text, &b.text_embedding), "record {i}");
        if let Some(d) = &a.dos {
            assert_eq!(Some(d), b.dos.as_ref(), "record {i}");
        }
    }
}

#[test]
fn bad_arguments_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let e = synth::run(&small_options(0, &dir.path().join("zero"))).unwrap_err();
    assert!(e.to_string().contains("--n must be at least 1"), "{e}");
    let mut o = small_options(3, &dir.path().join("rps"));
    o.records_per_shard = 0;
    assert!(synth::run(&o).unwrap_err().to_string().contains("--records-per-shard"));
    // A directory that already holds a run is refused rather than mixed into.
    let out = dir.path().join("twice");
    synth::run(&small_options(2, &out)).unwrap();
    let e = synth::run(&small_options(2, &out)).unwrap_err();
    assert!(e.to_string().contains("already holds shards"), "{e}");

    let bin = env!("CARGO_BIN_EXE_multimat");
    let o = Command::new(bin).args(["synth", "--n", "0", "--out"]).arg(dir.path().join("cli")).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--n must be at least 1"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new(bin).args(["synth", "--n", "many", "--out", "x"]).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--n"));
}

#[test]
fn cli_writes_shards_without_density_and_reports_the_rate() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cli");
    let o = Command::new(env!("CARGO_BIN_EXE_multimat"))
        .args(["synth", "--n", "4", "--no-density", "--all-modalities", "--max-atoms", "8", "--threads", "2", "--quiet", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("4 records") && stdout.contains("0 with charge density") && stdout.contains("records/s"), "{stdout}");
    let shard = out.join("shard-r000-00000.h5");
    assert!(validate(&shard).is_empty());
    let data = ShardData::load(&shard).unwrap();
    assert!((0..4).all(|i| data.record(i).charge_density.is_none() && data.record(i).dos.is_some()));
}
