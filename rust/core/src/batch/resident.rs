//! Remote sources: the shards a batch reads are acquired from the dataset's
//! [`ShardProvider`] (its local cache) before the batch is assembled, and the
//! shards of the batches after it are announced so that they are fetched
//! while this one is read. Datasets on local disk have no provider and pass
//! through untouched.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::error::Result;
use crate::plan::{Plan, Segment};
use crate::shard::{Acquired, Dataset};

/// Adds to `out` the shards that sample `id` of `plan` reads: from the
/// in-memory headers for a concat window, from the plan's table otherwise
/// (the same shards [`FileCheck`](super::guard::FileCheck) checks).
fn shards_of_sample(
    ds: &Dataset,
    plan: &Plan,
    id: u64,
    segs: &mut Vec<Segment>,
    out: &mut Vec<usize>,
) -> Result<()> {
    if let Some((first, last)) = plan.token_span(id) {
        let last = last.min(ds.num_tokens().saturating_sub(1));
        out.extend(ds.shards_of_tokens(first, last));
        return Ok(());
    }
    plan.sample(ds, id, segs)?;
    for seg in segs.iter() {
        out.push(ds.locate(seg.doc)?.0);
    }
    Ok(())
}

/// For each source with a provider, the shards `samples` read from it, in
/// order of first use, without repeats.
fn shards_by_source(
    samples: &[(usize, u64)],
    sources: &[(&Dataset, &Plan)],
) -> Result<Vec<Vec<usize>>> {
    let mut out = vec![Vec::new(); sources.len()];
    let mut seen = vec![BTreeSet::new(); sources.len()];
    let (mut segs, mut shards) = (Vec::new(), Vec::new());
    for &(s, id) in samples {
        let Some(&(ds, plan)) = sources.get(s) else {
            continue;
        };
        if ds.provider().is_none() {
            continue;
        }
        shards.clear();
        shards_of_sample(ds, plan, id, &mut segs, &mut shards)?;
        for &shard in &shards {
            if seen[s].insert(shard) {
                out[s].push(shard);
            }
        }
    }
    Ok(out)
}

/// Acquires the shards `samples` read from every source that has a
/// provider; `None` for the others. The shards stay on disk while the
/// result lives.
pub(crate) fn acquire(
    samples: &[(usize, u64)],
    sources: &[(&Dataset, &Plan)],
) -> Result<Vec<Option<Acquired>>> {
    if sources.iter().all(|(ds, _)| ds.provider().is_none()) {
        return Ok(Vec::new());
    }
    let needed = shards_by_source(samples, sources)?;
    let mut out = Vec::with_capacity(sources.len());
    for ((ds, _), mut shards) in sources.iter().zip(needed) {
        match ds.provider() {
            Some(p) if !shards.is_empty() => {
                shards.sort_unstable();
                out.push(Some(Acquired::new(Arc::clone(p), shards)?));
            }
            _ => out.push(None),
        }
    }
    Ok(out)
}

/// The sources with the acquired views in place of the datasets.
pub(crate) fn views<'a>(
    sources: &[(&'a Dataset, &'a Plan)],
    held: &'a [Option<Acquired>],
) -> Vec<(&'a Dataset, &'a Plan)> {
    sources
        .iter()
        .enumerate()
        .map(|(s, &(ds, plan))| match held.get(s) {
            Some(Some(a)) => (&**a.view(), plan),
            _ => (ds, plan),
        })
        .collect()
}

/// Announces to each source's provider the shards `samples` (upcoming, in
/// order) will read. Best effort: errors surface when the samples are read.
pub(crate) fn announce(samples: &[(usize, u64)], sources: &[(&Dataset, &Plan)]) {
    if let Ok(needed) = shards_by_source(samples, sources) {
        for ((ds, _), shards) in sources.iter().zip(needed) {
            if let Some(p) = ds.provider() {
                if !shards.is_empty() {
                    p.prefetch(&shards);
                }
            }
        }
    }
}

/// The largest lookahead (in batches) any source's provider asks for; 0
/// when no source is remote.
pub(crate) fn lookahead(sources: &[(&Dataset, &Plan)]) -> usize {
    sources
        .iter()
        .filter_map(|(ds, _)| ds.provider().map(|p| p.lookahead()))
        .max()
        .unwrap_or(0)
}
