//! File-system helpers: read-only maps, durable writes, atomic renames.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use memmap2::Mmap;

use crate::error::{IoContext, Result};

/// A read-only file mapping; empty files have no mapping.
#[derive(Debug)]
pub struct MappedFile {
    map: Option<Mmap>,
}

impl MappedFile {
    /// Maps `path` read-only.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).at(path)?;
        let len = file.metadata().at(path)?.len();
        if len == 0 {
            return Ok(MappedFile { map: None });
        }
        // SAFETY: the map is read-only and private to this process. Files are
        // only ever replaced by rename, never rewritten in place, by tokenloom;
        // sizes are validated against the index before any page is touched.
        #[allow(unsafe_code)]
        let map = unsafe { Mmap::map(&file) }.at(path)?;
        Ok(MappedFile { map: Some(map) })
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
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

/// Writes `bytes` to `tmp`, fsyncs it and renames it over `dest` (same directory).
pub fn write_atomic(tmp: &Path, dest: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(tmp).at(tmp)?;
    f.write_all(bytes).at(tmp)?;
    f.sync_all().at(tmp)?;
    drop(f);
    fs::rename(tmp, dest).at(dest)
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
