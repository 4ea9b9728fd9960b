//! File-system helpers: read-only maps, durable writes, atomic renames.
//!
//! Every file tokenloom reads is opened through [`open_regular`]: a named
//! pipe, a device (`/dev/zero`), a socket or a directory in place of a data
//! file is refused at once instead of blocking forever or reading without
//! end. Every file it writes is created new ([`create_new`]: `O_EXCL` and
//! `O_NOFOLLOW`), so that a symbolic link planted at a temporary name is
//! never written through.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
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
    /// The file mapped, kept open for positioned reads of the same inode
    /// (`None` for an [`absent`](Self::absent) file).
    file: Option<File>,
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
        let file = open_regular(path)?;
        let stamp = Stamp::of(&file.metadata().at(path)?);
        let path = path.to_path_buf();
        if stamp.len == 0 {
            return Ok(MappedFile {
                map: None,
                file: Some(file),
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
            file: Some(file),
            path,
            stamp,
        })
    }

    /// A file that is not mapped (not on local disk yet): no bytes, and
    /// nothing to check.
    pub fn absent(path: &Path) -> Self {
        MappedFile {
            map: None,
            file: None,
            path: path.to_path_buf(),
            stamp: Stamp {
                dev: 0,
                ino: 0,
                len: 0,
                mtime: None,
            },
        }
    }

    /// Fills `buf` with the file's bytes from `offset`, by positioned reads
    /// (`pread`) of the opened file rather than copies from the map: a file
    /// truncated by another program meanwhile gives an error naming it,
    /// never a fault (SIGBUS) on a page that is gone.
    /// An [`absent`](Self::absent) file has no bytes to read.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let Some(file) = &self.file else {
            return match buf.is_empty() {
                true => Ok(()),
                false => Err(Error::invalid(
                    "read",
                    format!("{} is not on local disk", self.path.display()),
                )),
            };
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            match file.read_exact_at(buf, offset) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    let now = file.metadata().map_or(0, |m| m.len());
                    Err(Error::corrupt(
                        &self.path,
                        now,
                        format!(
                            "the file was truncated from {} to {now} bytes while being read",
                            self.stamp.len
                        ),
                        CHANGED_FIX,
                    ))
                }
                Err(e) => Err(Error::io(&self.path, e)),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = file;
            let end = offset as usize + buf.len();
            let src = self.bytes().get(offset as usize..end).ok_or_else(|| {
                Error::corrupt(&self.path, offset, "read past the end", CHANGED_FIX)
            })?;
            buf.copy_from_slice(src);
            Ok(())
        }
    }

    /// The whole file as it was opened, read with [`read_at`](Self::read_at)
    /// into memory allocated fallibly.
    pub fn read_all(&self) -> Result<Vec<u8>> {
        let mut out = crate::error::try_filled(self.stamp.len as usize, 0u8, "file size")?;
        self.read_at(0, &mut out)?;
        Ok(out)
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

/// What kind of file `meta` describes, for messages.
fn kind_of(meta: &fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "a named pipe (FIFO)";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if meta.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// The error for a path that is not a regular file.
fn not_regular(path: &Path, meta: &fs::Metadata) -> Error {
    Error::io(
        path,
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "is {}, not a regular file; tokenloom reads data from regular files only (point at the real file)",
                kind_of(meta)
            ),
        ),
    )
}

/// Opens `path` for reading when it is a regular file (after following
/// symbolic links); anything else is an error naming what it is. The open
/// does not block on a named pipe.
pub fn open_regular(path: &Path) -> Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Without O_NONBLOCK, opening a FIFO waits for a writer forever.
        opts.custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC);
    }
    let file = opts.open(path).at(path)?;
    let meta = file.metadata().at(path)?;
    if !meta.is_file() {
        return Err(not_regular(path, &meta));
    }
    Ok(file)
}

/// The whole content of the regular file `path`, refused when it is larger
/// than `cap` bytes; the buffer is allocated fallibly, so a file too large
/// for memory is an error, never an abort.
pub fn read_regular(path: &Path, cap: u64) -> Result<Vec<u8>> {
    let file = open_regular(path)?;
    let len = file.metadata().at(path)?.len();
    let too_big = |len: u64| {
        Error::io(
            path,
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("is {len} bytes, more than the {cap} bytes a file of this kind can hold; it is not the file it should be"),
            ),
        )
    };
    if len > cap {
        return Err(too_big(len));
    }
    let mut out = Vec::new();
    out.try_reserve_exact(len as usize).map_err(|_| {
        Error::io(
            path,
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("is {len} bytes, more than there is memory to read it into"),
            ),
        )
    })?;
    // A file growing while read stops at the cap.
    file.take(cap.saturating_add(1))
        .read_to_end(&mut out)
        .at(path)?;
    if out.len() as u64 > cap {
        return Err(too_big(out.len() as u64));
    }
    Ok(out)
}

/// Creates `path` as a new, empty file for writing (and reading back). Whatever was at `path`
/// (a leftover of a crashed write, or a symbolic link someone planted) is
/// removed first, and the file is created with `O_EXCL` and `O_NOFOLLOW`:
/// a link that appears at `path` meanwhile makes this fail, it is never
/// followed, so nothing outside the directory is ever written.
pub fn create_new(path: &Path) -> Result<File> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(path, e)),
    }
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    }
    opts.open(path).at(path)
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
        let mut f = create_new(tmp)?;
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
