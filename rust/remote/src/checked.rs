//! Stamps of checked bodies: once a process has checked a cached body
//! against the manifest (on arrival, or the first time it finds it there),
//! it records the file's identity (device, inode, size, modification time)
//! beside it. A later process, or a later dataset object of the same one,
//! trusts that check while the file is unchanged, instead of hashing every
//! cached body again: with a cache of hundreds of gigabytes that hash is
//! minutes per process and per epoch.
//!
//! Any write to the body moves its modification time, and a replaced body
//! has another inode, so a changed file is checked again. File times are
//! coarse (a clock tick), so a write in the same tick as the stamp could
//! leave the recorded time unchanged: a stamp counts only if it was written
//! strictly after the body's last modification, the rule git uses for its
//! index ("racy" entries are compared by content). The stamp does not
//! catch damage that leaves the file's metadata alone (media errors):
//! `tokenloom verify URL` hashes every body.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tokenloom_core::hash::hex;
use tokenloom_core::io::write_atomic;

use crate::cache::TMP_PREFIX;

/// Directory of the stamps inside a dataset's cache directory.
const CHECKED: &str = ".checked";
/// First word of a stamp (its format version).
const VERSION: &str = "tokenloom-checked-1";

fn stamp_path(dir: &Path, body: &str) -> PathBuf {
    dir.join(CHECKED).join(body)
}

/// What a stamp records of the body at `path` checked against `xxh3`, or
/// `None` if it cannot be read.
fn identity(path: &Path, xxh3: u64) -> Option<(String, i128)> {
    let m = fs::symlink_metadata(path).ok()?;
    if !m.is_file() {
        return None;
    }
    let mtime = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
    let line = format!(
        "{VERSION} {} {} {} {mtime} {}\n",
        m.dev(),
        m.ino(),
        m.len(),
        hex(xxh3)
    );
    Some((line, mtime))
}

/// Whether body `body` of the cache directory `dir` (at `path`) was checked
/// against `xxh3` and has not changed since.
pub(crate) fn is_checked(dir: &Path, body: &str, path: &Path, xxh3: u64) -> bool {
    let stamp = stamp_path(dir, body);
    let (Some((now, mtime)), Ok(recorded), Ok(meta)) = (
        identity(path, xxh3),
        fs::read_to_string(&stamp),
        fs::symlink_metadata(&stamp),
    ) else {
        return false;
    };
    let written = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
    recorded == now && mtime < written
}

/// Records that the body at `path` was just checked against `xxh3`. Best
/// effort: without a stamp the next process checks the body again.
pub(crate) fn mark_checked(dir: &Path, body: &str, path: &Path, xxh3: u64) {
    let Some((line, _)) = identity(path, xxh3) else {
        return;
    };
    let checked = dir.join(CHECKED);
    if fs::create_dir_all(&checked).is_err() {
        return;
    }
    let tmp = checked.join(format!("{TMP_PREFIX}{body}.{}", std::process::id()));
    let _ = write_atomic(&tmp, &stamp_path(dir, body), line.as_bytes());
}

/// Forgets the check of body `body` (it was evicted). Best effort.
pub(crate) fn forget(dir: &Path, body: &str) {
    let _ = fs::remove_file(stamp_path(dir, body));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let body = dir.path().join("part-00000.g1.bin");
        fs::write(&body, vec![7u8; 4096]).unwrap();
        (dir, body)
    }

    /// Waits until the file clock has moved past `path`'s modification time.
    fn next_tick(path: &Path) {
        let t = fs::metadata(path).unwrap().modified().unwrap();
        while std::time::SystemTime::now() <= t + std::time::Duration::from_millis(20) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn an_unchanged_body_stays_checked_and_a_written_one_does_not() {
        let (dir, body) = setup();
        let name = "part-00000.g1.bin";
        assert!(!is_checked(dir.path(), name, &body, 42), "no stamp yet");
        next_tick(&body);
        mark_checked(dir.path(), name, &body, 42);
        assert!(is_checked(dir.path(), name, &body, 42));
        assert!(
            !is_checked(dir.path(), name, &body, 43),
            "checked against another checksum"
        );
        // One byte changed in place, same size and inode.
        let mut f = fs::OpenOptions::new().write(true).open(&body).unwrap();
        f.write_all(&[8u8]).unwrap();
        drop(f);
        assert!(!is_checked(dir.path(), name, &body, 42));
    }

    #[test]
    fn a_stamp_from_the_tick_of_the_last_write_is_not_trusted() {
        let (dir, body) = setup();
        let name = "part-00000.g1.bin";
        mark_checked(dir.path(), name, &body, 42);
        // Make the stamp look as old as the body: a write to the body in the
        // stamp's own tick would be invisible to the recorded time.
        let t = fs::metadata(&body).unwrap().modified().unwrap();
        let stamp = fs::File::options()
            .write(true)
            .open(stamp_path(dir.path(), name))
            .unwrap();
        stamp
            .set_times(fs::FileTimes::new().set_modified(t))
            .unwrap();
        assert!(!is_checked(dir.path(), name, &body, 42));
    }

    #[test]
    fn a_replaced_or_forgotten_body_is_not_checked() {
        let (dir, body) = setup();
        let name = "part-00000.g1.bin";
        next_tick(&body);
        mark_checked(dir.path(), name, &body, 42);
        let other = dir.path().join("other");
        fs::write(&other, vec![7u8; 4096]).unwrap();
        let keep = fs::File::open(&body).unwrap(); // the old inode stays allocated
        fs::rename(&other, &body).unwrap();
        assert!(!is_checked(dir.path(), name, &body, 42), "another inode");
        drop(keep);
        next_tick(&body);
        mark_checked(dir.path(), name, &body, 42);
        assert!(is_checked(dir.path(), name, &body, 42));
        forget(dir.path(), name);
        assert!(!is_checked(dir.path(), name, &body, 42));
    }
}
