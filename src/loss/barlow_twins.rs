//! 3-D BarlowTwins for three modalities (Supplemental Equation S3), exactly, without any D³
//! tensor — cheaper than streaming over one axis.
//!
//! Cross-correlation over the n valid rows: C_ijk = (1/n) Σ_b za_bi zb_bj zc_bk, where each
//! embedding dimension is first standardised over the batch, z = (x − μ)/√(var + ε) (biased
//! variance, ε = 1e-5). That is the reference code: its BarlowTwins runs end every encoder in a
//! `BatchNorm1d` (`--use_final_bn`) and divide the einsum by the batch size. (The paper's S4
//! writes the normalisation as column norms of mean-centred embeddings, i.e. our C divided by
//! √n; the reference's scaling is the one that was trained with.) `standardize = false` skips
//! the standardisation and uses the inputs as they are.
//!
//! Loss = Σ_{i=j=k} (1 − C)² + Σ_{exactly two equal} (½ − C)² + λ Σ_{all distinct} C²
//! (the reference `FastBTLoss3D` with `--barlow_half`). Rewrite it as
//!   λ·‖C‖² + Σ_{S} [(1 − λ)C² − 2tC + t²],   S = {not all distinct}, t = target on S,
//! and note (i) ‖C‖² = (1/n²) Σ_{b,b'} Ga_bb' Gb_bb' Gc_bb' with the Gram matrices G = z zᵀ,
//! O(n²D); (ii) S holds only D² entries, the three D×D matrices
//! P_ik = C_iik = (1/n)(za⊙zb)ᵀzc, Q_ij = C_iji = (1/n)(za⊙zc)ᵀzb, R_ij = C_ijj = (1/n)zaᵀ(zb⊙zc)
//! (diagonal i=j=k shared; counted once, in P), O(nD²). The backward is GEMMs through the same
//! products, then the batch-standardisation backward. Cost ~12·(n²D + nD²) multiply-adds.
//!
//! Masking: rows present in all three modalities; n < 2 contributes 0 (a one-row batch has no
//! variance to standardise). Distribution: the statistics (μ, σ, P, Q, R) are global and cheap;
//! the share of λ‖C‖² is the rows b ∈ owned rows of the double sum, the share of the S part is
//! the owned fraction of the valid rows, and the gradient share is the full gradient w.r.t. the
//! standardised rows restricted to the owned rows, pulled back through the (linear, given the
//! global statistics) standardisation backward — so shares over a partition add up exactly.
//!
//! On a GPU device, [`barlow_twins_3d_device`] runs the same steps with the same masking and
//! shares: every product above through cuBLAS (`GemmDesc`), the Hadamard products and sums
//! through the elementwise kernels, and the loss-specific parts — the standardisation and its
//! backward, the S part's targets, the Gram triple sums — in `kernels/barlow_twins.cu`, each
//! value with one writer and every sum in a fixed order (a run repeats bit for bit). Only the
//! per-row f64 partial sums (D + owned rows values) come back to the host, added in order.

use std::ops::Range;

use anyhow::{bail, Result};

use super::ValidRows;
use crate::engine::gpu::barlow_twins as kernels;
use crate::engine::gpu::tensor_clip::{download_f64, f64_words};
use crate::engine::gpu::{self, gpu_of, gpu_vec_mut, matmul_row_major};
use crate::engine::ops::elementwise::mul;
use crate::engine::ops::matmul::sgemm;
use crate::engine::{ops, Storage, Tensor};

/// BatchNorm1d's default ε.
pub const STANDARDIZE_EPS: f64 = 1e-5;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BarlowLoss {
    pub loss: f64,
    /// Rows present in all three modalities (n).
    pub valid_rows: usize,
}

