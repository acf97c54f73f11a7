//! 3-D BarlowTwins: hand-computed cases, the D²-only algorithm against a naive D³ reference
//! (with and without standardisation, masked rows), finite-difference gradients through the
//! standardisation, and the distributed shares.

mod loss_common;

use loss_common::{check_partition, poison_absent};
use multimat::engine::gradcheck::{check_gradient, random_vec};
use multimat::loss::barlow_twins::{barlow_twins_3d, STANDARDIZE_EPS};
use multimat::loss::{LossConfig, LossKind, Modality, ModalityEmbeddings, MultimodalLoss};

/// Supplemental Equation S3 with the D³ tensor materialised, f64: standardise each dimension
/// over the valid rows (biased variance + ε), C_ijk = (1/n) Σ_b za zb zc, then sum the three
/// kinds of entries with their targets and weights.
fn naive(x: [&[f32]; 3], p: [&[bool]; 3], d: usize, lambda: f64, standardize: bool) -> f64 {
    let idx: Vec<usize> = (0..p[0].len()).filter(|&r| p.iter().all(|m| m[r])).collect();
    let n = idx.len();
    if n < 2 {
        return 0.0;
    }
    let z: Vec<Vec<f64>> = x
        .iter()
        .map(|m| {
            let mut z = vec![0.0f64; n * d];
            for t in 0..d {
                let col: Vec<f64> = idx.iter().map(|&g| m[g * d + t] as f64).collect();
                let mean = col.iter().sum::<f64>() / n as f64;
                let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
                for b in 0..n {
                    z[b * d + t] = if standardize {
                        (col[b] - mean) / (var + STANDARDIZE_EPS).sqrt()
                    } else {
                        col[b]
                    };
                }
            }
            z
        })
        .collect();
    let mut loss = 0.0;
    for i in 0..d {
        for j in 0..d {
            for k in 0..d {
                let c: f64 = (0..n)
                    .map(|b| z[0][b * d + i] * z[1][b * d + j] * z[2][b * d + k])
                    .sum::<f64>()
                    / n as f64;
                loss += if i == j && j == k {
                    (1.0 - c).powi(2)
                } else if i == j || j == k || i == k {
                    (0.5 - c).powi(2)
                } else {
                    lambda * c * c
                };
            }
        }
    }
    loss
}

#[test]
fn hand_computed_one_dimensional_cases() {
    let p2 = [true, true];
    // n = 2, D = 1, x = (1, 3) in every modality: z = (−1, 1)/√(1+ε), C = ½(−1 + 1)/… = 0, L = 1.
    let x = [1.0f32, 3.0];
    let got = barlow_twins_3d(None, None, None, [&x, &x, &x], [&p2, &p2, &p2], 1, 0.0051, true, 0..2).loss;
    assert!((got - 1.0).abs() < 1e-9, "{got}");
    // n = 3, x = (0, 0, 3): mean 1, deviations (−1, −1, 2), var 2, z = (−1, −1, 2)/√2,
    // C = (1/3)(−1 − 1 + 8)/2^{3/2} = 1/√2, L = (1 − 1/√2)² (up to ε = 1e-5).
    let p3 = [true; 3];
    let x = [0.0f32, 0.0, 3.0];
    let got = barlow_twins_3d(None, None, None, [&x, &x, &x], [&p3, &p3, &p3], 1, 0.0051, true, 0..3).loss;
    let want = (1.0 - 0.5f64.sqrt()).powi(2);
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    // D = 2 without standardisation, n = 2: rows (1, 0) and (0, 1) in all three. C_iii = ½,
    // every other entry 0: L = 2·(1 − ½)² + 6·(½ − 0)² = 0.5 + 1.5 = 2 (no all-distinct entries).
    let x = [1.0f32, 0.0, 0.0, 1.0];
    let got = barlow_twins_3d(None, None, None, [&x, &x, &x], [&p2, &p2, &p2], 2, 0.0051, false, 0..2).loss;
    assert!((got - 2.0).abs() < 1e-6, "{got}");
}

#[test]
fn d_squared_algorithm_matches_naive_d_cubed() {
    let (b, d) = (11, 9);
    let pa: Vec<bool> = (0..b).map(|r| r != 4).collect();
    let pb = vec![true; b];
    let pc: Vec<bool> = (0..b).map(|r| r != 7).collect();
    let mut xa = random_vec(b * d, 1, 1.0);
    let xb = random_vec(b * d, 2, 1.0);
    let mut xc = random_vec(b * d, 3, 1.0);
    poison_absent(&mut xa, &pa, d);
    poison_absent(&mut xc, &pc, d);
    for (standardize, lambda) in [(true, 0.0051), (false, 0.0051), (true, 0.5)] {
        let got = barlow_twins_3d(
            None,
            None,
            None,
            [&xa, &xb, &xc],
            [&pa, &pb, &pc],
            d,
            lambda as f32,
            standardize,
            0..b,
        );
        let want = naive([&xa, &xb, &xc], [&pa, &pb, &pc], d, lambda, standardize);
        assert_eq!(got.valid_rows, b - 2);
        assert!(
            (got.loss - want).abs() < 1e-5 * want.abs().max(1.0),
            "std={standardize} λ={lambda}: {} vs {want}",
            got.loss
        );
    }
}

