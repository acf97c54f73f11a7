//! GEMM descriptors: what one cuBLAS `sgemm(StridedBatched)` call computes, as cuBLAS reads it
//! (column-major, `op` = transpose or not, leading dimensions, batch strides).
//!
//! The CUDA backend passes a descriptor to cuBLAS unchanged; the simulator checks it the way
//! cuBLAS does (leading dimensions ≥ the stored rows, operands inside live allocations) and runs
//! it with the CPU GEMM (`matrixmultiply`, f32), so a transposition or leading-dimension mistake
//! in a launcher shows up on a machine without a GPU.
//!
//! Our tensors are row-major. A row-major (r × c) matrix with row stride ld is, read column-major,
//! its (c × r) transpose with the same ld; hence the usual identity used by [`GemmDesc::row_major`]:
//! C = op(A)·op(B) row-major  ⇔  Cᵀ = op(B)ᵀ·op(A)ᵀ column-major, i.e. swap the operands.

use anyhow::{bail, Result};

/// C = α·op(A)·op(B) + β·C for `batch` independent problems, column-major (cuBLAS).
/// op(A) is (m × k), op(B) is (k × n), C is (m × n); strides are in elements.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GemmDesc {
    pub trans_a: bool,
    pub trans_b: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
    pub lda: usize,
    pub ldb: usize,
    pub beta: f32,
    pub ldc: usize,
    pub batch: usize,
    pub stride_a: usize,
    pub stride_b: usize,
    pub stride_c: usize,
}

impl GemmDesc {
    /// Row-major C (m × n, row stride n) = α·op(A)·op(B) + β·C with op(A) (m × k) and op(B)
    /// (k × n), A and B contiguous row-major in their stored shapes ((m, k) or (k, m) if
    /// `trans_a`; (k, n) or (n, k) if `trans_b`). One problem; see [`GemmDesc::batched`].
    pub fn row_major(trans_a: bool, trans_b: bool, m: usize, n: usize, k: usize, alpha: f32, beta: f32) -> GemmDesc {
        // Column-major view: Cᵀ (n × m) = op(B)ᵀ (n × k) · op(A)ᵀ (k × m).
        let lda_rm = if trans_a { m } else { k }; // row stride of A as stored
        let ldb_rm = if trans_b { k } else { n };
        GemmDesc {
            trans_a: trans_b,
            trans_b: trans_a,
            m: n,
            n: m,
            k,
            alpha,
            lda: ldb_rm.max(1),
            ldb: lda_rm.max(1),
            beta,
            ldc: n.max(1),
            batch: 1,
            stride_a: 0,
            stride_b: 0,
            stride_c: 0,
        }
    }

    /// The same problem repeated `batch` times with row-major A, B, C strides (elements) between
    /// problems (the column-major A/B roles are swapped as in [`GemmDesc::row_major`]).
    pub fn batched(mut self, batch: usize, stride_a_rm: usize, stride_b_rm: usize, stride_c_rm: usize) -> GemmDesc {
        self.batch = batch;
        self.stride_a = stride_b_rm;
        self.stride_b = stride_a_rm;
        self.stride_c = stride_c_rm;
        self
    }

    /// Rows of A and B as stored (column-major).
    fn stored_rows(&self) -> (usize, usize) {
        (if self.trans_a { self.k } else { self.m }, if self.trans_b { self.n } else { self.k })
    }

    /// cuBLAS's argument checks (CUBLAS_STATUS_INVALID_VALUE cases).
    pub fn check(&self) -> Result<()> {
        let (ra, rb) = self.stored_rows();
        if self.lda < ra.max(1) || self.ldb < rb.max(1) || self.ldc < self.m.max(1) {
            bail!("leading dimensions (lda {}, ldb {}, ldc {}) below the stored rows ({ra}, {rb}, {})", self.lda, self.ldb, self.ldc, self.m);
        }
        if self.batch == 0 {
            bail!("batch count 0");
        }
        let max = i32::MAX as usize;
        if [self.m, self.n, self.k, self.lda, self.ldb, self.ldc].iter().any(|&v| v > max) {
            bail!("a dimension exceeds the 32-bit cuBLAS interface");
        }
        Ok(())
    }