/// 3-D BarlowTwins share of the owned `rows`; with all three gradient buffers given, writes the
/// gradient share w.r.t. the global (B, D) inputs (zero on rows not valid for the term).
#[allow(clippy::too_many_arguments)]
pub fn barlow_twins_3d(
    da: Option<&mut [f32]>, // (B, D)
    db: Option<&mut [f32]>, // (B, D)
    dc: Option<&mut [f32]>, // (B, D)
    x: [&[f32]; 3],         // (B, D) each
    present: [&[bool]; 3],  // (B) each
    dim: usize,
    lambda: f32,
    standardize: bool,
    rows: Range<usize>,
) -> BarlowLoss {
    let valid = ValidRows::new(&present, &rows);
    let n = valid.len();
    let mut outs = [da, db, dc];
    for g in outs.iter_mut().flatten() {
        g.fill(0.0);
    }
    if n < 2 || valid.own.is_empty() {
        return BarlowLoss {
            loss: 0.0,
            valid_rows: n,
        };
    }
    let d = dim;
    let lam = lambda as f64;
    let (o0, o1) = (valid.own.start, valid.own.end);
    let no = o1 - o0;
    let inv_n = 1.0 / n as f32;

    // z = standardised valid rows, with the σ the backward needs.
    let std: Vec<Standardized> = x
        .iter()
        .map(|m| Standardized::new(valid.gather(m, d), n, d, standardize))
        .collect();
    let (za, zb, zc) = (&std[0].z, &std[1].z, &std[2].z); // (n, D) each
    let zab = hadamard(za, zb); // (n, D)
    let zac = hadamard(za, zc); // (n, D)
    let zbc = hadamard(zb, zc); // (n, D)

    // The D×D slices of C that carry targets or weight 1.
    let mut p = vec![0.0f32; d * d]; // (D, D) P_ik = C_iik
    let mut q = vec![0.0f32; d * d]; // (D, D) Q_ij = C_iji
    let mut r = vec![0.0f32; d * d]; // (D, D) R_ij = C_ijj
    sgemm(&mut p, &zab, zc, d, d, n, true, false, inv_n, 0.0);
    sgemm(&mut q, &zac, zb, d, d, n, true, false, inv_n, 0.0);
    sgemm(&mut r, za, &zbc, d, d, n, true, false, inv_n, 0.0);

    // S part: Σ h_t(C) over S with h_t(C) = (1−λ)C² − 2tC + t², and its derivative dS/dC.
    let h = |c: f64, t: f64| (1.0 - lam) * c * c - 2.0 * t * c + t * t;
    let dh = |c: f64, t: f64| 2.0 * (1.0 - lam) * c - 2.0 * t;
    let mut s_part = 0.0f64;
    let mut dp = vec![0.0f32; d * d]; // (D, D)
    let mut dq = vec![0.0f32; d * d]; // (D, D)
    let mut dr = vec![0.0f32; d * d]; // (D, D)
    for i in 0..d {
        for j in 0..d {
            let ij = i * d + j;
            if i == j {
                s_part += h(p[ij] as f64, 1.0);
                dp[ij] = dh(p[ij] as f64, 1.0) as f32;
            } else {
                s_part += h(p[ij] as f64, 0.5) + h(q[ij] as f64, 0.5) + h(r[ij] as f64, 0.5);
                dp[ij] = dh(p[ij] as f64, 0.5) as f32;
                dq[ij] = dh(q[ij] as f64, 0.5) as f32;
                dr[ij] = dh(r[ij] as f64, 0.5) as f32;
            }
        }
    }

    // λ‖C‖² share: (λ/n²) Σ_{b ∈ own} Σ_b' Ga Gb Gc, from the owned rows of the Gram matrices.
    let gram_rows = |z: &[f32]| {
        let mut g = vec![0.0f32; no * n]; // (no, n)
        sgemm(&mut g, &z[o0 * d..o1 * d], z, no, n, d, false, true, 1.0, 0.0);
        g
    };
    let (ga, gb, gc) = (gram_rows(za), gram_rows(zb), gram_rows(zc));
    let full_sq: f64 = ga
        .iter()
        .zip(&gb)
        .zip(&gc)
        .map(|((x, y), z)| *x as f64 * *y as f64 * *z as f64)
        .sum();
    let nf = n as f64;
    let loss = lam / (nf * nf) * full_sq + s_part * no as f64 / nf;

    if let [Some(da), Some(db), Some(dc)] = outs {
        // Gradient w.r.t. the owned rows of za, zb, zc: (no, D) each.
        let mut dza = vec![0.0f32; no * d];
        let mut dzb = vec![0.0f32; no * d];
        let mut dzc = vec![0.0f32; no * d];
        // λ‖C‖²: dza = (2λ/n²)(Gb⊙Gc)·za, and cyclically.
        let alpha = (2.0 * lam / (nf * nf)) as f32;
        sgemm(&mut dza, &hadamard(&gb, &gc), za, no, d, n, false, false, alpha, 1.0);
        sgemm(&mut dzb, &hadamard(&ga, &gc), zb, no, d, n, false, false, alpha, 1.0);
        sgemm(&mut dzc, &hadamard(&ga, &gb), zc, no, d, n, false, false, alpha, 1.0);
        let own = |z: &[f32]| z[o0 * d..o1 * d].to_vec();
        let (za_o, zb_o, zc_o) = (own(za), own(zb), own(zc));
        let mut tmp = vec![0.0f32; no * d];
        // P = (1/n)(za⊙zb)ᵀ zc: d(za⊙zb) = (1/n) zc dPᵀ; dzc += (1/n)(za⊙zb) dP.
        sgemm(&mut tmp, &zc_o, &dp, no, d, d, false, true, inv_n, 0.0);
        add_hadamard(&mut dza, &tmp, &zb_o);
        add_hadamard(&mut dzb, &tmp, &za_o);
        sgemm(&mut dzc, &zab[o0 * d..o1 * d], &dp, no, d, d, false, false, inv_n, 1.0);
        // Q = (1/n)(za⊙zc)ᵀ zb: d(za⊙zc) = (1/n) zb dQᵀ; dzb += (1/n)(za⊙zc) dQ.
        sgemm(&mut tmp, &zb_o, &dq, no, d, d, false, true, inv_n, 0.0);
        add_hadamard(&mut dza, &tmp, &zc_o);
        add_hadamard(&mut dzc, &tmp, &za_o);
        sgemm(&mut dzb, &zac[o0 * d..o1 * d], &dq, no, d, d, false, false, inv_n, 1.0);
        // R = (1/n) zaᵀ (zb⊙zc): dza += (1/n)(zb⊙zc) dRᵀ; d(zb⊙zc) = (1/n) za dR.
        sgemm(&mut dza, &zbc[o0 * d..o1 * d], &dr, no, d, d, false, true, inv_n, 1.0);
        sgemm(&mut tmp, &za_o, &dr, no, d, d, false, false, inv_n, 0.0);
        add_hadamard(&mut dzb, &tmp, &zc_o);
        add_hadamard(&mut dzc, &tmp, &zb_o);
        // Through the standardisation (all n rows feel the owned rows via μ and σ).
        for ((out, dz), s) in [da, db, dc].into_iter().zip([dza, dzb, dzc]).zip(&std) {
            let dx = s.backward(&dz, o0);
            valid.scatter_add(out, &dx, d);
        }
    }
    BarlowLoss { loss, valid_rows: n }
}

