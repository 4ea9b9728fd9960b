//! [`PieceTable`]: the rows of a packed or ordered plan as pieces of
//! documents, held in memory or mapped from the plan cache.

use super::Segment;
use crate::error::Result;

/// Rows as a table of document pieces: row `r` is pieces
/// `row_range(r)`. Built in memory, or mapped from the plan cache.
#[derive(Clone, Debug)]
pub struct PieceTable {
    store: Store,
}

#[derive(Clone, Debug)]
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
        map: std::sync::Arc<crate::io::MappedFile>,
        base: usize,
        rows: usize,
        pieces: usize,
    },
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
    crate::io::u64_le(bytes, 8 * i)
}

impl PieceTable {
    pub(super) fn new() -> Self {
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
    pub(super) fn mapped(
        map: std::sync::Arc<crate::io::MappedFile>,
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

    pub(super) fn push(&mut self, doc: u64, start: u64, len: u64) {
        if let Store::Owned {
            docs, starts, lens, ..
        } = &mut self.store
        {
            docs.push(doc);
            starts.push(start);
            lens.push(len);
        }
    }

    pub(super) fn end_row(&mut self) {
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
    pub(super) fn words(&self) -> Vec<u64> {
        let rows = self.rows();
        let n = self.num_pieces();
        let mut out = Vec::with_capacity(rows as usize + 1 + 3 * n);
        out.extend((0..=rows).map(|r| self.row_start(r)));
        out.extend((0..n).map(|p| self.piece(p).doc));
        out.extend((0..n).map(|p| self.piece(p).start));
        out.extend((0..n).map(|p| self.piece(p).len));
        out
    }

    /// Fails when the table is mapped from a cache file that was truncated
    /// or rewritten in place since it was opened.
    pub(super) fn check_unchanged(&self) -> Result<()> {
        match &self.store {
            Store::Mapped { map, .. } => map.check_unchanged(),
            Store::Owned { .. } => Ok(()),
        }
    }
}
