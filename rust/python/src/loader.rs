//! Bindings of the batch loader: `Stream` (sources, plans, mixture) and the
//! prefetching `Loader` it creates for one rank and worker.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use numpy::{IntoPyArray, PyArray1, PyArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use tokenloom_core::batch::{
    assemble, defaults, Batch, BatchConfig, Cursor, IntBuf, LoadedBatch, Loader, LoaderSpec,
    OutDType, Sharding, Source, Stream, StreamSpec,
};
use tokenloom_core::order_file::Order;
use tokenloom_core::plan::{Boundaries, Plan, PlanMode};
use tokenloom_core::Dataset;

use crate::detach::run_detached;
use crate::shard::open_any;

type PyCursor = (u64, u64, Vec<u64>);

fn cursor((epoch, position, counts): PyCursor) -> Cursor {
    Cursor {
        epoch,
        position,
        counts,
    }
}

fn py_cursor(c: &Cursor) -> PyCursor {
    (c.epoch, c.position, c.counts.clone())
}

/// Sources with their plans and the mixture over them ([`Stream`]); shared
/// by every loader made from it.
#[pyclass(name = "Stream", module = "tokenloom._core", frozen)]
pub struct PyStream {
    inner: Stream,
}

#[pymethods]
impl PyStream {
    /// Opens `paths`, builds (or reads from `cache_dirs`) their plans.
    /// `weights` (default: each source's number of samples) weigh the
    /// sources; `boundaries` ("document" or "row"; default: the mode's) says
    /// what the batches' position_ids and cu_seqlens delimit.
    #[new]
    #[pyo3(signature = (paths, seq_len, weights = None, mode = defaults::MODE, order = None, seed = defaults::SEED, shuffle = defaults::SHUFFLE, cache_dirs = None, boundaries = None, cache_dir = None, cache_limit = None, storage_options = None, lookahead = None, shuffle_window = defaults::SHUFFLE_WINDOW))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        paths: Vec<PathBuf>,
        seq_len: u64,
        weights: Option<Vec<f64>>,
        mode: &str,
        order: Option<PathBuf>,
        seed: u64,
        shuffle: bool,
        cache_dirs: Option<Vec<Option<PathBuf>>>,
        boundaries: Option<&str>,
        cache_dir: Option<PathBuf>,
        cache_limit: Option<u64>,
        storage_options: Option<HashMap<String, String>>,
        lookahead: Option<usize>,
        shuffle_window: u64,
    ) -> PyResult<Self> {
        let remote = crate::remote::options(cache_dir, cache_limit, storage_options, lookahead)?;
        let mode = crate::errors::to_py(PlanMode::parse(mode))?;
        let boundaries = boundaries
            .map(|b| crate::errors::to_py(Boundaries::parse(b)))
            .transpose()?;
        let cache_dirs = cache_dirs.unwrap_or_else(|| vec![None; paths.len()]);
        let spec = StreamSpec {
            paths,
            weights,
            seq_len,
            mode,
            order,
            seed,
            shuffle,
            shuffle_window,
            cache_dirs,
            boundaries,
        };
        run_detached(py, move || {
            Ok(PyStream {
                inner: Stream::open_with(spec, |p| open_any(&p.to_string_lossy(), &remote))?,
            })
        })
    }

    /// The weights of the sources (given, or their numbers of samples).
    #[getter]
    fn weights(&self) -> Vec<f64> {
        self.inner.weights.clone()
    }

    /// End-of-document token of the first source, when known.
    #[getter]
    fn eos_id(&self) -> Option<u64> {
        self.inner.eos_id()
    }

    /// Samples per epoch (all sources together).
    #[getter]
    fn epoch_len(&self) -> u64 {
        self.inner.mixture.epoch_len()
    }

    /// Samples in each source's plan.
    #[getter]
    fn num_samples(&self) -> Vec<u64> {
        self.inner
            .sources
            .iter()
            .map(|(_, p)| p.num_samples())
            .collect()
    }

    /// What position_ids and cu_seqlens delimit in this stream's batches.
    #[getter]
    fn boundaries(&self) -> &'static str {
        let mode = self
            .inner
            .sources
            .first()
            .map_or(PlanMode::Concat, |(_, p)| p.mode());
        self.inner
            .boundaries
            .unwrap_or_else(|| mode.default_boundaries())
            .name()
    }

    /// Whether each source's plan was read from the cache.
    /// `(bytes, cache_limit)` when the remote sources' shard bodies add up
    /// to more than their cache holds; `None` when they fit.
    #[getter]
    fn over_capacity(&self) -> Option<(u64, u64)> {
        self.inner.over_capacity()
    }

    #[getter]
    fn plans_cached(&self) -> Vec<bool> {
        self.inner.cached.clone()
    }

    /// Identifies sources, plans, weights, seed and shuffling.
    #[getter]
    fn fingerprint(&self) -> String {
        format!("{:016x}", self.inner.fingerprint)
    }

    /// The fingerprint states saved before it covered document boundaries
    /// carry; such states are still accepted.
    #[getter]
    fn legacy_fingerprint(&self) -> String {
        format!("{:016x}", self.inner.legacy_fingerprint)
    }

    /// The `seq_len` the order file was made for (`None` without an order,
    /// or for an order that does not record one).
    #[getter]
    fn order_seq_len(&self) -> Option<u64> {
        self.inner.order_seq_len
    }

    /// Fails, naming the field, unless `cursor` is a position of this stream.
    fn check_cursor(&self, cursor: PyCursor) -> PyResult<()> {
        crate::errors::to_py(self.inner.mixture.check_cursor(&self::cursor(cursor)))
    }

    /// `(epoch, position, counts)` at the start of `epoch`.
    fn start(&self, py: Python<'_>, epoch: u64) -> PyCursor {
        py.detach(|| py_cursor(&self.inner.mixture.start(epoch)))
    }

    /// The cursor `n` positions after `at`.
    fn advance(&self, py: Python<'_>, at: PyCursor, n: u64) -> PyCursor {
        py.detach(|| {
            let mut c = cursor(at);
            self.inner.mixture.skip(&mut c, n);
            py_cursor(&c)
        })
    }

    /// Rank-local batches left in the epoch from `position`.
    #[pyo3(signature = (position, batch_size, rank = 0, world = 1, drop_last = defaults::DROP_LAST))]
    fn batches_left(
        &self,
        position: u64,
        batch_size: u64,
        rank: u64,
        world: u64,
        drop_last: bool,
    ) -> PyResult<u64> {
        let sh = Sharding {
            rank,
            world,
            worker: 0,
            num_workers: 1,
            batch_size,
            drop_last,
        };
        crate::errors::to_py(sh.check(self.inner.mixture.epoch_len()))?;
        Ok(sh.steps_left(self.inner.mixture.epoch_len(), position))
    }

    /// The batch of the given `(source, sample id)` pairs, laid out as the
    /// loader lays out its batches.
    #[pyo3(signature = (samples, dtype = defaults::DTYPE, ignore_index = None, pad_id = defaults::PAD_ID, position_ids = true, doc_ids = true))]
    #[allow(clippy::too_many_arguments)]
    fn assemble<'py>(
        &self,
        py: Python<'py>,
        samples: Vec<(usize, u64)>,
        dtype: &str,
        ignore_index: Option<i64>,
        pad_id: i64,
        position_ids: bool,
        doc_ids: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let cfg = self.batch_config(dtype, ignore_index, pad_id, position_ids, doc_ids)?;
        let refs: Vec<(&Dataset, &Plan)> = self
            .inner
            .sources
            .iter()
            .map(|(d, p)| (&**d, &**p))
            .collect();
        let batch = run_detached(py, || assemble(&samples, &refs, &cfg))?;
        batch_dict(py, batch)
    }

    /// A loader of one worker's batches for the rest of the epoch at `start`.
    #[pyo3(signature = (start, batch_size, rank = 0, world = 1, worker = 0, num_workers = 1, drop_last = defaults::DROP_LAST, dtype = defaults::DTYPE, ignore_index = None, pad_id = defaults::PAD_ID, threads = defaults::THREADS, depth = defaults::PREFETCH, skip = 0, position_ids = true, doc_ids = true))]
    #[allow(clippy::too_many_arguments)]
    fn loader(
        &self,
        start: PyCursor,
        batch_size: u64,
        rank: u64,
        world: u64,
        worker: u64,
        num_workers: u64,
        drop_last: bool,
        dtype: &str,
        ignore_index: Option<i64>,
        pad_id: i64,
        threads: usize,
        depth: usize,
        skip: u64,
        position_ids: bool,
        doc_ids: bool,
    ) -> PyResult<PyLoader> {
        let start = cursor(start);
        if start.counts.len() != self.inner.mixture.num_sources() {
            return Err(PyValueError::new_err(format!(
                "the state has counts for {} sources but there are {}",
                start.counts.len(),
                self.inner.mixture.num_sources()
            )));
        }
        let spec = LoaderSpec {
            sources: self
                .inner
                .sources
                .iter()
                .map(|(d, p)| Source {
                    dataset: Arc::clone(d),
                    plan: Arc::clone(p),
                })
                .collect(),
            mixture: self.inner.mixture.clone(),
            sharding: Sharding {
                rank,
                world,
                worker,
                num_workers,
                batch_size,
                drop_last,
            },
            batch: self.batch_config(dtype, ignore_index, pad_id, position_ids, doc_ids)?,
            start,
            threads,
            depth,
        };
        let mut loader = crate::errors::to_py(Loader::new(spec))?;
        loader.skip(skip);
        Ok(PyLoader {
            inner: Mutex::new(loader),
        })
    }
}

