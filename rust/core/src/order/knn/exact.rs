//! The exact search: all pairs, blocked.

use rayon::prelude::*;

use super::join::{gather, join, Blocks, Partners};
use super::{assemble, validate, KnnGraph};
use crate::error::Result;
use crate::gemm::dot_rows;
use crate::order::topk::TopK;
use crate::progress::Progress;

/// Rows per block of the exact search.
const BLOCK_ROWS: usize = 512;

/// The exact kNN graph of the `n` rows of `emb` (row-major, `d` columns) by
/// inner product, `k` neighbours per row (`1 ≤ k < n`), self excluded.
///
/// Errors: a shape that is not `[n, d]`, a row holding NaN or infinity, a
/// zero row (each named by its index), `k` outside `1..n`, or
/// cancellation through `progress`.
pub fn exact(
    emb: &[f32],
    n: usize,
    d: usize,
    k: usize,
    progress: &dyn Progress,
) -> Result<KnnGraph> {
    validate(emb, n, d, k)?;
    exact_unchecked(emb, n, d, k, progress)
}

pub(super) fn exact_unchecked(
    emb: &[f32],
    n: usize,
    d: usize,
    k: usize,
    progress: &dyn Progress,
) -> Result<KnnGraph> {
    let blocks = Blocks::contiguous(n, BLOCK_ROWS);
    let states = join(emb, d, k, &blocks, &Partners::All, progress)?;
    Ok(assemble(n, k, &blocks, &states).0)
}

/// Replaces the neighbours of `rows` in `graph` by an exact search of each
/// of them against all rows.
pub(super) fn search_rows(
    emb: &[f32],
    d: usize,
    graph: &mut KnnGraph,
    rows: &[u32],
    progress: &dyn Progress,
) -> Result<()> {
    let (n, k) = (graph.n, graph.k);
    let all: Vec<u32> = (0..n as u32).collect();
    let found: Vec<TopK> = rows
        .par_chunks(BLOCK_ROWS)
        .map_init(
            || (Vec::new(), Vec::new()),
            |(qbuf, prod), queries| -> Result<TopK> {
                let q = gather(emb, d, queries, qbuf);
                let mut top = TopK::new(queries.len(), k);
                for (chunk, ids) in emb.chunks(BLOCK_ROWS * d).zip(all.chunks(BLOCK_ROWS)) {
                    progress.check()?;
                    dot_rows(q, chunk, d, prod);
                    for (r, sims) in prod.chunks_exact(ids.len()).enumerate() {
                        top.offer_row(r, queries[r], sims, ids);
                    }
                }
                Ok(top)
            },
        )
        .collect::<Result<_>>()?;
    for (queries, top) in rows.chunks(BLOCK_ROWS).zip(&found) {
        for (r, &row) in queries.iter().enumerate() {
            let (ids, sims) = top.row(r);
            let at = row as usize * k;
            if let (Some(dn), Some(ds)) = (
                graph.neighbors.get_mut(at..at + ids.len()),
                graph.sims.get_mut(at..at + sims.len()),
            ) {
                dn.copy_from_slice(ids);
                ds.copy_from_slice(sims);
            }
        }
    }
    Ok(())
}
