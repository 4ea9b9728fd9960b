//! The similarity join behind both searches. Rows are grouped into blocks;
//! each unordered pair of blocks that should meet is multiplied once
//! (`A·Bᵀ` through sgemm) and the product updates the best-k lists of both
//! sides: block `a`'s rows read it by row, block `b`'s rows by column. Work
//! is spread over rayon's pool by block; the result does not depend on the
//! number of threads, because every candidate pair is computed once, by the
//! same product, and a best-k list is a function of the set of candidates
//! offered to it (ties broken by id), not of their order.

use std::sync::{Mutex, MutexGuard};

use rayon::prelude::*;

use crate::error::Result;
use crate::gemm::dot_rows;
use crate::order::topk::TopK;
use crate::progress::Progress;

/// Most candidate rows multiplied against a block in one product.
const COLUMNS: usize = 2048;

/// A partition of row ids into blocks: block `b` is
/// `ids[bounds[b]..bounds[b + 1]]`.
pub(super) struct Blocks {
    pub ids: Vec<u32>,
    pub bounds: Vec<usize>,
}

impl Blocks {
    /// Consecutive blocks of at most `size` rows over `0..n`.
    pub fn contiguous(n: usize, size: usize) -> Self {
        let size = size.max(1);
        Blocks {
            ids: (0..n as u32).collect(),
            bounds: (0..n.div_ceil(size)).map(|b| b * size).chain([n]).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.bounds.len().saturating_sub(1)
    }

    pub fn block(&self, b: usize) -> &[u32] {
        match (self.bounds.get(b), self.bounds.get(b + 1)) {
            (Some(&s), Some(&e)) => self.ids.get(s..e).unwrap_or(&[]),
            _ => &[],
        }
    }
}

/// Which blocks each block meets, besides itself.
pub(super) enum Partners {
    /// Every block meets every other one (the exact search).
    All,
    /// Block `a` meets the blocks listed at `a`, all greater than `a`.
    Lists(Vec<Vec<u32>>),
}

impl Partners {
    fn of(&self, a: usize, blocks: usize) -> Vec<u32> {
        match self {
            Partners::All => (a as u32 + 1..blocks as u32).collect(),
            Partners::Lists(l) => l.get(a).cloned().unwrap_or_default(),
        }
    }
}

/// The rows of `emb` (row-major, `d` columns) named by `ids`: borrowed when
/// they are consecutive, copied into `buf` otherwise.
pub(super) fn gather<'a>(
    emb: &'a [f32],
    d: usize,
    ids: &[u32],
    buf: &'a mut Vec<f32>,
) -> &'a [f32] {
    let consecutive = ids.windows(2).all(|w| w[1] == w[0].wrapping_add(1));
    if let (true, Some(&first)) = (consecutive, ids.first()) {
        let start = first as usize * d;
        if let Some(rows) = emb.get(start..start + ids.len() * d) {
            return rows;
        }
    }
    buf.clear();
    for &i in ids {
        let at = i as usize * d;
        buf.extend_from_slice(emb.get(at..at + d).unwrap_or(&[]));
    }
    buf
}

/// Best-k lists of every block (indexed like `blocks`, rows in block
/// order) after joining each block with itself and its partners.
pub(super) fn join(
    emb: &[f32],
    d: usize,
    k: usize,
    blocks: &Blocks,
    partners: &Partners,
    progress: &dyn Progress,
) -> Result<Vec<TopK>> {
    let nb = blocks.len();
    let states: Vec<Mutex<TopK>> = (0..nb)
        .map(|b| Mutex::new(TopK::new(blocks.block(b).len(), k)))
        .collect();
    // Largest tasks first, so that no long task starts last.
    let mut tasks: Vec<(u64, usize)> = (0..nb)
        .map(|a| {
            let rows = blocks.block(a).len();
            let cols: usize = partners
                .of(a, nb)
                .iter()
                .map(|&b| blocks.block(b as usize).len())
                .sum();
            ((rows * (rows + cols)) as u64, a)
        })
        .collect();
    tasks.sort_unstable_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
    progress.start("kNN search", tasks.iter().map(|t| t.0).sum());
    tasks.par_iter().try_for_each_init(
        || (Vec::new(), Vec::new(), Vec::new(), Vec::new()),
        |(abuf, bbuf, prod, cols), &(_, a)| -> Result<()> {
            let a_ids = blocks.block(a);
            let a_rows = gather(emb, d, a_ids, abuf);
            let met: Vec<u32> = std::iter::once(a as u32)
                .chain(partners.of(a, nb))
                .collect();
            let mut rest = &met[..];
            while !rest.is_empty() {
                progress.check()?;
                let mut take = 1;
                let mut width = blocks.block(rest[0] as usize).len();
                while let Some(&b) = rest.get(take) {
                    let w = blocks.block(b as usize).len();
                    if width + w > COLUMNS {
                        break;
                    }
                    width += w;
                    take += 1;
                }
                let (group, tail) = rest.split_at(take);
                meet(
                    emb,
                    d,
                    (a, a_ids, a_rows),
                    group,
                    blocks,
                    &states,
                    (bbuf, prod, cols),
                );
                progress.advance((a_ids.len() * width) as u64);
                rest = tail;
            }
            Ok(())
        },
    )?;
    progress.finish();
    Ok(states
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect())
}

fn lock(states: &[Mutex<TopK>], b: usize) -> Option<MutexGuard<'_, TopK>> {
    states
        .get(b)
        .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
}

type Buffers<'a> = (&'a mut Vec<f32>, &'a mut Vec<f32>, &'a mut Vec<u32>);

/// Multiplies block `a` (its index, ids and rows) against the blocks of
/// `group` and offers the products to both sides.
fn meet(
    emb: &[f32],
    d: usize,
    (a, a_ids, a_rows): (usize, &[u32], &[f32]),
    group: &[u32],
    blocks: &Blocks,
    states: &[Mutex<TopK>],
    (bbuf, prod, cols): Buffers<'_>,
) {
    cols.clear();
    for &b in group {
        cols.extend_from_slice(blocks.block(b as usize));
    }
    let b_rows = gather(emb, d, cols, bbuf);
    dot_rows(a_rows, b_rows, d, prod);
    let c = cols.len();
    if let Some(mut top) = lock(states, a) {
        for (r, (&own, sims)) in a_ids.iter().zip(prod.chunks_exact(c.max(1))).enumerate() {
            top.offer_row(r, own, sims, cols);
        }
    }
    let mut offset = 0;
    for &b in group {
        let b_ids = blocks.block(b as usize);
        if b as usize != a {
            if let Some(mut top) = lock(states, b as usize) {
                for (s, &own) in b_ids.iter().enumerate() {
                    top.offer_column(s, own, prod, c, offset + s, a_ids);
                }
            }
        }
        offset += b_ids.len();
    }
}
