//! Full verification of a dataset: every checksum, every offset, the
//! provenance sidecars when there are any and, optionally, every token
//! against the vocabulary.

use std::path::Path;
use std::sync::Arc;

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use super::blocks::{self, BlockHasher};
use super::dtype::TokenBuf;
use super::index::{IndexView, Layout};
use super::manifest::ShardEntry;
use super::reader::Acquired;
use super::reader::Dataset;
use super::source::verify_sidecars;
use crate::error::{Error, Result};
use crate::hash::hex;
use crate::progress::Progress;

/// What to check beyond checksums and offsets.
#[derive(Clone, Copy, Debug, Default)]
pub struct VerifyOptions {
    /// Also check that every token is below the manifest's `vocab_size`.
    pub check_vocab: bool,
}

/// What a successful verification covered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Shards checked.
    pub shards: usize,
    /// Documents checked.
    pub docs: u64,
    /// Tokens checked.
    pub tokens: u64,
    /// Token bytes hashed.
    pub bytes: u64,
    /// Provenance sidecars checked (0 when the dataset records no sources).
    pub sources: usize,
}

/// Bytes read, hashed and checked at a time: small enough to stay in the
/// core's cache between the read and the hash.
const CHUNK: usize = 256 << 10;
const RESTORE: &str = "restore this shard from a good copy or rebuild the dataset";

/// Opens `root` and checks it completely; returns the first problem found.
pub fn verify(root: &Path, opts: VerifyOptions, progress: &dyn Progress) -> Result<VerifyReport> {
    let ds = Dataset::open(root)?;
    verify_dataset(&ds, opts, progress)
}

/// Checks an opened dataset completely.
pub fn verify_dataset(
    ds: &Dataset,
    opts: VerifyOptions,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let vocab = if opts.check_vocab {
        Some(ds.manifest().vocab_size.ok_or_else(|| {
            Error::invalid(
                "check_vocab",
                "the manifest records no vocab_size to check tokens against",
            )
        })?)
    } else {
        None
    };
    let size = ds.dtype().itemsize() as u64;
    let total_bytes: u64 = ds.shards().iter().map(|s| s.num_tokens() * size).sum();
    progress.start("verify", total_bytes);
    let mut first_doc = 0u64;
    let mut buf = TokenBuf::default();
    for (s, entry) in ds.manifest().shards.iter().enumerate() {
        // A remote dataset's shards are fetched (and checked on arrival) one at a time.
        let acquired = match ds.provider() {
            Some(p) => Some(Acquired::new(Arc::clone(p), vec![s])?),
            None => None,
        };
        let shard = &acquired.as_ref().map_or(ds, |a| a.view()).shards()[s];
        shard.check_unchanged()?;
        // Everything is read with positioned reads into memory, never from
        // the maps: a file truncated by another program while it is being
        // verified is an error naming it, not a fault (SIGBUS).
        let index_bytes = shard.index_copy()?;
        let index = IndexView::from_parsed(&index_bytes, shard.index().header, shard.layout());
        index.check_all(&shard.idx_path)?;
        if !entry.idx_xxh3.is_empty() {
            let sum = hex(xxh3_64(&index_bytes));
            if sum != entry.idx_xxh3 {
                return Err(Error::corrupt(
                    &shard.idx_path,
                    0,
                    format!(
                        "index checksum {sum} differs from the manifest's {}",
                        entry.idx_xxh3
                    ),
                    RESTORE,
                ));
            }
        }
        let mut hasher = Xxh3::new();
        let recorded_blocks = block_sums(entry, shard.token_bytes().len() as u64, ds)?;
        let mut block_hasher = recorded_blocks.as_ref().map(|(b, _)| BlockHasher::new(*b));
        let mut blocks_checked = 0;
        let mut check_blocks = |sums: &[u64]| -> Result<()> {
            let Some((block, recorded)) = &recorded_blocks else {
                return Ok(());
            };
            while blocks_checked < sums.len() {
                let k = blocks_checked;
                if sums[k] != recorded[k] {
                    let from = k as u64 * block;
                    let to = (from + block).min(shard.num_tokens() * size);
                    let docs = (
                        first_doc + doc_of(&index, shard.num_docs(), from / size),
                        first_doc + doc_of(&index, shard.num_docs(), (to - 1) / size),
                    );
                    return Err(Error::corrupt(
                        &shard.bin_path,
                        index.header.bin_offset + from,
                        format!(
                            "block {k} (token bytes {from}..{to}, documents {}..={}) has checksum {}, the manifest records {}: it is the first damaged block",
                            docs.0,
                            docs.1,
                            hex(sums[k]),
                            hex(recorded[k])
                        ),
                        RESTORE,
                    ));
                }
                blocks_checked += 1;
            }
            Ok(())
        };
        let n = shard.num_tokens();
        let step = CHUNK as u64 / size;
        let mut start = 0u64;
        while start < n {
            let end = (start + step).min(n);
            progress.check()?;
            let tokens = shard.read_tokens(start, end, &mut buf)?;
            hasher.update(tokens.as_bytes());
            if let Some(b) = block_hasher.as_mut() {
                b.update(tokens.as_bytes());
                check_blocks(b.completed())?;
            }
            if let Some(limit) = vocab {
                if let Some((pos, value)) = tokens.first_at_or_above(limit) {
                    let token = start + pos as u64;
                    let doc = first_doc + doc_of(&index, shard.num_docs(), token);
                    return Err(Error::corrupt(
                        &shard.bin_path,
                        index.header.bin_offset + token * size,
                        format!("token {value} (document {doc}) is not below vocab_size {limit}"),
                        "the data was written with another tokenizer or is damaged; rebuild the dataset",
                    ));
                }
            }
            progress.advance((end - start) * size);
            start = end;
        }
        if let Some(b) = block_hasher {
            check_blocks(&b.finish())?;
        }
        let sum = hasher.digest();
        // Foreign formats record no checksum of their tokens.
        let recorded = shard.layout() == Layout::Native;
        if recorded && sum != index.header.bin_xxh3
            || (!entry.bin_xxh3.is_empty() && hex(sum) != entry.bin_xxh3)
        {
            return Err(Error::corrupt(
                &shard.bin_path,
                index.header.bin_offset,
                format!(
                    "token data checksum {} differs from the recorded {}{}",
                    hex(sum),
                    hex(index.header.bin_xxh3),
                    if recorded_blocks.is_none() {
                        " (the manifest records no block checksums, so the damage cannot be located; datasets written by this version record them)"
                    } else {
                        ""
                    }
                ),
                RESTORE,
            ));
        }
        first_doc += shard.num_docs();
    }
    let sources = verify_sidecars(ds, progress)?;
    progress.finish();
    Ok(VerifyReport {
        shards: ds.shards().len(),
        docs: ds.num_docs(),
        tokens: ds.num_tokens(),
        bytes: total_bytes,
        sources,
    })
}

