//! Order files: a sequence of document ids cut into contexts, written by the
//! in-context ordering step and read by [`Plan::ordered`](crate::plan::Plan::ordered).
//!
//! ```text
//! 0   8  magic            b"TLOOMORD"
//! 8   4  version          u32 = 3 (versions 1 and 2 are read too)
//! 12  4  flags            u32: bit 0 "flow" — contexts follow each other in one token
//!                         stream cut into rows (In-Context Pretraining); otherwise each
//!                         context starts a new row and its last row is padded.
//!                         bit 1 "ids32" (version 3) — ids and context starts are u32
//! 16  8  dataset          u64  fingerprint of the dataset it orders
//! 24  8  dataset_docs     u64  documents in that dataset
//! 32  8  n                u64  document ids listed (each at most once)
//! 40  8  c                u64  contexts
//! 48  8  m                u64  bytes of metadata (versions 2 and 3)
//! 56  m, padded to 8      metadata: UTF-8 JSON (how the order was made, its report)
//! ..  w·n, padded to 8    document ids, w = 4 with ids32, else 8
//! ..  w·(c+1), padded     context starts into the ids: 0, non-decreasing, last = n
//! end-8  8                xxh3-64 of every byte before it
//! ```
//!
//! A file is read in place: [`Order::read`] maps it, checks it (checksum,
//! ranges, no repeats) and serves the ids from the map, so a loader over an
//! order of a billion documents holds none of them in its own memory.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_64;

use crate::error::{Error, Result};
use crate::io::{u32_le, u64_le as u64_at, write_atomic, MappedFile};
use crate::shard::Dataset;

const MAGIC: &[u8; 8] = b"TLOOMORD";
const VERSION: u32 = 3;
const HEADER_V1: usize = 48;
const HEADER: usize = 56;
const FLOW: u32 = 1;
const IDS32: u32 = 2;
const FIX: &str = "the order file is damaged or not an order file; rebuild it with tokenloom.order";

/// The bytes of an order file: built in memory or mapped from disk.
#[derive(Clone)]
enum Bytes {
    /// 8-byte words, so that id arrays inside are aligned.
    Owned(Arc<Vec<u64>>),
    Mapped(Arc<MappedFile>),
}

impl Bytes {
    fn get(&self) -> &[u8] {
        match self {
            Bytes::Owned(w) => bytemuck::cast_slice(w.as_slice()),
            Bytes::Mapped(m) => m.bytes(),
        }
    }
}

/// Document ids (or context starts) as stored: 32 or 64 bits wide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ids<'a> {
    /// Ids of a version 3 file with the ids32 flag.
    U32(&'a [u32]),
    /// Ids of 64 bits.
    U64(&'a [u64]),
}

impl<'a> Ids<'a> {
    /// Number of ids.
    pub fn len(&self) -> usize {
        match self {
            Ids::U32(s) => s.len(),
            Ids::U64(s) => s.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The id at `i` (`None` past the end).
    pub fn get(&self, i: usize) -> Option<u64> {
        match self {
            Ids::U32(s) => s.get(i).map(|&x| x as u64),
            Ids::U64(s) => s.get(i).copied(),
        }
    }

    /// Ids `a..b` (empty when out of range).
    pub fn slice(&self, a: usize, b: usize) -> Ids<'a> {
        match *self {
            Ids::U32(s) => Ids::U32(s.get(a..b).unwrap_or(&[])),
            Ids::U64(s) => Ids::U64(s.get(a..b).unwrap_or(&[])),
        }
    }

    /// The ids in order.
    pub fn iter(&self) -> IdsIter<'a> {
        match *self {
            Ids::U32(s) => IdsIter::U32(s.iter()),
            Ids::U64(s) => IdsIter::U64(s.iter()),
        }
    }

    /// A copy of the ids, 64 bits wide.
    pub fn to_vec(&self) -> Vec<u64> {
        self.iter().collect()
    }
}

/// Iterator over [`Ids`].
#[derive(Clone, Debug)]
pub enum IdsIter<'a> {
    /// Over 32-bit ids.
    U32(std::slice::Iter<'a, u32>),
    /// Over 64-bit ids.
    U64(std::slice::Iter<'a, u64>),
}

impl Iterator for IdsIter<'_> {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        match self {
            IdsIter::U32(s) => s.next().map(|&x| x as u64),
            IdsIter::U64(s) => s.next().copied(),
        }
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            IdsIter::U32(s) => s.size_hint(),
            IdsIter::U64(s) => s.size_hint(),
        }
    }
}

impl ExactSizeIterator for IdsIter<'_> {}

