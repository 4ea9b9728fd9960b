//! Datasets whose shard bodies are not all on local disk (a remote dataset
//! behind a bounded cache): the dataset is opened from its manifest and
//! indexes alone, and readers ask its [`ShardProvider`] for a view in which
//! the shards they are about to read are mapped.

use std::sync::Arc;

use super::reader::Dataset;
use crate::error::Result;

/// Makes shard bodies readable on demand.
pub trait ShardProvider: Send + Sync + std::fmt::Debug {
    /// A view of the dataset in which every shard of `shards` is mapped.
    /// They stay on local disk (are not evicted) until [`release`](Self::release)
    /// is called with the same list; the view's maps stay valid as long as
    /// the view lives, whatever happens to the files.
    fn acquire(&self, shards: &[usize]) -> Result<Arc<Dataset>>;
    /// Ends an [`acquire`](Self::acquire) of `shards`.
    fn release(&self, shards: &[usize]);
    /// Shards that upcoming reads need, soonest first: fetched in the
    /// background, so that a later `acquire` does not wait.
    fn prefetch(&self, shards: &[usize]);
    /// How many batches ahead of the current one a loader thread announces
    /// through [`prefetch`](Self::prefetch).
    fn lookahead(&self) -> usize;
}

/// Shards acquired from a provider, released when dropped.
pub struct Acquired {
    provider: Arc<dyn ShardProvider>,
    shards: Vec<usize>,
    view: Arc<Dataset>,
}

impl Acquired {
    /// Acquires `shards` (sorted, without repeats) from `provider`.
    pub fn new(provider: Arc<dyn ShardProvider>, shards: Vec<usize>) -> Result<Self> {
        let view = provider.acquire(&shards)?;
        Ok(Acquired {
            provider,
            shards,
            view,
        })
    }

    /// The view in which the acquired shards are mapped.
    pub fn view(&self) -> &Arc<Dataset> {
        &self.view
    }
}

impl Drop for Acquired {
    fn drop(&mut self) {
        self.provider.release(&self.shards);
    }
}
