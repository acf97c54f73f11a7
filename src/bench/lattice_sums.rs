//! Throughput measurement of the lattice sums (`multimat bench lattice-sums`): a 40-atom cell
//! (1,600 pairs) and a directory of structures, each on one thread and on all cores, with the
//! plain-cosine reciprocal path timed as the in-run peer of the structure-factor path, and the
//! extrapolation to a Materials-Project-sized ingest. Numbers are printed, never asserted.

use crate::crystal::lattice::{sub, Cell};
use crate::crystal::lattice_sums::{all_pair_sums, LatticeSumPlan};
use crate::crystal::{build_infinite_edges, GraphParams};
use crate::material::Structure;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::Instant;

/// SrTiO₃ (cubic perovskite, a = 3.905 Å) as a 2×2×2 supercell: 40 atoms, 1,600 ordered pairs.
pub fn srtio3_2x2x2() -> Structure {
    let a = 3.905;
    let basis: [(u8, [f64; 3]); 5] = [(38, [0.0, 0.0, 0.0]), (22, [0.5, 0.5, 0.5]), (8, [0.5, 0.5, 0.0]), (8, [0.5, 0.0, 0.5]), (8, [0.0, 0.5, 0.5])];
    let mut s = Structure { lattice: [[2.0 * a, 0.0, 0.0], [0.0, 2.0 * a, 0.0], [0.0, 0.0, 2.0 * a]], species: vec![], frac_coords: vec![] };
    for x in 0..2 {
        for y in 0..2 {
            for z in 0..2 {
                for (el, f) in basis {
                    s.species.push(el);
                    s.frac_coords.push([(f[0] + x as f64) / 2.0, (f[1] + y as f64) / 2.0, (f[2] + z as f64) / 2.0]);
                }
            }
        }
    }
    s
}

fn pool(threads: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().context("building a rayon pool")
}

