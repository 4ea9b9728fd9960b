//! Formats other tools write, read in place without conversion: Megatron
//! `.bin/.idx` ([`megatron`]) and datatrove `.ds/.ds.index` ([`datatrove`]).
//! Each parser validates its index against the token file as strictly as the
//! tokenloom format is validated and yields an [`IndexHeader`] plus the
//! [`Layout`] that tells [`IndexView`](super::IndexView) where the document
//! boundaries are; documents stay zero-copy slices of the mapped token file.

pub mod convert;
pub mod datatrove;
pub mod megatron;

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::index::{IndexHeader, Layout};
use crate::error::{IoContext, Result};

/// A token file and its index, as found from a user-given path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A raw token file with a tokenloom `.idx` (from `tokenloom index`).
    Indexed {
        /// The token file.
        bin: PathBuf,
        /// Its index.
        idx: PathBuf,
    },
    /// A Megatron `.bin/.idx` pair.
    Megatron {
        /// The token file.
        bin: PathBuf,
        /// Its index.
        idx: PathBuf,
    },
    /// A datatrove `.ds/.ds.index` pair (and `.ds.metadata` when present).
    Datatrove {
        /// The token file.
        ds: PathBuf,
        /// Its index.
        index: PathBuf,
        /// Its metadata, when the file exists.
        metadata: Option<PathBuf>,
    },
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn strip_suffix(path: &Path, suffix: &str) -> Option<PathBuf> {
    let s = path.to_str()?;
    s.strip_suffix(suffix).map(PathBuf::from)
}

/// Whether `path` starts with `magic`.
fn starts_with(path: &Path, magic: &[u8]) -> Result<bool> {
    let mut f = crate::io::open_regular(path)?;
    let mut buf = vec![0u8; magic.len()];
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]).at(path)? {
            0 => return Ok(false),
            k => got += k,
        }
    }
    Ok(buf == magic)
}

/// The datatrove source for `NAME.ds`.
pub fn datatrove_source(ds: PathBuf) -> Source {
    let metadata = Some(with_suffix(&ds, ".metadata")).filter(|p| p.is_file());
    Source::Datatrove {
        index: with_suffix(&ds, ".index"),
        ds,
        metadata,
    }
}

/// Recognises the file format `path` names: a `.ds`/`.ds.index`
/// (datatrove), a `.bin` or `.idx` whose index is Megatron's or tokenloom's,
/// or a Megatron path prefix (`PREFIX.bin` + `PREFIX.idx`, as Megatron
/// configs name datasets). `None` when none applies.
pub fn detect(path: &Path) -> Result<Option<Source>> {
    let name = path.to_string_lossy();
    if name.ends_with(".ds") {
        return Ok(Some(datatrove_source(path.to_path_buf())));
    }
    for suffix in [".index", ".metadata"] {
        if let Some(ds) =
            strip_suffix(path, suffix).filter(|p| p.to_string_lossy().ends_with(".ds"))
        {
            return Ok(Some(datatrove_source(ds)));
        }
    }
    let (bin, idx) = if path.is_file() {
        match path.extension().and_then(|e| e.to_str()) {
            Some("bin") => (path.to_path_buf(), path.with_extension("idx")),
            Some("idx") => (path.with_extension("bin"), path.to_path_buf()),
            _ => return Ok(None),
        }
    } else if !path.exists() && with_suffix(path, ".idx").is_file() {
        (with_suffix(path, ".bin"), with_suffix(path, ".idx"))
    } else {
        return Ok(None);
    };
    if !idx.is_file() {
        return Ok(None);
    }
    Ok(Some(if starts_with(&idx, super::index::MAGIC)? {
        Source::Indexed { bin, idx }
    } else {
        Source::Megatron { bin, idx }
    }))
}

impl Source {
    /// The token file and the index file.
    pub fn paths(&self) -> (&Path, &Path) {
        match self {
            Source::Indexed { bin, idx } | Source::Megatron { bin, idx } => (bin, idx),
            Source::Datatrove { ds, index, .. } => (ds, index),
        }
    }
}

/// Parses the index of `src` (already mapped into `bytes`) against its token
/// file of `bin_len` bytes.
pub(crate) fn parse(src: &Source, bytes: &[u8], bin_len: u64) -> Result<(IndexHeader, Layout)> {
    match src {
        Source::Indexed { idx, .. } => {
            let v = super::index::IndexView::parse(bytes, idx)?;
            Ok((v.header, Layout::Native))
        }
        Source::Megatron { bin, idx } => megatron::parse(bytes, idx, bin, bin_len),
        Source::Datatrove {
            ds,
            index,
            metadata,
        } => {
            let meta = match metadata {
                Some(p) => {
                    let bytes = crate::io::read_regular(p, datatrove::MAX_METADATA)?;
                    let text = String::from_utf8(bytes).map_err(|e| {
                        crate::error::Error::corrupt(
                            p,
                            e.utf8_error().valid_up_to() as u64,
                            "the metadata is not UTF-8 text",
                            datatrove::FIX,
                        )
                    })?;
                    Some((datatrove::parse_metadata(&text, p)?, p.as_path()))
                }
                None => None,
            };
            datatrove::parse(
                bytes,
                index,
                ds,
                bin_len,
                meta.as_ref().map(|(m, p)| (m, *p)),
            )
        }
    }
}

#[cfg(test)]
mod tests;
