//! In-context ordering from Python: `order_dataset` runs the whole step with
//! the GIL released (tqdm progress, Ctrl-C cancels, nothing half-written)
//! and `order_meta` reads back how an order was made and its report.

use std::path::PathBuf;

use numpy::{PyArray1, PyReadonlyArray, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use tokenloom_core::order::{
    self, store, EmbedParams, Input, KnnLists, OrderParams, ReferenceParams, Variant,
};
use tokenloom_core::plan::Order;
use tokenloom_core::Dataset;

use crate::detach::run_detached;
use crate::progress::PyProgress;

pub fn slice<'a, T: numpy::Element, D: numpy::ndarray::Dimension>(
    a: &'a PyReadonlyArray<'_, T, D>,
    what: &str,
) -> PyResult<&'a [T]> {
    a.as_slice()
        .map_err(|_| PyValueError::new_err(format!("{what} must be a C-contiguous array")))
}

/// The traversal named `name` with its settings.
pub fn variant_of(
    name: &str,
    max_segment: usize,
    k_traverse: usize,
    min_segment: usize,
) -> PyResult<Variant> {
    match name {
        "paper" => Ok(Variant::Paper { max_segment }),
        "reference" => Ok(Variant::Reference(ReferenceParams {
            k_traverse,
            max_segment: if max_segment == 0 { 21 } else { max_segment },
            min_segment,
        })),
        other => Err(PyValueError::new_err(format!(
            "variant must be \"paper\" or \"reference\", got {other:?}"
        ))),
    }
}

/// Orders the dataset at `path` and writes `<path>/orders/<name>.order`;
/// returns the file's path and the report as JSON.
#[pyfunction]
#[pyo3(signature = (path, seq_len, name = "iclm", k = 10, dedup = Some(0.95), variant = "paper", max_segment = 0, k_traverse = 9, min_segment = 21, seed = 0, exact = None, dim = 256, max_tokens = 2048, embeddings = None, knn = None, knn_similarities = None, drop_self = false, source = "{}", progress = true))]
#[allow(clippy::too_many_arguments)]
pub fn order_dataset(
    py: Python<'_>,
    path: PathBuf,
    seq_len: u64,
    name: &str,
    k: usize,
    dedup: Option<f32>,
    variant: &str,
    max_segment: usize,
    k_traverse: usize,
    min_segment: usize,
    seed: u64,
    exact: Option<bool>,
    dim: usize,
    max_tokens: usize,
    embeddings: Option<PyReadonlyArray2<'_, f32>>,
    knn: Option<PyReadonlyArray2<'_, i64>>,
    knn_similarities: Option<PyReadonlyArray2<'_, f32>>,
    drop_self: bool,
    source: &str,
    progress: bool,
) -> PyResult<(PathBuf, String)> {
    let variant = variant_of(variant, max_segment, k_traverse, min_segment)?;
    let params = OrderParams {
        seq_len,
        k,
        dedup,
        variant,
        seed,
        exact,
        embed: EmbedParams {
            dim,
            max_tokens,
            seed,
            ..EmbedParams::default()
        },
    };
    let source: serde_json::Value = serde_json::from_str(source)
        .map_err(|e| PyValueError::new_err(format!("source must be JSON: {e}")))?;
    let emb = match &embeddings {
        Some(a) => Some((slice(a, "embeddings")?, a.shape()[1])),
        None => None,
    };
    let ids = match &knn {
        Some(a) => Some((slice(a, "knn")?, a.shape()[0], a.shape()[1])),
        None => None,
    };
    let sims = knn_similarities
        .as_ref()
        .map(|a| slice(a, "knn_similarities"))
        .transpose()?;
    crate::errors::to_py(store::order_path(&path, name))?;
    let bar = PyProgress::new(progress);
    let result = run_detached(py, || {
        let ds = Dataset::open(&path)?;
        let input = match (&emb, &ids) {
            (Some(_), Some(_)) => {
                return Err(tokenloom_core::Error::invalid(
                    "input",
                    "give embeddings or a kNN matrix, not both",
                ))
            }
            (Some((data, d)), None) => Input::Embeddings { data, dim: *d },
            (None, Some((data, n, k))) => Input::Knn(KnnLists {
                n: *n,
                k: *k,
                ids: data,
                sims,
                drop_self,
            }),
            (None, None) => Input::Builtin,
        };
        if let Input::Knn(l) = &input {
            if l.n as u64 != ds.num_docs() {
                return Err(tokenloom_core::Error::invalid(
                    "knn",
                    format!("the kNN matrix has {} rows but the dataset has {} documents; one row per document", l.n, ds.num_docs()),
                ));
            }
        }
        let out = order::order_dataset(&ds, &params, input, source, &bar)?;
        let file = store::save(&path, name, &out.order)?;
        let report = serde_json::to_string(&out.report)
            .map_err(|e| tokenloom_core::Error::invalid("report", e.to_string()))?;
        Ok((file, report))
    });
    if let Some(interrupt) = bar.take_interrupt() {
        return Err(interrupt);
    }
    result
}

/// The order `spec` (a name stored with the dataset at `path`, or an order
/// file), checked against that dataset: its file, document ids, context
/// starts, flow flag and metadata (JSON).
#[pyfunction]
#[allow(clippy::type_complexity)]
pub fn read_order<'py>(
    py: Python<'py>,
    path: PathBuf,
    spec: PathBuf,
) -> PyResult<(
    PathBuf,
    Bound<'py, PyArray1<u64>>,
    Bound<'py, PyArray1<u64>>,
    bool,
    String,
)> {
    let (file, o) = run_detached(py, move || {
        let file = store::resolve(&path, &spec)?;
        let ds = Dataset::open(&path)?;
        let o = Order::read(&file)?;
        o.check_dataset(&ds)?;
        Ok((file, o))
    })?;
    Ok((
        file,
        PyArray1::from_slice(py, o.docs()),
        PyArray1::from_slice(py, o.context_starts()),
        o.flow(),
        o.meta().to_string(),
    ))
}

/// The one-line summary of an order's report (its JSON, as stored in the
/// order file): the first line `tokenloom order` prints.
#[pyfunction]
pub fn report_summary(report: &str) -> PyResult<String> {
    let report: order::Report = crate::errors::to_py(
        serde_json::from_str(report)
            .map_err(|e| tokenloom_core::Error::invalid("report", e.to_string())),
    )?;
    Ok(report.summary())
}

/// Draws the adjacent-similarity histograms of an order's report (its JSON,
/// as stored in the order file) to the PNG `png`, written atomically: the same
/// chart as `tokenloom order --png`.
#[pyfunction]
pub fn write_report_png(py: Python<'_>, report: String, png: PathBuf) -> PyResult<()> {
    run_detached(py, move || {
        let report: order::Report = serde_json::from_str(&report)
            .map_err(|e| tokenloom_core::Error::invalid("report", e.to_string()))?;
        tokenloom_cli::chart::check_destination(&png)?;
        tokenloom_cli::chart::write_png(&report, &png)
    })
}
