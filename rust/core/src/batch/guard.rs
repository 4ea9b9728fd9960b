//! Checks, once per batch, that the mapped files a batch reads are the ones
//! that were opened. Shards and cached plans are memory-mapped: had another
//! program truncated one, reading its lost pages would fault (SIGBUS) and
//! kill the process; checked first, the batch fails with an error naming the
//! file instead. One `stat` per file per batch, before any of its pages is
//! read. (A truncation landing in the microseconds between the check and
//! the copy is not covered; replacing files by rename, as tokenloom does, is
//! always safe.)

use std::collections::HashSet;

use crate::error::Result;
use crate::plan::{Plan, Segment};
use crate::shard::Dataset;

/// The files checked so far in one batch.
pub(crate) struct FileCheck {
    shards: HashSet<(usize, usize)>,
    plans: Vec<bool>,
}

impl FileCheck {
    /// A check for a batch over `sources` sources.
    pub(crate) fn new(sources: usize) -> Self {
        FileCheck {
            shards: HashSet::new(),
            plans: vec![false; sources],
        }
    }

    /// Before `plan.sample(ds, id)`: the plan's cached table and, for a
    /// concat plan (which locates the window in the shards' indexes), the
    /// shards the window spans.
    pub(crate) fn sample(&mut self, src: usize, ds: &Dataset, plan: &Plan, id: u64) -> Result<()> {
        if let Some(done) = self.plans.get_mut(src) {
            if !*done {
                plan.check_unchanged()?;
                *done = true;
            }
        }
        if let Some((first, last)) = plan.token_span(id) {
            let last = last.min(ds.num_tokens().saturating_sub(1));
            for s in ds.shards_of_tokens(first, last) {
                self.shard(src, ds, s)?;
            }
        }
        Ok(())
    }

    /// Before reading the documents of `segs`: their shards.
    pub(crate) fn segments(&mut self, src: usize, ds: &Dataset, segs: &[Segment]) -> Result<()> {
        for seg in segs {
            let (s, _) = ds.locate(seg.doc)?;
            self.shard(src, ds, s)?;
        }
        Ok(())
    }

    fn shard(&mut self, src: usize, ds: &Dataset, s: usize) -> Result<()> {
        if self.shards.insert((src, s)) {
            ds.check_unchanged(s)?;
        }
        Ok(())
    }
}
