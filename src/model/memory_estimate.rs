//! Size checks and a memory estimate of the encoders a configuration asks for, computed from the
//! configuration alone before anything is allocated: a `hidden = 10000000` typo must be an error
//! saying how much memory it would need, not an allocation abort minutes into a cluster job.
//!
//! The estimate counts parameters from each encoder's layer shapes (the same shapes the encoder
//! constructors build) and charges 16 bytes per parameter for training (f32 weights, gradients
//! and two AdamW moments), plus one stored f32 per layer output of one step on typical data sizes
//! (601 DOS points, 32³ densities, ~20 atoms and ~50 edges per atom per material); the backward
//! keeps several tensors per layer (and attention is recomputed, never stored), so this is a
//! lower bound on what training needs: refusing what it says cannot fit never refuses a run that
//! could.

use super::config::{CrystalEncoderKind, EncodersConfig};
use super::Modality;
use anyhow::{bail, ensure, Result};

/// Widths (hidden sizes, channels, heads, …) above this are refused as typos.
pub const MAX_WIDTH: usize = 1 << 16;
/// Layer and block counts above this are refused as typos.
pub const MAX_DEPTH: usize = 1024;

/// Bytes per trained parameter: weight, gradient, two AdamW moments (f32 each).
const TRAIN_BYTES_PER_PARAM: f64 = 16.0;
/// Typical data sizes of one material used for the activation estimate.
const DOS_POINTS: f64 = 601.0;
const DENSITY_VOXELS: f64 = 32.0 * 32.0 * 32.0;
const ATOMS_PER_MATERIAL: f64 = 20.0;
const EDGES_PER_ATOM: f64 = 30.0;

fn width(name: &str, v: usize) -> Result<f64> {
    ensure!(v > 0 && v <= MAX_WIDTH, "{name} = {v} is outside 1..={MAX_WIDTH}");
    Ok(v as f64)
}

fn depth(name: &str, v: usize) -> Result<f64> {
    ensure!(v > 0 && v <= MAX_DEPTH, "{name} = {v} is outside 1..={MAX_DEPTH}");
    Ok(v as f64)
}

fn linear(i: f64, o: f64) -> f64 {
    i * o + o
}

/// (parameters, activation floats per material) of one encoder, after range checks.
pub fn encoder_size(modality: Modality, c: &EncodersConfig, embed_dim: usize) -> Result<(f64, f64)> {
    let e = width("model.embed_dim", embed_dim)?;
    Ok(match modality {
        Modality::Crystal => match c.crystal_encoder {
            CrystalEncoderKind::Potnet => {
                let p = &c.potnet;
                let h = width("model.encoders.potnet.hidden", p.hidden)?;
                let layers = depth("model.encoders.potnet.conv_layers", p.conv_layers)?;
                let bins = width("model.encoders.potnet.local_rbf_bins", p.local_rbf_bins)?
                    + width("model.encoders.potnet.infinite_rbf_bins", p.infinite_rbf_bins)?;
                let conv = 2.0 * (linear(3.0 * h, h) + linear(h, h)) + 8.0 * h;
                let params = linear(92.0, h) + bins * h + layers * conv + linear(h, e);
                let atoms = ATOMS_PER_MATERIAL;
                let edges = atoms * (EDGES_PER_ATOM + atoms);
                (params, layers * (edges + atoms) * h + edges * bins)
            }
            CrystalEncoderKind::Cgcnn => {
                let p = &c.cgcnn;
                let f = width("model.encoders.cgcnn.atom_fea_len", p.atom_fea_len)?;
                let layers = depth("model.encoders.cgcnn.conv_layers", p.conv_layers)?;
                let hf = width("model.encoders.cgcnn.h_fea_len", p.h_fea_len)?;
                let bins = width("model.encoders.cgcnn.rbf_bins", p.rbf_bins)?;
                let params = linear(92.0, f) + layers * (linear(2.0 * f + bins, 2.0 * f) + 8.0 * f) + linear(f, hf) + linear(hf, e);
                let edges = ATOMS_PER_MATERIAL * 12.0;
                (params, layers * edges * 2.0 * f)
            }
        },
        Modality::Dos => {
            let p = &c.dos_transformer;
            let d = width("model.encoders.dos_transformer.dim", p.dim)?;
            let layers = depth("model.encoders.dos_transformer.layers", p.layers)?;
            let heads = width("model.encoders.dos_transformer.heads", p.heads)?;
            let hs = width("model.encoders.dos_transformer.head_size", p.head_size)?;
            let ffn = width("model.encoders.dos_transformer.ffn_dim", p.ffn_dim)?;
            let block = 4.0 * d * heads * hs + 2.0 * d * ffn + 4.0 * d + ffn;
            let mix = if p.mix_layer { linear(2.0 * d, 2.0 * d) } else { 0.0 };
            let head = if p.head { linear(d, e) } else { 0.0 };
            let params = 4.0 * d + mix + linear(2.0 * d, d) + layers * block + head;
            let l = DOS_POINTS;
            // Per layer: the residual stream and the FFN hidden layer.
            let acts = layers * l * (d + ffn);
            (params, acts)
        }
        Modality::ChargeDensity => {
            let p = &c.resnext3d;
            ensure!(
                !p.stages.is_empty() && p.stages.len() == p.planes.len() && p.stages.len() == p.strides.len(),
                "model.encoders.resnext3d: stages, planes and strides need the same (non-zero) length"
            );
            let card = width("model.encoders.resnext3d.cardinality", p.cardinality)?;
            let stem = width("model.encoders.resnext3d.stem_channels", p.stem_channels)?;
            let k = width("model.encoders.resnext3d.stem_kernel", p.stem_kernel)?;
            let stem_stride = width("model.encoders.resnext3d.stem_stride", p.stem_stride)?;
            ensure!(p.stem_kernel <= 64, "model.encoders.resnext3d.stem_kernel = {} is larger than 64", p.stem_kernel);
            let mut params = k * k * k * stem + 2.0 * stem;
            // Stem output then max-pool (stride 2): voxels per material after each.
            let mut voxels = DENSITY_VOXELS / stem_stride.powi(3);
            let mut acts = stem * voxels;
            voxels /= 8.0;
            let mut c_in = stem;
            for (s, ((&blocks, &planes), &stride)) in p.stages.iter().zip(&p.planes).zip(&p.strides).enumerate() {
                let blocks = depth(&format!("model.encoders.resnext3d.stages[{s}]"), blocks)?;
                let planes = width(&format!("model.encoders.resnext3d.planes[{s}]"), planes)?;
                let stride = width(&format!("model.encoders.resnext3d.strides[{s}]"), stride)?;
                let w = card * planes / 32.0;
                let out = 2.0 * planes;
                let block = |c_in: f64| c_in * w + 27.0 * w * (w / card) + w * out + 6.0 * w + 2.0 * out;
                params += block(c_in) + c_in * out + 2.0 * out + (blocks - 1.0) * block(out);
                voxels = (voxels / stride.powi(3)).max(1.0);
                acts += blocks * voxels * out;
                c_in = out;
            }
            (params + linear(c_in, e), acts)
        }
        Modality::Text => {
            let p = &c.text_mlp;
            let mut dims = vec![width("model.encoders.text_mlp.input_dim", p.input_dim)?];
            ensure!(p.hidden.len() <= MAX_DEPTH, "model.encoders.text_mlp.hidden has {} layers, more than {MAX_DEPTH}", p.hidden.len());
            for (k, &h) in p.hidden.iter().enumerate() {
                dims.push(width(&format!("model.encoders.text_mlp.hidden[{k}]"), h)?);
            }
            dims.push(e);
            let params: f64 = dims.windows(2).map(|w| linear(w[0], w[1])).sum();
            (params, dims.iter().sum::<f64>())
        }
    })
}

