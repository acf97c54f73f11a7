// Self-test kernels for the CUDA execution model (tests/cuda_sim.rs runs them on the simulator
// and checks every result; the NVRTC test compiles them for sm_80/sm_90 like every kernel).
// Each exercises one mechanism: block barriers over static and dynamic shared memory, every
// shuffle kind with widths and partial warps, votes, atomics, 2-D/3-D indices, the common.cuh
// reductions, and three deliberate deadlocks that the simulator must report, not hang on.
#include "common.cuh"

// Reverse each block's slice of `in` through static shared memory (one barrier). Blocks run in
// parallel on the simulator, so a shared copy per block is needed for this to pass.
extern "C" __global__ void selftest_block_reverse(float* __restrict__ out, const float* __restrict__ in, int n) {
    __shared__ float tile[1024];
    unsigned t = threadIdx.x, base = blockIdx.x * blockDim.x;
    tile[t] = base + t < static_cast<unsigned>(n) ? in[base + t] : -1.0f;
    __syncthreads();
    unsigned from = blockDim.x - 1 - t;
    if (base + t < static_cast<unsigned>(n)) out[base + t] = tile[from];
}

// Per-block tree sum in dynamic shared memory (log2(blockDim) barriers in a loop). blockDim.x
// must be a power of two; shared_bytes = blockDim.x * 4.
extern "C" __global__ void selftest_dynamic_tree_sum(float* __restrict__ block_sums, const float* __restrict__ in, int n) {
    MULTIMAT_DYNAMIC_SHARED(float, buf);
    unsigned t = threadIdx.x;
    unsigned i = blockIdx.x * blockDim.x + t;
    buf[t] = i < static_cast<unsigned>(n) ? in[i] : 0.0f;
    __syncthreads();
    for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
        if (t < half) buf[t] += buf[t + half];
        __syncthreads();
    }
    if (t == 0) block_sums[blockIdx.x] = buf[0];
}

// Every shuffle kind on a 1-D block (any size: the last warp may be partial). For each thread,
// out[rank*5 + k] = result of: k=0 __shfl_sync(src = arg), 1 __shfl_up_sync(delta = arg),
// 2 __shfl_down_sync(delta = arg), 3 __shfl_xor_sync(lane mask = arg), all with `width` and the
// value 1000 + rank, and k=4 the low word of a 64-bit __shfl_down_sync of (rank << 32 | rank).
// The mask names the lanes that exist.
extern "C" __global__ void selftest_shuffles(int* __restrict__ out, int arg, int width) {
    unsigned rank = mm_thread_rank(), lanes = mm_warp_lanes();
    unsigned mask = lanes == 32u ? MM_FULL_MASK : ((1u << lanes) - 1u);
    int v = 1000 + static_cast<int>(rank);
    out[rank * 5 + 0] = __shfl_sync(mask, v, arg, width);
    out[rank * 5 + 1] = __shfl_up_sync(mask, v, static_cast<unsigned>(arg), width);
    out[rank * 5 + 2] = __shfl_down_sync(mask, v, static_cast<unsigned>(arg), width);
    out[rank * 5 + 3] = __shfl_xor_sync(mask, v, arg, width);
    unsigned long long wide = (static_cast<unsigned long long>(rank) << 32) | rank;
    unsigned long long got = __shfl_down_sync(mask, wide, static_cast<unsigned>(arg), width);
    out[rank * 5 + 4] = (got >> 32) == (got & 0xffffffffull) ? static_cast<int>(got & 0xffffffffull) : -2;
}

// Shuffles with a full mask in a partial warp read lanes that do not exist: out[rank] is what
// lane `lane + 1` held (the simulator returns its poison, all bits set, for absent lanes).
extern "C" __global__ void selftest_shuffle_absent_lane(int* __restrict__ out) {
    unsigned rank = mm_thread_rank();
    out[rank] = __shfl_down_sync(MM_FULL_MASK, static_cast<int>(rank), 1u);
}

// Two halves of each warp shuffle independently with disjoint masks (legal since Volta), then the
// whole warp meets at __syncwarp. out[rank] = value from the lane `arg` places up, in-half.
extern "C" __global__ void selftest_half_warps(int* __restrict__ out) {
    unsigned lane = mm_lane(), rank = mm_thread_rank();
    int v = static_cast<int>(rank);
    int got;
    if (lane < 16) {
        got = __shfl_xor_sync(0x0000ffffu, v, 1);
    } else {
        got = __shfl_xor_sync(0xffff0000u, v, 2);
    }
    __syncwarp();
    out[rank] = got;
}

// Votes: predicate = (rank % 3 == 0). out[rank*3 + 0] = ballot, 1 = any, 2 = all, over the lanes
// that exist; plus all() of a predicate true everywhere into out[rank*3 + 2] when rank % 2.
extern "C" __global__ void selftest_votes(unsigned* __restrict__ out) {
    unsigned rank = mm_thread_rank(), lanes = mm_warp_lanes();
    unsigned mask = lanes == 32u ? MM_FULL_MASK : ((1u << lanes) - 1u);
    int pred = rank % 3u == 0u;
    out[rank * 3 + 0] = __ballot_sync(mask, pred);
    out[rank * 3 + 1] = static_cast<unsigned>(__any_sync(mask, pred));
    int all_pred = __all_sync(mask, pred);
    int all_true = __all_sync(mask, 1);
    out[rank * 3 + 2] = static_cast<unsigned>(all_pred) | (static_cast<unsigned>(all_true) << 1);
}

