// Elementwise and copy kernels shared by every layer: fill, add, mul, axpy, scale, and the strided
// column-block copy behind concat/split along the last dimension. Grid-stride loops, so any grid
// size is correct; the launcher caps the grid (engine::backend::MAX_ELEMENTWISE_BLOCKS).
#include "common.cuh"

// x[i] = v for i < n
extern "C" __global__ void fill_f32(float* x, float v, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        x[i] = v;
    }
}

// out[i] = a[i] + b[i]
extern "C" __global__ void add_f32(float* out, const float* a, const float* b, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        out[i] = a[i] + b[i];
    }
}

// y[i] += alpha * x[i]   (alpha = 1: gradient accumulation, exactly y + x as on the CPU)
extern "C" __global__ void axpy_f32(float* y, const float* x, float alpha, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        y[i] = alpha == 1.0f ? y[i] + x[i] : fmaf(alpha, x[i], y[i]);
    }
}

// x[i] *= s
extern "C" __global__ void scale_f32(float* x, float s, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        x[i] *= s;
    }
}

// out[i] = a[i] * b[i]
extern "C" __global__ void mul_f32(float* out, const float* a, const float* b, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        out[i] = a[i] * b[i];
    }
}

// dst[r * dst_ld + dst_col + c] = src[r * src_ld + src_col + c] for r < rows, c < cols:
// one column block of a row-major matrix into another (concat/split along the last dimension).
extern "C" __global__ void copy_columns_f32(float* dst, long long dst_ld, long long dst_col,
                                            const float* src, long long src_ld, long long src_col,
                                            long long rows, long long cols) {
    long long n = rows * cols;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        long long r = i / cols, c = i % cols;
        dst[r * dst_ld + dst_col + c] = src[r * src_ld + src_col + c];
    }
}

MULTIMAT_EXPORT(fill_f32)
MULTIMAT_EXPORT(add_f32)
MULTIMAT_EXPORT(mul_f32)
MULTIMAT_EXPORT(axpy_f32)
MULTIMAT_EXPORT(copy_columns_f32)
