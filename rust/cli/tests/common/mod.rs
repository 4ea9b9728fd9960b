//! Helpers shared by the end-to-end tests: run the CLI in-process, make files.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use tokenloom_cli::run_with;
use tokenloom_core::{CancelToken, DType, Dataset, DatasetWriter, WriterOptions};

/// What one run of the CLI returned and wrote.
pub struct Run {
    pub code: i32,
    pub out: String,
    pub err: String,
}

pub fn tokenloom_with(args: &[&str], cancel: &CancelToken) -> Run {
    let argv = std::iter::once("tokenloom").chain(args.iter().copied());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run_with(argv, &mut out, &mut err, cancel);
    Run {
        code,
        out: String::from_utf8(out).unwrap(),
        err: String::from_utf8(err).unwrap(),
    }
}

pub fn tokenloom(args: &[&str]) -> Run {
    tokenloom_with(args, &CancelToken::new())
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

pub fn write_u16(path: &Path, llmc_header: bool, tokens: &[u16]) {
    let mut bytes = Vec::new();
    if llmc_header {
        let mut h = [0i32; 256];
        h[0] = 20240520; // llm.c GPT-2 magic: u16 tokens
        h[1] = 1;
        h[2] = tokens.len() as i32;
        bytes.extend(h.iter().flat_map(|v| v.to_le_bytes()));
    }
    bytes.extend(tokens.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(path, bytes).unwrap();
}

/// Three documents of three u16 tokens, one per shard, vocab_size 100.
pub fn make_dataset(root: &Path) {
    let opts = WriterOptions {
        dtype: DType::U16,
        eos_id: Some(0),
        vocab_size: Some(100),
        tokenizer: Some("test-tok".into()),
        shard_bytes: 8,
        overwrite: false,
    };
    let mut w = DatasetWriter::create(root, opts).unwrap();
    for doc in [[1u16, 2, 0], [3, 4, 0], [5, 6, 0]] {
        w.add(&doc).unwrap();
    }
    w.close().unwrap();
}

pub fn shard_bins(root: &Path) -> Vec<PathBuf> {
    let mut bins: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    bins.sort();
    bins
}

pub fn docs(path: &Path) -> Vec<Vec<u32>> {
    let ds = Dataset::open(path).unwrap();
    (0..ds.num_docs())
        .map(|i| ds.doc(i).unwrap().to_vec())
        .collect()
}
