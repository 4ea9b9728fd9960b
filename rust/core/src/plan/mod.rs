//! Sample plans: which tokens form training sample *i*.
//!
//! Every sample is a row of `seq_len + 1` tokens (inputs are the first
//! `seq_len`, labels the last `seq_len`), described as [`Segment`]s: pieces
//! of documents laid end to end, followed by padding when they fall short.
//!
//! - [`PlanMode::Concat`]: GPT-style windows over the concatenated document
//!   stream, stride `seq_len`, crossing document boundaries (as Megatron's GPT
//!   dataset). Nothing is stored: sample *i* is located by binary search.
//! - [`PlanMode::Pack`]: whole documents packed into rows by best-fit
//!   decreasing; a document longer than a row is split at row size. Rows are
//!   padded; no document crosses a row unless it was split.
//! - [`PlanMode::Ordered`]: the documents of an [`Order`] file, context by
//!   context, each context laid into consecutive rows (the last one padded).
//!
//! Packed and ordered plans are tables of O(documents) entries, built once
//! and cached next to the dataset (see [`cache`]).

pub mod cache;
pub mod order;
pub mod pack;

use crate::error::{Error, Result};
use crate::shard::Dataset;

pub use order::Order;

/// A piece of one document inside a sample row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Global document id in the dataset.
    pub doc: u64,
    /// First token of the piece, relative to the document start.
    pub start: u64,
    /// Tokens in the piece.
    pub len: u64,
}

/// How samples are cut from the dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlanMode {
    /// Windows over the token stream, crossing documents.
    Concat,
    /// Whole documents, best-fit packed.
    Pack,
    /// Contexts of an order file, in order.
    Ordered,
}

impl PlanMode {
    /// Parses `"concat"`, `"pack"` or `"ordered"`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "concat" => Ok(PlanMode::Concat),
            "pack" => Ok(PlanMode::Pack),
            "ordered" => Ok(PlanMode::Ordered),
            other => Err(Error::invalid(
                "mode",
                format!("unknown mode {other:?}; use \"concat\", \"pack\" or \"ordered\""),
            )),
        }
    }

    /// The name [`parse`](Self::parse) accepts.
    pub fn name(self) -> &'static str {
        match self {
            PlanMode::Concat => "concat",
            PlanMode::Pack => "pack",
            PlanMode::Ordered => "ordered",
        }
    }

    fn code(self) -> u32 {
        match self {
            PlanMode::Concat => 1,
            PlanMode::Pack => 2,
            PlanMode::Ordered => 3,
        }
    }
}

/// Rows as a table of document pieces: row `r` is pieces
/// `row_range(r)`. Built in memory, or mapped from the plan cache.
#[derive(Debug)]
pub struct PieceTable {
    store: Store,
}

#[derive(Debug)]
enum Store {
    Owned {
        row_starts: Vec<u64>,
        docs: Vec<u64>,
        starts: Vec<u64>,
        lens: Vec<u64>,
    },
    /// A cache file: little-endian u64 words; `base` is the word index of
    /// `row_starts[0]`, followed by docs, starts and lens.
    Mapped {
        map: std::sync::Arc<crate::shard::fsutil::MappedFile>,
        base: usize,
        rows: usize,
        pieces: usize,
    },
}

impl Clone for PieceTable {
    fn clone(&self) -> Self {
        let store = match &self.store {
            Store::Owned {
                row_starts,
                docs,
                starts,
                lens,
            } => Store::Owned {
                row_starts: row_starts.clone(),
                docs: docs.clone(),
                starts: starts.clone(),
                lens: lens.clone(),
            },
            Store::Mapped {
                map,
                base,
                rows,
                pieces,
            } => Store::Mapped {
                map: std::sync::Arc::clone(map),
                base: *base,
                rows: *rows,
                pieces: *pieces,
            },
        };
        PieceTable { store }
    }
}

impl PartialEq for PieceTable {
    fn eq(&self, other: &Self) -> bool {
        self.rows() == other.rows()
            && self.num_pieces() == other.num_pieces()
            && (0..=self.rows()).all(|r| self.row_start(r) == other.row_start(r))
            && (0..self.num_pieces()).all(|p| self.piece(p) == other.piece(p))
    }
}

fn word(bytes: &[u8], i: usize) -> u64 {
    crate::shard::fsutil::u64_le(bytes, 8 * i)
}

impl PieceTable {
    fn new() -> Self {
        PieceTable {
            store: Store::Owned {
                row_starts: vec![0],
                docs: Vec::new(),
                starts: Vec::new(),
                lens: Vec::new(),
            },
        }
    }

