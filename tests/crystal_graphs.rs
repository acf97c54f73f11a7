//! Crystal graphs end to end: neighbour lists against a brute-force image search on the 85 real
//! Materials Project structures, invariance of sums and neighbour distances under change of cell
//! (conventional cell, supercell, rotation, skewed basis), and per-record errors for bad input.

use multimat::crystal::lattice::{det, reciprocal, vec_mat, Cell, Mat3, Vec3};
use multimat::crystal::lattice_sums::{all_pair_sums, LatticeSumPlan};
use multimat::crystal::neighbors::TIE_TOLERANCE;
use multimat::crystal::{build_graphs, EdgeList, GraphParams, PauliAlphaConvention};
use multimat::material::Structure;
use std::path::{Path, PathBuf};

// ---- A tiny pymatgen-JSON reader (the real one belongs to the readers' module) ---------------

fn load_pymatgen_json(path: &Path) -> Structure {
    let text = std::fs::read_to_string(path).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let m = &v["lattice"]["matrix"];
    let mut lattice = [[0.0; 3]; 3];
    for r in 0..3 {
        for c in 0..3 {
            lattice[r][c] = m[r][c].as_f64().unwrap();
        }
    }
    let mut species = Vec::new();
    let mut frac_coords = Vec::new();
    for site in v["sites"].as_array().unwrap() {
        let el = site["species"][0]["element"].as_str().unwrap();
        species.push(multimat::elements::atomic_number(el).unwrap_or_else(|| panic!("{}: element {el}", path.display())));
        let abc = &site["abc"];
        frac_coords.push([abc[0].as_f64().unwrap(), abc[1].as_f64().unwrap(), abc[2].as_f64().unwrap()]);
    }
    Structure { lattice, species, frac_coords }
}

fn mp_structures() -> Vec<(PathBuf, Structure)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mp-multimodal/structures");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "json")).collect();
    files.sort();
    assert_eq!(files.len(), 85, "expected the 85 structures in {}", dir.display());
    files.into_iter().map(|p| { let s = load_pymatgen_json(&p); (p, s) }).collect()
}

// ---- Brute force: every image in a generous box of the *given* (unreduced) basis -------------

/// (src, image, distance) of every neighbour of centre i within `radius`, sorted by distance.
fn brute_neighbors(s: &Structure, i: usize, radius: f64) -> Vec<(u32, [i32; 3], f64)> {
    let recip = reciprocal(&s.lattice);
    let mut out = Vec::new();
    for j in 0..s.num_sites() {
        let df: Vec<f64> = (0..3).map(|k| s.frac_coords[j][k] - s.frac_coords[i][k]).collect();
        let h: Vec<i32> = (0..3).map(|k| (radius * multimat::crystal::lattice::norm(recip[k]) + df[k].abs()).ceil() as i32 + 1).collect();
        for a in -h[0]..=h[0] {
            for b in -h[1]..=h[1] {
                for c in -h[2]..=h[2] {
                    if i == j && (a, b, c) == (0, 0, 0) {
                        continue;
                    }
                    let f = [df[0] + a as f64, df[1] + b as f64, df[2] + c as f64];
                    let d = multimat::crystal::lattice::norm(vec_mat(f, &s.lattice));
                    if d <= radius {
                        out.push((j as u32, [a, b, c], d));
                    }
                }
            }
        }
    }
    out.sort_by(|x, y| x.2.total_cmp(&y.2));
    out
}

fn brute_knn(s: &Structure, i: usize, k: usize) -> Vec<(u32, [i32; 3], f64)> {
    let mut radius = 4.0;
    loop {
        let all = brute_neighbors(s, i, radius);
        if all.len() >= k && all[k - 1].2 + TIE_TOLERANCE < radius {
            let kth = all[k - 1].2;
            return all.into_iter().filter(|x| x.2 <= kth + TIE_TOLERANCE).collect();
        }
        radius *= 2.0;
    }
}

fn edges_of(e: &EdgeList, dst: usize) -> Vec<(u32, [i32; 3], f64)> {
    (0..e.dst.len()).filter(|&k| e.dst[k] as usize == dst).map(|k| (e.src[k], e.image[k], e.distance[k] as f64)).collect()
}

