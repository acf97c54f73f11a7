// Segment mean over the rows of a batch of graphs stored back to back: graph g owns rows
// offsets[g]..offsets[g+1]. One thread per output value; adjacent threads take adjacent columns
// (coalesced row reads). Each mean sums its segment's rows in order from zero and multiplies by
// the f32 reciprocal of the count — the CPU reference's operations, so results are bit-identical.
// An empty segment pools to zero and passes no gradient.
#include "common.cuh"

// out (G, C)[g] = mean of inp (N, C) rows offsets[g]..offsets[g+1]
extern "C" __global__ void segment_mean_forward_f32(float* out, const float* inp, const unsigned* offsets, long long g, long long c) {
    long long total = g * c;
    for (long long i = mm_grid_start(); i < total; i += mm_grid_stride()) {
        long long seg = i / c, col = i - seg * c;
        unsigned start = offsets[seg], end = offsets[seg + 1];
        float s = 0.0f;
        for (unsigned r = start; r < end; r++) {
            s += inp[(long long)r * c + col];
        }
        out[i] = end > start ? s * (1.0f / (float)(end - start)) : 0.0f;
    }
}

// dinp (N, C)[r] = dout[g] / |g| for the segment g holding row r (binary search over the G + 1
// offsets: the last g with offsets[g] <= r, which skips empty segments).
extern "C" __global__ void segment_mean_backward_f32(float* dinp, const float* dout, const unsigned* offsets, long long g, long long n, long long c) {
    long long total = n * c;
    for (long long i = mm_grid_start(); i < total; i += mm_grid_stride()) {
        long long row = i / c, col = i - row * c;
        long long lo = 0, hi = g;  // invariant: offsets[lo] <= row < offsets[hi]
        while (hi - lo > 1) {
            long long mid = (lo + hi) / 2;
            if ((long long)offsets[mid] <= row) lo = mid; else hi = mid;
        }
        float inv = 1.0f / (float)(offsets[lo + 1] - offsets[lo]);
        dinp[i] = dout[lo * c + col] * inv;
    }
}

MULTIMAT_EXPORT(segment_mean_forward_f32)
MULTIMAT_EXPORT(segment_mean_backward_f32)
