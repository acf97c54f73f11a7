//! Generated batches with realistic sizes for benchmarks and smoke tests (not physics: species,
//! distances and lattice sums are random within plausible ranges). Seeded, so reproducible.

use super::{BatchedEdges, BatchedInfinite, DensityBatch, DosBatch, GraphBatch, TextBatch};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Sizes of generated crystals.
#[derive(Clone, Copy, Debug)]
pub struct GraphSizes {
    pub min_atoms: usize,
    pub max_atoms: usize,
    /// PotNet local neighbours per atom.
    pub local_neighbours: usize,
    /// CGCNN neighbours per atom.
    pub cgcnn_neighbours: usize,
}

impl Default for GraphSizes {
    /// Materials-Project-like: 1–20 atoms per cell (mean ≈ 10), 16 and 12 neighbours.
    fn default() -> Self {
        GraphSizes { min_atoms: 1, max_atoms: 20, local_neighbours: 16, cgcnn_neighbours: 12 }
    }
}

pub fn graph_batch(batch: usize, sizes: GraphSizes, seed: u64) -> GraphBatch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut g = GraphBatch { num_graphs: batch, node_offsets: vec![0].into(), ..Default::default() };
    let edges = |rng: &mut ChaCha8Rng, out: &mut BatchedEdges, base: usize, n: usize, k: usize, dmax: f32| {
        for dst in 0..n {
            for _ in 0..k {
                out.src.host_mut().push((base + rng.random_range(0..n)) as u32);
                out.dst.host_mut().push((base + dst) as u32);
                out.distance.push(rng.random_range(1.5..dmax));
            }
        }
    };
    for _ in 0..batch {
        let base = g.species.len();
        let n = rng.random_range(sizes.min_atoms..=sizes.max_atoms);
        g.species.extend((0..n).map(|_| rng.random_range(1..=83u8)));
        edges(&mut rng, &mut g.local, base, n, sizes.local_neighbours, 4.5);
        edges(&mut rng, &mut g.cgcnn, base, n, sizes.cgcnn_neighbours, 8.0);
        let inf: &mut BatchedInfinite = &mut g.infinite;
        for i in 0..n {
            for j in 0..n {
                inf.src.host_mut().push((base + i) as u32);
                inf.dst.host_mut().push((base + j) as u32);
                inf.coulomb.push(rng.random_range(-3.0..3.0));
                inf.london.push(rng.random_range(-5.0..0.0));
                inf.pauli.push(rng.random_range(0.0..5.0));
            }
        }
        g.node_offsets.host_mut().push(g.species.len() as u32);
    }
    g
}

/// DOS on `len` points over −10…10 eV, all valid.
pub fn dos_batch(batch: usize, len: usize, seed: u64) -> DosBatch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let energies = (0..batch).flat_map(|_| (0..len).map(move |t| -10.0 + 20.0 * t as f32 / (len.max(2) - 1) as f32)).collect();
    let densities = (0..batch * len).map(|_| rng.random_range(0.0..5.0)).collect();
    DosBatch { batch, len, energies, densities, mask: None }
}

/// Densities ρ·V on a cubic grid with volumes 20–400 Å³ (ρ spanning 10⁻³…10² e/Å³).
pub fn density_batch(batch: usize, grid: usize, seed: u64) -> DensityBatch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let volumes: Vec<f32> = (0..batch).map(|_| rng.random_range(20.0..400.0)).collect();
    let vox = grid * grid * grid;
    let values = volumes.iter().flat_map(|&v| {
        (0..vox).map(|_| v * 10f32.powf(rng.random_range(-3.0..2.0))).collect::<Vec<_>>()
    }).collect();
    DensityBatch { batch, grid: [grid; 3], values, volumes }
}

pub fn text_batch(batch: usize, dim: usize, seed: u64) -> TextBatch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    TextBatch { batch, dim, values: (0..batch * dim).map(|_| rng.random_range(-1.0..1.0)).collect() }
}
