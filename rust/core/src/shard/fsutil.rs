//! File-system helpers: read-only maps, durable writes, atomic renames.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use memmap2::Mmap;

use crate::error::{Error, IoContext, Result};

/// A read-only file mapping; empty files have no mapping.
///
/// The file's identity (device, inode), size and modification time are
/// recorded when it is mapped: [`MappedFile::check_unchanged`] compares them
/// with the file on disk, so that readers report a file truncated or
/// rewritten in place by another program before touching its pages, instead
/// of faulting (SIGBUS) on pages past its new end.
#[derive(Debug)]
pub struct MappedFile {
    map: Option<Mmap>,
    path: PathBuf,
    stamp: Stamp,
}

/// What identifies one version of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: Option<SystemTime>,
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Self {
        #[cfg(unix)]
        let (dev, ino) = {
            use std::os::unix::fs::MetadataExt;
            (m.dev(), m.ino())
        };
        #[cfg(not(unix))]
        let (dev, ino) = (0, 0);
        Stamp {
            dev,
            ino,
            len: m.len(),
            mtime: m.modified().ok(),
        }
    }
}

const CHANGED_FIX: &str = "another program truncated or rewrote the file in place after it was opened (tokenloom itself only ever writes new files and renames them over old ones); reopen the dataset once that program is done, or restore the file from a good copy";

impl MappedFile {
    /// Maps `path` read-only.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).at(path)?;
        let stamp = Stamp::of(&file.metadata().at(path)?);
        let path = path.to_path_buf();
        if stamp.len == 0 {
            return Ok(MappedFile {
                map: None,
                path,
                stamp,
            });
        }
        // SAFETY: the map is read-only and private to this process. Files are
        // only ever replaced by rename, never rewritten in place, by tokenloom;
        // sizes are validated against the index before any page is touched,
        // and readers call `check_unchanged` before touching pages, so that a
        // file another program truncates is reported rather than faulted on.
        #[allow(unsafe_code)]
        let map = unsafe { Mmap::map(&file) }.at(&path)?;
        Ok(MappedFile {
            map: Some(map),
            path,
            stamp,
        })
    }

    /// A file that is not mapped (not on local disk yet): no bytes, and
    /// nothing to check.
    pub fn absent(path: &Path) -> Self {
        MappedFile {
            map: None,
            path: path.to_path_buf(),
            stamp: Stamp {
                dev: 0,
                ino: 0,
                len: 0,
                mtime: None,
            },
        }
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// The path the file was mapped from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fails when the mapped file was truncated or rewritten in place since
    /// it was mapped: its pages may then be gone (reading them would fault)
    /// or hold other data. One `stat` of the path. A file replaced by a
    /// rename (or deleted) is fine: the map keeps the old file alive, whole.
    pub fn check_unchanged(&self) -> Result<()> {
        if self.map.is_none() {
            return Ok(());
        }
        let Ok(meta) = fs::metadata(&self.path) else {
            return Ok(()); // deleted: the mapped inode lives on, unchanged
        };
        let now = Stamp::of(&meta);
        let was = self.stamp;
        if (now.dev, now.ino) != (was.dev, was.ino) {
            return Ok(()); // replaced by another file: the map still holds the old one
        }
        if now.len < was.len {
            return Err(Error::corrupt(
                &self.path,
                now.len,
                format!(
                    "the file was truncated from {} to {} bytes while mapped",
                    was.len, now.len
                ),
                CHANGED_FIX,
            ));
        }
        if now != was {
            return Err(Error::corrupt(
                &self.path,
                0,
                format!(
                    "the file changed on disk while mapped (now {} bytes, was {}; modified since it was opened)",
                    now.len, was.len
                ),
                CHANGED_FIX,
            ));
        }
        Ok(())
    }

    /// Tells the kernel the map will be read at random (no read-ahead).
    pub fn advise_random(&self) {
        #[cfg(unix)]
        if let Some(m) = &self.map {
            let _ = m.advise(memmap2::Advice::Random);
        }
    }
}

/// Flushes the directory entry table of `dir` so renames in it survive a crash.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(dir).at(dir)?.sync_all().at(dir)?;
    }
    Ok(())
}

/// Writes `bytes` to `tmp`, fsyncs it and renames it over `dest` (same
/// directory). On failure (a full disk, say) `tmp` is removed and `dest` is
/// left as it was.
pub fn write_atomic(tmp: &Path, dest: &Path, bytes: &[u8]) -> Result<()> {
    let write = || -> Result<()> {
        let mut f = File::create(tmp).at(tmp)?;
        f.write_all(bytes).at(tmp)?;
        f.sync_all().at(tmp)?;
        drop(f);
        fs::rename(tmp, dest).at(dest)
    };
    write().inspect_err(|_| {
        let _ = fs::remove_file(tmp);
    })
}

/// The little-endian `u32` at byte `at` of `b` (callers check the length).
pub fn u32_le(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// The little-endian `u64` at byte `at` of `b` (callers check the length).
pub fn u64_le(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_in_place_are_caught_replacements_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        fs::write(&path, vec![7u8; 8192]).unwrap();
        let map = MappedFile::open(&path).unwrap();
        map.check_unchanged().unwrap();
        // replaced by rename: the map keeps the old inode, whole
        let tmp = dir.path().join("f.tmp");
        fs::write(&tmp, vec![1u8; 10]).unwrap();
        fs::rename(&tmp, &path).unwrap();
        map.check_unchanged().unwrap();
        assert_eq!(map.bytes()[8191], 7);
        // truncated in place
        let map = MappedFile::open(&path).unwrap();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(3)
            .unwrap();
        let err = map.check_unchanged().unwrap_err();
        assert!(
            err.to_string().contains("truncated from 10 to 3 bytes"),
            "{err}"
        );
        assert_eq!(err.offset(), Some(3));
        // deleted: the map lives on
        let map = MappedFile::open(&path).unwrap();
        fs::remove_file(&path).unwrap();
        map.check_unchanged().unwrap();
    }
}
