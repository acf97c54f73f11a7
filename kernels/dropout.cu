// Inverted dropout whose keep-mask is the CPU's, bit for bit. The CPU reference
// (src/engine/ops/dropout.rs) draws element i's uniform from the i-th 32-bit word of a ChaCha8
// stream (rand_chacha's ChaCha8Rng: key from the step seed, stream id = the layer's stream,
// block counter from 0), as u = (word >> 8)·2⁻²⁴, and keeps the element when u ≥ p. ChaCha is
// counter-based, so word i is a pure function of (key, stream, i): here one thread computes one
// 16-word block, i.e. the decisions of 16 consecutive elements, with no state between threads.
// Launchers: src/engine/gpu/dropout.rs (the key is expanded from the seed on the host, exactly
// as `ChaCha8Rng::seed_from_u64` does, and passed by value).
#include "common.cuh"

// The 256-bit ChaCha key as eight little-endian words (rand_chacha's `get_seed`).
struct DropoutKey {
    unsigned w[8];
};

__device__ __forceinline__ unsigned dropout_rotl(unsigned v, int s) { return (v << s) | (v >> (32 - s)); }

#define DROPOUT_QR(a, b, c, d)             \
    a += b; d ^= a; d = dropout_rotl(d, 16); \
    c += d; b ^= c; b = dropout_rotl(b, 12); \
    a += b; d ^= a; d = dropout_rotl(d, 8);  \
    c += d; b ^= c; b = dropout_rotl(b, 7);

// The 16 output words of ChaCha8 block `counter` of `stream` under `key`.
__device__ __forceinline__ void dropout_chacha8_block(unsigned out[16], const DropoutKey& key, unsigned long long stream,
                                                      unsigned long long counter) {
    unsigned s[16] = {0x61707865u, 0x3320646eu, 0x79622d32u, 0x6b206574u,
                      key.w[0], key.w[1], key.w[2], key.w[3], key.w[4], key.w[5], key.w[6], key.w[7],
                      (unsigned)counter, (unsigned)(counter >> 32), (unsigned)stream, (unsigned)(stream >> 32)};
    unsigned x[16];
    for (int i = 0; i < 16; i++) x[i] = s[i];
    for (int round = 0; round < 4; round++) {  // 4 double rounds = 8 rounds
        DROPOUT_QR(x[0], x[4], x[8], x[12])
        DROPOUT_QR(x[1], x[5], x[9], x[13])
        DROPOUT_QR(x[2], x[6], x[10], x[14])
        DROPOUT_QR(x[3], x[7], x[11], x[15])
        DROPOUT_QR(x[0], x[5], x[10], x[15])
        DROPOUT_QR(x[1], x[6], x[11], x[12])
        DROPOUT_QR(x[2], x[7], x[8], x[13])
        DROPOUT_QR(x[3], x[4], x[9], x[14])
    }
    for (int i = 0; i < 16; i++) out[i] = x[i] + s[i];
}

// out (N) = keep_i ? inp·scale : 0, with keep_i = ((word_i >> 8)·2⁻²⁴ ≥ p). Serves the forward
// (inp = x) and the backward (inp = dout): the mask is recomputed, never stored. out may alias inp.
// Grid-stride over blocks of 16 elements.
extern "C" __global__ void dropout_apply_f32(float* out, const float* inp, long long n, float p, float scale, DropoutKey key,
                                             unsigned long long stream) {
    long long blocks = (n + 15) / 16;
    for (long long blk = mm_grid_start(); blk < blocks; blk += mm_grid_stride()) {
        unsigned words[16];
        dropout_chacha8_block(words, key, stream, (unsigned long long)blk);
        for (int k = 0; k < 16; k++) {
            long long i = blk * 16 + k;
            if (i >= n) break;
            float u = (float)(words[k] >> 8) * 5.9604644775390625e-8f;  // 2⁻²⁴, exact
            out[i] = u >= p ? inp[i] * scale : 0.0f;
        }
    }
}

MULTIMAT_EXPORT(dropout_apply_f32)
