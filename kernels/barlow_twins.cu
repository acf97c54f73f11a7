// 3-D BarlowTwins for three modalities; the CPU reference is src/loss/barlow_twins.rs (its module
// doc derives the O(n²D + nD²) form). The GEMMs (P, Q, R, the Gram rows and every backward
// product) go through cuBLAS and the Hadamard products through the elementwise kernels; these
// kernels are what is specific to the loss:
//   bt_standardize_f32           z = (x − μ)/√(var + ε) per dimension over the n valid rows
//   bt_targets_f32               the S part (targets on the not-all-distinct entries) and dS/dC
//   bt_triple_rows_f32           Σ_b' Ga Gb Gc per owned row (the λ‖C‖² share)
//   bt_standardize_backward_f32  dx from dz through the standardisation (μ and σ global)
//
// Determinism: no atomics. Per-dimension statistics are one thread per dimension summing the rows
// in order (the reference's order, in f64); the S part and the Gram triple sums are one thread
// per row summing in order, f64; the host adds the per-row values in row order.
//
// f64 buffers travel as raw 8-byte words in u32 device buffers (two words per value); the
// kernels take them as double*.
#include "common.cuh"

// z (n, D) and inv_std (D, f64) from x (n, D): with `active`, per dimension c the biased
// variance over the n rows and z = (x − μ)·(var + eps)^(−½), as the reference computes it (f64
// sums in row order, z rounded to f32 once); without, z = x and inv_std = 1.
extern "C" __global__ void bt_standardize_f32(float* z, double* inv_std, const float* x, int n, int d, double eps, int active) {
    for (long long c = mm_grid_start(); c < d; c += mm_grid_stride()) {
        if (!active) {
            for (long long b = 0; b < n; b++) z[b * d + c] = x[b * d + c];
            inv_std[c] = 1.0;
            continue;
        }
        double mean = 0.0;
        for (long long b = 0; b < n; b++) mean += static_cast<double>(x[b * d + c]);
        mean /= static_cast<double>(n);
        double var = 0.0;
        for (long long b = 0; b < n; b++) {
            double v = static_cast<double>(x[b * d + c]) - mean;
            var += v * v;
        }
        const double is = 1.0 / sqrt(var / static_cast<double>(n) + eps);
        inv_std[c] = is;
        for (long long b = 0; b < n; b++) z[b * d + c] = static_cast<float>((static_cast<double>(x[b * d + c]) - mean) * is);
    }
}

// h_t(C) = (1 − λ)C² − 2tC + t² and its derivative, the S part's per-entry term.
__device__ __forceinline__ double bt_h(double c, double t, double lam) { return (1.0 - lam) * c * c - 2.0 * t * c + t * t; }
__device__ __forceinline__ double bt_dh(double c, double t, double lam) { return 2.0 * (1.0 - lam) * c - 2.0 * t; }

// One thread per row i of the D×D slices P, Q, R: s_rows[i] = Σ_j of the S part's terms
// (target 1 on the diagonal of P, ½ off it on P, Q and R; the shared diagonal counted once, in
// P) and dp, dq, dr (D, D) = their derivatives (0 where Q and R share P's diagonal).
extern "C" __global__ void bt_targets_f32(double* s_rows, float* dp, float* dq, float* dr, const float* p, const float* q,
                                          const float* r, int d, double lam) {
    for (long long i = mm_grid_start(); i < d; i += mm_grid_stride()) {
        double s = 0.0;
        for (long long j = 0; j < d; j++) {
            const long long ij = i * d + j;
            const double pv = static_cast<double>(p[ij]);
            if (i == j) {
                s += bt_h(pv, 1.0, lam);
                dp[ij] = static_cast<float>(bt_dh(pv, 1.0, lam));
                dq[ij] = 0.0f;
                dr[ij] = 0.0f;
            } else {
                const double qv = static_cast<double>(q[ij]), rv = static_cast<double>(r[ij]);
                s += bt_h(pv, 0.5, lam) + bt_h(qv, 0.5, lam) + bt_h(rv, 0.5, lam);
                dp[ij] = static_cast<float>(bt_dh(pv, 0.5, lam));
                dq[ij] = static_cast<float>(bt_dh(qv, 0.5, lam));
                dr[ij] = static_cast<float>(bt_dh(rv, 0.5, lam));
            }
        }
        s_rows[i] = s;
    }
}

// out (rows, f64): Σ_b' ga·gb·gc over the n columns of each of the owned Gram rows (rows, n).
extern "C" __global__ void bt_triple_rows_f32(double* out, const float* ga, const float* gb, const float* gc, int rows, int n) {
    for (long long r = mm_grid_start(); r < rows; r += mm_grid_stride()) {
        double s = 0.0;
        for (long long b = 0; b < n; b++) {
            const long long at = r * n + b;
            s += static_cast<double>(ga[at]) * static_cast<double>(gb[at]) * static_cast<double>(gc[at]);
        }
        out[r] = s;
    }
}

// dx (n, D, written) from dz given on the owned rows o0 … o0 + own − 1 only (own, D): with
// `active`, dx = σ⁻¹(dz − mean_b dz − z·mean_b(dz ⊙ z)) (means over all n rows, dz = 0 off the
// owned rows); without, dx = dz on the owned rows and 0 elsewhere. One thread per dimension.
extern "C" __global__ void bt_standardize_backward_f32(float* dx, const float* dz, const float* z, const double* inv_std, int n,
                                                       int d, int o0, int own, int active) {
    for (long long c = mm_grid_start(); c < d; c += mm_grid_stride()) {
        double mean_dz = 0.0, mean_dzz = 0.0;
        if (active) {
            for (long long t = 0; t < own; t++) {
                const double g = static_cast<double>(dz[t * d + c]);
                mean_dz += g;
                mean_dzz += g * static_cast<double>(z[(o0 + t) * d + c]);
            }
            mean_dz /= static_cast<double>(n);
            mean_dzz /= static_cast<double>(n);
        }
        for (long long b = 0; b < n; b++) {
            const bool owned = b >= o0 && b < o0 + own;
            const float gz = owned ? dz[(b - o0) * d + c] : 0.0f;
            if (!active) {
                dx[b * d + c] = gz;
                continue;
            }
            const double g = static_cast<double>(gz);
            dx[b * d + c] = static_cast<float>(inv_std[c] * (g - mean_dz - static_cast<double>(z[b * d + c]) * mean_dzz));
        }
    }
}

MULTIMAT_EXPORT(bt_standardize_f32)
MULTIMAT_EXPORT(bt_targets_f32)
MULTIMAT_EXPORT(bt_triple_rows_f32)
MULTIMAT_EXPORT(bt_standardize_backward_f32)
