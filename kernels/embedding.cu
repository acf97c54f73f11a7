// Embedding lookup and its deterministic backward. The CPU reference is
// src/engine/ops/embedding.rs, the launchers src/engine/gpu/embedding.rs.
//
// The backward adds rows of dout into the table gradient without float atomics: the host sorts
// the positions by id (a stable counting sort when the batch's ids are uploaded, see
// `ops::embedding::TokenIds`), and one thread per (distinct id, column) adds that id's rows in
// position order — the order of the CPU loop, so the result is bit-identical to it.
#include "common.cuh"

// out (N, C) = table (V, C) [ids (N)]. Ids were checked against V on the host.
extern "C" __global__ void embedding_forward_f32(float* __restrict__ out, const unsigned* __restrict__ ids,
                                                 const float* __restrict__ table, long long n, int c) {
    long long total = n * c;
    for (long long i = mm_grid_start(); i < total; i += mm_grid_stride()) {
        long long r = i / c, j = i % c;
        out[i] = table[(long long)ids[r] * c + j];
    }
}

// dtable[seg_ids[s]] (C) += Σ_{k in [seg_offsets[s], seg_offsets[s+1])} dout[order[k]] (C), the
// terms added one by one in k order (positions ascending within an id).
extern "C" __global__ void embedding_backward_f32(float* __restrict__ dtable, const float* __restrict__ dout,
                                                  const unsigned* __restrict__ order, const unsigned* __restrict__ seg_ids,
                                                  const unsigned* __restrict__ seg_offsets, long long segments, int c) {
    long long total = segments * c;
    for (long long i = mm_grid_start(); i < total; i += mm_grid_stride()) {
        long long s = i / c, j = i % c;
        float* d = dtable + (long long)seg_ids[s] * c + j;
        float acc = *d;
        for (unsigned k = seg_offsets[s]; k < seg_offsets[s + 1]; k++) acc += dout[(long long)order[k] * c + j];
        *d = acc;
    }
}

MULTIMAT_EXPORT(embedding_forward_f32)
MULTIMAT_EXPORT(embedding_backward_f32)