#[test]
fn neighbour_lists_match_brute_force_on_85_mp_structures() {
    let params = GraphParams::default();
    for (path, s) in mp_structures() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let g = build_graphs(&s, &params).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let n = s.num_sites();
        for i in 0..n {
            // PotNet local graph: identical (src, image) sets, distances equal.
            let mut want = brute_knn(&s, i, params.local_k);
            let mut got = edges_of(&g.local, i);
            assert!(got.len() >= params.local_k, "{name} atom {i}: only {} local edges", got.len());
            want.sort_by(|x, y| (x.0, x.1).cmp(&(y.0, y.1)));
            got.sort_by(|x, y| (x.0, x.1).cmp(&(y.0, y.1)));
            assert_eq!(got.len(), want.len(), "{name} atom {i}: local edge count");
            for (a, b) in got.iter().zip(&want) {
                assert_eq!((a.0, a.1), (b.0, b.1), "{name} atom {i}: local edge differs");
                assert!((a.2 - b.2).abs() < 1e-5, "{name} atom {i}: distance {} vs {}", a.2, b.2);
            }
            // CGCNN graph: ≤ 12 within 8 Å; the distance list equals the brute force's first 12
            // (which neighbours fill exact ties at the 12th is arbitrary), and each edge is real.
            let all = brute_neighbors(&s, i, params.cgcnn_cutoff);
            let got = edges_of(&g.cgcnn, i);
            assert_eq!(got.len(), all.len().min(params.cgcnn_max_neighbors), "{name} atom {i}: cgcnn edge count");
            for (a, b) in got.iter().zip(&all) {
                assert!((a.2 - b.2).abs() < 1e-5, "{name} atom {i}: cgcnn distance {} vs {}", a.2, b.2);
                let real = all.iter().any(|x| x.0 == a.0 && x.1 == a.1 && (x.2 - a.2).abs() < 1e-5);
                assert!(real, "{name} atom {i}: cgcnn edge {:?} is not a neighbour", a);
            }
        }
        // Lattice sums: one per ordered pair, all finite.
        assert_eq!(g.infinite.src.len(), n * n, "{name}");
        for k in 0..n * n {
            let (c, l, p) = (g.infinite.coulomb[k], g.infinite.london[k], g.infinite.pauli[k]);
            assert!(c.is_finite() && l > 0.0 && l.is_finite() && p > 0.0 && p.is_finite(), "{name} pair {k}: {c} {l} {p}");
        }
    }
}

// ---- Invariance under change of cell ----------------------------------------------------------

/// Supercell with lattice S·L (S integer, det > 0); returns it and the original index of each atom.
fn supercell(s: &Structure, m: [[i32; 3]; 3]) -> (Structure, Vec<usize>) {
    let mf: Mat3 = m.map(|r| r.map(|x| x as f64));
    let lattice = [vec_mat(mf[0], &s.lattice), vec_mat(mf[1], &s.lattice), vec_mat(mf[2], &s.lattice)];
    let inv_new = reciprocal(&lattice);
    let reach = m.iter().flatten().map(|x| x.abs()).sum::<i32>() + 1;
    let mut out = Structure { lattice, species: vec![], frac_coords: vec![] };
    let mut map = Vec::new();
    for (i, f) in s.frac_coords.iter().enumerate() {
        for a in -reach..=reach {
            for b in -reach..=reach {
                for c in -reach..=reach {
                    let cart = vec_mat([f[0] + a as f64, f[1] + b as f64, f[2] + c as f64], &s.lattice);
                    let g: Vec3 = [0, 1, 2].map(|k| multimat::crystal::lattice::dot(cart, inv_new[k]));
                    if g.iter().all(|&x| (-1e-9..1.0 - 1e-9).contains(&x)) {
                        out.species.push(s.species[i]);
                        out.frac_coords.push(g);
                        map.push(i);
                    }
                }
            }
        }
    }
    let expect = s.num_sites() * det(&mf).round().abs() as usize;
    assert_eq!(out.num_sites(), expect, "supercell atom count");
    (out, map)
}

