//! The Ray engine's steps of in-context ordering (`tokenloom.order(...,
//! engine="ray")`): the document vectors, their coarse partitions, the
//! order of one part (run on a Ray worker, no dataset needed) and the join
//! that writes the order file as the local engine does. GIL released, tqdm
//! progress, Ctrl-C cancels.

use std::path::PathBuf;

use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use tokenloom_core::order::{
    self, defaults, store, Duplicate, EmbedParams, Input, OrderParams, PartOrder, Path,
};
use tokenloom_core::Dataset;

use crate::detach::run_detached;
use crate::order::{slice, variant_of};
use crate::progress::PyProgress;

/// The ordering settings, as the dict `tokenloom.order` passes.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub struct Settings {
    seq_len: u64,
    k: usize,
    dedup: Option<f32>,
    variant: String,
    max_segment: usize,
    k_traverse: usize,
    min_segment: usize,
    seed: u64,
    exact: Option<bool>,
}

impl Settings {
    fn params(&self) -> PyResult<OrderParams> {
        Ok(OrderParams {
            seq_len: self.seq_len,
            k: self.k,
            dedup: self.dedup,
            variant: variant_of(
                &self.variant,
                self.max_segment,
                self.k_traverse,
                self.min_segment,
            )?,
            seed: self.seed,
            exact: self.exact,
            ..OrderParams::default()
        })
    }
}

/// One part's order as Python holds it: documents, path, segment starts,
/// duplicates `[x, 2]` (doc, of) and their similarities, kNN ids and
/// similarities `[m, k]`, whether the kNN search was exact.
type PartTuple<'py> = (
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<u64>>,
    Bound<'py, PyArray2<i64>>,
    Bound<'py, PyArray1<f32>>,
    Bound<'py, PyArray2<i64>>,
    Bound<'py, PyArray2<f32>>,
    bool,
);

type PartArgs<'py> = (
    PyReadonlyArray1<'py, i64>,
    PyReadonlyArray1<'py, i64>,
    PyReadonlyArray1<'py, u64>,
    PyReadonlyArray2<'py, i64>,
    PyReadonlyArray1<'py, f32>,
    PyReadonlyArray2<'py, i64>,
    PyReadonlyArray2<'py, f32>,
    bool,
);

/// Runs `f` detached with a progress sink, a Ctrl-C seen meanwhile winning.
fn with_progress<T: Send>(
    py: Python<'_>,
    show: bool,
    f: impl FnOnce(&PyProgress) -> tokenloom_core::Result<T> + Send,
) -> PyResult<T> {
    let bar = PyProgress::with_unit(show, "");
    let result = run_detached(py, || f(&bar));
    if let Some(interrupt) = bar.take_interrupt() {
        return Err(interrupt);
    }
    result
}

fn ids_u32(ids: &[i64], what: &str) -> PyResult<Vec<u32>> {
    ids.iter()
        .enumerate()
        .map(|(i, &x)| {
            u32::try_from(x).map_err(|_| {
                PyValueError::new_err(format!("{what}[{i}] = {x} is not a document id"))
            })
        })
        .collect()
}

/// The unit vectors `[num_docs, dim]` ordering works on for the dataset at
/// `path`: the built-in embeddings (zero rows for documents without
/// features), or `embeddings` checked and normalised. `name` (the order to be
/// written) is checked first, so a bad name fails before the work.
#[pyfunction]
#[pyo3(signature = (path, name, embeddings = None, dim = defaults::DIM, max_tokens = defaults::MAX_TOKENS, seed = defaults::SEED, progress = true))]
#[allow(clippy::too_many_arguments)]
pub fn order_embeddings<'py>(
    py: Python<'py>,
    path: PathBuf,
    name: &str,
    embeddings: Option<PyReadonlyArray2<'py, f32>>,
    dim: usize,
    max_tokens: usize,
    seed: u64,
    progress: bool,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    crate::errors::to_py(store::order_path(&path, name))?;
    let given = match &embeddings {
        Some(a) => Some((slice(a, "embeddings")?, a.shape()[1])),
        None => None,
    };
    let params = OrderParams {
        seed,
        embed: EmbedParams {
            dim,
            max_tokens,
            seed,
            ..EmbedParams::default()
        },
        ..OrderParams::default()
    };
    let (v, d, n) = with_progress(py, progress, |bar| {
        let ds = Dataset::open(&path)?;
        let input = match given {
            Some((data, dim)) => Input::Embeddings { data, dim },
            None => Input::Builtin,
        };
        let (v, d) = order::document_vectors(&ds, &params, input, bar)?.unwrap_or_default();
        Ok((v, d, ds.num_docs() as usize))
    })?;
    v.into_pyarray(py).reshape([n, d])
}

/// About `partitions` parts of the documents of the dataset at `path` with
/// content, from their unit vectors `embeddings`: member ids (ascending) of
/// each part, and the parts' unit centroids `[parts, dim]`.
#[pyfunction]
#[pyo3(signature = (path, embeddings, partitions, min_size, seed = 0, progress = true))]
#[allow(clippy::type_complexity)]
pub fn order_partitions<'py>(
    py: Python<'py>,
    path: PathBuf,
    embeddings: PyReadonlyArray2<'py, f32>,
    partitions: usize,
    min_size: usize,
    seed: u64,
    progress: bool,
) -> PyResult<(Vec<Bound<'py, PyArray1<i64>>>, Bound<'py, PyArray2<f32>>)> {
    let d = embeddings.shape()[1];
    let v = slice(&embeddings, "embeddings")?;
    let parts = with_progress(py, progress, |bar| {
        let ds = Dataset::open(&path)?;
        let (active, _) = order::participants(&ds.doc_lengths()?, Some((v, d)));
        order::partition(v, d, &active, partitions, min_size, seed, bar)
    })?;
    let p = parts.members.len();
    let members = parts
        .members
        .into_iter()
        .map(|m| {
            m.into_iter()
                .map(i64::from)
                .collect::<Vec<_>>()
                .into_pyarray(py)
        })
        .collect();
    Ok((members, parts.centroids.into_pyarray(py).reshape([p, d])?))
}

