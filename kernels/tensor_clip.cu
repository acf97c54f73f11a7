// TensorCLIP for three modalities, streamed over blocks of k slices so the n³ logits tensor never
// exists. The CPU reference is src/loss/tensor_clip.rs (its module doc derives the algorithm);
// these kernels follow it step by step:
//
//   per block of kb slices k0 … k0+kb−1 (host: src/loss/tensor_clip.rs `tensor_clip_device`):
//     W (kb·n, D) = b ⊙ c_k                                  tclip_hadamard_block_f32
//     L (n, kb·n) = s·a·Wᵀ                                    cuBLAS
//   forward statistics:
//     M_k = max_{i,j} l_ijk                                   tclip_slice_max_f32
//     Σ_j e, Σ_i e with e = exp(l − M_k), in f64               tclip_row_sums_f32, tclip_col_sums_f32
//     lse1, lse2, lse3 folded across blocks (log-add-exp)      tclip_fold_stats_f64
//   backward (the same blocks recomputed):
//     L → dL/dl in place, and Σ_jk dL/dl·l per row i           tclip_grad_block_f32
//     da += s·G·W, H = Gᵀ·a                                    cuBLAS
//     db_j += s·Σ_k H_kj ⊙ c_k, dc_k += s·Σ_j H_kj ⊙ b_j        tclip_grad_b_f32, tclip_grad_c_f32
//   loss: lse1_i + lse2_i + lse3_i − 3·l_iii per owned row    tclip_row_terms_f32
//
// Determinism: no atomics. Every output value has one writer, and every sum runs in a fixed order
// (a thread's own loop, or a fixed f64 tree in a block), so the same inputs give the same bits on
// every run. The exponentials are f32 (`narrow`, logit scale ≤ 40) or f64 like the reference.
//
// f64 buffers travel as raw 8-byte words in u32 device buffers (two words per value); the
// kernels take them as double*.
#include "common.cuh"

// Threads of the per-row and per-slice reduction kernels (a power of two: the f64 tree).
#define TCLIP_TREE 128

__device__ __forceinline__ double tclip_neg_inf() { return -static_cast<double>(mm_inf()); }

// exp(x − m) for x ≤ m, in f32 (narrow) or f64, as f64 for the sums — the reference's
// `exp_shifted`.
__device__ __forceinline__ double tclip_exp_shifted(float x, float m, int narrow) {
    return narrow ? static_cast<double>(expf(x - m)) : exp(static_cast<double>(x - m));
}

// log(exp x + exp y) with −∞ as the empty sum.
__device__ __forceinline__ double tclip_log_add_exp(double x, double y) {
    if (x == tclip_neg_inf()) return y;
    if (y == tclip_neg_inf()) return x;
    double m = x > y ? x : y;
    return m + log(exp(x - m) + exp(y - m));
}

// Σ of v over the block (blockDim.x == TCLIP_TREE) in f64, in a fixed tree; every thread gets it.
__device__ __forceinline__ double tclip_block_sum(double v) {
    __shared__ double tree[TCLIP_TREE];
    __syncthreads();  // a previous call's readers are done
    tree[threadIdx.x] = v;
    __syncthreads();
    for (unsigned stride = TCLIP_TREE / 2; stride > 0; stride /= 2) {
        if (threadIdx.x < stride) tree[threadIdx.x] += tree[threadIdx.x + stride];
        __syncthreads();
    }
    return tree[0];
}

// w (kb·n, D): w[kk·n + j] = b_j ⊙ c_{k0+kk}.
extern "C" __global__ void tclip_hadamard_block_f32(float* w, const float* b, const float* c, int n, int d, int k0, int kb) {
    const long long nd = static_cast<long long>(n) * d, total = nd * kb;
    for (long long i = mm_grid_start(); i < total; i += mm_grid_stride()) {
        long long kk = i / nd, rem = i % nd;
        long long j = rem / d, t = rem % d;
        w[i] = b[j * d + t] * c[(k0 + kk) * d + t];
    }
}