fn rotated(s: &Structure) -> Structure {
    // Rotation by 0.7 rad about (1, 2, 2)/3 (Rodrigues).
    let (ax, th) = ([1.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0], 0.7f64);
    let (c, sn) = (th.cos(), th.sin());
    let mut r = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            let k = [[0.0, -ax[2], ax[1]], [ax[2], 0.0, -ax[0]], [-ax[1], ax[0], 0.0]][i][j];
            r[i][j] = c * if i == j { 1.0 } else { 0.0 } + sn * k + (1.0 - c) * ax[i] * ax[j];
        }
    }
    let rot = |v: Vec3| -> Vec3 { [0, 1, 2].map(|i| r[i][0] * v[0] + r[i][1] * v[1] + r[i][2] * v[2]) };
    Structure { lattice: s.lattice.map(rot), ..s.clone() }
}

fn sorted_distances(e: &EdgeList, dst: usize) -> Vec<f64> {
    let mut d: Vec<f64> = edges_of(e, dst).iter().map(|x| x.2).collect();
    d.sort_by(f64::total_cmp);
    d
}

/// Per-pair sums of `variant` summed over copies of j must equal the base's (i, j), for every
/// variant atom i' of base atom i; and each atom's neighbour distances must be the same.
fn check_equivalent(base: &Structure, variant: &Structure, map: &[usize], label: &str) {
    let alpha = 1.4; // fixed: the reference α convention depends on the cell volume
    let (cb, cv) = (Cell::new(base).unwrap(), Cell::new(variant).unwrap());
    let sb = all_pair_sums(&cb, &LatticeSumPlan::new(&cb, alpha, true, 1e-10));
    let sv = all_pair_sums(&cv, &LatticeSumPlan::new(&cv, alpha, true, 1e-10));
    let (nb, nv) = (base.num_sites(), variant.num_sites());
    for ip in 0..nv {
        for j in 0..nb {
            let (mut c, mut l, mut p) = (0.0, 0.0, 0.0);
            for jp in (0..nv).filter(|&jp| map[jp] == j) {
                let s = sv[ip * nv + jp];
                c += s.coulomb;
                l += s.london;
                p += s.pauli;
            }
            let want = sb[map[ip] * nb + j];
            assert!((c - want.coulomb).abs() < 1e-9 * want.coulomb.abs().max(1.0), "{label}: Coulomb ({ip}→{}, {j}): {c} vs {}", map[ip], want.coulomb);
            assert!((l - want.london).abs() < 1e-9 * want.london, "{label}: London ({ip}, {j}): {l} vs {}", want.london);
            assert!((p - want.pauli).abs() < 1e-9 * want.pauli, "{label}: Pauli ({ip}, {j}): {p} vs {}", want.pauli);
        }
    }
    let params = GraphParams::default();
    let (gb, gv) = (build_graphs(base, &params).unwrap(), build_graphs(variant, &params).unwrap());
    for ip in 0..nv {
        for (name, eb, ev) in [("local", &gb.local, &gv.local), ("cgcnn", &gb.cgcnn, &gv.cgcnn)] {
            let (db, dv) = (sorted_distances(eb, map[ip]), sorted_distances(ev, ip));
            assert_eq!(db.len(), dv.len(), "{label} {name}: atom {ip} neighbour count");
            for (x, y) in db.iter().zip(&dv) {
                assert!((x - y).abs() < 1e-5, "{label} {name}: atom {ip} distance {x} vs {y}");
            }
        }
    }
}

