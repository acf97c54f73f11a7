//! Material discovery via latent-space similarity (paper Fig. 3B, Equation 5).
//!
//! Held-out DOS spectra are the *targets*; training-split crystals are the *candidates*. Each
//! target's DOS embedding is compared with every candidate's crystal embedding by cosine
//! similarity (the screen's exact top-k, `crate::screen`), and for n = 1…n_max the best of the n
//! nearest candidates is scored by the normalised MAE of Equation 5:
//!
//! ```text
//!   nMAE = ∫_{lo}^{hi} |ρ_target(E) − ρ_candidate(E)| dE  /  ∫_{lo}^{hi} ρ_target(E) dE
//! ```
//!
//! over the window (−5, +5) eV around the Fermi level, both spectra linearly interpolated onto one
//! equispaced grid (the paper's procedure) and integrated with the trapezoid rule. The window is
//! never extrapolated: a spectrum that does not cover it is excluded (and counted), as is a target
//! whose integral over the window is not positive (Equation 5 is undefined for it).
//!
//! The random baseline answers "does the model beat chance?": the expected best-of-n nMAE when
//! the n candidates are drawn uniformly at random without replacement. For each target it is
//! computed exactly over a seeded uniform sample ("pool") of candidates — a uniform n-subset of a
//! uniform pool is a uniform n-subset of all candidates, so the estimate is unbiased, and it is the
//! exact expectation whenever the pool holds every candidate.

use super::report::{DiscoveryCandidate, DiscoveryReport, DiscoveryTarget};
use crate::loss::Modality;
use crate::screen::{topk_over_range, EmbeddingMatrix, ScreenConfig};
use crate::train::dataset::Dataset;
use crate::train::model::MultiMatModel;
use anyhow::{bail, ensure, Context, Result};
use rand::SeedableRng;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;

/// Energies within this distance (eV) outside a spectrum's range still count as covered (the
/// end value is used): f32 energies that should end exactly at the window edge may miss it by
/// rounding.
const COVER_TOLERANCE_EV: f64 = 1e-4;

/// One density of states: energies relative to the Fermi level (eV, strictly increasing) and
/// densities at those energies.
#[derive(Clone, Copy, Debug)]
pub struct DosCurve<'a> {
    pub energies: &'a [f32],
    pub densities: &'a [f32],
}

/// The common equispaced grid over the comparison window.
#[derive(Clone, Debug, PartialEq)]
pub struct NmaeGrid {
    pub lo: f64,
    pub hi: f64,
    /// Grid points including both ends (≥ 2).
    pub points: usize,
}

impl NmaeGrid {
    /// The paper's window (−5, +5) eV with 1001 points (0.01 eV spacing, finer than any MP DOS).
    pub fn paper() -> NmaeGrid {
        NmaeGrid { lo: -5.0, hi: 5.0, points: 1001 }
    }

    pub fn new(lo: f64, hi: f64, points: usize) -> Result<NmaeGrid> {
        ensure!(lo.is_finite() && hi.is_finite() && lo < hi, "energy window ({lo}, {hi}) eV must be finite with lo < hi");
        ensure!(points >= 2, "the nMAE grid needs at least 2 points, got {points}");
        Ok(NmaeGrid { lo, hi, points })
    }

    pub fn step(&self) -> f64 {
        (self.hi - self.lo) / (self.points - 1) as f64
    }

    /// Energy of grid point `i`.
    pub fn energy(&self, i: usize) -> f64 {
        if i + 1 == self.points {
            self.hi // exact end point, whatever the rounding of lo + i·step
        } else {
            self.lo + i as f64 * self.step()
        }
    }
}

