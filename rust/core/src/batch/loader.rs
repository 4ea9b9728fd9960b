//! Prefetching batch loader: background threads assemble the batches of one
//! worker, in order, into a bounded queue.
//!
//! Threads start on the first [`Loader::next_batch`], not before, and a
//! loader that finds itself in a forked child (whose parent's threads did
//! not survive the fork) starts fresh ones from where it stopped. Dropping
//! the loader stops its threads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::assemble::{assemble, Batch, BatchConfig};
use super::schedule::{Cursor, Mixture, Sharding};
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::shard::Dataset;

/// One dataset with its plan.
#[derive(Debug)]
pub struct Source {
    /// The dataset.
    pub dataset: Arc<Dataset>,
    /// Its sample plan.
    pub plan: Arc<Plan>,
}

/// Everything a loader needs.
#[derive(Debug)]
pub struct LoaderSpec {
    /// The sources, in the mixture's order.
    pub sources: Vec<Source>,
    /// How sources interleave and shuffle.
    pub mixture: Mixture,
    /// This process's part of the stream.
    pub sharding: Sharding,
    /// Batch layout.
    pub batch: BatchConfig,
    /// Where the epoch is resumed: a cursor at a step boundary.
    pub start: Cursor,
    /// Assembly threads (at least 1).
    pub threads: usize,
    /// Batches queued ahead per thread (at least 1).
    pub depth: usize,
}

/// A batch with the stream position after its global step.
#[derive(Debug)]
pub struct LoadedBatch {
    /// The batch.
    pub batch: Batch,
    /// Rank-local batch index in the epoch, counted from the start cursor.
    pub step: u64,
    /// The cursor after the global step this batch belongs to.
    pub after: Cursor,
}

struct Running {
    pid: u32,
    started_at: u64,
    receivers: Vec<Receiver<Result<LoadedBatch>>>,
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
}

/// Iterates over one worker's batches of the rest of an epoch.
pub struct Loader {
    spec: Arc<LoaderSpec>,
    /// Batches this worker yields in total.
    total: u64,
    /// Index (among this worker's batches) of the next one to yield.
    next: u64,
    running: Option<Running>,
}

impl Loader {
    /// Checks the spec and prepares (without starting threads).
    pub fn new(spec: LoaderSpec) -> Result<Self> {
        let n = spec.mixture.epoch_len();
        spec.sharding.check(n)?;
        if spec.mixture.shuffled() {
            // Random windows: no read-ahead, so only the pages read are mapped in.
            spec.sources.iter().for_each(|s| s.dataset.advise_random());
        }
        let steps = spec.sharding.steps_left(n, spec.start.position);
        let total = spec.sharding.worker_batches(steps);
        Ok(Loader {
            spec: Arc::new(spec),
            total,
            next: 0,
            running: None,
        })
    }

    /// Batches this worker yields in the rest of the epoch.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether there is nothing left.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Batches yielded so far.
    pub fn yielded(&self) -> u64 {
        self.next
    }

    /// Skips the next `n` batches of this worker (before or between reads).
    pub fn skip(&mut self, n: u64) {
        self.stop();
        self.next = (self.next + n).min(self.total);
    }

