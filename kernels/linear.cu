// The non-GEMM parts of a linear layer (the products go to cuBLAS): the bias broadcast of the
// forward and the bias gradient of the backward.
#include "common.cuh"

// y (N, OC) += b (OC) on every row.
extern "C" __global__ void add_bias_rows_f32(float* y, const float* b, long long n, int oc) {
    long long total = n * oc;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        y[i] += b[i % oc];
    }
}

// db (OC) += Σ_n dy (N, OC): one thread per column summing the rows in order — the CPU
// reference's order, so the result is bit-identical to it and deterministic. Adjacent threads
// read adjacent columns, so each row read is coalesced.
extern "C" __global__ void bias_grad_f32(float* db, const float* dy, long long n, int oc) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= oc) return;
    float s = db[c];
    for (long long r = 0; r < n; r++) {
        s += dy[r * oc + c];
    }
    db[c] = s;
}

MULTIMAT_EXPORT(add_bias_rows_f32)
MULTIMAT_EXPORT(bias_grad_f32)