/// Best of `repeats` wall times (s) of `f`.
fn best_of(repeats: usize, mut f: impl FnMut()) -> f64 {
    (0..repeats.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Options of `multimat bench lattice-sums`.
#[derive(clap::Args, Debug)]
pub struct LatticeSumBenchArgs {
    /// Directory of pymatgen Structure JSON files (e.g. ../shared/data/mp-multimodal/structures).
    #[arg(long)]
    pub structures: Option<PathBuf>,
    /// Timing repeats (best of).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Cores of the node in the extrapolation.
    #[arg(long, default_value_t = 32)]
    pub node_cores: usize,
    /// Crystals in the extrapolation (Materials Project size).
    #[arg(long, default_value_t = 154_000.0)]
    pub crystals: f64,
    /// Mean ordered pairs (sites²) per crystal in the extrapolation.
    #[arg(long, default_value_t = 2_000.0)]
    pub mean_pairs: f64,
}

/// Run the benchmark and print the report to stdout.
pub fn run(opts: LatticeSumBenchArgs) -> Result<()> {
    let params = GraphParams::default();
    let cores = rayon::current_num_threads();
    let single = pool(1)?;
    let all = pool(cores)?;
    println!("lattice sums (Coulomb + London + Pauli per ordered pair), tolerance {:.0e}, {cores} cores here", params.lattice_sum_tolerance);

    // 40-atom cell.
    let s40 = srtio3_2x2x2();
    let pairs40 = (s40.num_sites() * s40.num_sites()) as f64;
    let cell = Cell::new(&s40)?;
    let plan = LatticeSumPlan::new(&cell, params.pauli_alpha_for_volume(cell.volume), true, params.lattice_sum_tolerance);
    println!(
        "40-atom SrTiO3 2x2x2 (V = {:.1} Å³): {} real-space translations, {} half-space k vectors per pair (reference: 342 translations per sum)",
        cell.volume,
        plan.num_real_translations(),
        plan.num_kvecs()
    );
    let t1 = single.install(|| best_of(opts.repeats, || drop(build_infinite_edges(&s40, &params).unwrap())));
    let tn = all.install(|| best_of(opts.repeats, || drop(build_infinite_edges(&s40, &params).unwrap())));
    // Peer in the same run, same work (plan + every pair, one thread, no validation): the
    // reciprocal part with one cosine per k instead of per-atom structure factors.
    let alpha = params.pauli_alpha_for_volume(cell.volume);
    let make_plan = || LatticeSumPlan::new(&cell, alpha, true, params.lattice_sum_tolerance);
    let n = cell.num_sites();
    let fast = single.install(|| best_of(opts.repeats, || drop(std::hint::black_box(all_pair_sums(&cell, &make_plan())))));
    let plain = single.install(|| {
        best_of(opts.repeats, || {
            let plan = make_plan();
            let sums: Vec<_> = (0..n * n).map(|e| plan.pair_sums(sub(cell.cart[e % n], cell.cart[e / n]), e / n == e % n)).collect();
            std::hint::black_box(sums);
        })
    });
    println!("  1 thread : {:>10.0} pairs/s  {:>7.2} µs/pair  ({:.1} ms per cell)", pairs40 / t1, t1 / pairs40 * 1e6, t1 * 1e3);
    println!("  {cores} threads: {:>10.0} pairs/s  {:>7.2} µs/pair  (speed-up {:.2}x)", pairs40 / tn, tn / pairs40 * 1e6, t1 / tn);
    println!(
        "  peer, 1 thread: structure factors {:.2} µs/pair vs plain cosines {:.2} µs/pair ({:.2}x)",
        fast / pairs40 * 1e6,
        plain / pairs40 * 1e6,
        plain / fast
    );

    // Directory of structures.
    let mut per_pair_single = t1 / pairs40;
    if let Some(dir) = opts.structures.as_deref() {
        let mut files: Vec<_> = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "json")).collect();
        files.sort();
        let structures: Vec<Structure> = files.iter().map(|p| crate::io::read_structure(p)).collect::<Result<_>>()?;
        let pairs: f64 = structures.iter().map(|s| (s.num_sites() * s.num_sites()) as f64).sum();
        let run = |s: &Structure| drop(build_infinite_edges(s, &params).unwrap());
        // One thread: structures in sequence. All cores: structures in parallel (each also
        // parallel over pairs inside) — what an ingest does.
        let t1 = single.install(|| best_of(opts.repeats, || structures.iter().for_each(run)));
        let tn = all.install(|| {
            best_of(opts.repeats, || {
                use rayon::prelude::*;
                structures.par_iter().for_each(run)
            })
        });
        println!("{} structures from {} ({} pairs, mean {:.1} sites):", structures.len(), dir.display(), pairs, structures.iter().map(|s| s.num_sites()).sum::<usize>() as f64 / structures.len().max(1) as f64);
        println!("  1 thread : {:>10.0} pairs/s  {:>7.2} µs/pair  {:>7.2} ms/structure", pairs / t1, t1 / pairs * 1e6, t1 / structures.len() as f64 * 1e3);
        println!("  {cores} threads: {:>10.0} pairs/s  {:>7.2} µs/pair  (speed-up {:.2}x)", pairs / tn, tn / pairs * 1e6, t1 / tn);
        per_pair_single = per_pair_single.max(t1 / pairs);
    }

    // Extrapolation: the slower of the measured single-thread per-pair times, perfect scaling
    // over the node's cores (structures are independent).
    let total_pairs = opts.crystals * opts.mean_pairs;
    let seconds = total_pairs * per_pair_single / opts.node_cores as f64;
    println!(
        "extrapolation: {:.0} crystals × {:.0} pairs each = {:.2e} pairs × {:.2} µs/pair / {} cores ≈ {:.1} min on one node",
        opts.crystals,
        opts.mean_pairs,
        total_pairs,
        per_pair_single * 1e6,
        opts.node_cores,
        seconds / 60.0
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn srtio3_supercell_has_40_distinct_atoms() {
        let s = super::srtio3_2x2x2();
        assert_eq!(s.num_sites(), 40);
        assert!(crate::crystal::build_infinite_edges(&s, &Default::default()).is_ok());
    }
}