/// The block size and block checksums the manifest records for a shard of
/// `bytes` token bytes, checked for form and count; `None` when it records none.
fn block_sums(entry: &ShardEntry, bytes: u64, ds: &Dataset) -> Result<Option<(u64, Vec<u64>)>> {
    let Some(block) = entry.block_bytes else {
        return Ok(None);
    };
    let manifest = ds.root().join(super::manifest::FILE_NAME);
    match blocks::decode(&entry.block_xxh3) {
        Some(sums) if block > 0 && sums.len() as u64 == blocks::count(bytes, block) => {
            Ok(Some((block, sums)))
        }
        _ => Err(Error::corrupt(
            &manifest,
            0,
            format!(
                "the block checksums of shard {} are not {} checksums of {block}-byte blocks",
                entry.bin,
                blocks::count(bytes, block.max(1))
            ),
            "the manifest is damaged; restore the dataset from a good copy or rebuild it",
        )),
    }
}

/// Local document holding local token `token` (offsets are monotonic here).
fn doc_of(index: &IndexView<'_>, num_docs: u64, token: u64) -> u64 {
    let (mut lo, mut hi) = (0u64, num_docs);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if index.offset(mid as usize + 1) <= token {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::blocks::BLOCK_BYTES;
    use crate::shard::{DatasetWriter, WriterOptions};

    fn flip(path: &Path, at: u64) {
        let mut bytes = std::fs::read(path).unwrap();
        bytes[at as usize] ^= 0x5a;
        std::fs::write(path, bytes).unwrap();
    }

    /// Damage anywhere in a shard of several blocks is reported at the start
    /// of its block (computed here from the flipped byte, not by the code),
    /// with the documents the block holds; the first of two damaged blocks wins.
    #[test]
    fn verify_reports_the_first_damaged_block() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ds");
        let mut w = DatasetWriter::create(&root, WriterOptions::default()).unwrap();
        // 2.5 blocks of u16 tokens, in documents of 1,000 tokens.
        let tokens = (BLOCK_BYTES * 5 / 4) as usize;
        let doc: Vec<u16> = (0..1000u16).collect();
        for _ in 0..tokens / 1000 {
            w.add(&doc).unwrap();
        }
        w.close().unwrap();
        let bin = root.join(&Dataset::open(&root).unwrap().manifest().shards[0].bin);
        let size = std::fs::metadata(&bin).unwrap().len();
        let opts = VerifyOptions::default();
        verify(&root, opts, &crate::NoProgress).unwrap();
        for at in [7, BLOCK_BYTES + 4321, size - 1] {
            flip(&bin, at);
            flip(&bin, size - 2); // a second damaged byte, in the last block
            match verify(&root, opts, &crate::NoProgress) {
                Err(Error::Corrupt {
                    path, offset, what, ..
                }) => {
                    let block = at / BLOCK_BYTES;
                    assert_eq!(path, bin);
                    assert_eq!(offset, block * BLOCK_BYTES, "{what}");
                    let first = block * BLOCK_BYTES / 2000;
                    let last = ((block + 1) * BLOCK_BYTES).min(size).div_ceil(2000) - 1;
                    assert!(what.contains(&format!("block {block} ")), "{what}");
                    assert!(
                        what.contains(&format!("documents {first}..={last}")),
                        "{what}"
                    );
                }
                other => panic!("expected a damaged block, got {other:?}"),
            }
            flip(&bin, at);
            flip(&bin, size - 2);
        }
        verify(&root, opts, &crate::NoProgress).unwrap();
    }
}
