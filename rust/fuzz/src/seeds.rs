//! Valid inputs of every kind, made with tokenloom's own writers: the starting corpus.

use std::fs;
use std::path::Path;

use tokenloom_core::order_file::Order;
use tokenloom_core::shard::compat::megatron;
use tokenloom_core::{DType, Dataset, DatasetWriter, WriterOptions};

use crate::{input, Kind};

fn docs(n: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut x = seed | 1;
    (0..n)
        .map(|d| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (0..(x % 9) as u32)
                .map(|t| 1 + (t + d as u32) % 500)
                .collect()
        })
        .collect()
}

fn le_bytes(tokens: &[u32], dtype: DType) -> Vec<u8> {
    match dtype {
        DType::U16 => tokens
            .iter()
            .flat_map(|&t| (t as u16).to_le_bytes())
            .collect(),
        DType::U32 => tokens.iter().flat_map(|&t| t.to_le_bytes()).collect(),
    }
}

/// Seed inputs; `dir` is scratch space for the datasets they are cut from.
pub fn seeds(dir: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (k, dtype) in [DType::U16, DType::U32].into_iter().enumerate() {
        let docs = docs(6 + 3 * k, 7 + k as u64);
        let root = dir.join(format!("seed-{k}"));
        let _ = fs::remove_dir_all(&root);
        let opts = WriterOptions {
            dtype,
            eos_id: Some(0),
            vocab_size: Some(1000),
            overwrite: true,
            ..Default::default()
        };
        let Ok(mut w) = DatasetWriter::create(&root, opts) else {
            continue;
        };
        for d in &docs {
            let _ = w.add(d);
        }
        let Ok(manifest) = w.close() else { continue };
        let read = |name: &str| fs::read(root.join(name)).unwrap_or_default();
        out.push(input(Kind::Manifest, false, &[&read("manifest.json")]));
        if let Some(shard) = manifest.shards.first() {
            let (idx, bin) = (read(&shard.idx), read(&shard.bin));
            out.push(input(Kind::Index, false, &[&idx]));
            out.push(input(Kind::Index, true, &[&idx]));
            out.push(input(Kind::Pair, false, &[&idx, &bin]));
            out.push(input(Kind::Pair, true, &[&idx, &bin]));
        }
        if let Ok(ds) = Dataset::open(&root) {
            let n = ds.num_docs();
            let ids: Vec<u64> = (0..n).rev().collect();
            if let Ok(o) = Order::new(&ds, ids, vec![0, n / 2, n]) {
                out.push(input(Kind::Order, false, &[&o.to_bytes()]));
                out.push(input(Kind::Order, true, &[&o.to_bytes()]));
            }
        }
        let tokens: Vec<u32> = docs.concat();
        let bin = le_bytes(&tokens, dtype);
        let lengths: Vec<u64> = docs.iter().map(|d| d.len() as u64).collect();
        if let Ok(idx) = megatron::encode(dtype, &lengths, Path::new("seed.idx")) {
            out.push(input(Kind::Pair, false, &[&idx, &bin]));
        }
        let mut ends = Vec::new();
        let mut end = 0u64;
        for l in &lengths {
            end += l;
            ends.extend_from_slice(&end.to_le_bytes());
        }
        out.push(input(Kind::Datatrove, false, &[&ends, &bin]));
    }
    out.push(input(Kind::Metadata, false, &[b"gpt2|2\n1234\n"]));
    out.push(input(
        Kind::Metadata,
        false,
        &[b"meta-llama/Llama-3|4\n99\n"],
    ));
    out
}