impl PyStream {
    fn batch_config(
        &self,
        dtype: &str,
        ignore_index: Option<i64>,
        pad_id: i64,
        position_ids: bool,
        doc_ids: bool,
    ) -> PyResult<BatchConfig> {
        let dtype = crate::errors::to_py(OutDType::parse(dtype))?;
        Ok(BatchConfig {
            seq_len: self.inner.sources.first().map_or(1, |(_, p)| p.seq_len()),
            dtype,
            ignore_index,
            pad_id,
            pad_label: ignore_index.unwrap_or(-100),
            position_ids,
            doc_ids,
            boundaries: self.inner.boundaries,
        })
    }
}

/// Iterator over `(arrays, step, cursor_after)`: a dict of numpy arrays, the
/// rank-local batch index and the stream cursor after its global step.
#[pyclass(name = "Loader", module = "tokenloom._core", frozen)]
pub struct PyLoader {
    inner: Mutex<Loader>,
}

impl Drop for PyLoader {
    /// Stops the batch threads with the GIL released: one may be waiting on
    /// a download, or on something that needs the interpreter (a server in
    /// this process), and joining it with the GIL held would stall every
    /// Python thread, or deadlock, until it ends.
    fn drop(&mut self) {
        let loader = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        Python::attach(|py| py.detach(|| loader.stop()));
    }
}

