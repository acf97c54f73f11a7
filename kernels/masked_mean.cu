// Mean over the sequence dimension of the valid positions only (the DOS encoder's pooling). The
// CPU reference is src/engine/ops/masked_mean.rs, the launchers src/engine/gpu/masked_mean.rs.
// Both kernels reproduce the reference's arithmetic exactly: each output column sums the valid
// rows in sequence order in float and multiplies by 1/count computed in float, so the results are
// bit-identical to the CPU. A sample with no valid position gives zeros (never 0/0).
#include "common.cuh"

// Number of valid positions of sample b (all T when key_valid is null), known to every thread
// of the block. Counts are < 2^24, so the float block sum is exact.
__device__ __forceinline__ float mmean_count(const unsigned* key_valid, long long b, int t, float* scratch) {
    if (key_valid == nullptr) return (float)t;
    float local = 0.0f;
    for (int ti = threadIdx.x; ti < t; ti += blockDim.x) local += key_valid[b * t + ti] != 0u ? 1.0f : 0.0f;
    return mm_block_sum(local, scratch);
}

// out (B, C) = Σ_{valid t} inp (B, T, C) [b, t] / count_b. One block per sample, threads over C.
extern "C" __global__ void masked_mean_forward_f32(float* __restrict__ out, const float* __restrict__ inp,
                                                   const unsigned* __restrict__ key_valid, long long b, int t, int c) {
    __shared__ float scratch[33];
    long long bi = blockIdx.x;
    float count = mmean_count(key_valid, bi, t, scratch);
    float inv = count > 0.0f ? 1.0f / count : 0.0f;
    for (int j = threadIdx.x; j < c; j += blockDim.x) {
        float s = 0.0f;
        for (int ti = 0; ti < t; ti++) {
            if (key_valid == nullptr || key_valid[bi * t + ti] != 0u) s += inp[(bi * t + ti) * c + j];
        }
        out[bi * c + j] = count > 0.0f ? s * inv : 0.0f;
    }
}

// dinp (B, T, C) = dout (B, C) [b] / count_b on valid positions, 0 elsewhere (written). One block
// per sample, threads over its T·C values.
extern "C" __global__ void masked_mean_backward_f32(float* __restrict__ dinp, const float* __restrict__ dout,
                                                    const unsigned* __restrict__ key_valid, long long b, int t, int c) {
    __shared__ float scratch[33];
    long long bi = blockIdx.x;
    float count = mmean_count(key_valid, bi, t, scratch);
    float inv = count > 0.0f ? 1.0f / count : 0.0f;
    long long n = (long long)t * c;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) {
        long long ti = i / c, j = i % c;
        bool keep = count > 0.0f && (key_valid == nullptr || key_valid[bi * t + ti] != 0u);
        dinp[bi * n + i] = keep ? dout[bi * c + j] * inv : 0.0f;
    }
}

MULTIMAT_EXPORT(masked_mean_forward_f32)
MULTIMAT_EXPORT(masked_mean_backward_f32)
