//! Bindings of `tokenloom_core::shard`: open, read, verify and write datasets.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use numpy::ndarray::ArrayView1;
use numpy::npyffi::{flags::NPY_ARRAY_WRITEABLE, objects::_PyArray_GET_ITEM_DATA};
use numpy::{PyArray1, PyReadonlyArray1, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyIndexError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tokenloom_core::shard::{
    merge, merge_locked, source, verify::verify_dataset, Sources, TargetLock, TokenInt,
};
use tokenloom_core::{
    DType, Dataset, DatasetSummary, DatasetWriter, Tokens, VerifyOptions, WriterOptions,
};

use crate::detach::run_detached;
use crate::errors::to_py;
use crate::progress::PyProgress;

fn numpy_name(d: DType) -> &'static str {
    match d {
        DType::U16 => "uint16",
        DType::U32 => "uint32",
    }
}

/// A read-only view of `data`, kept alive by `owner`.
fn view<'py, T: numpy::Element>(data: &[T], owner: Bound<'py, PyAny>) -> Bound<'py, PyAny> {
    let arr = ArrayView1::from(data);
    // SAFETY: `owner` holds the `Arc<Dataset>` whose read-only map backs `data`;
    // numpy keeps `owner` as the array's base, so the map outlives the array.
    // The map is never written, and the array is made non-writeable below.
    let out = unsafe { PyArray1::<T>::borrow_from_array(&arr, owner) };
    // SAFETY: `out` is a live array we just created; clearing WRITEABLE is
    // what `make_nonwriteable` does, without the borrow-tracking round trip.
    unsafe {
        (*_PyArray_GET_ITEM_DATA(out.as_array_ptr())).flags &= !NPY_ARRAY_WRITEABLE;
    }
    out.into_any()
}

/// An opened dataset: documents as zero-copy numpy views of the mapped shards.
#[pyclass(name = "Dataset", module = "tokenloom._core", frozen)]
pub struct PyDataset {
    inner: Arc<Dataset>,
    /// Provenance sidecars read so far, by shard.
    sources: Mutex<HashMap<usize, Arc<Sources>>>,
}

