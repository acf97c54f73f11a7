//! Threaded single-precision GEMM (the `matrixmultiply` crate, strided, so transposed operands
//! cost nothing) and its plain triple-loop reference.

/// C (m×n) = alpha · op(A) · op(B) + beta · C, row-major. `trans_a` means A is stored (k×m) and
/// used transposed; likewise `trans_b` with B stored (n×k).
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    c: &mut [f32],   // (m, n)
    a: &[f32],       // (m, k) or (k, m) if trans_a
    b: &[f32],       // (k, n) or (n, k) if trans_b
    m: usize,
    n: usize,
    k: usize,
    trans_a: bool,
    trans_b: bool,
    alpha: f32,
    beta: f32,
) {
    assert!(c.len() >= m * n && a.len() >= m * k && b.len() >= k * n, "sgemm: buffer too small");
    if m == 0 || n == 0 {
        return;
    }
    // Row/column strides of op(A) and op(B) as seen by the (m×k)·(k×n) product.
    let (rsa, csa) = if trans_a { (1, m as isize) } else { (k as isize, 1) };
    let (rsb, csb) = if trans_b { (1, k as isize) } else { (n as isize, 1) };
    // SAFETY: the asserts above guarantee every index the strides reach lies inside the slices.
    unsafe {
        matrixmultiply::sgemm(
            m, k, n, alpha, a.as_ptr(), rsa, csa, b.as_ptr(), rsb, csb, beta, c.as_mut_ptr(), n as isize, 1,
        );
    }
}

/// Reference for `sgemm`: the obvious loops, f64 accumulation.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_reference(
    c: &mut [f32], a: &[f32], b: &[f32], m: usize, n: usize, k: usize,
    trans_a: bool, trans_b: bool, alpha: f32, beta: f32,
) {
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for p in 0..k {
                let av = if trans_a { a[p * m + i] } else { a[i * k + p] };
                let bv = if trans_b { b[j * k + p] } else { b[p * n + j] };
                s += av as f64 * bv as f64;
            }
            let prev = if beta == 0.0 { 0.0 } else { beta * c[i * n + j] };
            c[i * n + j] = alpha * s as f32 + prev;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::random_vec;

    #[test]
    fn sgemm_matches_reference_for_all_transposes() {
        let (m, n, k) = (37, 29, 53);
        let a = random_vec(m * k, 1, 1.0);
        let b = random_vec(k * n, 2, 1.0);
        for &(ta, tb) in &[(false, false), (true, false), (false, true), (true, true)] {
            let mut c1 = random_vec(m * n, 3, 1.0);
            let mut c2 = c1.clone();
            sgemm(&mut c1, &a, &b, m, n, k, ta, tb, 0.7, 0.3);
            sgemm_reference(&mut c2, &a, &b, m, n, k, ta, tb, 0.7, 0.3);
            for (x, y) in c1.iter().zip(&c2) {
                assert!((x - y).abs() < 1e-4, "ta={ta} tb={tb}: {x} vs {y}");
            }
        }
    }
}
