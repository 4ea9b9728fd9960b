//! The steps of the staged ordering engine (`tokenloom.order(...,
//! engine="ray" | "disk")`, see `tokenloom_core::order::staged`): each
//! reads and writes files of the work folder and returns only small arrays.
//! GIL released, tqdm progress, Ctrl-C cancels.

use std::path::{Path, PathBuf};

use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use tokenloom_core::order::npy::{NpyWriter, VectorShards};
use tokenloom_core::order::{defaults, embed, seal, staged, store, EmbedParams, OrderParams};
use tokenloom_core::Dataset;

use crate::detach::run_detached;
use crate::dicts;
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
            ..OrderParams::default()
        })
    }
}

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

fn embed_params(dim: usize, max_tokens: usize, seed: u64) -> EmbedParams {
    EmbedParams {
        dim,
        max_tokens,
        seed,
        ..EmbedParams::default()
    }
}

/// Default `(nlist, nprobe, train_size)` of the staged engine's inverted
/// lists over `n` documents.
#[pyfunction]
pub fn order_ivf_defaults(n: usize) -> (usize, usize, usize) {
    staged::ivf_defaults(n)
}

/// First pass of the built-in embedder over documents `first..end` of the
/// dataset at `path`: the document frequency of each feature bucket.
#[pyfunction]
#[pyo3(signature = (path, first, end, dim = defaults::DIM, max_tokens = defaults::MAX_TOKENS, seed = defaults::SEED, progress = false))]
#[allow(clippy::too_many_arguments)]
pub fn order_frequencies<'py>(
    py: Python<'py>,
    path: PathBuf,
    first: usize,
    end: usize,
    dim: usize,
    max_tokens: usize,
    seed: u64,
    progress: bool,
) -> PyResult<Bound<'py, PyArray1<u32>>> {
    let params = embed_params(dim, max_tokens, seed);
    let df = with_progress(py, progress, |bar| {
        let ds = Dataset::open(&path)?;
        embed::frequencies(&ds, first..end.min(ds.num_docs() as usize), &params, bar)
    })?;
    Ok(df.into_pyarray(py))
}

/// The feature weights from the summed document frequencies over `n` documents.
#[pyfunction]
pub fn order_idf<'py>(
    py: Python<'py>,
    df: PyReadonlyArray1<'py, u32>,
    n: usize,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    Ok(embed::idf(slice(&df, "df")?, n).into_pyarray(py))
}

/// Second pass: the unit vectors of documents `first..end` under the
/// weights `idf`, written as a float16 `.npy` to `dest` (atomically).
#[pyfunction]
#[pyo3(signature = (path, first, end, idf, dest, dim = defaults::DIM, max_tokens = defaults::MAX_TOKENS, seed = defaults::SEED, progress = false))]
#[allow(clippy::too_many_arguments)]
pub fn order_embed_part(
    py: Python<'_>,
    path: PathBuf,
    first: usize,
    end: usize,
    idf: PyReadonlyArray1<'_, f32>,
    dest: PathBuf,
    dim: usize,
    max_tokens: usize,
    seed: u64,
    progress: bool,
) -> PyResult<()> {
    let params = embed_params(dim, max_tokens, seed);
    let idf = slice(&idf, "idf")?;
    with_progress(py, progress, |bar| {
        let ds = Dataset::open(&path)?;
        let end = end.min(ds.num_docs() as usize);
        let mut w = NpyWriter::create(&dest, end.saturating_sub(first), dim)?;
        // A block at a time, so that a part never holds more than one block of float32 rows.
        for a in (first..end).step_by(1 << 16) {
            let b = (a + (1 << 16)).min(end);
            w.push(&embed::project(&ds, a..b, idf, &params, bar)?)?;
        }
        w.finish()
    })
}

fn shards_of(path: &Path, shards: &[PathBuf]) -> tokenloom_core::Result<VectorShards> {
    let ds = Dataset::open(path)?;
    VectorShards::open(shards, ds.num_docs() as usize)
}

/// `nlist` unit centroids `[nlist, d]` trained on a seeded sample of
/// `sample` rows of the embedding `shards` of the dataset at `path`.
#[pyfunction]
#[pyo3(signature = (path, shards, nlist, sample, seed = 0, progress = true))]
#[allow(clippy::too_many_arguments)]
pub fn order_centroids<'py>(
    py: Python<'py>,
    path: PathBuf,
    shards: Vec<PathBuf>,
    nlist: usize,
    sample: usize,
    seed: u64,
    progress: bool,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let (c, d) = with_progress(py, progress, |bar| {
        let s = shards_of(&path, &shards)?;
        let c = staged::train_centroids(&s, nlist, sample, 10, seed, bar)?;
        Ok((c, s.dim()))
    })?;
    let rows = c.len() / d.max(1);
    c.into_pyarray(py).reshape([rows, d])
}

/// Assigns documents `first..end` to their nearest centroid and writes them
/// grouped by list to `dest`; returns the list sizes.
#[pyfunction]
#[pyo3(signature = (path, shards, first, end, centroids, dest, progress = false))]
#[allow(clippy::too_many_arguments)]
pub fn order_assign_part<'py>(
    py: Python<'py>,
    path: PathBuf,
    shards: Vec<PathBuf>,
    first: usize,
    end: usize,
    centroids: PyReadonlyArray2<'py, f32>,
    dest: PathBuf,
    progress: bool,
) -> PyResult<Bound<'py, PyArray1<u32>>> {
    let c = slice(&centroids, "centroids")?;
    let counts = with_progress(py, progress, |bar| {
        let ds = Dataset::open(&path)?;
        let s = VectorShards::open(&shards, ds.num_docs() as usize)?;
        let end = end.min(ds.num_docs() as usize);
        let lengths = (first..end)
            .map(|i| ds.doc(i as u64).map(|d| d.len() as u64))
            .collect::<tokenloom_core::Result<Vec<_>>>()?;
        staged::assign_part(&s, first, &lengths, c, &dest, bar)
    })?;
    Ok(counts.into_pyarray(py))
}

