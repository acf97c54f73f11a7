// Radial-basis expansions of scalar edge values into K features (engine::ops::rbf): Gaussian
// φ_k(x) = exp(−u²) and multiquadric φ_k(x) = √(1 + u²) with u = (x − c_k)/ℓ, and their
// gradients w.r.t. x. Centres c_k = vmin + k·(vmax − vmin)/(K − 1) are computed in double exactly
// as the CPU does, and every multiply-add is spelled with round-to-nearest intrinsics so NVRTC's
// default contraction into FMAs cannot change a rounding: the multiquadric kernels (sqrt and
// division are correctly rounded on the GPU) are bit-identical to the CPU; the Gaussian ones
// differ only by the GPU's expf (≤ 2 ulp).
#include "common.cuh"

#if defined(MULTIMAT_SIM)
// The simulator's C++ does not contract a*b + c, so plain operators round like the intrinsics.
static inline double rbf_dmul_rn(double a, double b) { return a * b; }
static inline double rbf_dadd_rn(double a, double b) { return a + b; }
#else
__device__ __forceinline__ double rbf_dmul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ double rbf_dadd_rn(double a, double b) { return __dadd_rn(a, b); }
#endif

// c_k as the CPU computes it: (vmin as f64 + k as f64 · step) as f32, step in f64.
__device__ __forceinline__ float rbf_centre(float vmin, float vmax, long long bins, long long k) {
    double step = ((double)vmax - (double)vmin) / (double)(bins - 1);
    return (float)rbf_dadd_rn((double)vmin, rbf_dmul_rn((double)k, step));
}

// out (N, K) = exp(−((x_n − c_k)·inv_l)²)
extern "C" __global__ void gaussian_rbf_forward_f32(float* out, const float* x, long long n, long long bins,
                                                    float vmin, float vmax, float inv_l) {
    long long total = n * bins;
    for (long long i = mm_grid_start(); i < total; i += mm_grid_stride()) {
        long long row = i / bins, k = i - row * bins;
        float u = (x[row] - rbf_centre(vmin, vmax, bins, k)) * inv_l;
        out[i] = expf(__fmul_rn(-u, u));
    }
}

// dx (N) = Σ_k dout[n, k] · (−2u·inv_l) · exp(−u²), summed over k in order (one thread per n)
extern "C" __global__ void gaussian_rbf_backward_f32(float* dx, const float* dout, const float* x, long long n,
                                                     long long bins, float vmin, float vmax, float inv_l) {
    for (long long row = mm_grid_start(); row < n; row += mm_grid_stride()) {
        float xv = x[row], acc = 0.0f;
        for (long long k = 0; k < bins; k++) {
            float u = (xv - rbf_centre(vmin, vmax, bins, k)) * inv_l;
            float slope = __fmul_rn(__fmul_rn(-2.0f, u), inv_l);
            acc = __fadd_rn(acc, __fmul_rn(__fmul_rn(dout[row * bins + k], slope), expf(__fmul_rn(-u, u))));
        }
        dx[row] = acc;
    }
}

// out (N, K) = √(1 + ((x_n − c_k)·inv_l)²)
extern "C" __global__ void multiquadric_rbf_forward_f32(float* out, const float* x, long long n, long long bins,
                                                        float vmin, float vmax, float inv_l) {
    long long total = n * bins;
    for (long long i = mm_grid_start(); i < total; i += mm_grid_stride()) {
        long long row = i / bins, k = i - row * bins;
        float u = (x[row] - rbf_centre(vmin, vmax, bins, k)) * inv_l;
        out[i] = sqrtf(__fadd_rn(1.0f, __fmul_rn(u, u)));
    }
}

// dx (N) = Σ_k dout[n, k] · (u·inv_l) / √(1 + u²), summed over k in order (one thread per n)
extern "C" __global__ void multiquadric_rbf_backward_f32(float* dx, const float* dout, const float* x, long long n,
                                                         long long bins, float vmin, float vmax, float inv_l) {
    for (long long row = mm_grid_start(); row < n; row += mm_grid_stride()) {
        float xv = x[row], acc = 0.0f;
        for (long long k = 0; k < bins; k++) {
            float u = (xv - rbf_centre(vmin, vmax, bins, k)) * inv_l;
            float term = __fmul_rn(dout[row * bins + k], __fmul_rn(u, inv_l)) / sqrtf(__fadd_rn(1.0f, __fmul_rn(u, u)));
            acc = __fadd_rn(acc, term);
        }
        dx[row] = acc;
    }
}

MULTIMAT_EXPORT(gaussian_rbf_forward_f32)
MULTIMAT_EXPORT(gaussian_rbf_backward_f32)
MULTIMAT_EXPORT(multiquadric_rbf_forward_f32)
MULTIMAT_EXPORT(multiquadric_rbf_backward_f32)
