//! Launcher of `kernels/topk.cu` (per-row top-kk of a score matrix under the screen's ranking
//! rule, ties by a per-column id rank), its CPU reference, and its check.

use crate::engine::backend::{arg, Gpu, GpuVec, Kernel, LaunchConfig};
use crate::engine::gpu::checks::{compare, Comparison, OpCheck};
use crate::engine::gradcheck::random_vec;
use crate::engine::tensor::{Device, Tensor};
use anyhow::{ensure, Result};
use std::cmp::Ordering;

/// Largest kk the kernel selects per row (`TOPK_MAX` in `kernels/topk.cu`: each thread keeps a
/// list of this many entries in registers/local memory).
pub const TOPK_MAX: usize = 64;

/// Threads per row: enough lanes to stream a 16k-column row in 128 strides, few enough that the
/// kk merge rounds (2 barriers each) stay cheap.
const THREADS: u32 = 128;

const fn k(name: &'static str) -> Kernel {
    Kernel { family: "topk", name }
}

/// For each of `rows` rows of `scores` (rows, cols): the `kk` best columns, best first, by score
/// descending and, for equal scores, `id_rank` ascending. Writes `out_scores` and `out_cols`
/// (rows, kk). Needs 1 ≤ kk ≤ min(TOPK_MAX, cols) and distinct ranks.
#[allow(clippy::too_many_arguments)]
pub fn topk_rows(g: &Gpu, out_scores: &mut GpuVec<f32>, out_cols: &mut GpuVec<i32>, scores: &GpuVec<f32>, id_rank: &GpuVec<u32>, rows: usize, cols: usize, kk: usize) -> Result<()> {
    ensure!(kk >= 1 && kk <= TOPK_MAX.min(cols), "topk_rows: kk = {kk} must be in 1..={} (cols = {cols})", TOPK_MAX.min(cols));
    ensure!(
        scores.len() >= rows * cols && id_rank.len() >= cols && out_scores.len() >= rows * kk && out_cols.len() >= rows * kk,
        "topk_rows: buffers too small for {rows} × {cols} → {rows} × {kk}"
    );
    if rows == 0 {
        return Ok(());
    }
    let (po, pc, ps, pr, c, kq) = (out_scores.ptr(), out_cols.ptr(), scores.ptr(), id_rank.ptr(), cols as i32, kk as i32);
    g.launch(k("topk_rows_f32"), LaunchConfig::per_row(rows, THREADS, 0), &mut [arg(&po), arg(&pc), arg(&ps), arg(&pr), arg(&c), arg(&kq)])
}

/// The CPU reference of [`topk_rows`]: per row, the columns sorted by (score descending, rank
/// ascending), the first `kk`. Returns (scores, cols), each (rows, kk).
pub fn topk_rows_reference(scores: &[f32], id_rank: &[u32], rows: usize, cols: usize, kk: usize) -> (Vec<f32>, Vec<i32>) {
    let (mut os, mut oc) = (Vec::with_capacity(rows * kk), Vec::with_capacity(rows * kk));
    for r in 0..rows {
        let s = &scores[r * cols..(r + 1) * cols];
        let mut idx: Vec<usize> = (0..cols).collect();
        idx.sort_by(|&a, &b| match s[b].partial_cmp(&s[a]) {
            Some(Ordering::Equal) | None => id_rank[a].cmp(&id_rank[b]),
            Some(o) => o,
        });
        for &j in &idx[..kk] {
            os.push(s[j]);
            oc.push(j as i32);
        }
    }
    (os, oc)
}

fn check_topk(d: Device) -> Result<Comparison> {
    let g = crate::engine::backend::gpu(d)?;
    // 300 columns: more than two strides of 128 threads; scores quantised to 1/8 so that many
    // are exactly equal and the id-rank tie rule decides (and ±0 are equal, as the CPU's rule
    // says); id ranks a permutation that is not the column order. kk = 64 (the maximum: full
    // per-thread lists) and kk = 5; row 2 has every score equal.
    let (rows, cols) = (6, 300);
    let mut s: Vec<f32> = random_vec(rows * cols, 70, 1.0).iter().map(|v| (v * 8.0).round() / 8.0).collect();
    s[2 * cols..3 * cols].fill(0.25);
    s[cols] = -0.0;
    s[cols + 1] = 0.0;
    let rank: Vec<u32> = (0..cols as u32).map(|j| (j * 7 + 3) % cols as u32).collect(); // 7 ⟂ 300
    let (gs, gr) = (g.upload(&s)?, g.upload(&rank)?);
    let mut c = Comparison { worst_ratio: 0.0, max_abs_err: 0.0, abs: 0.0, rel: 0.0, device_hash: 0 };
    for (i, kk) in [TOPK_MAX, 5].into_iter().enumerate() {
        let (mut os, mut oc) = (g.uninit::<f32>(rows * kk)?, g.uninit::<i32>(rows * kk)?);
        topk_rows(&g, &mut os, &mut oc, &gs, &gr, rows, cols, kk)?;
        let (want_s, want_c) = topk_rows_reference(&s, &rank, rows, cols, kk);
        let got_c = g.download(&oc)?;
        // The selection is exact: same columns in the same order, hence the same score bits.
        ensure!(got_c == want_c, "kk = {kk}: device columns {:?}… differ from the reference {:?}…", &got_c[..8.min(got_c.len())], &want_c[..8.min(want_c.len())]);
        let as_f = |v: Vec<i32>| Tensor::from_vec(&[rows, kk], v.into_iter().map(|x| x as f32).collect());
        let dev_s = Tensor::from_vec(&[rows, kk], g.download(&os)?);
        let part = compare(&[("scores", &dev_s, &Tensor::from_vec(&[rows, kk], want_s)), ("cols", &as_f(got_c), &as_f(want_c))], 0.0, 0.0)?;
        c = if i == 0 { part } else { c.worst_of(part) };
    }
    Ok(c)
}

/// The checks of `kernels/topk.cu`.
pub fn checks() -> Vec<OpCheck> {
    vec![OpCheck { name: "topk (per-row top-k, id-rank ties)", kernels: &["topk_rows_f32"], run: check_topk }]
}
