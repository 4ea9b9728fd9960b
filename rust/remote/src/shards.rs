//! A remote dataset's shards behind the local cache: the [`ShardProvider`]
//! the core's readers ask before they read a shard.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokenloom_core::hash::hex;
use tokenloom_core::io::{read_regular, write_atomic, MappedFile};
use tokenloom_core::shard::compression::stored_name;
use tokenloom_core::shard::manifest::{FILE_NAME, MAX_BYTES};
use tokenloom_core::shard::{Capacity, Manifest, ShardProvider};
use tokenloom_core::{Dataset, Error, Result};
use xxhash_rust::xxh3::xxh3_64;

use crate::cache::{is_full, touch, BodyLock, CacheRoot, CACHE_LIMIT, TMP_PREFIX};
use crate::checked;
use crate::fetch::{check_file, fetch_body, get_checked, Expect};
use crate::options::RemoteOptions;
use crate::store::Store;

/// Lock (in the dataset's lock directory) of its manifest and indexes.
const META_LOCK: &str = ".meta";
/// Shards held for announced (not yet read) batches take at most this
/// share of the cache limit (1/`AHEAD_SHARE`) per process.
const AHEAD_SHARE: u64 = 2;
/// How long a batch waits for room in a full cache (for the batches that
/// other threads and processes read to be done) before it fails.
const ROOM_WAIT: Duration = Duration::from_secs(30);
/// Every remote dataset open in this process: a reader waiting for room
/// makes all of them let go of what they hold for announced batches (a
/// dataset no longer read, but still alive, would otherwise keep its share).
static LIVE: Mutex<Vec<Weak<RemoteShards>>> = Mutex::new(Vec::new());
/// Readers of this process waiting for room: no dataset fetches announced
/// batches meanwhile.
static READERS_WAITING: AtomicUsize = AtomicUsize::new(0);

/// Lets go of what every live dataset of this process holds ahead or
/// keeps mapped after reading it.
fn drop_ahead_everywhere() {
    let live: Vec<Arc<RemoteShards>> = {
        let mut all = locked(&LIVE);
        all.retain(|w| w.strong_count() > 0);
        all.iter().filter_map(Weak::upgrade).collect()
    };
    for shards in live {
        shards.drop_ahead();
        shards.drop_idle();
    }
}

/// Bodies read and let go stay mapped (and locked) for the next batches,
/// up to this share of the cache limit (1/`IDLE_SHARE`) per dataset: a
/// batch then maps nothing anew. They are let go, oldest first, beyond it,
/// and all at once when a reader waits for room.
const IDLE_SHARE: u64 = 4;
/// Tries to find a body on disk after fetching it (another process may
/// evict it between the fetch and the lock).
const PIN_TRIES: usize = 5;

/// A shard this process holds on disk (shared lock), with how many readers
/// or announcements hold it.
struct Pin {
    count: usize,
    lock: BodyLock,
    map: Arc<MappedFile>,
}

/// A body's shared lock and map, as [`RemoteShards::pin_fresh`] gives them.
type Pinned = (BodyLock, Arc<MappedFile>);

struct State {
    pid: u32,
    pins: HashMap<usize, Pin>,
    /// Shards held for announced batches, oldest first (each holds one count).
    ahead: VecDeque<usize>,
    /// Shards held by nobody but kept mapped, least recently let go first.
    idle: VecDeque<usize>,
    /// Bodies checked by this process since it opened the dataset.
    verified: Vec<bool>,
    /// The latest view and which shards it maps; dropped when one of them
    /// is no longer held, so that a body evicted after its last read is
    /// not kept alive by this view.
    view: Option<(Arc<Dataset>, Vec<bool>)>,
}

struct Queue {
    pid: u32,
    pending: VecDeque<usize>,
    workers: usize,
    closed: bool,
}

/// The prefetch queue, shared with the worker threads.
struct Prefetch {
    queue: Mutex<Queue>,
    cv: Condvar,
}