    /// Elements spanned by A, B, C over all batches (0 for an empty operand).
    pub fn a_extent(&self) -> usize {
        let cols = if self.trans_a { self.m } else { self.k };
        Self::extent(self.lda, cols, self.stored_rows().0, self.batch, self.stride_a)
    }
    pub fn b_extent(&self) -> usize {
        let cols = if self.trans_b { self.k } else { self.n };
        Self::extent(self.ldb, cols, self.stored_rows().1, self.batch, self.stride_b)
    }
    pub fn c_extent(&self) -> usize {
        Self::extent(self.ldc, self.n, self.m, self.batch, self.stride_c)
    }
    fn extent(ld: usize, cols: usize, rows: usize, batch: usize, stride: usize) -> usize {
        if cols == 0 || rows == 0 {
            return 0;
        }
        (batch - 1) * stride + (cols - 1) * ld + rows
    }

    /// FLOPs of the whole call (2·m·n·k per problem).
    pub fn flops(&self) -> f64 {
        2.0 * (self.m * self.n * self.k * self.batch) as f64
    }

    /// Executes the descriptor on host memory with the CPU GEMM (the simulator's cuBLAS).
    ///
    /// # Safety
    /// Every element of A, B and C the descriptor addresses must be valid (see the extents).
    pub unsafe fn run_on_host(&self, a: *const f32, b: *const f32, c: *mut f32) {
        // Column-major element (i, j) of a matrix with leading dimension ld: i + j·ld, so the
        // (row stride, column stride) pair is (1, ld), or (ld, 1) when the operand is transposed.
        let (rsa, csa) = if self.trans_a { (self.lda as isize, 1) } else { (1, self.lda as isize) };
        let (rsb, csb) = if self.trans_b { (self.ldb as isize, 1) } else { (1, self.ldb as isize) };
        for p in 0..self.batch {
            let (ap, bp, cp) = (a.add(p * self.stride_a), b.add(p * self.stride_b), c.add(p * self.stride_c));
            if self.k == 0 {
                // No products: C = β·C (matrixmultiply needs k ≥ 1 semantics to match cuBLAS here).
                for j in 0..self.n {
                    for i in 0..self.m {
                        let e = cp.add(i + j * self.ldc);
                        *e = if self.beta == 0.0 { 0.0 } else { self.beta * *e };
                    }
                }
                continue;
            }
            matrixmultiply::sgemm(self.m, self.k, self.n, self.alpha, ap, rsa, csa, bp, rsb, csb, self.beta, cp, 1, self.ldc as isize);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::random_vec;
    use crate::engine::ops::matmul::sgemm_reference;

    #[test]
    fn row_major_descriptors_equal_the_cpu_matmul_for_every_transpose() {
        let (m, n, k) = (5, 7, 3);
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let a = random_vec(m * k, 1, 1.0); // (m, k) or (k, m) as stored
            let b = random_vec(k * n, 2, 1.0);
            let mut want = vec![0.0f32; m * n];
            sgemm_reference(&mut want, &a, &b, m, n, k, ta, tb, 1.0, 0.0);
            let d = GemmDesc::row_major(ta, tb, m, n, k, 1.0, 0.0);
            d.check().unwrap();
            assert_eq!((d.a_extent(), d.b_extent(), d.c_extent()), (k * n, m * k, m * n));
            let mut c = vec![f32::NAN; m * n]; // β = 0 must ignore what C held
            // Column-major roles are swapped: the row-major B is cuBLAS's A.
            unsafe { d.run_on_host(b.as_ptr(), a.as_ptr(), c.as_mut_ptr()) };
            for (x, y) in c.iter().zip(&want) {
                assert!((x - y).abs() <= 1e-6 * (1.0 + y.abs()), "transposes ({ta}, {tb}): {x} vs {y}");
            }
        }
    }

    #[test]
    fn wrong_leading_dimensions_are_refused_like_cublas() {
        let mut d = GemmDesc::row_major(false, false, 4, 4, 4, 1.0, 0.0);
        d.lda = 3;
        assert!(d.check().unwrap_err().to_string().contains("leading dimensions"));
    }
}
