// Shared device helpers for every kernels/*.cu, and the two macros that let one source compile
// both under NVRTC (for the GPU) and as C++20 under -DMULTIMAT_SIM (the CPU simulator):
//
//   MULTIMAT_DYNAMIC_SHARED(type, name);  inside a kernel: `type* name` over the launch's dynamic
//                                          shared memory (16-byte aligned)
//   MULTIMAT_EXPORT(kernel)               after the kernels of a file, once per kernel: under the
//                                          simulator it defines the C entry point
//                                          multimat_sim_<kernel>(const MultimatSimLaunch*, void**)
//                                          that build.rs registers; under NVRTC it is empty.
//
// Every kernel is `extern "C" __global__ void name(args…)` so the GPU launcher finds it by name.
// NVRTC has no C library headers: kernels include nothing but this file, and use mm_inf()
// instead of INFINITY.
#pragma once

#if defined(MULTIMAT_SIM)
#include "sim/cuda_sim.h"
#else
#define MULTIMAT_EXPORT(name)
#define MULTIMAT_DYNAMIC_SHARED(type, name)                       \
    extern __shared__ __align__(16) unsigned char mm_dynamic_smem[]; \
    type* name = reinterpret_cast<type*>(mm_dynamic_smem)
#endif

#define MM_FULL_MASK 0xffffffffu

// +∞ without INFINITY (which NVRTC does not define).
__device__ __forceinline__ float mm_inf() { return __int_as_float(0x7f800000); }

// This thread's rank in its block (x fastest), the block's size, and the warp/lane of the rank.
__device__ __forceinline__ unsigned mm_thread_rank() {
    return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}
__device__ __forceinline__ unsigned mm_block_threads() { return blockDim.x * blockDim.y * blockDim.z; }
__device__ __forceinline__ unsigned mm_lane() { return mm_thread_rank() % 32u; }
__device__ __forceinline__ unsigned mm_warp() { return mm_thread_rank() / 32u; }
// Number of threads in this thread's warp: 32, or fewer in a block's last, partial warp.
__device__ __forceinline__ unsigned mm_warp_lanes() {
    unsigned first = mm_warp() * 32u, n = mm_block_threads();
    return n - first < 32u ? n - first : 32u;
}

// Grid-stride loops over n elements: `for (long long i = mm_grid_start(); i < n; i += mm_grid_stride())`.
__device__ __forceinline__ long long mm_grid_start() {
    return static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ long long mm_grid_stride() { return static_cast<long long>(gridDim.x) * blockDim.x; }

// Warp reductions over the lanes that exist (a partial last warp included): the result is in
// lane 0 only. Fixed order (tree by shfl_down), so results do not depend on timing.
__device__ __forceinline__ float mm_warp_sum(float v) {
    unsigned lanes = mm_warp_lanes(), lane = mm_lane();
    unsigned mask = lanes == 32u ? MM_FULL_MASK : ((1u << lanes) - 1u);
    for (unsigned offset = 16; offset > 0; offset /= 2) {
        float other = __shfl_down_sync(mask, v, offset);
        if (lane + offset < lanes) v += other;
    }
    return v;
}
__device__ __forceinline__ float mm_warp_max(float v) {
    unsigned lanes = mm_warp_lanes(), lane = mm_lane();
    unsigned mask = lanes == 32u ? MM_FULL_MASK : ((1u << lanes) - 1u);
    for (unsigned offset = 16; offset > 0; offset /= 2) {
        float other = __shfl_down_sync(mask, v, offset);
        if (lane + offset < lanes) v = fmaxf(v, other);
    }
    return v;
}

// Block reductions (any block shape up to 1024 threads): every thread of the block must call
// them; every thread gets the result. `scratch` is 33 floats of shared memory the caller owns
// (the block's warp partials + the result); consecutive calls may reuse it (the leading barrier
// keeps a call from overwriting what the previous one's readers still need).
__device__ __forceinline__ float mm_block_sum(float v, float* scratch) {
    v = mm_warp_sum(v);
    unsigned warps = (mm_block_threads() + 31u) / 32u;
    __syncthreads();
    if (mm_lane() == 0) scratch[mm_warp()] = v;
    __syncthreads();
    if (mm_warp() == 0) {
        float p = mm_lane() < warps ? scratch[mm_lane()] : 0.0f;
        p = mm_warp_sum(p);
        if (mm_lane() == 0) scratch[32] = p;
    }
    __syncthreads();
    return scratch[32];
}
__device__ __forceinline__ float mm_block_max(float v, float* scratch) {
    v = mm_warp_max(v);
    unsigned warps = (mm_block_threads() + 31u) / 32u;
    __syncthreads();
    if (mm_lane() == 0) scratch[mm_warp()] = v;
    __syncthreads();
    if (mm_warp() == 0) {
        float p = mm_lane() < warps ? scratch[mm_lane()] : -mm_inf();
        p = mm_warp_max(p);
        if (mm_lane() == 0) scratch[32] = p;
    }
    __syncthreads();
    return scratch[32];
}

// σ(x) without overflow in either tail (e = exp(−|x|) ≤ 1), as the CPU reference computes it.
__device__ __forceinline__ float mm_sigmoid(float x) {
    float e = expf(-fabsf(x));
    float r = 1.0f / (1.0f + e);
    return x >= 0.0f ? r : e * r;
}
