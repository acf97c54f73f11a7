//! The screen's inputs and outputs, shared by the single-process and the distributed screen:
//! opening and cross-checking the query/candidate embedding files (one or two modalities), and
//! writing the hits CSV atomically.

use super::blocked::{CandidateSource, EmbeddingMatrix};
use super::multimodal::{join_queries, JoinedCandidates};
use super::topk::Hit;
use crate::embeddings::{check_compatible, EmbeddingsReader};
use anyhow::{bail, ensure, Result};
use clap::Args;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Inputs of a screen (single- or two-modality).
#[derive(Args, Debug, Clone)]
pub struct ScreenInputs {
    /// Query embeddings (HDF5, data-specs/embeddings-v1.md); held in memory.
    #[arg(long, required = true)]
    pub queries: Option<PathBuf>,
    /// Candidate embeddings; streamed in blocks.
    #[arg(long, required = true)]
    pub candidates: Option<PathBuf>,
    /// Second-modality queries (matched to --queries by id) for a multi-modal screen.
    #[arg(long, requires = "candidates2")]
    pub queries2: Option<PathBuf>,
    /// Second-modality candidates (matched to --candidates by id); only candidates in both count.
    #[arg(long, requires = "queries2")]
    pub candidates2: Option<PathBuf>,
    /// Weights of the two similarities in a multi-modal screen: score = w1·cos1 + w2·cos2.
    // One argument `w1,w2` (with `num_args = 2` clap rejected the documented comma form).
    #[arg(long, value_delimiter = ',', default_values_t = vec![0.5f32, 0.5])]
    pub weights: Vec<f32>,
    /// Screen even if queries and candidates come from different models/checkpoints (their
    /// similarities are then usually meaningless).
    #[arg(long)]
    pub allow_model_mismatch: bool,
}

/// Queries and a candidate source, validated and ready for `topk_over_range`.
pub struct PreparedScreen {
    pub queries: EmbeddingMatrix,
    pub candidates: Box<dyn CandidateSource>,
    /// One line per input for the log (counts, model, dropped ids in a multi-modal join).
    pub summary: Vec<String>,
}

fn describe(r: &EmbeddingsReader) -> String {
    format!("{}: {} × {} {} embeddings from {}", r.path().display(), r.len(), r.dim(), r.meta().modality, r.meta().model_identity())
}

/// Open and cross-check the inputs (dimension; model unless allowed), read the queries.
pub fn prepare(inputs: &ScreenInputs) -> Result<PreparedScreen> {
    let (Some(qp), Some(cp)) = (&inputs.queries, &inputs.candidates) else {
        bail!("both --queries and --candidates are required")
    };
    let q = EmbeddingsReader::open(qp)?;
    let c = EmbeddingsReader::open(cp)?;
    check_compatible(&q, &c, inputs.allow_model_mismatch)?;
    let mut summary = vec![format!("queries    {}", describe(&q)), format!("candidates {}", describe(&c))];
    match (&inputs.queries2, &inputs.candidates2) {
        (None, None) => {
            let queries = EmbeddingMatrix::from_reader(&q)?;
            Ok(PreparedScreen { queries, candidates: Box::new(c), summary })
        }
        (Some(qp2), Some(cp2)) => {
            ensure!(inputs.weights.len() == 2, "--weights needs two values, got {:?}", inputs.weights);
            let (w1, w2) = (inputs.weights[0], inputs.weights[1]);
            let q2 = EmbeddingsReader::open(qp2)?;
            let c2 = EmbeddingsReader::open(cp2)?;
            check_compatible(&q2, &c2, inputs.allow_model_mismatch)?;
            // The two modalities must come from one multimodal model to be comparable.
            check_compatible_model(&q, &q2, inputs.allow_model_mismatch)?;
            summary.push(format!("queries2   {}", describe(&q2)));
            summary.push(format!("candidates2 {}", describe(&c2)));
            let (queries, drop1, drop2) =
                join_queries(&EmbeddingMatrix::from_reader(&q)?, w1, &EmbeddingMatrix::from_reader(&q2)?, w2)?;
            ensure!(!queries.is_empty(), "no query id is in both {} and {}", qp.display(), qp2.display());
            let joined = JoinedCandidates::new(c, c2)?;
            summary.push(format!(
                "multi-modal: score = {w1}·cos1 + {w2}·cos2; {} queries in both files ({drop1} only in the first, {drop2} only in the second); {} candidates in both ({} only in the first, {} only in the second)",
                queries.len(),
                joined.matched,
                joined.first().len() - joined.matched,
                joined.second().len() - joined.matched
            ));
            Ok(PreparedScreen { queries, candidates: Box::new(joined), summary })
        }
        _ => bail!("--queries2 and --candidates2 go together"),
    }
}

fn check_compatible_model(a: &EmbeddingsReader, b: &EmbeddingsReader, allow: bool) -> Result<()> {
    if !allow && !a.meta().same_model(b.meta()) {
        bail!(
            "model mismatch: {} comes from {} but {} from {}; pass --allow-model-mismatch to screen anyway",
            a.path().display(),
            a.meta().model_identity(),
            b.path().display(),
            b.meta().model_identity()
        );
    }
    Ok(())
}

/// RFC 4180 quoting, only where needed.
fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

/// Write hits as CSV (query_id,rank,candidate_id,similarity), atomically. Similarities are
/// printed with Rust's shortest round-trip formatting, so the file is bit-faithful.
pub fn write_hits_csv(path: &Path, query_ids: &[String], hits: &[Vec<Hit>]) -> Result<()> {
    ensure!(query_ids.len() == hits.len(), "{} query ids but {} hit lists", query_ids.len(), hits.len());
    crate::atomic::write_with(path, |tmp| {
        let mut w = std::io::BufWriter::new(std::fs::File::create(tmp)?);
        writeln!(w, "query_id,rank,candidate_id,similarity")?;
        for (qid, list) in query_ids.iter().zip(hits) {
            let qid = csv_field(qid);
            for (rank, h) in list.iter().enumerate() {
                writeln!(w, "{qid},{},{},{}", rank + 1, csv_field(&h.candidate_id), h.similarity)?;
            }
        }
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(())
    })
}
