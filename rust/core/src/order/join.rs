//! The Ray engine's steps in the core: ordering one part of the corpus from
//! its documents' vectors alone (no dataset needed, so it runs on any
//! worker), and joining the parts' paths, chained so that consecutive parts
//! are similar, into one order that is reported and written exactly as the
//! local engine's is.

use serde_json::json;

use super::dedup::Duplicate;
use super::finish::{self, Clock, Walked};
use super::graph::KnnLists;
use super::partition::chain;
use super::report::Similarity;
use super::traverse::Path;
use super::vectors::{check_unit, neighbours, participants};
use super::{walk, OrderParams, Ordered};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::shard::Dataset;

/// The order of one part, in document ids of the whole dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct PartOrder {
    /// The part's documents, ascending.
    pub docs: Vec<u32>,
    /// The traversal of the part's documents that are not near-duplicates.
    pub path: Path,
    /// Near-duplicates left out (both ids in this part).
    pub duplicates: Vec<Duplicate>,
    /// Neighbours per document.
    pub k: usize,
    /// `[docs.len(), k]` neighbour ids within the part, row `r` for `docs[r]`.
    pub ids: Vec<i64>,
    /// Their similarities.
    pub sims: Vec<f32>,
    /// Whether the kNN search was exact.
    pub exact: bool,
}

/// Orders the documents `docs` (strictly ascending ids) from their vectors
/// `v` (unit rows, row-major `[docs.len(), d]`): kNN, near-duplicate removal and
/// traversal as in the local engine, restricted to this part.
pub fn order_partition(
    v: &[f32],
    d: usize,
    docs: &[u32],
    params: &OrderParams,
    progress: &dyn Progress,
) -> Result<PartOrder> {
    if let Some(w) = docs.windows(2).position(|w| w[0] >= w[1]) {
        return Err(Error::invalid(
            "docs",
            format!(
                "entry {} ({}) does not follow {}; a part's document ids must be strictly ascending",
                w + 1,
                docs[w + 1],
                docs[w]
            ),
        ));
    }
    let m = docs.len();
    check_unit(v, d, m, false)?;
    let mut active = vec![true; m];
    let mut clock = Clock::start();
    let (ids, sims, exact) = neighbours(v, d, &active, params, progress)?;
    let lists = KnnLists {
        n: m,
        k: params.k,
        ids: &ids,
        sims: Some(&sims),
        drop_self: false,
    };
    let (duplicates, path) = walk(&lists, &mut active, params, &mut clock, progress)?;
    let global = |i: u32| docs[i as usize];
    Ok(PartOrder {
        docs: docs.to_vec(),
        path: Path {
            docs: path.docs.iter().map(|&i| global(i)).collect(),
            segment_starts: path.segment_starts,
        },
        duplicates: duplicates
            .iter()
            .map(|x| Duplicate {
                doc: global(x.doc),
                of: global(x.of),
                sim: x.sim,
            })
            .collect(),
        k: params.k,
        ids: ids
            .iter()
            .map(|&j| if j < 0 { -1 } else { docs[j as usize] as i64 })
            .collect(),
        sims,
        exact,
    })
}

