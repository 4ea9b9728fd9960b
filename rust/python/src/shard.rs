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
    merge, merge_locked, source, verify::verify_dataset, Acquired, Compression, Sources,
    TargetLock, TokenInt,
};
use tokenloom_core::{
    DType, Dataset, DatasetSummary, DatasetWriter, Tokens, VerifyOptions, WriterOptions,
};
use tokenloom_remote::{RemoteOptions, RemoteWriter};

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

/// A view of a remote dataset in which some shards are mapped; owner of the
/// numpy arrays read from it.
#[pyclass(name = "_MappedView", module = "tokenloom._core", frozen)]
pub struct MappedView(#[allow(dead_code)] Arc<Dataset>);

/// How a dataset was opened, to open it again in another process.
type OpenArgs = (
    String,
    Option<PathBuf>,
    Option<u64>,
    Option<HashMap<String, String>>,
);

/// An opened dataset: documents as zero-copy numpy views of the mapped shards.
#[pyclass(name = "Dataset", module = "tokenloom._core", frozen)]
pub struct PyDataset {
    inner: Arc<Dataset>,
    /// Provenance sidecars read so far, by shard.
    sources: Mutex<HashMap<usize, Arc<Sources>>>,
    args: OpenArgs,
}

/// Opens a dataset path or URL with the given remote settings.
pub fn open_any(path: &str, opts: &RemoteOptions) -> tokenloom_core::Result<Dataset> {
    tokenloom_remote::open(path, opts)
}

impl PyDataset {
    fn open(
        py: Python<'_>,
        path: PathBuf,
        cache_dir: Option<PathBuf>,
        cache_limit: Option<u64>,
        storage_options: Option<HashMap<String, String>>,
    ) -> PyResult<Self> {
        let text = path.to_string_lossy().into_owned();
        let opts = crate::remote::options(
            cache_dir.clone(),
            cache_limit,
            storage_options.clone(),
            None,
        )?;
        let t = text.clone();
        let ds = run_detached(py, move || open_any(&t, &opts))?;
        Ok(PyDataset {
            inner: Arc::new(ds),
            sources: Mutex::new(HashMap::new()),
            args: (text, cache_dir, cache_limit, storage_options),
        })
    }
}

/// Opens a dataset path or URL (`tokenloom.open_dataset`, the one way to
/// open one; `Dataset` is its type).
#[pyfunction]
#[pyo3(signature = (path, cache_dir = None, cache_limit = None, storage_options = None))]
pub fn open_dataset(
    py: Python<'_>,
    path: PathBuf,
    cache_dir: Option<PathBuf>,
    cache_limit: Option<u64>,
    storage_options: Option<HashMap<String, String>>,
) -> PyResult<PyDataset> {
    PyDataset::open(py, path, cache_dir, cache_limit, storage_options)
}

#[pymethods]
impl PyDataset {
    /// Deprecated: `tokenloom.open_dataset(path)` opens a dataset.
    #[new]
    #[pyo3(signature = (path, cache_dir = None, cache_limit = None, storage_options = None))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        cache_dir: Option<PathBuf>,
        cache_limit: Option<u64>,
        storage_options: Option<HashMap<String, String>>,
    ) -> PyResult<Self> {
        PyErr::warn(
            py,
            &py.get_type::<pyo3::exceptions::PyDeprecationWarning>(),
            c"tokenloom.Dataset(path) is deprecated: open a dataset with tokenloom.open_dataset(path) (Dataset stays its type)",
            1,
        )?;
        Self::open(py, path, cache_dir, cache_limit, storage_options)
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
        if let Some(provider) = ds.provider() {
            // A remote dataset: fetch the shard, read it from a view that the array keeps alive.
            let (s, _) = to_py(ds.locate(i as u64))?;
            let p = Arc::clone(provider);
            let held = run_detached(slf.py(), move || Acquired::new(p, vec![s]))?;
            let mapped = Arc::clone(held.view());
            let owner = Bound::new(slf.py(), MappedView(Arc::clone(&mapped)))?.into_any();
            return Ok(match to_py(mapped.doc_checked(i as u64))? {
                Tokens::U16(t) => view(t, owner),
                Tokens::U32(t) => view(t, owner),
            });
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

    /// The path or URL the dataset was opened from (a remote dataset's
    /// files live in its cache directory, `root`).
    #[getter]
    fn path(&self) -> String {
        if self.inner.provider().is_some() {
            return self.args.0.clone();
        }
        self.inner.root().display().to_string()
    }

    /// The local directory holding the dataset's files (for a remote
    /// dataset: its cache directory).
    #[getter]
    fn root(&self) -> PathBuf {
        self.inner.root().to_path_buf()
    }

    /// Whether the dataset is read through the local shard cache.
    #[getter]
    fn is_remote(&self) -> bool {
        self.inner.provider().is_some()
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

    /// Pickles as its path (and remote settings): a worker process reopens
    /// (and re-maps) the files.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, OpenArgs)> {
        let open = slf
            .py()
            .import("tokenloom._core")?
            .getattr("open_dataset")?;
        let me = slf.get();
        let mut args = me.args.clone();
        if me.inner.provider().is_none() {
            args.0 = me.inner.root().to_string_lossy().into_owned();
        }
        Ok((open, args))
    }
}

/// Streaming, atomic writer of a dataset (a local directory, or a URL:
/// staged locally, uploaded on close with the manifest last).
#[pyclass(name = "DatasetWriter", module = "tokenloom._core")]
pub struct PyDatasetWriter {
    inner: Target,
}

enum Target {
    Local(Box<DatasetWriter>),
    Remote(Box<RemoteWriter>),
}

impl Target {
    fn writer(&mut self) -> &mut DatasetWriter {
        match self {
            Target::Local(w) => w,
            Target::Remote(r) => r.writer(),
        }
    }
    fn writer_ref(&self) -> &DatasetWriter {
        match self {
            Target::Local(w) => w,
            Target::Remote(r) => r.writer_ref(),
        }
    }
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
    #[pyo3(signature = (path, dtype = "u16", eos_id = None, vocab_size = None, tokenizer = None, shard_bytes = 1_073_741_824, overwrite = false, compression = None, cache_dir = None, storage_options = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        dtype: &str,
        eos_id: Option<u64>,
        vocab_size: Option<u64>,
        tokenizer: Option<String>,
        shard_bytes: u64,
        overwrite: bool,
        compression: Option<String>,
        cache_dir: Option<PathBuf>,
        storage_options: Option<HashMap<String, String>>,
    ) -> PyResult<Self> {
        let compression = match compression {
            Some(c) => to_py(Compression::parse(&c))?,
            None => None,
        };
        let dtype = to_py(DType::parse(dtype))?;
        let opts = WriterOptions {
            dtype,
            eos_id,
            vocab_size,
            tokenizer,
            shard_bytes,
            overwrite,
        };
        let text = path.to_string_lossy().into_owned();
        let mut inner = if tokenloom_remote::is_url(&text) {
            let remote = crate::remote::options(cache_dir, None, storage_options, None)?;
            let w = run_detached(py, move || RemoteWriter::create(&text, opts, &remote))?;
            Target::Remote(Box::new(w))
        } else {
            Target::Local(Box::new(to_py(DatasetWriter::create(path, opts))?))
        };
        to_py(inner.writer().set_compression(compression))?;
        Ok(PyDatasetWriter { inner })
    }

    /// Appends one document (a 1-D integer numpy array).
    fn add(&mut self, py: Python<'_>, tokens: &Bound<'_, PyAny>) -> PyResult<()> {
        let w = self.inner.writer();
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
        let w = self.inner.writer();
        with_tokens(tokens, "tokens", &mut |s| add_any(py, w, s, Some(lengths)))
    }

    /// Commits the dataset; returns its totals.
    #[pyo3(signature = (progress = false))]
    fn close<'py>(&mut self, py: Python<'py>, progress: bool) -> PyResult<Bound<'py, PyDict>> {
        let bar = PyProgress::new(progress);
        let target = &mut self.inner;
        let result = run_detached(py, || match target {
            Target::Local(w) => w.close(),
            Target::Remote(r) => r.close(&bar),
        });
        if let Some(interrupt) = bar.take_interrupt() {
            return Err(interrupt);
        }
        crate::dicts::totals(py, &result?)
    }

    /// Drops everything written so far; a previous dataset stays intact.
    fn abort(&mut self) {
        match &mut self.inner {
            Target::Local(w) => w.abort(),
            Target::Remote(r) => r.abort(),
        }
    }

    #[getter]
    fn num_docs(&self) -> u64 {
        self.inner.writer_ref().num_docs()
    }

    #[getter]
    fn num_tokens(&self) -> u64 {
        self.inner.writer_ref().num_tokens()
    }

    #[getter]
    fn path(&self) -> String {
        match &self.inner {
            Target::Local(w) => w.root().display().to_string(),
            Target::Remote(r) => r.url().to_string(),
        }
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