/// Orders one part: the documents `docs` (ascending ids) from their unit
/// vectors `embeddings` (`[len(docs), dim]`), with `settings`.
#[pyfunction]
#[pyo3(signature = (embeddings, docs, settings, progress = false))]
pub fn order_partition<'py>(
    py: Python<'py>,
    embeddings: PyReadonlyArray2<'py, f32>,
    docs: PyReadonlyArray1<'py, i64>,
    settings: Settings,
    progress: bool,
) -> PyResult<PartTuple<'py>> {
    let params = settings.params()?;
    let d = embeddings.shape()[1];
    let v = slice(&embeddings, "embeddings")?;
    let docs = ids_u32(slice(&docs, "docs")?, "docs")?;
    let part = with_progress(py, progress, |bar| {
        order::order_partition(v, d, &docs, &params, bar)
    })?;
    let (m, k, x) = (part.docs.len(), part.k, part.duplicates.len());
    let widen = |ids: &[u32]| ids.iter().map(|&i| i64::from(i)).collect::<Vec<_>>();
    let dups: Vec<i64> = part
        .duplicates
        .iter()
        .flat_map(|x| [i64::from(x.doc), i64::from(x.of)])
        .collect();
    let dup_sims: Vec<f32> = part.duplicates.iter().map(|x| x.sim).collect();
    Ok((
        widen(&part.docs).into_pyarray(py),
        widen(&part.path.docs).into_pyarray(py),
        part.path.segment_starts.into_pyarray(py),
        dups.into_pyarray(py).reshape([x, 2])?,
        dup_sims.into_pyarray(py),
        part.ids.into_pyarray(py).reshape([m, k])?,
        part.sims.into_pyarray(py).reshape([m, k])?,
        part.exact,
    ))
}

fn part_of(p: usize, a: &PartArgs<'_>) -> PyResult<PartOrder> {
    let what = |s: &str| format!("part {p} {s}");
    let pairs = ids_u32(slice(&a.3, &what("duplicates"))?, &what("duplicates"))?;
    let sims = slice(&a.4, &what("duplicate similarities"))?;
    if pairs.len() != 2 * sims.len() {
        return Err(PyValueError::new_err(what(
            "has duplicates and similarities of different lengths",
        )));
    }
    Ok(PartOrder {
        docs: ids_u32(slice(&a.0, &what("docs"))?, &what("docs"))?,
        path: Path {
            docs: ids_u32(slice(&a.1, &what("path"))?, &what("path"))?,
            segment_starts: slice(&a.2, &what("segment starts"))?.to_vec(),
        },
        duplicates: pairs
            .chunks_exact(2)
            .zip(sims)
            .map(|(x, &sim)| Duplicate {
                doc: x[0],
                of: x[1],
                sim,
            })
            .collect(),
        k: a.5.shape()[1],
        ids: slice(&a.5, &what("knn"))?.to_vec(),
        sims: slice(&a.6, &what("knn similarities"))?.to_vec(),
        exact: a.7,
    })
}

/// Joins the parts (`parts[p]` from `order_partition` over the members of
/// the part with centroid `centroids[p]`) into the order `name` of the
/// dataset at `path`, written atomically; returns its path and the report
/// as JSON. `embeddings` are the vectors `order_embeddings` returned.
#[pyfunction]
#[pyo3(signature = (path, name, embeddings, centroids, parts, partitions_requested, settings, source = "{}", progress = true))]
#[allow(clippy::too_many_arguments)]
pub fn order_join<'py>(
    py: Python<'py>,
    path: PathBuf,
    name: &str,
    embeddings: PyReadonlyArray2<'py, f32>,
    centroids: PyReadonlyArray2<'py, f32>,
    parts: Vec<PartArgs<'py>>,
    partitions_requested: usize,
    settings: Settings,
    source: &str,
    progress: bool,
) -> PyResult<(PathBuf, String)> {
    let params = settings.params()?;
    let source: serde_json::Value = serde_json::from_str(source)
        .map_err(|e| PyValueError::new_err(format!("source must be JSON: {e}")))?;
    crate::errors::to_py(store::order_path(&path, name))?;
    let d = embeddings.shape()[1];
    let v = slice(&embeddings, "embeddings")?;
    let c = slice(&centroids, "centroids")?;
    let parts = parts
        .iter()
        .enumerate()
        .map(|(p, a)| part_of(p, a))
        .collect::<PyResult<Vec<_>>>()?;
    with_progress(py, progress, |bar| {
        let ds = Dataset::open(&path)?;
        let out = order::join_parts(
            &ds,
            &params,
            v,
            d,
            c,
            &parts,
            partitions_requested,
            source,
            bar,
        )?;
        let file = store::save(&path, name, &out.order)?;
        let report = serde_json::to_string(&out.report)
            .map_err(|e| tokenloom_core::Error::invalid("report", e.to_string()))?;
        Ok((file, report))
    })
}
