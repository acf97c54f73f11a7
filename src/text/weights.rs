//! BERT weights from a `model.safetensors` file (the `safetensors` crate parses and bounds-checks
//! the header; we only map names and check shapes). Tensor names are those of Hugging Face's
//! `BertModel` (`embeddings.word_embeddings.weight`, `encoder.layer.N.attention.self.query.weight`,
//! …); checkpoints saved from `BertForMaskedLM`/`BertForPreTraining` carry a `bert.` prefix and old
//! TF conversions name LayerNorm parameters `gamma`/`beta` — both are accepted. Every tensor's
//! shape is checked against the config; a mismatch names the tensor and both shapes.
//!
//! `pytorch_model.bin` (a Python pickle) is not read: no well-kept Rust crate loads pickles without
//! executing or trusting them, so such checkpoints must be converted to safetensors first.

use super::config::BertConfig;
use crate::engine::{Device, Tensor};
use anyhow::{anyhow, bail, Context, Result};
use rand::{Rng, SeedableRng};
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};
use std::path::Path;

/// Weights of one encoder layer. Q, K and V are stored fused, rows [Q; K; V], so one GEMM
/// projects all three.
#[derive(Clone, Debug)]
pub struct LayerWeights {
    pub qkv_weight: Tensor,      // (3C, C)
    pub qkv_bias: Tensor,        // (3C)
    pub attn_out_weight: Tensor, // (C, C)
    pub attn_out_bias: Tensor,   // (C)
    pub attn_ln_gamma: Tensor,   // (C)
    pub attn_ln_beta: Tensor,    // (C)
    pub ffn_in_weight: Tensor,   // (F, C)
    pub ffn_in_bias: Tensor,     // (F)
    pub ffn_out_weight: Tensor,  // (C, F)
    pub ffn_out_bias: Tensor,    // (C)
    pub out_ln_gamma: Tensor,    // (C)
    pub out_ln_beta: Tensor,     // (C)
}

/// All weights the BERT encoder uses (the pooler and MLM head, if present, are ignored).
#[derive(Clone, Debug)]
pub struct BertWeights {
    pub word_embeddings: Tensor,     // (V, C)
    pub position_embeddings: Tensor, // (P, C)
    pub token_type_embeddings: Tensor, // (TT, C)
    pub emb_ln_gamma: Tensor,        // (C)
    pub emb_ln_beta: Tensor,         // (C)
    pub layers: Vec<LayerWeights>,
    /// sha256 (hex) of the weights file, or a description for generated weights.
    pub hash: String,
}

