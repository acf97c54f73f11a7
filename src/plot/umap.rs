//! UMAP (McInnes, Healy & Melville 2018) for the 2-D maps of crystal embeddings (paper Fig. 4),
//! implemented here, plus the trustworthiness score that checks a layout.
//!
//! Why hand-written: the Rust UMAP crates found on crates.io/docs.rs (Nov 2026) did not fit —
//! `umap-rs` needs the kNN graph and the initial layout supplied by the caller and panics on bad
//! input, `rag-umap` pins ndarray 0.15 / nalgebra 0.32 / rand 0.8 (a second copy of each),
//! `fast-umap` pulls in the `burn` framework and trains a neural network instead, `annembed` brings
//! HNSW and LAPACK. The algorithm is small once the kNN search exists, and the exact kNN here reuses
//! the engine's `sgemm`.
//!
//! Steps, following umap-learn's defaults so plots are comparable with the paper's:
//! 1. exact k-nearest neighbours under the cosine distance 1 − cos (rows L2-normalised, one GEMM per
//!    row block); `n_neighbors` counts the point itself, as in umap-learn, so k − 1 others are used;
//! 2. fuzzy simplicial set: ρ_i = distance to the nearest other point, σ_i by bisection so that
//!    Σ_j exp(−max(0, d_ij − ρ_i)/σ_i) = log2(n_neighbors) (umap-learn's `smooth_knn_dist`,
//!    σ floored at 1e-3 × the mean neighbour distance), w_ij = exp(−max(0, d_ij − ρ_i)/σ_i),
//!    symmetrised by the fuzzy union w + wᵀ − w∘wᵀ;
//! 3. a, b of the low-dimensional kernel 1/(1 + a·d^{2b}) fitted by least squares to the target
//!    curve of `min_dist`/`spread` (umap-learn's `find_ab_params`), here by Gauss–Newton;
//! 4. initial layout: PCA of the L2-normalised rows (top two principal axes by power iteration on
//!    the D×D covariance), scaled to a maximum |coordinate| of 10 as umap-learn scales its spectral
//!    init, plus 1e-4 noise to break exact ties. Spectral init would need a sparse eigensolver on
//!    the graph Laplacian; PCA plays the same role (a deterministic start with global structure,
//!    umap-learn's `init="pca"`) at a fraction of the cost;
//! 5. SGD with negative sampling, umap-learn's `optimize_layout_euclidean`: each directed edge is
//!    sampled every max(w)/w_ij epochs, attracted with −2ab·d^{2(b−1)}/(1 + a·d^{2b}), then
//!    `negative_sample_rate` random points repelled with 2b/((0.001 + d²)(1 + a·d^{2b})); gradients
//!    clipped to ±4, learning rate decaying linearly to 0. The SGD runs serially with a ChaCha8
//!    stream from the seed, so a layout is bit-reproducible (umap-learn's parallel Hogwild SGD is
//!    not); 10k points take a few seconds.

