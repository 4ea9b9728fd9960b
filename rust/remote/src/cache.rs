//! The local shard cache: one directory per dataset under a shared root,
//! holding the dataset's manifest, indexes and the shard bodies fetched so
//! far, all under the names the manifest gives them (so that the directory
//! opens as an ordinary dataset). Bodies are written under a temporary name
//! and renamed when whole and checked, so no half file is ever read.
//!
//! Several processes share a root. Each body has two lock files. The fetch
//! lock is held exclusively while the body is checked or downloaded (other
//! processes wait, then find it there: one download). The read lock is held
//! shared by every process that reads the body or expects to read it soon,
//! and eviction takes it exclusively without waiting, so such a body is
//! never evicted. Only eviction holds a read lock exclusively, for the time
//! of one unlink, so readers never wait on one another. Locks are `flock`s:
//! the kernel drops them when a process dies.
//!
//! A download takes its room first: under the eviction lock, bodies are
//! evicted until the new one fits and its temporary file is created at its
//! full size, so every other process's eviction pass counts it while it is
//! still arriving (parallel downloads cannot overshoot the limit together).
//! The writer holds a lock on that file; a pass that can take the lock has
//! found the file of a process that died, and removes it.

use std::fs::{self, File};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tokenloom_core::error::IoContext;
use tokenloom_core::io::{create_new, open_regular};
use tokenloom_core::shard::lock::{flock, open_lock_file, unlock, LockMode};
use tokenloom_core::{Error, Result};
use xxhash_rust::xxh3::xxh3_64;

/// Directory of the lock files inside a dataset's cache directory.
const LOCKS: &str = ".locks";
/// Lock serialising eviction passes over the whole root.
const EVICT_LOCK: &str = ".evict.lock";
/// Suffix of the lock taken while a body is fetched.
const FETCH_SUFFIX: &str = ".fetch";
/// Prefix of bodies being written.
pub(crate) const TMP_PREFIX: &str = ".tmp.";

/// The argument named by the error of a full cache (see [`is_full`]).
pub(crate) const CACHE_LIMIT: &str = "cache_limit";

/// Whether `e` says that the cache has no room left (every body in it is
/// being read or about to be).
pub(crate) fn is_full(e: &Error) -> bool {
    matches!(e, Error::InvalidArgument { name, .. } if name == CACHE_LIMIT)
}

/// A cache root with its size limit.
#[derive(Clone, Debug)]
pub struct CacheRoot {
    root: PathBuf,
    limit: u64,
}

/// The lock of one cached body.
pub(crate) struct BodyLock(File);

impl BodyLock {
    /// Releases the lock explicitly (so that a copy of the descriptor in a
    /// forked child cannot keep it).
    pub(crate) fn unlock(self) {
        let _ = unlock(&self.0);
    }

    /// Closes this copy of the descriptor without unlocking (a forked
    /// child's copy of its parent's lock: the parent keeps it).
    pub(crate) fn forget(self) -> File {
        self.0
    }
}

impl CacheRoot {
    /// The cache at `root`, holding at most `limit` bytes.
    pub fn new(root: PathBuf, limit: u64) -> Self {
        CacheRoot { root, limit }
    }

    /// The size limit in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The cache directory of the dataset at `url`: a hash of the URL (and
    /// the URL's last component, for people looking at the directory).
    pub fn dataset_dir(&self, url: &str) -> PathBuf {
        let last = url
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .take(40)
            .collect::<String>();
        self.root
            .join(format!("{:016x}-{last}", xxh3_64(url.as_bytes())))
    }

    /// Creates a dataset's cache directory and its lock directory.
    pub(crate) fn prepare(&self, dir: &Path) -> Result<()> {
        let locks = dir.join(LOCKS);
        fs::create_dir_all(&locks).at(&locks)
    }

    fn lock_file(dir: &Path, body: &str) -> Result<File> {
        open_lock_file(&dir.join(LOCKS).join(format!("{body}.lock")))
    }

    /// Waits for the exclusive lock `name` of `dir`.
    pub(crate) fn lock_exclusive(dir: &Path, name: &str) -> Result<BodyLock> {
        let f = Self::lock_file(dir, name)?;
        flock(&f, LockMode::Exclusive, true).at(&dir.join(name))?;
        Ok(BodyLock(f))
    }

    /// Waits for the fetch lock of body `name` of `dir`, held while it is
    /// checked or downloaded (never while it is read).
    pub(crate) fn lock_fetch(dir: &Path, name: &str) -> Result<BodyLock> {
        Self::lock_exclusive(dir, &format!("{name}{FETCH_SUFFIX}"))
    }

    /// Waits for a shared lock of body `name` of `dir` (to read it).
    pub(crate) fn lock_shared(dir: &Path, name: &str) -> Result<BodyLock> {
        let f = Self::lock_file(dir, name)?;
        flock(&f, LockMode::Shared, true).at(&dir.join(name))?;
        Ok(BodyLock(f))
    }

