//! Semantic near-duplicate removal: a document whose similarity to an
//! already kept neighbour reaches the threshold leaves the order. Documents
//! are visited by ascending id, so the first copy is the one kept; nothing is
//! deleted from the shards. Works on the directed kNN lists: a pair counts
//! when either document lists the other (at the higher of the two
//! similarities), as in the undirected graph, without building it.

use rayon::prelude::*;

use super::graph::KnnLists;

/// A dropped document and the kept one it duplicates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Duplicate {
    /// The document left out of the order.
    pub doc: u32,
    /// The kept neighbour it is a near-copy of.
    pub of: u32,
    /// Their similarity.
    pub sim: f32,
}

/// Marks near-duplicates in `active` (only active documents are considered,
/// and only active ones can be kept) and returns them. Each dropped document
/// names its most similar kept neighbour (ties: the smaller id). O(n·k).
pub fn dedup(knn: &KnnLists<'_>, threshold: f32, active: &mut [bool]) -> Vec<Duplicate> {
    const NONE: (f32, u32) = (f32::NEG_INFINITY, u32::MAX);
    let better = |a: (f32, u32), b: (f32, u32)| {
        if b.0 > a.0 || (b.0 == a.0 && b.1 < a.1) {
            b
        } else {
            a
        }
    };
    let (n, k) = (knn.n, knn.k);
    let mut dropped = Vec::new();
    // Without similarities every pair counts as 1 - rank / k.
    let ranks: Vec<f32> = (0..k).map(|r| 1.0 - r as f32 / k as f32).collect();
    // Entries of row i at or above the threshold naming other documents: (id, similarity).
    let close = |i: usize| {
        let ids = &knn.ids[i * k..(i + 1) * k];
        let sims = knn.sims.map_or(&ranks[..], |s| &s[i * k..(i + 1) * k]);
        ids.iter()
            .zip(sims)
            .filter(move |&(&j, &s)| s >= threshold && j >= 0 && j as usize != i)
            .map(|(&j, &s)| (j as usize, s))
    };
    // Rows with such an entry, found in parallel; only these can drop
    // themselves or others.
    let close_rows: Vec<bool> = (0..n)
        .into_par_iter()
        .with_min_len(4096)
        .map(|i| close(i).next().is_some())
        .collect();
    // Best kept earlier document whose own list names this one above the threshold.
    let mut named_by = vec![NONE; n];
    for i in 0..n {
        if !active[i] || (!close_rows[i] && named_by[i] == NONE) {
            continue;
        }
        let best = close(i)
            .filter(|&(j, _)| j < i && active[j])
            .fold(named_by[i], |b, (j, s)| better(b, (s, j as u32)));
        if best.1 != u32::MAX {
            active[i] = false;
            dropped.push(Duplicate {
                doc: i as u32,
                of: best.1,
                sim: best.0,
            });
            continue;
        }
        for (j, s) in close(i).filter(|&(j, _)| j > i && active[j]) {
            named_by[j] = better(named_by[j], (s, i as u32));
        }
    }
    dropped
}