impl BertWeights {
    /// Load and shape-check every tensor of `model.safetensors` against `cfg`.
    pub fn from_safetensors(path: &Path, cfg: &BertConfig) -> Result<BertWeights> {
        let bytes = std::fs::read(path).with_context(|| format!("reading weights {}", path.display()))?;
        let hash = hex::encode(Sha256::digest(&bytes));
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| anyhow!("{}: not a valid safetensors file: {e}", path.display()))?;
        BertWeights::from_tensors(&st, cfg, hash).with_context(|| format!("in weights file {}", path.display()))
    }

    fn from_tensors(st: &SafeTensors, cfg: &BertConfig, hash: String) -> Result<BertWeights> {
        let prefix = if st.tensor("embeddings.word_embeddings.weight").is_ok() {
            ""
        } else if st.tensor("bert.embeddings.word_embeddings.weight").is_ok() {
            "bert."
        } else {
            bail!("no tensor embeddings.word_embeddings.weight (nor bert.embeddings.word_embeddings.weight): not a BERT checkpoint");
        };
        let get = |name: &str, shape: &[usize]| read_tensor(st, prefix, name, shape);
        let (c, f) = (cfg.hidden_size, cfg.intermediate_size);
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{l}.");
            let (qw, kw, vw) = (
                get(&format!("{p}attention.self.query.weight"), &[c, c])?,
                get(&format!("{p}attention.self.key.weight"), &[c, c])?,
                get(&format!("{p}attention.self.value.weight"), &[c, c])?,
            );
            let (qb, kb, vb) = (
                get(&format!("{p}attention.self.query.bias"), &[c])?,
                get(&format!("{p}attention.self.key.bias"), &[c])?,
                get(&format!("{p}attention.self.value.bias"), &[c])?,
            );
            layers.push(LayerWeights {
                qkv_weight: Tensor::from_vec(&[3 * c, c], [qw, kw, vw].concat()),
                qkv_bias: Tensor::from_vec(&[3 * c], [qb, kb, vb].concat()),
                attn_out_weight: Tensor::from_vec(&[c, c], get(&format!("{p}attention.output.dense.weight"), &[c, c])?),
                attn_out_bias: Tensor::from_vec(&[c], get(&format!("{p}attention.output.dense.bias"), &[c])?),
                attn_ln_gamma: Tensor::from_vec(&[c], get_ln(st, prefix, &format!("{p}attention.output.LayerNorm"), true, c)?),
                attn_ln_beta: Tensor::from_vec(&[c], get_ln(st, prefix, &format!("{p}attention.output.LayerNorm"), false, c)?),
                ffn_in_weight: Tensor::from_vec(&[f, c], get(&format!("{p}intermediate.dense.weight"), &[f, c])?),
                ffn_in_bias: Tensor::from_vec(&[f], get(&format!("{p}intermediate.dense.bias"), &[f])?),
                ffn_out_weight: Tensor::from_vec(&[c, f], get(&format!("{p}output.dense.weight"), &[c, f])?),
                ffn_out_bias: Tensor::from_vec(&[c], get(&format!("{p}output.dense.bias"), &[c])?),
                out_ln_gamma: Tensor::from_vec(&[c], get_ln(st, prefix, &format!("{p}output.LayerNorm"), true, c)?),
                out_ln_beta: Tensor::from_vec(&[c], get_ln(st, prefix, &format!("{p}output.LayerNorm"), false, c)?),
            });
        }
        // A checkpoint with more layers than the config says is a mismatch, not something to ignore.
        let extra = format!("{prefix}encoder.layer.{}.attention.self.query.weight", cfg.num_hidden_layers);
        if st.tensor(&extra).is_ok() {
            bail!("tensor {extra} exists but config.json says num_hidden_layers = {}", cfg.num_hidden_layers);
        }
        Ok(BertWeights {
            word_embeddings: Tensor::from_vec(&[cfg.vocab_size, c], get("embeddings.word_embeddings.weight", &[cfg.vocab_size, c])?),
            position_embeddings: Tensor::from_vec(
                &[cfg.max_position_embeddings, c],
                get("embeddings.position_embeddings.weight", &[cfg.max_position_embeddings, c])?,
            ),
            token_type_embeddings: Tensor::from_vec(
                &[cfg.type_vocab_size, c],
                get("embeddings.token_type_embeddings.weight", &[cfg.type_vocab_size, c])?,
            ),
            emb_ln_gamma: Tensor::from_vec(&[c], get_ln(st, prefix, "embeddings.LayerNorm", true, c)?),
            emb_ln_beta: Tensor::from_vec(&[c], get_ln(st, prefix, "embeddings.LayerNorm", false, c)?),
            layers,
            hash,
        })
    }

    /// Random weights of the right shapes (N(0, 0.02²)-like uniform, LayerNorm γ=1, β=0), for
    /// benchmarking a model size no checkpoint is at hand for.
    pub fn random(cfg: &BertConfig, seed: u64) -> BertWeights {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut rnd = |shape: &[usize]| {
            let n: usize = shape.iter().product();
            // Uniform on ±0.0346 has std 0.02, BERT's initializer_range.
            Tensor::from_vec(shape, (0..n).map(|_| rng.random_range(-0.0346f32..0.0346)).collect())
        };
        let (c, f) = (cfg.hidden_size, cfg.intermediate_size);
        let ones = |n: usize| Tensor::from_vec(&[n], vec![1.0; n]);
        let layers = (0..cfg.num_hidden_layers)
            .map(|_| LayerWeights {
                qkv_weight: rnd(&[3 * c, c]),
                qkv_bias: rnd(&[3 * c]),
                attn_out_weight: rnd(&[c, c]),
                attn_out_bias: rnd(&[c]),
                attn_ln_gamma: ones(c),
                attn_ln_beta: Tensor::zeros(&[c]),
                ffn_in_weight: rnd(&[f, c]),
                ffn_in_bias: rnd(&[f]),
                ffn_out_weight: rnd(&[c, f]),
                ffn_out_bias: rnd(&[c]),
                out_ln_gamma: ones(c),
                out_ln_beta: Tensor::zeros(&[c]),
            })
            .collect();
        BertWeights {
            word_embeddings: rnd(&[cfg.vocab_size, c]),
            position_embeddings: rnd(&[cfg.max_position_embeddings, c]),
            token_type_embeddings: rnd(&[cfg.type_vocab_size, c]),
            emb_ln_gamma: ones(c),
            emb_ln_beta: Tensor::zeros(&[c]),
            layers,
            hash: format!("random-chacha8-seed{seed}"),
        }
    }

    /// The same weights copied to `device` (one upload per tensor; the hash is kept).
    pub fn to_device(&self, device: Device) -> Result<BertWeights> {
        let on = |t: &Tensor| t.to_device(device);
        let layers = self
            .layers
            .iter()
            .map(|l| {
                Ok(LayerWeights {
                    qkv_weight: on(&l.qkv_weight)?,
                    qkv_bias: on(&l.qkv_bias)?,
                    attn_out_weight: on(&l.attn_out_weight)?,
                    attn_out_bias: on(&l.attn_out_bias)?,
                    attn_ln_gamma: on(&l.attn_ln_gamma)?,
                    attn_ln_beta: on(&l.attn_ln_beta)?,
                    ffn_in_weight: on(&l.ffn_in_weight)?,
                    ffn_in_bias: on(&l.ffn_in_bias)?,
                    ffn_out_weight: on(&l.ffn_out_weight)?,
                    ffn_out_bias: on(&l.ffn_out_bias)?,
                    out_ln_gamma: on(&l.out_ln_gamma)?,
                    out_ln_beta: on(&l.out_ln_beta)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(BertWeights {
            word_embeddings: on(&self.word_embeddings)?,
            position_embeddings: on(&self.position_embeddings)?,
            token_type_embeddings: on(&self.token_type_embeddings)?,
            emb_ln_gamma: on(&self.emb_ln_gamma)?,
            emb_ln_beta: on(&self.emb_ln_beta)?,
            layers,
            hash: self.hash.clone(),
        })
    }
}

/// LayerNorm parameter under its modern (`weight`/`bias`) or TF-era (`gamma`/`beta`) name.
fn get_ln(st: &SafeTensors, prefix: &str, base: &str, scale: bool, c: usize) -> Result<Vec<f32>> {
    let (modern, old) = if scale { ("weight", "gamma") } else { ("bias", "beta") };
    let old_name = format!("{prefix}{base}.{old}");
    if st.tensor(&format!("{prefix}{base}.{modern}")).is_err() && st.tensor(&old_name).is_ok() {
        return read_tensor(st, prefix, &format!("{base}.{old}"), &[c]);
    }
    read_tensor(st, prefix, &format!("{base}.{modern}"), &[c])
}

/// One tensor as f32, checked against `shape`. f16 and bf16 checkpoints are widened exactly.
fn read_tensor(st: &SafeTensors, prefix: &str, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let full = format!("{prefix}{name}");
    let view = st.tensor(&full).map_err(|_| anyhow!("missing tensor {full}"))?;
    if view.shape() != shape {
        bail!("tensor {full} has shape {:?}, but the config implies {:?}", view.shape(), shape);
    }
    let data = view.data();
    let out: Vec<f32> = match view.dtype() {
        Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
            .collect(),
        Dtype::F16 => data.chunks_exact(2).map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))).collect(),
        other => bail!("tensor {full} has dtype {other:?}; expected F32, F16 or BF16"),
    };
    if let Some(i) = out.iter().position(|x| !x.is_finite()) {
        bail!("tensor {full} holds a non-finite value ({}) at flat index {i}", out[i]);
    }
    Ok(out)
}

/// IEEE half → single, exact (half's range and precision fit in single).
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal half: value m·2⁻²⁴; normalise into a single-precision normal.
            let shift = m.leading_zeros() - 21; // bring the top set bit to position 10
            let m = (m << shift) & 0x3ff;
            sign | ((127 - 15 + 1 - shift) << 23) | (m << 13)
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, m) => sign | 0x7fc0_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_widening_is_exact() {
        // 1.0, -2.0, 65504 (max), 2^-24 (smallest subnormal), 2^-14 (smallest normal), 0.333 ≈ 0x3555
        for (h, v) in [(0x3c00u16, 1.0f32), (0xc000, -2.0), (0x7bff, 65504.0), (0x0001, 2f32.powi(-24)),
            (0x0400, 2f32.powi(-14)), (0x3555, 1365.0 / 4096.0), (0x0200, 2f32.powi(-15))] {
            assert_eq!(f16_to_f32(h), v, "half {h:#06x}");
        }
        assert!(f16_to_f32(0x7c00).is_infinite());
    }
}
