//! datatrove tokenized files, read in place: `NAME.ds` (little-endian tokens,
//! no header), `NAME.ds.index` (one u64 per document: its end, in tokens,
//! exclusive; the first document starts at 0; no header, no count) and an
//! optional `NAME.ds.metadata` text file whose first line is
//! `<tokenizer>|<bytes per token>` (older datatrove wrote only the tokenizer
//! and always 2-byte tokens) and whose second line is the token count.

use std::path::Path;

use super::super::dtype::DType;
use super::super::index::{IndexHeader, Layout};
use crate::error::{Error, Result};
use crate::io::u64_le;

/// What to do about a damaged datatrove file.
pub(crate) use super::super::index::DATATROVE_FIX as FIX;

/// The largest `.ds.metadata` read (it holds a tokenizer name and a count).
pub const MAX_METADATA: u64 = 1 << 20;

/// What a `.ds.metadata` file says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// Tokenizer name or path.
    pub tokenizer: String,
    /// Token type.
    pub dtype: DType,
    /// Token count.
    pub num_tokens: u64,
}

/// Parses a `.ds.metadata` file's text.
pub fn parse_metadata(text: &str, path: &Path) -> Result<Metadata> {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("");
    let (tokenizer, dtype) = match first.rsplit_once('|') {
        None => (first, DType::U16),
        Some((name, size)) => {
            let dtype = match size.trim() {
                "2" => DType::U16,
                "4" => DType::U32,
                other => {
                    return Err(Error::corrupt(
                        path,
                        (name.len() + 1) as u64,
                        format!("token size {other:?} is not 2 or 4 bytes"),
                        FIX,
                    ))
                }
            };
            (name, dtype)
        }
    };
    let second = lines.next().unwrap_or("").trim();
    let num_tokens = second.parse::<u64>().map_err(|_| {
        Error::corrupt(
            path,
            (first.len() + 1) as u64,
            format!("second line {second:?} is not a token count"),
            FIX,
        )
    })?;
    Ok(Metadata {
        tokenizer: tokenizer.to_string(),
        dtype,
        num_tokens,
    })
}

/// Checks a `.ds.index` against its `.ds` (of `ds_len` bytes) and the
/// metadata when there is one: whole u64 entries, the last end equal to the
/// token count, the token size (from the metadata, else the only one of 2 and
/// 4 bytes that fits the file), and the exact `.ds` size. O(1); each document
/// read checks its own two ends.
pub fn parse(
    bytes: &[u8],
    index_path: &Path,
    ds_path: &Path,
    ds_len: u64,
    meta: Option<(&Metadata, &Path)>,
) -> Result<(IndexHeader, Layout)> {
    let len = bytes.len();
    if len % 8 != 0 {
        return Err(Error::corrupt(
            index_path,
            (len - len % 8) as u64,
            format!("index is {len} bytes, not a whole number of u64 document ends; the file is truncated"),
            FIX,
        ));
    }
    let num_docs = (len / 8) as u64;
    let num_tokens = if len == 0 { 0 } else { u64_le(bytes, len - 8) };
    let dtype = match meta {
        Some((m, mpath)) => {
            if m.num_tokens != num_tokens {
                return Err(Error::corrupt(
                    mpath,
                    0,
                    format!(
                        "metadata says {} tokens but the index ({}) ends at token {num_tokens}",
                        m.num_tokens,
                        index_path.display()
                    ),
                    FIX,
                ));
            }
            m.dtype
        }
        None if num_tokens == 0 => DType::U16,
        None => match ds_len.checked_div(num_tokens) {
            Some(2) if ds_len % num_tokens == 0 => DType::U16,
            Some(4) if ds_len % num_tokens == 0 => DType::U32,
            _ => {
                return Err(Error::corrupt(
                    ds_path,
                    ds_len.min(num_tokens.saturating_mul(2)),
                    format!(
                        "token file has {ds_len} bytes but its index ({}) counts {num_tokens} tokens: neither 2 nor 4 bytes per token{}",
                        index_path.display(),
                        if ds_len < num_tokens.saturating_mul(2) { "; the file is truncated" } else { "" }
                    ),
                    FIX,
                ))
            }
        },
    };
    let need = num_tokens.checked_mul(dtype.itemsize() as u64);
    if need != Some(ds_len) {
        return Err(Error::corrupt(
            ds_path,
            need.map_or(ds_len, |n| n.min(ds_len)),
            format!(
                "token file has {ds_len} bytes but its index ({}) counts {num_tokens} tokens of {dtype}{}",
                index_path.display(),
                if need.is_none_or(|n| n > ds_len) { "; the file is truncated" } else { "" }
            ),
            FIX,
        ));
    }
    let header = IndexHeader {
        dtype,
        num_docs,
        num_tokens,
        bin_offset: 0,
        bin_xxh3: 0,
    };
    Ok((header, Layout::Ends))
}
