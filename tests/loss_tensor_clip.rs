//! TensorCLIP: a hand-computed case, the streamed algorithm against a naive B³ reference
//! (several k blocks, masked rows), finite-difference gradients and the distributed shares.

mod loss_common;

use loss_common::{check_partition, poison_absent, unit_rows};
use multimat::engine::gradcheck::check_gradient;
use multimat::loss::tensor_clip::{slices_per_block, tensor_clip};
use multimat::loss::{LossConfig, LossKind, Modality, ModalityEmbeddings, MultimodalLoss};

/// Supplemental Equations S1–S2 with the B³ tensor materialised, f64, on the rows present in
/// all three modalities.
fn naive(x: [&[f32]; 3], p: [&[bool]; 3], d: usize, s: f64) -> f64 {
    let idx: Vec<usize> = (0..p[0].len()).filter(|&r| p.iter().all(|m| m[r])).collect();
    let n = idx.len();
    if n < 2 {
        return 0.0;
    }
    let mut l = vec![0.0f64; n * n * n]; // (n, n, n)
    for i in 0..n {
        for j in 0..n {
            for k in 0..n {
                l[(i * n + j) * n + k] = s
                    * (0..d)
                        .map(|t| {
                            x[0][idx[i] * d + t] as f64 * x[1][idx[j] * d + t] as f64 * x[2][idx[k] * d + t] as f64
                        })
                        .sum::<f64>();
            }
        }
    }
    let at = |i: usize, j: usize, k: usize| l[(i * n + j) * n + k];
    let mut total = 0.0;
    for i in 0..n {
        let mut s1 = 0.0;
        let mut s2 = 0.0;
        let mut s3 = 0.0;
        for u in 0..n {
            for v in 0..n {
                s1 += at(i, u, v).exp();
                s2 += at(u, i, v).exp();
                s3 += at(u, v, i).exp();
            }
        }
        let pos = at(i, i, i);
        total += -(pos.exp() / s1).ln() - (pos.exp() / s2).ln() - (pos.exp() / s3).ln();
    }
    total / (3.0 * n as f64)
}

#[test]
fn one_dimensional_two_row_case_matches_hand_computation() {
    // D = 1, a = b = c = (+1, −1): l_ijk = s·σ_i σ_j σ_k. Row i = 0: entries (s, −s, −s, s),
    // positive s → ln(2eˢ + 2e⁻ˢ) − s. Row 1: entries (−s, s, s, −s), positive −s →
    // ln(2eˢ + 2e⁻ˢ) + s. All three axes are alike, so L = ln(2eˢ + 2e⁻ˢ).
    let x = [1.0f32, -1.0];
    let p = [true, true];
    let s = 5.0f64;
    let got = tensor_clip(None, None, None, [&x, &x, &x], [&p, &p, &p], 1, s as f32, 0..2).loss;
    let want = (2.0 * s.exp() + 2.0 * (-s).exp()).ln();
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
}

#[test]
fn streamed_matches_naive_b_cubed_with_masks_and_several_blocks() {
    // n = 150 valid rows → kb = 93 slices per block, so the stream crosses a block boundary.
    let (b, d) = (160, 8);
    let pa: Vec<bool> = (0..b).map(|r| r % 17 != 3).collect();
    let pb: Vec<bool> = (0..b).map(|r| r % 29 != 7).collect();
    let pc = vec![true; b];
    let mut xa = unit_rows(b, d, 1);
    let mut xb = unit_rows(b, d, 2);
    let xc = unit_rows(b, d, 3);
    poison_absent(&mut xa, &pa, d);
    poison_absent(&mut xb, &pb, d);
    let n = (0..b).filter(|&r| pa[r] && pb[r]).count();
    assert!(slices_per_block(n) < n, "test must span several k blocks");
    for s in [5.0f32, 30.0, 60.0] {
        let got = tensor_clip(None, None, None, [&xa, &xb, &xc], [&pa, &pb, &pc], d, s, 0..b);
        let want = naive([&xa, &xb, &xc], [&pa, &pb, &pc], d, s as f64);
        assert_eq!(got.valid_rows, n);
        assert!(
            (got.loss - want).abs() < 2e-5 * want.abs().max(1.0),
            "s={s}: streamed {} vs naive {want}",
            got.loss
        );
    }
}