    /// Stops the batch threads and waits for them (also done on drop). A
    /// thread in the middle of a batch finishes it first: one reading a
    /// remote shard waits for its download.
    pub fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop.store(true, Ordering::Relaxed);
            drop(r.receivers);
            if r.pid == std::process::id() {
                for h in r.handles {
                    let _ = h.join();
                }
            }
        }
    }

    fn start(&mut self) -> Result<()> {
        let threads = self.spec.threads.max(1);
        let depth = self.spec.depth.max(1);
        let stop = Arc::new(AtomicBool::new(false));
        let mut receivers = Vec::with_capacity(threads);
        let mut handles = Vec::with_capacity(threads);
        for t in 0..threads {
            let (tx, rx) = sync_channel(depth);
            let spec = Arc::clone(&self.spec);
            let stop = Arc::clone(&stop);
            let (first, total) = (self.next + t as u64, self.total);
            let handle = std::thread::Builder::new()
                .name(format!("tokenloom-batch-{t}"))
                .spawn(move || {
                    let mut cursor = spec.start.clone();
                    let mut at = spec.start.position; // position `cursor` is at, within the epoch
                    let mut m = first;
                    while m < total && !stop.load(Ordering::Relaxed) {
                        announce(&spec, m, total, threads as u64, &cursor, at);
                        let out = produce(&spec, m, &mut cursor, &mut at);
                        let failed = out.is_err();
                        if tx.send(out).is_err() || failed {
                            return;
                        }
                        m += threads as u64;
                    }
                })
                .map_err(|e| Error::io("<thread>", e))?;
            receivers.push(rx);
            handles.push(handle);
        }
        self.running = Some(Running {
            pid: std::process::id(),
            started_at: self.next,
            receivers,
            stop,
            handles,
        });
        Ok(())
    }

    /// The next batch, or `None` at the end of the epoch.
    pub fn next_batch(&mut self) -> Option<Result<LoadedBatch>> {
        if self.next >= self.total {
            self.stop();
            return None;
        }
        let forked = self
            .running
            .as_ref()
            .is_some_and(|r| r.pid != std::process::id());
        if forked {
            // The threads belong to the parent; forget them and start ours.
            if let Some(r) = self.running.take() {
                std::mem::forget(r.handles);
                drop(r.receivers);
            }
        }
        if self.running.is_none() {
            if let Err(e) = self.start() {
                return Some(Err(e));
            }
        }
        let running = self.running.as_ref()?;
        let threads = running.receivers.len() as u64;
        // Thread t serves batches first + t, first + t + threads, ... where
        // `first` is where the threads started; track it via `started_at`.
        let slot = ((self.next - self.started_at()) % threads) as usize;
        let out = running.receivers[slot].recv().unwrap_or_else(|_| {
            Err(Error::invalid(
                "loader",
                "a batch thread stopped unexpectedly",
            ))
        });
        self.next += 1;
        if out.is_err() {
            self.stop();
            self.next = self.total;
        }
        Some(out)
    }

    fn started_at(&self) -> u64 {
        self.running.as_ref().map_or(self.next, |r| r.started_at)
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How far ahead (in batches) a single-source loader announces shards to
/// remote sources, sparsely (see [`announce`]).
const FAR_BATCHES: u64 = 4096;

/// Tells remote sources which shards this thread's batches after the `m`-th
/// read (the cursor is at epoch position `at`, before batch `m`), so that
/// they are fetched while the current batch is read.
fn announce(spec: &LoaderSpec, m: u64, total: u64, threads: u64, cursor: &Cursor, at: u64) {
    let refs: Vec<(&Dataset, &Plan)> = spec
        .sources
        .iter()
        .map(|s| (&*s.dataset, &*s.plan))
        .collect();
    let ahead = super::resident::lookahead(&refs) as u64;
    if ahead == 0 {
        return;
    }
    let sh = &spec.sharding;
    let n = spec.mixture.epoch_len();
    let (mut c, mut pos) = (cursor.clone(), at);
    let mut samples = Vec::new();
    // The next `ahead` batches, then (one source: its cursor skips in O(1))
    // one batch at 2, 4, 8, ... times that distance, up to FAR_BATCHES: a
    // sequential read announces the next shard long before it reaches it (a
    // 16 MiB shard holds 512 batches of 8 x 2,048 u16 tokens), instead of a
    // few batches before, when the step would wait for its whole download.
    let far = if spec.mixture.num_sources() == 1 {
        FAR_BATCHES.max(ahead)
    } else {
        ahead
    };
    let offsets = (1..=ahead).chain(
        std::iter::successors(Some(ahead.max(1) * 2), |j| j.checked_mul(2))
            .take_while(move |&j| j <= far),
    );
    for j in offsets {
        let next = m + j * threads;
        if next >= total {
            break;
        }
        let k = sh.worker + next * sh.num_workers;
        let (a, b) = sh.batch_range(n, spec.start.position, k);
        spec.mixture.skip(&mut c, a.saturating_sub(pos));
        for _ in a..b {
            samples.push(spec.mixture.next(&mut c));
        }
        pos = b;
    }
    super::resident::announce(&samples, &refs);
}

/// Builds this worker's `m`-th batch, moving `cursor` (at epoch position
/// `*at`) forward through the stream as needed.
fn produce(spec: &LoaderSpec, m: u64, cursor: &mut Cursor, at: &mut u64) -> Result<LoadedBatch> {
    let sh = &spec.sharding;
    let n = spec.mixture.epoch_len();
    let k = sh.worker + m * sh.num_workers;
    let (a, b) = sh.batch_range(n, spec.start.position, k);
    spec.mixture.skip(cursor, a - *at);
    let mut samples = Vec::with_capacity((b - a) as usize);
    for _ in a..b {
        samples.push(spec.mixture.next(cursor));
    }
    *at = b;
    // The cursor after the whole global step, for resumption.
    let step_end = (spec.start.position + (k + 1) * sh.step()).min(n);
    let mut after = cursor.clone();
    spec.mixture.skip(&mut after, step_end - b);
    // After this rank's last step of the epoch, resuming starts the next epoch
    // (samples a dropped short step would have had are skipped, as in a full
    // run; without drop_last, a rank past the short step's end is done too).
    if after.epoch == spec.start.epoch && sh.steps_left(n, step_end) == 0 {
        spec.mixture.skip(&mut after, n - step_end);
    }
    let refs: Vec<(&Dataset, &Plan)> = spec
        .sources
        .iter()
        .map(|s| (&*s.dataset, &*s.plan))
        .collect();
    let batch = assemble(&samples, &refs, &spec.batch)?;
    Ok(LoadedBatch {
        batch,
        step: k,
        after,
    })
}
