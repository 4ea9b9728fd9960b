//! The step every engine ends with: the path (the documents without features
//! appended as a last segment) laid out as flowing contexts, its report
//! against a random order of the same documents, and the order file's
//! metadata naming the engine and the settings.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{json, Map, Value};

use super::dedup::Duplicate;
use super::graph::KnnLists;
use super::report::{self, Similarity};
use super::traverse::Path;
use super::{OrderParams, Ordered};
use crate::error::{Error, Result};
use crate::order_file::Order;
use crate::shard::Dataset;

/// Seconds spent per phase.
pub(super) struct Clock {
    last: Instant,
    pub(super) seconds: BTreeMap<String, f64>,
}

/// The documents' lengths of `ds` and a started clock, once `params` are
/// checked: how both engines begin.
pub(super) fn begin(ds: &Dataset, params: &OrderParams) -> Result<(Vec<u64>, Clock)> {
    // The loader's limits, so that every order written can be trained on.
    crate::plan::Plan::row_len(params.seq_len)?;
    if let Some(t) = params.dedup.filter(|t| !t.is_finite()) {
        return Err(Error::invalid(
            "dedup",
            format!("{t} is not a similarity threshold; give a number such as 0.95, or None to keep every document"),
        ));
    }
    Ok((ds.doc_lengths()?, Clock::start()))
}

impl Clock {
    pub(super) fn start() -> Self {
        Clock {
            last: Instant::now(),
            seconds: BTreeMap::new(),
        }
    }

    /// Books the time since the last lap under `name`.
    pub(super) fn lap(&mut self, name: &str) {
        *self.seconds.entry(name.to_string()).or_default() += self.last.elapsed().as_secs_f64();
        self.last = Instant::now();
    }
}

/// What an engine produced, ready to be written.
pub(super) struct Walked<'a> {
    /// Document lengths in tokens, one per document of the dataset.
    pub lengths: &'a [u64],
    /// The traversal, in document ids of the dataset.
    pub path: Path,
    /// Non-empty documents without features, placed after the path.
    pub featureless: &'a [u32],
    /// Near-duplicates left out, by ascending id.
    pub duplicates: Vec<Duplicate>,
    /// Where pair similarities come from.
    pub sim: Similarity<'a>,
    /// The kNN lists (edge statistics of the report).
    pub knn: &'a KnnLists<'a>,
    /// Engine-specific metadata (`engine`, `k`, `exact_knn`, ...).
    pub settings: Map<String, Value>,
}

/// Lays out, reports and describes `w` as an order of `ds`.
pub(super) fn finish(
    ds: &Dataset,
    params: &OrderParams,
    w: Walked<'_>,
    source: Value,
    mut clock: Clock,
) -> Result<Ordered> {
    let mut path = w.path;
    if !w.featureless.is_empty() {
        path.docs.extend(w.featureless);
        path.segment_starts.push(path.docs.len() as u64);
    }
    let mut rep = report::report(
        &path,
        w.lengths,
        params.seq_len + 1,
        &w.sim,
        w.knn,
        params.seed,
    );
    rep.duplicates = w.duplicates.len() as u64;
    rep.featureless = w.featureless.len() as u64;
    clock.lap("report");
    rep.seconds = clock.seconds;

    // Timings stay out of the file: the same inputs and seed give the same bytes.
    let mut stored = rep.clone();
    stored.seconds.clear();
    let mut meta = w.settings;
    for (key, value) in [
        ("method", json!("iclm")),
        ("variant", json!(params.variant.name())),
        ("seq_len", json!(params.seq_len)),
        ("dedup_threshold", json!(params.dedup)),
        ("seed", json!(params.seed)),
        ("source", source),
        ("report", json!(stored)),
        (
            "duplicates",
            w.duplicates
                .iter()
                .map(|d| json!([d.doc, d.of, d.sim]))
                .collect(),
        ),
    ] {
        meta.insert(key.to_string(), value);
    }
    let order = Order::from_u32(
        ds,
        &path.docs,
        &path.segment_starts,
        true,
        &Value::Object(meta).to_string(),
    )?;
    Ok(Ordered {
        order,
        report: rep,
        duplicates: w.duplicates,
    })
}
