//! Bindings of the batch loader: `Stream` (sources, plans, mixture) and the
//! prefetching `Loader` it creates for one rank and worker.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use numpy::{IntoPyArray, PyArray1, PyArrayMethods};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use tokenloom_core::batch::{
    assemble, Batch, BatchConfig, Cursor, IntBuf, LoadedBatch, Loader, LoaderSpec, Mixture,
    OutDType, Sharding, Source,
};
use tokenloom_core::plan::{cache, Order, Plan, PlanMode};
use tokenloom_core::shuffle::key_of;
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

/// Sources with their plans and the mixture over them; shared by every
/// loader made from it.
#[pyclass(name = "Stream", module = "tokenloom._core", frozen)]
pub struct PyStream {
    sources: Vec<(Arc<Dataset>, Arc<Plan>)>,
    mixture: Mixture,
    fingerprint: u64,
    cached: Vec<bool>,
    order_seq_len: Option<u64>,
}

#[pymethods]
impl PyStream {
    /// Opens `paths`, builds (or reads from `cache_dirs`) their plans.
    #[new]
    #[pyo3(signature = (paths, weights, seq_len, mode = "concat", order = None, seed = 0, shuffle = true, cache_dirs = None, cache_dir = None, cache_limit = None, storage_options = None, lookahead = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        paths: Vec<PathBuf>,
        weights: Vec<f64>,
        seq_len: u64,
        mode: &str,
        order: Option<PathBuf>,
        seed: u64,
        shuffle: bool,
        cache_dirs: Option<Vec<Option<PathBuf>>>,
        cache_dir: Option<PathBuf>,
        cache_limit: Option<u64>,
        storage_options: Option<HashMap<String, String>>,
        lookahead: Option<usize>,
    ) -> PyResult<Self> {
        let remote = crate::remote::options(cache_dir, cache_limit, storage_options, lookahead)?;
        let mode = crate::errors::to_py(PlanMode::parse(mode))?;
        if order.is_some() && paths.len() != 1 {
            return Err(PyValueError::new_err(
                "an order file applies to a single dataset; mix ordered datasets by giving each its own TokenDataset",
            ));
        }
        let cache_dirs = cache_dirs.unwrap_or_else(|| vec![None; paths.len()]);
        run_detached(py, move || {
            let datasets = paths
                .iter()
                .map(|p| open_any(&p.to_string_lossy(), &remote))
                .collect::<tokenloom_core::Result<Vec<_>>>()?;
            // A remote dataset's stored orders live in its cache directory.
            let base = match datasets.first() {
                Some(d) if d.provider().is_some() => d.root().to_path_buf(),
                _ => paths[0].clone(),
            };
            let order = order
                .map(|p| Order::read(&tokenloom_core::order::store::resolve(&base, &p)?))
                .transpose()?;
            let order_seq_len = order.as_ref().and_then(Order::seq_len);
            let mut sources = Vec::with_capacity(paths.len());
            let mut cached = Vec::with_capacity(paths.len());
            for (i, ds) in datasets.into_iter().enumerate() {
                let dir = cache_dirs.get(i).cloned().flatten();
                let (plan, hit) =
                    cache::load_or_build(&ds, mode, seq_len, order.as_ref(), dir.as_deref())?;
                cached.push(hit);
                sources.push((Arc::new(ds), Arc::new(plan)));
            }
            let manifests: Vec<_> = paths
                .iter()
                .zip(&sources)
                .map(|(p, (d, _))| (p.as_path(), d.manifest()))
                .collect();
            tokenloom_core::shard::check_compatible(&manifests, "mix")?;
            let sizes = sources.iter().map(|(_, p)| p.num_samples()).collect();
            let mixture = Mixture::new(sizes, weights.clone(), seed, shuffle)?;
            let mut parts = vec![seed, u64::from(shuffle)];
            for ((_, p), w) in sources.iter().zip(&weights) {
                parts.push(p.fingerprint());
                parts.push(w.to_bits());
            }
            if sources.len() > 1 {
                parts.push(Mixture::RULE);
            }
            Ok(PyStream {
                sources,
                mixture,
                fingerprint: key_of(&parts),
                cached,
                order_seq_len,
            })
        })
    }

    /// Samples per epoch (all sources together).
    #[getter]
    fn epoch_len(&self) -> u64 {
        self.mixture.epoch_len()
    }

    /// Samples in each source's plan.
    #[getter]
    fn num_samples(&self) -> Vec<u64> {
        self.sources.iter().map(|(_, p)| p.num_samples()).collect()
    }

    /// Whether each source's plan was read from the cache.
    #[getter]
    fn plans_cached(&self) -> Vec<bool> {
        self.cached.clone()
    }

    /// Identifies sources, plans, weights, seed and shuffling.
    #[getter]
    fn fingerprint(&self) -> String {
        format!("{:016x}", self.fingerprint)
    }

    /// The `seq_len` the order file was made for (`None` without an order,
    /// or for an order that does not record one).
    #[getter]
    fn order_seq_len(&self) -> Option<u64> {
        self.order_seq_len
    }

    /// Fails, naming the field, unless `cursor` is a position of this stream.
    fn check_cursor(&self, cursor: PyCursor) -> PyResult<()> {
        crate::errors::to_py(self.mixture.check_cursor(&self::cursor(cursor)))
    }

    /// `(epoch, position, counts)` at the start of `epoch`.
    fn start(&self, py: Python<'_>, epoch: u64) -> PyCursor {
        py.detach(|| py_cursor(&self.mixture.start(epoch)))
    }

    /// The cursor `n` positions after `at`.
    fn advance(&self, py: Python<'_>, at: PyCursor, n: u64) -> PyCursor {
        py.detach(|| {
            let mut c = cursor(at);
            self.mixture.skip(&mut c, n);
            py_cursor(&c)
        })
    }

    /// Rank-local batches left in the epoch from `position`.
    #[pyo3(signature = (position, batch_size, rank = 0, world = 1, drop_last = true))]
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
        crate::errors::to_py(sh.check(self.mixture.epoch_len()))?;
        Ok(sh.steps_left(self.mixture.epoch_len(), position))
    }

    /// The batch of the given `(source, sample id)` pairs, laid out as the
    /// loader lays out its batches.
    #[pyo3(signature = (samples, dtype = "int64", ignore_index = None, pad_id = 0, position_ids = true, doc_ids = true))]
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
        let refs: Vec<(&Dataset, &Plan)> = self.sources.iter().map(|(d, p)| (&**d, &**p)).collect();
        let batch = run_detached(py, || assemble(&samples, &refs, &cfg))?;
        batch_dict(py, batch)
    }

    /// A loader of one worker's batches for the rest of the epoch at `start`.
    #[pyo3(signature = (start, batch_size, rank = 0, world = 1, worker = 0, num_workers = 1, drop_last = true, dtype = "int64", ignore_index = None, pad_id = 0, threads = 2, depth = 2, skip = 0, position_ids = true, doc_ids = true))]
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
        if start.counts.len() != self.mixture.num_sources() {
            return Err(PyValueError::new_err(format!(
                "the state has counts for {} sources but there are {}",
                start.counts.len(),
                self.mixture.num_sources()
            )));
        }
        let spec = LoaderSpec {
            sources: self
                .sources
                .iter()
                .map(|(d, p)| Source {
                    dataset: Arc::clone(d),
                    plan: Arc::clone(p),
                })
                .collect(),
            mixture: self.mixture.clone(),
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
        let dtype = match dtype {
            "int64" => OutDType::I64,
            "int32" => OutDType::I32,
            other => {
                return Err(PyValueError::new_err(format!(
                    "dtype {other:?} is not supported; use \"int64\" or \"int32\""
                )))
            }
        };
        Ok(BatchConfig {
            seq_len: self.sources.first().map_or(1, |(_, p)| p.seq_len()),
            dtype,
            ignore_index,
            pad_id,
            pad_label: ignore_index.unwrap_or(-100),
            position_ids,
            doc_ids,
        })
    }
}

/// Iterator over `(arrays, step, cursor_after)`: a dict of numpy arrays, the
/// rank-local batch index and the stream cursor after its global step.
#[pyclass(name = "Loader", module = "tokenloom._core", frozen)]
pub struct PyLoader {
    inner: Mutex<Loader>,
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
        let mut guard = self.inner.lock().map_err(|_| {
            PyRuntimeError::new_err("the loader was poisoned by an earlier failure")
        })?;
        let loader = &mut *guard;
        let next = py.detach(|| loader.next_batch());
        match next {
            None => Ok(None),
            Some(r) => to_dict(py, crate::errors::to_py(r)?).map(Some),
        }
    }

    /// Batches this loader yields in total.
    fn __len__(&self) -> PyResult<usize> {
        let guard = self.inner.lock().map_err(|_| {
            PyRuntimeError::new_err("the loader was poisoned by an earlier failure")
        })?;
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