/// Documents in training order, cut into contexts.
#[derive(Clone)]
pub struct Order {
    bytes: Bytes,
    version: u32,
    dataset: u64,
    dataset_docs: u64,
    n: usize,
    c: usize,
    flow: bool,
    wide: bool,
    meta: (usize, usize),
    ids_at: usize,
    starts_at: usize,
    checksum: u64,
}

impl PartialEq for Order {
    fn eq(&self, other: &Self) -> bool {
        self.bytes.get() == other.bytes.get()
    }
}

impl Eq for Order {}

impl fmt::Debug for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Order")
            .field("version", &self.version)
            .field("dataset", &format_args!("{:016x}", self.dataset))
            .field("dataset_docs", &self.dataset_docs)
            .field("docs", &self.n)
            .field("contexts", &self.c)
            .field("flow", &self.flow)
            .field("ids32", &!self.wide)
            .finish()
    }
}

/// Width in bytes of `count` ids of `width` bytes, padded to 8.
fn padded(count: u64, width: u64) -> Option<u64> {
    count.checked_mul(width)?.checked_next_multiple_of(8)
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
        Self::encode(ds, Ids::U64(&docs), Ids::U64(&context_starts), flow, &meta)
    }

    /// Like [`with_meta`](Self::with_meta) from 32-bit document ids (what
    /// ordering produces), without widening them first.
    pub fn from_u32(
        ds: &Dataset,
        docs: &[u32],
        context_starts: &[u64],
        flow: bool,
        meta: &str,
    ) -> Result<Self> {
        Self::encode(ds, Ids::U32(docs), Ids::U64(context_starts), flow, meta)
    }

    /// The file bytes of an order (version 3: 32-bit ids whenever the
    /// dataset's document count allows), checked.
    fn encode(
        ds: &Dataset,
        docs: Ids<'_>,
        starts: Ids<'_>,
        flow: bool,
        meta: &str,
    ) -> Result<Self> {
        let dataset_docs = ds.num_docs();
        let narrow = dataset_docs <= u32::MAX as u64;
        let (n, c) = (docs.len() as u64, starts.len().saturating_sub(1) as u64);
        let width = if narrow { 4 } else { 8 };
        let meta_len = meta.len() as u64;
        let total = [
            Some(HEADER as u64),
            meta_len.checked_next_multiple_of(8),
            padded(n, width),
            padded(c + 1, width),
            Some(8),
        ]
        .into_iter()
        .try_fold(0u64, |a, x| a.checked_add(x?))
        .ok_or_else(|| Error::invalid("order", "too large"))?;
        let mut out: Vec<u8> = Vec::with_capacity(total as usize);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        let flags = if flow { FLOW } else { 0 } | if narrow { IDS32 } else { 0 };
        out.extend_from_slice(&flags.to_le_bytes());
        for v in [ds.fingerprint(), dataset_docs, n, c, meta_len] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(meta.as_bytes());
        out.resize(out.len().next_multiple_of(8), 0);
        let bad = |what: String| Error::invalid("order", what);
        for ids in [docs, starts] {
            for x in ids.iter() {
                if narrow {
                    // Ids are checked below; a start past n fails there too.
                    let x = u32::try_from(x).map_err(|_| {
                        bad(format!(
                            "{x} does not index the {dataset_docs} documents of the dataset"
                        ))
                    })?;
                    out.extend_from_slice(&x.to_le_bytes());
                } else {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
            out.resize(out.len().next_multiple_of(8), 0);
        }
        let sum = xxh3_64(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        let o = Self::parse(words(&out), Path::new("order"))?;
        o.validate(|what| Error::invalid("order", what))?;
        Ok(o)
    }

    fn validate(&self, err: impl Fn(String) -> Error) -> Result<()> {
        let docs = self.docs();
        if let Some((i, d)) = docs
            .iter()
            .enumerate()
            .find(|&(_, d)| d >= self.dataset_docs)
        {
            return Err(err(format!(
                "entry {i} is document {d}, but the dataset has {} documents",
                self.dataset_docs
            )));
        }
        if let Some((d, i)) = first_repeat(docs, self.dataset_docs) {
            return Err(err(format!("document {d} is listed twice (entry {i})")));
        }
        let s = self.context_starts();
        let n = self.n as u64;
        let mut prev = 0u64;
        let monotone = s.iter().all(|x| {
            let ok = x >= prev;
            prev = x;
            ok
        });
        if s.get(0) != Some(0) || s.get(s.len().wrapping_sub(1)) != Some(n) || !monotone {
            return Err(err(format!(
                "context starts must begin at 0, never decrease and end at {n} (the number of ids)"
            )));
        }
        Ok(())
    }

    /// The format version of the file (3 for orders written by this build).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Number of contexts.
    pub fn num_contexts(&self) -> usize {
        self.c
    }

    /// Document ids of context `k` (empty past the last context).
    pub fn context(&self, k: usize) -> Ids<'_> {
        let s = self.context_starts();
        match (s.get(k), s.get(k + 1)) {
            (Some(a), Some(b)) => self.docs().slice(a as usize, b as usize),
            _ => self.docs().slice(0, 0),
        }
    }

    /// Reads `count` ids of this file's width at byte `at`.
    fn ids(&self, at: usize, count: usize) -> Ids<'_> {
        let b = self.bytes.get();
        // The parser checked that the ids lie inside the file, 8-byte aligned.
        if self.wide {
            Ids::U64(
                b.get(at..at + 8 * count)
                    .and_then(|x| bytemuck::try_cast_slice(x).ok())
                    .unwrap_or(&[]),
            )
        } else {
            Ids::U32(
                b.get(at..at + 4 * count)
                    .and_then(|x| bytemuck::try_cast_slice(x).ok())
                    .unwrap_or(&[]),
            )
        }
    }

    /// All document ids in order.
    pub fn docs(&self) -> Ids<'_> {
        self.ids(self.ids_at, self.n)
    }

    /// Context starts (`num_contexts() + 1` entries).
    pub fn context_starts(&self) -> Ids<'_> {
        self.ids(self.starts_at, self.c + 1)
    }

    /// Whether contexts flow into each other (one stream of rows).
    pub fn flow(&self) -> bool {
        self.flow
    }

    /// The JSON metadata (empty for orders written without it).
    pub fn meta(&self) -> &str {
        let (a, b) = self.meta;
        std::str::from_utf8(self.bytes.get().get(a..b).unwrap_or(&[])).unwrap_or("")
    }

    /// The training length (`seq_len`) the order was made for, when its
    /// metadata records one (orders made by the ordering step do; orders
    /// from `write_order` do not).
    pub fn seq_len(&self) -> Option<u64> {
        let meta: serde_json::Value = serde_json::from_str(self.meta()).ok()?;
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

    /// The bytes of the order file (body and checksum).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.bytes.get().to_vec()
    }

    /// Writes the order file atomically, under the file's lock (another
    /// writer of the same order file fails with [`Error::Locked`]).
    pub fn write(&self, path: &Path) -> Result<()> {
        // The directory is made as needed (`<dataset>/orders/` before the first order).
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let _lock = crate::shard::TargetLock::file(path, "order")?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!(".tmp.{name}.{}", std::process::id()));
        write_atomic(&tmp, path, self.bytes.get()).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }

    /// Maps and checks an order file; the ids are read from the map.
    pub fn read(path: &Path) -> Result<Self> {
        let map = MappedFile::open(path)?;
        let o = Self::parse(Bytes::Mapped(Arc::new(map)), path)?;
        o.validate(|what| Error::corrupt(path, o.ids_at as u64, what, FIX))?;
        Ok(o)
    }

    /// Parses and checks the bytes of an order file; `path` names it in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        if bytes.len() % 8 != 0 {
            return Err(Error::corrupt(
                path,
                bytes.len() as u64,
                format!(
                    "{} bytes is not a whole number of 8-byte words",
                    bytes.len()
                ),
                FIX,
            ));
        }
        let o = Self::parse(words(bytes), path)?;
        o.validate(|what| Error::corrupt(path, o.ids_at as u64, what, FIX))?;
        Ok(o)
    }

    /// Checks the header, the size and the checksum of `data`.
    fn parse(data: Bytes, path: &Path) -> Result<Self> {
        let corrupt = |at: u64, what: String| Error::corrupt(path, at, what, FIX);
        let bytes = data.get();
        if bytes.len() < HEADER_V1 + 16 || &bytes[..8] != MAGIC {
            return Err(corrupt(
                0,
                "no order-file magic (TLOOMORD) or too short".into(),
            ));
        }
        if bytes.len() % 8 != 0 {
            return Err(corrupt(
                bytes.len() as u64,
                "the size is not a whole number of 8-byte words".into(),
            ));
        }
        let version = u32_le(bytes, 8);
        if !(1..=VERSION).contains(&version) {
            return Err(Error::version(path, 8, version as u64, VERSION as u64));
        }
        let body = bytes.len() - 8;
        let stored = u64_at(bytes, body);
        let checksum = xxh3_64(&bytes[..body]);
        if checksum != stored {
            return Err(corrupt(body as u64, "checksum mismatch".into()));
        }
        let flags = u32_le(bytes, 12);
        let known = match version {
            1 => 0,
            2 => FLOW,
            _ => FLOW | IDS32,
        };
        if flags & !known != 0 {
            return Err(corrupt(12, format!("unknown flags {flags:#x}")));
        }
        let wide = flags & IDS32 == 0;
        let width = if wide { 8 } else { 4 };
        let (n, c) = (u64_at(bytes, 32), u64_at(bytes, 40));
        let (m, meta_at) = if version == 1 {
            (0, HEADER_V1 as u64)
        } else if body >= HEADER {
            (u64_at(bytes, 48), HEADER as u64)
        } else {
            return Err(corrupt(48, "file too short for its header".into()));
        };
        let ids_at = m
            .checked_next_multiple_of(8)
            .and_then(|x| x.checked_add(meta_at));
        let starts_at = ids_at.and_then(|a| a.checked_add(padded(n, width)?));
        let want = c
            .checked_add(1)
            .and_then(|c1| starts_at?.checked_add(padded(c1, width)?));
        let (Some(ids_at), Some(starts_at)) = (ids_at, starts_at) else {
            return Err(corrupt(48, "sizes in the header overflow".into()));
        };
        if want != Some(body as u64) {
            return Err(corrupt(
                32,
                format!(
                    "{n} ids, {c} contexts and {m} bytes of metadata do not match the file size"
                ),
            ));
        }
        let meta = (meta_at as usize, (meta_at + m) as usize);
        if version > 1 {
            if let Err(e) = std::str::from_utf8(&bytes[meta.0..meta.1]) {
                return Err(corrupt(
                    meta_at + e.valid_up_to() as u64,
                    "metadata is not UTF-8".into(),
                ));
            }
        }
        Ok(Order {
            version,
            dataset: u64_at(bytes, 16),
            dataset_docs: u64_at(bytes, 24),
            n: n as usize,
            c: c as usize,
            flow: flags & FLOW != 0,
            wide,
            meta: if version > 1 { meta } else { (0, 0) },
            ids_at: ids_at as usize,
            starts_at: starts_at as usize,
            checksum,
            bytes: data,
        })
    }
}