// One block per slice kk of the block: slice_max[k0 + kk] = max over (i, j) of l (n, kb·n).
extern "C" __global__ void tclip_slice_max_f32(float* slice_max, const float* l, int n, int k0, int kb) {
    __shared__ float scratch[33];
    const long long kk = blockIdx.x, width = static_cast<long long>(kb) * n, nn = static_cast<long long>(n) * n;
    float mx = -mm_inf();
    for (long long e = threadIdx.x; e < nn; e += blockDim.x) {
        long long i = e / n, j = e % n;
        mx = fmaxf(mx, l[i * width + kk * n + j]);
    }
    mx = mm_block_max(mx, scratch);
    if (threadIdx.x == 0) slice_max[k0 + kk] = mx;
}

// One block per (row i, slice kk): rsum (n, kb)[i, kk] = Σ_j exp(l_ijk − M_k) in f64.
extern "C" __global__ void tclip_row_sums_f32(double* rsum, const float* l, const float* slice_max, int n, int k0, int kb,
                                              int narrow) {
    const long long i = blockIdx.x / kb, kk = blockIdx.x % kb, width = static_cast<long long>(kb) * n;
    const float m = slice_max[k0 + kk];
    const float* row = l + i * width + kk * n;
    double sum = 0.0;
    for (int j = threadIdx.x; j < n; j += blockDim.x) sum += tclip_exp_shifted(row[j], m, narrow);
    sum = tclip_block_sum(sum);
    if (threadIdx.x == 0) rsum[i * kb + kk] = sum;
}

// csum (kb·n)[kk·n + j] = Σ_i exp(l_ijk − M_k) in f64, i in order (one thread per column).
extern "C" __global__ void tclip_col_sums_f32(double* csum, const float* l, const float* slice_max, int n, int k0, int kb,
                                              int narrow) {
    const long long width = static_cast<long long>(kb) * n;
    for (long long col = mm_grid_start(); col < width; col += mm_grid_stride()) {
        const float m = slice_max[k0 + col / n];
        double sum = 0.0;
        for (long long i = 0; i < n; i++) sum += tclip_exp_shifted(l[i * width + col], m, narrow);
        csum[col] = sum;
    }
}

// Folds one block's sums into the statistics, slice by slice in order, as the reference does:
//   lse1[i] ⊕= ln rsum[i, kk] + M_k,  lse2[j] ⊕= ln csum[kk, j] + M_k  (⊕ = log-add-exp; the
//   block with k0 = 0 starts from −∞, so the buffers need no initialisation),
//   lse3[k0 + kk] = ln Σ_j csum[kk, j] + M_k.
// One thread per row index t < n (and slice t < kb).
extern "C" __global__ void tclip_fold_stats_f64(double* lse1, double* lse2, double* lse3, const double* rsum,
                                                const double* csum, const float* slice_max, int n, int k0, int kb) {
    for (long long t = mm_grid_start(); t < n; t += mm_grid_stride()) {
        double acc1 = k0 == 0 ? tclip_neg_inf() : lse1[t];
        double acc2 = k0 == 0 ? tclip_neg_inf() : lse2[t];
        for (int kk = 0; kk < kb; kk++) {
            const double m = static_cast<double>(slice_max[k0 + kk]);
            acc2 = tclip_log_add_exp(acc2, log(csum[static_cast<long long>(kk) * n + t]) + m);
            acc1 = tclip_log_add_exp(acc1, log(rsum[t * kb + kk]) + m);
        }
        lse1[t] = acc1;
        lse2[t] = acc2;
        if (t < kb) {
            double total = 0.0;
            for (long long j = 0; j < n; j++) total += csum[t * n + j];
            lse3[k0 + t] = log(total) + static_cast<double>(slice_max[k0 + t]);
        }
    }
}

