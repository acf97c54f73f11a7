//! `multimat embed`, `multimat eval retrieval` and `multimat eval discovery` end to end with the
//! real binary, on shards of the 85 real mp-multimodal materials and a checkpoint from a short
//! pre-training run with a held-out split (made once per test binary).

mod common;

use common::{bin, shards};
use multimat::embeddings::EmbeddingsReader;
use multimat::eval::discovery::{nmae, DosCurve, NmaeGrid};
use multimat::eval::report::{DiscoveryReport, RetrievalReport};
use multimat::shard::{ShardData, ShardWriter};
use multimat::train::inference::is_holdout;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const SEED: u64 = 5;
const HOLDOUT: f64 = 0.25;

/// A short crystal + DOS + text pre-training run with 25 % held out; returns its run directory.
fn trained() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = common::fixture_dir("multimat-eval-test");
        std::fs::create_dir_all(&dir).unwrap();
        let run = dir.join("run");
        let cfg = format!(
            r#"
[data]
shards = ["{shards}"]
modalities = ["crystal", "dos", "text"]
holdout_fraction = {HOLDOUT}

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
epochs = 3
batch_size = 24

[run]
out_dir = "{run}"
seed = {SEED}
keep_last = 1
"#,
            shards = shards().display(),
            run = run.display()
        );
        let p = dir.join("config.toml");
        std::fs::write(&p, cfg).unwrap();
        ok(Command::new(bin()).args(["pretrain", "--quiet", "--config"]).arg(&p));
        run
    })
}

fn ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "command failed: {cmd:?}\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

/// Run `multimat args…`, expect failure, return stderr.
fn fails(args: &[&str]) -> String {
    let out = Command::new(bin()).args(args).output().unwrap();
    assert!(!out.status.success(), "expected failure: {args:?}\n{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn shard_data() -> ShardData {
    let p = std::fs::read_dir(shards()).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|e| e == "h5")).unwrap();
    ShardData::load(&p).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn checkpoint_json(run: &Path) -> PathBuf {
    let dir = run.join("checkpoints");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "json")).collect();
    v.sort();
    v.pop().unwrap()
}

fn read_all(path: &Path) -> (EmbeddingsReader, Vec<String>, Vec<f32>) {
    let r = EmbeddingsReader::open(path).unwrap();
    let b = r.read_block(0..r.len()).unwrap();
    (r, b.ids, b.rows)
}

