//! In-context ordering from Python: `order_dataset` runs the whole step with
//! the GIL released (tqdm progress, Ctrl-C cancels, nothing half-written)
//! and `order_meta` reads back how an order was made and its report.

use std::path::PathBuf;

use numpy::{
    IntoPyArray, PyReadonlyArray, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tokenloom_core::order::{
    self, defaults, score, store, EmbedParams, Input, KnnLists, OrderParams, ReferenceParams,
    Scorer, Values, Variant,
};
use tokenloom_core::order_file::Order;
use tokenloom_core::Dataset;

use crate::detach::run_detached;
use crate::dicts;
use crate::progress::PyProgress;

pub fn slice<'a, T: numpy::Element, D: numpy::ndarray::Dimension>(
    a: &'a PyReadonlyArray<'_, T, D>,
    what: &str,
) -> PyResult<&'a [T]> {
    a.as_slice()
        .map_err(|_| PyValueError::new_err(format!("{what} must be a C-contiguous array")))
}

/// Given embeddings: a C-contiguous float32 or float16 `[n, d]` array, read in place.
#[derive(FromPyObject)]
pub enum Embeddings<'py> {
    F32(PyReadonlyArray2<'py, f32>),
    F16(PyReadonlyArray2<'py, half::f16>),
}

impl Embeddings<'_> {
    /// The values and the dimension.
    pub fn values(&self) -> PyResult<(Values<'_>, usize)> {
        Ok(match self {
            Embeddings::F32(a) => (Values::F32(slice(a, "embeddings")?), a.shape()[1]),
            Embeddings::F16(a) => (Values::F16(slice(a, "embeddings")?), a.shape()[1]),
        })
    }
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
            min_segment,
            ..ReferenceParams::with_max_segment(max_segment)
        })),
        other => Err(PyValueError::new_err(format!(
            "variant must be \"paper\" or \"reference\", got {other:?}"
        ))),
    }
}

/// The core's ordering defaults as a dict (`_core.ORDER_DEFAULTS`), read by
/// `tokenloom.order` for its signature.
pub fn order_defaults(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("seq_len", defaults::SEQ_LEN)?;
    d.set_item("k", defaults::K)?;
    d.set_item("name", defaults::NAME)?;
    d.set_item("dedup", defaults::DEDUP)?;
    d.set_item("variant", defaults::VARIANT)?;
    d.set_item("max_segment", defaults::MAX_SEGMENT)?;
    d.set_item("seed", defaults::SEED)?;
    d.set_item("dim", defaults::DIM)?;
    d.set_item("max_tokens", defaults::MAX_TOKENS)?;
    d.set_item("nprobe", defaults::NPROBE)?;
    d.set_item("task_memory", defaults::TASK_MEMORY)?;
    d.set_item("reference_k_traverse", defaults::REFERENCE_K_TRAVERSE)?;
    d.set_item("reference_segment", defaults::REFERENCE_SEGMENT)?;
    Ok(d)
}

/// Scoring vectors `[n, d]` and labels `[n]` as the core's [`Scorer`].
fn scorer<'a>(
    name: &'a str,
    vectors: &'a Option<PyReadonlyArray2<'_, f32>>,
    labels: &'a Option<PyReadonlyArray1<'_, i64>>,
) -> PyResult<Option<Scorer<'a>>> {
    let vectors = match vectors {
        Some(a) => Some((slice(a, "score vectors")?, a.shape()[1])),
        None => None,
    };
    let labels = labels.as_ref().map(|a| slice(a, "labels")).transpose()?;
    Ok((vectors.is_some() || labels.is_some()).then_some(Scorer {
        name,
        vectors,
        labels,
    }))
}

/// Orders the dataset at `path` and writes `<path>/orders/<name>.order`;
/// returns the file's path and the report (a dict). With `score_vectors`
/// (from an embedder other than the one ordering, called `score_name`)
/// and/or `labels`, the report holds the independent score too.
#[pyfunction]
#[pyo3(signature = (path, seq_len, name = defaults::NAME, k = defaults::K, dedup = Some(defaults::DEDUP as f32), variant = defaults::VARIANT, max_segment = defaults::MAX_SEGMENT, k_traverse = defaults::REFERENCE_K_TRAVERSE, min_segment = defaults::REFERENCE_SEGMENT, seed = defaults::SEED, exact = None, dim = defaults::DIM, max_tokens = defaults::MAX_TOKENS, embeddings = None, knn = None, knn_similarities = None, drop_self = false, source = None, progress = true, score_vectors = None, score_name = "", labels = None))]
#[allow(clippy::too_many_arguments)]
pub fn order_dataset<'py>(
    py: Python<'py>,
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
    embeddings: Option<Embeddings<'_>>,
    knn: Option<PyReadonlyArray2<'_, i64>>,
    knn_similarities: Option<PyReadonlyArray2<'_, f32>>,
    drop_self: bool,
    source: Option<Bound<'py, PyAny>>,
    progress: bool,
    score_vectors: Option<PyReadonlyArray2<'_, f32>>,
    score_name: &str,
    labels: Option<PyReadonlyArray1<'_, i64>>,
) -> PyResult<(PathBuf, Bound<'py, PyAny>)> {
    let variant = variant_of(variant, max_segment, k_traverse, min_segment)?;
    let scorer = scorer(score_name, &score_vectors, &labels)?;
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
    let source = dicts::object_or_empty(source.as_ref(), "source")?;
    let emb = embeddings.as_ref().map(Embeddings::values).transpose()?;
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
            (Some((data, d)), None) => Input::Embeddings {
                data: *data,
                dim: *d,
            },
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
        let mut out = order::order_dataset(&ds, &params, input, source, &bar)?;
        if let Some(sc) = &scorer {
            let ind = score::score(&ds, &out.order, seq_len, sc, seed, &bar)?;
            out.order = score::annotate(&ds, &out.order, &ind)?;
            out.report.independent = Some(ind);
        }
        let file = store::save(&path, name, &out.order)?;
        Ok((file, out.report))
    });
    if let Some(interrupt) = bar.take_interrupt() {
        return Err(interrupt);
    }
    let (file, report) = result?;
    Ok((file, dicts::to_py(py, &report)?))
}