fn invariance_suite(base: &Structure, conventional: [[i32; 3]; 3], label: &str) {
    let identity: Vec<usize> = (0..base.num_sites()).collect();
    let (conv, map) = supercell(base, conventional);
    check_equivalent(base, &conv, &map, &format!("{label} conventional"));
    let (sup, map) = supercell(base, [[2, 0, 0], [0, 1, 0], [0, 0, 1]]);
    check_equivalent(base, &sup, &map, &format!("{label} 2×1×1"));
    check_equivalent(base, &rotated(base), &identity, &format!("{label} rotated"));
    let (left, map) = supercell(base, [[0, 1, 0], [1, 0, 0], [0, 0, 1]]); // det −1: left-handed basis
    check_equivalent(base, &left, &map, &format!("{label} left-handed"));
    let (skew, map) = supercell(base, [[1, 0, 0], [3, 1, 0], [-2, 5, 1]]); // det 1: same cell
    check_equivalent(base, &skew, &map, &format!("{label} skewed"));
    // Same volume ⇒ the reference α convention gives identical graphs for rotated and skewed.
    let params = GraphParams::default();
    let g0 = build_graphs(base, &params).unwrap();
    for (name, v, m) in [("rotated", rotated(base), identity.clone()), ("skewed", skew, map)] {
        let g = build_graphs(&v, &params).unwrap();
        let n = base.num_sites();
        for ip in 0..n {
            for jp in 0..n {
                let (a, b) = (ip * n + jp, m[ip] * n + m[jp]);
                assert!((g.infinite.pauli[a] - g0.infinite.pauli[b]).abs() < 1e-9 * g0.infinite.pauli[b], "{label} {name}: Pauli");
                assert!((g.infinite.coulomb[a] - g0.infinite.coulomb[b]).abs() < 1e-9, "{label} {name}: Coulomb");
            }
        }
    }
}

#[test]
fn sums_and_neighbour_distances_are_invariant_under_change_of_cell() {
    // Rock salt, primitive fcc; the conventional cubic cell is (−1,1,1),(1,−1,1),(1,1,−1).
    let a = 5.64;
    let fcc = [[0.0, a / 2.0, a / 2.0], [a / 2.0, 0.0, a / 2.0], [a / 2.0, a / 2.0, 0.0]];
    let nacl = Structure { lattice: fcc, species: vec![11, 17], frac_coords: vec![[0.0; 3], [0.5, 0.5, 0.5]] };
    invariance_suite(&nacl, [[-1, 1, 1], [1, -1, 1], [1, 1, -1]], "NaCl");
    // A low-symmetry triclinic cell with a C-centred-like doubling as its "conventional" cell.
    let tric = Structure {
        lattice: [[4.1, 0.2, -0.3], [1.3, 3.7, 0.4], [-0.8, 0.9, 5.2]],
        species: vec![8, 26, 3],
        frac_coords: vec![[0.1, 0.2, 0.3], [0.55, 0.45, 0.8], [0.9, 0.05, 0.5]],
    };
    invariance_suite(&tric, [[1, 1, 0], [-1, 1, 0], [0, 0, 1]], "triclinic");
}

// ---- Bad input ---------------------------------------------------------------------------------

fn err_of(s: &Structure) -> String {
    format!("{:#}", build_graphs(s, &GraphParams::default()).unwrap_err())
}