#[test]
fn embed_writes_ids_unit_rows_and_model_identity_for_each_split() {
    let run = trained();
    let tmp = tempfile::tempdir().unwrap();
    let data = shard_data();
    const DOS: usize = 2; // mask index of the DOS in ShardData::masks
    let holdout_dos: Vec<String> = (0..data.len()).filter(|&i| is_holdout(&data.ids[i], SEED, HOLDOUT) && data.has(DOS, i)).map(|i| data.ids[i].clone()).collect();
    let holdout_no_dos = (0..data.len()).filter(|&i| is_holdout(&data.ids[i], SEED, HOLDOUT) && !data.has(DOS, i)).count();
    assert!(holdout_dos.len() >= 5, "the fixture must hold out some DOS records");

    let q = tmp.path().join("q.h5");
    let out = ok(Command::new(bin()).args(["embed", "--quiet", "--checkpoint", s(run), "--shards", s(shards()), "--modality", "dos", "--split", "holdout", "--out", s(&q)]));
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains(&format!("{holdout_no_dos} in the split lack dos data")), "{msg}");

    let (r, ids, rows) = read_all(&q);
    assert_eq!(ids, holdout_dos, "exactly the held-out records with a DOS, in shard order");
    assert_eq!(r.dim(), 16);
    for (i, row) in rows.chunks(16).enumerate() {
        let n: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-5, "row {i} ({}) has norm {n}", ids[i]);
    }
    // The file names the checkpoint's weights: the SHA-256 of its safetensors file.
    let json = checkpoint_json(run);
    let st = json.with_extension("safetensors");
    let sha = hex::encode(Sha256::digest(std::fs::read(&st).unwrap()));
    let meta = r.meta();
    assert_eq!(meta.modality, "dos");
    assert_eq!(meta.checkpoint_sha256, sha);
    assert!(meta.normalised);
    assert_eq!(meta.model_id, format!("run@{}", json.file_stem().unwrap().to_str().unwrap()));

    // A material's vector does not depend on which other materials were embedded with it, and a
    // checkpoint JSON gives the same model as its run directory.
    let all = tmp.path().join("all.h5");
    ok(Command::new(bin()).args(["embed", "--quiet", "--checkpoint", s(&json), "--shards", s(shards()), "--modality", "dos", "--out", s(&all)]));
    let (ra, ids_all, rows_all) = read_all(&all);
    assert_eq!(ra.meta(), meta);
    assert_eq!(ids_all.len(), (0..data.len()).filter(|&i| data.has(DOS, i)).count());
    for (i, id) in ids.iter().enumerate() {
        let j = ids_all.iter().position(|x| x == id).unwrap();
        let (a, b) = (&rows[i * 16..(i + 1) * 16], &rows_all[j * 16..(j + 1) * 16]);
        let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(diff < 1e-5, "{id}: embedding differs by {diff} between the holdout and the all-split run");
    }

    // Train-split crystals are disjoint from the held-out DOS ids and screenable against them.
    let c = tmp.path().join("c.h5");
    ok(Command::new(bin()).args(["embed", "--quiet", "--checkpoint", s(run), "--shards", s(shards()), "--modality", "crystal", "--split", "train", "--out", s(&c)]));
    let (rc, ids_c, _) = read_all(&c);
    assert_eq!(rc.meta().modality, "crystal");
    assert!(rc.meta().same_model(meta));
    let held: HashSet<&String> = holdout_dos.iter().collect();
    assert!(ids_c.iter().all(|id| !held.contains(id) && !is_holdout(id, SEED, HOLDOUT)));
    assert_eq!(ids_c.len(), (0..data.len()).filter(|&i| !is_holdout(&data.ids[i], SEED, HOLDOUT)).count());
}

#[test]
fn eval_retrieval_reproduces_the_pretraining_runs_own_numbers() {
    let run = trained();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("retrieval.json");
    let stdout = ok(Command::new(bin()).args(["eval", "retrieval", "--checkpoint", s(run), "--shards", s(shards()), "--out", s(&out)])).stdout;
    let table = String::from_utf8_lossy(&stdout);
    assert!(table.contains("dos") && table.contains("top1%"), "{table}");

    let text = std::fs::read_to_string(&out).unwrap();
    let report: RetrievalReport = serde_json::from_str(&text).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["chance_top1", "n_materials", "pairs", "split"], "top-level schema");
    let pair_keys: Vec<&String> = value["pairs"][0].as_object().unwrap().keys().collect();
    assert_eq!(pair_keys, ["mean_rank", "median_rank", "n", "query", "target", "top1", "top10", "top25", "top5"]);

    let data = shard_data();
    let held = data.ids.iter().filter(|id| is_holdout(id, SEED, HOLDOUT)).count();
    assert_eq!(report.split, "holdout");
    assert_eq!(report.n_materials, held);
    assert!((report.chance_top1 - 1.0 / held as f64).abs() < 1e-15);
    assert_eq!(report.pairs.len(), 6, "every ordered pair of crystal, dos, text");

    // The pre-training run evaluated the same split with its final weights.
    let own: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("retrieval.json")).unwrap()).unwrap();
    assert_eq!(own["set"], "holdout");
    let own_pairs = own["pairs"].as_array().unwrap();
    assert_eq!(own_pairs.len(), report.pairs.len());
    for (p, o) in report.pairs.iter().zip(own_pairs) {
        assert_eq!((p.query.as_str(), p.target.as_str()), (o["query"].as_str().unwrap(), o["target"].as_str().unwrap()));
        assert_eq!(p.n as u64, o["n"].as_u64().unwrap());
        for (k, acc) in [(0, p.top1), (1, p.top5), (2, p.top10), (3, p.top25)] {
            assert_eq!(acc, o["top_k"][k][1].as_f64().unwrap(), "{} → {} top-{}", p.query, p.target, o["top_k"][k][0]);
        }
        assert_eq!(p.mean_rank, o["mean_rank"].as_f64().unwrap());
        assert_eq!(p.median_rank, o["median_rank"].as_f64().unwrap());
        assert!(p.top1 <= p.top5 && p.top5 <= p.top10 && p.top10 <= p.top25 && p.top25 <= 1.0);
        assert!(p.mean_rank >= 1.0 && p.mean_rank <= p.n as f64);
    }

    // Another split is another evaluation set.
    let all = tmp.path().join("all.json");
    ok(Command::new(bin()).args(["eval", "retrieval", "--checkpoint", s(run), "--shards", s(shards()), "--split", "all", "--out", s(&all)]));
    let all: RetrievalReport = serde_json::from_str(&std::fs::read_to_string(&all).unwrap()).unwrap();
    assert_eq!((all.split.as_str(), all.n_materials), ("all", data.len()));
}

