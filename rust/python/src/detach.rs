//! Running core work with the GIL released, panics contained, errors mapped.

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::prelude::*;

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
