//! Order files: a sequence of document ids cut into contexts, written by the
//! in-context ordering step and read by [`Plan::ordered`](super::Plan::ordered).
//!
//! ```text
//! 0   8  magic            b"TLOOMORD"
//! 8   4  version          u32 = 2 (version 1 files, without flags and metadata, are read too)
//! 12  4  flags            u32: bit 0 "flow" — contexts follow each other in one token
//!                         stream cut into rows (In-Context Pretraining); otherwise each
//!                         context starts a new row and its last row is padded
//! 16  8  dataset          u64  fingerprint of the dataset it orders
//! 24  8  dataset_docs     u64  documents in that dataset
//! 32  8  n                u64  document ids listed (each at most once)
//! 40  8  c                u64  contexts
//! 48  8  m                u64  bytes of metadata (version 2 only)
//! 56  m, padded to 8      metadata: UTF-8 JSON (how the order was made, its report)
//! ..  8·n                 document ids, u64
//! ..  8·(c+1)             context starts into the ids: 0, non-decreasing, last = n
//! end-8  8                xxh3-64 of every byte before it
//! ```

use std::path::Path;

use xxhash_rust::xxh3::xxh3_64;

use crate::error::{Error, Result};
use crate::shard::fsutil::{u32_le, u64_le as u64_at, write_atomic};
use crate::shard::Dataset;

const MAGIC: &[u8; 8] = b"TLOOMORD";
const VERSION: u32 = 2;
const HEADER_V1: usize = 48;
const HEADER: usize = 56;
const FLOW: u32 = 1;
const FIX: &str = "the order file is damaged or not an order file; rebuild it with tokenloom.order";

/// Documents in training order, cut into contexts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    dataset: u64,
    dataset_docs: u64,
    docs: Vec<u64>,
    context_starts: Vec<u64>,
    flow: bool,
    meta: String,
    checksum: u64,
}

impl Order {
    /// An order over `ds`: `docs` in training order, context `k` being
    /// `docs[context_starts[k] .. context_starts[k + 1]]`.
    pub fn new(ds: &Dataset, docs: Vec<u64>, context_starts: Vec<u64>) -> Result<Self> {
        Self::with_meta(ds, docs, context_starts, false, String::new())
    }

    /// Like [`new`](Self::new), with the flow flag (contexts follow each
    /// other in one stream of rows instead of each starting a row) and JSON
    /// metadata saying how the order was made.
    pub fn with_meta(
        ds: &Dataset,
        docs: Vec<u64>,
        context_starts: Vec<u64>,
        flow: bool,
        meta: String,
    ) -> Result<Self> {
        let mut o = Order {
            dataset: ds.fingerprint(),
            dataset_docs: ds.num_docs(),
            docs,
            context_starts,
            flow,
            meta,
            checksum: 0,
        };
        o.validate(|what| Error::invalid("order", what))?;
        o.checksum = xxh3_64(&o.encode_body());
        Ok(o)
    }

    fn validate(&self, err: impl Fn(String) -> Error) -> Result<()> {
        let n = self.docs.len() as u64;
        for (i, &d) in self.docs.iter().enumerate() {
            if d >= self.dataset_docs {
                return Err(err(format!(
                    "entry {i} is document {d}, but the dataset has {} documents",
                    self.dataset_docs
                )));
            }
        }
        if let Some((d, i)) = first_repeat(&self.docs, self.dataset_docs) {
            return Err(err(format!("document {d} is listed twice (entry {i})")));
        }
        let s = &self.context_starts;
        if s.first() != Some(&0) || s.last() != Some(&n) || s.windows(2).any(|w| w[0] > w[1]) {
            return Err(err(format!(
                "context starts must begin at 0, never decrease and end at {n} (the number of ids)"
            )));
        }
        Ok(())
    }

    /// Number of contexts.
    pub fn num_contexts(&self) -> usize {
        self.context_starts.len() - 1
    }

    /// Document ids of context `k`.
    pub fn context(&self, k: usize) -> &[u64] {
        &self.docs[self.context_starts[k] as usize..self.context_starts[k + 1] as usize]
    }

    /// All document ids in order.
    pub fn docs(&self) -> &[u64] {
        &self.docs
    }

    /// Context starts (`num_contexts() + 1` entries).
    pub fn context_starts(&self) -> &[u64] {
        &self.context_starts
    }

    /// Whether contexts flow into each other (one stream of rows).
    pub fn flow(&self) -> bool {
        self.flow
    }

