// The fused InfoNCE of the CLIP-family losses (CLIP, AllPairsCLIP, AnchoredCLIP); the CPU
// reference is src/loss/clip.rs (`infonce_direction`), whose masking and scaling rules these
// kernels follow exactly.
//
// Shape of the computation (llm.c's fused classifier, llmc/fused_classifier.cuh, is the model):
// the rows valid for a pair are gathered into compact (n, D) matrices; cuBLAS computes the dot
// products of a block of query rows with every candidate into a (rows, n) buffer; ONE kernel per
// block of rows then turns each row, in place, into the logit gradient: it scales the row by the
// (clamped, learnable) logit scale, finds the row max, sums the exponentials, writes the row's
// loss term and temperature term, and overwrites the row with d loss/d dot = s·w·(softmax − 1ᵢ).
// Two more GEMMs take that into the query and candidate gradients, which are scattered back to
// the batch rows. The probability matrix is never stored: the one (rows, n) buffer holds dot
// products, then exponentials, then gradients.
//
// Determinism: one block per row, sums in f64 in a fixed tree; the gathers and scatters write
// each value once (the row index is a list of distinct rows), so there are no atomics.
#include "common.cuh"

// dst[index[r]] += src[r] row by row. The index rows are distinct, so every destination value
// has one writer: no atomics, and the result does not depend on scheduling.
extern "C" __global__ void scatter_rows_add_f32(float* dst, const float* src, const unsigned* index, long long rows, int dim) {
    const long long total = rows * dim;
    for (long long i = mm_grid_start(); i < total; i += mm_grid_stride()) {
        long long r = i / dim, c = i % dim;
        float* d = dst + static_cast<long long>(index[r]) * dim + c;
        *d = *d + src[i];
    }
}

// exp(clamp(raw, lo, hi)): the logit scale of a temperature (NaN stays NaN, as Rust's clamp).
__device__ __forceinline__ float infonce_logit_scale(float raw, float min_raw, float max_raw) {
    return expf(raw < min_raw ? min_raw : (raw > max_raw ? max_raw : raw));
}

// Σ over the block of (a, b) in f64, in a fixed tree; every thread gets both sums.
// blockDim.x must be a power of two ≤ 256.
__device__ __forceinline__ void infonce_block_sum2(double& a, double& b) {
    __shared__ double tree_a[256];
    __shared__ double tree_b[256];
    __syncthreads();  // a previous call's readers are done
    tree_a[threadIdx.x] = a;
    tree_b[threadIdx.x] = b;
    __syncthreads();
    for (unsigned stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (threadIdx.x < stride) {
            tree_a[threadIdx.x] += tree_a[threadIdx.x + stride];
            tree_b[threadIdx.x] += tree_b[threadIdx.x + stride];
        }
        __syncthreads();
    }
    a = tree_a[0];
    b = tree_b[0];
}

// One block per query row t of a block of rows (compact rows row0 + t; the positive candidate of
// row i is column i).
//   dots      (rows, n): in — q_i·k_j; out (want_grad) — d loss/d (q_i·k_j) = s·w·(p_ij − δ_ij)
//   row_terms (rows, 2): out — [lse_i − l_ii, (E_p[l_i·] − l_ii)/s] with l = s·dots, unweighted
//                        (the host multiplies by the term's weight and adds them in row order)
//   raw_scale (1):       the temperature's raw log-scale; s = exp(clamp(raw, min_raw, max_raw))
// `grad_weight` is w: the weight of each row's term in the caller's total (½·1/n·1/#pairs).
extern "C" __global__ void infonce_rows_f32(float* dots, float* row_terms, const float* raw_scale, float min_raw,
                                            float max_raw, int n, int row0, double grad_weight, int want_grad) {
    __shared__ float scratch[33];
    const long long t = blockIdx.x;
    float* row = dots + t * n;
    const int pos = row0 + static_cast<int>(t);
    const float s = infonce_logit_scale(raw_scale[0], min_raw, max_raw);
    // The positive's logit, read before any thread overwrites the row (mm_block_max's barriers
    // separate this read from the writes below). Computed as every other logit is.
    const float l_pos = s * row[pos];
    float mx = -mm_inf();
    for (int j = threadIdx.x; j < n; j += blockDim.x) mx = fmaxf(mx, s * row[j]);
    mx = mm_block_max(mx, scratch);
    // exp(l − max) in f32 (≤ 1; an entry that underflows weighs < e⁻⁸⁷ against the max's 1),
    // sums in f64 as the reference. Each thread keeps its own entries: pass 3 reads only those.
    double sum = 0.0, sum_el = 0.0;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        float l = s * row[j];
        float e = expf(l - mx);
        sum += static_cast<double>(e);
        sum_el += static_cast<double>(e) * static_cast<double>(l);
        row[j] = e;
    }
    infonce_block_sum2(sum, sum_el);
    if (threadIdx.x == 0) {
        double lse = static_cast<double>(mx) + log(sum);
        row_terms[2 * t] = static_cast<float>(lse - static_cast<double>(l_pos));
        row_terms[2 * t + 1] = static_cast<float>((sum_el / sum - static_cast<double>(l_pos)) / static_cast<double>(s));
    }
    if (!want_grad) return;
    const double inv = 1.0 / sum;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        double p = static_cast<double>(row[j]) * inv;
        float d = static_cast<float>(grad_weight * (p - (j == pos ? 1.0 : 0.0)));
        row[j] = d * s;  // d loss/d dot = s · d loss/d logit
    }
}

// grad[0] += dscale · s when raw lies inside the clamp (bounds included), else nothing: the
// chain rule through s = exp(clamp(raw)) for a learnable temperature. One thread.
extern "C" __global__ void temperature_grad_f32(float* grad, const float* raw_scale, double dscale, float min_raw,
                                                float max_raw) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    const float raw = raw_scale[0];
    if (raw >= min_raw && raw <= max_raw) {
        grad[0] = grad[0] + static_cast<float>(dscale * static_cast<double>(infonce_logit_scale(raw, min_raw, max_raw)));
    }
}

// raw[0] = clamp(raw[0], min_raw, max_raw) (after an optimiser step, as OpenCLIP). One thread.
extern "C" __global__ void clamp_log_scale_f32(float* raw_scale, float min_raw, float max_raw) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    const float raw = raw_scale[0];
    raw_scale[0] = raw < min_raw ? min_raw : (raw > max_raw ? max_raw : raw);
}

MULTIMAT_EXPORT(scatter_rows_add_f32)
MULTIMAT_EXPORT(infonce_rows_f32)
MULTIMAT_EXPORT(temperature_grad_f32)
MULTIMAT_EXPORT(clamp_log_scale_f32)
