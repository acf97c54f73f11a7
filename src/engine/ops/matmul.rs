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

/// Largest flat index reached by a (rows × cols) operand with the given strides, plus one.
fn strided_extent(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 { 0 } else { (rows - 1) * rs + (cols - 1) * cs + 1 }
}

/// C (m×n, row stride `rsc`) = alpha · A (m×k) · B (k×n) + beta · C, every operand given by
/// (row stride, column stride) into its slice. Used where operands are sub-blocks of a larger
/// buffer, e.g. one head's Q (T, hs) inside a packed qkv (B, T, 3·H·hs) with row stride 3·H·hs.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_strided(
    c: &mut [f32], rsc: usize,
    a: &[f32], rsa: usize, csa: usize,
    b: &[f32], rsb: usize, csb: usize,
    m: usize, n: usize, k: usize,
    alpha: f32, beta: f32,
) {
    assert!(c.len() >= strided_extent(m, n, rsc, 1), "sgemm_strided: C too small");
    assert!(a.len() >= strided_extent(m, k, rsa, csa), "sgemm_strided: A too small");
    assert!(b.len() >= strided_extent(k, n, rsb, csb), "sgemm_strided: B too small");
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the asserts above bound every index the strides reach inside the slices.
    unsafe {
        matrixmultiply::sgemm(
            m, k, n, alpha, a.as_ptr(), rsa as isize, csa as isize, b.as_ptr(), rsb as isize, csb as isize,
            beta, c.as_mut_ptr(), rsc as isize, 1,
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

    #[test]
    fn sgemm_strided_on_sub_blocks_matches_reference() {
        // A is columns 2..2+k of a (m, 20) buffer; B is used transposed from an (n, 11) buffer.
        let (m, n, k) = (5, 4, 7);
        let abuf = random_vec(m * 20, 4, 1.0);
        let bbuf = random_vec(n * 11, 5, 1.0);
        let a: Vec<f32> = (0..m * k).map(|i| abuf[(i / k) * 20 + 2 + i % k]).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| bbuf[(i / k) * 11 + i % k]).collect();
        let mut want = vec![0.0; m * n];
        sgemm_reference(&mut want, &a, &bt, m, n, k, false, true, 1.0, 0.0);
        let mut got = vec![9.0; m * 6];
        sgemm_strided(&mut got, 6, &abuf[2..], 20, 1, &bbuf, 1, 11, m, n, k, 1.0, 0.0);
        for i in 0..m {
            for j in 0..n {
                assert!((got[i * 6 + j] - want[i * n + j]).abs() < 1e-5);
            }
            assert_eq!(got[i * 6 + 5], 9.0, "columns past n must be untouched");
        }
    }
}
