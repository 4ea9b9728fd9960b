//! Checksums for the work files whose format has no room for one: numpy's
//! `.npy` header takes no extra field, so each `.npy` file of the staged
//! engine gets a sidecar `<file>.sum` (magic, version, the file's length and
//! xxh3, and the xxh3 of those fields), written before the file is renamed
//! into place, so that a file without its sidecar was never finished. The
//! first task of a run that reads a file checks it.

use std::path::{Path, PathBuf};

use crate::hash::{file_xxh3, xxh3_64};

use crate::error::{Error, Result};
use crate::io::{u32_le, u64_le, write_atomic};

const MAGIC: &[u8; 8] = b"TLOOMSUM";
const VERSION: u32 = 1;
const LEN: usize = 40;
const FIX: &str = "delete the work folder (or the file and its .sum) and run the ordering again";

/// The sidecar of `path`: `path` with `.sum` appended.
pub fn sum_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".sum");
    PathBuf::from(name)
}

/// Writes the sidecar of `dest` for the finished file `file` (its temporary
/// name, renamed to `dest` after this returns), atomically.
pub fn seal(file: &Path, dest: &Path) -> Result<()> {
    let (len, sum) = file_xxh3(file)?;
    let mut out = Vec::with_capacity(LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&sum.to_le_bytes());
    out.extend_from_slice(&xxh3_64(&out).to_le_bytes());
    let side = sum_path(dest);
    let name = side
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = side.with_file_name(format!(".tmp.{name}.{}", std::process::id()));
    write_atomic(&tmp, &side, &out)
}

/// Checks `path` against its sidecar: `Ok(false)` when it has none (a file
/// the engine did not write), `Ok(true)` when it matches, an error naming
/// the file when it does not.
pub fn check(path: &Path) -> Result<bool> {
    let side = sum_path(path);
    let b = match std::fs::read(&side) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(&side, e)),
    };
    let bad = |at: usize, what: &str| Error::corrupt(&side, at as u64, what, FIX);
    if b.len() != LEN || &b[..8] != MAGIC {
        return Err(bad(0, "not a checksum file"));
    }
    if u32_le(&b, 8) != VERSION {
        return Err(bad(8, "written by another version"));
    }
    if xxh3_64(&b[..32]) != u64_le(&b, 32) {
        return Err(bad(32, "checksum mismatch (the file is damaged)"));
    }
    let (len, sum) = file_xxh3(path)?;
    if len != u64_le(&b, 16) {
        return Err(Error::corrupt(
            path,
            len.min(u64_le(&b, 16)),
            format!("{len} bytes, but {} were written", u64_le(&b, 16)),
            FIX,
        ));
    }
    if sum != u64_le(&b, 24) {
        return Err(Error::corrupt(
            path,
            0,
            "checksum mismatch (the file changed since it was written)",
            FIX,
        ));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_file_checks_and_any_change_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.npy");
        assert!(!check(&path).unwrap()); // no sidecar: not sealed
        let tmp = dir.path().join(".tmp.v.npy");
        std::fs::write(&tmp, b"0123456789").unwrap();
        seal(&tmp, &path).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert!(check(&path).unwrap());
        std::fs::write(&path, b"0123456780").unwrap();
        let err = check(&path).unwrap_err().to_string();
        assert!(
            err.contains("v.npy") && err.contains("checksum mismatch"),
            "{err}"
        );
        std::fs::write(&path, b"012345678").unwrap();
        let err = check(&path).unwrap_err().to_string();
        assert!(err.contains("9 bytes, but 10 were written"), "{err}");
        let mut side = std::fs::read(sum_path(&path)).unwrap();
        side[20] ^= 1;
        std::fs::write(sum_path(&path), &side).unwrap();
        let err = check(&path).unwrap_err().to_string();
        assert!(err.contains("v.npy.sum"), "{err}");
    }
}
