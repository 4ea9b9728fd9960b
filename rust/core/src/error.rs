//! The one error type of tokenloom. Every variant says what went wrong, where
//! (file and byte offset when there is one) and what the user can do about it.

use std::io;
use std::path::{Path, PathBuf};

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors, grouped by what the user must do rather than by the failing crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system refused an operation on `path`.
    #[error("{}: {source}{}", path.display(), io_hint(source))]
    Io {
        /// File or directory the operation was about.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A file's content is not what the format allows.
    #[error("{}: {what} at byte {offset}; {fix}", path.display())]
    Corrupt {
        /// The file that is corrupt.
        path: PathBuf,
        /// Byte offset inside `path` where the problem was found.
        offset: u64,
        /// What is wrong.
        what: String,
        /// What the user can do.
        fix: String,
    },
    /// A file was written by a newer (or unknown) version of the format.
    #[error("{}: format version {found} at byte {offset} is not supported (this build reads version {supported}); upgrade tokenloom or rewrite the file with this version", path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Byte offset of the version field.
        offset: u64,
        /// Version found in the file.
        found: u64,
        /// Version this build supports.
        supported: u64,
    },
    /// The destination already exists and the caller did not ask to replace it.
    #[error("{}: already exists; pass overwrite=True (CLI: --overwrite) to replace it atomically, or choose another path", path.display())]
    AlreadyExists {
        /// The existing path.
        path: PathBuf,
    },
    /// An argument given by the caller is out of its domain.
    #[error("invalid {name}: {reason}")]
    InvalidArgument {
        /// Name of the argument.
        name: String,
        /// Why it is rejected and what would be accepted.
        reason: String,
    },
    /// Another writer holds the target's lock.
    #[error("{}: another writer is writing it: {holder}; wait until it has finished (the lock goes with its process), or write somewhere else", path.display())]
    Locked {
        /// The dataset directory or file being written.
        path: PathBuf,
        /// Who holds the lock, as far as its note tells.
        holder: String,
    },
    /// The operation was cancelled (Ctrl-C); nothing partial was committed.
    #[error("cancelled; nothing partial was committed")]
    Cancelled,
}

fn io_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::NotFound => {
            " (check the path; a dataset is a directory holding manifest.json)"
        }
        io::ErrorKind::PermissionDenied => " (check the file permissions)",
        io::ErrorKind::StorageFull => {
            " (the disk is full; free space and retry — the previous dataset is untouched)"
        }
        io::ErrorKind::QuotaExceeded => {
            " (the disk quota is exhausted; free space or raise the quota and retry — the previous dataset is untouched)"
        }
        io::ErrorKind::FileTooLarge => {
            " (the file size limit was reached: see `ulimit -f` or the file system's maximum file size; raise it, or write smaller shards, and retry — the previous dataset is untouched)"
        }
        _ => "",
    }
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl AsRef<Path>, source: io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A corruption found in `path` at byte `offset`.
    pub fn corrupt(
        path: impl AsRef<Path>,
        offset: u64,
        what: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Error::Corrupt {
            path: path.as_ref().to_path_buf(),
            offset,
            what: what.into(),
            fix: fix.into(),
        }
    }

    /// Data written by a newer format version than this build reads.
    pub fn version(path: impl AsRef<Path>, offset: u64, found: u64, supported: u64) -> Self {
        Error::UnsupportedVersion {
            path: path.as_ref().to_path_buf(),
            offset,
            found,
            supported,
        }
    }

    /// An invalid argument.
    pub fn invalid(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            name: name.into(),
            reason: reason.into(),
        }
    }

    /// The file the error is about, when there is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Error::Io { path, .. }
            | Error::Corrupt { path, .. }
            | Error::UnsupportedVersion { path, .. }
            | Error::AlreadyExists { path }
            | Error::Locked { path, .. } => Some(path),
            Error::InvalidArgument { .. } | Error::Cancelled => None,
        }
    }

    /// The byte offset the error is about, when there is one.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Error::Corrupt { offset, .. } | Error::UnsupportedVersion { offset, .. } => {
                Some(*offset)
            }
            _ => None,
        }
    }
}

/// A vector of `n` copies of `value`, allocated fallibly: a size that does
/// not fit in memory (from a user's argument, most often) is an error naming
/// `what`, never an abort of the process.
pub fn try_filled<T: Clone>(n: usize, value: T, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        Error::invalid(
            what,
            format!(
                "needs {n} elements of {} bytes ({:.1} GiB), more than can be allocated; choose smaller sizes",
                std::mem::size_of::<T>(),
                n as f64 * std::mem::size_of::<T>() as f64 / (1u64 << 30) as f64
            ),
        )
    })?;
    v.resize(n, value);
    Ok(v)
}

/// `a * b`, or an error naming `what` when the product overflows.
pub fn checked_size(a: usize, b: usize, what: &str) -> Result<usize> {
    a.checked_mul(b)
        .ok_or_else(|| Error::invalid(what, format!("{a} x {b} elements do not fit in memory")))
}

/// Adds the path to an `io::Result`.
pub trait IoContext<T> {
    /// Maps the error to [`Error::Io`] naming `path`.
    fn at(self, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