    /// A table over a mapped cache file whose layout was validated.
    fn mapped(
        map: std::sync::Arc<crate::shard::fsutil::MappedFile>,
        base: usize,
        rows: usize,
        pieces: usize,
    ) -> Self {
        PieceTable {
            store: Store::Mapped {
                map,
                base,
                rows,
                pieces,
            },
        }
    }

    fn push(&mut self, doc: u64, start: u64, len: u64) {
        if let Store::Owned {
            docs, starts, lens, ..
        } = &mut self.store
        {
            docs.push(doc);
            starts.push(start);
            lens.push(len);
        }
    }

    fn end_row(&mut self) {
        if let Store::Owned {
            row_starts, docs, ..
        } = &mut self.store
        {
            row_starts.push(docs.len() as u64);
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> u64 {
        match &self.store {
            Store::Owned { row_starts, .. } => row_starts.len() as u64 - 1,
            Store::Mapped { rows, .. } => *rows as u64,
        }
    }

    /// Number of pieces.
    pub fn num_pieces(&self) -> usize {
        match &self.store {
            Store::Owned { docs, .. } => docs.len(),
            Store::Mapped { pieces, .. } => *pieces,
        }
    }

    /// Index of row `r`'s first piece (`r <= rows()`).
    pub fn row_start(&self, r: u64) -> u64 {
        match &self.store {
            Store::Owned { row_starts, .. } => row_starts[r as usize],
            Store::Mapped { map, base, .. } => word(map.bytes(), base + r as usize),
        }
    }

    /// Piece `p` as (document, start, length).
    pub fn piece(&self, p: usize) -> Segment {
        match &self.store {
            Store::Owned {
                docs, starts, lens, ..
            } => Segment {
                doc: docs[p],
                start: starts[p],
                len: lens[p],
            },
            Store::Mapped {
                map,
                base,
                rows,
                pieces,
            } => {
                let b = map.bytes();
                let at = base + rows + 1 + p;
                Segment {
                    doc: word(b, at),
                    start: word(b, at + pieces),
                    len: word(b, at + 2 * pieces),
                }
            }
        }
    }

    /// The table's arrays, concatenated as the cache stores them.
    fn words(&self) -> Vec<u64> {
        let rows = self.rows();
        let n = self.num_pieces();
        let mut out = Vec::with_capacity(rows as usize + 1 + 3 * n);
        out.extend((0..=rows).map(|r| self.row_start(r)));
        out.extend((0..n).map(|p| self.piece(p).doc));
        out.extend((0..n).map(|p| self.piece(p).start));
        out.extend((0..n).map(|p| self.piece(p).len));
        out
    }
}

#[derive(Clone, Debug)]
enum Table {
    Concat { windows: u64 },
    Pieces(PieceTable),
}

/// A sample plan over one dataset.
#[derive(Clone, Debug)]
pub struct Plan {
    mode: PlanMode,
    seq_len: u64,
    fingerprint: u64,
    table: Table,
}

impl Plan {
    /// Checks `seq_len` and returns the row width `seq_len + 1`.
    fn row_len(seq_len: u64) -> Result<u64> {
        if seq_len == 0 || seq_len > u32::MAX as u64 {
            return Err(Error::invalid(
                "seq_len",
                format!("{seq_len} is out of range; it must be at least 1 (and below 2^32)"),
            ));
        }
        Ok(seq_len + 1)
    }

    /// Fingerprint of (dataset, mode, seq_len, order).
    fn fingerprint_of(ds: &Dataset, mode: PlanMode, seq_len: u64, order: Option<&Order>) -> u64 {
        crate::shuffle::key_of(&[
            ds.fingerprint(),
            mode.code() as u64,
            seq_len,
            order.map_or(0, Order::checksum),
        ])
    }

    /// GPT-style windows of `seq_len + 1` tokens, stride `seq_len`: there are
    /// `(num_tokens - 1) / seq_len` of them; the tail that does not fill a
    /// window is not used.
    pub fn concat(ds: &Dataset, seq_len: u64) -> Result<Self> {
        Self::row_len(seq_len)?;
        Ok(Plan {
            mode: PlanMode::Concat,
            seq_len,
            fingerprint: Self::fingerprint_of(ds, PlanMode::Concat, seq_len, None),
            table: Table::Concat {
                windows: ds.num_tokens().saturating_sub(1) / seq_len,
            },
        })
    }

    /// Whole documents packed into rows of `seq_len + 1` tokens (best-fit
    /// decreasing); see [`pack::pack`].
    pub fn pack(ds: &Dataset, seq_len: u64) -> Result<Self> {
        let row = Self::row_len(seq_len)?;
        let lengths = ds.doc_lengths()?;
        Ok(Plan {
            mode: PlanMode::Pack,
            seq_len,
            fingerprint: Self::fingerprint_of(ds, PlanMode::Pack, seq_len, None),
            table: Table::Pieces(pack::pack(&lengths, row)),
        })
    }

    /// The contexts of `order`, each laid into consecutive rows of
    /// `seq_len + 1` tokens, the last row of a context padded.
    pub fn ordered(ds: &Dataset, seq_len: u64, order: &Order) -> Result<Self> {
        let row = Self::row_len(seq_len)?;
        order.check_dataset(ds)?;
        let lengths = ds.doc_lengths()?;
        Ok(Plan {
            mode: PlanMode::Ordered,
            seq_len,
            fingerprint: Self::fingerprint_of(ds, PlanMode::Ordered, seq_len, Some(order)),
            table: Table::Pieces(pack::lay_out(order, &lengths, row)),
        })
    }

    /// Builds the plan for `mode` (`order` is needed for, and only used by,
    /// [`PlanMode::Ordered`]).
    pub fn build(
        ds: &Dataset,
        mode: PlanMode,
        seq_len: u64,
        order: Option<&Order>,
    ) -> Result<Self> {
        match (mode, order) {
            (PlanMode::Concat, _) => Self::concat(ds, seq_len),
            (PlanMode::Pack, _) => Self::pack(ds, seq_len),
            (PlanMode::Ordered, Some(o)) => Self::ordered(ds, seq_len, o),
            (PlanMode::Ordered, None) => Err(Error::invalid(
                "order",
                "mode \"ordered\" needs an order file (build one with tokenloom.order)",
            )),
        }
    }

    /// The mode this plan was built with.
    pub fn mode(&self) -> PlanMode {
        self.mode
    }

    /// Tokens of model input per sample.
    pub fn seq_len(&self) -> u64 {
        self.seq_len
    }

    /// Identifies (dataset, mode, seq_len, order); equal plans have equal fingerprints.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Number of samples.
    pub fn num_samples(&self) -> u64 {
        match &self.table {
            Table::Concat { windows } => *windows,
            Table::Pieces(t) => t.rows(),
        }
    }

    /// The piece table of packed and ordered plans.
    pub fn pieces(&self) -> Option<&PieceTable> {
        match &self.table {
            Table::Concat { .. } => None,
            Table::Pieces(t) => Some(t),
        }
    }

    /// Fails when the plan's table is mapped from a cache file that was
    /// truncated or rewritten in place since it was opened.
    pub fn check_unchanged(&self) -> Result<()> {
        match &self.table {
            Table::Pieces(PieceTable {
                store: Store::Mapped { map, .. },
            }) => map.check_unchanged(),
            _ => Ok(()),
        }
    }

    /// For a concat plan, the first and last stream positions of the tokens
    /// of sample `i` (the dataset pages [`sample`](Self::sample) reads are
    /// those of the shards holding them); `None` for table plans, whose
    /// samples name their documents without reading the dataset.
    pub fn token_span(&self, i: u64) -> Option<(u64, u64)> {
        match self.table {
            Table::Concat { .. } => {
                let first = i.saturating_mul(self.seq_len);
                Some((first, first.saturating_add(self.seq_len)))
            }
            Table::Pieces(_) => None,
        }
    }

    /// Writes the segments of sample `i` into `out` (cleared first).
    pub fn sample(&self, ds: &Dataset, i: u64, out: &mut Vec<Segment>) -> Result<()> {
        out.clear();
        if i >= self.num_samples() {
            return Err(Error::invalid(
                "sample",
                format!(
                    "{i} is out of range (the plan has {} samples)",
                    self.num_samples()
                ),
            ));
        }
        match &self.table {
            Table::Concat { .. } => {
                let (mut doc, mut start) = ds.locate_token(i * self.seq_len)?;
                let mut need = self.seq_len + 1;
                while need > 0 {
                    let len = ds.doc(doc)?.len() as u64;
                    let take = (len - start).min(need);
                    if take > 0 {
                        out.push(Segment {
                            doc,
                            start,
                            len: take,
                        });
                    }
                    need -= take;
                    doc += 1;
                    start = 0;
                    if need > 0 && doc >= ds.num_docs() {
                        return Err(Error::invalid(
                            "sample",
                            "the token stream ended inside a window; the dataset changed under the plan",
                        ));
                    }
                }
            }
            Table::Pieces(t) => {
                let (a, b) = (t.row_start(i), t.row_start(i + 1));
                for p in a as usize..b as usize {
                    out.push(t.piece(p));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests;