#[test]
fn eval_discovery_scores_the_nearest_training_crystals_by_equation_5() {
    let run = trained();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("discovery.json");
    let stdout = ok(Command::new(bin()).args(["eval", "discovery", "--quiet", "--checkpoint", s(run), "--shards", s(shards()), "--out", s(&out)])).stdout;
    let table = String::from_utf8_lossy(&stdout);
    assert!(table.contains("random nMAE"), "{table}");
    let text = std::fs::read_to_string(&out).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["mean_best_nmae", "n_candidates", "n_max", "n_targets", "random_mean_best_nmae", "targets", "window_ev"]);
    let r: DiscoveryReport = serde_json::from_str(&text).unwrap();

    let data = shard_data();
    const DOS: usize = 2;
    const GRAPHS: usize = 1;
    let p = data.meta.preprocess.dos_points;
    // Usable: a DOS whose energies span the whole −5…5 eV window (one mp-multimodal DOS ends
    // at 3.4 eV and must be left out, never extrapolated).
    let covers = |i: usize| data.has(DOS, i) && data.dos_energies[i * p] <= -5.0 && data.dos_energies[(i + 1) * p - 1] >= 5.0;
    assert!((0..data.len()).any(|i| data.has(DOS, i) && !covers(i)), "the data has a DOS not covering the window");
    let target_ids: Vec<&String> = (0..data.len()).filter(|&i| is_holdout(&data.ids[i], SEED, HOLDOUT) && covers(i)).map(|i| &data.ids[i]).collect();
    let cand_ids: Vec<&String> = (0..data.len()).filter(|&i| !is_holdout(&data.ids[i], SEED, HOLDOUT) && covers(i) && data.has(GRAPHS, i)).map(|i| &data.ids[i]).collect();
    assert_eq!((r.n_max, r.window_ev), (15, [-5.0, 5.0]));
    assert_eq!(r.n_targets, target_ids.len());
    assert_eq!(r.n_candidates, cand_ids.len());
    assert_eq!(r.mean_best_nmae.len(), 15);
    assert_eq!(r.random_mean_best_nmae.len(), 15);
    for v in [&r.mean_best_nmae, &r.random_mean_best_nmae] {
        assert!(v.windows(2).all(|w| w[1] <= w[0] + 1e-12), "best-of-n must not increase with n: {v:?}");
        assert!(v.iter().all(|x| x.is_finite() && *x > 0.0));
    }

    // Recompute everything the report claims from the shard's DOS arrays.
    let row = |id: &str| data.ids.iter().position(|x| x == id).unwrap();
    let curve = |i: usize| DosCurve { energies: &data.dos_energies[i * p..(i + 1) * p], densities: &data.dos_densities[i * p..(i + 1) * p] };
    let grid = NmaeGrid::paper();
    let mut mean = vec![0.0; 15];
    let mut random_n1 = 0.0;
    for t in &r.targets {
        assert!(target_ids.contains(&&t.target_id));
        assert_eq!(t.candidates.len(), 15);
        let ti = row(&t.target_id);
        let mut best = f64::INFINITY;
        for (n, c) in t.candidates.iter().enumerate() {
            assert!(cand_ids.contains(&&c.id), "{} is not a training crystal with a DOS", c.id);
            if n > 0 {
                assert!(c.similarity <= t.candidates[n - 1].similarity, "candidates of {} are not in rank order", t.target_id);
            }
            let want = nmae(curve(ti), curve(row(&c.id)), &grid).unwrap();
            assert!((c.nmae - want).abs() < 1e-12, "{} vs {}: report {} recomputed {want}", t.target_id, c.id, c.nmae);
            best = best.min(c.nmae);
            mean[n] += best / r.n_targets as f64;
        }
        // With the pool (256) larger than the candidate set, the n = 1 baseline is exactly the
        // mean nMAE of the target against every candidate.
        let all: f64 = cand_ids.iter().map(|id| nmae(curve(ti), curve(row(id)), &grid).unwrap()).sum();
        random_n1 += all / cand_ids.len() as f64 / r.n_targets as f64;
    }
    for n in 0..15 {
        assert!((mean[n] - r.mean_best_nmae[n]).abs() < 1e-12, "n = {}: {} vs {}", n + 1, mean[n], r.mean_best_nmae[n]);
    }
    assert!((random_n1 - r.random_mean_best_nmae[0]).abs() < 1e-12, "{random_n1} vs {}", r.random_mean_best_nmae[0]);
}