/// The list sizes of a lists file written by `order_assign_part` (checked).
#[pyfunction]
pub fn order_list_counts<'py>(
    py: Python<'py>,
    file: PathBuf,
) -> PyResult<Bound<'py, PyArray1<u32>>> {
    let counts = run_detached(py, move || Ok(staged::PartLists::open(&file)?.counts()))?;
    Ok(counts.into_pyarray(py))
}

/// One group of lists as Python sees it: its lists and each one's partners.
type GroupTuple = (Vec<u32>, Vec<Vec<u32>>);

/// The groups of lists, as `(lists, partners)` pairs (see `plan_groups`):
/// at least `groups`, each holding at most about `memory` bytes of rows.
#[pyfunction]
#[pyo3(signature = (sizes, centroids, nprobe, k, groups, memory = defaults::TASK_MEMORY))]
pub fn order_plan_groups(
    py: Python<'_>,
    sizes: PyReadonlyArray1<'_, u64>,
    centroids: PyReadonlyArray2<'_, f32>,
    nprobe: usize,
    k: usize,
    groups: usize,
    memory: u64,
) -> PyResult<Vec<GroupTuple>> {
    let d = centroids.shape()[1];
    let s = slice(&sizes, "sizes")?;
    let c = slice(&centroids, "centroids")?;
    let plans = run_detached(py, || {
        staged::plan_groups(s, c, d, nprobe, k, groups, memory)
    })?;
    Ok(plans.into_iter().map(|g| (g.lists, g.partners)).collect())
}

/// The kNN lists of one group's documents, written to `dest`; returns how
/// many documents it holds.
#[pyfunction]
#[pyo3(signature = (parts, lists, partners, k, dest, progress = false))]
pub fn order_knn_group(
    py: Python<'_>,
    parts: Vec<PathBuf>,
    lists: Vec<u32>,
    partners: Vec<Vec<u32>>,
    k: usize,
    dest: PathBuf,
    progress: bool,
) -> PyResult<usize> {
    if lists.len() != partners.len() {
        return Err(PyValueError::new_err("one partner list per list"));
    }
    let plan = staged::GroupPlan { lists, partners };
    with_progress(py, progress, |bar| {
        staged::knn_group(&parts, &plan, k, &dest, bar)
    })
}

/// The last step: merges the groups' lists, removes near-duplicates, walks,
/// and writes the order `name` of the dataset at `path` atomically; returns
/// its path and the report (a dict). `engine` is a dict of the run's metadata.
#[pyfunction]
#[pyo3(signature = (path, name, shards, lists, knn, settings, engine = None, source = None, progress = true))]
#[allow(clippy::too_many_arguments)]
pub fn order_finish_staged<'py>(
    py: Python<'py>,
    path: PathBuf,
    name: &str,
    shards: Vec<PathBuf>,
    lists: Vec<PathBuf>,
    knn: Vec<PathBuf>,
    settings: Settings,
    engine: Option<Bound<'py, PyAny>>,
    source: Option<Bound<'py, PyAny>>,
    progress: bool,
) -> PyResult<(PathBuf, Bound<'py, PyAny>)> {
    let params = settings.params()?;
    let source = dicts::object_or_empty(source.as_ref(), "source")?;
    let serde_json::Value::Object(engine) = dicts::object_or_empty(engine.as_ref(), "engine")?
    else {
        return Err(PyValueError::new_err("engine must be a dict"));
    };
    crate::errors::to_py(store::order_path(&path, name))?;
    with_progress(py, progress, |bar| {
        let ds = Dataset::open(&path)?;
        let s = VectorShards::open(&shards, ds.num_docs() as usize)?;
        let out = staged::finish_staged(&ds, &params, &s, &lists, &knn, engine, source, bar)?;
        let file = store::save(&path, name, &out.order)?;
        Ok((file, out.report))
    })
    .and_then(|(file, report)| Ok((file, dicts::to_py(py, &report)?)))
}

/// Writes the checksum file of `dest` for the finished file `file` (its
/// temporary name, renamed to `dest` next).
#[pyfunction]
pub fn order_seal(py: Python<'_>, file: PathBuf, dest: PathBuf) -> PyResult<()> {
    run_detached(py, move || seal::seal(&file, &dest))
}

/// Checks `path` against its checksum file: false when it has none, an
/// error naming the file when it does not match.
#[pyfunction]
pub fn order_check_sealed(py: Python<'_>, path: PathBuf) -> PyResult<bool> {
    run_detached(py, move || seal::check(&path))
}

/// The work folder of the order `name` of the dataset at `path` (created).
#[pyfunction]
pub fn order_work_dir(path: PathBuf, name: &str) -> PyResult<PathBuf> {
    crate::errors::to_py(staged::work_dir(&path, name))
}

/// The groups' kNN lists merged into `[n, k]` ids (int64, -1 for none) and
/// similarities (float32).
#[pyfunction]
#[allow(clippy::type_complexity)]
pub fn order_read_knn<'py>(
    py: Python<'py>,
    files: Vec<PathBuf>,
    n: usize,
    k: usize,
) -> PyResult<(Bound<'py, PyArray2<i64>>, Bound<'py, PyArray2<f32>>)> {
    let (ids, sims, _) = run_detached(py, move || staged::merge_groups(&files, n, k))?;
    Ok((
        ids.into_pyarray(py).reshape([n, k])?,
        sims.into_pyarray(py).reshape([n, k])?,
    ))
}
