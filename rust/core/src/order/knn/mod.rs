//! k-nearest-neighbour graphs over row-major `f32` embeddings `[n, d]` by
//! inner product (cosine similarity when the rows are L2-normalised, as
//! callers are expected to pass them). Each row's own id is excluded and its
//! neighbours are sorted by similarity descending, ties by smaller id.
//!
//! - [`exact`]: every pair, as blocked matrix products (sgemm) over rayon's
//!   pool, each unordered pair of blocks multiplied once and read from both
//!   sides: `n²·d` multiply-adds.
//! - [`approximate`]: an inverted file over spherical k-means. Centroids are
//!   trained on a seeded sample, every row is assigned to its nearest one,
//!   and each list is joined with itself and with the lists of its
//!   `nprobe - 1` nearest centroids (the relation made symmetric), again as
//!   matrix products read from both sides. Similarities are exact; recall is
//!   lost only on neighbours in lists that were not joined. Rows left with
//!   fewer than `k` candidates are searched exactly. Below
//!   [`IvfParams::exact_below`] rows (default [`EXACT_BELOW`]) the exact
//!   search is used instead.
//!
//! Both are deterministic: the same input and seed give the same graph for
//! any number of threads.

mod exact;
mod ivf;
mod join;
#[cfg(test)]
mod tests;

use rayon::prelude::*;

use crate::error::{Error, Result};

pub use exact::exact;
pub use ivf::{approximate, join_lists};

/// Below this many rows [`approximate`] runs the exact search: it takes well
/// under a second there and an index would not pay for itself.
pub const EXACT_BELOW: usize = 20_000;

/// A kNN graph: for each of `n` rows its `k` neighbours and their
/// similarities, best first, stored row-major as `[n, k]`.
#[derive(Clone, Debug, PartialEq)]
pub struct KnnGraph {
    n: usize,
    k: usize,
    neighbors: Vec<u32>,
    sims: Vec<f32>,
}

impl KnnGraph {
    /// Number of rows.
    pub fn n(&self) -> usize {
        self.n
    }
    /// Neighbours per row.
    pub fn k(&self) -> usize {
        self.k
    }
    /// Neighbours of row `i`, most similar first (empty if `i >= n`).
    pub fn neighbors(&self, i: usize) -> &[u32] {
        self.neighbors
            .get(i * self.k..(i + 1) * self.k)
            .unwrap_or(&[])
    }
    /// Similarities of row `i` to its [`neighbors`](Self::neighbors).
    pub fn sims(&self, i: usize) -> &[f32] {
        self.sims.get(i * self.k..(i + 1) * self.k).unwrap_or(&[])
    }
    /// The `[n, k]` neighbour ids and similarities, row-major.
    pub fn into_parts(self) -> (Vec<u32>, Vec<f32>) {
        (self.neighbors, self.sims)
    }
}

/// Settings of [`approximate`]. `None` picks a default from `n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IvfParams {
    /// Number of inverted lists (k-means centroids); default [`default_nlist`].
    pub nlist: Option<usize>,
    /// Lists each list is joined with, itself included; default [`DEFAULT_NPROBE`].
    pub nprobe: Option<usize>,
    /// Rows sampled to train k-means; default [`default_train_size`].
    pub train_size: Option<usize>,
    /// Lloyd iterations of k-means.
    pub iterations: usize,
    /// Seed of the training sample and of k-means.
    pub seed: u64,
    /// Below this many rows the exact search is used.
    pub exact_below: usize,
}

impl Default for IvfParams {
    fn default() -> Self {
        IvfParams {
            nlist: None,
            nprobe: None,
            train_size: None,
            iterations: 10,
            seed: 0,
            exact_below: EXACT_BELOW,
        }
    }
}

/// Lists joined with each list by default, itself included.
pub const DEFAULT_NPROBE: usize = 8;

/// Default number of lists for `n` rows: about `2·√n`. Assigning rows costs
/// `n·nlist` products and the join about `n·(nprobe / 2)·(n / nlist)`; the
/// two balance near `nlist = √(nprobe·n / 2)`.
pub fn default_nlist(n: usize) -> usize {
    ((2.0 * (n as f64).sqrt()).round() as usize).clamp(1, n.max(1))
}

