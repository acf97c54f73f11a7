//! UMAP (`multimat::plot::umap`): the fuzzy-set σ solves its defining equation, the a/b fit is
//! the least-squares optimum, the kNN graph is exact, layouts are reproducible, and on clustered
//! data the layout is trustworthy (far above a random layout) and separates the clusters.

use multimat::plot::umap::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[test]
fn sigma_solves_the_smooth_knn_equation() {
    // For several distance profiles, Σ_j exp(−max(0, d_j − ρ)/σ) must equal log2(k) with k the
    // neighbourhood size counting the point itself (14 others + self = 15).
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for trial in 0..20 {
        let mut d: Vec<f32> = (0..14).map(|_| rng.random_range(0.05f32..1.5)).collect();
        if trial % 5 == 0 {
            d[3] = d[0]; // ties
        }
        d.sort_by(f32::total_cmp);
        let target = 15f64.log2();
        let (rho, sigma) = smooth_knn_sigma(&d, target, 0.5);
        assert_eq!(rho, d[0] as f64, "ρ is the nearest positive distance");
        let psum: f64 = d.iter().map(|&x| (-((x as f64 - rho).max(0.0)) / sigma).exp()).sum();
        assert!((psum - target).abs() < 1e-4, "trial {trial}: Σ = {psum}, log2 15 = {target}, σ = {sigma}");
    }
    // A zero distance (duplicate point) is skipped for ρ.
    let d = [0.0f32, 0.2, 0.3, 0.5, 0.9];
    let (rho, _) = smooth_knn_sigma(&d, 6f64.log2(), 0.5);
    assert_eq!(rho, 0.2f32 as f64);
}

#[test]
fn ab_fit_is_the_least_squares_optimum_and_matches_umap_learn() {
    let (a, b) = fit_ab(0.1, 1.0);
    // umap-learn's find_ab_params(spread=1, min_dist=0.1) solves exactly this least-squares problem
    // (scipy curve_fit on the same 300-point grid) and prints a ≈ 1.577, b ≈ 0.895. Rather than
    // trusting that value alone, check first that (a, b) is a minimum of the residual: every small
    // step in a or b (or both) makes the fit worse.
    let r0 = ab_residual(a, b, 0.1, 1.0);
    for (da, db) in [(1e-3, 0.0), (-1e-3, 0.0), (0.0, 1e-3), (0.0, -1e-3), (1e-3, 1e-3), (-1e-3, -1e-3), (1e-3, -1e-3), (-1e-3, 1e-3)] {
        assert!(ab_residual(a + da, b + db, 0.1, 1.0) > r0, "(a, b) = ({a}, {b}) is not a minimum: step ({da}, {db}) lowers the residual");
    }
    assert!((a - 1.577).abs() < 5e-3 && (b - 0.895).abs() < 5e-3, "a = {a}, b = {b}");
    // And the fitted kernel is the shape min_dist asks for: ≈ 1 near 0, ≈ e^{-(x - 0.1)} far out.
    let f = |x: f64| 1.0 / (1.0 + a * x.powf(2.0 * b));
    assert!(f(0.05) > 0.9, "f(0.05) = {}", f(0.05));
    assert!((f(2.0) - (-1.9f64).exp()).abs() < 0.05, "f(2) = {}", f(2.0));
    // A larger min_dist flattens the kernel's core: a smaller a.
    let (a5, _) = fit_ab(0.5, 1.0);
    assert!(a5 < a, "min_dist 0.5 gives a = {a5}, not below {a}");
}

#[test]
fn knn_is_exact_against_brute_force() {
    let (data, _) = gaussian_blobs(3, 40, 16, 3);
    let unit = normalise_rows(&data, 16).unwrap();
    let n = unit.len() / 16;
    let knn = exact_knn_cosine(&unit, 16, 7);
    for i in 0..n {
        let mut all: Vec<(f64, usize)> = (0..n)
            .filter(|&j| j != i)
            .map(|j| {
                let s: f64 = (0..16).map(|c| unit[i * 16 + c] as f64 * unit[j * 16 + c] as f64).sum();
                (1.0 - s, j)
            })
            .collect();
        all.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
        for s in 0..7 {
            let got = knn.distances[i * 7 + s] as f64;
            assert!((got - all[s].0).abs() < 1e-5, "point {i} slot {s}: distance {got} vs {}", all[s].0);
        }
    }
}

#[test]
fn blobs_separate_and_layout_is_trustworthy() {
    let (data, label) = gaussian_blobs(4, 100, 32, 11);
    let params = UmapParams { seed: 5, n_epochs: Some(200), ..Default::default() };
    let layout = umap_cosine(&data, 32, &params).unwrap();
    let n = label.len();
    assert_eq!(layout.len(), 2 * n);
    let t = trustworthiness(&data, 32, &layout, 2, 10).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let random: Vec<f32> = (0..2 * n).map(|_| rng.random_range(-10.0f32..10.0)).collect();
    let t_random = trustworthiness(&data, 32, &random, 2, 10).unwrap();
    println!("trustworthiness k=10: UMAP {t:.4}, random layout {t_random:.4}");
    assert!(t > 0.9, "UMAP trustworthiness {t}");
    assert!(t > t_random + 0.2, "UMAP {t} not clearly above random {t_random}");
    // Each point's 10 nearest neighbours in 2-D come mostly from its own blob.
    let mut same = 0usize;
    for i in 0..n {
        let mut d: Vec<(f32, usize)> = (0..n)
            .filter(|&j| j != i)
            .map(|j| ((layout[2 * i] - layout[2 * j]).powi(2) + (layout[2 * i + 1] - layout[2 * j + 1]).powi(2), j))
            .collect();
        d.sort_by(|x, y| x.0.total_cmp(&y.0));
        same += d[..10].iter().filter(|(_, j)| label[*j] == label[i]).count();
    }
    let frac = same as f64 / (10 * n) as f64;
    assert!(frac > 0.95, "only {frac:.3} of 2-D neighbours share the blob");
}

#[test]
fn same_seed_same_layout_other_seed_differs() {
    let (data, _) = gaussian_blobs(2, 60, 8, 1);
    let p = UmapParams { seed: 3, n_epochs: Some(50), ..Default::default() };
    let a = umap_cosine(&data, 8, &p).unwrap();
    let b = umap_cosine(&data, 8, &p).unwrap();
    assert_eq!(a, b, "not reproducible with a fixed seed");
    let c = umap_cosine(&data, 8, &UmapParams { seed: 4, ..p }).unwrap();
    assert_ne!(a, c);
}

#[test]
fn bad_rows_are_errors_naming_the_row() {
    let mut data = vec![1.0f32; 5 * 4];
    data[2 * 4 + 1] = f32::NAN;
    let e = umap_cosine(&data, 4, &UmapParams::default()).unwrap_err().to_string();
    assert!(e.contains("row 2") && e.contains("NaN"), "{e}");
    let mut data = vec![1.0f32; 5 * 4];
    data[3 * 4..4 * 4].iter_mut().for_each(|x| *x = 0.0);
    let e = umap_cosine(&data, 4, &UmapParams::default()).unwrap_err().to_string();
    assert!(e.contains("row 3") && e.contains("zero"), "{e}");
    let e = umap_cosine(&[1.0, 0.0, 0.0, 1.0], 2, &UmapParams::default()).unwrap_err().to_string();
    assert!(e.contains("at least 3"), "{e}");
}
