//! Exception classes and the mapping from core errors to them.

use pyo3::exceptions::{
    PyFileExistsError, PyFileNotFoundError, PyIsADirectoryError, PyNotADirectoryError, PyOSError,
    PyPermissionError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::{create_exception, PyErr};
use std::io::ErrorKind;
use tokenloom_core::Error;

create_exception!(
    tokenloom._core,
    TokenloomError,
    pyo3::exceptions::PyException,
    "Base class of tokenloom's own errors."
);
create_exception!(
    tokenloom._core,
    CorruptShardError,
    TokenloomError,
    "A file of a dataset is damaged or inconsistent; `.path` and `.offset` say where."
);
create_exception!(
    tokenloom._core,
    FormatVersionError,
    TokenloomError,
    "A file was written by an unsupported version of the format."
);
create_exception!(
    tokenloom._core,
    LockedError,
    TokenloomError,
    "Another writer is writing the same dataset or file; `.path` names it, the message names the writer."
);
create_exception!(
    tokenloom._core,
    CancelledError,
    TokenloomError,
    "A long job was cancelled; nothing partial was committed."
);

/// A core error on its way to Python (newtype for the orphan rule).
pub struct PyTlError(pub Error);

impl From<Error> for PyTlError {
    fn from(e: Error) -> Self {
        PyTlError(e)
    }
}

/// The `OSError` subclass for `source`, with its `errno` when the system gave one (so that
/// `e.errno == errno.ENOSPC` tells a full disk).
fn io_class(source: &std::io::Error, msg: String) -> PyErr {
    macro_rules! new {
        ($cls:ty) => {
            match source.raw_os_error() {
                Some(code) => <$cls>::new_err((code, msg)),
                None => <$cls>::new_err(msg),
            }
        };
    }
    match source.kind() {
        ErrorKind::NotFound => new!(PyFileNotFoundError),
        ErrorKind::PermissionDenied => new!(PyPermissionError),
        ErrorKind::AlreadyExists => new!(PyFileExistsError),
        ErrorKind::IsADirectory => new!(PyIsADirectoryError),
        ErrorKind::NotADirectory => new!(PyNotADirectoryError),
        _ => new!(PyOSError),
    }
}

impl From<PyTlError> for PyErr {
    fn from(e: PyTlError) -> PyErr {
        let err = e.0;
        let msg = err.to_string();
        let (path, offset) = (err.path().map(|p| p.display().to_string()), err.offset());
        let py_err = match &err {
            Error::Io { source, .. } => io_class(source, msg),
            Error::Corrupt { .. } => CorruptShardError::new_err(msg),
            Error::UnsupportedVersion { .. } => FormatVersionError::new_err(msg),
            Error::AlreadyExists { .. } => PyFileExistsError::new_err(msg),
            Error::InvalidArgument { .. } => PyValueError::new_err(msg),
            Error::Locked { .. } => LockedError::new_err(msg),
            Error::Cancelled => CancelledError::new_err(msg),
        };
        Python::attach(|py| {
            let value = py_err.value(py);
            let _ = value.setattr("path", path);
            let _ = value.setattr("offset", offset);
        });
        py_err
    }
}

/// Converts a core result for returning to Python.
pub fn to_py<T>(r: tokenloom_core::Result<T>) -> PyResult<T> {
    r.map_err(|e| PyTlError(e).into())
}

/// Registers the exception classes on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    // Where an error happened, on every instance (None when it has no file or
    // offset): class attributes, so that they exist before an instance sets them.
    let base = py.get_type::<TokenloomError>();
    base.setattr("path", py.None())?;
    base.setattr("offset", py.None())?;
    m.add("TokenloomError", base)?;
    m.add("CorruptShardError", py.get_type::<CorruptShardError>())?;
    m.add("FormatVersionError", py.get_type::<FormatVersionError>())?;
    m.add("CancelledError", py.get_type::<CancelledError>())?;
    m.add("LockedError", py.get_type::<LockedError>())?;
    Ok(())
}
