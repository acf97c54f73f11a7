//! Does the tight-binding DOS carry material-specific information? Against the real (PBE) DOS
//! of the shared Materials Project test set: each model DOS must correlate better, on average,
//! with its own material's DFT DOS than with another material's, and metals vs insulators
//! (DOS at E_F) must mostly agree. The numbers are printed for the notes.

use multimat::approx::tight_binding::{tight_binding_dos, TightBindingParams};
use multimat::material::Dos;
use rayon::prelude::*;
use std::path::Path;

/// DOS per atom at E − E_F = x (linear interpolation, 0 outside the grid).
fn per_atom_at(d: &Dos, atoms: usize, x: f64) -> f64 {
    let e = x + d.efermi;
    let i = d.energies.partition_point(|&v| v < e);
    if i == 0 || i >= d.energies.len() {
        return 0.0;
    }
    let t = (e - d.energies[i - 1]) / (d.energies[i] - d.energies[i - 1]);
    ((1.0 - t) * d.densities_up[i - 1] + t * d.densities_up[i]) / atoms as f64
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt().max(1e-30)
}

#[test]
fn model_dos_resembles_its_own_dft_dos_more_than_others() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mp-multimodal");
    let mut ids: Vec<String> = std::fs::read_dir(root.join("dos"))
        .unwrap()
        .map(|e| e.unwrap().path().file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    ids.sort();
    let window: Vec<f64> = (0..151).map(|i| -10.0 + 0.1 * i as f64).collect(); // E − E_F, eV
    let params = TightBindingParams::default();
    // (model, DFT) curves per atom on the window; materials with elements the model lacks
    // (lanthanides) are skipped, and must fail with an error naming the element.
    let pairs: Vec<(Vec<f64>, Vec<f64>, f64, f64)> = ids
        .par_iter()
        .filter_map(|id| {
            let s = multimat::io::read_structure(&root.join("structures").join(format!("{id}.json"))).unwrap();
            let dft = multimat::io::read_dos(&root.join("dos").join(format!("{id}.json"))).unwrap();
            match tight_binding_dos(&s, &params) {
                Ok(tb) => {
                    let n = s.num_sites();
                    let f = |d: &Dos| window.iter().map(|&x| per_atom_at(d, n, x)).collect::<Vec<f64>>();
                    Some((f(&tb), f(&dft), per_atom_at(&tb, n, 0.0), per_atom_at(&dft, n, 0.0)))
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    assert!(msg.contains("no parameters for element"), "{id}: {msg}");
                    None
                }
            }
        })
        .collect();
    let n = pairs.len();
    assert!(n >= 70, "only {n} materials computed");
    let matched = (0..n).map(|i| pearson(&pairs[i].0, &pairs[i].1)).sum::<f64>() / n as f64;
    let mismatched = (0..n).map(|i| pearson(&pairs[i].0, &pairs[(i + 1) % n].1)).sum::<f64>() / n as f64;
    let agree = pairs.iter().filter(|p| (p.2 > 0.05) == (p.3 > 0.05)).count();
    eprintln!(
        "tight-binding vs DFT DOS on {n} MP materials: mean Pearson r (E − E_F ∈ [−10, 5] eV) own {matched:.3}, \
         other material's {mismatched:.3}; metal/insulator (DOS(E_F) > 0.05 /eV/atom) agree {agree}/{n}"
    );
    assert!(matched > mismatched + 0.08, "own {matched:.3} vs other {mismatched:.3}");
    assert!(agree as f64 > 0.75 * n as f64, "metal/insulator agree only {agree}/{n}");
}
