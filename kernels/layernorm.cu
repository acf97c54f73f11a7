// Layer normalisation over the last dimension, forward and backward. The CPU reference is
// src/engine/ops/layernorm.rs; the launchers are src/engine/gpu/layernorm.rs.
//
// Layout: one warp per row (llm.c's layernorm kernels), several warps per block. Row statistics
// accumulate in double like the reference (rows of BERT width with large offsets lose digits in
// float sums); the lanes' partial sums are combined by a fixed butterfly, so results are
// deterministic, and differ from the reference's sequential double sum only in the last bits of
// the double, i.e. almost never after rounding to float.
//
// The parameter gradients reproduce the reference's order exactly: the reference sums
// dout·x̂ and dout over tasks of `rows_per_task` consecutive rows in float (from 0, row by row),
// then adds the task partials to the gradient in task order. Here one warp owns one task (the
// per-row input gradient and the task's partial), and a second kernel adds the partials in task
// order — bit-identical to the CPU given the same saved mean and rstd. Products that the CPU
// rounds separately are written with __fmul_rn/__fadd_rn so that no FMA contraction changes them.
#include "common.cuh"

// Butterfly sum over the 32 lanes of a full warp: every lane gets the same total.
__device__ __forceinline__ double ln_warp_sum(double v) {
    for (int offset = 16; offset > 0; offset /= 2) {
        v += __shfl_xor_sync(MM_FULL_MASK, v, offset);
    }
    return v;
}

// out (N, C) = (inp − μ)·rstd·weight + bias per row; mean (N), rstd (N) saved.
// Launch: blockDim.x a multiple of 32, one warp per row, grid covering N rows.
extern "C" __global__ void layernorm_forward_f32(float* __restrict__ out, float* __restrict__ mean, float* __restrict__ rstd,
                                                 const float* __restrict__ inp, const float* __restrict__ weight,
                                                 const float* __restrict__ bias, long long n, int c, float eps) {
    long long row = blockIdx.x * (long long)(blockDim.x / 32) + mm_warp();
    if (row >= n) return;  // the whole warp leaves together
    unsigned lane = mm_lane();
    const float* x = inp + row * c;
    double s = 0.0;
    for (int j = lane; j < c; j += 32) s += (double)x[j];
    double m = ln_warp_sum(s) / (double)c;
    double q = 0.0;
    for (int j = lane; j < c; j += 32) {
        double d = (double)x[j] - m;
        q += d * d;
    }
    double var = ln_warp_sum(q) / (double)c;
    float m32 = (float)m;
    float s32 = (float)(1.0 / sqrt(var + (double)eps));
    float* o = out + row * c;
    for (int j = lane; j < c; j += 32) {
        o[j] = __fadd_rn(__fmul_rn(__fmul_rn(x[j] - m32, s32), weight[j]), bias[j]);
    }
    if (lane == 0) {
        mean[row] = m32;
        rstd[row] = s32;
    }
}

// dinp (N, C) (written) and, per task of `rows_per_task` rows, partials (tasks, 2C) =
// [Σ dout·x̂ (C), Σ dout (C)] summed in row order from 0.
// Launch: blockDim.x a multiple of 32, one warp per task; dynamic shared memory
// (blockDim.x / 32) · 2C floats (each warp's accumulators).
extern "C" __global__ void layernorm_backward_f32(float* __restrict__ dinp, float* __restrict__ partials,
                                                  const float* __restrict__ dout, const float* __restrict__ inp,
                                                  const float* __restrict__ weight, const float* __restrict__ mean,
                                                  const float* __restrict__ rstd, long long n, int c, int rows_per_task) {
    MULTIMAT_DYNAMIC_SHARED(float, smem);
    long long task = blockIdx.x * (long long)(blockDim.x / 32) + mm_warp();
    long long tasks = (n + rows_per_task - 1) / rows_per_task;
    if (task >= tasks) return;  // whole warp
    unsigned lane = mm_lane();
    float* acc = smem + (size_t)mm_warp() * 2 * c;
    for (int j = lane; j < 2 * c; j += 32) acc[j] = 0.0f;
    // Lane ℓ zeroes slots ≡ ℓ (mod 32) of [0, 2C) but accumulates columns ≡ ℓ of both halves;
    // when C is not a multiple of 32 those differ, so the warp must sync between the phases
    // (a real race under independent thread scheduling, found by the simulator).
    __syncwarp();
    long long first = task * rows_per_task;
    long long last = first + rows_per_task < n ? first + rows_per_task : n;
    for (long long r = first; r < last; r++) {
        const float* x = inp + r * c;
        const float* dy = dout + r * c;
        float m = mean[r], s = rstd[r];
        double sg = 0.0, sgx = 0.0;
        for (int j = lane; j < c; j += 32) {
            float xhat = (x[j] - m) * s;
            float g = __fmul_rn(dy[j], weight[j]);
            sg += (double)g;
            sgx += (double)__fmul_rn(g, xhat);
            // Each lane owns columns j ≡ lane (mod 32): the accumulators see rows in order.
            acc[j] = __fadd_rn(acc[j], __fmul_rn(dy[j], xhat));
            acc[c + j] = __fadd_rn(acc[c + j], dy[j]);
        }
        float mean_g = (float)(ln_warp_sum(sg) / (double)c);
        float mean_gx = (float)(ln_warp_sum(sgx) / (double)c);
        float* d = dinp + r * c;
        for (int j = lane; j < c; j += 32) {
            float xhat = (x[j] - m) * s;
            d[j] = s * (__fmul_rn(dy[j], weight[j]) - mean_g - __fmul_rn(xhat, mean_gx));
        }
    }
    __syncwarp();  // the copy below reads slots other lanes accumulated
    float* p = partials + task * 2 * c;
    for (int j = lane; j < 2 * c; j += 32) p[j] = acc[j];
}

// dweight (C) += Σ_task partials[task][0..C), dbias (C) += Σ_task partials[task][C..2C), tasks
// in order (the reference's order). One thread per value of [dweight, dbias].
extern "C" __global__ void layernorm_param_grad_f32(float* __restrict__ dweight, float* __restrict__ dbias,
                                                    const float* __restrict__ partials, long long tasks, int c) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= 2 * c) return;
    float* target = j < c ? dweight + j : dbias + (j - c);
    float s = *target;
    for (long long t = 0; t < tasks; t++) s = __fadd_rn(s, partials[t * 2 * c + j]);
    *target = s;
}

MULTIMAT_EXPORT(layernorm_forward_f32)
MULTIMAT_EXPORT(layernorm_backward_f32)
MULTIMAT_EXPORT(layernorm_param_grad_f32)
