// 3-D pooling over (N, C, D, H, W) volumes, forward and backward: max pooling (argmax saved),
// average pooling (count_include_pad either way) and global average pooling — the pooling of the
// charge-density ResNeXt. The CPU references are in src/engine/ops/pool3d.rs; every kernel here
// reproduces its reference's order of operations, so results are bit-identical to the CPU:
//
// - forward kernels: one thread per output voxel, taps in (d, h, w) scan order, padded taps
//   skipped; max pooling keeps the first maximum and lets a NaN win and stick, as the reference;
// - backward kernels gather instead of scattering: one thread per input voxel sums, in ascending
//   output order, the contributions of the windows that contain it — the same additions in the
//   same order as the reference's scatter over outputs, with no atomics (deterministic);
// - global average pooling: one thread per (n, c) plane summing in double in voxel order, as the
//   reference (the ResNeXt head pools 1³–2³ volumes, so a thread per plane is not a bottleneck).
//
// Window geometry arrives as ints per axis (D, H, W order): input extent, output extent, kernel,
// stride, padding. Backward kernels write (=) dinp.
#include "common.cuh"

#define MM_GRID_STRIDE_LOOP(i, n) for (long long i = mm_grid_start(); i < (n); i += mm_grid_stride())

// The outputs along one axis whose window covers input coordinate `i`: o·s − p ≤ i ≤ o·s − p + k − 1.
__device__ __forceinline__ void mm_covering_outputs(int i, int out_len, int k, int s, int p, int* first, int* last) {
    int lo_num = i + p - k + 1; // o·s ≥ lo_num
    int lo = lo_num <= 0 ? 0 : (lo_num + s - 1) / s;
    int hi = (i + p) / s;       // o·s ≤ i + p
    *first = lo;
    *last = hi < out_len - 1 ? hi : out_len - 1;
}

// In-volume taps of the window at output `o` along one axis.
__device__ __forceinline__ int mm_taps_on_axis(int o, int len, int k, int s, int p) {
    int start = o * s - p;
    int lo = start < 0 ? 0 : start;
    int hi = start + k < len ? start + k : len;
    return hi > lo ? hi - lo : 0;
}

extern "C" __global__ void max_pool3d_forward(float* __restrict__ out, unsigned* __restrict__ argmax, const float* __restrict__ inp,
                                              long long planes, int D, int H, int W, int OD, int OH, int OW, int kD, int kH, int kW,
                                              int sD, int sH, int sW, int pD, int pH, int pW) {
    long long oplane = (long long)OD * OH * OW, plane = (long long)D * H * W;
    MM_GRID_STRIDE_LOOP(i, planes * oplane) {
        long long nc = i / oplane;
        int o = (int)(i % oplane);
        int ox = o % OW, oy = (o / OW) % OH, oz = o / (OW * OH);
        const float* src = inp + nc * plane;
        float best = -mm_inf();
        unsigned best_at = 0xffffffffu;
        for (int tz = 0; tz < kD; ++tz) {
            int iz = oz * sD - pD + tz;
            if (iz < 0 || iz >= D) continue;
            for (int ty = 0; ty < kH; ++ty) {
                int iy = oy * sH - pH + ty;
                if (iy < 0 || iy >= H) continue;
                for (int tx = 0; tx < kW; ++tx) {
                    int ix = ox * sW - pW + tx;
                    if (ix < 0 || ix >= W) continue;
                    unsigned at = (unsigned)((iz * H + iy) * W + ix);
                    float v = src[at];
                    // NaN wins and sticks; ties keep the first (v != v is NaN without isnan()).
                    if (best_at == 0xffffffffu || v > best || (v != v && best == best)) {
                        best = v;
                        best_at = at;
                    }
                }
            }
        }
        out[i] = best;
        argmax[i] = best_at;
    }
}

extern "C" __global__ void max_pool3d_backward(float* __restrict__ dinp, const float* __restrict__ dout, const unsigned* __restrict__ argmax,
                                               long long planes, int D, int H, int W, int OD, int OH, int OW, int kD, int kH, int kW,
                                               int sD, int sH, int sW, int pD, int pH, int pW) {
    long long oplane = (long long)OD * OH * OW, plane = (long long)D * H * W;
    MM_GRID_STRIDE_LOOP(i, planes * plane) {
        long long nc = i / plane;
        int at = (int)(i % plane);
        int ix = at % W, iy = (at / W) % H, iz = at / (W * H);
        int z0, z1, y0, y1, x0, x1;
        mm_covering_outputs(iz, OD, kD, sD, pD, &z0, &z1);
        mm_covering_outputs(iy, OH, kH, sH, pH, &y0, &y1);
        mm_covering_outputs(ix, OW, kW, sW, pW, &x0, &x1);
        const float* g = dout + nc * oplane;
        const unsigned* wins = argmax + nc * oplane;
        float acc = 0.0f;
        for (int oz = z0; oz <= z1; ++oz)
            for (int oy = y0; oy <= y1; ++oy)
                for (int ox = x0; ox <= x1; ++ox) {
                    int o = (oz * OH + oy) * OW + ox;
                    if (wins[o] == (unsigned)at) acc += g[o];
                }
        dinp[i] = acc;
    }
}