    /// The exclusive lock of body `name` of `dir` if no process holds it
    /// (to evict it), without waiting.
    pub(crate) fn try_lock_exclusive(dir: &Path, name: &str) -> Option<BodyLock> {
        let f = Self::lock_file(dir, name).ok()?;
        match flock(&f, LockMode::Exclusive, false) {
            Ok(true) => Some(BodyLock(f)),
            _ => None,
        }
    }

    /// Every file under the root: (path, bytes, modified), and whether it is
    /// a body that may be evicted.
    fn entries(&self) -> Vec<(PathBuf, u64, SystemTime, bool)> {
        let mut out = Vec::new();
        let Ok(dirs) = fs::read_dir(&self.root) else {
            return out;
        };
        for d in dirs.flatten() {
            let Ok(files) = fs::read_dir(d.path()) else {
                continue;
            };
            for f in files.flatten() {
                let Ok(meta) = f.metadata() else { continue };
                if !meta.is_file() {
                    continue;
                }
                let name = f.file_name().to_string_lossy().into_owned();
                if is_download(&name) && writer_died(&f.path()) {
                    let _ = fs::remove_file(f.path());
                    continue;
                }
                let body = name.ends_with(".bin") && !name.starts_with(TMP_PREFIX);
                // Last use: the access time `touch` sets (the modification time
                // stays that of the download: readers check it against their maps).
                let modified = meta.accessed().unwrap_or(SystemTime::UNIX_EPOCH);
                out.push((f.path(), meta.len(), modified, body));
            }
        }
        out
    }

    /// Takes room for a body of `need` bytes to be downloaded into `tmp`:
    /// bodies are evicted, least recently used first, until it fits under
    /// the limit, and `tmp` is created at `need` bytes and locked, all under
    /// the eviction lock. Bodies that some process has locked (reads, or is
    /// about to read) are kept; failing to make room is an error that says so.
    pub(crate) fn reserve(&self, tmp: &Path, need: u64) -> Result<Reservation> {
        let path = self.root.join(EVICT_LOCK);
        let guard = open_lock_file(&path)?;
        flock(&guard, LockMode::Exclusive, true).at(&path)?;
        let result = self.evict_until(need).and_then(|()| {
            let reservation = Reservation {
                file: create_new(tmp)?,
                path: tmp.to_path_buf(),
                done: false,
            };
            flock(&reservation.file, LockMode::Exclusive, false).at(tmp)?;
            reservation.file.set_len(need).at(tmp)?;
            Ok(reservation)
        });
        let _ = unlock(&guard);
        result
    }

    fn evict_until(&self, need: u64) -> Result<()> {
        let mut entries = self.entries();
        let mut used: u64 = entries.iter().map(|e| e.1).sum();
        if used.saturating_add(need) <= self.limit {
            return Ok(());
        }
        entries.retain(|e| e.3);
        entries.sort_by_key(|e| e.2);
        for (path, size, _, _) in entries {
            let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
                continue;
            };
            let Some(lock) = Self::try_lock_exclusive(dir, &name.to_string_lossy()) else {
                continue; // read, or about to be read, by some process
            };
            crate::checked::forget(dir, &name.to_string_lossy());
            match fs::remove_file(&path) {
                Ok(()) => used = used.saturating_sub(size),
                Err(e) if e.kind() == ErrorKind::NotFound => used = used.saturating_sub(size),
                Err(_) => {}
            }
            lock.unlock();
            if used.saturating_add(need) <= self.limit {
                return Ok(());
            }
        }
        Err(Error::invalid(
            CACHE_LIMIT,
            format!(
                "the cache at {} cannot take {need} more bytes under its limit of {} bytes: {used} bytes are shards that running loaders read or are about to read; raise the limit (cache_limit=, TOKENLOOM_CACHE_LIMIT) or read with fewer loaders or a shorter lookahead",
                self.root.display(),
                self.limit
            ),
        ))
    }
}

/// Room taken for one download: its temporary file, at the body's full
/// size and locked by this process until it is renamed into place or, on
/// failure or drop, removed.
pub(crate) struct Reservation {
    file: File,
    path: PathBuf,
    done: bool,
}

impl Reservation {
    /// The file the body is written into (from offset 0, once per attempt).
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// The temporary file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the whole, checked body to `dest`.
    pub(crate) fn commit(mut self, dest: &Path) -> Result<()> {
        fs::rename(&self.path, dest).at(dest)?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Whether `name` is the temporary file of a body being downloaded (the
/// manifest's and indexes' temporary files are never locked).
fn is_download(name: &str) -> bool {
    name.starts_with(TMP_PREFIX) && name.contains(".bin.")
}

/// Whether no process holds the lock of the download file at `path` (its
/// writer died): a lock taken without waiting.
fn writer_died(path: &Path) -> bool {
    open_regular(path).is_ok_and(|f| matches!(flock(&f, LockMode::Exclusive, false), Ok(true)))
}

/// Marks `path` as just used (eviction goes least recently used first).
pub(crate) fn touch(path: &Path) {
    if let Ok(f) = open_regular(path) {
        let _ = f.set_times(std::fs::FileTimes::new().set_accessed(SystemTime::now()));
    }
}