    /// The JSON metadata (empty for orders written without it).
    pub fn meta(&self) -> &str {
        &self.meta
    }

    /// The training length (`seq_len`) the order was made for, when its
    /// metadata records one (orders made by the ordering step do; orders
    /// from `write_order` do not).
    pub fn seq_len(&self) -> Option<u64> {
        let meta: serde_json::Value = serde_json::from_str(&self.meta).ok()?;
        meta.get("seq_len")?.as_u64()
    }

    /// Checksum of the file body; part of plan fingerprints.
    pub fn checksum(&self) -> u64 {
        self.checksum
    }

    /// Fails unless the order was made for `ds`.
    pub fn check_dataset(&self, ds: &Dataset) -> Result<()> {
        let known = self.dataset == ds.fingerprint() || self.dataset == ds.legacy_fingerprint();
        if !known || self.dataset_docs != ds.num_docs() {
            return Err(Error::invalid(
                "order",
                format!(
                    "the order file was made for another dataset ({} documents, fingerprint {:016x}; this one has {} documents, fingerprint {:016x}); rebuild it with tokenloom.order",
                    self.dataset_docs,
                    self.dataset,
                    ds.num_docs(),
                    ds.fingerprint()
                ),
            ));
        }
        Ok(())
    }

    fn encode_body(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(HEADER + 8 * (self.docs.len() + self.context_starts.len()));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(if self.flow { FLOW } else { 0 }).to_le_bytes());
        for v in [
            self.dataset,
            self.dataset_docs,
            self.docs.len() as u64,
            self.num_contexts() as u64,
            self.meta.len() as u64,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(self.meta.as_bytes());
        out.resize(out.len().next_multiple_of(8), 0);
        for v in self.docs.iter().chain(&self.context_starts) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// The bytes of the order file (body and checksum).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = self.encode_body();
        let sum = xxh3_64(&bytes);
        bytes.extend_from_slice(&sum.to_le_bytes());
        bytes
    }

    /// Writes the order file atomically, under the file's lock (another
    /// writer of the same order file fails with [`Error::Locked`]).
    pub fn write(&self, path: &Path) -> Result<()> {
        // The directory is made as needed (`<dataset>/orders/` before the first order).
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let _lock = crate::shard::TargetLock::file(path, "order")?;
        let bytes = self.to_bytes();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!(".tmp.{name}.{}", std::process::id()));
        write_atomic(&tmp, path, &bytes).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }

    /// Reads and checks an order file.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = crate::shard::fsutil::read_regular(path, u64::MAX)?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses and checks the bytes of an order file; `path` names it in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let corrupt = |at: u64, what: String| Error::corrupt(path, at, what, FIX);
        if bytes.len() < HEADER_V1 + 16 || &bytes[..8] != MAGIC {
            return Err(corrupt(
                0,
                "no order-file magic (TLOOMORD) or too short".into(),
            ));
        }
        let version = u32_le(bytes, 8);
        if version != VERSION && version != 1 {
            return Err(Error::version(path, 8, version as u64, VERSION as u64));
        }
        let body = bytes.len() - 8;
        let stored = u64_at(bytes, body);
        if xxh3_64(&bytes[..body]) != stored {
            return Err(corrupt(body as u64, "checksum mismatch".into()));
        }
        let flags = u32_le(bytes, 12);
        if flags & !FLOW != 0 || (version == 1 && flags != 0) {
            return Err(corrupt(12, format!("unknown flags {flags:#x}")));
        }
        let (n, c) = (u64_at(bytes, 32), u64_at(bytes, 40));
        let (m, ids_at) = if version == 1 {
            (0, HEADER_V1 as u64)
        } else if body >= HEADER {
            let m = u64_at(bytes, 48);
            let at = m
                .checked_next_multiple_of(8)
                .and_then(|x| x.checked_add(HEADER as u64));
            (m, at.unwrap_or(u64::MAX))
        } else {
            return Err(corrupt(48, "file too short for its header".into()));
        };
        let want = n
            .checked_add(c)
            .and_then(|x| x.checked_add(1))
            .and_then(|x| x.checked_mul(8))
            .and_then(|x| x.checked_add(ids_at))
            .filter(|_| ids_at != u64::MAX);
        if want != Some(body as u64) {
            return Err(corrupt(
                32,
                format!(
                    "{n} ids, {c} contexts and {m} bytes of metadata do not match the file size"
                ),
            ));
        }
        let meta = match std::str::from_utf8(&bytes[HEADER..HEADER + m as usize]) {
            Ok(t) if version > 1 => t.to_string(),
            Ok(_) => String::new(),
            Err(e) => {
                return Err(corrupt(
                    HEADER as u64 + e.valid_up_to() as u64,
                    "metadata is not UTF-8".into(),
                ))
            }
        };
        let ids_at = ids_at as usize;
        let read = |from: usize, count: u64| -> Vec<u64> {
            (0..count as usize)
                .map(|i| u64_at(bytes, from + 8 * i))
                .collect()
        };
        let docs = read(ids_at, n);
        let context_starts = read(ids_at + 8 * n as usize, c + 1);
        let o = Order {
            dataset: u64_at(bytes, 16),
            dataset_docs: u64_at(bytes, 24),
            docs,
            context_starts,
            flow: flags & FLOW != 0,
            meta,
            checksum: xxh3_64(&bytes[..body]),
        };
        o.validate(|what| corrupt(ids_at as u64, what))?;
        Ok(o)
    }
}

