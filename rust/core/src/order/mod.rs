//! In-Context Pretraining (Shi et al. 2023): order documents so that each
//! training context holds related ones. Embeddings (built-in or given) →
//! nearest-neighbour graph → near-duplicate removal → greedy maximum-TSP
//! traversal → an order file whose documents flow into rows of `seq_len`;
//! the loader shuffles those rows, so adjacent training contexts differ.

pub mod dedup;
pub mod embed;
pub mod graph;
mod kmeans;
pub mod knn;
pub mod report;
pub mod store;
mod topk;
pub mod traverse;

use std::borrow::Cow;
use std::time::Instant;

use serde_json::json;

pub use dedup::Duplicate;
pub use embed::EmbedParams;
pub use graph::{Graph, KnnLists};
pub use knn::EXACT_BELOW;
pub use report::Report;
pub use traverse::{Path, ReferenceParams};

use crate::error::{Error, Result};
use crate::plan::Order;
use crate::progress::Progress;
use crate::shard::Dataset;

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
            seq_len: 8192,
            k: 10,
            dedup: Some(0.95),
            variant: Variant::Paper { max_segment: 0 },
            seed: 0,
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
    /// Given embeddings, row-major `[num_docs, dim]` (normalised here).
    Embeddings {
        /// The values.
        data: &'a [f32],
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

/// Orders `ds` for In-Context Pretraining. `source` describes the input
/// (file names, settings) for the order file's metadata.
pub fn order_dataset(
    ds: &Dataset,
    params: &OrderParams,
    input: Input<'_>,
    source: serde_json::Value,
    progress: &dyn Progress,
) -> Result<Ordered> {
    if params.seq_len == 0 {
        return Err(Error::invalid("seq_len", "must be at least 1"));
    }
    let lengths = ds.doc_lengths()?;
    let n = lengths.len();
    let mut seconds = std::collections::BTreeMap::new();
    let mut clock = Instant::now();
    let mut lap = |name: &str, seconds: &mut std::collections::BTreeMap<String, f64>| {
        seconds.insert(name.to_string(), clock.elapsed().as_secs_f64());
        clock = Instant::now();
    };

    let vectors: Option<(Vec<f32>, usize)> = match input {
        Input::Builtin => {
            let v = embed::embed_dataset(ds, &params.embed, progress)?;
            lap("embed", &mut seconds);
            Some((v, params.embed.dim))
        }
        Input::Embeddings { data, dim } => Some((normalized(data, dim, n)?, dim)),
        Input::Knn(_) => None,
    };
    let has_vector = |i: usize| match &vectors {
        Some((v, d)) => v[i * d..(i + 1) * d].iter().any(|&x| x != 0.0),
        None => true,
    };
    let featureless: Vec<u32> = (0..n)
        .filter(|&i| lengths[i] > 0 && !has_vector(i))
        .map(|i| i as u32)
        .collect();
    let mut active: Vec<bool> = (0..n).map(|i| lengths[i] > 0 && has_vector(i)).collect();

    let (ids, sims, k, exact) = match (&vectors, input) {
        (Some((v, d)), _) => {
            let exact = params
                .exact
                .unwrap_or(active.iter().filter(|&&a| a).count() < EXACT_BELOW);
            let (ids, sims) = neighbours(v, *d, &active, params.k, exact, params.seed, progress)?;
            lap("knn", &mut seconds);
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
    lists.validate()?;
    lap("validate", &mut seconds);

    let duplicates = match params.dedup {
        Some(t) if lists.sims.is_none() => {
            return Err(Error::invalid(
                "dedup",
                format!("removing near-duplicates above {t} needs similarities; pass the kNN similarities too, or dedup=None"),
            ))
        }
        Some(t) => dedup::dedup(&lists, t, &mut active),
        None => Vec::new(),
    };
    lap("dedup", &mut seconds);
    progress.check()?;

    // Only the paper's walk needs the undirected graph; everything else reads
    // the directed lists.
    let mut path = match params.variant {
        Variant::Paper { max_segment } => {
            let graph = Graph::from_valid_knn(&lists);
            lap("graph", &mut seconds);
            traverse::traverse(&graph, &active, params.seed, max_segment)
        }
        Variant::Reference(p) => traverse::traverse_reference(&lists, &active, &p),
    };
    if !featureless.is_empty() {
        path.docs.extend(&featureless);
        path.segment_starts.push(path.docs.len() as u64);
    }
    lap("traverse", &mut seconds);

    let sim = match &vectors {
        Some((v, d)) => report::Similarity::Vectors(v, *d),
        None => report::Similarity::Edges(&lists),
    };
    let mut rep = report::report(
        &path,
        &lengths,
        params.seq_len + 1,
        &sim,
        &lists,
        params.seed,
    );
    rep.duplicates = duplicates.len() as u64;
    rep.featureless = featureless.len() as u64;
    lap("report", &mut seconds);
    rep.seconds = seconds;

    // Timings stay out of the file: the same inputs and seed give the same bytes.
    let mut stored = rep.clone();
    stored.seconds.clear();
    let meta = json!({
        "method": "iclm",
        "variant": params.variant.name(),
        "seq_len": params.seq_len,
        "k": k,
        "exact_knn": exact,
        "dedup_threshold": params.dedup,
        "seed": params.seed,
        "source": source,
        "report": stored,
        "duplicates": duplicates.iter().map(|d| json!([d.doc, d.of, d.sim])).collect::<Vec<_>>(),
    });
    let order = Order::with_meta(
        ds,
        path.docs.iter().map(|&d| d as u64).collect(),
        path.segment_starts.clone(),
        true,
        meta.to_string(),
    )?;
    Ok(Ordered {
        order,
        report: rep,
        duplicates,
    })
}

/// Checks `[n, dim]` embeddings (finite, no zero rows) and returns them at
/// unit length.
fn normalized(data: &[f32], dim: usize, n: usize) -> Result<Vec<f32>> {
    let bad = |what: String| Error::invalid("embeddings", what);
    if dim == 0 || data.len() != n * dim {
        return Err(bad(format!(
            "expected [{n}, d] (one row per document of the dataset), got {} values with d = {dim}",
            data.len()
        )));
    }
    let mut out = data.to_vec();
    for (i, row) in out.chunks_exact_mut(dim).enumerate() {
        if let Some(j) = row.iter().position(|x| !x.is_finite()) {
            return Err(bad(format!("row {i} has {} at column {j}", row[j])));
        }
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm == 0.0 {
            return Err(bad(format!(
                "row {i} is all zeros; every document needs a non-zero embedding"
            )));
        }
        row.iter_mut().for_each(|x| *x /= norm);
    }
    Ok(out)
}

/// kNN over the active rows of `v`, as `[n, k]` global ids (-1 for inactive
/// rows) and similarities.
fn neighbours(
    v: &[f32],
    d: usize,
    active: &[bool],
    k: usize,
    exact: bool,
    seed: u64,
    progress: &dyn Progress,
) -> Result<(Vec<i64>, Vec<f32>)> {
    let rows: Vec<usize> = (0..active.len()).filter(|&i| active[i]).collect();
    if k == 0 || k >= rows.len() {
        return Err(Error::invalid(
            "k",
            format!(
                "{k} neighbours need more than {k} documents with content; this dataset has {}",
                rows.len()
            ),
        ));
    }
    let compact;
    let data: &[f32] = if rows.len() == active.len() {
        v
    } else {
        compact = rows
            .iter()
            .flat_map(|&i| v[i * d..(i + 1) * d].iter().copied())
            .collect::<Vec<f32>>();
        &compact
    };
    let g = if exact {
        knn::exact(data, rows.len(), d, k, progress)?
    } else {
        let params = knn::IvfParams {
            seed,
            exact_below: 0,
            ..knn::IvfParams::default()
        };
        knn::approximate(data, rows.len(), d, k, &params, progress)?
    };
    let n = active.len();
    let mut ids = vec![-1i64; n * k];
    let mut sims = vec![0f32; n * k];
    for (r, &i) in rows.iter().enumerate() {
        for (c, (&j, &s)) in g.neighbors(r).iter().zip(g.sims(r)).enumerate() {
            ids[i * k + c] = rows[j as usize] as i64;
            sims[i * k + c] = s;
        }
    }
    Ok((ids, sims))
}

#[cfg(test)]
mod tests;
