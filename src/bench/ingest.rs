//! `multimat bench ingest --mp-multimodal DIR`: records/s for parsing + preprocessing every
//! modality, shard write time, and bulk shard read throughput in records/s.

use crate::ingest::{plan, process_input, Extras, Source};
use crate::shard::{LoadOptions, ShardMeta, ShardReader, ShardWriter, TargetSpec};
use anyhow::{Context, Result};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct IngestArgs {
    /// A directory in the mp-multimodal layout.
    #[arg(long, value_name = "DIR")]
    pub mp_multimodal: PathBuf,
    /// Robocrystallographer descriptions to include (JSON lines).
    #[arg(long, value_name = "FILE.jsonl")]
    pub texts: Option<PathBuf>,
    /// Also build crystal graphs (needs the crystal module).
    #[arg(long)]
    pub graphs: bool,
    /// Timed repetitions of each measurement (the best is reported).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Records in the shard used for the read benchmark (the ingested records, repeated).
    #[arg(long, default_value_t = 1024)]
    pub read_records: usize,
}


/// Best wall time of `repeat` runs, the CPU time of that run, and the last result.
fn best_of<T>(repeat: usize, mut f: impl FnMut() -> Result<T>) -> Result<(f64, T, f64)> {
    let (mut best, mut best_cpu) = (f64::INFINITY, f64::NAN);
    let mut out = None;
    for _ in 0..repeat.max(1) {
        let (t, c) = (Instant::now(), crate::bench::process_cpu_seconds().unwrap_or(f64::NAN));
        let v = f()?;
        let wall = t.elapsed().as_secs_f64();
        if wall < best {
            best = wall;
            best_cpu = crate::bench::process_cpu_seconds().unwrap_or(f64::NAN) - c;
        }
        out = Some(v);
    }
    Ok((best, out.expect("at least one repetition"), best_cpu))
}

/// The peer: h5py reading every dataset of the same shard whole, timed inside Python.
const H5PY_READ_ALL: &str = r#"
import sys, time, h5py
best = (1e9, 0)
for _ in range(int(sys.argv[2])):
    t, c = time.perf_counter(), time.process_time()
    with h5py.File(sys.argv[1], "r") as f:
        f.visititems(lambda n, o: o[...] if isinstance(o, h5py.Dataset) else None)
    best = min(best, (time.perf_counter() - t, time.process_time() - c))
print(best[0], best[1])
"#;

fn h5py_peer(path: &std::path::Path, repeat: usize) -> Option<(f64, f64)> {
    let python = std::env::var_os("MULTIMAT_PYTHON").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".cache/venv/bin/python"));
    let out = std::process::Command::new(python).arg("-c").arg(H5PY_READ_ALL).arg(path).arg(repeat.to_string()).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let mut it = text.split_whitespace().filter_map(|x| x.parse::<f64>().ok());
    Some((it.next()?, it.next()?))
}

pub fn run(a: IngestArgs) -> Result<()> {
    let extras = Extras { texts: a.texts.clone(), ..Default::default() };
    let plan = plan(&Source::MpMultimodal { dir: a.mp_multimodal.clone() }, &extras)?;
    let mut targets = BTreeMap::new();
    for i in &plan.inputs {
        for (k, v) in &i.record.targets {
            targets.entry(k.clone()).or_insert(TargetSpec { width: v.len(), units: String::new() });
        }
    }
    let meta = ShardMeta { targets, text_embedding: plan.embedding.clone(), ..ShardMeta::default() };
    let n = plan.inputs.len();
    println!("bench ingest: {} inputs from {}, {} rayon threads", n, a.mp_multimodal.display(), rayon::current_num_threads());

    // Parse + preprocess, parallel as the ingest runs it, and on one thread for reference.
    let (t_par, records, cpu_par) = best_of(a.repeat, || {
        let r: Vec<_> = plan.inputs.par_iter().map(|i| process_input(i, &meta, a.graphs)).collect();
        Ok(r)
    })?;
    let rejects = records.iter().filter(|r| r.is_err()).count();
    let records: Vec<_> = records.into_iter().filter_map(|r| r.ok()).collect();
    let (t_one, _, _) = best_of(1, || {
        Ok(plan.inputs.iter().map(|i| process_input(i, &meta, a.graphs)).count())
    })?;
    println!(
        "  parse+preprocess (all modalities{}): {:.1} records/s on {} threads, {:.1} records/s on 1 thread, {:.1} records per CPU-second ({rejects} rejects)",
        if a.graphs { " + graphs" } else { "" },
        n as f64 / t_par,
        rayon::current_num_threads(),
        n as f64 / t_one,
        n as f64 / cpu_par
    );

    // A full-size shard for the read benchmark: the ingested records repeated.
    anyhow::ensure!(!records.is_empty(), "no record was ingested; nothing to benchmark");
    let big: Vec<_> = (0..a.read_records)
        .map(|k| {
            let mut r = records[k % records.len()].clone();
            r.id = format!("{}-copy{}", r.id, k / records.len());
            r
        })
        .collect();
    let dir = tempfile_dir()?;
    let path = dir.join("bench-shard.h5");
    let writer = ShardWriter::new(meta);
    let (t_write, _, _) = best_of(a.repeat, || writer.write(&path, &big))?;
    let size = std::fs::metadata(&path)?.len();
    println!(
        "  shard write: {} records in {:.3} s ({:.0} records/s), {:.1} MB on disk ({:.0} kB/record)",
        big.len(),
        t_write,
        big.len() as f64 / t_write,
        size as f64 / 1e6,
        size as f64 / 1e3 / big.len() as f64
    );
    for (label, verify) in [("bulk load", false), ("bulk load + verify sha256", true)] {
        let (t, data, cpu) = best_of(a.repeat, || ShardReader::open(&path)?.load(LoadOptions { verify_checksums: verify }))?;
        println!(
            "  {label}: {:.0} records/s ({:.3} s for {} records), {:.0} records per CPU-second",
            data.len() as f64 / t,
            t,
            data.len(),
            data.len() as f64 / cpu
        );
    }
    match h5py_peer(&path, a.repeat) {
        Some((t, cpu)) => println!(
            "  peer, h5py reading every dataset whole: {:.0} records/s ({t:.3} s), {:.0} records per CPU-second",
            big.len() as f64 / t,
            big.len() as f64 / cpu
        ),
        None => println!("  peer h5py: not available (set MULTIMAT_PYTHON to a python with h5py)"),
    }
    let (t_val, v, _) = best_of(1, || Ok(crate::shard::validate(&path)))?;
    println!("  validate: {:.0} records/s ({} violations)", big.len() as f64 / t_val, v.len());
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

/// A fresh scratch directory under the system temp dir.
fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("multimat-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
