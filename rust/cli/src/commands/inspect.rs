//! `tokenloom inspect PATH [--json]`: a dataset's vital statistics.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use serde_json::{json, Map, Value};
use tokenloom_core::DatasetSummary;

use super::Failure;

/// Arguments of `tokenloom inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A dataset directory (holding manifest.json), a raw token file indexed by `tokenloom index`,
    /// a Megatron .bin/.idx (or their path prefix), a datatrove .ds (or a folder of them), or a
    /// dataset URL (s3://, gs://, az://, http(s)://, file://; credentials from the store's usual
    /// environment variables, cache in TOKENLOOM_CACHE_DIR).
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Opens the dataset and prints its summary.
pub fn run(args: &InspectArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let ds = super::open(&args.path)?;
    let mut summary = DatasetSummary::of(&ds)?;
    // Name what the user passed (for an indexed raw file, the file itself).
    summary.path = args.path.clone();
    if args.json {
        let text = serde_json::to_string_pretty(&to_json(&summary))
            .map_err(|e| Failure::Output(e.into()))?;
        writeln!(out, "{text}")?;
    } else {
        write!(out, "{summary}")?;
    }
    Ok(())
}

/// Quantile name as in the text form: `min`, `p10`, `p50`, `p90`, `p99`, `max`.
fn quantile_name(q: f64) -> String {
    if q == 0.0 {
        "min".to_string()
    } else if q == 1.0 {
        "max".to_string()
    } else {
        format!("p{}", (q * 100.0).round())
    }
}

/// The summary as a JSON object; absent metadata is `null`.
pub fn to_json(s: &DatasetSummary) -> Value {
    let mut doc_len = Map::new();
    doc_len.insert("mean".into(), json!(s.doc_len_mean));
    for (q, v) in &s.doc_len_quantiles {
        doc_len.insert(quantile_name(*q), json!(v));
    }
    json!({
        "path": s.path.to_string_lossy(),
        "dtype": s.dtype.name(),
        "num_docs": s.num_docs,
        "num_tokens": s.num_tokens,
        "num_shards": s.num_shards,
        "token_bytes": s.token_bytes,
        "eos_id": s.eos_id,
        "vocab_size": s.vocab_size,
        "tokenizer": s.tokenizer,
        "doc_len": Value::Object(doc_len),
    })
}
