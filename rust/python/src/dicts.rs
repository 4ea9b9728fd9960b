//! Structured values (reports, order metadata, sources) crossing the
//! boundary as Python dicts and lists, not JSON text.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokenloom_core::shard::manifest::Manifest;

/// `value` as Python dicts, lists and scalars. It passes through
/// `serde_json::Value` first, so a NaN becomes `None` exactly as in the
/// report stored in an order file, and every value stays JSON-safe.
pub fn to_py<'py, T: Serialize>(py: Python<'py>, value: &T) -> PyResult<Bound<'py, PyAny>> {
    let value = serde_json::to_value(value)
        .map_err(|e| PyValueError::new_err(format!("cannot convert to a dict: {e}")))?;
    pythonize::pythonize(py, &value).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// `obj` (dicts, lists and scalars) read as `T`; `what` names the argument
/// in the error.
pub fn from_py<T: DeserializeOwned>(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<T> {
    pythonize::depythonize(obj)
        .map_err(|e| PyValueError::new_err(format!("{what} is not what it should hold: {e}")))
}

/// An optional JSON-like argument, `{}` when not given.
pub fn object_or_empty(obj: Option<&Bound<'_, PyAny>>, what: &str) -> PyResult<serde_json::Value> {
    match obj {
        None => Ok(serde_json::Value::Object(Default::default())),
        Some(o) => from_py(o, what),
    }
}

/// A committed dataset's totals, as `close()` and `upload_dataset` return them.
pub fn totals<'py>(py: Python<'py>, m: &Manifest) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("documents", m.num_docs)?;
    d.set_item("tokens", m.num_tokens)?;
    d.set_item("shards", m.shards.len())?;
    d.set_item("generation", m.generation)?;
    Ok(d)
}