/// Estimated bytes to train the encoders of `modalities` at `batch` materials per step.
pub fn training_bytes(modalities: &[Modality], c: &EncodersConfig, embed_dim: usize, batch: usize) -> Result<f64> {
    let mut total = 0.0;
    for &m in modalities {
        let (params, acts) = encoder_size(m, c, embed_dim)?;
        total += TRAIN_BYTES_PER_PARAM * params + 4.0 * acts * batch as f64;
    }
    Ok(total)
}

/// Memory this machine can give a process now (MemAvailable of /proc/meminfo), if known.
pub fn available_bytes() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

/// Refuse a configuration whose sizes are out of range or whose estimated training memory
/// exceeds `limit_bytes` (default: what the machine has available), saying how much it needs.
pub fn check_fits(modalities: &[Modality], c: &EncodersConfig, embed_dim: usize, batch: usize, limit_bytes: Option<f64>) -> Result<()> {
    let need = training_bytes(modalities, c, embed_dim, batch)?;
    if let Some(limit) = limit_bytes.or_else(available_bytes) {
        if need > limit {
            bail!(
                "the model needs about {:.1} GiB to train at batch size {batch} (estimate: parameters, gradients, \
                 AdamW state and the largest activations), but only {:.1} GiB is available; reduce the encoder \
                 sizes or optim.batch_size",
                need / (1u64 << 30) as f64,
                limit / (1u64 << 30) as f64
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::build_encoder;

    const ALL: [Modality; 4] = [Modality::Crystal, Modality::Dos, Modality::ChargeDensity, Modality::Text];

    #[test]
    fn parameter_estimate_matches_the_built_encoders() {
        // Small sizes so the encoders build quickly; the estimate must count their parameters.
        let mut c = EncodersConfig::default();
        c.potnet.hidden = 32;
        c.dos_transformer.dim = 16; // = embed_dim: no head (the default)
        c.dos_transformer.ffn_dim = 64;
        c.resnext3d.planes = vec![32, 64, 64, 64];
        c.resnext3d.stages = vec![1, 1, 1, 1];
        for m in ALL {
            let mut built = build_encoder(m, &c, 16, 0).unwrap();
            let mut counted = 0usize;
            built.visit_params(&mut |p| counted += p.value.numel());
            let (estimated, _) = encoder_size(m, &c, 16).unwrap();
            let ratio = estimated / counted as f64;
            assert!((0.8..1.25).contains(&ratio), "{m:?}: estimated {estimated} vs {counted} parameters");
        }
    }

    #[test]
    fn absurd_sizes_are_refused_before_allocating_and_say_how_much() {
        let mut c = EncodersConfig::default();
        c.dos_transformer.heads = 1 << 30;
        let e = check_fits(&ALL, &c, 128, 360, Some(1e12)).unwrap_err().to_string();
        assert!(e.contains("dos_transformer.heads"), "{e}");
        let mut c = EncodersConfig::default();
        c.potnet.hidden = 60_000;
        let e = check_fits(&ALL, &c, 128, 360, Some(64.0 * (1u64 << 30) as f64)).unwrap_err().to_string();
        assert!(e.contains("GiB to train") && e.contains("64.0 GiB is available"), "{e}");
        check_fits(&ALL, &EncodersConfig::default(), 128, 360, Some(64.0 * (1u64 << 30) as f64)).unwrap();
    }
}
