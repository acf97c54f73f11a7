//! Mean over the sequence dimension of the valid positions only: out[b] = Σ_t valid[b,t]·x[b,t] /
//! Σ_t valid[b,t] — the DOS encoder's pooling over energy points when lengths differ. A sample
//! with no valid position pools to zeros and receives zero gradient (never 0/0). Backward writes (=).

/// out (B, C) = masked mean over T of inp (B, T, C); `valid` (B, T), None = all valid.
pub fn masked_mean_forward(out: &mut [f32], inp: &[f32], valid: Option<&[bool]>, b: usize, t: usize, c: usize) {
    assert!(out.len() == b * c && inp.len() == b * t * c, "masked_mean_forward: sizes");
    assert!(valid.is_none_or(|m| m.len() == b * t), "masked_mean_forward: mask must be (B, T)");
    for bi in 0..b {
        let mut acc = vec![0.0f64; c];
        let mut count = 0usize;
        for ti in 0..t {
            if valid.is_none_or(|m| m[bi * t + ti]) {
                count += 1;
                let row = &inp[(bi * t + ti) * c..(bi * t + ti + 1) * c];
                acc.iter_mut().zip(row).for_each(|(a, &x)| *a += x as f64);
            }
        }
        let inv = if count > 0 { 1.0 / count as f64 } else { 0.0 };
        for (o, a) in out[bi * c..(bi + 1) * c].iter_mut().zip(&acc) {
            *o = (a * inv) as f32;
        }
    }
}

/// dinp (B, T, C) = dout[b] / count_b at valid positions, 0 elsewhere.
pub fn masked_mean_backward(dinp: &mut [f32], dout: &[f32], valid: Option<&[bool]>, b: usize, t: usize, c: usize) {
    assert!(dout.len() == b * c && dinp.len() == b * t * c, "masked_mean_backward: sizes");
    for bi in 0..b {
        let count = (0..t).filter(|&ti| valid.is_none_or(|m| m[bi * t + ti])).count();
        let inv = if count > 0 { 1.0 / count as f32 } else { 0.0 };
        let g = &dout[bi * c..(bi + 1) * c];
        for ti in 0..t {
            let keep = valid.is_none_or(|m| m[bi * t + ti]);
            for (d, &gg) in dinp[(bi * t + ti) * c..(bi * t + ti + 1) * c].iter_mut().zip(g) {
                *d = if keep { gg * inv } else { 0.0 };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::{check_gradient, dot, random_vec};

    #[test]
    fn masked_mean_values_and_gradients() {
        // Sample 0: rows (1, 2) and (3, 4) valid, (100, 100) padded → (2, 3). Sample 1: nothing valid → 0.
        let x = [1.0, 2.0, 3.0, 4.0, 100.0, 100.0, 5.0, 5.0, 6.0, 6.0, 7.0, 7.0];
        let valid = [true, true, false, false, false, false];
        let mut out = [9.0f32; 4];
        masked_mean_forward(&mut out, &x, Some(&valid), 2, 3, 2);
        assert_eq!(out, [2.0, 3.0, 0.0, 0.0]);
        let (b, t, c) = (2, 4, 3);
        let valid = [true, false, true, true, false, true, false, false];
        let x = random_vec(b * t * c, 1, 1.0);
        let proj = random_vec(b * c, 2, 1.0);
        let mut dx = vec![f32::NAN; b * t * c];
        masked_mean_backward(&mut dx, &proj, Some(&valid), b, t, c);
        check_gradient("masked mean", &x, &dx, |x| {
            let mut out = vec![0.0; b * c];
            masked_mean_forward(&mut out, x, Some(&valid), b, t, c);
            dot(&proj, &out)
        }, 1e-2, 1e-4, 1e-4);
    }
}
