// Pointwise activations, forward and backward, for any shape flattened to n elements: ReLU,
// sigmoid, SiLU, softplus (PyTorch's β and threshold) and GELU in its erf and tanh forms. The CPU
// references are src/engine/ops/activation.rs and gelu.rs; tests/cuda_sim.rs compares the two.
// Every kernel is a grid-stride loop, so any grid covers any n. Backward kernels write (=)
// dinp from dout and the saved input, like the references.
//
// Numerics: sigmoid is built from e = exp(−|x|) ≤ 1 so neither tail overflows; its derivative is
// σ(x)σ(−x) = e/(1+e)², which keeps relative accuracy in both tails (1 − σ would cancel).
// GELU-erf uses erfc for Φ so the left tail keeps relative accuracy; GELU-tanh uses the identity
// ½(1 + tanh u) = σ(2u) for the same reason.
#include "common.cuh"

#define MM_GRID_STRIDE_LOOP(i, n) for (long long i = mm_grid_start(); i < (n); i += mm_grid_stride())

// e = exp(−|x|) and r = 1/(1+e): σ(x) = x ≥ 0 ? r : e·r, σ(−x) = x ≥ 0 ? e·r : r.
struct MmSigmoidParts {
    float e, r;
};
__device__ __forceinline__ MmSigmoidParts mm_sigmoid_parts(float x) {
    float e = expf(-fabsf(x));
    return MmSigmoidParts{e, 1.0f / (1.0f + e)};
}
// σ'(x) = σ(x)σ(−x) = e·r².
__device__ __forceinline__ float mm_sigmoid_grad(float x) {
    MmSigmoidParts p = mm_sigmoid_parts(x);
    return p.e * p.r * p.r;
}

extern "C" __global__ void relu_forward(float* __restrict__ out, const float* __restrict__ inp, long long n) {
    MM_GRID_STRIDE_LOOP(i, n) out[i] = fmaxf(inp[i], 0.0f);
}
extern "C" __global__ void relu_backward(float* __restrict__ dinp, const float* __restrict__ dout, const float* __restrict__ inp,
                                         long long n) {
    MM_GRID_STRIDE_LOOP(i, n) dinp[i] = inp[i] > 0.0f ? dout[i] : 0.0f;
}

extern "C" __global__ void sigmoid_forward(float* __restrict__ out, const float* __restrict__ inp, long long n) {
    MM_GRID_STRIDE_LOOP(i, n) out[i] = mm_sigmoid(inp[i]);
}
extern "C" __global__ void sigmoid_backward(float* __restrict__ dinp, const float* __restrict__ dout, const float* __restrict__ inp,
                                            long long n) {
    MM_GRID_STRIDE_LOOP(i, n) dinp[i] = dout[i] * mm_sigmoid_grad(inp[i]);
}

// silu(x) = x·σ(x); silu'(x) = σ(x) + x·σ(x)σ(−x).
extern "C" __global__ void silu_forward(float* __restrict__ out, const float* __restrict__ inp, long long n) {
    MM_GRID_STRIDE_LOOP(i, n) {
        float x = inp[i];
        out[i] = x * mm_sigmoid(x);
    }
}
extern "C" __global__ void silu_backward(float* __restrict__ dinp, const float* __restrict__ dout, const float* __restrict__ inp,
                                         long long n) {
    MM_GRID_STRIDE_LOOP(i, n) {
        float x = inp[i];
        MmSigmoidParts p = mm_sigmoid_parts(x);
        float s = x >= 0.0f ? p.r : p.e * p.r;
        dinp[i] = dout[i] * (s + x * p.e * p.r * p.r);
    }
}