/// The first entry that repeats an earlier one, as (document, entry), for
/// ids all below `universe`: a bitset over the ids when it is small next to
/// the list (it is for any real dataset), else a sort, so that a damaged
/// document count cannot make this allocate more than the list itself.
fn first_repeat(docs: &[u64], universe: u64) -> Option<(u64, usize)> {
    let words = universe.div_ceil(64);
    if words <= (docs.len() as u64).saturating_mul(2).max(1 << 16) {
        let mut seen = vec![0u64; words as usize];
        for (i, &d) in docs.iter().enumerate() {
            let (w, bit) = ((d / 64) as usize, 1u64 << (d % 64));
            if seen[w] & bit != 0 {
                return Some((d, i));
            }
            seen[w] |= bit;
        }
        return None;
    }
    let mut pairs: Vec<(u64, usize)> = docs.iter().copied().zip(0..).collect();
    pairs.sort_unstable();
    pairs
        .windows(2)
        .filter(|w| w[0].0 == w[1].0)
        .map(|w| w[1])
        .min_by_key(|&(_, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(docs: &[u64]) -> Option<(u64, usize)> {
        (0..docs.len()).find_map(|i| docs[..i].contains(&docs[i]).then_some((docs[i], i)))
    }

    proptest! {
        #[test]
        fn repeats_are_found_by_bitset_and_by_sort(docs in prop::collection::vec(0u64..40, 0..30)) {
            prop_assert_eq!(first_repeat(&docs, 40), naive(&docs)); // bitset
            prop_assert_eq!(first_repeat(&docs, u64::MAX / 2), naive(&docs)); // sort
        }
    }

    /// A dataset of one document of two tokens.
    fn one_document(dir: &Path) -> Dataset {
        let mut w = crate::shard::DatasetWriter::create(dir.join("d"), Default::default()).unwrap();
        w.add(&[1u16, 2]).unwrap();
        w.close().unwrap();
        Dataset::open(dir.join("d")).unwrap()
    }

    #[test]
    fn a_huge_document_count_is_no_allocation() {
        let dir = tempfile::tempdir().unwrap();
        let ds = one_document(dir.path());
        let mut bytes = Order::new(&ds, vec![0], vec![0, 1]).unwrap().to_bytes();
        bytes[24..32].copy_from_slice(&(1u64 << 60).to_le_bytes()); // dataset_docs
        let body = bytes.len() - 8;
        let sum = xxh3_64(&bytes[..body]);
        bytes[body..].copy_from_slice(&sum.to_le_bytes());
        let o = Order::from_bytes(&bytes, Path::new("x.order")).unwrap();
        assert!(o.check_dataset(&ds).is_err()); // made for another dataset
        bytes[12] = 1; // reserved
        assert!(Order::from_bytes(&bytes, Path::new("x.order")).is_err());
    }

    #[test]
    fn seq_len_comes_from_the_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let ds = one_document(dir.path());
        let with = |meta: &str| Order::with_meta(&ds, vec![0], vec![0, 1], true, meta.into());
        assert_eq!(with(r#"{"seq_len": 128}"#).unwrap().seq_len(), Some(128));
        assert_eq!(with(r#"{"k": 3}"#).unwrap().seq_len(), None);
        assert_eq!(
            Order::new(&ds, vec![0], vec![0, 1]).unwrap().seq_len(),
            None
        );
    }
}