extern "C" __global__ void avg_pool3d_forward(float* __restrict__ out, const float* __restrict__ inp, long long planes, int D, int H,
                                              int W, int OD, int OH, int OW, int kD, int kH, int kW, int sD, int sH, int sW, int pD,
                                              int pH, int pW, int count_include_pad) {
    long long oplane = (long long)OD * OH * OW, plane = (long long)D * H * W;
    MM_GRID_STRIDE_LOOP(i, planes * oplane) {
        long long nc = i / oplane;
        int o = (int)(i % oplane);
        int ox = o % OW, oy = (o / OW) % OH, oz = o / (OW * OH);
        const float* src = inp + nc * plane;
        float sum = 0.0f;
        for (int tz = 0; tz < kD; ++tz) {
            int iz = oz * sD - pD + tz;
            if (iz < 0 || iz >= D) continue;
            for (int ty = 0; ty < kH; ++ty) {
                int iy = oy * sH - pH + ty;
                if (iy < 0 || iy >= H) continue;
                for (int tx = 0; tx < kW; ++tx) {
                    int ix = ox * sW - pW + tx;
                    if (ix < 0 || ix >= W) continue;
                    sum += src[(iz * H + iy) * W + ix];
                }
            }
        }
        int divisor = count_include_pad ? kD * kH * kW
                                        : mm_taps_on_axis(oz, D, kD, sD, pD) * mm_taps_on_axis(oy, H, kH, sH, pH) *
                                              mm_taps_on_axis(ox, W, kW, sW, pW);
        out[i] = sum / (float)divisor;
    }
}

extern "C" __global__ void avg_pool3d_backward(float* __restrict__ dinp, const float* __restrict__ dout, long long planes, int D, int H,
                                               int W, int OD, int OH, int OW, int kD, int kH, int kW, int sD, int sH, int sW, int pD,
                                               int pH, int pW, int count_include_pad) {
    long long oplane = (long long)OD * OH * OW, plane = (long long)D * H * W;
    MM_GRID_STRIDE_LOOP(i, planes * plane) {
        long long nc = i / plane;
        int at = (int)(i % plane);
        int ix = at % W, iy = (at / W) % H, iz = at / (W * H);
        int z0, z1, y0, y1, x0, x1;
        mm_covering_outputs(iz, OD, kD, sD, pD, &z0, &z1);
        mm_covering_outputs(iy, OH, kH, sH, pH, &y0, &y1);
        mm_covering_outputs(ix, OW, kW, sW, pW, &x0, &x1);
        const float* g = dout + nc * oplane;
        float acc = 0.0f;
        for (int oz = z0; oz <= z1; ++oz)
            for (int oy = y0; oy <= y1; ++oy)
                for (int ox = x0; ox <= x1; ++ox) {
                    int divisor = count_include_pad ? kD * kH * kW
                                                    : mm_taps_on_axis(oz, D, kD, sD, pD) * mm_taps_on_axis(oy, H, kH, sH, pH) *
                                                          mm_taps_on_axis(ox, W, kW, sW, pW);
                    acc += g[(oz * OH + oy) * OW + ox] / (float)divisor;
                }
        dinp[i] = acc;
    }
}

extern "C" __global__ void global_avg_pool3d_forward(float* __restrict__ out, const float* __restrict__ inp, long long planes,
                                                     long long spatial) {
    MM_GRID_STRIDE_LOOP(row, planes) {
        const float* src = inp + row * spatial;
        double sum = 0.0;
        for (long long j = 0; j < spatial; ++j) sum += (double)src[j];
        out[row] = (float)(sum / (double)spatial);
    }
}

// dinp = dout[plane] · inv_spatial, inv_spatial = 1/(D·H·W) rounded to float on the host as the
// reference rounds it.
extern "C" __global__ void global_avg_pool3d_backward(float* __restrict__ dinp, const float* __restrict__ dout, long long planes,
                                                      long long spatial, float inv_spatial) {
    MM_GRID_STRIDE_LOOP(i, planes * spatial) dinp[i] = dout[i / spatial] * inv_spatial;
}

MULTIMAT_EXPORT(max_pool3d_forward)
MULTIMAT_EXPORT(max_pool3d_backward)
MULTIMAT_EXPORT(avg_pool3d_forward)
MULTIMAT_EXPORT(avg_pool3d_backward)
MULTIMAT_EXPORT(global_avg_pool3d_forward)
MULTIMAT_EXPORT(global_avg_pool3d_backward)