#[test]
fn bad_structures_give_clear_errors() {
    let cubic = [[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0]];
    let ok = Structure { lattice: cubic, species: vec![26, 8], frac_coords: vec![[0.0; 3], [0.5; 3]] };
    assert!(build_graphs(&ok, &GraphParams::default()).is_ok());

    let zero_volume = Structure { lattice: [[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [3.0, 3.0, 0.0]], ..ok.clone() };
    assert!(err_of(&zero_volume).contains("degenerate lattice"), "{}", err_of(&zero_volume));
    let collinear = Structure { lattice: [[3.0, 0.0, 0.0], [6.0, 0.0, 0.0], [0.0, 0.0, 3.0]], ..ok.clone() };
    assert!(err_of(&collinear).contains("degenerate lattice"));

    let overlap = Structure { frac_coords: vec![[0.0; 3], [0.01, 0.0, 0.0]], ..ok.clone() };
    assert!(err_of(&overlap).contains("closer than 0.1"), "{}", err_of(&overlap));
    // Overlap only through a periodic image (0.0 and 0.99 along a 3 Å axis: 0.03 Å apart).
    let image_overlap = Structure { frac_coords: vec![[0.0; 3], [0.99, 0.0, 0.0]], ..ok.clone() };
    assert!(err_of(&image_overlap).contains("closer than 0.1"));
    // An atom overlapping its own image: a 0.05 Å lattice vector.
    let tiny = Structure { lattice: [[0.05, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0]], species: vec![26], frac_coords: vec![[0.0; 3]] };
    assert!(err_of(&tiny).contains("closer than 0.1"), "{}", err_of(&tiny));

    let unknown = Structure { species: vec![26, 0], ..ok.clone() };
    assert!(err_of(&unknown).contains("site 1: unknown element"), "{}", err_of(&unknown));
    let unknown_high = Structure { species: vec![200, 8], ..ok.clone() };
    assert!(err_of(&unknown_high).contains("site 0: unknown element"));

    let nan = Structure { frac_coords: vec![[0.0; 3], [f64::NAN, 0.5, 0.5]], ..ok.clone() };
    assert!(err_of(&nan).contains("site 1: non-finite"), "{}", err_of(&nan));
    let nan_lattice = Structure { lattice: [[f64::NAN, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0]], ..ok.clone() };
    assert!(err_of(&nan_lattice).contains("non-finite"));
    let far = Structure { frac_coords: vec![[0.0; 3], [3e9, 0.5, 0.5]], ..ok.clone() };
    assert!(err_of(&far).contains("site 1: fractional coordinate"), "{}", err_of(&far));
    // Far outside the cell but plausible: wrapped, and the image offsets still point at the
    // caller's (unwrapped) position.
    let shifted = Structure { frac_coords: vec![[0.0; 3], [1000.5, -7.5, 0.5]], ..ok.clone() };
    let g = build_graphs(&shifted, &GraphParams::default()).unwrap();
    for e in 0..g.local.src.len() {
        let (i, j, t) = (g.local.dst[e] as usize, g.local.src[e] as usize, g.local.image[e]);
        let f: Vec<f64> = (0..3).map(|k| shifted.frac_coords[j][k] + t[k] as f64 - shifted.frac_coords[i][k]).collect();
        let d = multimat::crystal::lattice::norm(vec_mat([f[0], f[1], f[2]], &shifted.lattice));
        assert!((d - g.local.distance[e] as f64).abs() < 1e-5, "edge {e}: image offset does not reproduce the distance");
    }
    let empty = Structure { lattice: cubic, species: vec![], frac_coords: vec![] };
    assert!(err_of(&empty).contains("no sites"));
    let mismatched = Structure { frac_coords: vec![[0.0; 3]], ..ok.clone() };
    assert!(err_of(&mismatched).contains("2 species but 1 coordinates"));

    // A batch keeps one result per record, in order: good records survive a bad neighbour.
    let results = multimat::crystal::build_graphs_batch(&[ok.clone(), overlap.clone(), ok.clone()], &GraphParams::default());
    assert!(results[0].is_ok() && results[1].is_err() && results[2].is_ok());

    let bad_params = GraphParams { pauli_alpha0: f64::NAN, ..GraphParams::default() };
    assert!(build_graphs(&ok, &bad_params).unwrap_err().to_string().contains("invalid graph parameters"));
}

#[test]
fn single_atom_cell_has_only_the_self_pair_and_its_images() {
    let s = Structure { lattice: [[2.87, 0.0, 0.0], [0.0, 2.87, 0.0], [0.0, 0.0, 2.87]], species: vec![26], frac_coords: vec![[0.25, 0.5, 0.75]] };
    let g = build_graphs(&s, &GraphParams::default()).unwrap();
    assert_eq!(g.infinite.src, vec![0]);
    assert_eq!(g.infinite.dst, vec![0]);
    // Simple cubic: 6 at a, 12 at a√2 → the 16th neighbour is in the a√2 shell, all 18 kept.
    assert_eq!(g.local.src.len(), 18);
    assert!(g.local.src.iter().all(|&j| j == 0) && g.local.image.iter().all(|&t| t != [0, 0, 0]));
    assert_eq!(g.cgcnn.src.len(), 12);
    // Pauli includes the origin (reference convention) → > 1; without it, < 1 here.
    assert!(g.infinite.pauli[0] > 1.0);
    let no_origin = GraphParams { pauli_include_origin: false, ..GraphParams::default() };
    let g2 = build_graphs(&s, &no_origin).unwrap();
    assert!((g.infinite.pauli[0] - g2.infinite.pauli[0] - 1.0).abs() < 1e-12);
    assert!(g.infinite.coulomb[0].is_finite() && g.infinite.london[0] > 6.0 / 2.87f64.powi(6));
}

#[test]
fn pauli_alpha_conventions() {
    let p = GraphParams::default();
    assert_eq!(p.pauli_alpha, PauliAlphaConvention::ReferenceSqrt);
    assert_eq!(p.pauli_alpha0, 3.0);
    // V = 64 Å³: V^{1/3} = 4 → reference α = 3/√4 = 1.5, paper α = 3/4.
    assert!((p.pauli_alpha_for_volume(64.0) - 1.5).abs() < 1e-12);
    let paper = GraphParams { pauli_alpha: PauliAlphaConvention::PaperCubeRoot, ..p };
    assert!((paper.pauli_alpha_for_volume(64.0) - 0.75).abs() < 1e-12);
    // The stored Pauli sum of a cubic 4 Å cell with one atom: 1 + 6e^{−4α} + 12e^{−4√2α} + …
    let s = Structure { lattice: [[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0]], species: vec![3], frac_coords: vec![[0.0; 3]] };
    let g = build_graphs(&s, &GraphParams::default()).unwrap();
    let first_shells = 1.0 + 6.0 * (-6.0f64).exp() + 12.0 * (-6.0 * 2f64.sqrt()).exp() + 8.0 * (-6.0 * 3f64.sqrt()).exp();
    assert!(g.infinite.pauli[0] > first_shells && g.infinite.pauli[0] < first_shells + 1e-4, "{}", g.infinite.pauli[0]);
}

// ---- PotNet's undirected local graph (the reference's `build_undirected_edgedata`) ------------

/// The reference's construction with lattice images: the set of (src, dst, image) of the k-NN
/// edges and of their reverses (dst, src, −image).
fn undirected_with_images(e: &EdgeList) -> std::collections::BTreeSet<(u32, u32, [i32; 3])> {
    let mut set = std::collections::BTreeSet::new();
    for k in 0..e.src.len() {
        let im = e.image[k];
        set.insert((e.src[k], e.dst[k], im));
        set.insert((e.dst[k], e.src[k], [-im[0], -im[1], -im[2]]));
    }
    set
}

#[test]
fn potnet_undirected_local_graph_is_symmetric_and_equals_the_image_construction() {
    let params = GraphParams::default();
    let (mut added_total, mut knn_total) = (0, 0);
    for (path, s) in mp_structures() {
        let g = build_graphs(&s, &params).unwrap();
        let e = &g.local;
        let (src, dst, dist) = multimat::model::potnet::undirected_local_edges(&e.src, &e.dst, &e.distance);
        let name = path.display();
        // The k-NN edges come first, unchanged.
        assert_eq!((&src[..e.src.len()], &dst[..e.src.len()], &dist[..e.src.len()]), (&e.src[..], &e.dst[..], &e.distance[..]), "{name}");
        // Symmetric: per (i, j) the multiset of distances of i→j equals that of j→i (to 1e-5 Å).
        let mut per_pair: std::collections::BTreeMap<(u32, u32), Vec<f32>> = Default::default();
        for k in 0..src.len() {
            per_pair.entry((src[k], dst[k])).or_default().push(dist[k]);
        }
        for ((a, b), list) in &per_pair {
            let mut fwd = list.clone();
            let mut back = per_pair.get(&(*b, *a)).cloned().unwrap_or_default();
            fwd.sort_by(f32::total_cmp);
            back.sort_by(f32::total_cmp);
            assert_eq!(fwd.len(), back.len(), "{name}: {a}→{b} has {} edges, {b}→{a} has {}", fwd.len(), back.len());
            for (x, y) in fwd.iter().zip(&back) {
                assert!((x - y).abs() < 1e-5, "{name}: {a}→{b} at {x} Å vs {b}→{a} at {y} Å");
            }
        }
        // The same edge count as the reference's set of (src, dst, image) of both directions.
        let reference = undirected_with_images(e);
        assert_eq!(src.len(), reference.len(), "{name}: {} edges, the image construction has {}", src.len(), reference.len());
        added_total += src.len() - e.src.len();
        knn_total += e.src.len();
    }
    println!("85 MP structures: {knn_total} k-NN edges, {added_total} reverse edges added by the undirected graph");
    // k-NN is not symmetric in general, so the reverse edges are real additions.
    assert!(added_total > 0, "no structure gained a reverse edge");
}