/// A remote dataset's cache directory and fetchers.
pub struct RemoteShards {
    store: Store,
    /// The dataset opened from its indexes; views of it map the bodies held.
    base: Dataset,
    dir: PathBuf,
    cache: CacheRoot,
    manifest: Manifest,
    opts: RemoteOptions,
    state: Mutex<State>,
    prefetch: Arc<Prefetch>,
    me: Weak<RemoteShards>,
}

impl std::fmt::Debug for RemoteShards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteShards")
            .field("url", &self.store.url().as_str())
            .field("dir", &self.dir)
            .finish()
    }
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Fetches the manifest of the dataset in `store` and its indexes into the
/// cache, and opens it: the indexes are mapped, the bodies come on demand.
pub fn open_remote(store: Store, opts: &RemoteOptions) -> Result<Dataset> {
    let cache = CacheRoot::new(opts.cache_dir.clone(), opts.cache_limit);
    let dir = cache.dataset_dir(store.url().as_str());
    cache.prepare(&dir)?;
    // One process at a time fetches and replaces the manifest and indexes
    // (the others wait, then find them there and checked).
    let meta = CacheRoot::lock_exclusive(&dir, META_LOCK)?;
    let object = store.object_url(FILE_NAME);
    let manifest = get_checked(&store, FILE_NAME, |b| {
        Manifest::from_bytes(b, Path::new(&object)).map(|m| (m, b.clone()))
    });
    let (manifest, bytes) = manifest?;
    let local = dir.join(FILE_NAME);
    if read_regular(&local, MAX_BYTES).ok().as_deref() != Some(&bytes[..]) {
        write_atomic(
            &dir.join(format!("{TMP_PREFIX}{FILE_NAME}")),
            &local,
            &bytes,
        )?;
    }
    fetch_indexes(&store, &dir, &manifest, opts)?;
    remove_unlisted(&dir, &manifest);
    let base = Dataset::open_index_only(&dir, manifest.clone());
    meta.unlock();
    let base = base?;
    let public = base.view(&[])?;
    let shards = Arc::new_cyclic(|me| RemoteShards {
        store,
        base,
        dir: dir.clone(),
        cache,
        manifest: manifest.clone(),
        opts: opts.clone(),
        state: Mutex::new(State {
            pid: std::process::id(),
            pins: HashMap::new(),
            ahead: VecDeque::new(),
            idle: VecDeque::new(),
            verified: vec![false; manifest.shards.len()],
            view: None,
        }),
        prefetch: Arc::new(Prefetch {
            queue: Mutex::new(Queue {
                pid: std::process::id(),
                pending: VecDeque::new(),
                workers: 0,
                closed: false,
            }),
            cv: Condvar::new(),
        }),
        me: me.clone(),
    });
    locked(&LIVE).push(Arc::downgrade(&shards));
    Ok(public.with_provider(shards))
}

/// Every index the cache lacks (or holds damaged) is fetched and checked
/// against the manifest, several at once.
fn fetch_indexes(store: &Store, dir: &Path, m: &Manifest, opts: &RemoteOptions) -> Result<()> {
    let todo: Vec<&str> = m
        .shards
        .iter()
        .filter(|e| {
            read_regular(&dir.join(&e.idx), u64::MAX)
                .map(|b| hex(xxh3_64(&b)) != e.idx_xxh3)
                .unwrap_or(true)
        })
        .map(|e| e.idx.as_str())
        .collect();
    let sums: HashMap<&str, &str> = m
        .shards
        .iter()
        .map(|e| (e.idx.as_str(), e.idx_xxh3.as_str()))
        .collect();
    let threads = (opts.fetch_threads * 2).clamp(1, 16).min(todo.len().max(1));
    let chunk = todo.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = todo
            .chunks(chunk)
            .map(|names| {
                let sums = &sums;
                scope.spawn(move || -> Result<()> {
                    for &name in names {
                        let want = sums.get(name).copied().unwrap_or("");
                        let object = store.object_url(name);
                        let bytes = get_checked(store, name, |b| {
                            let got = hex(xxh3_64(b));
                            if got == want {
                                Ok(b.clone())
                            } else {
                                Err(Error::corrupt(
                                    &object,
                                    0,
                                    format!("index checksum {got} differs from the manifest's {want}"),
                                    "the index changed after the manifest was written; rewrite the dataset or restore the object",
                                ))
                            }
                        })?;
                        write_atomic(
                            &dir.join(format!("{TMP_PREFIX}{name}")),
                            &dir.join(name),
                            &bytes,
                        )?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(Error::invalid("fetch", "an index download thread failed")))
        })
    })
}

