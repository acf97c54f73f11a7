// Row softmax and the non-GEMM parts of masked multi-head attention. The CPU references are
// src/engine/ops/softmax.rs and src/engine/ops/attention.rs; the launchers (and the cuBLAS
// batched GEMMs between these kernels) are src/engine/gpu/attention.rs.
//
// Attention follows llm.c's form: the packed qkv (B, T, 3·H·hs) is split into per-head
// contiguous q, k, v (B·H, T, hs) so that every (batch, head) pair is one problem of a strided
// batched GEMM; the scores of a bounded chunk of pairs are materialised at a time (never the
// whole (B, H, T, T)), the softmax keeps each row's log-sum-exp, and the backward recomputes
// the probabilities from it, as the CPU does.
//
// Masking: a key j of sample b with key_valid[b·T + j] == 0 gets probability 0. A row with no
// valid key (a fully padded sample) gives a zero row and lse = −∞, and zero gradients, never NaN:
// masked entries are selected away, never multiplied by 0 (exp of a masked score may be ∞).
#include "common.cuh"

// dst (B·H, T, hs) [b·H + h][t][e] = src[(b·T + t)·src_ld + src_off + h·hs + e]: one strided
// group of heads (q, k or v of a packed qkv, or an attention output) into per-head rows.
extern "C" __global__ void attention_split_heads_f32(float* __restrict__ dst, const float* __restrict__ src, long long src_ld,
                                                     long long src_off, long long b, int t, int h, int hs) {
    long long n = b * t * h * hs;
    for (long long i = mm_grid_start(); i < n; i += mm_grid_stride()) {
        long long e = i % hs, r = i / hs;
        long long ti = r % t, pair = r / t;
        long long hi = pair % h, bi = pair / h;
        dst[i] = src[(bi * t + ti) * src_ld + src_off + hi * hs + e];
    }
}

// The inverse: dst[(b·T + t)·dst_ld + dst_off + h·hs + e] = src (B·H, T, hs) [b·H + h][t][e].
extern "C" __global__ void attention_merge_heads_f32(float* __restrict__ dst, long long dst_ld, long long dst_off,
                                                     const float* __restrict__ src, long long b, int t, int h, int hs) {
    long long n = b * t * h * hs;
    for (long long i = mm_grid_start(); i < n; i += mm_grid_stride()) {
        long long e = i % hs, r = i / hs;
        long long ti = r % t, pair = r / t;
        long long hi = pair % h, bi = pair / h;
        dst[(bi * t + ti) * dst_ld + dst_off + hi * hs + e] = src[i];
    }
}

// The mask row (`cols` entries, 1 = valid) of local row r, or null for "all valid". Rows are
// grouped `t` per (batch, head) pair, pairs numbered from `pair0`, `h` pairs per sample.
__device__ __forceinline__ const unsigned* softmax_mask_row(const unsigned* key_valid, long long r, long long pair0, int t, int h,
                                                            int cols) {
    if (key_valid == nullptr) return nullptr;
    long long sample = (pair0 + r / t) / h;
    return key_valid + sample * cols;
}

// Butterfly reductions over a full warp: every lane gets the result.
__device__ __forceinline__ float att_warp_max(float v) {
    for (int offset = 16; offset > 0; offset /= 2) v = fmaxf(v, __shfl_xor_sync(MM_FULL_MASK, v, offset));
    return v;
}
__device__ __forceinline__ float att_warp_sum(float v) {
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(MM_FULL_MASK, v, offset);
    return v;
}

// out (rows, cols) = softmax of each row of inp over its valid entries; lse (rows) = the row's
// log-sum-exp (−∞ and a zero row when no entry is valid). out may alias inp; lse and key_valid
// may be null (plain row softmax: pass t = 1, h = 1, pair0 = 0).
// Launch: blockDim.x a multiple of 32, one warp per row.
extern "C" __global__ void softmax_rows_f32(float* out, float* lse, const float* inp, const unsigned* key_valid, long long rows,
                                            int cols, long long pair0, int t, int h) {
    long long r = blockIdx.x * (long long)(blockDim.x / 32) + mm_warp();
    if (r >= rows) return;  // whole warp
    unsigned lane = mm_lane();
    const float* x = inp + r * cols;
    float* y = out + r * cols;
    const unsigned* keep = softmax_mask_row(key_valid, r, pair0, t, h, cols);
    float m = -mm_inf();
    for (int j = lane; j < cols; j += 32) {
        if (keep == nullptr || keep[j] != 0u) m = fmaxf(m, x[j]);
    }
    m = att_warp_max(m);
    if (m == -mm_inf()) {
        for (int j = lane; j < cols; j += 32) y[j] = 0.0f;
        if (lse != nullptr && lane == 0) lse[r] = -mm_inf();
        return;
    }
    float s = 0.0f;
    for (int j = lane; j < cols; j += 32) {
        float e = (keep == nullptr || keep[j] != 0u) ? expf(x[j] - m) : 0.0f;
        y[j] = e;
        s += e;
    }
    s = att_warp_sum(s);
    float inv = 1.0f / s;
    for (int j = lane; j < cols; j += 32) y[j] *= inv;
    if (lse != nullptr && lane == 0) lse[r] = m + logf(s);
}

// probs (rows, cols) = exp(scores − lse_row) on valid keys, 0 on masked keys and on rows with
// lse = −∞ (in place allowed): the forward's probabilities, recomputed in the backward.
extern "C" __global__ void attention_probs_f32(float* probs, const float* scores, const float* __restrict__ lse,
                                               const unsigned* __restrict__ key_valid, long long rows, int cols, long long pair0,
                                               int t, int h) {
    long long n = rows * cols;
    for (long long i = mm_grid_start(); i < n; i += mm_grid_stride()) {
        long long r = i / cols;
        int j = (int)(i % cols);
        const unsigned* keep = softmax_mask_row(key_valid, r, pair0, t, h, cols);
        float l = lse[r];
        bool valid = l != -mm_inf() && (keep == nullptr || keep[j] != 0u);
        probs[i] = valid ? expf(scores[i] - l) : 0.0f;
    }
}

// dinp (rows, cols) = y ⊙ (dout − Σ_j y_j·dout_j) per row (the softmax backward; dinp may alias
// dout). Launch: blockDim.x a multiple of 32, one warp per row.
extern "C" __global__ void softmax_rows_backward_f32(float* dinp, const float* dout, const float* __restrict__ y, long long rows,
                                                     int cols) {
    long long r = blockIdx.x * (long long)(blockDim.x / 32) + mm_warp();
    if (r >= rows) return;  // whole warp
    unsigned lane = mm_lane();
    const float* yr = y + r * cols;
    const float* g = dout + r * cols;
    float* d = dinp + r * cols;
    float dot = 0.0f;
    for (int j = lane; j < cols; j += 32) dot += yr[j] * g[j];
    dot = att_warp_sum(dot);
    for (int j = lane; j < cols; j += 32) d[j] = yr[j] * (g[j] - dot);
}

MULTIMAT_EXPORT(attention_split_heads_f32)
MULTIMAT_EXPORT(attention_merge_heads_f32)
MULTIMAT_EXPORT(softmax_rows_f32)
MULTIMAT_EXPORT(attention_probs_f32)
MULTIMAT_EXPORT(softmax_rows_backward_f32)
