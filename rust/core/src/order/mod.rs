//! In-Context Pretraining (Shi et al. 2023): order documents so that each
//! training context holds related ones. Embeddings (built-in or given) →
//! nearest-neighbour graph → near-duplicate removal → greedy maximum-TSP
//! traversal → an order file whose documents flow into rows of `seq_len`;
//! the loader shuffles those rows, so adjacent training contexts differ.

pub mod dedup;
pub mod defaults;
pub mod embed;
mod finish;
pub mod graph;
mod kmeans;
pub mod knn;
pub mod npy;
pub mod partition;
pub mod report;
pub mod score;
pub mod seal;
pub mod staged;
pub mod store;
mod topk;
pub mod traverse;
mod vectors;

use std::borrow::Cow;

use serde_json::json;

pub use dedup::Duplicate;
pub use embed::EmbedParams;
pub use graph::{Graph, KnnLists};
pub use knn::EXACT_BELOW;
pub use partition::chain;
pub use report::Report;
pub use score::{Independent, Scorer};
pub use traverse::{Path, ReferenceParams};
pub use vectors::{document_vectors, participants, Values};

use crate::error::{Error, Result};
use crate::order_file::Order;
use crate::progress::Progress;
use crate::shard::Dataset;
use finish::{Clock, Walked};

/// Which traversal to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The paper: undirected graph, minimum-degree starts, one path that
    /// restarts only when stuck (or after `max_segment` documents, 0: never).
    Paper {
        /// Segment cap in documents (0: none).
        max_segment: usize,
    },
    /// The public reference script (see [`traverse::traverse_reference`]).
    Reference(ReferenceParams),
}

impl Variant {
    fn name(&self) -> &'static str {
        match self {
            Variant::Paper { .. } => "paper",
            Variant::Reference(_) => "reference",
        }
    }
}

/// Settings of [`order_dataset`].
#[derive(Clone, Debug)]
pub struct OrderParams {
    /// Training context length in tokens (rows hold `seq_len + 1`).
    pub seq_len: u64,
    /// Neighbours per document.
    pub k: usize,
    /// Near-duplicate threshold on similarity (`None`: keep everything).
    pub dedup: Option<f32>,
    /// The traversal.
    pub variant: Variant,
    /// Seed of tie-breaking and the report's random baseline.
    pub seed: u64,
    /// Exact kNN (`None`: exact below [`EXACT_BELOW`] documents).
    pub exact: Option<bool>,
    /// The built-in embedder's settings (used with [`Input::Builtin`]).
    pub embed: EmbedParams,
}

impl Default for OrderParams {
    fn default() -> Self {
        OrderParams {
            seq_len: defaults::SEQ_LEN,
            k: defaults::K,
            dedup: Some(defaults::DEDUP as f32),
            variant: Variant::Paper {
                max_segment: defaults::MAX_SEGMENT,
            },
            seed: defaults::SEED,
            exact: None,
            embed: EmbedParams::default(),
        }
    }
}

/// What the order is computed from.
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    /// The built-in embedder over token ids.
    Builtin,
    /// Given embeddings, row-major `[num_docs, dim]` (normalised here;
    /// float32 rows already of unit length are read in place).
    Embeddings {
        /// The values.
        data: Values<'a>,
        /// Columns.
        dim: usize,
    },
    /// A kNN matrix computed elsewhere.
    Knn(KnnLists<'a>),
}

/// An order with its report and the near-duplicates it left out.
#[derive(Clone, Debug)]
pub struct Ordered {
    /// The order (flowing contexts), ready to write.
    pub order: Order,
    /// Its quality report.
    pub report: Report,
    /// Near-duplicates left out.
    pub duplicates: Vec<Duplicate>,
}

/// Orders `ds` for In-Context Pretraining on this machine. `source`
/// describes the input (file names, settings) for the order file's metadata.
pub fn order_dataset(
    ds: &Dataset,
    params: &OrderParams,
    input: Input<'_>,
    source: serde_json::Value,
    progress: &dyn Progress,
) -> Result<Ordered> {
    let (lengths, mut clock) = finish::begin(ds, params)?;
    let n = lengths.len();
    let vectors = vectors::document_vectors(ds, params, input, progress)?;
    clock.lap("embed");
    let vecs = vectors.as_ref().map(|(v, d)| (v.as_ref(), *d));
    let (mut active, featureless) = vectors::participants(&lengths, vecs);

    let (ids, sims, k, exact) = match (vecs, input) {
        (Some((v, d)), _) => {
            let (ids, sims, exact) = vectors::neighbours(v, d, &active, params, progress)?;
            clock.lap("knn");
            (
                Cow::Owned(ids),
                Some(Cow::Owned(sims)),
                params.k,
                Some(exact),
            )
        }
        // A matrix computed elsewhere is read in place (it may be a large memory map).
        (None, Input::Knn(l)) => (Cow::Borrowed(l.ids), l.sims.map(Cow::Borrowed), l.k, None),
        (None, _) => return Err(Error::invalid("input", "no embeddings and no kNN matrix")),
    };
    let lists = KnnLists {
        n,
        k,
        ids: &ids,
        sims: sims.as_deref(),
        drop_self: matches!(input, Input::Knn(l) if l.drop_self),
    };
    let (duplicates, path) = walk(&lists, &mut active, params, &mut clock, progress)?;
    let sim = match vecs {
        Some((v, d)) => report::Similarity::Vectors(v, d),
        None => report::Similarity::Edges(&lists),
    };
    let mut settings = serde_json::Map::new();
    settings.insert("engine".into(), json!("local"));
    settings.insert("k".into(), json!(k));
    settings.insert("exact_knn".into(), json!(exact));
    let walked = Walked {
        lengths: &lengths,
        path,
        featureless: &featureless,
        duplicates,
        sim,
        knn: &lists,
        settings,
    };
    finish::finish(ds, params, walked, source, clock)
}

/// The kNN lists checked, near-duplicates taken out of `active`, and the
/// traversal of the documents left: the part of the pipeline that both
/// engines (and every partition of the Ray engine) run. Only the paper's
/// walk needs the undirected graph; everything else reads the directed lists.
fn walk(
    lists: &KnnLists<'_>,
    active: &mut [bool],
    params: &OrderParams,
    clock: &mut Clock,
    progress: &dyn Progress,
) -> Result<(Vec<Duplicate>, Path)> {
    lists.validate()?;
    clock.lap("validate");
    let duplicates = match params.dedup {
        Some(t) if lists.sims.is_none() => {
            return Err(Error::invalid(
                "dedup",
                format!("removing near-duplicates above {t} needs similarities; pass the kNN similarities too, or dedup=None"),
            ))
        }
        Some(t) => dedup::dedup(lists, t, active),
        None => Vec::new(),
    };
    clock.lap("dedup");
    progress.check()?;
    let path = match params.variant {
        Variant::Paper { max_segment } => {
            let graph = Graph::from_valid_knn(lists)?;
            clock.lap("graph");
            traverse::traverse(&graph, active, params.seed, max_segment)
        }
        Variant::Reference(p) => traverse::traverse_reference(lists, active, &p),
    };
    clock.lap("traverse");
    Ok((duplicates, path))
}

#[cfg(test)]
mod tests;
