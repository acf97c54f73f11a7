//! Reading pre-training checkpoints in tests: every tensor of a checkpoint (weights and optimiser files), and
//! the device-vs-CPU weight comparison that skips entries whose gradient is rounding noise.

use std::path::{Path, PathBuf};

/// √v (AdamW's second moment) below which an entry's gradient is rounding noise: AdamW divides
/// by √v, so such an entry (a bias right before a batch norm, which removes it) moves by ±lr in
/// the direction of its noise on either device and is counted, not compared.
pub const NOISE_RMS: f32 = 1e-7;

/// name → values of every tensor of a checkpoint: its weights file and, beside it, its
/// optimiser-state file (`.optim.safetensors`), in name order.
pub fn tensors(st_file: &Path) -> Vec<(String, Vec<f32>)> {
    let mut out = Vec::new();
    for file in [st_file.to_path_buf(), st_file.with_extension("optim.safetensors")] {
        if !file.exists() {
            continue;
        }
        let bytes = std::fs::read(&file).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for (n, view) in st.tensors() {
            out.push((n, view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

pub fn ckpt(out: &Path, step: u64) -> PathBuf {
    out.join(format!("checkpoints/step-{step:08}.safetensors"))
}

/// (largest |a − b| over entries whose gradient is real, entries compared, noise-driven entries)
/// of the parameters of two checkpoints; "real" is judged by `reference`'s AdamW second moments.
pub fn weight_difference(reference: &Path, other: &Path) -> (f32, usize, usize) {
    let (a, b) = (tensors(reference), tensors(other));
    let find = |set: &[(String, Vec<f32>)], name: &str| set.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let (mut worst, mut compared, mut noise) = (0.0f32, 0usize, 0usize);
    for (name, va) in a.iter().filter(|(n, _)| n.starts_with("param.")) {
        let vb = find(&b, name).unwrap_or_else(|| panic!("{name} missing"));
        let v = find(&a, &format!("adamw.{}.exp_avg_sq", &name["param.".len()..])).unwrap_or_else(|| panic!("moments of {name} missing"));
        for ((x, y), v) in va.iter().zip(&vb).zip(&v) {
            if v.sqrt() > NOISE_RMS {
                worst = worst.max((x - y).abs());
                compared += 1;
            } else {
                noise += 1;
            }
        }
    }
    (worst, compared, noise)
}

