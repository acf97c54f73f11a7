//! Forward-only BERT encoder on the engine's tensor-level ops (frozen: no activations are kept
//! for a backward), so it runs wherever its weights live: `BertModel::to_device` puts them on a
//! GPU (`cuda`, `cuda-sim`) and every op of the forward dispatches there; the CPU arms are the
//! same slice references the host-only forward called, so CPU vectors are unchanged bit for bit.
//! Layout is llm.c's: a batch of B sequences padded to T tokens is a (B·T, C) row-major tensor,
//! so every dense layer is one GEMM over all tokens of the batch.
//!
//! embeddings: x = LayerNorm(word[id] + (position[t] + token_type[0]))
//! each of the L post-LN layers:
//!   qkv = x·W_qkvᵀ + b                       (B·T, 3C)
//!   a   = MultiHeadAttention(qkv, padding mask from the lengths)
//!   x   = LayerNorm(x + a·W_oᵀ + b_o)
//!   x   = LayerNorm(x + GELU(x·W_1ᵀ + b_1)·W_2ᵀ + b_2)   (GELU with exact erf)
//! pooling (on the host, after one download of the last hidden state): [CLS] = x[b, 0] (no pooler
//! dense/tanh, as the paper's MatBERT features), or the mean over the real (unpadded) tokens.

use super::config::BertConfig;
use super::weights::BertWeights;
use crate::engine::ops::attention::AttnDims;
use crate::engine::ops::gelu::GeluKind;
use crate::engine::ops::{self, Activation, TokenIds};
use crate::engine::tensor::{Device, Indices, Tensor};
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

/// A frozen BERT: config plus weights (on the device the forward runs on).
pub struct BertModel {
    pub config: BertConfig,
    pub weights: BertWeights,
}

/// Per-caller state kept across forwards: the phase timers the benchmark prints.
#[derive(Default)]
pub struct Scratch {
    /// Wall time spent per phase, accumulated over every forward with this scratch (the cost of
    /// reading the clock is negligible next to a layer). On a GPU device launches are
    /// asynchronous, so there the phases time the launches, not the kernels; the total over a
    /// batch is still right because the host waits for the download of the result.
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

impl BertModel {
    pub fn new(config: BertConfig, weights: BertWeights) -> BertModel {
        BertModel { config, weights }
    }

    /// The device the weights (and so every forward) are on.
    pub fn device(&self) -> Device {
        self.weights.word_embeddings.device()
    }

    /// The same model with its weights copied to `device`.
    pub fn to_device(&self, device: Device) -> Result<BertModel> {
        Ok(BertModel { config: self.config.clone(), weights: self.weights.to_device(device)? })
    }

    /// Last hidden states of a padded batch: `ids` is (B, T) with T = `t`, rows padded with any
    /// valid id after `lengths[b]`. Returns the (B·T, C) tensor on the model's device.
    pub fn forward(&self, scratch: &mut Scratch, ids: &[u32], lengths: &[usize], t: usize) -> Result<Tensor> {
        let cfg = &self.config;
        let w = &self.weights;
        let b = lengths.len();
        let (c, nh) = (cfg.hidden_size, cfg.num_attention_heads);
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
        let dev = self.device();
        // The batch's integer inputs, uploaded once: token ids, position ids, token type 0, and
        // the (B, T) key padding mask (1 = real token).
        let word_ids = TokenIds::new(ids, cfg.vocab_size, dev)?;
        let positions: Vec<u32> = (0..n).map(|row| (row % t) as u32).collect();
        let position_ids = TokenIds::new(&positions, cfg.max_position_embeddings, dev)?;
        let type_ids = TokenIds::new(&vec![0u32; n], cfg.type_vocab_size, dev)?;
        let key_valid = Indices::Cpu(lengths.iter().flat_map(|&len| (0..t).map(move |j| (j < len) as u32)).collect()).to_device(dev)?;
        let dims = AttnDims { b, t, h: nh, hs: cfg.head_dim() };
        let eps = cfg.layer_norm_eps;
        let times = &mut scratch.times;
        let mut clock = std::time::Instant::now();
        let mut lap = |slot: &mut f64| {
            let now = std::time::Instant::now();
            *slot += (now - clock).as_secs_f64();
            clock = now;
        };

        // Embeddings: word[id] + (position[t] + token_type[0]) — this grouping is the one the
        // host-only forward used, so CPU sums round the same way.
        let pos_typ = ops::add(&ops::embedding(&w.position_embeddings, &position_ids), &ops::embedding(&w.token_type_embeddings, &type_ids));
        let emb = ops::add(&ops::embedding(&w.word_embeddings, &word_ids), &pos_typ); // (B·T, C)
        lap(&mut times.other);
        let mut x = ops::layernorm(&emb, &w.emb_ln_gamma, &w.emb_ln_beta, eps).0;
        lap(&mut times.layernorm);

        for lw in &w.layers {
            // Self-attention block (post-LN).
            let qkv = ops::linear(&x, &lw.qkv_weight, Some(&lw.qkv_bias)); // (B·T, 3C)
            lap(&mut times.dense);
            let ctx = ops::attention(&qkv, Some(&key_valid), dims).0.reshape(&[n, c]); // (B·T, C)
            lap(&mut times.attention);
            let proj = ops::linear(&ctx, &lw.attn_out_weight, Some(&lw.attn_out_bias));
            lap(&mut times.dense);
            let res = ops::add(&proj, &x);
            lap(&mut times.other);
            x = ops::layernorm(&res, &lw.attn_ln_gamma, &lw.attn_ln_beta, eps).0;
            lap(&mut times.layernorm);
            // Feed-forward block (post-LN).
            let ffn = ops::linear(&x, &lw.ffn_in_weight, Some(&lw.ffn_in_bias)); // (B·T, F)
            lap(&mut times.dense);
            let act = ops::activate(Activation::Gelu(GeluKind::Erf), &ffn);
            lap(&mut times.gelu);
            let proj = ops::linear(&act, &lw.ffn_out_weight, Some(&lw.ffn_out_bias));
            lap(&mut times.dense);
            let res = ops::add(&proj, &x);
            lap(&mut times.other);
            x = ops::layernorm(&res, &lw.out_ln_gamma, &lw.out_ln_beta, eps).0;
            lap(&mut times.layernorm);
        }
        Ok(x)
    }

    /// Pool each sequence of a forward's output (on the host) into one C-vector: (B, C).
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
        let alone = m.forward(&mut s, &short, &[4], 4).unwrap().to_host().unwrap(); // (4, C)
        // In a batch with a longer sequence: padded to 7 with garbage ids after position 4.
        let mut ids = short.clone();
        ids.extend([45, 46, 47]);
        ids.extend(&long);
        let batch = m.forward(&mut s, &ids, &[4, 7], 7).unwrap().to_host().unwrap(); // (2·7, C)
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