fn int_array<'py>(
    py: Python<'py>,
    buf: IntBuf,
    rows: usize,
    cols: usize,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(match buf {
        IntBuf::I32(v) => v.into_pyarray(py).reshape([rows, cols])?.into_any(),
        IntBuf::I64(v) => v.into_pyarray(py).reshape([rows, cols])?.into_any(),
    })
}

fn batch_dict<'py>(py: Python<'py>, b: Batch) -> PyResult<Bound<'py, PyDict>> {
    let (rows, cols) = (b.rows, b.seq_len);
    let d = PyDict::new(py);
    d.set_item("input_ids", int_array(py, b.input_ids, rows, cols)?)?;
    d.set_item("labels", int_array(py, b.labels, rows, cols)?)?;
    if let Some(p) = b.position_ids {
        d.set_item("position_ids", int_array(py, p, rows, cols)?)?;
    }
    if let Some(ids) = b.doc_ids {
        d.set_item("doc_ids", ids.into_pyarray(py).reshape([rows, cols])?)?;
    }
    d.set_item("cu_seqlens", PyArray1::from_vec(py, b.cu_seqlens))?;
    d.set_item("source_ids", PyArray1::from_vec(py, b.source_ids))?;
    d.set_item("sample_ids", PyArray1::from_vec(py, b.sample_ids))?;
    Ok(d)
}

fn to_dict<'py>(py: Python<'py>, lb: LoadedBatch) -> PyResult<Bound<'py, PyTuple>> {
    let d = batch_dict(py, lb.batch)?;
    (d, lb.step, py_cursor(&lb.after)).into_pyobject(py)
}

#[pymethods]
impl PyLoader {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let mut guard = crate::detach::lock(py, &self.inner, "loader")?;
        let loader = &mut *guard;
        let next = py.detach(|| loader.next_batch());
        match next {
            None => Ok(None),
            Some(r) => to_dict(py, crate::errors::to_py(r)?).map(Some),
        }
    }

    /// Batches this loader yields in total.
    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        let guard = crate::detach::lock(py, &self.inner, "loader")?;
        Ok(guard.len() as usize)
    }
}

/// Writes an order file for the dataset at `dataset`: `docs` in training
/// order, context `k` being `docs[context_starts[k] .. context_starts[k + 1]]`.
#[pyfunction]
pub fn write_order(
    py: Python<'_>,
    dataset: PathBuf,
    path: PathBuf,
    docs: Vec<u64>,
    context_starts: Vec<u64>,
) -> PyResult<()> {
    run_detached(py, move || {
        let ds = Dataset::open(&dataset)?;
        Order::new(&ds, docs, context_starts)?.write(&path)
    })
}

/// The loader's defaults (`tokenloom_core::batch::defaults`) by argument name.
pub fn loader_defaults(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("seed", defaults::SEED)?;
    d.set_item("shuffle", defaults::SHUFFLE)?;
    d.set_item("shuffle_window", defaults::SHUFFLE_WINDOW)?;
    d.set_item("mode", defaults::MODE)?;
    d.set_item("dtype", defaults::DTYPE)?;
    d.set_item("drop_last", defaults::DROP_LAST)?;
    d.set_item("pad_id", defaults::PAD_ID)?;
    d.set_item("threads", defaults::THREADS)?;
    d.set_item("prefetch", defaults::PREFETCH)?;
    Ok(d)
}

/// numpy's name of a batch dtype given by any accepted name (`"int64"`,
/// `"i64"`, `"int32"`, `"i32"`); a ValueError for any other.
#[pyfunction]
pub fn batch_dtype(name: &str) -> PyResult<&'static str> {
    Ok(crate::errors::to_py(OutDType::parse(name))?.name())
}
