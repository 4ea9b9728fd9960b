//! Checksums: xxh3-64 of bytes and of whole files, written as 16 lowercase
//! hex digits wherever they are stored (manifests, sidecars, cache names).

use std::io::Read;
use std::path::Path;

pub use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::error::{IoContext, Result};

/// Formats a checksum the way manifests and sidecars store it.
pub fn hex(sum: u64) -> String {
    format!("{sum:016x}")
}

/// Parses a checksum written by [`hex`]: exactly 16 hex digits.
pub fn parse_hex(text: &str) -> Option<u64> {
    if text.len() != 16 {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

/// Length and xxh3-64 of the regular file at `path`, read in 4 MiB blocks
/// (not mapped, so that checking a large file adds nothing to the resident
/// memory).
pub fn file_xxh3(path: &Path) -> Result<(u64, u64)> {
    let mut f = crate::io::open_regular(path)?;
    let mut h = Xxh3::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut len = 0u64;
    loop {
        let got = f.read(&mut buf).at(path)?;
        if got == 0 {
            return Ok((len, h.digest()));
        }
        h.update(&buf[..got]);
        len += got as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_round_trip_as_16_hex_digits() {
        for sum in [0, 1, 0xdead_beef, u64::MAX] {
            let text = hex(sum);
            assert_eq!(text.len(), 16);
            assert_eq!(parse_hex(&text), Some(sum));
        }
        assert_eq!(hex(0xab), "00000000000000ab");
        assert_eq!(parse_hex("ab"), None);
        assert_eq!(parse_hex("zzzzzzzzzzzzzzzz"), None);
    }

    #[test]
    fn a_file_hashes_as_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        // More than one read block, not a multiple of it.
        let bytes: Vec<u8> = (0..(9 << 20) + 7).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(
            file_xxh3(&path).unwrap(),
            (bytes.len() as u64, xxh3_64(&bytes))
        );
        assert!(file_xxh3(dir.path()).is_err());
    }
}
