//! BERT tokenisation through the Hugging Face `tokenizers` crate (the same Rust code that backs
//! transformers' fast tokenisers, so ids match the Python side exactly). Loads `tokenizer.json`,
//! or, when a checkpoint ships only `vocab.txt`, assembles the standard BERT WordPiece pipeline
//! from the crate's parts (BertNormalizer → BertPreTokenizer → WordPiece → BertProcessing).
//!
//! Truncation follows transformers (`truncation=True, max_length=L`): the word pieces are cut to
//! L minus the number of special tokens, then [CLS] … [SEP] are added. We do that in two steps
//! ourselves so the untruncated length can be recorded for every text.

use anyhow::{anyhow, bail, Context, Result};
use std::path::Path;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{PostProcessor, Tokenizer, TruncationDirection};

/// One tokenised text.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenizedText {
    /// Token ids with the special tokens, at most `max_len` long.
    pub ids: Vec<u32>,
    /// Length the text would have had without truncation (special tokens included).
    pub untruncated_len: usize,
}

impl TokenizedText {
    pub fn truncated(&self) -> bool {
        self.untruncated_len > self.ids.len()
    }
}

/// A tokeniser with the model's maximum sequence length.
pub struct BertTokenizer {
    tokenizer: Tokenizer,
    /// Maximum number of tokens fed to the model, special tokens included.
    pub max_len: usize,
    /// Special tokens the post-processor adds to a single sequence ([CLS] and [SEP]: 2).
    n_special: usize,
}

impl BertTokenizer {
    /// Load from a model directory: `tokenizer.json` if present, else `vocab.txt` (with
    /// `do_lower_case` from `tokenizer_config.json`, default true as in transformers).
    pub fn from_dir(dir: &Path, max_len: usize) -> Result<BertTokenizer> {
        let json = dir.join("tokenizer.json");
        let vocab = dir.join("vocab.txt");
        let tokenizer = if json.is_file() {
            Tokenizer::from_file(&json).map_err(|e| anyhow!("reading tokenizer {}: {e}", json.display()))?
        } else if vocab.is_file() {
            let lowercase = read_do_lower_case(&dir.join("tokenizer_config.json"))?;
            wordpiece_from_vocab(&vocab, lowercase)?
        } else {
            bail!(
                "model directory {} has neither tokenizer.json nor vocab.txt (a BERT tokeniser needs one)",
                dir.display()
            );
        };
        BertTokenizer::new(tokenizer, max_len)
    }

    /// Wrap a tokeniser, switching off whatever truncation/padding its file configured (the
    /// sentence-transformers files pad and truncate to 128, which must not apply here).
    pub fn new(mut tokenizer: Tokenizer, max_len: usize) -> Result<BertTokenizer> {
        tokenizer
            .with_truncation(None)
            .map_err(|e| anyhow!("disabling tokenizer truncation: {e}"))?;
        tokenizer.with_padding(None);
        let n_special = tokenizer.get_post_processor().map(|p| p.added_tokens(false)).unwrap_or(0);
        if max_len <= n_special {
            bail!("maximum sequence length {max_len} leaves no room beside {n_special} special tokens");
        }
        Ok(BertTokenizer { tokenizer, max_len, n_special })
    }

    /// Tokenise one text, truncating to `max_len` and recording the untruncated length.
    pub fn encode(&self, text: &str) -> Result<TokenizedText> {
        let mut pieces = self.tokenizer.encode(text, false).map_err(|e| anyhow!("tokenising: {e}"))?;
        let untruncated_len = pieces.len() + self.n_special;
        if untruncated_len > self.max_len {
            pieces.truncate(self.max_len - self.n_special, 0, TruncationDirection::Right);
            // The cut-off tail is kept as "overflowing"; we do not use it, so do not post-process it.
            pieces.take_overflowing();
        }
        let full = self
            .tokenizer
            .post_process(pieces, None, true)
            .map_err(|e| anyhow!("adding special tokens: {e}"))?;
        Ok(TokenizedText { ids: full.get_ids().to_vec(), untruncated_len })
    }

    /// Token strings for ids (for debugging and error messages).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.tokenizer.id_to_token(id)
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }
}

/// `do_lower_case` from `tokenizer_config.json`; true when the file or the field is absent.
fn read_do_lower_case(path: &Path) -> Result<bool> {
    if !path.is_file() {
        return Ok(true);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {} as JSON", path.display()))?;
    match v.get("do_lower_case") {
        None | Some(serde_json::Value::Null) => Ok(true),
        Some(serde_json::Value::Bool(b)) => Ok(*b),
        Some(other) => bail!("{}: do_lower_case is {other}, expected true or false", path.display()),
    }
}

/// The BERT WordPiece pipeline as transformers' `BertTokenizerFast` builds it from a vocab file.
fn wordpiece_from_vocab(vocab: &Path, lowercase: bool) -> Result<Tokenizer> {
    let vocab_str = vocab.to_str().ok_or_else(|| anyhow!("vocab path {} is not UTF-8", vocab.display()))?;
    let model = WordPiece::from_file(vocab_str)
        .unk_token("[UNK]".into())
        .build()
        .map_err(|e| anyhow!("reading WordPiece vocabulary {}: {e}", vocab.display()))?;
    let id = |tok: &str| -> Result<u32> {
        tokenizers::Model::token_to_id(&model, tok)
            .ok_or_else(|| anyhow!("vocabulary {} has no {tok} token", vocab.display()))
    };
    let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
    id("[UNK]")?;
    let mut tokenizer = Tokenizer::new(model);
    // strip_accents None = follow lowercase, which is what BERT uncased does.
    tokenizer.with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)));
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    tokenizer.with_post_processor(Some(BertProcessing::new(("[SEP]".into(), sep), ("[CLS]".into(), cls))));
    Ok(tokenizer)
}
