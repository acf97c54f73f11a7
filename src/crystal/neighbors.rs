//! Periodic neighbour search: the PotNet local graph (k nearest neighbours, ties with the k-th
//! kept) and the CGCNN graph (at most M nearest within a radius).
//!
//! Both are built from `neighbors_within`, which for each centre atom enumerates every (atom,
//! image) within a radius over a box of translations sized from the plane spacings of the
//! LLL-reduced cell — exact for skewed cells and for cells much smaller than the radius (a
//! single-atom cell sees its own images).
//!
//! Edge conventions (see `EdgeList`): edge e carries a message from neighbour `src` (shifted by
//! `image` lattice vectors of the caller's basis) to centre `dst`. Edges are grouped by `dst` in
//! ascending order, and within a centre sorted by (distance, src, image) so output is
//! deterministic. Edges are directed: every centre gets its own k nearest. The reference PotNet
//! code (JARVIS `build_undirected_edgedata`) adds the reverse of each edge; the PotNet encoder
//! does so per batch (`model::potnet::undirected_local_edges`, on by default), so shards keep
//! the directed graph and either choice can train on them.
//!
//! CGCNN pad/flag convention: no padding is stored. A centre with fewer than M neighbours within
//! the radius simply has fewer edges (its count is the number of edges with that `dst`); an
//! encoder that wants CGCNN's fixed (N, M) layout pads with neighbour index 0 at distance
//! radius + 1 Å and masks, as the original CGCNN data loader does.

use super::lattice::{add, check_translation_budget, norm, sub, vec_mat, Cell};
use super::EdgeList;

/// Two distances closer than this (Å) count as a tie with the k-th neighbour.
pub const TIE_TOLERANCE: f64 = 1e-6;

/// One neighbour of a centre atom.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Neighbor {
    pub src: u32,
    /// Translation in the caller's lattice basis.
    pub image: [i32; 3],
    pub distance: f64,
}

/// For each centre atom, all (atom, image) pairs within `radius` (the centre itself at zero
/// translation excluded), sorted by (distance, src, image).
pub fn neighbors_within(cell: &Cell, radius: f64) -> Vec<Vec<Neighbor>> {
    let n = cell.num_sites();
    let half = cell.image_box(radius);
    let mut translations = Vec::new(); // (n_red, cartesian T)
    for a in -half[0]..=half[0] {
        for b in -half[1]..=half[1] {
            for c in -half[2]..=half[2] {
                let t = vec_mat([a as f64, b as f64, c as f64], &cell.reduced);
                translations.push(([a, b, c], t));
            }
        }
    }
    let r2 = radius * radius;
    (0..n)
        .map(|i| {
            let mut out = Vec::new();
            for j in 0..n {
                let d = sub(cell.cart[j], cell.cart[i]);
                for (n_red, t) in &translations {
                    let v = add(d, *t);
                    let dist2 = v[0] * v[0] + v[1] * v[1] + v[2] * v[2];
                    if dist2 > r2 || (i == j && *n_red == [0, 0, 0]) {
                        continue;
                    }
                    out.push(Neighbor {
                        src: j as u32,
                        image: cell.image_in_caller_basis(i, j, *n_red),
                        distance: norm(v),
                    });
                }
            }
            sort_neighbors(&mut out);
            out
        })
        .collect()
}

/// Sort by (distance, src, image); the deterministic order every graph uses.
pub fn sort_neighbors(list: &mut [Neighbor]) {
    list.sort_by(|x, y| {
        x.distance.total_cmp(&y.distance).then(x.src.cmp(&y.src)).then(x.image.cmp(&y.image))
    });
}

/// The k nearest of a sorted list, plus every neighbour tied (within `TIE_TOLERANCE`) with the
/// k-th. Returns fewer than k only if the list is shorter.
pub fn take_k_nearest_with_ties(sorted: &[Neighbor], k: usize) -> &[Neighbor] {
    if sorted.len() <= k || k == 0 {
        return if k == 0 { &sorted[..0] } else { sorted };
    }
    let kth = sorted[k - 1].distance;
    let end = sorted.iter().position(|nb| nb.distance > kth + TIE_TOLERANCE).unwrap_or(sorted.len());
    &sorted[..end]
}

/// PotNet's local graph: for every atom its `k` nearest neighbours including periodic images,
/// ties with the k-th kept. The search radius starts at `initial_cutoff` and grows by 1.5× until
/// every atom has at least k candidates *and* the k-th candidate lies strictly inside the radius
/// by more than the tie tolerance, so the result is the exact k-NN regardless of the schedule.
///
/// Errors when a search would enumerate more than `lattice::MAX_TRANSLATIONS` translations
/// (a cell too long or too thin), instead of growing for minutes.
pub fn local_graph(cell: &Cell, k: usize, initial_cutoff: f64) -> anyhow::Result<EdgeList> {
    if k == 0 {
        return Ok(EdgeList::default());
    }
    let mut radius = initial_cutoff.max(1e-3);
    loop {
        check_translation_budget(cell.image_box(radius), &format!("the {k}-nearest-neighbour search at radius {radius:.3} Å"))?;
        let lists = neighbors_within(cell, radius);
        let complete = lists.iter().all(|l| l.len() >= k && l[k - 1].distance + TIE_TOLERANCE < radius);
        if complete {
            return Ok(edges_from(lists.iter().map(|l| take_k_nearest_with_ties(l, k))));
        }
        radius *= 1.5;
    }
}

/// CGCNN's graph: at most `max_neighbors` nearest within `cutoff` per atom (no ties beyond the
/// limit: the (distance, src, image) order decides). See the module doc for the pad convention.
pub fn cgcnn_graph(cell: &Cell, max_neighbors: usize, cutoff: f64) -> anyhow::Result<EdgeList> {
    check_translation_budget(cell.image_box(cutoff), &format!("the CGCNN neighbour search within {cutoff} Å"))?;
    let lists = neighbors_within(cell, cutoff);
    Ok(edges_from(lists.iter().map(|l| &l[..l.len().min(max_neighbors)])))
}

fn edges_from<'a>(per_centre: impl Iterator<Item = &'a [Neighbor]>) -> EdgeList {
    let mut e = EdgeList::default();
    for (dst, list) in per_centre.enumerate() {
        for nb in list {
            e.src.push(nb.src);
            e.dst.push(dst as u32);
            e.image.push(nb.image);
            e.distance.push(nb.distance as f32);
        }
    }
    e
}