/// Removes files of other generations of the dataset (a dataset rewritten
/// remotely) that no process is reading. Best effort.
fn remove_unlisted(dir: &Path, m: &Manifest) {
    let keep: std::collections::HashSet<&str> = m
        .shards
        .iter()
        .flat_map(|e| [e.bin.as_str(), e.idx.as_str()])
        .collect();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = name.starts_with("part-") && (name.ends_with(".bin") || name.ends_with(".idx"));
        if !ours || keep.contains(name.as_str()) {
            continue;
        }
        if let Some(lock) = CacheRoot::try_lock_exclusive(dir, &name) {
            checked::forget(dir, &name);
            let _ = std::fs::remove_file(e.path());
            lock.unlock();
        }
    }
}

impl RemoteShards {
    fn expect(&self, s: usize) -> Result<Expect> {
        let e = &self.manifest.shards[s];
        let xxh3 = tokenloom_core::hash::parse_hex(&e.bin_xxh3).ok_or_else(|| {
            Error::corrupt(
                self.dir.join(FILE_NAME),
                0,
                format!("shard {} has no valid bin_xxh3", e.bin),
                "rewrite the dataset",
            )
        })?;
        Ok(Expect {
            len: self.len_of(s),
            xxh3,
        })
    }

    /// The state, reset in a forked child: the parent's locks and threads
    /// are not the child's (its copies of the lock descriptors are closed,
    /// never unlocked, so the parent keeps its locks).
    fn state(&self) -> MutexGuard<'_, State> {
        let mut st = locked(&self.state);
        let pid = std::process::id();
        if st.pid != pid {
            for (_, pin) in st.pins.drain() {
                drop(pin.lock.forget());
            }
            st.ahead.clear();
            st.idle.clear();
            st.view = None;
            st.pid = pid;
        }
        st
    }

    fn body_path(&self, s: usize) -> PathBuf {
        self.dir.join(&self.manifest.shards[s].bin)
    }

    /// Makes shard `s`'s body present in the cache and checked by this
    /// process: fetched (once across processes) when missing, fetched again
    /// (and renamed over it) when the cached file is damaged. Done under
    /// the body's fetch lock, which readers never hold: a process waits
    /// for another one's download of the body, never for its reads.
    fn ensure_present(&self, s: usize) -> Result<()> {
        let body = self.body_path(s);
        if self.state().verified[s] && body.exists() {
            return Ok(());
        }
        let expect = self.expect(s)?;
        let name = &self.manifest.shards[s].bin;
        if checked::is_checked(&self.dir, name, &body, expect.xxh3) {
            self.state().verified[s] = true;
            return Ok(());
        }
        let lock = CacheRoot::lock_fetch(&self.dir, name)?;
        let fetched = match body.exists() {
            true => match check_file(&body, expect) {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_damaged)) => self.download(s, expect),
                // Evicted by another process between the look and the check.
                Err(_) if !body.exists() => self.download(s, expect),
                Err(e) => Err(e),
            },
            false => self.download(s, expect),
        };
        if fetched.is_ok() {
            checked::mark_checked(&self.dir, name, &body, expect.xxh3);
        }
        lock.unlock();
        fetched?;
        self.state().verified[s] = true;
        Ok(())
    }

    /// Downloads body `s` (the caller holds its fetch lock) into room taken
    /// for it in the cache, and renames it into place once checked.
    fn download(&self, s: usize, expect: Expect) -> Result<()> {
        let entry = &self.manifest.shards[s];
        let tmp = self
            .dir
            .join(format!("{TMP_PREFIX}{}.{}", entry.bin, std::process::id()));
        let room = self.cache.reserve(&tmp, expect.len)?;
        let stored = stored_name(&entry.bin, self.manifest.compression);
        fetch_body(
            &self.store,
            &stored,
            &room,
            self.manifest.compression,
            expect,
            &self.opts,
        )?;
        room.commit(&self.body_path(s))
    }

    /// A shared lock on body `s`, present and checked, and its map.
    fn pin_fresh(&self, s: usize) -> Result<Pinned> {
        let name = &self.manifest.shards[s].bin;
        let body = self.body_path(s);
        for _ in 0..PIN_TRIES {
            self.ensure_present(s)?;
            let lock = CacheRoot::lock_shared(&self.dir, name)?;
            if body.exists() {
                touch(&body);
                let map = MappedFile::open(&body).inspect_err(|_| {
                    self.state().verified[s] = false;
                });
                return match map {
                    Ok(map) => Ok((lock, Arc::new(map))),
                    Err(e) => {
                        lock.unlock();
                        Err(e)
                    }
                };
            }
            lock.unlock(); // evicted between the fetch and the lock: again
        }
        Err(Error::invalid(
            "cache",
            format!(
                "{} kept disappearing from the cache at {}; raise the cache limit",
                self.store.object_url(name),
                self.cache.root().display()
            ),
        ))
    }

    /// Adds one hold on each of `shards`, fetching (in parallel) those this
    /// process does not hold yet.
    fn hold(&self, shards: &[usize], from_ahead: bool) -> Result<()> {
        let missing: Vec<usize> = {
            let mut guard = self.state();
            let st = &mut *guard;
            let mut missing = Vec::new();
            for &s in shards {
                if from_ahead {
                    if let Some(at) = st.ahead.iter().position(|&a| a == s) {
                        st.ahead.remove(at); // the announcement's hold becomes the reader's
                        continue;
                    }
                }
                match st.pins.get_mut(&s) {
                    Some(pin) => {
                        if pin.count == 0 {
                            st.idle.retain(|&i| i != s); // mapped still: in use again
                        }
                        pin.count += 1;
                    }
                    None => missing.push(s),
                }
            }
            missing
        };
        let fetched: Vec<(usize, Result<Pinned>)> = std::thread::scope(|scope| {
            let width = self.opts.fetch_threads.max(1);
            let mut out = Vec::with_capacity(missing.len());
            for group in missing.chunks(width) {
                let handles: Vec<_> = group
                    .iter()
                    .map(|&s| (s, scope.spawn(move || self.pin_fresh(s))))
                    .collect();
                for (s, h) in handles {
                    let r = h.join().unwrap_or_else(|_| {
                        Err(Error::invalid("fetch", "a download thread failed"))
                    });
                    out.push((s, r));
                }
            }
            out
        });
        let mut first_err = None;
        let mut failed = Vec::new();
        let mut guard = self.state();
        let st = &mut *guard;
        for (s, r) in fetched {
            match r {
                Ok((lock, map)) => match st.pins.get_mut(&s) {
                    // Pinned by another thread meanwhile: one lock is enough.
                    Some(pin) => {
                        if pin.count == 0 {
                            st.idle.retain(|&i| i != s);
                        }
                        pin.count += 1;
                        lock.unlock();
                    }
                    None => {
                        st.pins.insert(
                            s,
                            Pin {
                                count: 1,
                                lock,
                                map,
                            },
                        );
                    }
                },
                Err(e) => {
                    failed.push(s);
                    first_err.get_or_insert(e);
                }
            }
        }
        drop(guard);
        if let Some(e) = first_err {
            let ok: Vec<usize> = shards
                .iter()
                .copied()
                .filter(|s| !failed.contains(s))
                .collect();
            self.unhold(&ok);
            return Err(e);
        }
        Ok(())
    }

    /// Takes one hold off each of `shards`; a shard nobody holds any more
    /// stays mapped (idle) while the idle ones fit in their share.
    fn unhold(&self, shards: &[usize]) {
        let mut guard = self.state();
        let st = &mut *guard;
        for &s in shards {
            if let Some(pin) = st.pins.get_mut(&s) {
                pin.count = pin.count.saturating_sub(1);
                if pin.count == 0 && !st.idle.contains(&s) {
                    st.idle.push_back(s);
                }
            }
        }
        let budget = self.cache.limit() / IDLE_SHARE;
        let mut kept: u64 = st.idle.iter().map(|&i| self.len_of(i)).sum();
        while kept > budget {
            let Some(s) = st.idle.pop_front() else { break };
            kept = kept.saturating_sub(self.len_of(s));
            Self::let_go(st, s);
        }
    }

    /// Unlocks and unmaps shard `s` if nobody holds it.
    fn let_go(st: &mut State, s: usize) {
        if st.pins.get(&s).is_some_and(|p| p.count == 0) {
            if let Some(pin) = st.pins.remove(&s) {
                pin.lock.unlock();
                st.view = None;
            }
        }
    }

    /// Lets go of every idle shard (a reader waits for room).
    fn drop_idle(&self) {
        let mut guard = self.state();
        let st = &mut *guard;
        while let Some(s) = st.idle.pop_front() {
            Self::let_go(st, s);
        }
    }

    /// A view mapping every shard this process holds (`shards` among them):
    /// the last one while it maps them all and no shard it maps was let go.
    fn view_with(&self, shards: &[usize]) -> Result<Arc<Dataset>> {
        let mut st = self.state();
        if let Some((view, resident)) = &st.view {
            if shards
                .iter()
                .all(|&s| resident.get(s).copied().unwrap_or(false))
            {
                return Ok(Arc::clone(view));
            }
        }
        let mut resident = vec![false; self.manifest.shards.len()];
        let mut bodies = Vec::with_capacity(st.pins.len());
        for (&s, pin) in &st.pins {
            resident[s] = true;
            bodies.push((s, Arc::clone(&pin.map)));
        }
        let view = Arc::new(self.base.view(&bodies)?);
        st.view = Some((Arc::clone(&view), resident));
        Ok(view)
    }

    fn start_workers(&self) {
        let mut q = locked(&self.prefetch.queue);
        let pid = std::process::id();
        if q.pid != pid {
            q.pid = pid;
            q.workers = 0; // the parent's threads did not survive the fork
            q.pending.clear();
        }
        while q.workers < self.opts.fetch_threads.max(1) {
            let prefetch = Arc::clone(&self.prefetch);
            let me = self.me.clone();
            let spawned = std::thread::Builder::new()
                .name("tokenloom-prefetch".into())
                .spawn(move || prefetch_worker(&prefetch, &me));
            if spawned.is_err() {
                break;
            }
            q.workers += 1;
        }
    }

    /// Holds a shard for an announced batch (fetching it first).
    fn hold_ahead(&self, s: usize) {
        let Ok(len) = self.expect(s).map(|e| e.len) else {
            return;
        };
        {
            let st = self.state();
            if READERS_WAITING.load(Ordering::Relaxed) > 0
                || st.ahead.contains(&s)
                || st.pins.get(&s).is_some_and(|p| p.count > 0)
            {
                return;
            }
            // Later shards wait for room: the earlier ones are read first.
            let held: u64 = st.ahead.iter().map(|&a| self.len_of(a)).sum();
            if held + len > self.cache.limit() / AHEAD_SHARE {
                return;
            }
        }
        if self.hold(&[s], false).is_err() {
            return; // the reader fetches it again and reports the error
        }
        self.state().ahead.push_back(s);
    }

    /// Bytes of shard `s`'s body once decompressed (no checksum parsed: it
    /// is summed over the held and idle shards at every batch).
    fn len_of(&self, s: usize) -> u64 {
        self.manifest.shards[s].num_tokens * self.manifest.dtype.itemsize() as u64
    }

    /// Lets go of every shard held for announced batches.
    fn drop_ahead(&self) {
        let ahead: Vec<usize> = self.state().ahead.drain(..).collect();
        self.unhold(&ahead);
    }
}

