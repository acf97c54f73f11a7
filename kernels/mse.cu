// Mean squared error L = (1/N) Σ (pred − target)², the fine-tuning regression loss; the CPU
// reference is src/engine/ops/mse.rs.
//
// Forward: a fixed grid of blocks (the launcher's, a function of N only) each sums the squared
// differences of its grid-stride share in f64 and reduces them in a fixed tree into one partial
// per block; the host adds the partials in block order — deterministic, though in another order
// than the reference's sequential f64 sum. Backward: a per-element map computed exactly as the
// reference (bit-identical). blockDim.x must be a power of two ≤ 256.
#include "common.cuh"

// partials[b] = Σ over block b's share of (pred − target)² in f64 (bit pattern of a double).
extern "C" __global__ void mse_partials_f32(unsigned long long* partials, const float* pred, const float* target,
                                            long long n) {
    __shared__ double tree[256];
    double acc = 0.0;
    for (long long i = mm_grid_start(); i < n; i += mm_grid_stride()) {
        double d = static_cast<double>(pred[i]) - static_cast<double>(target[i]);
        acc += d * d;
    }
    tree[threadIdx.x] = acc;
    __syncthreads();
    for (unsigned stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (threadIdx.x < stride) tree[threadIdx.x] += tree[threadIdx.x + stride];
        __syncthreads();
    }
    if (threadIdx.x == 0) partials[blockIdx.x] = static_cast<unsigned long long>(__double_as_longlong(tree[0]));
}

// dpred[i] = k·(pred[i] − target[i]) with k = 2·dloss/N (written).
extern "C" __global__ void mse_backward_f32(float* dpred, const float* pred, const float* target, float k, long long n) {
    for (long long i = mm_grid_start(); i < n; i += mm_grid_stride()) {
        dpred[i] = k * (pred[i] - target[i]);
    }
}

MULTIMAT_EXPORT(mse_partials_f32)
MULTIMAT_EXPORT(mse_backward_f32)
