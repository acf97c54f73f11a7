// Message passing over edges: gather node rows by edge index, scatter-add edge rows into nodes,
// and the factorised first layer of an edge MLP (two gathered node rows + an edge row + a bias).
//
// Determinism without float atomics: the scatter-add receives the edges already grouped by
// destination row (a stable counting sort built on the host with the batch, see
// engine::ops::gather::EdgeIndex), and one thread owns each (row, column) output, summing that
// row's edges in increasing edge order — exactly the CPU reference's order, so the results are
// bit-identical to it. Adjacent threads take adjacent columns, so every row read is coalesced.
// Grid-stride loops: any grid size is correct; the launcher caps it.
#include "common.cuh"

// out (E, C) = inp (N, C)[index[e]]. Indices were validated (< N) when the batch was built.
extern "C" __global__ void gather_rows_f32(float* out, const float* inp, const unsigned* index, long long e, long long c) {
    long long total = e * c;
    for (long long i = mm_grid_start(); i < total; i += mm_grid_stride()) {
        long long edge = i / c, col = i - edge * c;
        out[i] = inp[(long long)index[edge] * c + col];
    }
}

// acc (N, C)[r] (+)= Σ src (E, C)[edges_by_row[k]] for k in row_start[r]..row_start[r+1], in that
// order, starting from zero (accumulate = 0) or from what acc holds (accumulate = 1).
extern "C" __global__ void scatter_add_rows_f32(float* acc, const float* src, const unsigned* row_start,
                                                const unsigned* edges_by_row, long long n, long long c,
                                                int accumulate) {
    long long total = n * c;
    for (long long i = mm_grid_start(); i < total; i += mm_grid_stride()) {
        long long row = i / c, col = i - row * c;
        float s = accumulate ? acc[i] : 0.0f;
        for (unsigned k = row_start[row]; k < row_start[row + 1]; k++) {
            s += src[(long long)edges_by_row[k] * c + col];
        }
        acc[i] = s;
    }
}

// out (E, W)[e, j] = ((nodes[dst[e], dst_col + j] + nodes[src[e], src_col + j]) + edges[e, edge_col + j])
//                    + bias[j]
// nodes is (N, nodes_ld) and edges (E, edges_ld) row-major; the sum order is the CPU reference's
// (additions only, so no multiply-add contraction can change it).
extern "C" __global__ void gather_pair_add_f32(float* out, const float* nodes, long long nodes_ld,
                                               const unsigned* dst, long long dst_col,
                                               const unsigned* src, long long src_col,
                                               const float* edges, long long edges_ld, long long edge_col,
                                               const float* bias, long long e, long long w) {
    long long total = e * w;
    for (long long i = mm_grid_start(); i < total; i += mm_grid_stride()) {
        long long edge = i / w, j = i - edge * w;
        float a = nodes[(long long)dst[edge] * nodes_ld + dst_col + j];
        float b = nodes[(long long)src[edge] * nodes_ld + src_col + j];
        out[i] = a + b + edges[edge * edges_ld + edge_col + j] + bias[j];
    }
}

MULTIMAT_EXPORT(gather_rows_f32)
MULTIMAT_EXPORT(scatter_add_rows_f32)
MULTIMAT_EXPORT(gather_pair_add_f32)