fn prefetch_worker(prefetch: &Prefetch, me: &Weak<RemoteShards>) {
    loop {
        let next = {
            let mut q = locked(&prefetch.queue);
            loop {
                if q.closed {
                    return;
                }
                if let Some(s) = q.pending.pop_front() {
                    break s;
                }
                let (guard, timeout) = prefetch
                    .cv
                    .wait_timeout(q, std::time::Duration::from_secs(5))
                    .unwrap_or_else(|e| e.into_inner());
                q = guard;
                if timeout.timed_out() && q.pending.is_empty() {
                    q.workers = q.workers.saturating_sub(1);
                    return; // idle: started again by the next announcement
                }
            }
        };
        let Some(shards) = me.upgrade() else {
            return;
        };
        shards.hold_ahead(next);
    }
}

impl ShardProvider for RemoteShards {
    fn acquire(&self, shards: &[usize]) -> Result<Arc<Dataset>> {
        let need: u64 = shards.iter().map(|&s| self.len_of(s)).sum();
        if need > self.cache.limit() {
            return Err(Error::invalid(
                CACHE_LIMIT,
                format!(
                    "one batch reads {} shards of {} ({need} bytes), more than the cache limit of {} bytes; raise the limit (cache_limit=, TOKENLOOM_CACHE_LIMIT) or read smaller batches",
                    shards.len(),
                    self.store.url(),
                    self.cache.limit()
                ),
            ));
        }
        // No room: what any dataset of this process holds for later batches
        // gives way to this one, and it waits (bounded) for the batches other
        // threads and processes read.
        let deadline = Instant::now() + ROOM_WAIT;
        READERS_WAITING.fetch_add(1, Ordering::Relaxed);
        let held = loop {
            match self.hold(shards, true) {
                Err(e) if is_full(&e) && Instant::now() < deadline => {
                    drop_ahead_everywhere();
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => break other,
            }
        };
        READERS_WAITING.fetch_sub(1, Ordering::Relaxed);
        held?;
        self.view_with(shards).inspect_err(|_| self.unhold(shards))
    }

    fn release(&self, shards: &[usize]) {
        self.unhold(shards);
    }

    fn prefetch(&self, shards: &[usize]) {
        self.start_workers();
        let mut q = locked(&self.prefetch.queue);
        let st = self.state();
        let mut queued = 0;
        for &s in shards {
            let held = st.ahead.contains(&s) || st.pins.get(&s).is_some_and(|p| p.count > 0);
            if !held && !q.pending.contains(&s) {
                q.pending.push_back(s);
                queued += 1;
            }
        }
        drop(st);
        drop(q);
        // Wake only as many fetchers as there is work for (announcements
        // of shards already held are the rule once the cache is warm).
        for _ in 0..queued.min(self.opts.fetch_threads.max(1)) {
            self.prefetch.cv.notify_one();
        }
    }

    fn lookahead(&self) -> usize {
        self.opts.lookahead
    }

    fn capacity(&self) -> Capacity {
        // Every file of the dataset's cache directory but its bodies (the
        // manifest and indexes), as the cache's limit counts them.
        let fixed = std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        !name.ends_with(".bin") && !name.starts_with(TMP_PREFIX)
                    })
                    .filter_map(|e| e.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        Capacity {
            limit: self.cache.limit(),
            fixed,
        }
    }
}

impl Drop for RemoteShards {
    fn drop(&mut self) {
        let mut q = locked(&self.prefetch.queue);
        q.closed = true;
        drop(q);
        self.prefetch.cv.notify_all();
        let mut st = locked(&self.state);
        if st.pid == std::process::id() {
            for (_, pin) in st.pins.drain() {
                pin.lock.unlock();
            }
        }
    }
}

/// The cache directory that holds (or will hold) the dataset at `url`.
pub fn cache_dir_of(url: &str, opts: &RemoteOptions) -> PathBuf {
    CacheRoot::new(opts.cache_dir.clone(), opts.cache_limit).dataset_dir(url)
}