/// The independent score (a dict) of the order `spec` of the dataset at
/// `path`, in rows of `seq_len + 1` tokens (default: the seq_len it was made
/// for), with a random baseline seeded by `seed` (default: the order's seed).
#[pyfunction]
#[pyo3(signature = (path, spec, seq_len = None, vectors = None, name = "", labels = None, seed = None, progress = true))]
#[allow(clippy::too_many_arguments)]
pub fn score_order<'py>(
    py: Python<'py>,
    path: PathBuf,
    spec: PathBuf,
    seq_len: Option<u64>,
    vectors: Option<PyReadonlyArray2<'_, f32>>,
    name: &str,
    labels: Option<PyReadonlyArray1<'_, i64>>,
    seed: Option<u64>,
    progress: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let Some(sc) = scorer(name, &vectors, &labels)? else {
        return Err(PyValueError::new_err(
            "scoring needs vectors from an embedder, labels, or both",
        ));
    };
    let bar = PyProgress::new(progress);
    let result = run_detached(py, || {
        let file = store::resolve(&path, &spec)?;
        let ds = Dataset::open(&path)?;
        let o = Order::read(&file)?;
        let meta: serde_json::Value = serde_json::from_str(o.meta()).unwrap_or_default();
        let seq_len = seq_len.or(meta["seq_len"].as_u64()).ok_or_else(|| {
            tokenloom_core::Error::invalid(
                "seq_len",
                format!(
                    "{} does not say which seq_len it was made for; pass seq_len=",
                    file.display()
                ),
            )
        })?;
        let seed = seed.or(meta["seed"].as_u64()).unwrap_or(0);
        score::score(&ds, &o, seq_len, &sc, seed, &bar)
    });
    if let Some(interrupt) = bar.take_interrupt() {
        return Err(interrupt);
    }
    dicts::to_py(py, &result?)
}

/// The order `spec` (a name stored with the dataset at `path`, or an order
/// file), checked against that dataset, as a dict: its `path`, document ids
/// (`docs`), `context_starts`, `flow` flag and `meta` (its settings and
/// report; `None` for an order written without them).
#[pyfunction]
pub fn read_order<'py>(
    py: Python<'py>,
    path: PathBuf,
    spec: PathBuf,
) -> PyResult<Bound<'py, PyDict>> {
    let (file, o) = run_detached(py, move || {
        let file = store::resolve(&path, &spec)?;
        let ds = Dataset::open(&path)?;
        let o = Order::read(&file)?;
        o.check_dataset(&ds)?;
        Ok((file, o))
    })?;
    let meta = if o.meta().is_empty() {
        None
    } else {
        let meta: serde_json::Value = serde_json::from_str(o.meta()).map_err(|e| {
            PyValueError::new_err(format!("{}: its metadata is not JSON: {e}", file.display()))
        })?;
        Some(dicts::to_py(py, &meta)?)
    };
    let out = PyDict::new(py);
    out.set_item("path", file)?;
    out.set_item("docs", o.docs().to_vec().into_pyarray(py))?;
    out.set_item(
        "context_starts",
        o.context_starts().to_vec().into_pyarray(py),
    )?;
    out.set_item("flow", o.flow())?;
    out.set_item("meta", meta)?;
    Ok(out)
}

/// The one-line summary of an order's report (a dict, as `order` returns
/// it): the first line `tokenloom order` prints.
#[pyfunction]
pub fn report_summary(report: &Bound<'_, PyAny>) -> PyResult<String> {
    let report: order::Report = dicts::from_py(report, "report")?;
    Ok(report.summary())
}

/// Draws the adjacent-similarity histograms of an order's report (a dict,
/// as `order` returns it) to the PNG `png`, written atomically: the same
/// chart as `tokenloom order --png`.
#[pyfunction]
pub fn write_report_png(py: Python<'_>, report: &Bound<'_, PyAny>, png: PathBuf) -> PyResult<()> {
    let report: order::Report = dicts::from_py(report, "report")?;
    run_detached(py, move || {
        tokenloom_cli::chart::check_destination(&png)?;
        tokenloom_cli::chart::write_png(&report, &png)
    })
}
