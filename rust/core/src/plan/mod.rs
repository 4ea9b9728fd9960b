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
pub mod pack;
pub mod pieces;

use crate::error::{Error, Result};
use crate::shard::Dataset;

use crate::order_file::Order;
pub use pieces::PieceTable;

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

/// Which tokens of a row may attend to each other, as the batch arrays tell a
/// trainer: through `position_ids` and `cu_seqlens` (flash-attention varlen).
/// `doc_ids` tell documents apart under either.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Boundaries {
    /// Each document piece is a sequence of its own: positions restart at 0
    /// at every piece, and `cu_seqlens` has one segment per piece (and one
    /// for the padding of a row).
    Document,
    /// The whole row is one sequence: positions run from 0 to `seq_len - 1`
    /// over the row, and `cu_seqlens` has one segment per row, so every token
    /// attends to the documents before it in the row (plain causal attention).
    Row,
}

impl Boundaries {
    /// Parses `"document"` or `"row"`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "document" => Ok(Boundaries::Document),
            "row" => Ok(Boundaries::Row),
            other => Err(Error::invalid(
                "boundaries",
                format!("unknown boundaries {other:?}; use \"document\" or \"row\""),
            )),
        }
    }

    /// The name [`parse`](Self::parse) accepts.
    pub fn name(self) -> &'static str {
        match self {
            Boundaries::Document => "document",
            Boundaries::Row => "row",
        }
    }
}

impl PlanMode {
    /// The boundaries that follow the mode's purpose. Ordered rows hold
    /// related documents so that they attend to each other (In-Context
    /// Pretraining trains with causal attention over the whole context):
    /// [`Boundaries::Row`]. Concat and pack rows hold unrelated documents:
    /// [`Boundaries::Document`].
    pub fn default_boundaries(self) -> Boundaries {
        match self {
            PlanMode::Ordered => Boundaries::Row,
            PlanMode::Concat | PlanMode::Pack => Boundaries::Document,
        }
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
    pub(crate) fn row_len(seq_len: u64) -> Result<u64> {
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
        Self::fingerprint_from(ds.fingerprint(), mode, seq_len, order)
    }

    /// The plan fingerprint for a dataset fingerprint `dataset` (the
    /// current one or [`Dataset::legacy_fingerprint`]).
    pub fn fingerprint_from(
        dataset: u64,
        mode: PlanMode,
        seq_len: u64,
        order: Option<&Order>,
    ) -> u64 {
        crate::shuffle::key_of(&[
            dataset,
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
            Table::Pieces(t) => t.check_unchanged(),
            Table::Concat { .. } => Ok(()),
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