#[test]
fn bad_inputs_are_clear_errors() {
    let run = trained();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.h5");
    let missing = tmp.path().join("nope");
    let e = fails(&["embed", "--checkpoint", s(&missing), "--shards", s(shards()), "--modality", "dos", "--out", s(&out)]);
    assert!(e.contains("does not exist"), "{e}");
    let e = fails(&["embed", "--checkpoint", s(tmp.path()), "--shards", s(shards()), "--modality", "dos", "--out", s(&out)]);
    assert!(e.contains("no complete checkpoint"), "{e}");
    let e = fails(&["embed", "--checkpoint", s(run), "--shards", s(shards()), "--modality", "charge_density", "--out", s(&out)]);
    assert!(e.contains("no charge_density encoder") && e.contains("crystal, dos, text"), "{e}");
    let e = fails(&["embed", "--checkpoint", s(run), "--shards", s(shards()), "--modality", "phonons", "--out", s(&out)]);
    assert!(e.contains("unknown modality"), "{e}");
    assert!(!out.exists(), "failed runs write nothing");

    // A damaged checkpoint is refused, naming the file.
    let json = checkpoint_json(run);
    let copy = tmp.path().join("ck");
    std::fs::create_dir_all(&copy).unwrap();
    let st = json.with_extension("safetensors");
    std::fs::copy(&json, copy.join(json.file_name().unwrap())).unwrap();
    let mut bytes = std::fs::read(&st).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(copy.join(st.file_name().unwrap()), bytes).unwrap();
    let e = fails(&["eval", "retrieval", "--checkpoint", s(&copy.join(json.file_name().unwrap())), "--shards", s(shards()), "--out", s(&tmp.path().join("r.json"))]);
    assert!(e.contains("checksum mismatch") && e.contains(".safetensors"), "{e}");

    // Shards without any DOS: discovery cannot score candidates.
    let data = shard_data();
    let mut recs = data.records();
    for r in &mut recs {
        r.dos = None;
    }
    let no_dos = tmp.path().join("no-dos.h5");
    ShardWriter::new(data.meta.clone()).write(&no_dos, &recs).unwrap();
    let e = fails(&["eval", "discovery", "--checkpoint", s(run), "--shards", s(&no_dos), "--out", s(&tmp.path().join("d.json"))]);
    assert!(e.contains("has a DOS"), "{e}");
    let e = fails(&["eval", "discovery", "--checkpoint", s(run), "--shards", s(shards()), "--n-max", "500", "--out", s(&tmp.path().join("d.json"))]);
    assert!(e.contains("fewer than --n-max 500"), "{e}");
    let e = fails(&["eval", "discovery", "--checkpoint", s(run), "--shards", s(shards()), "--window", "5,-5", "--out", s(&tmp.path().join("d.json"))]);
    assert!(e.contains("LO < HI"), "{e}");
    assert!(!tmp.path().join("d.json").exists());
}