/// `bytes` (a multiple of 8 long) copied into aligned words.
fn words(bytes: &[u8]) -> Bytes {
    let len = bytes.len() / 8 * 8;
    let mut w = vec![0u64; len / 8];
    bytemuck::cast_slice_mut::<u64, u8>(&mut w).copy_from_slice(&bytes[..len]);
    Bytes::Owned(Arc::new(w))
}

/// The first entry that repeats an earlier one, as (document, entry), for
/// ids all below `universe`: a bitset over the ids when it is small next to
/// the list (it is for any real dataset), else a sort, so that a damaged
/// document count cannot make this allocate more than the list itself.
fn first_repeat(docs: Ids<'_>, universe: u64) -> Option<(u64, usize)> {
    let words = universe.div_ceil(64);
    if words <= (docs.len() as u64).saturating_mul(2).max(1 << 16) {
        let mut seen = vec![0u64; words as usize];
        for (i, d) in docs.iter().enumerate() {
            let (w, bit) = ((d / 64) as usize, 1u64 << (d % 64));
            if seen[w] & bit != 0 {
                return Some((d, i));
            }
            seen[w] |= bit;
        }
        return None;
    }
    let mut pairs: Vec<(u64, usize)> = docs.iter().zip(0..).collect();
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
            prop_assert_eq!(first_repeat(Ids::U64(&docs), 40), naive(&docs)); // bitset
            prop_assert_eq!(first_repeat(Ids::U64(&docs), u64::MAX / 2), naive(&docs)); // sort
        }
    }

    /// A dataset of `docs` documents of two tokens each.
    fn dataset(dir: &Path, docs: usize) -> Dataset {
        let mut w = crate::shard::DatasetWriter::create(dir.join("d"), Default::default()).unwrap();
        for i in 0..docs {
            w.add(&[1u16 + i as u16, 2]).unwrap();
        }
        w.close().unwrap();
        Dataset::open(dir.join("d")).unwrap()
    }

    #[test]
    fn a_huge_document_count_is_no_allocation() {
        let dir = tempfile::tempdir().unwrap();
        let ds = dataset(dir.path(), 1);
        let mut bytes = Order::new(&ds, vec![0], vec![0, 1]).unwrap().to_bytes();
        bytes[24..32].copy_from_slice(&(1u64 << 60).to_le_bytes()); // dataset_docs
        let body = bytes.len() - 8;
        let sum = xxh3_64(&bytes[..body]);
        bytes[body..].copy_from_slice(&sum.to_le_bytes());
        let o = Order::from_bytes(&bytes, Path::new("x.order")).unwrap();
        assert!(o.check_dataset(&ds).is_err()); // made for another dataset
        bytes[12] = 5; // a flag no version knows
        assert!(Order::from_bytes(&bytes, Path::new("x.order")).is_err());
    }

    /// A version 2 file written field by field as the old writer did.
    fn version2(ds: &Dataset, docs: &[u64], starts: &[u64], meta: &str) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&2u32.to_le_bytes());
        out.extend_from_slice(&FLOW.to_le_bytes());
        for v in [
            ds.fingerprint(),
            ds.num_docs(),
            docs.len() as u64,
            starts.len() as u64 - 1,
            meta.len() as u64,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(meta.as_bytes());
        out.resize(out.len().next_multiple_of(8), 0);
        for v in docs.iter().chain(starts) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let sum = xxh3_64(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    #[test]
    fn version_3_holds_32_bit_ids_and_older_files_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let ds = dataset(dir.path(), 7);
        let docs = vec![6u64, 2, 0, 5, 1];
        let starts = vec![0u64, 2, 2, 5];
        let o =
            Order::with_meta(&ds, docs.clone(), starts.clone(), true, "{\"a\":1}".into()).unwrap();
        // Header, 7 bytes of metadata padded to 8, 5 ids of 4 bytes padded to 24, 4 starts of
        // 4 bytes, the checksum.
        assert_eq!(o.to_bytes().len(), 56 + 8 + 24 + 16 + 8);
        assert_eq!(o.version(), 3);
        assert!(matches!(o.docs(), Ids::U32(_)));
        let path = dir.path().join("x.order");
        o.write(&path).unwrap();
        let back = Order::read(&path).unwrap();
        assert_eq!(back, o);
        assert_eq!(back.docs().to_vec(), docs);
        assert_eq!(back.context(2).to_vec(), vec![0, 5, 1]);
        assert_eq!((back.meta(), back.flow()), ("{\"a\":1}", true));
        let same = Order::from_u32(&ds, &[6, 2, 0, 5, 1], &starts, true, "{\"a\":1}").unwrap();
        assert_eq!(same, o);

        let old = version2(&ds, &docs, &starts, "{\"a\":1}");
        std::fs::write(&path, &old).unwrap();
        let back = Order::read(&path).unwrap();
        assert_eq!((back.version(), back.docs().to_vec()), (2, docs.clone()));
        assert_eq!(back.context(2).to_vec(), vec![0, 5, 1]);
        assert_eq!((back.meta(), back.flow()), ("{\"a\":1}", true));
        assert_eq!(back.to_bytes(), old);
        assert!(matches!(back.docs(), Ids::U64(_)));
    }

    proptest! {
        /// Whatever the ids, a written order reads back the same, and a flipped byte anywhere
        /// is refused.
        #[test]
        fn orders_round_trip_and_damage_is_caught(
            perm in Just((0u64..12).collect::<Vec<_>>()).prop_shuffle(),
            take in 0usize..12,
            cut in 0usize..12,
            flip in any::<prop::sample::Index>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let ds = dataset(dir.path(), 12);
            let docs = perm[..take].to_vec();
            let starts = vec![0, cut.min(take) as u64, take as u64];
            let o = Order::new(&ds, docs.clone(), starts.clone()).unwrap();
            let path = dir.path().join("o.order");
            o.write(&path).unwrap();
            let back = Order::read(&path).unwrap();
            prop_assert_eq!(back.docs().to_vec(), docs);
            prop_assert_eq!(back.context_starts().to_vec(), starts);
            let mut bytes = o.to_bytes();
            let at = flip.index(bytes.len());
            bytes[at] ^= 0x10;
            prop_assert!(Order::from_bytes(&bytes, &path).is_err());
        }
    }

    #[test]
    fn seq_len_comes_from_the_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let ds = dataset(dir.path(), 1);
        let with = |meta: &str| Order::with_meta(&ds, vec![0], vec![0, 1], true, meta.into());
        assert_eq!(with(r#"{"seq_len": 128}"#).unwrap().seq_len(), Some(128));
        assert_eq!(with(r#"{"k": 3}"#).unwrap().seq_len(), None);
        assert_eq!(
            Order::new(&ds, vec![0], vec![0, 1]).unwrap().seq_len(),
            None
        );
    }
}