#[test]
fn gradients_match_finite_differences_through_standardisation() {
    let (b, d) = (6, 4);
    let pa = [true, true, false, true, true, true];
    let pb = [true; 6];
    let pc = [true, true, true, true, false, true];
    let ps: [&[bool]; 3] = [&pa, &pb, &pc];
    let xs = [
        random_vec(b * d, 4, 1.0),
        random_vec(b * d, 5, 1.0),
        random_vec(b * d, 6, 1.0),
    ];
    for standardize in [true, false] {
        let lambda = 0.3f32; // large enough that the off-diagonal path is checked too
        let mut g = [vec![0.0f32; b * d], vec![0.0f32; b * d], vec![0.0f32; b * d]];
        let [g0, g1, g2] = &mut g;
        barlow_twins_3d(
            Some(g0),
            Some(g1),
            Some(g2),
            [&xs[0], &xs[1], &xs[2]],
            ps,
            d,
            lambda,
            standardize,
            0..b,
        );
        assert!(
            g[0][2 * d..3 * d].iter().chain(&g[1][4 * d..5 * d]).all(|&v| v == 0.0),
            "rows invalid for the term get no gradient"
        );
        for m in 0..3 {
            let f = |y: &[f32]| {
                let mut ins = [xs[0].as_slice(), xs[1].as_slice(), xs[2].as_slice()];
                ins[m] = y;
                barlow_twins_3d(None, None, None, ins, ps, d, lambda, standardize, 0..b).loss
            };
            check_gradient(
                &format!("barlow d{m} std={standardize}"),
                &xs[m],
                &g[m],
                f,
                1e-3,
                2e-3,
                5e-3,
            );
        }
    }
    // One complete row: zero, no NaN.
    let one = [false, false, false, true, false, false];
    let mut g = [vec![1.0f32; b * d], vec![1.0f32; b * d], vec![1.0f32; b * d]];
    let [g0, g1, g2] = &mut g;
    let r = barlow_twins_3d(
        Some(g0),
        Some(g1),
        Some(g2),
        [&xs[0], &xs[1], &xs[2]],
        [&one, &pb, &pc],
        d,
        0.0051,
        true,
        0..b,
    );
    assert_eq!((r.loss, r.valid_rows), (0.0, 1));
    assert!(g.iter().flatten().all(|&v| v == 0.0));
}

#[test]
fn shares_over_row_partitions_add_up_to_full_loss_and_gradients() {
    let (b, d) = (17, 6);
    let p = [
        vec![true; b],
        (0..b).map(|r| r % 5 != 2).collect::<Vec<_>>(),
        vec![true; b],
    ];
    let mut xs = [
        random_vec(b * d, 7, 1.0),
        random_vec(b * d, 8, 1.0),
        random_vec(b * d, 9, 1.0),
    ];
    poison_absent(&mut xs[1], &p[1], d);
    let mods = [Modality::Crystal, Modality::Dos, Modality::Text];
    let inputs: Vec<ModalityEmbeddings> = (0..3)
        .map(|m| ModalityEmbeddings {
            modality: mods[m],
            data: &xs[m],
            present: &p[m],
        })
        .collect();
    let loss = MultimodalLoss::new(LossConfig::new(LossKind::BarlowTwins3d), &mods).unwrap();
    check_partition(&loss, &inputs, d, &[0..8, 8..b], 1e-5);
    check_partition(&loss, &inputs, d, &[0..3, 3..12, 12..b], 1e-5);
}

#[test]
fn reference_batch_runs_and_reports_time() {
    // B = 360, D = 128 (a D³ tensor would be 2.1 M entries per step). Time printed, not asserted.
    let (b, d) = (360, 128);
    let xs = [
        random_vec(b * d, 11, 1.0),
        random_vec(b * d, 12, 1.0),
        random_vec(b * d, 13, 1.0),
    ];
    let p = vec![true; b];
    let mut g = [vec![0.0f32; b * d], vec![0.0f32; b * d], vec![0.0f32; b * d]];
    let [g0, g1, g2] = &mut g;
    let t = std::time::Instant::now();
    let r = barlow_twins_3d(
        Some(g0),
        Some(g1),
        Some(g2),
        [&xs[0], &xs[1], &xs[2]],
        [&p, &p, &p],
        d,
        0.0051,
        true,
        0..b,
    );
    let secs = t.elapsed().as_secs_f64();
    println!(
        "barlow_twins_3d B={b} D={d}: loss {:.4}, forward+backward {:.1} ms",
        r.loss,
        secs * 1e3
    );
    // Independent random features: C ≈ 0 up to O(1/√n) noise, so the loss sits near
    // Σ targets² = D·1² + 3D(D−1)·(½)² plus the noise terms.
    let targets = d as f64 + 0.25 * 3.0 * (d * (d - 1)) as f64;
    assert!(
        r.loss > targets && r.loss < 1.5 * targets,
        "loss {} vs Σ t² = {targets}",
        r.loss
    );
    assert!(g.iter().flatten().all(|v| v.is_finite()));
}
