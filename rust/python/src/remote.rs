//! Bindings of `tokenloom_remote`: remote settings from keyword arguments,
//! uploads, and where datasets bound for a URL are staged.

use std::collections::HashMap;
use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use tokenloom_remote::RemoteOptions;

use crate::detach::run_detached;
use crate::errors::to_py;
use crate::progress::PyProgress;

/// Remote settings: the environment's, overridden by the arguments given.
pub fn options(
    cache_dir: Option<PathBuf>,
    cache_limit: Option<u64>,
    storage_options: Option<HashMap<String, String>>,
    lookahead: Option<usize>,
) -> PyResult<RemoteOptions> {
    let mut o = to_py(RemoteOptions::from_env())?;
    if let Some(d) = cache_dir {
        o.cache_dir = d;
    }
    if let Some(l) = cache_limit {
        o.cache_limit = l;
    }
    if let Some(s) = storage_options {
        let mut s: Vec<(String, String)> = s.into_iter().collect();
        s.sort();
        o.storage = s;
    }
    if let Some(l) = lookahead {
        o.lookahead = l;
    }
    Ok(o)
}

/// Uploads the committed dataset at `local` to `url` (manifest last).
#[pyfunction]
#[pyo3(signature = (local, url, overwrite = false, cache_dir = None, storage_options = None, progress = true))]
pub fn upload_dataset<'py>(
    py: Python<'py>,
    local: PathBuf,
    url: String,
    overwrite: bool,
    cache_dir: Option<PathBuf>,
    storage_options: Option<HashMap<String, String>>,
    progress: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let opts = options(cache_dir, None, storage_options, None)?;
    let bar = PyProgress::new(progress);
    let result = run_detached(py, || {
        tokenloom_remote::upload_dataset(&local, &url, &opts, overwrite, &bar)
    });
    if let Some(interrupt) = bar.take_interrupt() {
        return Err(interrupt);
    }
    crate::dicts::totals(py, &result?)
}

/// The local directory where a dataset bound for `url` is staged.
#[pyfunction]
#[pyo3(signature = (url, cache_dir = None))]
pub fn staging_dir(url: String, cache_dir: Option<PathBuf>) -> PyResult<PathBuf> {
    let opts = options(cache_dir, None, None, None)?;
    Ok(tokenloom_remote::staging_dir(&url, &opts))
}

/// Whether `path` is a URL (`scheme://...`) rather than a local path.
#[pyfunction]
pub fn is_url(path: String) -> bool {
    tokenloom_remote::is_url(&path)
}