#[test]
fn gradients_match_finite_differences_with_masked_and_dead_rows() {
    let (b, d) = (7, 4);
    let pa = [true, true, true, false, true, true, true];
    let pb = [true, false, true, true, true, true, true];
    let pc = [true; 7];
    let mut xs = [unit_rows(b, d, 4), unit_rows(b, d, 5), unit_rows(b, d, 6)];
    let ps: [&[bool]; 3] = [&pa, &pb, &pc];
    // Absent rows hold garbage that must not matter (finite here so the FD sweep can pass them).
    xs[0][3 * d] = 7.0;
    xs[1][d] = -7.0;
    let s = 4.0f32;
    let mut g = [vec![0.0f32; b * d], vec![0.0f32; b * d], vec![0.0f32; b * d]];
    let [g0, g1, g2] = &mut g;
    let r = tensor_clip(Some(g0), Some(g1), Some(g2), [&xs[0], &xs[1], &xs[2]], ps, d, s, 0..b);
    assert!(g[0][3 * d..4 * d]
        .iter()
        .chain(&g[1][d..2 * d])
        .chain(&g[2][d..2 * d])
        .all(|&v| v == 0.0));
    for m in 0..3 {
        let f = |y: &[f32]| {
            let mut ins = [xs[0].as_slice(), xs[1].as_slice(), xs[2].as_slice()];
            ins[m] = y;
            tensor_clip(None, None, None, ins, ps, d, s, 0..b).loss
        };
        check_gradient(&format!("tensor_clip d{m}"), &xs[m], &g[m], f, 1e-2, 2e-4, 3e-3);
    }
    let h = 1e-2f32;
    let at = |s: f32| tensor_clip(None, None, None, [&xs[0], &xs[1], &xs[2]], ps, d, s, 0..b).loss;
    let num = (at(s + h) - at(s - h)) / (2.0 * h as f64);
    assert!(
        (r.dscale - num).abs() < 1e-4 + 2e-3 * num.abs(),
        "dscale {} vs {num}",
        r.dscale
    );
    // Fewer than two complete rows: exactly zero, no NaN.
    let one = [false, false, true, false, false, false, false];
    let mut g = [vec![1.0f32; b * d], vec![1.0f32; b * d], vec![1.0f32; b * d]];
    let [g0, g1, g2] = &mut g;
    let r = tensor_clip(
        Some(g0),
        Some(g1),
        Some(g2),
        [&xs[0], &xs[1], &xs[2]],
        [&one, &pb, &pc],
        d,
        s,
        0..b,
    );
    assert_eq!((r.loss, r.dscale, r.valid_rows), (0.0, 0.0, 1));
    assert!(g.iter().flatten().all(|&v| v == 0.0));
}

#[test]
fn shares_over_row_partitions_add_up_to_full_loss_and_gradients() {
    let (b, d) = (19, 5);
    let p = [
        vec![true; b],
        (0..b).map(|r| r % 5 != 0).collect::<Vec<_>>(),
        (0..b).map(|r| r % 4 != 3).collect::<Vec<_>>(),
    ];
    let mut xs = [unit_rows(b, d, 7), unit_rows(b, d, 8), unit_rows(b, d, 9)];
    for (x, pm) in xs.iter_mut().zip(&p) {
        poison_absent(x, pm, d);
    }
    let mods = [Modality::Crystal, Modality::Dos, Modality::ChargeDensity];
    let inputs: Vec<ModalityEmbeddings> = (0..3)
        .map(|m| ModalityEmbeddings {
            modality: mods[m],
            data: &xs[m],
            present: &p[m],
        })
        .collect();
    let mut cfg = LossConfig::new(LossKind::TensorClip);
    cfg.learnable_temperature = true;
    let loss = MultimodalLoss::new(cfg, &mods).unwrap();
    check_partition(&loss, &inputs, d, &[0..9, 9..b], 1e-5);
    check_partition(&loss, &inputs, d, &[0..4, 4..13, 13..b], 1e-5);
    // And the full value equals the naive reference through the top-level API.
    let mut l = loss.clone();
    let full = l.forward_backward(&inputs, d, 0..b, false).unwrap();
    let want = naive([&xs[0], &xs[1], &xs[2]], [&p[0], &p[1], &p[2]], d, 5.0);
    assert!((full.loss - want).abs() < 1e-5, "{} vs {want}", full.loss);
}
