// The optimiser's kernels: the AdamW update of every parameter of a model in ONE launch, the
// global gradient norm's per-block partial sums, gradient clipping and zeroing — each one launch
// for all parameters.
//
// Parameters are separate device buffers (every layer owns its tensors), so these kernels read a
// chunk table (engine::gpu::adamw::ParamChunks, uploaded once per parameter set and cached): one
// entry per block, naming ≤ ADAMW_CHUNK consecutive values of one parameter by the addresses of
// its value, gradient and two moments. No block looks anything up, a parameter of any size is
// split evenly over blocks, and a small one costs one block, not a grid.
//
// Exactness: the update and the clip are per-element maps computed exactly as the CPU reference
// (src/engine/optim.rs) computes them — f32 operations spelled with __fmul_rn/__fadd_rn so that
// the compiler cannot contract them into FMAs, f64 where the reference uses f64 — so a GPU step
// is bit-identical to the CPU step. The norm's per-block sums are f64 (every f32 square is exact
// in f64), reduced in a fixed tree; the host adds the partials in order.
#include "common.cuh"

// One chunk of one parameter (48 bytes; written by the launcher as 12 little-endian u32).
struct ParamChunk {
    unsigned long long value;       // float* (0 in gradient-only tables)
    unsigned long long grad;        // float*
    unsigned long long exp_avg;     // float* m (0 in gradient-only tables)
    unsigned long long exp_avg_sq;  // float* v (0 in gradient-only tables)
    long long len;                  // values in this chunk
    long long decay;                // 1: decoupled weight decay applies to this parameter
};

// The AdamW step (PyTorch torch.optim.AdamW, one step):
//   w ← w·decay;  m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g·g;
//   w ← w − step_size·m / (√v / √(1−β2ᵗ) + eps)        with step_size = lr/(1−β1ᵗ)
// `decay_factor` = 1 − lr·λ (f32, as the reference rounds it), applied where the chunk says so.
extern "C" __global__ void adamw_f32(const ParamChunk* chunks, float beta1, float beta2, float one_minus_beta1,
                                     float one_minus_beta2, float decay_factor, double step_size,
                                     double bias_correction2_sqrt, double eps) {
    const ParamChunk c = chunks[blockIdx.x];
    float* w = reinterpret_cast<float*>(c.value);
    const float* g = reinterpret_cast<const float*>(c.grad);
    float* m = reinterpret_cast<float*>(c.exp_avg);
    float* v = reinterpret_cast<float*>(c.exp_avg_sq);
    const float decay = c.decay ? decay_factor : 1.0f;
    for (long long i = threadIdx.x; i < c.len; i += blockDim.x) {
        float gi = g[i];
        float wi = __fmul_rn(w[i], decay);
        float mi = __fadd_rn(__fmul_rn(beta1, m[i]), __fmul_rn(one_minus_beta1, gi));
        float vi = __fadd_rn(__fmul_rn(beta2, v[i]), __fmul_rn(__fmul_rn(one_minus_beta2, gi), gi));
        // f64 from here, as the reference: a quotient and a sum (nothing to contract).
        double denom = sqrt(static_cast<double>(vi)) / bias_correction2_sqrt + eps;
        wi = wi - static_cast<float>(step_size * static_cast<double>(mi) / denom);
        w[i] = wi;
        m[i] = mi;
        v[i] = vi;
    }
}

// partials[b] = Σ g² over chunk b, in f64 (bit pattern of a double; the host sums the partials in
// chunk order). blockDim.x must be a power of two ≤ 1024 (the launcher uses ADAMW_THREADS).
extern "C" __global__ void grad_sumsq_f32(const ParamChunk* chunks, unsigned long long* partials) {
    __shared__ double tree[1024];
    const ParamChunk c = chunks[blockIdx.x];
    const float* g = reinterpret_cast<const float*>(c.grad);
    double acc = 0.0;
    for (long long i = threadIdx.x; i < c.len; i += blockDim.x) {
        double gi = static_cast<double>(g[i]);
        acc += gi * gi;  // the square of an f32 is exact in f64, so contraction cannot change it
    }
    tree[threadIdx.x] = acc;
    __syncthreads();
    for (unsigned stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (threadIdx.x < stride) tree[threadIdx.x] += tree[threadIdx.x + stride];
        __syncthreads();
    }
    if (threadIdx.x == 0) partials[blockIdx.x] = static_cast<unsigned long long>(__double_as_longlong(tree[0]));
}

// g *= coef over every chunk (gradient clipping; one rounding per value, as the reference).
extern "C" __global__ void grad_scale_f32(const ParamChunk* chunks, float coef) {
    const ParamChunk c = chunks[blockIdx.x];
    float* g = reinterpret_cast<float*>(c.grad);
    for (long long i = threadIdx.x; i < c.len; i += blockDim.x) {
        g[i] = g[i] * coef;
    }
}

// g = value over every chunk (zeroing all gradients after a step).
extern "C" __global__ void grad_fill_f32(const ParamChunk* chunks, float value) {
    const ParamChunk c = chunks[blockIdx.x];
    float* g = reinterpret_cast<float*>(c.grad);
    for (long long i = threadIdx.x; i < c.len; i += blockDim.x) {
        g[i] = value;
    }
}

MULTIMAT_EXPORT(adamw_f32)
MULTIMAT_EXPORT(grad_sumsq_f32)
MULTIMAT_EXPORT(grad_scale_f32)
MULTIMAT_EXPORT(grad_fill_f32)