/// The device form of [`barlow_twins_3d`]: inputs (B, D) on one GPU device; with `grads`,
/// WRITES the gradient share into them (zero on rows not valid for the term). Waits once, for
/// the O(D + rows) f64 partial sums of the loss.
pub fn barlow_twins_3d_device(
    mut grads: Option<[&mut Tensor; 3]>, // (B, D) each, written
    x: [&Tensor; 3],                     // (B, D) each
    present: [&[bool]; 3],               // (B) each
    lambda: f32,
    standardize: bool,
    rows: Range<usize>,
) -> Result<BarlowLoss> {
    let d = match x[0].shape.as_slice() {
        [_, d] => *d,
        s => bail!("barlow_twins: embeddings of shape {s:?}, expected (B, D)"),
    };
    let valid = ValidRows::new(&present, &rows);
    let n = valid.len();
    if let Some(gs) = grads.as_mut() {
        for g in gs.iter_mut() {
            ops::fill(g, 0.0);
        }
    }
    if n < 2 || valid.own.is_empty() {
        return Ok(BarlowLoss { loss: 0.0, valid_rows: n });
    }
    let device = x[0].device();
    let g = gpu_of(x[0]).clone();
    let lam = lambda as f64;
    let (o0, o1) = (valid.own.start, valid.own.end);
    let no = o1 - o0;
    let inv_n = 1.0 / n as f32;
    let ptr = |t: &Tensor| t.gpu_vec().ptr();
    // Address of row `r` of an (·, D) device tensor.
    let row_ptr = |t: &Tensor, r: usize| t.gpu_vec().ptr() + (4 * r * d) as u64;
    let new = |shape: &[usize]| Tensor::uninit_on(shape, device);

    // z = standardised valid rows (n, D), with σ⁻¹ (D f64) for the backward.
    let index_host: Vec<u32> = valid.index.iter().map(|&r| r as u32).collect();
    let index = g.upload(&index_host)?;
    let mut z: Vec<Tensor> = Vec::with_capacity(3);
    let mut inv_std = Vec::with_capacity(3);
    for src in x {
        let mut xc = new(&[n, d])?;
        gpu::infonce::gather_rows(&g, gpu_vec_mut(&mut xc, "barlow_twins"), src.gpu_vec(), &index, d)?;
        let zt = new(&[n, d])?;
        let is = f64_words(&g, d, false)?;
        kernels::standardize(&g, ptr(&zt), is.ptr(), ptr(&xc), n, d, STANDARDIZE_EPS, standardize)?;
        z.push(zt);
        inv_std.push(is);
    }
    let (za, zb, zc) = (&z[0], &z[1], &z[2]);
    let zab = mul(za, zb); // (n, D)
    let zac = mul(za, zc); // (n, D)
    let zbc = mul(zb, zc); // (n, D)

    // P = (1/n)(za⊙zb)ᵀzc, Q = (1/n)(za⊙zc)ᵀzb, R = (1/n)zaᵀ(zb⊙zc): (D, D) each.
    let (p, q, r) = (new(&[d, d])?, new(&[d, d])?, new(&[d, d])?);
    matmul_row_major(&g, true, false, d, d, n, inv_n, ptr(&zab), ptr(zc), 0.0, ptr(&p))?;
    matmul_row_major(&g, true, false, d, d, n, inv_n, ptr(&zac), ptr(zb), 0.0, ptr(&q))?;
    matmul_row_major(&g, true, false, d, d, n, inv_n, ptr(za), ptr(&zbc), 0.0, ptr(&r))?;
    // S part per row of the slices, and dS/dC.
    let s_rows = f64_words(&g, d, false)?;
    let (dp, dq, dr) = (new(&[d, d])?, new(&[d, d])?, new(&[d, d])?);
    kernels::targets(&g, s_rows.ptr(), ptr(&dp), ptr(&dq), ptr(&dr), ptr(&p), ptr(&q), ptr(&r), d, lam)?;

    // λ‖C‖² share from the owned rows of the Gram matrices: (no, n) each.
    let gram_rows = |zt: &Tensor| -> Result<Tensor> {
        let out = new(&[no, n])?;
        matmul_row_major(&g, false, true, no, n, d, 1.0, row_ptr(zt, o0), ptr(zt), 0.0, ptr(&out))?;
        Ok(out)
    };
    let (ga, gb, gc) = (gram_rows(za)?, gram_rows(zb)?, gram_rows(zc)?);
    let triple = f64_words(&g, no, false)?;
    kernels::triple_rows(&g, triple.ptr(), ptr(&ga), ptr(&gb), ptr(&gc), no, n)?;

    if let Some(out) = grads {
        // Gradient w.r.t. the owned rows of za, zb, zc: (no, D) each.
        let nf = n as f64;
        let alpha = (2.0 * lam / (nf * nf)) as f32;
        // λ‖C‖²: dza = (2λ/n²)(Gb⊙Gc)·za, and cyclically.
        let mut dz: Vec<Tensor> = Vec::with_capacity(3);
        for (gx, gy, zt) in [(&gb, &gc, za), (&ga, &gc, zb), (&ga, &gb, zc)] {
            let t = new(&[no, d])?;
            matmul_row_major(&g, false, false, no, d, n, alpha, ptr(&mul(gx, gy)), ptr(zt), 0.0, ptr(&t))?;
            dz.push(t);
        }
        let own_rows = |t: &Tensor| -> Result<Tensor> {
            let mut o = new(&[no, d])?;
            g.copy(gpu_vec_mut(&mut o, "barlow_twins"), 0, t.gpu_vec(), o0 * d, no * d)?;
            Ok(o)
        };
        let (za_o, zb_o, zc_o) = (own_rows(za)?, own_rows(zb)?, own_rows(zc)?);
        let [dza, dzb, dzc] = &mut dz[..] else { unreachable!("three modalities") };
        let tmp = new(&[no, d])?;
        // P: d(za⊙zb) = (1/n) zc dPᵀ; dzc += (1/n)(za⊙zb) dP.
        matmul_row_major(&g, false, true, no, d, d, inv_n, ptr(&zc_o), ptr(&dp), 0.0, ptr(&tmp))?;
        ops::add_assign(dza, &mul(&tmp, &zb_o));
        ops::add_assign(dzb, &mul(&tmp, &za_o));
        matmul_row_major(&g, false, false, no, d, d, inv_n, row_ptr(&zab, o0), ptr(&dp), 1.0, ptr(dzc))?;
        // Q: d(za⊙zc) = (1/n) zb dQᵀ; dzb += (1/n)(za⊙zc) dQ.
        matmul_row_major(&g, false, true, no, d, d, inv_n, ptr(&zb_o), ptr(&dq), 0.0, ptr(&tmp))?;
        ops::add_assign(dza, &mul(&tmp, &zc_o));
        ops::add_assign(dzc, &mul(&tmp, &za_o));
        matmul_row_major(&g, false, false, no, d, d, inv_n, row_ptr(&zac, o0), ptr(&dq), 1.0, ptr(dzb))?;
        // R: dza += (1/n)(zb⊙zc) dRᵀ; d(zb⊙zc) = (1/n) za dR.
        matmul_row_major(&g, false, true, no, d, d, inv_n, row_ptr(&zbc, o0), ptr(&dr), 1.0, ptr(dza))?;
        matmul_row_major(&g, false, false, no, d, d, inv_n, ptr(&za_o), ptr(&dr), 0.0, ptr(&tmp))?;
        ops::add_assign(dzb, &mul(&tmp, &zc_o));
        ops::add_assign(dzc, &mul(&tmp, &zb_o));
        // Through the standardisation (all n rows feel the owned rows via μ and σ).
        for (((dst, dzt), zt), is) in out.into_iter().zip(&dz).zip(&z).zip(&inv_std) {
            let dx = new(&[n, d])?;
            kernels::standardize_backward(&g, ptr(&dx), ptr(dzt), ptr(zt), is.ptr(), n, d, o0, no, standardize)?;
            match &mut dst.storage {
                Storage::Gpu(v) => gpu::infonce::scatter_rows_add(&g, v, dx.gpu_vec(), &index, d)?,
                Storage::Cpu(_) => bail!("barlow_twins: embedding gradient on the CPU, embeddings on {device}"),
            }
        }
    }
    let full_sq: f64 = download_f64(&g, &triple, no)?.iter().sum();
    let s_part: f64 = download_f64(&g, &s_rows, d)?.iter().sum();
    let nf = n as f64;
    let loss = lam / (nf * nf) * full_sq + s_part * no as f64 / nf;
    Ok(BarlowLoss { loss, valid_rows: n })
}

