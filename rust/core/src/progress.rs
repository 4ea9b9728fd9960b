//! Progress reporting and cancellation for long jobs. The CLI draws an
//! indicatif bar; the Python bindings update tqdm and turn Ctrl-C into a
//! cancellation; library users can pass [`NoProgress`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};

/// Receives progress of a long job. Implementations must be cheap: `advance`
/// is called often (every few MiB of work).
pub trait Progress: Sync {
    /// Starts a phase of `total` units (bytes, documents...), named `what`.
    fn start(&self, what: &str, total: u64);
    /// `n` more units are done.
    fn advance(&self, n: u64);
    /// The phase is over.
    fn finish(&self);
    /// Whether the user asked to stop. Checked between chunks of work.
    fn cancelled(&self) -> bool;

    /// Returns [`Error::Cancelled`] if the user asked to stop.
    fn check(&self) -> Result<()> {
        if self.cancelled() {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// A progress sink that shows nothing and is never cancelled.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
    fn cancelled(&self) -> bool {
        false
    }
}

/// A shared flag set from a signal handler (or any thread) to stop a job.
#[derive(Debug, Default, Clone)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A fresh, unset token.
    pub fn new() -> Self {
        Self::default()
    }
    /// Asks the job to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A progress sink that asks every job to stop at its first check (tests).
#[cfg(test)]
pub(crate) struct AlwaysCancelled;

#[cfg(test)]
impl Progress for AlwaysCancelled {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
    fn cancelled(&self) -> bool {
        true
    }
}