/// Default training sample for `nlist` lists over `n` rows: 16 rows per
/// list, at least 10,000, at most `n`. The lists only need to cut the
/// space into neighbourhoods, so a coarse k-means serves.
pub fn default_train_size(n: usize, nlist: usize) -> usize {
    (16 * nlist).max(10_000).min(n)
}

/// Fraction of the neighbours in `exact` that `approx` also found (recall@k,
/// averaged over rows). Both graphs must have the same `n`; `approx` may have
/// a different `k` (recall is measured at `exact`'s `k`).
pub fn recall(approx: &KnnGraph, exact: &KnnGraph) -> Result<f64> {
    if approx.n != exact.n {
        return Err(Error::invalid(
            "graphs",
            format!(
                "the approximate graph has {} rows and the exact one {}; compare graphs of the same embeddings",
                approx.n, exact.n
            ),
        ));
    }
    if exact.n == 0 || exact.k == 0 {
        return Ok(1.0);
    }
    let found: usize = (0..exact.n)
        .into_par_iter()
        .map(|i| {
            let got = approx.neighbors(i);
            exact
                .neighbors(i)
                .iter()
                .filter(|j| got.contains(j))
                .count()
        })
        .sum();
    Ok(found as f64 / (exact.n * exact.k) as f64)
}

/// Checks the shape of the input and that every row is finite and nonzero.
fn validate(emb: &[f32], n: usize, d: usize, k: usize) -> Result<()> {
    let bad = |reason: String| Err(Error::invalid("embeddings", reason));
    if d == 0 {
        return bad("the dimension d is 0; pass a [n, d] array with d ≥ 1".into());
    }
    if n.checked_mul(d) != Some(emb.len()) {
        return bad(format!(
            "{} values do not form n × d = {n} × {d} rows; pass a row-major [n, d] array",
            emb.len()
        ));
    }
    if n > u32::MAX as usize {
        return bad(format!("{n} rows exceed the 2³² − 1 this graph can index"));
    }
    if k == 0 || k >= n {
        return Err(Error::invalid(
            "k",
            format!(
                "k = {k} with n = {n} rows; k must be at least 1 and below n, since a row is not its own neighbour"
            ),
        ));
    }
    let row_fault = emb.par_chunks(d).enumerate().find_map_first(|(i, row)| {
        if row.iter().any(|x| !x.is_finite()) {
            return Some(format!(
                "row {i} holds NaN or infinity; fix or drop that document's embedding"
            ));
        }
        let sq: f64 = row.iter().map(|&x| x as f64 * x as f64).sum();
        if sq == 0.0 {
            return Some(format!(
                "row {i} is all zeros and has no direction to compare; drop that document or give it an embedding"
            ));
        }
        (sq > f32::MAX as f64).then(|| {
            format!("row {i} has a norm too large for float32 products; L2-normalise the rows")
        })
    });
    match row_fault {
        Some(reason) => bad(reason),
        None => Ok(()),
    }
}

/// Assembles a graph from per-block best-k lists; returns it with the rows
/// that hold fewer than `k` neighbours.
fn assemble(
    n: usize,
    k: usize,
    blocks: &join::Blocks,
    states: &[super::topk::TopK],
) -> (KnnGraph, Vec<u32>) {
    let mut neighbors = vec![u32::MAX; n * k];
    let mut sims = vec![f32::NEG_INFINITY; n * k];
    let mut short = Vec::new();
    for (b, top) in states.iter().enumerate() {
        for (r, &row) in blocks.block(b).iter().enumerate() {
            let (ids, ss) = top.row(r);
            let at = row as usize * k;
            if let (Some(dn), Some(ds)) = (
                neighbors.get_mut(at..at + ids.len()),
                sims.get_mut(at..at + ss.len()),
            ) {
                dn.copy_from_slice(ids);
                ds.copy_from_slice(ss);
            }
            if ids.len() < k {
                short.push(row);
            }
        }
    }
    short.sort_unstable();
    (
        KnnGraph {
            n,
            k,
            neighbors,
            sims,
        },
        short,
    )
}