/// Linear interpolation of `curve` onto `grid`. Errors (never extrapolates): mismatched lengths,
/// fewer than 2 points, non-finite or non-increasing energies, non-finite densities, a range that
/// does not cover the window.
pub fn resample(curve: DosCurve, grid: &NmaeGrid) -> Result<Vec<f64>> {
    let (e, rho) = (curve.energies, curve.densities);
    ensure!(e.len() == rho.len(), "DOS has {} energies but {} densities", e.len(), rho.len());
    ensure!(e.len() >= 2, "DOS has {} point(s); interpolation needs at least 2", e.len());
    for i in 0..e.len() {
        ensure!(e[i].is_finite() && rho[i].is_finite(), "DOS point {i} is not finite (E = {}, ρ = {})", e[i], rho[i]);
        ensure!(i == 0 || e[i] > e[i - 1], "DOS energies are not strictly increasing at point {i} ({} after {})", e[i], e[i - 1]);
    }
    let (first, last) = (e[0] as f64, e[e.len() - 1] as f64);
    if first > grid.lo + COVER_TOLERANCE_EV || last < grid.hi - COVER_TOLERANCE_EV {
        bail!(
            "DOS covers [{first:.3}, {last:.3}] eV, which does not contain the window [{}, {}] eV (no extrapolation)",
            grid.lo,
            grid.hi
        );
    }
    let mut out = Vec::with_capacity(grid.points); // (G,)
    let mut seg = 0usize; // e[seg] ≤ x < e[seg + 1] (merge walk: the grid is increasing)
    for i in 0..grid.points {
        let x = grid.energy(i).clamp(first, last);
        while seg + 2 < e.len() && (e[seg + 1] as f64) <= x {
            seg += 1;
        }
        let (x0, x1) = (e[seg] as f64, e[seg + 1] as f64);
        let t = ((x - x0) / (x1 - x0)).clamp(0.0, 1.0);
        out.push(rho[seg] as f64 + t * (rho[seg + 1] as f64 - rho[seg] as f64));
    }
    Ok(out)
}

/// Trapezoid rule for samples `y` at spacing `step`.
pub fn trapezoid(y: &[f64], step: f64) -> f64 {
    match y.len() {
        0 | 1 => 0.0,
        n => step * (y[1..n - 1].iter().sum::<f64>() + 0.5 * (y[0] + y[n - 1])),
    }
}

/// Equation 5 for two spectra already on the same grid of spacing `step`.
pub fn nmae_on_grid(target: &[f64], candidate: &[f64], step: f64) -> Result<f64> {
    ensure!(target.len() == candidate.len(), "grids differ: {} vs {} points", target.len(), candidate.len());
    let area = trapezoid(target, step);
    ensure!(
        area > 0.0 && area.is_finite(),
        "the target DOS integrates to {area} over the window; Equation 5 divides by it, so it must be positive"
    );
    let diff: Vec<f64> = target.iter().zip(candidate).map(|(t, c)| (t - c).abs()).collect(); // (G,)
    Ok(trapezoid(&diff, step) / area)
}

/// Equation 5: normalised MAE between a target and a candidate DOS over `grid`'s window.
pub fn nmae(target: DosCurve, candidate: DosCurve, grid: &NmaeGrid) -> Result<f64> {
    let t = resample(target, grid).context("target DOS")?;
    let c = resample(candidate, grid).context("candidate DOS")?;
    nmae_on_grid(&t, &c, grid.step())
}

/// Best (lowest) nMAE among the first n candidates, for n = 1…len: a running minimum.
pub fn best_of_n(nmae_in_rank_order: &[f64]) -> Vec<f64> {
    let mut best = f64::INFINITY;
    nmae_in_rank_order
        .iter()
        .map(|&v| {
            best = best.min(v);
            best
        })
        .collect()
}

/// Expected minimum of n values drawn uniformly without replacement from `pool`, for
/// n = 1…n_max (n_max ≤ pool size). With the pool sorted ascending x₁ ≤ … ≤ x_M, the minimum is
/// x_j with probability C(M−j, n−1)/C(M, n); these are built by the ratio
/// p_{j+1}/p_j = (M−j−n+1)/(M−j) from p₁ = n/M, so no binomial overflows.
pub fn expected_best_of_random(pool: &[f64], n_max: usize) -> Result<Vec<f64>> {
    let m = pool.len();
    ensure!(n_max <= m, "cannot draw {n_max} candidates from a pool of {m}");
    ensure!(pool.iter().all(|v| v.is_finite()), "non-finite nMAE in the random pool");
    let mut sorted = pool.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let mut out = Vec::with_capacity(n_max);
    for n in 1..=n_max {
        let mut p = n as f64 / m as f64;
        let mut e = 0.0;
        for (j0, &x) in sorted.iter().enumerate().take(m - n + 1) {
            e += p * x;
            let j = j0 + 1; // 1-based index of x
            if j < m {
                p *= (m + 1 - j - n) as f64 / (m - j) as f64; // m + 1 − j ≥ n here
            }
        }
        out.push(e);
    }
    Ok(out)
}

/// Settings of a discovery evaluation.
#[derive(Clone, Debug)]
pub struct DiscoveryOptions {
    pub n_max: usize,
    pub grid: NmaeGrid,
    /// Candidates per target in the random baseline's pool (all of them when there are fewer).
    pub random_pool: usize,
    /// Seed of the random baseline's pools.
    pub seed: u64,
    pub progress: bool,
}

