// L2 normalisation of rows, y = x / max(‖x‖, eps) (PyTorch F.normalize), forward and backward;
// the CPU reference is src/engine/ops/l2norm.rs.
//
// One block per row (rows are embeddings: D = 128…768 values, N = a batch), threads striding over
// the row. The row's sum of squares is accumulated in f64 like the reference (every f32 square is
// exact in f64) and reduced in a fixed tree, so results are deterministic; the order differs from
// the reference's sequential sum, which can move the f32-rounded norm by one ulp.
// blockDim.x must be a power of two ≤ 256 (the launcher picks it).
#include "common.cuh"

// Σ over the block of v, in f64, in a fixed tree; every thread gets the result.
__device__ __forceinline__ double l2norm_block_sum(double v) {
    __shared__ double tree[256];
    __syncthreads();  // a previous call's readers are done with tree[0]
    tree[threadIdx.x] = v;
    __syncthreads();
    for (unsigned stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (threadIdx.x < stride) tree[threadIdx.x] += tree[threadIdx.x + stride];
        __syncthreads();
    }
    return tree[0];
}

// out (N, C) = inp / max(‖row‖, eps); norms (N) = ‖row‖ (saved for the backward).
extern "C" __global__ void l2norm_forward_f32(float* out, float* norms, const float* inp, int c, float eps) {
    const long long row = blockIdx.x;
    const float* x = inp + row * c;
    double ss = 0.0;
    for (int j = threadIdx.x; j < c; j += blockDim.x) {
        double v = static_cast<double>(x[j]);
        ss += v * v;
    }
    ss = l2norm_block_sum(ss);
    float norm = static_cast<float>(sqrt(ss));
    float inv = 1.0f / fmaxf(norm, eps);  // fmaxf(NaN, eps) = eps, as Rust's f32::max
    for (int j = threadIdx.x; j < c; j += blockDim.x) {
        out[row * c + j] = x[j] * inv;
    }
    if (threadIdx.x == 0) norms[row] = norm;
}

// dinp (N, C) (written) from dout, the forward output y and the saved norms:
// ‖x‖ > eps: dinp = (dout − y·(y·dout)) / ‖x‖;  clamped: dinp = dout / eps.
extern "C" __global__ void l2norm_backward_f32(float* dinp, const float* dout, const float* out, const float* norms,
                                               int c, float eps) {
    const long long row = blockIdx.x;
    const float* g = dout + row * c;
    const float* y = out + row * c;
    const float norm = norms[row];
    if (norm > eps) {  // the same branch for the whole block: the barriers below are uniform
        double dot = 0.0;
        for (int j = threadIdx.x; j < c; j += blockDim.x) {
            dot += static_cast<double>(y[j]) * static_cast<double>(g[j]);
        }
        const float y_dot_g = static_cast<float>(l2norm_block_sum(dot));
        const float inv = 1.0f / norm;
        for (int j = threadIdx.x; j < c; j += blockDim.x) {
            // (g − y·(y·g))·inv in the reference's f32 roundings (no FMA contraction).
            dinp[row * c + j] = __fmul_rn(__fadd_rn(g[j], -__fmul_rn(y[j], y_dot_g)), inv);
        }
    } else {
        const float inv = 1.0f / eps;
        for (int j = threadIdx.x; j < c; j += blockDim.x) {
            dinp[row * c + j] = g[j] * inv;
        }
    }
}

MULTIMAT_EXPORT(l2norm_forward_f32)
MULTIMAT_EXPORT(l2norm_backward_f32)
