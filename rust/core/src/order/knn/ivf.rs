//! The approximate search: an inverted file over spherical k-means, each
//! list joined with the lists of its nearest centroids.

use super::exact::{exact_unchecked, search_rows};
use super::join::{join, Blocks, Partners};
use super::{
    assemble, default_nlist, default_train_size, validate, IvfParams, KnnGraph, DEFAULT_NPROBE,
};
use crate::error::{Error, Result};
use crate::order::kmeans;
use crate::progress::Progress;
use crate::shuffle::{key_of, Permutation};

/// Largest block a list is cut into before the join.
const BLOCK_ROWS: usize = 512;

/// The approximate kNN graph of the `n` rows of `emb` (row-major, `d`
/// columns) by inner product, `k` neighbours per row (`1 ≤ k < n`), self
/// excluded; see the [module documentation](super) for the method.
///
/// Errors: those of [`exact`](super::exact), and settings out of range
/// (`nlist` outside `1..=n`, `nprobe` of 0, a training sample smaller than
/// `nlist`).
pub fn approximate(
    emb: &[f32],
    n: usize,
    d: usize,
    k: usize,
    params: &IvfParams,
    progress: &dyn Progress,
) -> Result<KnnGraph> {
    validate(emb, n, d, k)?;
    let nlist = params.nlist.unwrap_or_else(|| default_nlist(n));
    if nlist == 0 || nlist > n {
        return Err(Error::invalid(
            "nlist",
            format!("{nlist} lists for {n} rows; choose 1 ≤ nlist ≤ n (the default is about 2·√n)"),
        ));
    }
    let nprobe = params.nprobe.unwrap_or(DEFAULT_NPROBE).min(nlist);
    if nprobe == 0 {
        return Err(Error::invalid(
            "nprobe",
            "0 lists to search; each list needs at least itself (nprobe ≥ 1)",
        ));
    }
    let train_size = params
        .train_size
        .unwrap_or_else(|| default_train_size(n, nlist))
        .min(n);
    if train_size < nlist {
        return Err(Error::invalid(
            "train_size",
            format!("{train_size} training rows cannot place {nlist} centroids; sample at least nlist rows"),
        ));
    }
    if n < params.exact_below {
        return exact_unchecked(emb, n, d, k, progress);
    }

    let perm = Permutation::new(n as u64, key_of(&[params.seed, 0x6976_665f_7472_6169]));
    let mut train = Vec::with_capacity(train_size * d);
    for i in 0..train_size as u64 {
        let at = perm.get(i) as usize * d;
        train.extend_from_slice(emb.get(at..at + d).unwrap_or(&[]));
    }
    let centroids = kmeans::train(&train, d, nlist, params.iterations, params.seed, progress)?;
    drop(train);
    progress.start("kNN: assigning rows to lists", n as u64);
    let labels = kmeans::assign(emb, d, &centroids, progress)?;
    progress.finish();
    let lists = kmeans::members(&labels, nlist);
    let near = kmeans::nearest_centroids(&centroids, d, nprobe - 1);
    let (blocks, partners) = plan(&lists, &near, lists.len());
    let states = join(emb, d, k, &blocks, &partners, progress)?;
    let (mut graph, short) = assemble(n, k, &blocks, &states);
    if !short.is_empty() {
        search_rows(emb, d, &mut graph, &short, progress)?;
    }
    Ok(graph)
}

/// Cuts each list into blocks of at most [`BLOCK_ROWS`] rows and lists, for
/// every block, the later blocks it meets: the other blocks of its list (for
/// the first `own` lists, whose rows are kept) and all blocks of each paired
/// list, each unordered pair of lists once (`lists[a]` and `lists[b]` are
/// paired when either is among the other's `near` centroids).
fn plan(lists: &[Vec<u32>], near: &[Vec<u32>], own: usize) -> (Blocks, Partners) {
    let mut ids = Vec::new();
    let mut bounds = vec![0];
    let mut first = Vec::with_capacity(lists.len() + 1);
    for list in lists {
        first.push(bounds.len() - 1);
        let parts = list.len().div_ceil(BLOCK_ROWS);
        for p in 0..parts {
            let (s, e) = (p * list.len() / parts, (p + 1) * list.len() / parts);
            ids.extend_from_slice(list.get(s..e).unwrap_or(&[]));
            bounds.push(ids.len());
        }
    }
    first.push(bounds.len() - 1);
    let blocks_of = |l: usize| match (first.get(l), first.get(l + 1)) {
        (Some(&s), Some(&e)) => s..e,
        _ => 0..0,
    };

    let mut pairs: Vec<(u32, u32)> = near
        .iter()
        .enumerate()
        .flat_map(|(a, ms)| ms.iter().map(move |&m| (a as u32, m)))
        .filter(|&(a, m)| a != m)
        .map(|(a, m)| (a.min(m), a.max(m)))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();

    let nblocks = bounds.len() - 1;
    let mut partners: Vec<Vec<u32>> = vec![Vec::new(); nblocks];
    for l in 0..own.min(lists.len()) {
        let mine = blocks_of(l);
        for u in mine.clone() {
            if let Some(p) = partners.get_mut(u) {
                p.extend((u + 1..mine.end).map(|b| b as u32));
            }
        }
    }
    for &(a, b) in &pairs {
        let theirs = blocks_of(b as usize);
        for u in blocks_of(a as usize) {
            if let Some(p) = partners.get_mut(u) {
                p.extend(theirs.clone().map(|b| b as u32));
            }
        }
    }
    (Blocks { ids, bounds }, Partners::Lists(partners))
}

/// The best-k lists of the rows of the first `own` lists of `lists` (row
/// ids into `emb`, row-major, `d` columns) after joining each of them with
/// itself and with the lists named in its `near` entry (each unordered pair
/// of lists once, products read from both sides). The other lists are only
/// someone's partners: their rows get partial lists, which callers drop.
/// The ordering engine's kNN step over one group of inverted lists.
pub fn join_lists(
    emb: &[f32],
    d: usize,
    k: usize,
    lists: &[Vec<u32>],
    near: &[Vec<u32>],
    own: usize,
    progress: &dyn Progress,
) -> Result<KnnGraph> {
    let n = emb.len() / d.max(1);
    let (blocks, partners) = plan(lists, near, own);
    let states = join(emb, d, k, &blocks, &partners, progress)?;
    Ok(assemble(n, k, &blocks, &states).0)
}
