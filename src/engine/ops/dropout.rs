//! Inverted dropout: in training each element is kept with probability 1 − p and scaled by
//! 1/(1 − p) (PyTorch's convention, so evaluation is the identity). The backward writes (=)
//! dinp = dout · mask / (1 − p).
//!
//! The keep-mask is a pure function of (step seed, layer stream, element index): element i keeps
//! when the i-th draw of ChaCha8 (seeded from the step seed, on the layer's stream) is ≥ p.
//! ChaCha is counter-based — draw i is word i of the keystream, computable on its own — so the GPU
//! kernel (`kernels/dropout.cu`) computes the very same mask, bit for bit, with no state and no
//! stored mask: [`dropout_grad`] recomputes it on either device instead of saving it.

use crate::engine::gpu::{self, device_ok, gpu_of, gpu_vec_mut};
use crate::engine::tensor::{Storage, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The generator of one layer's mask in one step: ChaCha8 from `seed`, stream `stream`.
pub fn mask_rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// 1/(1 − p), or 0 when everything is dropped.
fn keep_scale(p: f32) -> f32 {
    if p < 1.0 { 1.0 / (1.0 - p) } else { 0.0 }
}

/// y = dropout(x) on x's device with the mask of (`seed`, `stream`).
pub fn dropout(x: &Tensor, p: f32, seed: u64, stream: u64) -> Tensor {
    assert!((0.0..=1.0).contains(&p), "dropout probability {p} outside [0, 1]");
    let mut out = device_ok(Tensor::uninit_on(&x.shape, x.device()), "dropout");
    match &x.storage {
        Storage::Cpu(xd) => {
            let mut mask = vec![false; xd.len()];
            dropout_forward(out.data_mut(), &mut mask, xd, p, &mut mask_rng(seed, stream));
        }
        Storage::Gpu(xd) => {
            let g = gpu_of(x).clone();
            device_ok(gpu::dropout::apply(&g, gpu_vec_mut(&mut out, "dropout"), xd, p, keep_scale(p), seed, stream), "dropout");
        }
    }
    out
}

/// The backward of [`dropout`] with the same (`p`, `seed`, `stream`): the mask is recomputed.
pub fn dropout_grad(dy: &Tensor, p: f32, seed: u64, stream: u64) -> Tensor {
    let mut dx = device_ok(Tensor::uninit_on(&dy.shape, dy.device()), "dropout_grad");
    match &dy.storage {
        Storage::Cpu(g) => {
            let mut mask = vec![false; g.len()];
            dropout_mask(&mut mask, p, &mut mask_rng(seed, stream));
            dropout_backward(dx.data_mut(), g, &mask, p);
        }
        Storage::Gpu(g) => {
            let gpu = gpu_of(dy).clone();
            device_ok(gpu::dropout::apply(&gpu, gpu_vec_mut(&mut dx, "dropout_grad"), g, p, keep_scale(p), seed, stream), "dropout_grad");
        }
    }
    dx
}

/// mask (N) (true = kept): element i kept when draw i of `rng` is ≥ p (no draws when p is 0 or 1).
pub fn dropout_mask(mask: &mut [bool], p: f32, rng: &mut impl Rng) {
    for m in mask.iter_mut() {
        *m = p == 0.0 || (p < 1.0 && rng.random::<f32>() >= p);
    }
}

/// out (N) = inp (N) · mask / (1 − p); mask (N) is written (true = kept).
pub fn dropout_forward(out: &mut [f32], mask: &mut [bool], inp: &[f32], p: f32, rng: &mut impl Rng) {
    assert!(out.len() == inp.len() && mask.len() == inp.len(), "dropout_forward: buffer lengths differ");
    assert!((0.0..=1.0).contains(&p), "dropout probability {p} outside [0, 1]");
    dropout_mask(mask, p, rng);
    let scale = keep_scale(p);
    for ((o, m), &x) in out.iter_mut().zip(mask.iter()).zip(inp) {
        *o = if *m { x * scale } else { 0.0 };
    }
}

/// dinp (N) = dout (N) · mask / (1 − p)
pub fn dropout_backward(dinp: &mut [f32], dout: &[f32], mask: &[bool], p: f32) {
    assert!(dinp.len() == dout.len() && mask.len() == dout.len(), "dropout_backward: buffer lengths differ");
    let scale = keep_scale(p);
    for ((d, &g), &m) in dinp.iter_mut().zip(dout).zip(mask) {
        *d = if m { g * scale } else { 0.0 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::{check_gradient, dot, random_vec};
    use rand::RngCore;

    #[test]
    fn dropout_is_deterministic_keeps_about_1_minus_p_and_preserves_the_mean() {
        let n = 20_000;
        let x = vec![1.0f32; n];
        let run = |seed| {
            let (mut out, mut mask) = (vec![0.0; n], vec![false; n]);
            dropout_forward(&mut out, &mut mask, &x, 0.3, &mut ChaCha8Rng::seed_from_u64(seed));
            (out, mask)
        };
        let (a, mask) = run(7);
        assert_eq!(a, run(7).0, "same seed, same mask");
        assert_ne!(a, run(8).0, "different seed, different mask");
        let kept = mask.iter().filter(|&&m| m).count() as f64 / n as f64;
        // Binomial(20000, 0.7): sd of the fraction ≈ 0.0032; 5 sd margin.
        assert!((kept - 0.7).abs() < 0.016, "kept fraction {kept}");
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        assert!((mean - 1.0).abs() < 0.025, "mean {mean}");
    }

    #[test]
    fn dropout_gradient_matches_finite_differences_for_a_fixed_mask() {
        let n = 50;
        let x = random_vec(n, 1, 1.0);
        let proj = random_vec(n, 2, 1.0);
        let fwd = |x: &[f32]| {
            let (mut out, mut mask) = (vec![0.0; n], vec![false; n]);
            dropout_forward(&mut out, &mut mask, x, 0.5, &mut ChaCha8Rng::seed_from_u64(3));
            dot(&proj, &out)
        };
        let (mut out, mut mask) = (vec![0.0; n], vec![false; n]);
        dropout_forward(&mut out, &mut mask, &x, 0.5, &mut ChaCha8Rng::seed_from_u64(3));
        let mut dx = vec![f32::NAN; n];
        dropout_backward(&mut dx, &proj, &mask, 0.5);
        check_gradient("dropout", &x, &dx, fwd, 1e-2, 1e-4, 1e-4);
    }

    /// ChaCha8 block `counter` of `stream` under `key`, as kernels/dropout.cu computes it
    /// (djb's layout: constants, 8 key words, 64-bit counter, 64-bit stream; 4 double rounds).
    fn chacha8_block(key: &[u32; 8], stream: u64, counter: u64) -> [u32; 16] {
        let mut s = [0u32; 16];
        s[..4].copy_from_slice(&[0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574]);
        s[4..12].copy_from_slice(key);
        s[12..].copy_from_slice(&[counter as u32, (counter >> 32) as u32, stream as u32, (stream >> 32) as u32]);
        let mut x = s;
        let qr = |x: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize| {
            x[a] = x[a].wrapping_add(x[b]);
            x[d] = (x[d] ^ x[a]).rotate_left(16);
            x[c] = x[c].wrapping_add(x[d]);
            x[b] = (x[b] ^ x[c]).rotate_left(12);
            x[a] = x[a].wrapping_add(x[b]);
            x[d] = (x[d] ^ x[a]).rotate_left(8);
            x[c] = x[c].wrapping_add(x[d]);
            x[b] = (x[b] ^ x[c]).rotate_left(7);
        };
        for _ in 0..4 {
            for (a, b, c, d) in [(0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15), (0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14)] {
                qr(&mut x, a, b, c, d);
            }
        }
        std::array::from_fn(|i| x[i].wrapping_add(s[i]))
    }

    #[test]
    fn the_mask_generator_is_counter_based_chacha8_as_the_gpu_kernel_computes_it() {
        // The GPU kernel relies on draw i being word i of the ChaCha8 keystream (block i / 16,
        // word i % 16) with the key of seed_from_u64 and the stream in the nonce words, and on
        // random::<f32>() being (word >> 8)·2⁻²⁴. Checked here against rand_chacha itself.
        for (seed, stream) in [(0u64, 0u64), (42, 7), (u64::MAX, 1 << 40)] {
            let mut rng = mask_rng(seed, stream);
            let key: [u32; 8] = std::array::from_fn(|i| u32::from_le_bytes(rng.get_seed()[4 * i..4 * i + 4].try_into().unwrap()));
            for counter in 0..9u64 {
                assert_eq!(chacha8_block(&key, stream, counter), std::array::from_fn(|_| rng.next_u32()), "seed {seed} stream {stream} block {counter}");
            }
            let mut rng = mask_rng(seed, stream);
            let words = chacha8_block(&key, stream, 0);
            for w in words {
                assert_eq!(rng.random::<f32>(), (w >> 8) as f32 * 2f32.powi(-24));
            }
        }
    }
}