/// Joins the parts (`parts[p]` ordered from the part whose centroid is row
/// `p` of `centroids`) into an order of `ds`. `v` are the unit document vectors
/// the parts were made from (`[num_docs, d]`, zero rows for documents
/// without features, as [`super::document_vectors`] returns them); the report compares the joined path with a random
/// order of the same documents, as the local engine's does.
#[allow(clippy::too_many_arguments)]
pub fn join_parts(
    ds: &Dataset,
    params: &OrderParams,
    v: &[f32],
    d: usize,
    centroids: &[f32],
    parts: &[PartOrder],
    requested: usize,
    source: serde_json::Value,
    progress: &dyn Progress,
) -> Result<Ordered> {
    let (lengths, mut clock) = finish::begin(ds, params)?;
    let n = lengths.len();
    check_unit(v, d, n, true)?;
    let (active, featureless) = participants(&lengths, Some((v, d)));
    if centroids.len() != parts.len() * d {
        return Err(Error::invalid(
            "centroids",
            format!(
                "{} values for {} parts of dimension {d}; one centroid per part",
                centroids.len(),
                parts.len()
            ),
        ));
    }
    let k = params.k;
    let (ids, sims) = gather_lists(parts, &active, k)?;
    progress.check()?;
    let mut path = Path {
        docs: Vec::with_capacity(n),
        segment_starts: vec![0],
    };
    let order = chain(centroids, d);
    for &p in &order {
        let base = path.docs.len() as u64;
        path.docs.extend(&parts[p].path.docs);
        let starts = parts[p].path.segment_starts.iter().skip(1);
        path.segment_starts.extend(starts.map(|s| s + base));
    }
    let lists = KnnLists {
        n,
        k,
        ids: &ids,
        sims: Some(&sims),
        drop_self: false,
    };
    lists.validate()?;
    clock.lap("join");
    let mut duplicates: Vec<Duplicate> = parts.iter().flat_map(|p| p.duplicates.clone()).collect();
    duplicates.sort_by_key(|x| x.doc);
    let exact = match parts.iter().filter(|p| p.exact).count() {
        0 => json!(false),
        e if e == parts.len() => json!(true),
        _ => json!("mixed"),
    };
    let mut settings = serde_json::Map::new();
    settings.insert("engine".into(), json!("ray"));
    settings.insert("k".into(), json!(k));
    settings.insert("exact_knn".into(), exact);
    settings.insert("partitions".into(), json!(parts.len()));
    settings.insert("partitions_requested".into(), json!(requested));
    let sizes: Vec<usize> = order.iter().map(|&p| parts[p].docs.len()).collect();
    settings.insert("partition_docs".into(), json!(sizes));
    let walked = Walked {
        lengths: &lengths,
        path,
        featureless: &featureless,
        duplicates,
        sim: Similarity::Vectors(v, d),
        knn: &lists,
        settings,
    };
    finish::finish(ds, params, walked, source, clock)
}

/// The parts' kNN lists as `[n, k]` lists of the whole dataset (`-1` rows for
/// documents in no part), after checking that every active document is in
/// exactly one part's path or duplicates, and nothing else is.
fn gather_lists(parts: &[PartOrder], active: &[bool], k: usize) -> Result<(Vec<i64>, Vec<f32>)> {
    let n = active.len();
    let bad = |what: String| {
        Error::invalid(
            "partitions",
            format!("{what}; the parts must be ordered from these embeddings' partitions"),
        )
    };
    let mut ids = vec![-1i64; n * k];
    let mut sims = vec![0f32; n * k];
    let mut seen = vec![false; n];
    for (p, part) in parts.iter().enumerate() {
        let m = part.docs.len();
        if part.k != k || part.ids.len() != m * k || part.sims.len() != m * k {
            return Err(bad(format!(
                "part {p} has {} neighbour ids for {m} documents with k = {} (expected k = {k})",
                part.ids.len(),
                part.k
            )));
        }
        let listed = part
            .path
            .docs
            .iter()
            .chain(part.duplicates.iter().map(|x| &x.doc));
        for &doc in listed {
            let i = doc as usize;
            if i >= n || !active[i] || std::mem::replace(&mut seen[i], true) {
                return Err(bad(format!(
                    "part {p} lists document {doc}, which is out of range, has no content or is listed twice"
                )));
            }
        }
        for (r, &doc) in part.docs.iter().enumerate() {
            let at = doc as usize * k;
            if at + k > ids.len() {
                return Err(bad(format!("part {p} holds document {doc}, out of range")));
            }
            ids[at..at + k].copy_from_slice(&part.ids[r * k..(r + 1) * k]);
            sims[at..at + k].copy_from_slice(&part.sims[r * k..(r + 1) * k]);
        }
    }
    if let Some(i) = (0..n).find(|&i| active[i] && !seen[i]) {
        return Err(bad(format!("document {i} is in no part's order")));
    }
    Ok((ids, sims))
}

#[cfg(test)]
#[path = "join_tests.rs"]
mod tests;
