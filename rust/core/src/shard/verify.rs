//! Full verification of a dataset: every checksum, every offset, the
//! provenance sidecars when there are any and, optionally, every token
//! against the vocabulary.

use std::path::Path;
use std::sync::Arc;

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use super::dtype::TokenBuf;
use super::index::{IndexView, Layout};
use super::manifest::hex;
use super::provider::Acquired;
use super::reader::Dataset;
use super::source::verify_sidecars;
use crate::error::{Error, Result};
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
        let n = shard.num_tokens();
        let step = CHUNK as u64 / size;
        let mut start = 0u64;
        while start < n {
            let end = (start + step).min(n);
            progress.check()?;
            let tokens = shard.read_tokens(start, end, &mut buf)?;
            hasher.update(tokens.as_bytes());
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
                    "token data checksum {} differs from the recorded {}",
                    hex(sum),
                    hex(index.header.bin_xxh3)
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
