//! The `.idx` file: a fixed header, `num_docs + 1` document offsets (in
//! tokens) and an xxh3 trailer. See `docs/format.md`.
//!
//! ```text
//! 0   8  magic        b"TLOOMIDX"
//! 8   4  version      u32 = 1
//! 12  4  dtype code   u32 (1 = u16, 2 = u32)
//! 16  8  num_docs     u64
//! 24  8  num_tokens   u64
//! 32  8  bin_offset   u64  bytes before the first token in the .bin
//! 40  8  bin_xxh3     u64  xxh3-64 of the token bytes of the .bin
//! 48  8·(num_docs+1)  offsets u64, offsets[0] = 0, offsets[num_docs] = num_tokens
//! end-8  8  xxh3-64 of every byte before it
//! ```

use std::path::Path;

use xxhash_rust::xxh3::xxh3_64;

use super::dtype::DType;
use crate::error::{Error, Result};

/// Magic bytes opening every `.idx` file.
pub const MAGIC: &[u8; 8] = b"TLOOMIDX";
/// The `.idx` version this build writes and reads.
pub const VERSION: u32 = 1;
/// Size of the fixed header in bytes.
pub const HEADER_LEN: usize = 48;
const TRAILER_LEN: usize = 8;

/// The fixed part of an `.idx` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexHeader {
    /// Token dtype of the paired `.bin`.
    pub dtype: DType,
    /// Number of documents.
    pub num_docs: u64,
    /// Number of tokens.
    pub num_tokens: u64,
    /// Bytes before the first token in the `.bin` (0 for tokenloom shards,
    /// 1024 for llm.c files).
    pub bin_offset: u64,
    /// xxh3-64 of the `.bin` token bytes.
    pub bin_xxh3: u64,
}

/// Byte length of an `.idx` holding `num_docs` documents, if it fits in u64.
pub fn encoded_len(num_docs: u64) -> Option<u64> {
    num_docs
        .checked_add(1)?
        .checked_mul(8)?
        .checked_add((HEADER_LEN + TRAILER_LEN) as u64)
}

/// The 48 header bytes of an `.idx`.
pub fn encode_header(header: &IndexHeader) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&header.dtype.code().to_le_bytes());
    out.extend_from_slice(&header.num_docs.to_le_bytes());
    out.extend_from_slice(&header.num_tokens.to_le_bytes());
    out.extend_from_slice(&header.bin_offset.to_le_bytes());
    out.extend_from_slice(&header.bin_xxh3.to_le_bytes());
    out
}

/// Serialises a header and its offsets (`num_docs + 1` values) into `.idx` bytes.
pub fn encode(header: &IndexHeader, offsets: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + offsets.len() * 8 + TRAILER_LEN);
    out.extend_from_slice(&encode_header(header));
    for o in offsets {
        out.extend_from_slice(&o.to_le_bytes());
    }
    let sum = xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

use crate::io::{u32_le as u32_at, u64_le as u64_at};

/// Where the document boundaries live in the index bytes. Every layout is
/// read in place: no offsets array is ever built in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// tokenloom `.idx`: `num_docs + 1` u64 offsets at byte 48.
    Native,
    /// datatrove `.ds.index`: `num_docs` u64 document *ends* from byte 0;
    /// the first document starts at 0.
    Ends,
    /// Megatron `.idx`: i32 sequence lengths at `lengths_at`, i64 byte
    /// pointers at `pointers_at`; a sequence is a document and the data
    /// must be contiguous (each sequence starts where the previous ends).
    Megatron {
        /// Byte position of `sequence_lengths[0]`.
        lengths_at: usize,
        /// Byte position of `sequence_pointers[0]`.
        pointers_at: usize,
        /// Bytes per token in the `.bin` (Megatron pointers are in bytes).
        itemsize: u8,
    },
}

/// A validated view of index bytes (usually a memory map): a tokenloom
/// `.idx`, or a foreign index read in place (see [`Layout`]).
#[derive(Clone, Copy, Debug)]
pub struct IndexView<'a> {
    /// The decoded header (for foreign layouts: derived from the index and
    /// the token file; `bin_xxh3` is 0, no checksum is recorded).
    pub header: IndexHeader,
    bytes: &'a [u8],
    layout: Layout,
}

const MEGATRON_FIX: &str = "the Megatron index is damaged or not contiguous; rebuild it with Megatron's tools/preprocess_data.py, or restore the .bin/.idx pair";
/// What to do about damaged datatrove files.
pub(crate) const DATATROVE_FIX: &str = "the datatrove files are damaged or do not belong together; re-run the datatrove tokenizer step, or restore the .ds/.ds.index pair from a good copy";
const REWRITE: &str = "the index is damaged; rebuild it (`tokenloom index` for raw token files) or restore the dataset from a good copy";

