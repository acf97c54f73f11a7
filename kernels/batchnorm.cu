// Batch normalisation over (N, C, S) inputs (engine::ops::batchnorm), split as SyncBN needs it:
// per-channel f64 sums of this rank's values → (all-reduce by the caller) → statistics → apply.
//
// Sums without float atomics, in a fixed order: the N samples are cut into fixed chunks of
// `rows_per_chunk` samples (a function of N only); one thread per (chunk, channel) sums its
// chunk sample by sample — each sample's S values first, in order, then added to the chunk total,
// as the CPU does — and a second kernel adds the chunk partials in chunk order. With one chunk
// (N ≤ rows_per_chunk) this is exactly the CPU's order; with more, the f64 sums differ from the
// CPU's in the last bits only, far below the f32 results' resolution.
//
// Every other kernel repeats the CPU reference's f32/f64 operations one for one, with the
// multiply-adds spelled as round-to-nearest intrinsics so NVRTC's default FMA contraction cannot
// change a rounding: given the same sums, statistics, running updates, normalisation and input
// gradients are bit-identical to the CPU.
//
// f64 buffers travel as raw 8-byte words in u32 device buffers (two words per value); the
// kernels take them as double*.
#include "common.cuh"

#if defined(MULTIMAT_SIM)
// The simulator's C++ does not contract a*b + c, so plain operators round like the intrinsics.
static inline double bn_dmul_rn(double a, double b) { return a * b; }
static inline double bn_dadd_rn(double a, double b) { return a + b; }
#else
__device__ __forceinline__ double bn_dmul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ double bn_dadd_rn(double a, double b) { return __dadd_rn(a, b); }
#endif

// partials (chunks, 2C): for chunk k (blockIdx.x) and channel ci, [Σx, Σx²] over samples
// k·rows_per_chunk … min(n, (k+1)·rows_per_chunk) − 1 of x (N, C, S).
extern "C" __global__ void batchnorm_partial_sums_f32(double* partials, const float* x, long long n, long long c,
                                                     long long s, long long rows_per_chunk) {
    long long ci = (long long)blockIdx.y * blockDim.x + threadIdx.x;
    if (ci >= c) return;
    long long chunk = blockIdx.x;
    long long first = chunk * rows_per_chunk, last = min(n, first + rows_per_chunk);
    double sx = 0.0, sxx = 0.0;
    for (long long row = first; row < last; row++) {
        const float* v = x + (row * c + ci) * s;
        double px = 0.0, pxx = 0.0;
        for (long long j = 0; j < s; j++) {
            double d = (double)v[j];
            px = bn_dadd_rn(px, d);
            pxx = bn_dadd_rn(pxx, bn_dmul_rn(d, d));
        }
        sx = bn_dadd_rn(sx, px);
        sxx = bn_dadd_rn(sxx, pxx);
    }
    partials[chunk * 2 * c + ci] = sx;
    partials[chunk * 2 * c + c + ci] = sxx;
}

// partials (chunks, 2C): [Σdy, Σdy·x̂] with x̂ = (x − mean)·rstd in f32, per chunk and channel.
extern "C" __global__ void batchnorm_grad_partial_sums_f32(double* partials, const float* dy, const float* x,
                                                          const float* mean, const float* rstd, long long n,
                                                          long long c, long long s, long long rows_per_chunk) {
    long long ci = (long long)blockIdx.y * blockDim.x + threadIdx.x;
    if (ci >= c) return;
    long long chunk = blockIdx.x;
    long long first = chunk * rows_per_chunk, last = min(n, first + rows_per_chunk);
    float m = mean[ci], r = rstd[ci];
    double sg = 0.0, sgx = 0.0;
    for (long long row = first; row < last; row++) {
        long long base = (row * c + ci) * s;
        double pg = 0.0, pgx = 0.0;
        for (long long j = 0; j < s; j++) {
            float g = dy[base + j];
            pg = bn_dadd_rn(pg, (double)g);
            pgx = bn_dadd_rn(pgx, (double)__fmul_rn(__fmul_rn(g, x[base + j] - m), r));
        }
        sg = bn_dadd_rn(sg, pg);
        sgx = bn_dadd_rn(sgx, pgx);
    }
    partials[chunk * 2 * c + ci] = sg;
    partials[chunk * 2 * c + c + ci] = sgx;
}

// sums (W) = Σ_k partials (chunks, W)[k], in chunk order, one thread per value.
extern "C" __global__ void batchnorm_reduce_partials_f64(double* sums, const double* partials, long long chunks, long long w) {
    for (long long j = mm_grid_start(); j < w; j += mm_grid_stride()) {
        double acc = 0.0;
        for (long long k = 0; k < chunks; k++) acc = bn_dadd_rn(acc, partials[k * w + j]);
        sums[j] = acc;
    }
}

