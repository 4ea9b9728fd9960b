//! Building piece tables: best-fit packing and ordered layout.

use std::collections::BTreeSet;

use super::{Order, PieceTable};
use crate::order_file::Ids;

/// Packs documents of the given `lengths` into rows of `row` tokens.
///
/// A document longer than a row is cut into full rows plus a remainder;
/// remainders and short documents are placed by best-fit decreasing (each
/// goes to the open row with the least room that still fits it, longest
/// first, ties by document id), which leaves well under one row of padding
/// per row on typical length distributions. Empty documents are skipped.
/// O(documents · log documents) time, O(documents) memory.
pub fn pack(lengths: &[u64], row: u64) -> PieceTable {
    let mut table = PieceTable::new();
    let mut items: Vec<(u64, u64, u64)> = Vec::new(); // (len, doc, start)
    for (doc, &len) in lengths.iter().enumerate() {
        let full = len / row;
        for k in 0..full {
            table.push(doc as u64, k * row, row);
            table.end_row();
        }
        let rem = len - full * row;
        if rem > 0 {
            items.push((rem, doc as u64, full * row));
        }
    }
    items.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    // Open rows keyed by (room left, row number): the first key with room
    // >= len is the best fit.
    let mut open: BTreeSet<(u64, usize)> = BTreeSet::new();
    let mut rows: Vec<Vec<usize>> = Vec::new();
    for (i, &(len, _, _)) in items.iter().enumerate() {
        let fit = open.range((len, 0)..).next().copied();
        let (room, r) = match fit {
            Some(key) => {
                open.remove(&key);
                key
            }
            None => {
                rows.push(Vec::new());
                (row, rows.len() - 1)
            }
        };
        rows[r].push(i);
        if room - len > 0 {
            open.insert((room - len, r));
        }
    }
    for members in rows {
        for i in members {
            let (len, doc, start) = items[i];
            table.push(doc, start, len);
        }
        table.end_row();
    }
    table
}

/// Lays the contexts of `order` into rows of `row` tokens: each context's
/// documents end to end, cut at row boundaries, the last row of each
/// context padded — or, for a flowing order, all contexts as one stream
/// (only the very last row padded). Empty documents are skipped.
pub fn lay_out(order: &Order, lengths: &[u64], row: u64) -> PieceTable {
    let mut table = PieceTable::new();
    let groups: Vec<Ids<'_>> = if order.flow() {
        vec![order.docs()]
    } else {
        (0..order.num_contexts())
            .map(|c| order.context(c))
            .collect()
    };
    for group in groups {
        let mut used = 0u64;
        for doc in group.iter() {
            let len = lengths[doc as usize];
            let mut start = 0u64;
            while start < len {
                let take = (len - start).min(row - used);
                table.push(doc, start, take);
                start += take;
                used += take;
                if used == row {
                    table.end_row();
                    used = 0;
                }
            }
        }
        if used > 0 {
            table.end_row();
        }
    }
    table
}
