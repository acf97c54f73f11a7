//! The inference commands on `cuda-sim` (the CUDA kernels and cuBLAS descriptors executed on the
//! CPU) against the CPU device, end to end with the real binary: `embed` (crystal, DOS and text
//! rows), `eval retrieval`, `eval discovery` and `predict`. The fixtures are those of
//! tests/eval_embed.rs (a tiny crystal + DOS + text pre-training run on the 85 real mp-multimodal
//! materials, a quarter held out) and tests/predict.rs (a tiny K_VRH fine-tuning run on real
//! matminer crystals), shortened to 2 epochs; only the device differs between the two runs of a
//! command.
//!
//! Tolerances: the kernels differ from the CPU references in rounding only (f32 tree reductions
//! instead of f64 or serial sums, expf/erfcf in float), so unit-norm embeddings agree within 1e-5
//! per component and predictions within 1e-5 relative (measured: ≤ 1.2e-7 and 2.3e-8). Retrieval
//! accuracies and ranks must be equal; discovery's candidate lists too, except that two candidates
//! whose CPU similarities lie within 1e-5 (a near-tie, which the fixture has) may trade places.

mod common;
#[path = "finetune_common/mod.rs"]
mod ft;

use multimat::embeddings::EmbeddingsReader;
use multimat::eval::report::{DiscoveryReport, RetrievalReport};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Largest per-component difference allowed between device and CPU embeddings (unit rows).
const EMBED_TOL: f32 = 1e-5;
/// Two similarities closer than this on the CPU may trade ranks on the device (the similarity
/// error is at most ≈ 2 × the per-row embedding error; measured ≈ 1e-7).
const TIE_GAP: f64 = 1e-5;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn ok(args: &[&str]) -> std::process::Output {
    let out = Command::new(common::bin()).args(args).output().unwrap();
    assert!(out.status.success(), "multimat {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// A 2-epoch crystal + DOS + text pre-training run with 25 % held out (as tests/eval_embed.rs).
fn pretrained() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = common::fixture_dir("multimat-device-inference");
        std::fs::create_dir_all(&dir).unwrap();
        let run = dir.join("run");
        let cfg = format!(
            r#"
[data]
shards = ["{shards}"]
modalities = ["crystal", "dos", "text"]
holdout_fraction = 0.25

[model]
embed_dim = 16

[model.encoders.potnet]
hidden = 16
conv_layers = 1

[model.encoders.dos_transformer]
dim = 16
layers = 1
heads = 2
head_size = 8
ffn_dim = 32

[model.encoders.text_mlp]
hidden = [32]

[loss]
kind = "anchored_clip"
anchor = "crystal"
temperature = 0.2

[optim]
lr = 3e-3
warmup_epochs = 1
epochs = 2
batch_size = 24

[run]
out_dir = "{run}"
seed = 5
keep_last = 1
"#,
            shards = common::shards().display(),
            run = run.display()
        );
        let p = dir.join("config.toml");
        std::fs::write(&p, cfg).unwrap();
        ok(&["pretrain", "--quiet", "--config", s(&p)]);
        run
    })
}

/// A 2-epoch K_VRH fine-tuning run (as tests/predict.rs).
fn finetuned() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = common::fixture_dir("multimat-device-inference-ft");
        std::fs::create_dir_all(&dir).unwrap();
        let run = dir.join("kvrh");
        let cfg = ft::write_ft_config(&dir.join("ft.toml"), &run, "epochs = 2");
        ok(&["finetune", "--quiet", "--force", "--config", s(&cfg)]);
        run
    })
}

fn read_all(path: &Path) -> (Vec<String>, Vec<f32>, usize) {
    let r = EmbeddingsReader::open(path).unwrap();
    let b = r.read_block(0..r.len()).unwrap();
    (b.ids, b.rows, r.dim())
}

#[test]
fn embed_on_cuda_sim_matches_the_cpu_for_every_modality() {
    let run = pretrained();
    let tmp = tempfile::tempdir().unwrap();
    for modality in ["crystal", "dos", "text"] {
        let mut got = Vec::new();
        for device in ["cpu", "cuda-sim"] {
            let out = tmp.path().join(format!("{modality}-{device}.h5"));
            ok(&["embed", "--quiet", "--checkpoint", s(run), "--shards", s(common::shards()), "--modality", modality, "--split", "holdout", "--device", device, "--out", s(&out)]);
            got.push(read_all(&out));
        }
        let ((cpu_ids, cpu, dim), (sim_ids, sim, _)) = (&got[0], &got[1]);
        assert!(cpu_ids.len() >= 5, "{modality}: only {} held-out rows", cpu_ids.len());
        assert_eq!(cpu_ids, sim_ids, "{modality}: ids differ between devices");
        let worst = cpu.iter().zip(sim).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        println!("embed {modality}: {} rows × {dim}, worst |cuda-sim − cpu| = {worst:.3e}", cpu_ids.len());
        assert!(worst < EMBED_TOL, "{modality}: cuda-sim embeddings off the CPU's by {worst}");
    }
}

