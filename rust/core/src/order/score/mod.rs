//! Scoring an order independently: with document vectors from an embedder
//! that did not build it, and with labels where the corpus has them. The
//! report's own adjacent similarity restates the walk's objective (it uses
//! the vectors that built the kNN graph); these figures do not.
//!
//! - Similarity of adjacent documents in rows, as the difference to a random
//!   order of the same documents, and normalised as
//!   `(s_order - s_random) / (s_1NN - s_random)`: 0 for random, 1 when every
//!   document sits next to its true nearest neighbour (`s_1NN`, the mean
//!   similarity of each ordered document to its nearest other one).
//! - Label agreement of adjacent documents in rows, against the random order.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{vectors, OrderParams};
use crate::error::{Error, Result};
use crate::order_file::Order;
use crate::progress::Progress;
use crate::shard::Dataset;
use crate::shuffle::Permutation;

/// What an order is scored with.
#[derive(Clone, Copy, Debug)]
pub struct Scorer<'a> {
    /// Name of the embedder that made `vectors` (for the report).
    pub name: &'a str,
    /// Row-major `[num_docs, dim]` vectors, one row per document of the
    /// dataset (`None`: labels only).
    pub vectors: Option<(&'a [f32], usize)>,
    /// One label per document of the dataset, negative for none.
    pub labels: Option<&'a [i64]>,
}

/// Adjacent-document similarity under the scoring vectors.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScoredSimilarity {
    /// Mean cosine similarity of adjacent documents in rows, this order.
    pub ordered: f64,
    /// The same, the documents in a random order (same packing).
    pub random: f64,
    /// Mean similarity of each ordered document to its nearest other one.
    pub nearest: f64,
    /// `ordered - random`.
    pub difference: f64,
    /// `(ordered - random) / (nearest - random)` (0 if undefined).
    pub normalised: f64,
    /// Adjacent pairs in rows.
    pub pairs: u64,
    /// Whether `nearest` came from an exact search.
    pub exact: bool,
}

/// Agreement of labels of adjacent documents in rows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LabelAgreement {
    /// Share of adjacent pairs (both labelled) with the same label, this order.
    pub ordered: f64,
    /// The same, the documents in a random order (same packing).
    pub random: f64,
    /// `ordered - random`.
    pub difference: f64,
    /// Expected agreement of random pairs: the sum of squared label shares.
    pub chance: f64,
    /// Adjacent pairs in rows with both documents labelled.
    pub pairs: u64,
}

/// The independent score of an order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Independent {
    /// The scoring embedder's name ("" with labels only).
    pub scorer: String,
    /// Similarity figures (with vectors).
    pub similarity: Option<ScoredSimilarity>,
    /// Label figures (with labels).
    pub labels: Option<LabelAgreement>,
}

/// Calls `f(a, b)` for each pair of consecutive documents that share a row
/// when `groups` are laid out as the loader lays them: each group from the
/// start of a row, its documents end to end in rows of `row` tokens. `b`
/// shares `a`'s row when it starts inside it at an input position (the
/// row's last token is only a label: a document starting there attends to
/// nothing before it).
fn row_pairs(groups: &[&[u64]], lengths: &[u64], row: u64, mut f: impl FnMut(u64, u64)) {
    for g in groups {
        let (mut end, mut prev) = (0u64, None);
        // Empty documents take no place in a row.
        for &doc in g.iter().filter(|&&d| lengths[d as usize] > 0) {
            if let Some(a) = prev {
                let at = end % row;
                if at != 0 && at != row - 1 {
                    f(a, doc);
                }
            }
            end += lengths[doc as usize];
            prev = Some(doc);
        }
    }
}

/// The groups of consecutive documents an order lays out from a row start:
/// all of them when contexts flow, else each context.
fn groups<'a>(order: &Order, docs: &'a [u64]) -> Vec<&'a [u64]> {
    if order.flow() {
        return vec![docs];
    }
    let s = order.context_starts().to_vec();
    s.windows(2)
        .map(|w| &docs[w[0] as usize..w[1] as usize])
        .collect()
}

/// Scores `order` (over `ds`, rows of `seq_len + 1` tokens) with `scorer`;
/// the random baseline is a permutation seeded by `seed`, packed the same way.
pub fn score(
    ds: &Dataset,
    order: &Order,
    seq_len: u64,
    scorer: &Scorer<'_>,
    seed: u64,
    progress: &dyn Progress,
) -> Result<Independent> {
    order.check_dataset(ds)?;
    let n = ds.num_docs() as usize;
    let row = crate::plan::Plan::row_len(seq_len)?;
    let lengths = ds.doc_lengths()?;
    // The ids widened once (the file may hold them as u32): the score holds
    // the order and its random baseline, O(N) either way.
    let ids = order.docs().to_vec();
    let docs = &ids[..];
    let p = Permutation::new(docs.len() as u64, seed ^ 0x7261_6e64_6f6d);
    let random: Vec<u64> = (0..docs.len() as u64)
        .map(|i| docs[p.get(i) as usize])
        .collect();
    let (ours, theirs) = (groups(order, docs), groups(order, &random));
    let similarity = match scorer.vectors {
        Some((v, d)) => Some(similarity(
            docs, n, v, d, &ours, &theirs, &lengths, row, seed, progress,
        )?),
        None => None,
    };
    let labels = match scorer.labels {
        Some(l) => Some(agreement(docs, n, l, &ours, &theirs, &lengths, row)?),
        None => None,
    };
    Ok(Independent {
        scorer: scorer.name.to_string(),
        similarity,
        labels,
    })
}