// mean, rstd = 1/√(var + eps), biased var (C) from global sums (2C) over `count` values.
extern "C" __global__ void batchnorm_stats_f32(float* mean, float* rstd, float* var, const double* sums,
                                               long long c, long long count, float eps) {
    for (long long ci = mm_grid_start(); ci < c; ci += mm_grid_stride()) {
        double m = sums[ci] / (double)count;
        double v = bn_dadd_rn(sums[c + ci] / (double)count, -bn_dmul_rn(m, m));
        v = v > 0.0 ? v : 0.0;
        mean[ci] = (float)m;
        var[ci] = (float)v;
        rstd[ci] = (float)(1.0 / sqrt(bn_dadd_rn(v, (double)eps)));
    }
}

// running ← (1 − momentum)·running + momentum·batch; the variance unbiased by `unbias` = n/(n − 1).
extern "C" __global__ void batchnorm_update_running_f32(float* running_mean, float* running_var, const float* mean,
                                                        const float* var, long long c, float momentum, float unbias) {
    for (long long ci = mm_grid_start(); ci < c; ci += mm_grid_stride()) {
        float keep = 1.0f - momentum;
        running_mean[ci] = __fadd_rn(__fmul_rn(keep, running_mean[ci]), __fmul_rn(momentum, mean[ci]));
        running_var[ci] = __fadd_rn(__fmul_rn(keep, running_var[ci]), __fmul_rn(__fmul_rn(momentum, var[ci]), unbias));
    }
}

// rstd (C) = 1/√(running_var + eps) in f32, for evaluation.
extern "C" __global__ void batchnorm_eval_rstd_f32(float* rstd, const float* running_var, long long c, float eps) {
    for (long long ci = mm_grid_start(); ci < c; ci += mm_grid_stride()) {
        rstd[ci] = 1.0f / sqrtf(__fadd_rn(running_var[ci], eps));
    }
}

// out (N, C, S) = x·k + b with k = rstd·w and b = bias − mean·k per channel.
extern "C" __global__ void batchnorm_normalize_f32(float* out, const float* x, const float* weight, const float* bias,
                                                   const float* mean, const float* rstd, long long n, long long c,
                                                   long long s) {
    long long total = n * c * s;
    for (long long i = mm_grid_start(); i < total; i += mm_grid_stride()) {
        long long ci = (i / s) % c;
        float k = __fmul_rn(rstd[ci], weight[ci]);
        float b = __fadd_rn(bias[ci], -__fmul_rn(mean[ci], k));
        out[i] = __fadd_rn(__fmul_rn(x[i], k), b);
    }
}

// dweight (C) += Σdy·x̂, dbias (C) += Σdy from this rank's sums (2C) (SyncBN: the gradient
// all-reduce adds the ranks' parameter gradients later).
extern "C" __global__ void batchnorm_param_grads_f32(float* dweight, float* dbias, const double* local_sums, long long c) {
    for (long long ci = mm_grid_start(); ci < c; ci += mm_grid_stride()) {
        dbias[ci] += (float)local_sums[ci];
        dweight[ci] += (float)local_sums[c + ci];
    }
}

// dinp (N, C, S) = w·rstd·((dy − Σdy/M) − x̂·Σdy·x̂/M) from the global sums (2C) over M = count.
extern "C" __global__ void batchnorm_backward_apply_f32(float* dinp, const float* dy, const float* x, const float* weight,
                                                        const float* mean, const float* rstd, const double* global_sums,
                                                        long long count, long long n, long long c, long long s) {
    long long total = n * c * s;
    for (long long i = mm_grid_start(); i < total; i += mm_grid_stride()) {
        long long ci = (i / s) % c;
        float mean_dy = (float)(global_sums[ci] / (double)count);
        float mean_dyx = (float)(global_sums[c + ci] / (double)count);
        float k = __fmul_rn(weight[ci], rstd[ci]);
        float xhat = __fmul_rn(x[i] - mean[ci], rstd[ci]);
        dinp[i] = __fmul_rn(k, __fadd_rn(dy[i] - mean_dy, -__fmul_rn(xhat, mean_dyx)));
    }
}

MULTIMAT_EXPORT(batchnorm_partial_sums_f32)
MULTIMAT_EXPORT(batchnorm_grad_partial_sums_f32)
MULTIMAT_EXPORT(batchnorm_reduce_partials_f64)
MULTIMAT_EXPORT(batchnorm_stats_f32)
MULTIMAT_EXPORT(batchnorm_update_running_f32)
MULTIMAT_EXPORT(batchnorm_eval_rstd_f32)
MULTIMAT_EXPORT(batchnorm_normalize_f32)
MULTIMAT_EXPORT(batchnorm_param_grads_f32)
MULTIMAT_EXPORT(batchnorm_backward_apply_f32)