/// `multimat export` + `python/multimat_weights.py`: the exported text encoder, run in numpy
/// (safetensors header parsed with the standard library), gives the embeddings `multimat embed`
/// wrote for the same materials; the export carries no AdamW state and the run's config.
#[test]
fn exported_text_encoder_matches_embed_in_numpy() {
    let run = trained();
    let dir = tempfile::tempdir().unwrap();
    let (emb, weights) = (dir.path().join("text.h5"), dir.path().join("model.safetensors"));
    ok(Command::new(bin()).args(["embed", "--quiet", "--checkpoint", s(run), "--shards", s(&shards()), "--modality", "text", "--out", s(&emb)]));
    ok(Command::new(bin()).args(["export", "--checkpoint", s(run), "--out", s(&weights)]));

    // The file as another tool sees it.
    let bytes = std::fs::read(&weights).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let names: Vec<String> = st.names().into_iter().cloned().collect();
    assert!(names.iter().all(|n| !n.starts_with("adamw.") && !n.starts_with("param.")), "{names:?}");
    assert_eq!(st.tensor("text.mlp.0.weight").unwrap().shape(), [32, 768], "Linear weights are (out, in)");
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert_eq!(meta["format"], "multimat-weights");
    assert_eq!(meta["kind"], "multimat-pretrain");
    let config: serde_json::Value = serde_json::from_str(&meta["config"]).unwrap();
    assert_eq!(config["model"]["embed_dim"], 16);
    let ck: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(checkpoint_json(run)).unwrap()).unwrap();
    assert_eq!(meta["tensors_sha256"], ck["tensors_sha256"].as_str().unwrap(), "the export names the checkpoint it came from");

    // The inputs: each embedded material's stored text embedding, in the embed file's order.
    let (_, ids, rows) = read_all(&emb);
    let mut by_id = std::collections::HashMap::new();
    for e in std::fs::read_dir(shards()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "h5") {
            for r in ShardData::load(&p).unwrap().records() {
                if let Some(t) = r.text_embedding {
                    by_id.insert(r.id.clone(), t.vector);
                }
            }
        }
    }
    let inputs: Vec<Vec<f32>> = ids.iter().map(|id| by_id[id].clone()).collect();
    let prefix = dir.path().join("x");
    let (x_npy, x_ids) = multimat::text::npy::write_embeddings(&prefix, &ids, &inputs).unwrap();
    let y_npy = dir.path().join("y.npy");
    let python = std::env::var_os("MULTIMAT_PYTHON").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/venv/bin/python"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/multimat_weights.py");
    ok(Command::new(&python).arg(&script).arg(&weights).arg("--text-embed").arg(&x_npy).arg("--out").arg(&y_npy));
    let numpy = multimat::io::npy::read_embeddings(&y_npy, &x_ids).unwrap();
    assert_eq!(numpy.len(), ids.len());
    let mut worst = 0f32;
    for (i, (id, v)) in numpy.iter().enumerate() {
        assert_eq!(id, &ids[i]);
        for (a, b) in v.iter().zip(&rows[i * 16..(i + 1) * 16]) {
            worst = worst.max((a - b).abs());
        }
    }
    // f32 forward in both; the two GEMM orders differ by a few ulps on unit-length rows.
    assert!(worst < 1e-5, "numpy forward differs from multimat embed by {worst}");
    eprintln!("numpy vs multimat embed: {} rows, max |Δ| = {worst:e}", ids.len());
}
