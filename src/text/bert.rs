//! Forward-only BERT encoder on the engine's ops (frozen: no activations are kept for a backward).
//! Layout is llm.c's: a batch of B sequences padded to T tokens is a (B·T, C) row-major buffer,
//! so every dense layer is one GEMM over all tokens of the batch.
//!
//! embeddings: x = LayerNorm(word[id] + position[t] + token_type[0])
//! each of the L post-LN layers:
//!   qkv = x·W_qkvᵀ + b                       (B·T, 3C)
//!   a   = MultiHeadAttention(qkv, padding mask from the lengths)
//!   x   = LayerNorm(x + a·W_oᵀ + b_o)
//!   x   = LayerNorm(x + GELU(x·W_1ᵀ + b_1)·W_2ᵀ + b_2)   (GELU with exact erf)
//! pooling: [CLS] = x[b, 0] (no pooler dense/tanh, as the paper's MatBERT features), or the mean
//! over the real (unpadded) tokens.

use super::config::BertConfig;
use super::weights::BertWeights;
use crate::engine::ops::linear::linear_forward;
use anyhow::{bail, Result};

/// How one vector is drawn from the last hidden state of a sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Pooling {
    /// The hidden state at position 0 ([CLS]).
    Cls,
    /// Mean over the sequence's real tokens (padding excluded).
    Mean,
}

impl Pooling {
    pub fn name(&self) -> &'static str {
        match self {
            Pooling::Cls => "cls",
            Pooling::Mean => "mean",
        }
    }
}

/// A frozen BERT: config plus weights.
pub struct BertModel {
    pub config: BertConfig,
    pub weights: BertWeights,
}

/// Reusable activation buffers for one batch shape (grown on demand, never shrunk).
#[derive(Default)]
pub struct Scratch {
    x: Vec<f32>,     // (B·T, C) residual stream
    qkv: Vec<f32>,   // (B·T, 3C)
    ctx: Vec<f32>,   // (B·T, C) attention output before the output projection
    proj: Vec<f32>,  // (B·T, C) dense outputs added to the residual
    ffn: Vec<f32>,   // (B·T, F)
    mean: Vec<f32>,  // (B·T) LayerNorm statistics (unused after the forward)
    rstd: Vec<f32>,  // (B·T)
    attn: interim::AttentionScratch,
    /// Wall time spent per phase, accumulated over every forward with this scratch (the benchmark
    /// prints it; the cost of reading the clock is negligible next to a layer).
    pub times: PhaseTimes,
}

/// Seconds per phase of the forward.
#[derive(Clone, Copy, Debug, Default)]
pub struct PhaseTimes {
    pub dense: f64,
    pub attention: f64,
    pub layernorm: f64,
    pub gelu: f64,
    pub other: f64,
}

impl PhaseTimes {
    pub fn total(&self) -> f64 {
        self.dense + self.attention + self.layernorm + self.gelu + self.other
    }
}

fn grow(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}

impl BertModel {
    pub fn new(config: BertConfig, weights: BertWeights) -> BertModel {
        BertModel { config, weights }
    }

