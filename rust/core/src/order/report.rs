//! The quality report of an order: how similar adjacent documents inside a
//! training context are, against the same documents in a random order, plus
//! deduplication and path statistics. Stored in the order file's metadata.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::graph::KnnLists;
use super::traverse::Path;
use crate::prefetch::prefetch;
use crate::shuffle::Permutation;

/// Bins of the adjacent-similarity histograms, over `[-1, 1]`.
pub const BINS: usize = 40;

/// Where pair similarities come from.
#[derive(Clone, Copy)]
pub enum Similarity<'a> {
    /// Unit-length embeddings, row-major `[n, dim]`: every pair is known.
    Vectors(&'a [f32], usize),
    /// Only kNN edges are known.
    Edges(&'a KnnLists<'a>),
    /// Every pair is known through a function (vectors kept on disk).
    Pairs(&'a (dyn Fn(u32, u32) -> f32 + Sync)),
}

impl std::fmt::Debug for Similarity<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Similarity::Vectors(..) => "Similarity::Vectors",
            Similarity::Edges(_) => "Similarity::Edges",
            Similarity::Pairs(_) => "Similarity::Pairs",
        })
    }
}

impl Similarity<'_> {
    fn of(&self, a: u32, b: u32) -> Option<f32> {
        match *self {
            Similarity::Vectors(v, d) => {
                let (x, y) = (&v[a as usize * d..][..d], &v[b as usize * d..][..d]);
                Some(x.iter().zip(y).map(|(p, q)| p * q).sum())
            }
            Similarity::Edges(g) => g.edge(a as usize, b),
            Similarity::Pairs(f) => Some(f(a, b)),
        }
    }
}

/// Adjacent-pair statistics of one order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PairStats {
    /// Adjacent document pairs sharing a training context (row).
    pub pairs: u64,
    /// Of those, pairs joined by a kNN edge.
    pub edges: u64,
    /// Pairs whose similarity is known (all of them with embeddings).
    pub measured: u64,
    /// Mean similarity of the measured pairs.
    pub mean_similarity: f64,
    /// Histogram of the measured similarities over `[-1, 1]`, [`BINS`] bins.
    pub histogram: Vec<u64>,
}

/// Everything `tokenloom order --report` prints.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Documents in the dataset.
    pub docs: u64,
    /// Documents in the order.
    pub ordered: u64,
    /// Empty documents (no tokens), left out.
    pub empty: u64,
    /// Near-duplicates left out.
    pub duplicates: u64,
    /// Documents without features (e.g. only an EOS id), placed after the path.
    pub featureless: u64,
    /// Path segments (each restart begins one).
    pub segments: u64,
    /// Mean documents per segment.
    pub mean_segment_docs: f64,
    /// Longest segment, in documents.
    pub max_segment_docs: u64,
    /// Segments of a single document.
    pub single_doc_segments: u64,
    /// Training rows (`seq_len + 1` tokens) the order fills.
    pub rows: u64,
    /// Adjacent pairs inside rows, in this order.
    pub ordered_pairs: PairStats,
    /// The same documents in a random order.
    pub random_pairs: PairStats,
    /// `ordered_pairs.mean_similarity / random_pairs.mean_similarity` (0 if undefined).
    pub similarity_ratio: f64,
    /// "embeddings" (all pairs measured) or "knn" (only kNN edges known).
    pub similarity_source: String,
    /// Seconds spent per phase.
    pub seconds: std::collections::BTreeMap<String, f64>,
    /// The score under an embedder that did not build the order, and labels
    /// (when asked for; see [`score`](super::score)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub independent: Option<super::score::Independent>,
}

