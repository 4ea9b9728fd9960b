//! Advisory locks on write targets: a dataset directory, a Megatron pair,
//! an order file. Two writers of one target would compute the same new
//! generation and overwrite each other's temporary files; with the lock the
//! second one gets an error naming the first instead.
//!
//! The lock is an exclusive `flock` on a lock file: `<dataset>/.lock` for a
//! directory, `.<name>.lock` beside a file target. The kernel releases it
//! when its holder exits, however it exits, so a crashed writer never leaves
//! a target locked. The file holds a note naming the holder (process id,
//! program, what it writes, since when) for the second writer's message.
//! The holder removes the file before unlocking; a writer that locked a file
//! removed meanwhile sees that the path names another file now and retries.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// File name of the lock of a dataset directory.
pub const DIR_LOCK: &str = ".lock";

/// An exclusive lock on a write target, held until dropped.
#[derive(Debug)]
pub struct TargetLock {
    file: Option<File>,
    path: PathBuf,
    target: PathBuf,
}

impl TargetLock {
    /// Locks the dataset directory `root` (which must exist) for `what`
    /// (e.g. `"DatasetWriter"`); fails at once when another writer holds it.
    pub fn dataset(root: &Path, what: &str) -> Result<Self> {
        Self::acquire(root.join(DIR_LOCK), root, what)
    }

    /// Locks the file target `path` (which need not exist) through
    /// `.<name>.lock` in its directory.
    pub fn file(path: &Path, what: &str) -> Result<Self> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Self::acquire(dir.join(format!(".{name}.lock")), path, what)
    }

    /// The target this lock protects.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Whether this lock protects `path` (the same directory or file).
    pub fn covers(&self, path: &Path) -> bool {
        match (fs::canonicalize(&self.target), fs::canonicalize(path)) {
            (Ok(a), Ok(b)) => a == b,
            _ => self.target == path,
        }
    }

    fn acquire(path: PathBuf, target: &Path, what: &str) -> Result<Self> {
        // A lock file removed by its holder between our open and our lock
        // is a stale one: retry on the file now at the path.
        for _ in 0..64 {
            let mut file = open_lock_file(&path)?;
            if !flock(&file, LockMode::Exclusive, false).at(&path)? {
                let mut note = String::new();
                let _ = file.read_to_string(&mut note);
                return Err(Error::Locked {
                    path: target.to_path_buf(),
                    holder: holder_of(&note),
                });
            }
            if !same_file(&file, &path) {
                continue;
            }
            // Best effort: the note only names us in another writer's error.
            let _ = file.set_len(0);
            let _ = file.rewind();
            let _ = file.write_all(note(what).as_bytes());
            return Ok(TargetLock {
                file: Some(file),
                path,
                target: target.to_path_buf(),
            });
        }
        Err(Error::Locked {
            path: target.to_path_buf(),
            holder: "writers that keep replacing the lock file".into(),
        })
    }
}

impl Drop for TargetLock {
    fn drop(&mut self) {
        // Removed while still locked: a writer waiting on this file sees it
        // is gone and takes a fresh one.
        let _ = fs::remove_file(&self.path);
        drop(self.file.take());
    }
}

/// Opens (creating it when missing) the lock file at `path`: never through
/// a symbolic link, and closed in programs this process starts.
pub fn open_lock_file(path: &Path) -> Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    }
    opts.open(path).at(path)
}

/// How [`flock`] locks a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// Readers: any number at once, none while a writer holds the file.
    Shared,
    /// One holder.
    Exclusive,
}

/// Takes a `flock` on `file` (an advisory lock of its open file, released
/// by [`unlock`] or when every descriptor of it is closed, so also when the
/// process dies). With `wait`, blocks until it is granted; without, returns
/// `false` at once when another open file holds a conflicting lock.
pub fn flock(file: &File, mode: LockMode, wait: bool) -> io::Result<bool> {
    #[cfg(unix)]
    loop {
        use std::os::unix::io::AsRawFd;
        let mut op = match mode {
            LockMode::Shared => libc::LOCK_SH,
            LockMode::Exclusive => libc::LOCK_EX,
        };
        if !wait {
            op |= libc::LOCK_NB;
        }
        // SAFETY: `flock` only reads the descriptor, which `file` keeps open
        // for the whole call.
        #[allow(unsafe_code)]
        let r = unsafe { libc::flock(file.as_raw_fd(), op) };
        if r == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) if !wait => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(e),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, mode, wait);
        Ok(true)
    }
}

/// Releases a [`flock`] of `file` (for every descriptor of its open file,
/// copies in forked children included).
pub fn unlock(file: &File) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: as in `flock`.
        #[allow(unsafe_code)]
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
}

/// Whether the open `file` is the file now at `path`.
fn same_file(file: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), fs::symlink_metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        true
    }
}

/// The note a holder leaves in its lock file.
fn note(what: &str) -> String {
    let program = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "?".into());
    let host = fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "{{\"pid\": {}, \"program\": {:?}, \"what\": {:?}, \"host\": {:?}, \"since\": {since}}}\n",
        std::process::id(),
        program,
        what,
        host
    )
}

/// The holder as a phrase, from its note.
fn holder_of(note: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(note) else {
        return "another process".into();
    };
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("?").to_string();
    let pid = v
        .get("pid")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    let since = v
        .get("since")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    let host = field("host");
    format!(
        "process {pid} ({}, {}){} since unix time {since}",
        field("program"),
        field("what"),
        if host.is_empty() || host == "?" {
            String::new()
        } else {
            format!(" on {host}")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_names_the_first_and_release_frees_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = TargetLock::dataset(dir.path(), "DatasetWriter").unwrap();
        let err = TargetLock::dataset(dir.path(), "merge").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Locked { .. }), "{msg}");
        assert!(
            msg.contains(&format!("process {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("DatasetWriter"), "{msg}");
        assert!(first.covers(dir.path()));
        drop(first);
        assert!(!dir.path().join(DIR_LOCK).exists(), "lock file removed");
        let again = TargetLock::dataset(dir.path(), "merge").unwrap();
        drop(again);
    }

    #[test]
    fn file_targets_lock_beside_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("web.order");
        let lock = TargetLock::file(&target, "write_order").unwrap();
        assert!(dir.path().join(".web.order.lock").exists());
        assert!(TargetLock::file(&target, "order").is_err());
        assert!(TargetLock::file(&dir.path().join("other.order"), "order").is_ok());
        drop(lock);
        assert!(TargetLock::file(&target, "order").is_ok());
    }

    #[test]
    fn a_stale_lock_file_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(DIR_LOCK), "{\"pid\": 1}").unwrap();
        TargetLock::dataset(dir.path(), "DatasetWriter").unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_planted_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside.txt");
        fs::write(&outside, "keep").unwrap();
        let ds = dir.path().join("ds");
        fs::create_dir(&ds).unwrap();
        std::os::unix::fs::symlink(&outside, ds.join(DIR_LOCK)).unwrap();
        assert!(TargetLock::dataset(&ds, "DatasetWriter").is_err());
        assert_eq!(fs::read_to_string(&outside).unwrap(), "keep");
    }
}