#[pymethods]
impl PyDataset {
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let ds = run_detached(py, move || Dataset::open(path))?;
        Ok(PyDataset {
            inner: Arc::new(ds),
            sources: Mutex::new(HashMap::new()),
        })
    }

    fn __len__(&self) -> usize {
        self.inner.num_docs() as usize
    }

    fn __getitem__<'py>(slf: &Bound<'py, Self>, index: isize) -> PyResult<Bound<'py, PyAny>> {
        let ds = &slf.get().inner;
        let n = ds.num_docs() as isize;
        let i = if index < 0 { index + n } else { index };
        if i < 0 || i >= n {
            return Err(PyIndexError::new_err(format!(
                "document {index} is out of range (the dataset has {n} documents)"
            )));
        }
        let owner = slf.clone().into_any();
        Ok(match to_py(ds.doc_checked(i as u64))? {
            Tokens::U16(t) => view(t, owner),
            Tokens::U32(t) => view(t, owner),
        })
    }

    /// The input file and row (0-based line or record) that document
    /// `index` came from; datasets made by `build` record them.
    fn source(&self, py: Python<'_>, index: isize) -> PyResult<(String, u64)> {
        let ds = &self.inner;
        let n = ds.num_docs() as isize;
        let i = if index < 0 { index + n } else { index };
        if i < 0 || i >= n {
            return Err(PyIndexError::new_err(format!(
                "document {index} is out of range (the dataset has {n} documents)"
            )));
        }
        let (s, j) = to_py(ds.locate(i as u64))?;
        let cached = self
            .sources
            .lock()
            .map_err(|_| PyValueError::new_err("provenance cache poisoned"))?
            .get(&s)
            .cloned();
        let src = match cached {
            Some(src) => src,
            None => {
                let ds2 = Arc::clone(ds);
                let src = Arc::new(run_detached(py, move || source::load_shard(&ds2, s))?);
                if let Ok(mut m) = self.sources.lock() {
                    m.insert(s, Arc::clone(&src));
                }
                src
            }
        };
        let (path, row) = src.get(j).ok_or_else(|| {
            PyValueError::new_err(format!(
                "document {i} is missing from its provenance sidecar"
            ))
        })?;
        Ok((path.to_string(), row))
    }

    /// Number of tokens.
    #[getter]
    fn num_tokens(&self) -> u64 {
        self.inner.num_tokens()
    }

    /// Numpy name of the token dtype (`"uint16"` or `"uint32"`).
    #[getter]
    fn dtype(&self) -> &'static str {
        numpy_name(self.inner.dtype())
    }

    #[getter]
    fn num_shards(&self) -> usize {
        self.inner.shards().len()
    }

    #[getter]
    fn eos_id(&self) -> Option<u64> {
        self.inner.manifest().eos_id
    }

    #[getter]
    fn vocab_size(&self) -> Option<u64> {
        self.inner.manifest().vocab_size
    }

    #[getter]
    fn tokenizer(&self) -> Option<String> {
        self.inner.manifest().tokenizer.clone()
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.root().to_path_buf()
    }

    /// Length of every document (uint64), computed from the index.
    fn doc_lengths<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<u64>>> {
        let ds = Arc::clone(&self.inner);
        let lens = run_detached(py, move || ds.doc_lengths())?;
        Ok(PyArray1::from_vec(py, lens))
    }

    /// Checks every checksum and offset, the provenance sidecars when there are any (and
    /// tokens against the vocabulary).
    #[pyo3(signature = (check_vocab = false, progress = true))]
    fn verify<'py>(
        &self,
        py: Python<'py>,
        check_vocab: bool,
        progress: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let ds = Arc::clone(&self.inner);
        let bar = PyProgress::new(progress);
        let result = run_detached(py, || {
            verify_dataset(&ds, VerifyOptions { check_vocab }, &bar)
        });
        if let Some(interrupt) = bar.take_interrupt() {
            return Err(interrupt);
        }
        let r = result?;
        let d = PyDict::new(py);
        d.set_item("shards", r.shards)?;
        d.set_item("documents", r.docs)?;
        d.set_item("tokens", r.tokens)?;
        d.set_item("bytes", r.bytes)?;
        d.set_item("sources", r.sources)?;
        Ok(d)
    }

    /// Sizes and document-length statistics, as `tokenloom inspect` prints them.
    fn summary<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let ds = Arc::clone(&self.inner);
        let s = run_detached(py, move || DatasetSummary::of(&ds))?;
        let d = PyDict::new(py);
        d.set_item("path", s.path.display().to_string())?;
        d.set_item("dtype", s.dtype.name())?;
        d.set_item("documents", s.num_docs)?;
        d.set_item("tokens", s.num_tokens)?;
        d.set_item("shards", s.num_shards)?;
        d.set_item("token_bytes", s.token_bytes)?;
        d.set_item("eos_id", s.eos_id)?;
        d.set_item("vocab_size", s.vocab_size)?;
        d.set_item("tokenizer", s.tokenizer.clone())?;
        d.set_item("doc_len_mean", s.doc_len_mean)?;
        let q = PyDict::new(py);
        for (level, v) in &s.doc_len_quantiles {
            q.set_item(level, v)?;
        }
        d.set_item("doc_len_quantiles", q)?;
        d.set_item("text", s.to_string())?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "Dataset({:?}, documents={}, tokens={}, dtype={}, shards={})",
            self.inner.root().display().to_string(),
            self.inner.num_docs(),
            self.inner.num_tokens(),
            self.inner.dtype(),
            self.inner.shards().len()
        )
    }

    /// Pickles as its path: a worker process reopens (and re-maps) the files.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, (PathBuf,))> {
        let cls = slf.get_type().into_any();
        Ok((cls, (slf.get().inner.root().to_path_buf(),)))
    }
}

/// Streaming, atomic writer of a dataset.
#[pyclass(name = "DatasetWriter", module = "tokenloom._core")]
pub struct PyDatasetWriter {
    inner: DatasetWriter,
}