impl<'a> IndexView<'a> {
    /// Checks magic, version, dtype, length and the first and last offsets:
    /// O(1), whatever the number of documents. `path` names the file in errors.
    pub fn parse(bytes: &'a [u8], path: &Path) -> Result<Self> {
        if bytes.len() < HEADER_LEN + 8 + TRAILER_LEN {
            return Err(Error::corrupt(
                path,
                bytes.len() as u64,
                format!(
                    "index is {} bytes, shorter than the smallest valid index ({} bytes); the file is truncated",
                    bytes.len(),
                    HEADER_LEN + 8 + TRAILER_LEN
                ),
                REWRITE,
            ));
        }
        if &bytes[0..8] != MAGIC {
            return Err(Error::corrupt(
                path,
                0,
                format!("bad magic {:?} (expected \"TLOOMIDX\")", String::from_utf8_lossy(&bytes[0..8])),
                "this is not a tokenloom index; for Megatron, llm.c or raw token files use `tokenloom index` or the compat readers",
            ));
        }
        let version = u32_at(bytes, 8);
        if version != VERSION {
            return Err(Error::version(path, 8, version as u64, VERSION as u64));
        }
        let code = u32_at(bytes, 12);
        let dtype = DType::from_code(code).ok_or_else(|| {
            Error::corrupt(
                path,
                12,
                format!("unknown dtype code {code} (1 = u16, 2 = u32)"),
                REWRITE,
            )
        })?;
        let num_docs = u64_at(bytes, 16);
        let expected = encoded_len(num_docs);
        if expected != Some(bytes.len() as u64) {
            return Err(Error::corrupt(
                path,
                16,
                format!(
                    "header says {num_docs} documents, which needs {} bytes, but the file has {} bytes",
                    expected.map_or_else(|| "more than 2^64".to_string(), |e| e.to_string()),
                    bytes.len()
                ),
                REWRITE,
            ));
        }
        let header = IndexHeader {
            dtype,
            num_docs,
            num_tokens: u64_at(bytes, 24),
            bin_offset: u64_at(bytes, 32),
            bin_xxh3: u64_at(bytes, 40),
        };
        let view = IndexView {
            header,
            bytes,
            layout: Layout::Native,
        };
        if view.offset(0) != 0 {
            return Err(Error::corrupt(
                path,
                HEADER_LEN as u64,
                format!("first document offset is {} (must be 0)", view.offset(0)),
                REWRITE,
            ));
        }
        let last = view.offset(num_docs as usize);
        if last != header.num_tokens {
            return Err(Error::corrupt(
                path,
                view.offset_pos(num_docs as usize),
                format!(
                    "last document offset is {last} but the header says {} tokens",
                    header.num_tokens
                ),
                REWRITE,
            ));
        }
        Ok(view)
    }

    /// A view of bytes already validated into `header` and `layout` (by
    /// [`parse`](Self::parse) or a compat parser).
    pub(crate) fn from_parsed(bytes: &'a [u8], header: IndexHeader, layout: Layout) -> Self {
        IndexView {
            header,
            bytes,
            layout,
        }
    }

    /// Where the boundaries live.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Offset (in tokens) of document boundary `i`, `0 <= i <= num_docs`.
    /// Callers stay in range; the length was validated by the parser.
    pub fn offset(&self, i: usize) -> u64 {
        match self.layout {
            Layout::Native => u64_at(self.bytes, HEADER_LEN + 8 * i),
            Layout::Ends if i == 0 => 0,
            Layout::Ends => u64_at(self.bytes, 8 * (i - 1)),
            Layout::Megatron { .. } if i as u64 == self.header.num_docs => self.header.num_tokens,
            Layout::Megatron {
                pointers_at,
                itemsize,
                ..
            } => u64_at(self.bytes, pointers_at + 8 * i) / itemsize as u64,
        }
    }

    /// Byte position of offset entry `i` in the file (for error messages).
    pub fn offset_pos(&self, i: usize) -> u64 {
        let n = self.header.num_docs as usize;
        (match self.layout {
            Layout::Native => HEADER_LEN + 8 * i,
            Layout::Ends => 8 * i.saturating_sub(1),
            // The end of the data is where the last sequence's length is.
            Layout::Megatron { lengths_at, .. } if i == n => lengths_at + 4 * n.saturating_sub(1),
            Layout::Megatron { pointers_at, .. } => pointers_at + 8 * i,
        }) as u64
    }

