// Per-row top-kk selection over a score matrix, for the GPU screen (src/screen/gpu.rs); the CPU
// reference is `engine::gpu::topk::topk_rows_reference`.
//
// scores (rows, cols) row-major is one GEMM output (queries × a candidate block). For each row the
// kernel writes the kk best columns, best first, under the CPU screen's ranking rule
// (src/screen/topk.rs): score descending, equal scores (IEEE equality, -0 == +0) by candidate id
// ascending. Ids do not travel to the device; the host passes id_rank[col], the column's position
// in the block's bytewise id order, which orders equal scores exactly as the ids would. Columns
// never compare equal (ranks are distinct), so the selection is a function of the inputs alone —
// no dependence on thread timing — and two runs give identical bits.
//
// One block per row, blockDim.x a power of two ≤ 256 (the launcher uses 128). Phase 1: each thread
// keeps its own sorted list of up to kk entries (kk ≤ TOPK_MAX, in registers/local memory) over
// the columns it strides over; most scores lose to the list's last entry after the first few and
// cost one compare. Phase 2: kk rounds of a block-wide "best head" reduction (warp shuffles, then
// one warp's partials in shared memory); the winning thread pops its head. 2 barriers per round.
#include "common.cuh"

#define TOPK_MAX 64
#define TOPK_MAX_THREADS 256

// a ranks before b: higher score, or equal score and smaller id rank.
__device__ __forceinline__ bool topk_better(float sa, unsigned ra, float sb, unsigned rb) {
    return sa > sb || (sa == sb && ra < rb);
}

// out_scores (rows, kk), out_cols (rows, kk): the kk best columns of each row, best first.
// Needs 1 ≤ kk ≤ min(TOPK_MAX, cols) (the launcher checks).
extern "C" __global__ void topk_rows_f32(float* out_scores, int* out_cols, const float* scores,
                                         const unsigned* id_rank, int cols, int kk) {
    __shared__ float warp_s[TOPK_MAX_THREADS / 32];
    __shared__ unsigned warp_r[TOPK_MAX_THREADS / 32];
    __shared__ int warp_t[TOPK_MAX_THREADS / 32];
    __shared__ int winner;
    const long long row = blockIdx.x;
    const float* s = scores + row * cols;

    // Phase 1: this thread's best kk columns, sorted best first.
    float ls[TOPK_MAX];
    unsigned lr[TOPK_MAX];
    int lc[TOPK_MAX];
    int n = 0;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        const float v = s[j];
        const unsigned r = id_rank[j];
        if (n == kk && !topk_better(v, r, ls[n - 1], lr[n - 1])) continue;
        int p = n < kk ? n++ : kk - 1;  // the slot freed (or the evicted last one)
        while (p > 0 && topk_better(v, r, ls[p - 1], lr[p - 1])) {
            ls[p] = ls[p - 1];
            lr[p] = lr[p - 1];
            lc[p] = lc[p - 1];
            --p;
        }
        ls[p] = v;
        lr[p] = r;
        lc[p] = j;
    }

    // Phase 2: kk rounds; in each, the best head of all threads' lists is output and popped.
    int head = 0;
    const unsigned lane = mm_lane(), warp = mm_warp(), lanes = mm_warp_lanes();
    const unsigned mask = lanes == 32u ? MM_FULL_MASK : ((1u << lanes) - 1u);
    const unsigned warps = (blockDim.x + 31u) / 32u;
    for (int out = 0; out < kk; ++out) {
        // An exhausted list proposes nothing (valid = 0); a valid proposal always beats it.
        int valid = head < n;
        float bs = valid ? ls[head] : 0.0f;
        unsigned br = valid ? lr[head] : 0u;
        int bt = static_cast<int>(threadIdx.x);
        for (unsigned offset = 16; offset > 0; offset /= 2) {
            const int ov = __shfl_down_sync(mask, valid, offset);
            const float os = __shfl_down_sync(mask, bs, offset);
            const unsigned orr = __shfl_down_sync(mask, br, offset);
            const int ot = __shfl_down_sync(mask, bt, offset);
            if (lane + offset < lanes && ov && (!valid || topk_better(os, orr, bs, br))) {
                valid = 1;
                bs = os;
                br = orr;
                bt = ot;
            }
        }
        if (lane == 0) {
            warp_s[warp] = bs;
            warp_r[warp] = br;
            warp_t[warp] = valid ? bt : -1;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            int w_best = -1;
            for (unsigned w = 0; w < warps; ++w) {
                if (warp_t[w] < 0) continue;
                if (w_best < 0 || topk_better(warp_s[w], warp_r[w], warp_s[w_best], warp_r[w_best])) w_best = static_cast<int>(w);
            }
            // kk ≤ cols guarantees some list still holds an entry.
            winner = warp_t[w_best];
        }
        __syncthreads();
        if (static_cast<int>(threadIdx.x) == winner) {
            out_scores[row * kk + out] = ls[head];
            out_cols[row * kk + out] = lc[head];
            ++head;
        }
        // No third barrier: the next round's writes to warp_* happen after thread 0 read them
        // (before the barrier above), and its write to `winner` after the next round's first
        // barrier, which every thread reaches only after reading this round's `winner`.
    }
}

MULTIMAT_EXPORT(topk_rows_f32)