    /// Last hidden states of a padded batch: `ids` is (B, T) with T = `t`, rows padded with any
    /// valid id after `lengths[b]`. Returns a borrow of the (B·T, C) buffer in `scratch`.
    pub fn forward<'s>(&self, scratch: &'s mut Scratch, ids: &[u32], lengths: &[usize], t: usize) -> Result<&'s [f32]> {
        let cfg = &self.config;
        let w = &self.weights;
        let b = lengths.len();
        let (c, f, nh) = (cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads);
        let n = b * t;
        if ids.len() != n {
            bail!("forward: {} ids for a batch of {b} × {t}", ids.len());
        }
        if t > cfg.max_position_embeddings {
            bail!("forward: sequence length {t} exceeds max_position_embeddings {}", cfg.max_position_embeddings);
        }
        if let Some(&l) = lengths.iter().find(|&&l| l == 0 || l > t) {
            bail!("forward: sequence length {l} outside 1..={t}");
        }
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= cfg.vocab_size) {
            bail!("forward: token id {bad} outside the vocabulary of {} entries", cfg.vocab_size);
        }
        let s = scratch;
        grow(&mut s.x, n * c);
        grow(&mut s.qkv, n * 3 * c);
        grow(&mut s.ctx, n * c);
        grow(&mut s.proj, n * c);
        grow(&mut s.ffn, n * f);
        grow(&mut s.mean, n);
        grow(&mut s.rstd, n);

        // Embeddings, summed into proj then normalised into x.  (B·T, C)
        let mut clock = std::time::Instant::now();
        let mut lap = |slot: &mut f64| {
            let now = std::time::Instant::now();
            *slot += (now - clock).as_secs_f64();
            clock = now;
        };
        let (word, pos, typ) = (w.word_embeddings.data(), w.position_embeddings.data(), w.token_type_embeddings.data());
        for (row, (&id, out)) in ids.iter().zip(s.proj[..n * c].chunks_exact_mut(c)).enumerate() {
            let p = row % t;
            let (we, pe, te) = (&word[id as usize * c..][..c], &pos[p * c..][..c], &typ[..c]);
            for j in 0..c {
                out[j] = we[j] + pe[j] + te[j];
            }
        }
        lap(&mut s.times.other);
        interim::layernorm_forward(&mut s.x, &mut s.mean, &mut s.rstd, &s.proj, w.emb_ln_gamma.data(), w.emb_ln_beta.data(), n, c, cfg.layer_norm_eps);
        lap(&mut s.times.layernorm);

        for lw in &w.layers {
            // Self-attention block (post-LN).
            linear_forward(&mut s.qkv, &s.x, lw.qkv_weight.data(), Some(lw.qkv_bias.data()), n, c, 3 * c);
            lap(&mut s.times.dense);
            interim::attention_forward(&mut s.ctx, &mut s.attn, &s.qkv, lengths, b, t, c, nh);
            lap(&mut s.times.attention);
            linear_forward(&mut s.proj, &s.ctx, lw.attn_out_weight.data(), Some(lw.attn_out_bias.data()), n, c, c);
            lap(&mut s.times.dense);
            add_inplace(&mut s.proj[..n * c], &s.x[..n * c]);
            lap(&mut s.times.other);
            interim::layernorm_forward(&mut s.x, &mut s.mean, &mut s.rstd, &s.proj, lw.attn_ln_gamma.data(), lw.attn_ln_beta.data(), n, c, cfg.layer_norm_eps);
            lap(&mut s.times.layernorm);
            // Feed-forward block (post-LN).
            linear_forward(&mut s.ffn, &s.x, lw.ffn_in_weight.data(), Some(lw.ffn_in_bias.data()), n, c, f);
            lap(&mut s.times.dense);
            interim::gelu_inplace(&mut s.ffn[..n * f]);
            lap(&mut s.times.gelu);
            linear_forward(&mut s.proj, &s.ffn, lw.ffn_out_weight.data(), Some(lw.ffn_out_bias.data()), n, f, c);
            lap(&mut s.times.dense);
            add_inplace(&mut s.proj[..n * c], &s.x[..n * c]);
            lap(&mut s.times.other);
            interim::layernorm_forward(&mut s.x, &mut s.mean, &mut s.rstd, &s.proj, lw.out_ln_gamma.data(), lw.out_ln_beta.data(), n, c, cfg.layer_norm_eps);
            lap(&mut s.times.layernorm);
        }
        Ok(&s.x[..n * c])
    }

    /// Pool each sequence of a forward's output into one C-vector: (B, C).
    pub fn pool(&self, hidden: &[f32], lengths: &[usize], t: usize, pooling: Pooling) -> Vec<Vec<f32>> {
        let c = self.config.hidden_size;
        lengths
            .iter()
            .enumerate()
            .map(|(bi, &len)| {
                let seq = &hidden[bi * t * c..(bi * t + len) * c]; // (len, C)
                match pooling {
                    Pooling::Cls => seq[..c].to_vec(),
                    Pooling::Mean => {
                        // f64 sum: 512 rows of O(1) values lose ~1e-5 in f32.
                        let mut acc = vec![0.0f64; c];
                        for row in seq.chunks_exact(c) {
                            acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v as f64);
                        }
                        acc.iter().map(|a| (a / len as f64) as f32).collect()
                    }
                }
            })
            .collect()
    }
}

/// y += x
fn add_inplace(y: &mut [f32], x: &[f32]) {
    y.iter_mut().zip(x).for_each(|(a, b)| *a += b);
}

/// INTERIM: forward-only layer norm, GELU and padded multi-head attention written here while the
/// engine's ops (helper "engine": `ops::layernorm`, `ops::gelu`, `ops::attention`) land; to be
/// replaced by calls to those ops.
pub(crate) mod interim {
    use crate::engine::ops::matmul::sgemm;