    /// Token range `[start, end)` of document `j`, checked against the
    /// neighbouring offsets and the token count: O(1).
    pub fn doc_range(&self, j: usize, path: &Path) -> Result<(u64, u64)> {
        let (start, end) = (self.offset(j), self.offset(j + 1));
        if let Layout::Megatron {
            lengths_at,
            pointers_at,
            itemsize,
        } = self.layout
        {
            let pointer = u64_at(self.bytes, pointers_at + 8 * j);
            let len = u32_at(self.bytes, lengths_at + 4 * j) as i32;
            if pointer % itemsize as u64 != 0 || pointer > i64::MAX as u64 {
                return Err(Error::corrupt(
                    path,
                    (pointers_at + 8 * j) as u64,
                    format!(
                        "sequence {j} starts at byte {} of the .bin, which is not a token boundary ({itemsize}-byte tokens)",
                        pointer as i64
                    ),
                    MEGATRON_FIX,
                ));
            }
            if len < 0 || start.checked_add(len as u64) != Some(end) {
                return Err(Error::corrupt(
                    path,
                    (lengths_at + 4 * j) as u64,
                    format!(
                        "sequence {j} has length {len} but the next sequence starts {} tokens after it (tokenloom reads contiguous Megatron data only)",
                        end as i128 - start as i128
                    ),
                    MEGATRON_FIX,
                ));
            }
        }
        if start > end || end > self.header.num_tokens {
            return Err(Error::corrupt(
                path,
                self.offset_pos(j + 1),
                format!(
                    "document {j} spans tokens {start}..{end}, which is {} (the shard has {} tokens)",
                    if start > end { "backwards" } else { "past the end" },
                    self.header.num_tokens
                ),
                self.fix(),
            ));
        }
        Ok((start, end))
    }

    /// Stored checksum of the index (the trailer).
    pub fn stored_checksum(&self) -> u64 {
        u64_at(self.bytes, self.bytes.len() - TRAILER_LEN)
    }

    /// Full check: trailer checksum and monotonic offsets (tokenloom), or
    /// every document's range and the document table (foreign layouts,
    /// which record no checksum). O(documents).
    pub fn check_all(&self, path: &Path) -> Result<()> {
        match self.layout {
            Layout::Native => {}
            Layout::Ends => return self.check_monotonic(path),
            Layout::Megatron { pointers_at, .. } => {
                for j in 0..self.header.num_docs as usize {
                    self.doc_range(j, path)?;
                }
                return self.check_megatron_documents(
                    pointers_at + 8 * self.header.num_docs as usize,
                    path,
                );
            }
        }
        let body = &self.bytes[..self.bytes.len() - TRAILER_LEN];
        let actual = xxh3_64(body);
        if actual != self.stored_checksum() {
            return Err(Error::corrupt(
                path,
                body.len() as u64,
                format!(
                    "index checksum mismatch (stored {:016x}, computed {actual:016x})",
                    self.stored_checksum()
                ),
                REWRITE,
            ));
        }
        self.check_monotonic(path)
    }

    /// Megatron's document table at byte `at`: every entry within
    /// `0..=num_docs` and non-decreasing. O(entries).
    fn check_megatron_documents(&self, at: usize, path: &Path) -> Result<()> {
        let (m, n) = (u64_at(self.bytes, 26) as usize, self.header.num_docs);
        let mut prev = 0i64;
        for k in 0..m {
            let v = u64_at(self.bytes, at + 8 * k) as i64;
            if v < prev || v as u64 > n {
                return Err(Error::corrupt(
                    path,
                    (at + 8 * k) as u64,
                    format!("document table entry {k} is {v} (after {prev}; {n} sequences)"),
                    MEGATRON_FIX,
                ));
            }
            prev = v;
        }
        Ok(())
    }

    fn check_monotonic(&self, path: &Path) -> Result<()> {
        let mut prev = 0u64;
        for i in 1..=self.header.num_docs as usize {
            let o = self.offset(i);
            if o < prev {
                return Err(Error::corrupt(
                    path,
                    self.offset_pos(i),
                    format!("document offsets go backwards ({prev} then {o})"),
                    self.fix(),
                ));
            }
            prev = o;
        }
        Ok(())
    }

    /// What to do about a damaged index of this layout.
    fn fix(&self) -> &'static str {
        match self.layout {
            Layout::Native => REWRITE,
            Layout::Ends => DATATROVE_FIX,
            Layout::Megatron { .. } => MEGATRON_FIX,
        }
    }

    /// Lengths of all documents; errors on non-monotonic offsets. O(documents).
    pub fn doc_lengths_into(&self, out: &mut Vec<u64>, path: &Path) -> Result<()> {
        out.reserve(self.header.num_docs as usize);
        if matches!(self.layout, Layout::Megatron { .. }) {
            // Lengths and pointers must agree: check each sequence.
            for j in 0..self.header.num_docs as usize {
                let (s, e) = self.doc_range(j, path)?;
                out.push(e - s);
            }
            return Ok(());
        }
        let mut prev = 0u64;
        for i in 1..=self.header.num_docs as usize {
            let o = self.offset(i);
            let len = o.checked_sub(prev).ok_or_else(|| {
                Error::corrupt(
                    path,
                    self.offset_pos(i),
                    format!("document offsets go backwards ({prev} then {o})"),
                    self.fix(),
                )
            })?;
            out.push(len);
            prev = o;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