#[allow(clippy::too_many_arguments)]
fn similarity(
    docs: &[u64],
    n: usize,
    v: &[f32],
    d: usize,
    ours: &[&[u64]],
    theirs: &[&[u64]],
    lengths: &[u64],
    row: u64,
    seed: u64,
    progress: &dyn Progress,
) -> Result<ScoredSimilarity> {
    if d == 0 || v.len() != n * d {
        return Err(Error::invalid(
            "scoring embeddings",
            format!(
                "they have {} rows of {d} values but the dataset has {n} documents; give one row per document of the dataset, in dataset order",
                v.len().checked_div(d).unwrap_or(0)
            ),
        ));
    }
    // The ordered documents' vectors, at unit length, in order.
    let mut unit = Vec::with_capacity(docs.len() * d);
    let mut slot = vec![u32::MAX; n];
    for (i, &doc) in docs.iter().enumerate() {
        let x = &v[doc as usize * d..(doc as usize + 1) * d];
        let norm = x.iter().map(|&a| a as f64 * a as f64).sum::<f64>().sqrt();
        if !norm.is_finite() || norm == 0.0 {
            return Err(Error::invalid(
                "scoring embeddings",
                format!("document {doc}'s row is all zeros or not finite; every ordered document needs a usable embedding"),
            ));
        }
        unit.extend(x.iter().map(|&a| (a as f64 / norm) as f32));
        slot[doc as usize] = i as u32;
    }
    let cos = |a: u64, b: u64| -> f64 {
        let (i, j) = (slot[a as usize] as usize, slot[b as usize] as usize);
        let (x, y) = (&unit[i * d..(i + 1) * d], &unit[j * d..(j + 1) * d]);
        x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>() as f64
    };
    let mean_over = |gs: &[&[u64]]| {
        let (mut total, mut pairs) = (0f64, 0u64);
        row_pairs(gs, lengths, row, |a, b| {
            total += cos(a, b);
            pairs += 1;
        });
        (if pairs > 0 { total / pairs as f64 } else { 0.0 }, pairs)
    };
    let ((ordered, pairs), (random, _)) = (mean_over(ours), mean_over(theirs));
    let m = docs.len();
    let (nearest, exact) = if m < 2 {
        (0.0, true)
    } else {
        let params = OrderParams {
            k: 1,
            seed,
            ..OrderParams::default()
        };
        let (_, sims, exact) = vectors::neighbours(&unit, d, &vec![true; m], &params, progress)?;
        (
            sims.iter().map(|&s| s as f64).sum::<f64>() / m as f64,
            exact,
        )
    };
    let span = nearest - random;
    Ok(ScoredSimilarity {
        ordered,
        random,
        nearest,
        difference: ordered - random,
        normalised: if span.abs() > 1e-9 {
            (ordered - random) / span
        } else {
            0.0
        },
        pairs,
        exact,
    })
}

fn agreement(
    docs: &[u64],
    n: usize,
    labels: &[i64],
    ours: &[&[u64]],
    theirs: &[&[u64]],
    lengths: &[u64],
    row: u64,
) -> Result<LabelAgreement> {
    if labels.len() != n {
        return Err(Error::invalid(
            "labels",
            format!(
                "{} labels for {n} documents; give one label per document of the dataset (negative for none)",
                labels.len()
            ),
        ));
    }
    let share = |gs: &[&[u64]]| {
        let (mut same, mut pairs) = (0u64, 0u64);
        row_pairs(gs, lengths, row, |a, b| {
            let (x, y) = (labels[a as usize], labels[b as usize]);
            if x >= 0 && y >= 0 {
                pairs += 1;
                same += (x == y) as u64;
            }
        });
        (
            if pairs > 0 {
                same as f64 / pairs as f64
            } else {
                0.0
            },
            pairs,
        )
    };
    let ((ordered, pairs), (random, _)) = (share(ours), share(theirs));
    let mut counts = std::collections::HashMap::new();
    let mut labelled = 0u64;
    for &doc in docs {
        let l = labels[doc as usize];
        if l >= 0 {
            *counts.entry(l).or_insert(0u64) += 1;
            labelled += 1;
        }
    }
    let chance = counts
        .values()
        .map(|&c| (c as f64 / labelled.max(1) as f64).powi(2))
        .sum();
    Ok(LabelAgreement {
        ordered,
        random,
        difference: ordered - random,
        chance,
        pairs,
    })
}

/// `order` with `independent` added to the report in its metadata (the
/// order itself unchanged).
pub fn annotate(ds: &Dataset, order: &Order, independent: &Independent) -> Result<Order> {
    let mut meta: Value = serde_json::from_str(order.meta()).unwrap_or(Value::Null);
    let report = meta
        .get_mut("report")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| {
            Error::invalid(
                "order",
                "this order carries no report (it was written by write_order)",
            )
        })?;
    let value =
        serde_json::to_value(independent).map_err(|e| Error::invalid("report", e.to_string()))?;
    report.insert("independent".into(), value);
    Order::with_meta(
        ds,
        order.docs().to_vec(),
        order.context_starts().to_vec(),
        order.flow(),
        meta.to_string(),
    )
}

#[cfg(test)]
mod tests;