    #[allow(clippy::too_many_arguments)]
    pub fn layernorm_forward(
        out: &mut [f32],  // (N, C)
        mean: &mut [f32], // (N)
        rstd: &mut [f32], // (N)
        inp: &[f32],      // (N, C)
        weight: &[f32],   // (C)
        bias: &[f32],     // (C)
        n: usize,
        c: usize,
        eps: f32,
    ) {
        for i in 0..n {
            let x = &inp[i * c..(i + 1) * c];
            let m = x.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
            let var = x.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / c as f64;
            let s = 1.0 / (var + eps as f64).sqrt();
            let (m32, s32) = (m as f32, s as f32);
            for (j, o) in out[i * c..(i + 1) * c].iter_mut().enumerate() {
                *o = (x[j] - m32) * s32 * weight[j] + bias[j];
            }
            mean[i] = m32;
            rstd[i] = s32;
        }
    }

    /// GELU(x) = x·Φ(x) = ½x(1 + erf(x/√2)), exact erf (not the tanh approximation).
    pub fn gelu_inplace(x: &mut [f32]) {
        for v in x.iter_mut() {
            let xf = *v as f64;
            *v = (0.5 * xf * (1.0 + erf(xf * std::f64::consts::FRAC_1_SQRT_2))) as f32;
        }
    }

    /// erf via the complementary error function's Chebyshev fit (Numerical Recipes `erfcc`,
    /// fractional error < 1.2e-7 everywhere), in f64.
    fn erf(x: f64) -> f64 {
        let z = x.abs();
        let t = 1.0 / (1.0 + 0.5 * z);
        let poly = -z * z - 1.26551223
            + t * (1.00002368
                + t * (0.37409196
                    + t * (0.09678418
                        + t * (-0.18628806
                            + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
        let erfc = t * poly.exp();
        if x >= 0.0 { 1.0 - erfc } else { erfc - 1.0 }
    }

    #[derive(Default)]
    pub struct AttentionScratch {
        q: Vec<f32>,      // (T, d)
        k: Vec<f32>,      // (T, d)
        v: Vec<f32>,      // (T, d)
        scores: Vec<f32>, // (T, T)
        out: Vec<f32>,    // (T, d)
    }

    /// out (B, T, C) = softmax(Q Kᵀ/√d + mask) V per head, qkv (B, T, 3C) holding [Q | K | V];
    /// keys at positions ≥ lengths[b] are masked. Only the first lengths[b] query rows are
    /// computed; padded rows of `out` are set to 0.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_forward(
        out: &mut [f32],  // (B, T, C)
        s: &mut AttentionScratch,
        qkv: &[f32],      // (B, T, 3C)
        lengths: &[usize], // (B)
        b: usize,
        t: usize,
        c: usize,
        nh: usize,
    ) {
        let d = c / nh;
        let scale = 1.0 / (d as f32).sqrt();
        for v in [&mut s.q, &mut s.k, &mut s.v, &mut s.out] {
            if v.len() < t * d {
                v.resize(t * d, 0.0);
            }
        }
        if s.scores.len() < t * t {
            s.scores.resize(t * t, 0.0);
        }
        out[..b * t * c].fill(0.0);
        for bi in 0..b {
            let len = lengths[bi];
            for h in 0..nh {
                for i in 0..len {
                    let row = &qkv[(bi * t + i) * 3 * c..][..3 * c];
                    s.q[i * d..(i + 1) * d].copy_from_slice(&row[h * d..(h + 1) * d]);
                    s.k[i * d..(i + 1) * d].copy_from_slice(&row[c + h * d..c + (h + 1) * d]);
                    s.v[i * d..(i + 1) * d].copy_from_slice(&row[2 * c + h * d..2 * c + (h + 1) * d]);
                }
                // scores (len, len) = Q Kᵀ · scale
                sgemm(&mut s.scores, &s.q, &s.k, len, len, d, false, true, scale, 0.0);
                for r in s.scores[..len * len].chunks_exact_mut(len) {
                    let mx = r.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0.0f32;
                    for x in r.iter_mut() {
                        *x = (*x - mx).exp();
                        sum += *x;
                    }
                    let inv = 1.0 / sum;
                    r.iter_mut().for_each(|x| *x *= inv);
                }
                // out_h (len, d) = P V
                sgemm(&mut s.out, &s.scores, &s.v, len, d, len, false, false, 1.0, 0.0);
                for i in 0..len {
                    out[(bi * t + i) * c + h * d..][..d].copy_from_slice(&s.out[i * d..(i + 1) * d]);
                }
            }
        }
    }
}
