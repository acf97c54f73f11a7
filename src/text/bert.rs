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
use crate::engine::ops::attention::{attention_forward, AttnDims};
use crate::engine::ops::embedding::embedding_forward;
use crate::engine::ops::gelu::{gelu_forward, GeluKind};
use crate::engine::ops::layernorm::layernorm_forward;
use crate::engine::ops::linear::linear_forward;
use anyhow::{bail, Result};
use rayon::prelude::*;

/// Rows per rayon task for the row-wise ops (layer norm, GELU): big enough to amortise the task,
/// small enough to balance two to a few dozen cores.
const ROWS_PER_TASK: usize = 32;

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
    ffn: Vec<f32>,   // (B·T, F) intermediate dense output
    act: Vec<f32>,   // (B·T, F) GELU of it
    mean: Vec<f32>,  // (B·T) LayerNorm statistics (unused after the forward)
    rstd: Vec<f32>,  // (B·T)
    lse: Vec<f32>,   // (B, H, T) attention log-sum-exp (unused after the forward)
    key_valid: Vec<bool>, // (B, T) padding mask: true = real token
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
        grow(&mut s.act, n * f);
        grow(&mut s.lse, b * nh * t);
        grow(&mut s.mean, n);
        grow(&mut s.rstd, n);

        s.key_valid.clear();
        for &len in lengths {
            s.key_valid.extend((0..t).map(|j| j < len));
        }
        let dims = AttnDims { b, t, h: nh, hs: cfg.head_dim() };
        let eps = cfg.layer_norm_eps;
        let mut clock = std::time::Instant::now();
        let mut lap = |slot: &mut f64| {
            let now = std::time::Instant::now();
            *slot += (now - clock).as_secs_f64();
            clock = now;
        };

        // Embeddings: word[id] + position[t] + token_type[0], into proj, then LayerNorm into x.
        embedding_forward(&mut s.proj, ids, w.word_embeddings.data(), c, cfg.vocab_size)?; // (B·T, C)
        let (pos, typ) = (w.position_embeddings.data(), &w.token_type_embeddings.data()[..c]);
        for (row, out) in s.proj[..n * c].chunks_exact_mut(c).enumerate() {
            let pe = &pos[(row % t) * c..][..c];
            for j in 0..c {
                out[j] += pe[j] + typ[j];
            }
        }
        lap(&mut s.times.other);
        layernorm_rows(&mut s.x[..n * c], &mut s.mean[..n], &mut s.rstd[..n], &s.proj[..n * c], w.emb_ln_gamma.data(), w.emb_ln_beta.data(), c, eps);
        lap(&mut s.times.layernorm);

        for lw in &w.layers {
            // Self-attention block (post-LN).
            linear_forward(&mut s.qkv, &s.x, lw.qkv_weight.data(), Some(lw.qkv_bias.data()), n, c, 3 * c); // (B·T, 3C)
            lap(&mut s.times.dense);
            attention_forward(&mut s.ctx[..n * c], &mut s.lse[..b * nh * t], &s.qkv[..n * 3 * c], Some(&s.key_valid), dims); // (B·T, C)
            lap(&mut s.times.attention);
            linear_forward(&mut s.proj, &s.ctx, lw.attn_out_weight.data(), Some(lw.attn_out_bias.data()), n, c, c);
            lap(&mut s.times.dense);
            add_inplace(&mut s.proj[..n * c], &s.x[..n * c]);
            lap(&mut s.times.other);
            layernorm_rows(&mut s.x[..n * c], &mut s.mean[..n], &mut s.rstd[..n], &s.proj[..n * c], lw.attn_ln_gamma.data(), lw.attn_ln_beta.data(), c, eps);
            lap(&mut s.times.layernorm);
            // Feed-forward block (post-LN).
            linear_forward(&mut s.ffn, &s.x, lw.ffn_in_weight.data(), Some(lw.ffn_in_bias.data()), n, c, f); // (B·T, F)
            lap(&mut s.times.dense);
            s.act[..n * f]
                .par_chunks_mut(ROWS_PER_TASK * f)
                .zip(s.ffn[..n * f].par_chunks(ROWS_PER_TASK * f))
                .for_each(|(o, i)| gelu_forward(o, i, GeluKind::Erf));
            lap(&mut s.times.gelu);
            linear_forward(&mut s.proj, &s.act, lw.ffn_out_weight.data(), Some(lw.ffn_out_bias.data()), n, f, c);
            lap(&mut s.times.dense);
            add_inplace(&mut s.proj[..n * c], &s.x[..n * c]);
            lap(&mut s.times.other);
            layernorm_rows(&mut s.x[..n * c], &mut s.mean[..n], &mut s.rstd[..n], &s.proj[..n * c], lw.out_ln_gamma.data(), lw.out_ln_beta.data(), c, eps);
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

/// The engine's layer norm over the rows of (N, C), in parallel blocks of rows.
#[allow(clippy::too_many_arguments)]
fn layernorm_rows(
    out: &mut [f32],  // (N, C)
    mean: &mut [f32], // (N)
    rstd: &mut [f32], // (N)
    inp: &[f32],      // (N, C)
    gamma: &[f32],    // (C)
    beta: &[f32],     // (C)
    c: usize,
    eps: f32,
) {
    out.par_chunks_mut(ROWS_PER_TASK * c)
        .zip(mean.par_chunks_mut(ROWS_PER_TASK).zip(rstd.par_chunks_mut(ROWS_PER_TASK)))
        .zip(inp.par_chunks(ROWS_PER_TASK * c))
        .for_each(|((o, (m, r)), x)| layernorm_forward(o, m, r, x, gamma, beta, m.len(), c, eps));
}


#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> BertModel {
        let cfg = BertConfig {
            vocab_size: 50,
            hidden_size: 8,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            intermediate_size: 16,
            max_position_embeddings: 12,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            name_or_path: None,
        };
        let w = BertWeights::random(&cfg, 3);
        BertModel::new(cfg, w)
    }

    #[test]
    fn padding_does_not_change_real_positions_and_mean_skips_it() {
        let m = tiny();
        let c = m.config.hidden_size;
        let (short, long) = (vec![1u32, 7, 9, 2], vec![1u32, 30, 31, 32, 33, 34, 2]);
        // Alone, unpadded.
        let mut s = Scratch::default();
        let alone = m.forward(&mut s, &short, &[4], 4).unwrap().to_vec(); // (4, C)
        // In a batch with a longer sequence: padded to 7 with garbage ids after position 4.
        let mut ids = short.clone();
        ids.extend([45, 46, 47]);
        ids.extend(&long);
        let batch = m.forward(&mut s, &ids, &[4, 7], 7).unwrap().to_vec(); // (2·7, C)
        for (a, b) in alone.iter().zip(&batch[..4 * c]) {
            assert!((a - b).abs() < 1e-5, "padding leaked into real positions: {a} vs {b}");
        }
        let pooled = m.pool(&batch, &[4, 7], 7, Pooling::Mean);
        for j in 0..c {
            let want = (0..4).map(|i| alone[i * c + j]).sum::<f32>() / 4.0;
            assert!((pooled[0][j] - want).abs() < 1e-5);
        }
        let cls = m.pool(&batch, &[4, 7], 7, Pooling::Cls);
        assert_eq!(cls[1], batch[7 * c..8 * c].to_vec());
    }

    #[test]
    fn bad_batches_are_errors_not_panics() {
        let m = tiny();
        let mut s = Scratch::default();
        assert!(m.forward(&mut s, &[1, 2, 3], &[3], 3).is_ok());
        assert!(m.forward(&mut s, &[1, 2, 50], &[3], 3).unwrap_err().to_string().contains("token id 50"));
        assert!(m.forward(&mut s, &[1; 13], &[13], 13).unwrap_err().to_string().contains("max_position_embeddings"));
        assert!(m.forward(&mut s, &[1, 2], &[0], 2).is_err());
    }
}