// softplus(x) = ln(1 + e^{βx})/β = (max(βx, 0) + ln(1 + e^{−|βx|}))/β, the identity where
// βx > threshold (PyTorch: β = 1, threshold = 20 by default).
extern "C" __global__ void softplus_forward(float* __restrict__ out, const float* __restrict__ inp, long long n, float beta,
                                            float threshold) {
    MM_GRID_STRIDE_LOOP(i, n) {
        float x = inp[i], bx = beta * x;
        out[i] = bx > threshold ? x : (fmaxf(bx, 0.0f) + log1pf(expf(-fabsf(bx)))) / beta;
    }
}
// softplus'(x) = σ(βx), or 1 on the identity branch.
extern "C" __global__ void softplus_backward(float* __restrict__ dinp, const float* __restrict__ dout, const float* __restrict__ inp,
                                             long long n, float beta, float threshold) {
    MM_GRID_STRIDE_LOOP(i, n) {
        float bx = beta * inp[i];
        dinp[i] = bx > threshold ? dout[i] : dout[i] * mm_sigmoid(bx);
    }
}

// GELU, exact: x·Φ(x), Φ(x) = ½·erfc(−x/√2); gelu'(x) = Φ(x) + x·φ(x), φ(x) = e^{−x²/2}/√(2π).
#define MM_FRAC_1_SQRT_2 0.70710678118654752f
#define MM_FRAC_1_SQRT_2PI 0.39894228040143268f
extern "C" __global__ void gelu_erf_forward(float* __restrict__ out, const float* __restrict__ inp, long long n) {
    MM_GRID_STRIDE_LOOP(i, n) {
        float x = inp[i];
        out[i] = x * (0.5f * erfcf(-x * MM_FRAC_1_SQRT_2));
    }
}
extern "C" __global__ void gelu_erf_backward(float* __restrict__ dinp, const float* __restrict__ dout, const float* __restrict__ inp,
                                             long long n) {
    MM_GRID_STRIDE_LOOP(i, n) {
        float x = inp[i];
        float cdf = 0.5f * erfcf(-x * MM_FRAC_1_SQRT_2);
        float pdf = MM_FRAC_1_SQRT_2PI * expf(-0.5f * x * x);
        dinp[i] = dout[i] * (cdf + x * pdf);
    }
}

// GELU, tanh form: ½x(1 + tanh u) = x·σ(2u), u = √(2/π)(x + 0.044715x³);
// derivative σ(2u) + x·2σ(2u)σ(−2u)·u', u' = √(2/π)(1 + 3·0.044715x²).
#define MM_SQRT_2_OVER_PI 0.79788456080286536f
#define MM_GELU_TANH_C 0.044715f
extern "C" __global__ void gelu_tanh_forward(float* __restrict__ out, const float* __restrict__ inp, long long n) {
    MM_GRID_STRIDE_LOOP(i, n) {
        float x = inp[i];
        float u = MM_SQRT_2_OVER_PI * (x + MM_GELU_TANH_C * x * x * x);
        out[i] = x * mm_sigmoid(2.0f * u);
    }
}
extern "C" __global__ void gelu_tanh_backward(float* __restrict__ dinp, const float* __restrict__ dout, const float* __restrict__ inp,
                                              long long n) {
    MM_GRID_STRIDE_LOOP(i, n) {
        float x = inp[i];
        float u = MM_SQRT_2_OVER_PI * (x + MM_GELU_TANH_C * x * x * x);
        float du = MM_SQRT_2_OVER_PI * (1.0f + 3.0f * MM_GELU_TANH_C * x * x);
        MmSigmoidParts p = mm_sigmoid_parts(2.0f * u);
        float s = u >= 0.0f ? p.r : p.e * p.r;
        // Where e underflows to 0 the second term is 0; guarded because du (∝ x²) may be ∞ there.
        float slope = p.e > 0.0f ? 2.0f * x * p.e * p.r * p.r * du : 0.0f;
        dinp[i] = dout[i] * (s + slope);
    }
}

MULTIMAT_EXPORT(relu_forward)
MULTIMAT_EXPORT(relu_backward)
MULTIMAT_EXPORT(sigmoid_forward)
MULTIMAT_EXPORT(sigmoid_backward)
MULTIMAT_EXPORT(silu_forward)
MULTIMAT_EXPORT(silu_backward)
MULTIMAT_EXPORT(softplus_forward)
MULTIMAT_EXPORT(softplus_backward)
MULTIMAT_EXPORT(gelu_erf_forward)
MULTIMAT_EXPORT(gelu_erf_backward)
MULTIMAT_EXPORT(gelu_tanh_forward)
MULTIMAT_EXPORT(gelu_tanh_backward)