#[test]
fn eval_retrieval_and_discovery_on_cuda_sim_match_the_cpu() {
    let run = pretrained();
    let tmp = tempfile::tempdir().unwrap();
    let mut retrieval = Vec::new();
    let mut discovery = Vec::new();
    for device in ["cpu", "cuda-sim"] {
        let r = tmp.path().join(format!("retrieval-{device}.json"));
        ok(&["eval", "retrieval", "--checkpoint", s(run), "--shards", s(common::shards()), "--device", device, "--out", s(&r)]);
        retrieval.push(serde_json::from_str::<RetrievalReport>(&std::fs::read_to_string(&r).unwrap()).unwrap());
        let d = tmp.path().join(format!("discovery-{device}.json"));
        ok(&["eval", "discovery", "--quiet", "--checkpoint", s(run), "--shards", s(common::shards()), "--device", device, "--out", s(&d)]);
        discovery.push(serde_json::from_str::<DiscoveryReport>(&std::fs::read_to_string(&d).unwrap()).unwrap());
    }

    // Retrieval: the same accuracies and ranks for every ordered pair of modalities.
    let (cpu, sim) = (&retrieval[0], &retrieval[1]);
    assert_eq!((cpu.split.as_str(), cpu.n_materials), (sim.split.as_str(), sim.n_materials));
    assert_eq!(cpu.pairs.len(), 6);
    for (a, b) in cpu.pairs.iter().zip(&sim.pairs) {
        let pair = format!("{} → {}", a.query, a.target);
        assert_eq!((&a.query, &a.target, a.n), (&b.query, &b.target, b.n), "{pair}");
        assert_eq!((a.top1, a.top5, a.top10, a.top25), (b.top1, b.top5, b.top10, b.top25), "{pair}: top-k accuracies differ");
        assert_eq!((a.mean_rank, a.median_rank), (b.mean_rank, b.median_rank), "{pair}: ranks differ");
    }

    // Discovery: the same nearest candidates per target in the same order — two may trade places
    // only inside a near-tie (similarities within TIE_GAP on the CPU) — with similarities within
    // the embedding tolerance, and the same nMAE for the same candidate.
    let (cpu, sim) = (&discovery[0], &discovery[1]);
    assert_eq!((cpu.n_targets, cpu.n_candidates), (sim.n_targets, sim.n_candidates));
    assert!(cpu.n_targets >= 3, "only {} discovery targets", cpu.n_targets);
    let (mut worst, mut swaps) = (0.0f64, 0);
    for (a, b) in cpu.targets.iter().zip(&sim.targets) {
        assert_eq!(a.target_id, b.target_id);
        assert_eq!(a.candidates.len(), b.candidates.len());
        for (i, (x, y)) in a.candidates.iter().zip(&b.candidates).enumerate() {
            worst = worst.max((x.similarity - y.similarity).abs());
            if x.id == y.id {
                assert_eq!(x.nmae, y.nmae, "target {} candidate {}", a.target_id, x.id);
                continue;
            }
            swaps += 1;
            // The CPU ranks y elsewhere (or just past the list's end): only a near-tie allows it.
            let cpu_sim_of_y = a.candidates.iter().find(|c| c.id == y.id).map_or(y.similarity, |c| c.similarity);
            assert!(
                (cpu_sim_of_y - x.similarity).abs() < TIE_GAP,
                "target {}: position {i} holds {} on the CPU (similarity {}) but {} on cuda-sim (CPU similarity {cpu_sim_of_y})",
                a.target_id, x.id, x.similarity, y.id
            );
        }
    }
    println!("discovery: {} targets, worst |Δ similarity| = {worst:.3e}, {swaps} near-tie swaps", cpu.n_targets);
    assert!(worst < 2.0 * EMBED_TOL as f64, "discovery similarities differ by {worst}");
    if swaps == 0 {
        assert_eq!(cpu.mean_best_nmae, sim.mean_best_nmae);
    }
    assert_eq!(cpu.random_mean_best_nmae, sim.random_mean_best_nmae, "the random baseline does not depend on embeddings");
}

#[test]
fn predict_on_cuda_sim_matches_the_cpu() {
    let run = finetuned();
    let tmp = tempfile::tempdir().unwrap();
    let mut got = Vec::new();
    for device in ["cpu", "cuda-sim"] {
        let out = tmp.path().join(format!("preds-{device}.csv"));
        ok(&["predict", "--quiet", "--model", s(run), "--shards", s(ft::shards()), "--batch-size", "32", "--device", device, "--out", s(&out)]);
        let text = std::fs::read_to_string(&out).unwrap();
        let rows: Vec<(String, f64)> = text
            .lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (format!("{},{},{}", f[0], f[1], f[2]), f[3].parse().unwrap())
            })
            .collect();
        got.push(rows);
    }
    let (cpu, sim) = (&got[0], &got[1]);
    assert!(cpu.len() >= 50, "only {} predictions for the 100 fixture materials", cpu.len());
    let mut worst = 0.0f64;
    for ((ka, a), (kb, b)) in cpu.iter().zip(sim) {
        assert_eq!(ka, kb);
        let rel = (a - b).abs() / a.abs().max(1.0);
        worst = worst.max(rel);
        assert!(rel < 1e-5, "{ka}: cuda-sim predicts {b}, the CPU {a}");
    }
    println!("predict: {} materials, worst relative |cuda-sim − cpu| = {worst:.3e}", cpu.len());
}
