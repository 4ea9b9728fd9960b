//! Running core work with the GIL released, panics contained, errors mapped.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::MutexExt;

use crate::errors::{to_py, TokenloomError};

/// Runs `f` detached from the interpreter. A panic becomes a
/// `TokenloomError` instead of crossing into Python.
pub fn run_detached<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce() -> tokenloom_core::Result<T> + Send,
{
    let out = py.detach(|| catch_unwind(AssertUnwindSafe(f)));
    match out {
        Ok(r) => to_py(r),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(TokenloomError::new_err(format!(
                "internal error ({what}); this is a bug in tokenloom, please report it with the input that caused it"
            )))
        }
    }
}

/// Locks `m`, waiting without the GIL: the holder may release the GIL while
/// it holds the lock (a selection, a batch being read, a garbage collection),
/// so waiting with the GIL held could deadlock. `what` names the object in
/// the error of a lock poisoned by an earlier failure.
pub fn lock<'a, T>(py: Python<'_>, m: &'a Mutex<T>, what: &str) -> PyResult<MutexGuard<'a, T>> {
    m.lock_py_attached(py)
        .map_err(|_| PyRuntimeError::new_err(format!("the {what} failed in another thread")))
}