use anyhow::{bail, ensure, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// UMAP settings; the defaults are umap-learn's and the paper's (cosine, 15 neighbours, 0.1).
#[derive(Clone, Debug)]
pub struct UmapParams {
    /// Neighbourhood size, counting the point itself (umap-learn convention).
    pub n_neighbors: usize,
    pub min_dist: f64,
    pub spread: f64,
    /// SGD epochs; `None`: 500 for ≤ 10 000 points, 200 above (umap-learn's rule).
    pub n_epochs: Option<usize>,
    pub negative_sample_rate: usize,
    pub learning_rate: f64,
    pub repulsion_strength: f64,
    pub seed: u64,
}

impl Default for UmapParams {
    fn default() -> Self {
        UmapParams {
            n_neighbors: 15,
            min_dist: 0.1,
            spread: 1.0,
            n_epochs: None,
            negative_sample_rate: 5,
            learning_rate: 1.0,
            repulsion_strength: 1.0,
            seed: 42,
        }
    }
}

/// Exact k nearest neighbours of every row (self excluded), by cosine distance.
#[derive(Clone, Debug)]
pub struct Knn {
    pub k: usize,
    pub indices: Vec<u32>,   // (N, k), nearest first
    pub distances: Vec<f32>, // (N, k), 1 − cos, ascending
}

/// Rows scaled to unit L2 norm. Errors on a non-finite or all-zero row (cosine undefined).
pub fn normalise_rows(data: &[f32], dim: usize) -> Result<Vec<f32>> {
    ensure!(dim > 0 && data.len() % dim == 0, "data length {} is not a multiple of dim {dim}", data.len());
    let mut out = data.to_vec();
    for (i, row) in out.chunks_mut(dim).enumerate() {
        if let Some(j) = row.iter().position(|x| !x.is_finite()) {
            bail!("row {i}: value {} at column {j} is not finite", row[j]);
        }
        let norm = row.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>().sqrt();
        if norm == 0.0 {
            bail!("row {i} is all zeros: cosine distance undefined");
        }
        row.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
    }
    Ok(out)
}

/// Exact kNN under cosine distance on already unit-norm rows: one sgemm per block of rows
/// against all rows, then a partial sort per row. Ties broken by index so the graph is
/// deterministic. O(N²·D) work, O(block·N) memory per thread — fine up to ~50k points.
pub fn exact_knn_cosine(unit_rows: &[f32], dim: usize, k: usize) -> Knn {
    let n = unit_rows.len() / dim;
    let k = k.min(n.saturating_sub(1));
    const BLOCK: usize = 64;
    let mut indices = vec![0u32; n * k];
    let mut distances = vec![0f32; n * k];
    indices
        .par_chunks_mut(BLOCK * k.max(1))
        .zip(distances.par_chunks_mut(BLOCK * k.max(1)))
        .enumerate()
        .for_each(|(b, (idx_blk, dist_blk))| {
            if k == 0 {
                return;
            }
            let start = b * BLOCK;
            let rows = (n - start).min(BLOCK);
            let mut sims = vec![0f32; rows * n]; // (rows, N)
            crate::engine::ops::matmul::sgemm(
                &mut sims, &unit_rows[start * dim..(start + rows) * dim], unit_rows, rows, n, dim, false, true, 1.0, 0.0,
            );
            let mut order: Vec<u32> = Vec::with_capacity(n);
            for r in 0..rows {
                let i = start + r;
                let s = &sims[r * n..(r + 1) * n];
                order.clear();
                order.extend((0..n as u32).filter(|&j| j as usize != i));
                let cmp = |a: &u32, b: &u32| s[*b as usize].total_cmp(&s[*a as usize]).then(a.cmp(b));
                order.select_nth_unstable_by(k - 1, cmp);
                order[..k].sort_unstable_by(cmp);
                for (slot, &j) in order[..k].iter().enumerate() {
                    idx_blk[r * k + slot] = j;
                    // Clamp: rounding can push 1 − cos of near-duplicates slightly below 0.
                    dist_blk[r * k + slot] = (1.0 - s[j as usize]).max(0.0);
                }
            }
        });
    Knn { k, indices, distances }
}

/// ρ and σ of one point (umap-learn's `smooth_knn_dist`, local_connectivity 1, bandwidth 1):
/// ρ = the smallest positive neighbour distance, σ by bisection on
/// Σ_j exp(−max(0, d_j − ρ)/σ) = target (= log2 of the neighbourhood size incl. the point).
pub fn smooth_knn_sigma(distances: &[f32], target: f64, mean_all_distances: f64) -> (f64, f64) {
    const MIN_K_DIST_SCALE: f64 = 1e-3;
    let rho = distances.iter().map(|&d| d as f64).find(|&d| d > 0.0).unwrap_or(0.0);
    let psum = |sigma: f64| distances.iter().map(|&d| (-((d as f64 - rho).max(0.0)) / sigma).exp()).sum::<f64>();
    let (mut lo, mut hi, mut mid) = (0.0f64, f64::INFINITY, 1.0f64);
    for _ in 0..64 {
        let s = psum(mid);
        if (s - target).abs() < 1e-5 {
            break;
        }
        if s > target {
            hi = mid;
            mid = (lo + hi) / 2.0;
        } else {
            lo = mid;
            mid = if hi.is_infinite() { mid * 2.0 } else { (lo + hi) / 2.0 };
        }
    }
    let mean_own = distances.iter().map(|&d| d as f64).sum::<f64>() / distances.len().max(1) as f64;
    let floor = if rho > 0.0 { MIN_K_DIST_SCALE * mean_own } else { MIN_K_DIST_SCALE * mean_all_distances };
    (rho, mid.max(floor))
}

/// The symmetric fuzzy graph as directed edges (both directions of every undirected edge, as
/// umap-learn's COO matrix holds them).
#[derive(Clone, Debug)]
pub struct FuzzyGraph {
    pub heads: Vec<u32>,
    pub tails: Vec<u32>,
    pub weights: Vec<f32>,
    /// Per point (ρ, σ) of the smooth kNN distances.
    pub rho_sigma: Vec<(f64, f64)>,
}

/// Fuzzy simplicial set of a kNN graph, fuzzy-union symmetrised.
pub fn fuzzy_graph(knn: &Knn, n_neighbors: usize) -> FuzzyGraph {
    let k = knn.k;
    let n = if k == 0 { 0 } else { knn.indices.len() / k };
    let target = (n_neighbors as f64).log2();
    let mean_all = knn.distances.iter().map(|&d| d as f64).sum::<f64>() / knn.distances.len().max(1) as f64;
    let rho_sigma: Vec<(f64, f64)> =
        (0..n).into_par_iter().map(|i| smooth_knn_sigma(&knn.distances[i * k..(i + 1) * k], target, mean_all)).collect();
    // Directed memberships keyed (i, j); union with the transpose.
    let mut directed: std::collections::HashMap<(u32, u32), f32> = std::collections::HashMap::with_capacity(n * k);
    for i in 0..n {
        let (rho, sigma) = rho_sigma[i];
        for s in 0..k {
            let j = knn.indices[i * k + s];
            let d = knn.distances[i * k + s] as f64;
            let w = (-((d - rho).max(0.0)) / sigma).exp();
            directed.insert((i as u32, j), w as f32);
        }
    }
    let mut undirected: std::collections::BTreeMap<(u32, u32), f32> = std::collections::BTreeMap::new();
    for (&(i, j), &w) in &directed {
        let wt = directed.get(&(j, i)).copied().unwrap_or(0.0);
        let u = w + wt - w * wt;
        undirected.insert((i, j), u);
        undirected.insert((j, i), u);
    }
    let mut heads = Vec::with_capacity(undirected.len());
    let mut tails = Vec::with_capacity(undirected.len());
    let mut weights = Vec::with_capacity(undirected.len());
    for ((i, j), w) in undirected {
        if w > 0.0 {
            heads.push(i);
            tails.push(j);
            weights.push(w);
        }
    }
    FuzzyGraph { heads, tails, weights, rho_sigma }
}

/// Target curve of the low-dimensional similarity: 1 below `min_dist`, exp(−(x − min_dist)/spread) above.
fn ab_target(x: f64, min_dist: f64, spread: f64) -> f64 {
    if x < min_dist { 1.0 } else { (-(x - min_dist) / spread).exp() }
}

/// Sum of squared residuals of 1/(1 + a·x^{2b}) against the target curve on umap-learn's grid
/// (300 points, 0…3·spread).
pub fn ab_residual(a: f64, b: f64, min_dist: f64, spread: f64) -> f64 {
    ab_grid(spread).map(|x| (1.0 / (1.0 + a * x.powf(2.0 * b)) - ab_target(x, min_dist, spread)).powi(2)).sum()
}

fn ab_grid(spread: f64) -> impl Iterator<Item = f64> {
    (0..300).map(move |i| 3.0 * spread * i as f64 / 299.0)
}

/// Least-squares a, b (umap-learn's `find_ab_params`, which calls scipy `curve_fit`), by
/// damped Gauss–Newton (Levenberg–Marquardt) from (1, 1).
pub fn fit_ab(min_dist: f64, spread: f64) -> (f64, f64) {
    let xs: Vec<f64> = ab_grid(spread).collect();
    let ys: Vec<f64> = xs.iter().map(|&x| ab_target(x, min_dist, spread)).collect();
    let (mut a, mut b) = (1.0f64, 1.0f64);
    let mut lambda = 1e-3;
    let mut cost = ab_residual(a, b, min_dist, spread);
    for _ in 0..200 {
        // J^T J and J^T r of f(x) = 1/(1 + a x^{2b}).
        let (mut jaa, mut jab, mut jbb, mut ga, mut gb) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (&x, &y) in xs.iter().zip(&ys) {
            if x <= 0.0 {
                continue; // f(0) = 1 whatever a, b: no gradient.
            }
            let p = x.powf(2.0 * b);
            let den = 1.0 + a * p;
            let f = 1.0 / den;
            let df_da = -p / (den * den);
            let df_db = -a * p * 2.0 * x.ln() / (den * den);
            let r = f - y;
            jaa += df_da * df_da;
            jab += df_da * df_db;
            jbb += df_db * df_db;
            ga += df_da * r;
            gb += df_db * r;
        }
        let mut improved = false;
        for _ in 0..20 {
            let (m00, m11) = (jaa * (1.0 + lambda), jbb * (1.0 + lambda));
            let det = m00 * m11 - jab * jab;
            if det.abs() < 1e-300 {
                lambda *= 10.0;
                continue;
            }
            let da = -(m11 * ga - jab * gb) / det;
            let db = -(-jab * ga + m00 * gb) / det;
            let (na, nb) = (a + da, b + db);
            if na > 0.0 && nb > 0.0 {
                let c = ab_residual(na, nb, min_dist, spread);
                if c < cost {
                    let rel = (cost - c) / cost.max(1e-300);
                    a = na;
                    b = nb;
                    cost = c;
                    lambda = (lambda / 10.0).max(1e-12);
                    improved = rel > 1e-14;
                    break;
                }
            }
            lambda *= 10.0;
        }
        if !improved {
            break;
        }
    }
    (a, b)
}

/// Initial 2-D layout: the two leading principal axes of the (unit) rows, scaled so the largest
/// |coordinate| is 10, plus uniform ±1e-4 noise (see the module comment for why not spectral).
pub fn pca_init(unit_rows: &[f32], dim: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let n = unit_rows.len() / dim;
    let mut mean = vec![0f64; dim];
    for row in unit_rows.chunks(dim) {
        for (m, &x) in mean.iter_mut().zip(row) {
            *m += x as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n.max(1) as f64);
    let mut cov = vec![0f64; dim * dim]; // (D, D)
    for row in unit_rows.chunks(dim) {
        let c: Vec<f64> = row.iter().zip(&mean).map(|(&x, m)| x as f64 - m).collect();
        for p in 0..dim {
            for q in p..dim {
                cov[p * dim + q] += c[p] * c[q];
            }
        }
    }
    for p in 0..dim {
        for q in 0..p {
            cov[p * dim + q] = cov[q * dim + p];
        }
    }
    // Power iteration with deflation for the top two eigenvectors (deterministic start vectors).
    let mut axes: Vec<Vec<f64>> = Vec::new();
    for comp in 0..2 {
        let mut v: Vec<f64> = (0..dim).map(|i| 1.0 + ((i * 7 + comp * 3) % 11) as f64 / 11.0).collect();
        for _ in 0..300 {
            let mut w = vec![0f64; dim];
            for p in 0..dim {
                w[p] = (0..dim).map(|q| cov[p * dim + q] * v[q]).sum();
            }
            for a in &axes {
                let d: f64 = w.iter().zip(a).map(|(x, y)| x * y).sum();
                w.iter_mut().zip(a).for_each(|(x, y)| *x -= d * y);
            }
            let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm < 1e-300 {
                break;
            }
            w.iter_mut().for_each(|x| *x /= norm);
            v = w;
        }
        axes.push(v);
    }
    let mut out = vec![0f32; n * 2]; // (N, 2)
    let mut max_abs = 0f64;
    let mut proj = vec![0f64; n * 2];
    for (i, row) in unit_rows.chunks(dim).enumerate() {
        for c in 0..2 {
            let p: f64 = row.iter().zip(&mean).zip(&axes[c]).map(|((&x, m), a)| (x as f64 - m) * a).sum();
            proj[i * 2 + c] = p;
            max_abs = max_abs.max(p.abs());
        }
    }
    let scale = if max_abs > 0.0 { 10.0 / max_abs } else { 1.0 };
    for (o, p) in out.iter_mut().zip(&proj) {
        *o = (p * scale + rng.random_range(-1e-4..1e-4)) as f32;
    }
    out
}

/// SGD layout optimisation with negative sampling (umap-learn's `optimize_layout_euclidean`,
/// move_other = true), serial and seeded.
#[allow(clippy::too_many_arguments)]
pub fn optimize_layout(
    layout: &mut [f32], // (N, 2)
    graph: &FuzzyGraph,
    a: f64,
    b: f64,
    n_epochs: usize,
    params: &UmapParams,
    rng: &mut ChaCha8Rng,
) {
    let n = layout.len() / 2;
    let (a, b) = (a as f32, b as f32);
    let gamma = params.repulsion_strength as f32;
    let max_w = graph.weights.iter().copied().fold(0f32, f32::max);
    // umap-learn drops edges that would be sampled less than once in the run.
    let keep: Vec<usize> = (0..graph.weights.len()).filter(|&e| graph.weights[e] >= max_w / n_epochs as f32).collect();
    let eps: Vec<f32> = keep.iter().map(|&e| max_w / graph.weights[e]).collect(); // epochs per sample
    let neg_rate = params.negative_sample_rate as f32;
    let epns: Vec<f32> = eps.iter().map(|&e| e / neg_rate).collect();
    let mut next_sample = eps.clone();
    let mut next_neg = epns.clone();
    let clip = |g: f32| g.clamp(-4.0, 4.0);
    for epoch in 0..n_epochs {
        let alpha = params.learning_rate as f32 * (1.0 - epoch as f32 / n_epochs as f32);
        let ep = epoch as f32;
        for (slot, &e) in keep.iter().enumerate() {
            if next_sample[slot] > ep {
                continue;
            }
            let (j, k) = (graph.heads[e] as usize, graph.tails[e] as usize);
            let (dx, dy) = (layout[2 * j] - layout[2 * k], layout[2 * j + 1] - layout[2 * k + 1]);
            let d2 = dx * dx + dy * dy;
            if d2 > 0.0 {
                let coeff = -2.0 * a * b * d2.powf(b - 1.0) / (a * d2.powf(b) + 1.0);
                let (gx, gy) = (clip(coeff * dx) * alpha, clip(coeff * dy) * alpha);
                layout[2 * j] += gx;
                layout[2 * j + 1] += gy;
                layout[2 * k] -= gx;
                layout[2 * k + 1] -= gy;
            }
            next_sample[slot] += eps[slot];
            let n_neg = ((ep - next_neg[slot]) / epns[slot]).max(0.0) as usize;
            for _ in 0..n_neg {
                let k = rng.random_range(0..n);
                if k == j {
                    continue;
                }
                let (dx, dy) = (layout[2 * j] - layout[2 * k], layout[2 * j + 1] - layout[2 * k + 1]);
                let d2 = dx * dx + dy * dy;
                let (gx, gy) = if d2 > 0.0 {
                    let coeff = 2.0 * gamma * b / ((0.001 + d2) * (a * d2.powf(b) + 1.0));
                    (clip(coeff * dx), clip(coeff * dy))
                } else {
                    (4.0, 4.0)
                };
                layout[2 * j] += gx * alpha;
                layout[2 * j + 1] += gy * alpha;
            }
            next_neg[slot] += n_neg as f32 * epns[slot];
        }
    }
}

/// Full UMAP of `data` (N, dim) to 2-D under the cosine distance. Errors on non-finite or
/// zero rows (naming the row) and on fewer than 3 points.
pub fn umap_cosine(data: &[f32], dim: usize, params: &UmapParams) -> Result<Vec<f32>> {
    let unit = normalise_rows(data, dim)?;
    let n = unit.len() / dim;
    ensure!(n >= 3, "UMAP needs at least 3 points, got {n}");
    ensure!(params.n_neighbors >= 2, "n_neighbors must be at least 2 (it counts the point itself)");
    let knn = exact_knn_cosine(&unit, dim, params.n_neighbors - 1);
    let graph = fuzzy_graph(&knn, params.n_neighbors.min(n));
    let (a, b) = fit_ab(params.min_dist, params.spread);
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let mut layout = pca_init(&unit, dim, &mut rng);
    let n_epochs = params.n_epochs.unwrap_or(if n <= 10_000 { 500 } else { 200 });
    optimize_layout(&mut layout, &graph, a, b, n_epochs, params, &mut rng);
    ensure!(layout.iter().all(|x| x.is_finite()), "UMAP produced a non-finite coordinate (internal error)");
    Ok(layout)
}

/// Trustworthiness (Venna & Kaski 2001; sklearn's definition) of a low-dimensional layout:
/// 1 − 2/(n·k·(2n − 3k − 1)) · Σ_i Σ_{j ∈ U_i} (r(i, j) − k), where U_i are the layout's k
/// nearest neighbours of i that are not among its k nearest in the original space and r(i, j) is
/// j's rank among i's original-space neighbours (cosine distance on `data`, Euclidean in the
/// layout). 1 = every layout neighbourhood is a true one. Exact, O(N² log N).
pub fn trustworthiness(data: &[f32], dim: usize, layout: &[f32], layout_dim: usize, k: usize) -> Result<f64> {
    let n = data.len() / dim.max(1);
    trustworthiness_of(data, dim, layout, layout_dim, k, &(0..n).collect::<Vec<_>>())
}

/// Trustworthiness averaged over the query points `queries` only (ranks still over all N points):
/// an unbiased estimate of [`trustworthiness`] at O(|queries|·N log N), for large N.
pub fn trustworthiness_of(data: &[f32], dim: usize, layout: &[f32], layout_dim: usize, k: usize, queries: &[usize]) -> Result<f64> {
    let unit = normalise_rows(data, dim)?;
    let n = unit.len() / dim;
    ensure!(layout.len() == n * layout_dim, "layout has {} values, expected {} × {layout_dim}", layout.len(), n);
    ensure!(k >= 1 && 2 * n > 3 * k + 1, "k = {k} too large for {n} points");
    ensure!(!queries.is_empty() && queries.iter().all(|&q| q < n), "query indices must be non-empty and below {n}");
    let penalty: f64 = queries
        .par_iter()
        .map(|&i| {
            let qi = &unit[i * dim..(i + 1) * dim];
            let mut orig: Vec<(f32, u32)> = (0..n)
                .filter(|&j| j != i)
                .map(|j| {
                    let s: f32 = qi.iter().zip(&unit[j * dim..(j + 1) * dim]).map(|(x, y)| x * y).sum();
                    (1.0 - s, j as u32)
                })
                .collect();
            orig.sort_unstable_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
            let mut rank = vec![0u32; n];
            for (r, &(_, j)) in orig.iter().enumerate() {
                rank[j as usize] = r as u32 + 1;
            }
            let li = &layout[i * layout_dim..(i + 1) * layout_dim];
            let mut low: Vec<(f32, u32)> = (0..n)
                .filter(|&j| j != i)
                .map(|j| {
                    let d: f32 = li.iter().zip(&layout[j * layout_dim..(j + 1) * layout_dim]).map(|(x, y)| (x - y) * (x - y)).sum();
                    (d, j as u32)
                })
                .collect();
            let kk = k.min(low.len());
            low.select_nth_unstable_by(kk - 1, |x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
            low[..kk].iter().map(|&(_, j)| (rank[j as usize] as f64 - k as f64).max(0.0)).sum::<f64>()
        })
        .sum();
    let (nf, kf, qf) = (n as f64, k as f64, queries.len() as f64);
    Ok(1.0 - 2.0 / (qf * kf * (2.0 * nf - 3.0 * kf - 1.0)) * penalty)
}

/// `blobs` Gaussian clusters of `per_blob` points in `dim` dimensions (centres ±3 per coordinate,
/// unit normal noise), seeded: test and benchmark data with known structure. Returns
/// (data (N, dim), blob of each point).
pub fn gaussian_blobs(blobs: usize, per_blob: usize, dim: usize, seed: u64) -> (Vec<f32>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let centres: Vec<Vec<f32>> = (0..blobs).map(|_| (0..dim).map(|_| if rng.random::<bool>() { 3.0 } else { -3.0 }).collect()).collect();
    let mut data = Vec::with_capacity(blobs * per_blob * dim);
    let mut label = Vec::with_capacity(blobs * per_blob);
    for (b, c) in centres.iter().enumerate() {
        for _ in 0..per_blob {
            for &x in c {
                // Box–Muller.
                let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
                data.push(x + ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32);
            }
            label.push(b);
        }
    }
    (data, label)
}