// Atomics from every thread of the grid into a few counters:
// ints[0] += 1 (atomicAdd), ints[1] = max(global id) (atomicMax), ints[2] = min(-global id)
// (atomicMin), ints[3] += 2 via an atomicCAS loop, ints[4] = some id (atomicExch: any one),
// uints[0] += id (atomicAdd unsigned), uints[1] = max(id), floats[0] += 0.5 (exact in f32).
extern "C" __global__ void selftest_atomics(int* __restrict__ ints, unsigned* __restrict__ uints, float* __restrict__ floats) {
    int id = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
    atomicAdd(&ints[0], 1);
    atomicMax(&ints[1], id);
    atomicMin(&ints[2], -id);
    int old = atomicAdd(&ints[3], 0);
    for (;;) {
        int seen = atomicCAS(&ints[3], old, old + 2);
        if (seen == old) break;
        old = seen;
    }
    atomicExch(&ints[4], id);
    atomicAdd(&uints[0], static_cast<unsigned>(id));
    atomicMax(&uints[1], static_cast<unsigned>(id));
    atomicAdd(&floats[0], 0.5f);
}

// 3-D grid of 3-D blocks: each thread writes, at its global (x, y, z) position in a
// (gridDim*blockDim)-sized volume stored x-fastest, the code
// blockIdx.x | blockIdx.y << 4 | blockIdx.z << 8 | threadIdx.x << 12 | threadIdx.y << 16 |
// threadIdx.z << 20 | (gridDim.x*gridDim.y*gridDim.z) << 24 — so indices and dims are checked.
extern "C" __global__ void selftest_indices(unsigned* __restrict__ out) {
    unsigned gx = blockIdx.x * blockDim.x + threadIdx.x;
    unsigned gy = blockIdx.y * blockDim.y + threadIdx.y;
    unsigned gz = blockIdx.z * blockDim.z + threadIdx.z;
    unsigned nx = gridDim.x * blockDim.x, ny = gridDim.y * blockDim.y;
    out[gx + nx * (gy + ny * gz)] = blockIdx.x | blockIdx.y << 4 | blockIdx.z << 8 | threadIdx.x << 12 | threadIdx.y << 16 |
                                    threadIdx.z << 20 | (gridDim.x * gridDim.y * gridDim.z) << 24;
}

// common.cuh's block reductions over any block shape: block b reduces in[b*len .. b*len+len)
// with a stride loop; sums[b] and maxes[b].
extern "C" __global__ void selftest_block_reduce(float* __restrict__ sums, float* __restrict__ maxes, const float* __restrict__ in, int len) {
    __shared__ float scratch[33];
    const float* row = in + static_cast<long long>(blockIdx.x) * len;
    float s = 0.0f, m = -mm_inf();
    for (int i = static_cast<int>(mm_thread_rank()); i < len; i += static_cast<int>(mm_block_threads())) {
        s += row[i];
        m = fmaxf(m, row[i]);
    }
    s = mm_block_sum(s, scratch);
    m = mm_block_max(m, scratch);
    if (mm_thread_rank() == 0) {
        sums[blockIdx.x] = s;
        maxes[blockIdx.x] = m;
    }
}

// Deadlock 1: threads with an odd x leave before the barrier the others wait at.
extern "C" __global__ void selftest_deadlock_exit(float* __restrict__ out) {
    if (threadIdx.x % 2 == 1) return;
    __syncthreads();
    out[threadIdx.x] = 1.0f;
}

// Deadlock 2: the two halves of the block wait at different barriers (undefined in CUDA).
extern "C" __global__ void selftest_deadlock_divergent(float* __restrict__ out) {
    if (threadIdx.x < blockDim.x / 2) {
        __syncthreads();
        out[threadIdx.x] = 1.0f;
    } else {
        __syncthreads();
        out[threadIdx.x] = 2.0f;
    }
}

// Deadlock 3: lane 0 waits for lane 1 at __syncwarp while lane 1 waits at __syncthreads for
// lane 0 — only block 1 does this, so the report must name block 1.
extern "C" __global__ void selftest_deadlock_warp(float* __restrict__ out) {
    if (blockIdx.x == 1) {
        if (threadIdx.x == 0) __syncwarp(0x3u);
        else __syncthreads();
    }
    out[blockIdx.x * blockDim.x + threadIdx.x] = 1.0f;
}

// Elementwise y = a*x + y over n with a grid-stride loop: the throughput/overhead benchmark.
extern "C" __global__ void selftest_axpy(float* __restrict__ y, const float* __restrict__ x, float a, long long n) {
    for (long long i = mm_grid_start(); i < n; i += mm_grid_stride()) y[i] = a * x[i] + y[i];
}

MULTIMAT_EXPORT(selftest_block_reverse)
MULTIMAT_EXPORT(selftest_dynamic_tree_sum)
MULTIMAT_EXPORT(selftest_shuffles)
MULTIMAT_EXPORT(selftest_shuffle_absent_lane)
MULTIMAT_EXPORT(selftest_half_warps)
MULTIMAT_EXPORT(selftest_votes)
MULTIMAT_EXPORT(selftest_atomics)
MULTIMAT_EXPORT(selftest_indices)
MULTIMAT_EXPORT(selftest_block_reduce)
MULTIMAT_EXPORT(selftest_deadlock_exit)
MULTIMAT_EXPORT(selftest_deadlock_divergent)
MULTIMAT_EXPORT(selftest_deadlock_warp)
MULTIMAT_EXPORT(selftest_axpy)