fn hadamard(x: &[f32], y: &[f32]) -> Vec<f32> {
    x.iter().zip(y).map(|(a, b)| a * b).collect()
}

/// acc += g ⊙ z
fn add_hadamard(acc: &mut [f32], g: &[f32], z: &[f32]) {
    for ((a, gv), zv) in acc.iter_mut().zip(g).zip(z) {
        *a += gv * zv;
    }
}

/// Per-dimension batch standardisation of (n, D) rows and its backward.
struct Standardized {
    z: Vec<f32>,       // (n, D)
    inv_std: Vec<f64>, // (D); all ones when not standardising
    n: usize,
    d: usize,
    active: bool,
}

impl Standardized {
    fn new(x: Vec<f32>, n: usize, d: usize, active: bool) -> Standardized {
        if !active {
            return Standardized {
                z: x,
                inv_std: vec![1.0; d],
                n,
                d,
                active,
            };
        }
        let mut mean = vec![0.0f64; d];
        for row in x.chunks_exact(d) {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += *v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut var = vec![0.0f64; d];
        for row in x.chunks_exact(d) {
            for ((s, v), m) in var.iter_mut().zip(row).zip(&mean) {
                *s += (*v as f64 - m).powi(2);
            }
        }
        let inv_std: Vec<f64> = var
            .iter()
            .map(|s| 1.0 / (s / n as f64 + STANDARDIZE_EPS).sqrt())
            .collect();
        let mut z = x;
        for row in z.chunks_exact_mut(d) {
            for ((v, m), is) in row.iter_mut().zip(&mean).zip(&inv_std) {
                *v = ((*v as f64 - m) * is) as f32;
            }
        }
        Standardized {
            z,
            inv_std,
            n,
            d,
            active,
        }
    }

    /// dx (n, D) from dz given on rows o0..o0+rows(dz) only (zero elsewhere):
    /// dx = σ⁻¹ (dz − mean_b dz − z · mean_b(dz ⊙ z)).
    fn backward(&self, dz: &[f32], o0: usize) -> Vec<f32> {
        let (n, d) = (self.n, self.d);
        let mut dx = vec![0.0f32; n * d];
        let no = dz.len() / d;
        if !self.active {
            dx[o0 * d..(o0 + no) * d].copy_from_slice(dz);
            return dx;
        }
        let mut mean_dz = vec![0.0f64; d];
        let mut mean_dzz = vec![0.0f64; d];
        for (t, row) in dz.chunks_exact(d).enumerate() {
            let zrow = &self.z[(o0 + t) * d..(o0 + t + 1) * d];
            for c in 0..d {
                mean_dz[c] += row[c] as f64;
                mean_dzz[c] += row[c] as f64 * zrow[c] as f64;
            }
        }
        mean_dz
            .iter_mut()
            .chain(mean_dzz.iter_mut())
            .for_each(|m| *m /= n as f64);
        for b in 0..n {
            let owned = b >= o0 && b < o0 + no;
            for c in 0..d {
                let g = if owned { dz[(b - o0) * d + c] as f64 } else { 0.0 };
                let z = self.z[b * d + c] as f64;
                dx[b * d + c] = (self.inv_std[c] * (g - mean_dz[c] - z * mean_dzz[c])) as f32;
            }
        }
        dx
    }
}
