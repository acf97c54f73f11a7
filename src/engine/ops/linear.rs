//! Linear layer y = x·Wᵀ + b (PyTorch weight layout (OC, C), so checkpoints map one to one).

use super::matmul::sgemm;

/// out (N, OC) = inp (N, C) · weight (OC, C)ᵀ + bias (OC)
pub fn linear_forward(
    out: &mut [f32],          // (N, OC)
    inp: &[f32],              // (N, C)
    weight: &[f32],           // (OC, C)
    bias: Option<&[f32]>,     // (OC)
    n: usize,
    c: usize,
    oc: usize,
) {
    sgemm(out, inp, weight, n, oc, c, false, true, 1.0, 0.0);
    if let Some(b) = bias {
        for row in out[..n * oc].chunks_exact_mut(oc) {
            for (o, bb) in row.iter_mut().zip(b) {
                *o += bb;
            }
        }
    }
}

/// dinp (N, C) = dout · W (written); dweight (OC, C) += doutᵀ · inp; dbias (OC) += Σ_n dout.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    dinp: Option<&mut [f32]>,   // (N, C)
    dweight: &mut [f32],        // (OC, C)
    dbias: Option<&mut [f32]>,  // (OC)
    dout: &[f32],               // (N, OC)
    inp: &[f32],                // (N, C)
    weight: &[f32],             // (OC, C)
    n: usize,
    c: usize,
    oc: usize,
) {
    if let Some(dinp) = dinp {
        sgemm(dinp, dout, weight, n, c, oc, false, false, 1.0, 0.0);
    }
    sgemm(dweight, dout, inp, oc, c, n, true, false, 1.0, 1.0);
    if let Some(db) = dbias {
        for row in dout[..n * oc].chunks_exact(oc) {
            for (d, g) in db.iter_mut().zip(row) {
                *d += g;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::{check_gradient, dot, random_vec};

    #[test]
    fn linear_gradients_match_finite_differences() {
        let (n, c, oc) = (5, 7, 3);
        let x = random_vec(n * c, 1, 1.0);
        let w = random_vec(oc * c, 2, 1.0);
        let b = random_vec(oc, 3, 1.0);
        let proj = random_vec(n * oc, 4, 1.0);
        let fwd = |x: &[f32], w: &[f32], b: &[f32]| {
            let mut out = vec![0.0; n * oc];
            linear_forward(&mut out, x, w, Some(b), n, c, oc);
            dot(&proj, &out)
        };
        let (mut dx, mut dw, mut db) = (vec![0.0; n * c], vec![0.0; oc * c], vec![0.0; oc]);
        linear_backward(Some(&mut dx), &mut dw, Some(&mut db), &proj, &x, &w, n, c, oc);
        check_gradient("linear dx", &x, &dx, |x| fwd(x, &w, &b), 1e-2, 1e-3, 1e-3);
        check_gradient("linear dw", &w, &dw, |w| fwd(&x, w, &b), 1e-2, 1e-3, 1e-3);
        check_gradient("linear db", &b, &db, |b| fwd(&x, &w, b), 1e-2, 1e-3, 1e-3);
    }
}
