//! What `tokenloom inspect` prints: sizes and the document-length distribution.

use std::fmt;
use std::path::PathBuf;

use super::dtype::DType;
use super::reader::Dataset;
use crate::error::Result;

/// A dataset's vital statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetSummary {
    /// Dataset path.
    pub path: PathBuf,
    /// Token dtype.
    pub dtype: DType,
    /// Documents.
    pub num_docs: u64,
    /// Tokens.
    pub num_tokens: u64,
    /// Shards.
    pub num_shards: usize,
    /// Bytes of token data.
    pub token_bytes: u64,
    /// End-of-document id.
    pub eos_id: Option<u64>,
    /// Vocabulary size.
    pub vocab_size: Option<u64>,
    /// Tokenizer fingerprint.
    pub tokenizer: Option<String>,
    /// Document-length quantiles `(q, length)` for q in 0, .1, .5, .9, .99, 1.
    pub doc_len_quantiles: Vec<(f64, u64)>,
    /// Mean document length.
    pub doc_len_mean: f64,
}

/// Quantile levels reported by [`DatasetSummary`].
pub const QUANTILES: [f64; 6] = [0.0, 0.1, 0.5, 0.9, 0.99, 1.0];

impl DatasetSummary {
    /// Computes the summary: O(documents) for the length distribution.
    pub fn of(ds: &Dataset) -> Result<Self> {
        let mut lens = ds.doc_lengths()?;
        lens.sort_unstable();
        let doc_len_quantiles = QUANTILES
            .iter()
            .filter(|_| !lens.is_empty())
            .map(|&q| (q, lens[((lens.len() - 1) as f64 * q).round() as usize]))
            .collect();
        let m = ds.manifest();
        Ok(DatasetSummary {
            path: ds.root().to_path_buf(),
            dtype: m.dtype,
            num_docs: m.num_docs,
            num_tokens: m.num_tokens,
            num_shards: m.shards.len(),
            token_bytes: m.num_tokens * m.dtype.itemsize() as u64,
            eos_id: m.eos_id,
            vocab_size: m.vocab_size,
            tokenizer: m.tokenizer.clone(),
            doc_len_quantiles,
            doc_len_mean: if lens.is_empty() {
                0.0
            } else {
                m.num_tokens as f64 / lens.len() as f64
            },
        })
    }
}

fn opt<T: fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "unknown".to_string(), |v| v.to_string())
}

impl fmt::Display for DatasetSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "dataset     {}", self.path.display())?;
        writeln!(f, "documents   {}", self.num_docs)?;
        writeln!(f, "tokens      {}", self.num_tokens)?;
        writeln!(f, "shards      {}", self.num_shards)?;
        writeln!(
            f,
            "dtype       {} ({:.1} MiB of tokens)",
            self.dtype,
            self.token_bytes as f64 / (1u64 << 20) as f64
        )?;
        writeln!(f, "eos_id      {}", opt(&self.eos_id))?;
        writeln!(f, "vocab_size  {}", opt(&self.vocab_size))?;
        writeln!(f, "tokenizer   {}", opt(&self.tokenizer))?;
        write!(f, "doc length  mean {:.1}", self.doc_len_mean)?;
        for (q, v) in &self.doc_len_quantiles {
            let name = if *q <= 0.0 {
                "min".to_string()
            } else if *q >= 1.0 {
                "max".to_string()
            } else {
                format!("p{}", (q * 100.0).round())
            };
            write!(f, "  {name} {v}")?;
        }
        writeln!(f)
    }
}