impl Report {
    /// The report in one line (the first line of every printed report):
    /// documents ordered, near-duplicates left out, segments and adjacent
    /// similarity against the random order.
    pub fn summary(&self) -> String {
        format!(
            "{} of {} documents in {} segments; adjacent similarity {:.3} vs {:.3} at random ({:.2}x); {} near-duplicates left out",
            self.ordered,
            self.docs,
            self.segments,
            self.ordered_pairs.mean_similarity,
            self.random_pairs.mean_similarity,
            self.similarity_ratio,
            self.duplicates
        )
    }
}

/// Statistics of adjacent documents that share a row of `row` tokens when
/// `docs` are laid end to end. Computed in parallel over stretches of the
/// order, each starting from the token offset of its first document.
pub fn pair_stats(
    docs: &[u32],
    lengths: &[u64],
    row: u64,
    sim: &Similarity<'_>,
    knn: &KnnLists<'_>,
) -> PairStats {
    stats_by_stretches(docs, lengths, row, sim, knn, 1 << 14)
}

/// [`pair_stats`] over stretches of `stretch` documents.
fn stats_by_stretches(
    docs: &[u32],
    lengths: &[u64],
    row: u64,
    sim: &Similarity<'_>,
    knn: &KnnLists<'_>,
    stretch: usize,
) -> PairStats {
    let mut starts = Vec::with_capacity(docs.len() / stretch.max(1) + 1);
    let mut end = 0u64;
    for chunk in docs.chunks(stretch) {
        starts.push(end);
        end += chunk.iter().map(|&d| lengths[d as usize]).sum::<u64>();
    }
    // Per-stretch results, combined in order: the same inputs give the same bits.
    let parts: Vec<(PairStats, f64)> = starts
        .par_iter()
        .enumerate()
        .map(|(c, &start)| {
            // Pairs whose first document lies in this stretch.
            let part = &docs[c * stretch
                ..docs
                    .len()
                    .min((c + 1).saturating_mul(stretch).saturating_add(1))];
            stretch_stats(part, start, lengths, row, sim, knn)
        })
        .collect();
    let mut st = PairStats {
        histogram: vec![0; BINS],
        ..PairStats::default()
    };
    let mut total = 0f64;
    for (b, y) in parts {
        st.pairs += b.pairs;
        st.edges += b.edges;
        st.measured += b.measured;
        for (h, g) in st.histogram.iter_mut().zip(&b.histogram) {
            *h += g;
        }
        total += y;
    }
    if st.measured > 0 {
        st.mean_similarity = total / st.measured as f64;
    }
    st
}

/// [`pair_stats`] of one stretch whose first document starts at token
/// `start`, with the sum of the measured similarities.
fn stretch_stats(
    docs: &[u32],
    start: u64,
    lengths: &[u64],
    row: u64,
    sim: &Similarity<'_>,
    knn: &KnnLists<'_>,
) -> (PairStats, f64) {
    let mut st = PairStats {
        histogram: vec![0; BINS],
        ..PairStats::default()
    };
    let mut end = start;
    let mut total = 0f64;
    // Documents are visited in a random order (the baseline) or along a walk
    // that jumps between rows: load what a pair a few steps ahead will read.
    const AHEAD: usize = 8;
    for (i, w) in docs.windows(2).enumerate() {
        if let Some(&a) = docs.get(i + AHEAD) {
            let a = a as usize;
            prefetch(&lengths[a]);
            prefetch(&knn.ids[a * knn.k]);
            if let Similarity::Vectors(v, d) = sim {
                prefetch(&v[a * d]);
            }
        }
        end += lengths[w[0] as usize];
        if end % row == 0 {
            continue; // the next document starts a new row
        }
        st.pairs += 1;
        let edge = knn.edge(w[0] as usize, w[1]);
        st.edges += edge.is_some() as u64;
        let s = match sim {
            Similarity::Vectors(..) | Similarity::Pairs(_) => sim.of(w[0], w[1]),
            Similarity::Edges(_) => edge,
        };
        if let Some(s) = s {
            st.measured += 1;
            total += s as f64;
            let bin = (((s.clamp(-1.0, 1.0) + 1.0) / 2.0) * BINS as f32) as usize;
            st.histogram[bin.min(BINS - 1)] += 1;
        }
    }
    (st, total)
}