// One block per row i: overwrites l (n, kb·n) with the logit gradient of the full loss,
//   g_ijk = (1/3n)·e·(e^{M_k − lse1_i} + e^{M_k − lse2_j} + e^{M_k − lse3_k}) − δ_{i=j=k}/n,
// e = exp(l − M_k), and adds Σ_{j,k} g·l (the row's part of d loss/d s, times s) to ds_rows[i]
// (f64; the buffer starts at zero and each row has one writer).
extern "C" __global__ void tclip_grad_block_f32(float* l, double* ds_rows, const float* slice_max, const double* lse1,
                                                const double* lse2, const double* lse3, int n, int k0, int kb,
                                                double inv3n, double inv_n, int narrow) {
    const long long i = blockIdx.x, width = static_cast<long long>(kb) * n;
    float* row = l + i * width;
    const double l1 = lse1[i];
    double ds = 0.0;
    for (long long e = threadIdx.x; e < width; e += blockDim.x) {
        const long long kk = e / n, j = e % n, k = k0 + kk;
        const float mf = slice_max[k];
        const double m = static_cast<double>(mf);
        const float x = row[e];
        const double ex = tclip_exp_shifted(x, mf, narrow);
        double g = inv3n * ex * (exp(m - l1) + (exp(m - lse2[j]) + exp(m - lse3[k])));
        if (i == j && j == k) g -= inv_n;
        ds += g * static_cast<double>(x);
        row[e] = static_cast<float>(g);
    }
    ds = tclip_block_sum(ds);
    if (threadIdx.x == 0) ds_rows[i] += ds;
}

// db (n, D): db_j += s·H[kk·n + j] ⊙ c_{k0+kk}, kk in order (one thread per value).
extern "C" __global__ void tclip_grad_b_f32(float* db, const float* h, const float* c, int n, int d, int k0, int kb, float s) {
    const long long nd = static_cast<long long>(n) * d;
    for (long long v = mm_grid_start(); v < nd; v += mm_grid_stride()) {
        const long long j = v / d, t = v % d;
        float acc = db[v];
        for (long long kk = 0; kk < kb; kk++) acc += s * h[(kk * n + j) * d + t] * c[(k0 + kk) * d + t];
        db[v] = acc;
    }
}

// dc (n, D): dc_{k0+kk} += s·Σ_j H[kk·n + j] ⊙ b_j, j in order (one thread per value).
extern "C" __global__ void tclip_grad_c_f32(float* dc, const float* h, const float* b, int n, int d, int k0, int kb, float s) {
    const long long kd = static_cast<long long>(kb) * d;
    for (long long v = mm_grid_start(); v < kd; v += mm_grid_stride()) {
        const long long kk = v / d, t = v % d;
        float acc = 0.0f;
        for (long long j = 0; j < n; j++) acc += h[(kk * n + j) * d + t] * b[j * d + t];
        dc[(k0 + kk) * d + t] += s * acc;
    }
}

// terms (own): lse1_i + lse2_i + lse3_i − 3·s·Σ_t a_it b_it c_it for the owned rows
// i = own0 … own0 + own − 1 (the host weighs them by 1/3n and adds them in order).
extern "C" __global__ void tclip_row_terms_f32(double* terms, const float* a, const float* b, const float* c,
                                               const double* lse1, const double* lse2, const double* lse3, int d,
                                               int own0, int own, float s) {
    for (long long r = mm_grid_start(); r < own; r += mm_grid_stride()) {
        const long long i = own0 + r;
        double pos = 0.0;
        for (long long t = 0; t < d; t++) {
            pos += static_cast<double>(a[i * d + t]) * static_cast<double>(b[i * d + t]) * static_cast<double>(c[i * d + t]);
        }
        pos *= static_cast<double>(s);
        terms[r] = lse1[i] + lse2[i] + lse3[i] - 3.0 * pos;
    }
}

MULTIMAT_EXPORT(tclip_hadamard_block_f32)
MULTIMAT_EXPORT(tclip_slice_max_f32)
MULTIMAT_EXPORT(tclip_row_sums_f32)
MULTIMAT_EXPORT(tclip_col_sums_f32)
MULTIMAT_EXPORT(tclip_fold_stats_f64)
MULTIMAT_EXPORT(tclip_grad_block_f32)
MULTIMAT_EXPORT(tclip_grad_b_f32)
MULTIMAT_EXPORT(tclip_grad_c_f32)
MULTIMAT_EXPORT(tclip_row_terms_f32)