/// Records set aside by a discovery run, with the first reason for each kind (for the user).
#[derive(Debug, Default)]
pub struct Exclusions {
    pub targets_without_dos: usize,
    pub targets_bad_dos: Vec<(String, String)>,
    pub candidates_without_crystal_or_dos: usize,
    pub candidates_bad_dos: Vec<(String, String)>,
}

/// A finished discovery evaluation.
pub struct DiscoveryRun {
    pub report: DiscoveryReport,
    pub excluded: Exclusions,
}

/// Resample a record's DOS onto the grid.
fn record_dos(ds: &Dataset, r: usize, grid: &NmaeGrid) -> Result<Vec<f64>> {
    match ds.assemble(Modality::Dos, &[r])? {
        crate::model::ModalityBatch::Dos(b) => resample(DosCurve { energies: &b.energies, densities: &b.densities }, grid),
        _ => unreachable!("assemble(Dos) returns a DOS batch"),
    }
}

/// Seed of target `id`'s random pool: independent of the order of targets.
fn pool_seed(seed: u64, id: &str) -> u64 {
    let h = Sha256::digest(format!("discovery-random:{seed}:{id}").as_bytes());
    u64::from_le_bytes(h[..8].try_into().expect("8 bytes"))
}

/// Run the discovery evaluation: `targets` (records; those with a usable DOS are kept) against
/// `candidates` (records with a crystal and a usable DOS are kept).
pub fn run_discovery(model: &mut MultiMatModel, ds: &Dataset, targets: &[usize], candidates: &[usize], opts: &DiscoveryOptions) -> Result<DiscoveryRun> {
    for m in [Modality::Dos, Modality::Crystal] {
        ensure!(
            model.modalities.contains(&m),
            "the checkpoint has no {} encoder (it was trained on {}); discovery needs both dos and crystal",
            m.name(),
            model.modalities.iter().map(|m| m.name()).collect::<Vec<_>>().join(", ")
        );
    }
    ensure!(opts.n_max >= 1, "--n-max must be at least 1");
    let mut excluded = Exclusions::default();
    let grid = &opts.grid;

    let with_dos: Vec<usize> = targets.iter().copied().filter(|&r| ds.has(Modality::Dos, r)).collect();
    excluded.targets_without_dos = targets.len() - with_dos.len();
    let mut target_recs = Vec::new();
    let mut target_curves = Vec::new(); // per target (G,)
    for (r, res) in with_dos.iter().zip(with_dos.par_iter().map(|&r| record_dos(ds, r, grid).and_then(|c| {
        nmae_on_grid(&c, &c, grid.step())?; // rejects a non-positive target area up front
        Ok(c)
    })).collect::<Vec<_>>()) {
        match res {
            Ok(c) => {
                target_recs.push(*r);
                target_curves.push(c);
            }
            Err(e) => excluded.targets_bad_dos.push((ds.id(*r).to_string(), format!("{e:#}"))),
        }
    }

    let usable: Vec<usize> = candidates.iter().copied().filter(|&r| ds.has(Modality::Crystal, r) && ds.has(Modality::Dos, r)).collect();
    excluded.candidates_without_crystal_or_dos = candidates.len() - usable.len();
    let mut cand_recs = Vec::new();
    let mut cand_curves = Vec::new(); // per candidate (G,)
    for (r, res) in usable.iter().zip(usable.par_iter().map(|&r| record_dos(ds, r, grid)).collect::<Vec<_>>()) {
        match res {
            Ok(c) => {
                cand_recs.push(*r);
                cand_curves.push(c);
            }
            Err(e) => excluded.candidates_bad_dos.push((ds.id(*r).to_string(), format!("{e:#}"))),
        }
    }
    if target_recs.is_empty() {
        bail!(
            "no usable target: {} target record(s), {} without a DOS, {} whose DOS does not cover the window or integrates to zero",
            targets.len(),
            excluded.targets_without_dos,
            excluded.targets_bad_dos.len()
        );
    }
    ensure!(
        cand_recs.len() >= opts.n_max,
        "only {} usable candidate(s) (training records with a crystal and a DOS covering the window; {} lack one of them), \
         fewer than --n-max {}",
        cand_recs.len(),
        excluded.candidates_without_crystal_or_dos,
        opts.n_max
    );

    // Embed: targets' DOS, candidates' crystals.
    let d = model.embed_dim;
    let t_emb = super::checkpoint_model::embed_with_progress(model, ds, Modality::Dos, &target_recs, opts.progress, "target DOS")?;
    let c_emb = super::checkpoint_model::embed_with_progress(model, ds, Modality::Crystal, &cand_recs, opts.progress, "candidate crystals")?;
    let src = Path::new("<discovery>");
    let t_ids: Vec<String> = target_recs.iter().map(|&r| ds.id(r).to_string()).collect();
    let c_ids: Vec<String> = cand_recs.iter().map(|&r| ds.id(r).to_string()).collect();
    let queries = EmbeddingMatrix::from_raw(t_ids.clone(), t_emb, d, src)?;
    let cands = EmbeddingMatrix::from_raw(c_ids.clone(), c_emb, d, src)?;
    let hits = topk_over_range(&queries, &cands, 0..cands.len(), opts.n_max, &ScreenConfig::default())?;
    let by_id: HashMap<&str, usize> = c_ids.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();

    let step = grid.step();
    let pool = opts.random_pool.max(opts.n_max).min(cand_recs.len());
    let per_target: Vec<(DiscoveryTarget, Vec<f64>, Vec<f64>)> = (0..target_recs.len())
        .into_par_iter()
        .map(|t| -> Result<_> {
            let tc = &target_curves[t];
            let mut cands_out = Vec::with_capacity(opts.n_max);
            let mut errs = Vec::with_capacity(opts.n_max);
            for h in &hits[t] {
                let c = by_id[h.candidate_id.as_str()];
                let e = nmae_on_grid(tc, &cand_curves[c], step)?;
                errs.push(e);
                cands_out.push(DiscoveryCandidate { id: h.candidate_id.clone(), similarity: h.similarity as f64, nmae: e });
            }
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(pool_seed(opts.seed, &t_ids[t]));
            let picks = rand::seq::index::sample(&mut rng, cand_recs.len(), pool);
            let pool_errs: Vec<f64> = picks.iter().map(|c| nmae_on_grid(tc, &cand_curves[c], step)).collect::<Result<_>>()?;
            let random = expected_best_of_random(&pool_errs, opts.n_max)?;
            Ok((DiscoveryTarget { target_id: t_ids[t].clone(), candidates: cands_out }, best_of_n(&errs), random))
        })
        .collect::<Result<_>>()?;

    let nt = per_target.len() as f64;
    let mut mean = vec![0.0; opts.n_max];
    let mut random_mean = vec![0.0; opts.n_max];
    for (_, best, random) in &per_target {
        for n in 0..opts.n_max {
            mean[n] += best[n] / nt;
            random_mean[n] += random[n] / nt;
        }
    }
    let report = DiscoveryReport {
        n_max: opts.n_max,
        window_ev: [grid.lo, grid.hi],
        mean_best_nmae: mean,
        random_mean_best_nmae: random_mean,
        n_targets: per_target.len(),
        n_candidates: cand_recs.len(),
        targets: per_target.into_iter().map(|(t, _, _)| t).collect(),
    };
    Ok(DiscoveryRun { report, excluded })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve<'a>(e: &'a [f32], r: &'a [f32]) -> DosCurve<'a> {
        DosCurve { energies: e, densities: r }
    }

    #[test]
    fn identical_spectra_have_zero_nmae() {
        let e: Vec<f32> = (0..121).map(|i| -6.0 + 0.1 * i as f32).collect();
        let r: Vec<f32> = e.iter().map(|x| 1.0 + (x * 1.7).sin().abs()).collect();
        let v = nmae(curve(&e, &r), curve(&e, &r), &NmaeGrid::paper()).unwrap();
        assert_eq!(v, 0.0);
    }

    #[test]
    fn linear_candidate_against_constant_target_matches_the_hand_integral() {
        // ρ_t = 1 on a grid with 1 eV spacing; ρ_c = E + 5 on a grid offset by 0.5 eV (linear, so
        // interpolation is exact). ∫_{-5}^{5} |1 − (E + 5)| dE = ∫|E + 4| = 0.5 + 40.5 = 41;
        // ∫ρ_t = 10 ⇒ nMAE = 4.1. The kink at E = −4 is a grid point, so the trapezoid is exact.
        let et: Vec<f32> = (-6..=6).map(|i| i as f32).collect();
        let rt = vec![1.0f32; et.len()];
        let ec: Vec<f32> = (0..13).map(|i| -5.5 + i as f32).collect();
        let rc: Vec<f32> = ec.iter().map(|x| x + 5.0).collect();
        let v = nmae(curve(&et, &rt), curve(&ec, &rc), &NmaeGrid::paper()).unwrap();
        assert!((v - 4.1).abs() < 1e-9, "{v}");
    }

    #[test]
    fn coarse_candidate_is_interpolated_between_its_own_points() {
        // ρ_c alternates 0, 1 at E = −5.5, −4.5, …, 5.5 (a triangle wave once interpolated);
        // ρ_t = 2 everywhere, so |ρ_t − ρ_c| = 2 − ρ_c. ∫ρ_c over [−5, 5]: [−5, −4.5] rises
        // 0.5 → 1 (0.375), nine full segments from −4.5 to 4.5 (0.5 each, 4.5), [4.5, 5] rises
        // 0 → 0.5 (0.125); total 5.0. nMAE = (20 − 5) / 20 = 0.75.
        let et = [-7.0f32, 7.0];
        let rt = [2.0f32, 2.0];
        let ec: Vec<f32> = (0..12).map(|i| -5.5 + i as f32).collect();
        let rc: Vec<f32> = (0..12).map(|i| (i % 2) as f32).collect();
        let v = nmae(curve(&et, &rt), curve(&ec, &rc), &NmaeGrid::paper()).unwrap();
        assert!((v - 0.75).abs() < 1e-9, "{v}");
        // Two far-apart knots: ρ_c = E + 6 between (−6, 0) and (10, 16); ρ_t = 20. Linear
        // interpolation gives ∫(20 − E − 6) = 200 − 60 = 140 over [−5, 5], nMAE 0.7 (nearest-knot
        // lookup would give (7·20 + 3·4) / 200 = 0.76).
        let v = nmae(curve(&[-7.0, 7.0], &[20.0, 20.0]), curve(&[-6.0, 10.0], &[0.0, 16.0]), &NmaeGrid::paper()).unwrap();
        assert!((v - 0.7).abs() < 1e-9, "{v}");
        // Swapping roles is a different quantity (normalised by the other area): ∫|ρ_c − 2| / 5.
        let w = nmae(curve(&ec, &rc), curve(&et, &rt), &NmaeGrid::paper()).unwrap();
        assert!((w - 15.0 / 5.0).abs() < 1e-9, "{w}");
    }

    #[test]
    fn zero_target_area_uncovered_window_and_nan_are_clear_errors() {
        let e: Vec<f32> = (0..21).map(|i| -10.0 + i as f32).collect();
        let zero = vec![0.0f32; 21];
        let one = vec![1.0f32; 21];
        let err = nmae(curve(&e, &zero), curve(&e, &one), &NmaeGrid::paper()).unwrap_err();
        assert!(format!("{err:#}").contains("integrates to 0"), "{err:#}");
        let short: Vec<f32> = (0..9).map(|i| -10.0 + i as f32).collect(); // ends at −2 eV
        let err = nmae(curve(&e, &one), curve(&short, &one[..9]), &NmaeGrid::paper()).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("candidate DOS") && msg.contains("does not contain the window"), "{msg}");
        let mut bad = one.clone();
        bad[10] = f32::NAN;
        let err = nmae(curve(&e, &bad), curve(&e, &one), &NmaeGrid::paper()).unwrap_err();
        assert!(format!("{err:#}").contains("point 10 is not finite"), "{err:#}");
        assert!(NmaeGrid::new(5.0, -5.0, 100).is_err());
    }

    #[test]
    fn best_of_n_is_a_running_minimum() {
        let b = best_of_n(&[0.7, 0.9, 0.4, 0.5, 0.1, 0.3]);
        assert_eq!(b, vec![0.7, 0.7, 0.4, 0.4, 0.1, 0.1]);
        assert!(b.windows(2).all(|w| w[1] <= w[0]));
    }

    #[test]
    fn expected_random_best_matches_enumeration_of_all_subsets() {
        let pool = [0.9, 0.2, 0.55, 0.7, 0.31, 1.4];
        let m = pool.len();
        let got = expected_best_of_random(&pool, m).unwrap();
        for n in 1..=m {
            // Brute force: mean of the minimum over every n-subset (bitmask enumeration).
            let (mut sum, mut count) = (0.0, 0usize);
            for mask in 0u32..(1 << m) {
                if mask.count_ones() as usize == n {
                    let min = (0..m).filter(|&i| mask >> i & 1 == 1).map(|i| pool[i]).fold(f64::INFINITY, f64::min);
                    sum += min;
                    count += 1;
                }
            }
            assert!((got[n - 1] - sum / count as f64).abs() < 1e-12, "n = {n}: {} vs {}", got[n - 1], sum / count as f64);
        }
        assert!((got[0] - pool.iter().sum::<f64>() / m as f64).abs() < 1e-12, "n = 1 is the pool mean");
        assert_eq!(got[m - 1], 0.2, "n = M is the pool minimum");
        assert!(got.windows(2).all(|w| w[1] <= w[0]), "non-increasing in n: {got:?}");
        assert!(expected_best_of_random(&pool, m + 1).is_err());
    }
}