/// The report of `path` (all of it, featureless tail included), with a
/// random order of the same documents (seeded) as the baseline.
pub fn report(
    path: &Path,
    lengths: &[u64],
    row: u64,
    sim: &Similarity<'_>,
    knn: &KnnLists<'_>,
    seed: u64,
) -> Report {
    let segs: Vec<u64> = path
        .segment_starts
        .windows(2)
        .map(|w| w[1] - w[0])
        .collect();
    let random: Vec<u32> = {
        let p = Permutation::new(path.docs.len() as u64, seed ^ 0x7261_6e64_6f6d);
        (0..path.docs.len() as u64)
            .into_par_iter()
            .map(|i| path.docs[p.get(i) as usize])
            .collect()
    };
    let (ordered_pairs, random_pairs) = rayon::join(
        || pair_stats(&path.docs, lengths, row, sim, knn),
        || pair_stats(&random, lengths, row, sim, knn),
    );
    let tokens: u64 = path.docs.iter().map(|&d| lengths[d as usize]).sum();
    Report {
        docs: lengths.len() as u64,
        ordered: path.docs.len() as u64,
        empty: lengths.iter().filter(|&&l| l == 0).count() as u64,
        segments: segs.len() as u64,
        mean_segment_docs: if segs.is_empty() {
            0.0
        } else {
            path.docs.len() as f64 / segs.len() as f64
        },
        max_segment_docs: segs.iter().copied().max().unwrap_or(0),
        single_doc_segments: segs.iter().filter(|&&s| s == 1).count() as u64,
        rows: tokens.div_ceil(row),
        similarity_ratio: if random_pairs.mean_similarity.abs() > 1e-12 {
            ordered_pairs.mean_similarity / random_pairs.mean_similarity
        } else {
            0.0
        },
        ordered_pairs,
        random_pairs,
        similarity_source: match sim {
            Similarity::Vectors(..) | Similarity::Pairs(_) => "embeddings".into(),
            Similarity::Edges(_) => "knn".into(),
        },
        ..Report::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Stretches computed apart add up to one pass over the whole order.
        #[test]
        fn stretches_add_up_to_one_pass(
            lengths in proptest::collection::vec(0u64..9, 2..60),
            row in 1u64..20,
            stretch in 1usize..7,
            seed in any::<u64>(),
        ) {
            let n = lengths.len();
            let k = 3;
            let ids: Vec<i64> = (0..n * k)
                .map(|e| ((e / k) as u64 + 1 + crate::shuffle::mix64(seed ^ e as u64) % (n as u64 - 1)) as i64 % n as i64)
                .collect();
            let sims: Vec<f32> = (0..n * k).map(|e| (e % 7) as f32 / 7.0).collect();
            let knn = KnnLists { n, k, ids: &ids, sims: Some(&sims), drop_self: false };
            let docs: Vec<u32> = (0..n as u32).rev().collect();
            let sim = Similarity::Edges(&knn);
            let whole = stats_by_stretches(&docs, &lengths, row, &sim, &knn, usize::MAX);
            let parts = stats_by_stretches(&docs, &lengths, row, &sim, &knn, stretch);
            prop_assert_eq!(&whole.histogram, &parts.histogram);
            prop_assert_eq!((whole.pairs, whole.edges, whole.measured), (parts.pairs, parts.edges, parts.measured));
            prop_assert!((whole.mean_similarity - parts.mean_similarity).abs() < 1e-9);
            // Pairs inside rows: one fewer than the documents, less each row start.
            let mut end = 0;
            let mut want = 0;
            for w in docs.windows(2) {
                end += lengths[w[0] as usize];
                want += (end % row != 0) as u64;
            }
            prop_assert_eq!(whole.pairs, want);
        }
    }
}