/// Calls `f` with the array's data as a typed slice, for every integer dtype.
fn with_tokens<R>(
    arr: &Bound<'_, PyAny>,
    name: &str,
    f: &mut dyn FnMut(AnySlice<'_>) -> PyResult<R>,
) -> PyResult<R> {
    macro_rules! try_dtype {
        ($($t:ty => $v:ident),*) => {$(
            if let Ok(a) = arr.extract::<PyReadonlyArray1<'_, $t>>() {
                let s = a.as_slice().map_err(|_| {
                    PyValueError::new_err(format!("{name} must be a C-contiguous 1-D array (use numpy.ascontiguousarray)"))
                })?;
                return f(AnySlice::$v(s));
            }
        )*};
    }
    try_dtype!(u16 => U16, u32 => U32, i64 => I64, i32 => I32, u64 => U64, u8 => U8, i16 => I16, i8 => I8);
    let desc = arr
        .cast::<PyUntypedArray>()
        .map(|a| format!("a {}-D array of {}", a.ndim(), a.dtype()))
        .unwrap_or_else(|_| arr.get_type().to_string());
    Err(PyValueError::new_err(format!(
        "{name} must be a 1-D numpy array of integers, got {desc}"
    )))
}

/// A borrowed integer slice of any supported element type.
pub enum AnySlice<'a> {
    U8(&'a [u8]),
    U16(&'a [u16]),
    U32(&'a [u32]),
    U64(&'a [u64]),
    I8(&'a [i8]),
    I16(&'a [i16]),
    I32(&'a [i32]),
    I64(&'a [i64]),
}

fn add_typed<T: TokenInt + Send + Sync>(
    py: Python<'_>,
    w: &mut DatasetWriter,
    tokens: &[T],
    lengths: &[u64],
) -> PyResult<()> {
    if tokens.len() < 1 << 16 {
        return to_py(w.add_many(tokens, lengths));
    }
    run_detached(py, || w.add_many(tokens, lengths))
}

fn add_any(
    py: Python<'_>,
    w: &mut DatasetWriter,
    s: AnySlice<'_>,
    lengths: Option<&[u64]>,
) -> PyResult<()> {
    macro_rules! dispatch {
        ($($v:ident),*) => {
            match s {$(AnySlice::$v(t) => {
                let one = [t.len() as u64];
                add_typed(py, w, t, lengths.unwrap_or(&one))
            })*}
        };
    }
    dispatch!(U8, U16, U32, U64, I8, I16, I32, I64)
}

#[pymethods]
impl PyDatasetWriter {
    #[new]
    #[pyo3(signature = (path, dtype = "u16", eos_id = None, vocab_size = None, tokenizer = None, shard_bytes = 1_073_741_824, overwrite = false))]
    fn new(
        path: PathBuf,
        dtype: &str,
        eos_id: Option<u64>,
        vocab_size: Option<u64>,
        tokenizer: Option<String>,
        shard_bytes: u64,
        overwrite: bool,
    ) -> PyResult<Self> {
        let dtype = to_py(DType::parse(dtype))?;
        let opts = WriterOptions {
            dtype,
            eos_id,
            vocab_size,
            tokenizer,
            shard_bytes,
            overwrite,
        };
        Ok(PyDatasetWriter {
            inner: to_py(DatasetWriter::create(path, opts))?,
        })
    }

    /// Appends one document (a 1-D integer numpy array).
    fn add(&mut self, py: Python<'_>, tokens: &Bound<'_, PyAny>) -> PyResult<()> {
        let w = &mut self.inner;
        with_tokens(tokens, "tokens", &mut |s| add_any(py, w, s, None))
    }

    /// Appends several documents: concatenated `tokens` and their `lengths`.
    fn add_many(
        &mut self,
        py: Python<'_>,
        tokens: &Bound<'_, PyAny>,
        lengths: PyReadonlyArray1<'_, u64>,
    ) -> PyResult<()> {
        let lengths = lengths
            .as_slice()
            .map_err(|_| PyValueError::new_err("lengths must be a C-contiguous 1-D array"))?;
        let w = &mut self.inner;
        with_tokens(tokens, "tokens", &mut |s| add_any(py, w, s, Some(lengths)))
    }

    /// Commits the dataset; returns its totals.
    fn close<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let w = &mut self.inner;
        let m = run_detached(py, || w.close())?;
        let d = PyDict::new(py);
        d.set_item("documents", m.num_docs)?;
        d.set_item("tokens", m.num_tokens)?;
        d.set_item("shards", m.shards.len())?;
        d.set_item("generation", m.generation)?;
        Ok(d)
    }

    /// Drops everything written so far; a previous dataset stays intact.
    fn abort(&mut self) {
        self.inner.abort();
    }

    #[getter]
    fn num_docs(&self) -> u64 {
        self.inner.num_docs()
    }

    #[getter]
    fn num_tokens(&self) -> u64 {
        self.inner.num_tokens()
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.root().to_path_buf()
    }
}

/// Writes the provenance sidecars of the committed dataset at `path`:
/// `runs` are (input file, first document) pairs, `rows` one row per document.
#[pyfunction]
pub fn write_sources(
    py: Python<'_>,
    path: PathBuf,
    runs: Vec<(String, u64)>,
    rows: PyReadonlyArray1<'_, u64>,
) -> PyResult<()> {
    let rows = rows.as_slice()?.to_vec();
    run_detached(py, move || source::write_for_dataset(&path, &runs, &rows))
}

/// The lock of a dataset directory (created when missing), held until
/// `release()` or the end of the `with` block: another writer of the
/// directory fails at once with `LockedError` naming this process.
#[pyclass(name = "DatasetLock", module = "tokenloom._core", frozen)]
pub struct PyDatasetLock {
    inner: Mutex<Option<TargetLock>>,
}

#[pymethods]
impl PyDatasetLock {
    #[new]
    #[pyo3(signature = (path, what = "build"))]
    fn new(path: PathBuf, what: &str) -> PyResult<Self> {
        if !path.exists() {
            std::fs::create_dir_all(&path)
                .map_err(|e| crate::errors::PyTlError(tokenloom_core::Error::io(&path, e)))?;
        }
        Ok(PyDatasetLock {
            inner: Mutex::new(Some(to_py(TargetLock::dataset(&path, what))?)),
        })
    }

    /// Releases the lock (idempotent).
    fn release(&self) {
        if let Ok(mut l) = self.inner.lock() {
            l.take();
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        _t: Option<&Bound<'_, PyAny>>,
        _v: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) {
        self.release();
    }
}

/// Combines the committed datasets `parts`, in order, into one dataset at
/// `out` by linking their shard files and writing one manifest atomically.
/// `lock`, when given, is the held lock of `out` (else `out` is locked here).
#[pyfunction]
#[pyo3(signature = (out, parts, overwrite = false, lock = None))]
pub fn merge_datasets<'py>(
    py: Python<'py>,
    out: PathBuf,
    parts: Vec<PathBuf>,
    overwrite: bool,
    lock: Option<&Bound<'py, PyDatasetLock>>,
) -> PyResult<Bound<'py, PyDict>> {
    let m = match lock {
        None => run_detached(py, move || merge(&out, &parts, overwrite))?,
        Some(lock) => {
            let guard = lock
                .get()
                .inner
                .lock()
                .map_err(|_| PyValueError::new_err("the dataset lock was poisoned"))?;
            let held = guard.as_ref().filter(|l| l.covers(&out)).ok_or_else(|| {
                PyValueError::new_err(format!(
                    "the lock given does not hold {} (released, or another directory)",
                    out.display()
                ))
            })?;
            run_detached(py, || merge_locked(held, &parts, overwrite))?
        }
    };
    let d = PyDict::new(py);
    d.set_item("num_docs", m.num_docs)?;
    d.set_item("num_tokens", m.num_tokens)?;
    d.set_item("num_shards", m.shards.len())?;
    Ok(d)
}
